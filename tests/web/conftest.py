"""Small indexes for the web tests: a phash and an ae index of one gallery, a training run folder.

The gallery: three classes of generated images (helpers.class_folder), four scikit-image photos,
and two near-copies of the astronaut (so the phash index has a duplicate group).
"""

from __future__ import annotations

import csv
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from helpers import class_folder, tiny_checkpoint
from PIL import Image

from encoder.cli.search import main as search_main

PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def start_server():
    """``start(args, env=None) -> (process, url)``: ``search.py serve ARGS --port P`` as a user starts it, once it
    answers /healthz (the test fails with the server's output if it does not within 90 s)."""

    def start(args: list[str], env: dict | None = None) -> tuple[subprocess.Popen, str]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = subprocess.Popen(
            [sys.executable, "search.py", "serve", *map(str, args), "--port", str(port)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        url, deadline = f"http://127.0.0.1:{port}", time.time() + 90
        while True:
            try:
                urllib.request.urlopen(url + "/healthz", timeout=1).read()
                return proc, url
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    proc.kill()
                    pytest.fail(f"search.py serve did not start:\n{proc.stdout.read()}")
                time.sleep(0.2)

    return start


def _gallery(root: Path, skimage_data: Path) -> Path:
    class_folder(root, per_class=6)
    (root / "photos").mkdir()
    for name in PHOTOS:
        shutil.copy(skimage_data / name, root / "photos" / name)
    astro = Image.open(skimage_data / "astronaut.png").convert("RGB")
    astro.resize((384, 384)).save(root / "photos" / "astronaut_small.jpg", quality=90)
    astro.save(root / "photos" / "astronaut_copy.jpg", quality=70)
    return root


def _run_dir(root: Path, gallery: Path) -> Path:
    version = root / "lightning_logs" / "version_0"
    version.mkdir(parents=True)
    with open(version / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["epoch", "step", "train/loss", "val/loss", "val/psnr"])
        for e in range(4):
            w.writerow([e, e * 10, 0.05 / (e + 1), "", ""])
            w.writerow([e, e * 10 + 9, "", 0.06 / (e + 1), 14 + 2 * e])
    for e in range(2):
        shutil.copy(gallery / "photos" / "coffee.png", version / f"recon_epoch{e:03d}.png")
    return root


@pytest.fixture(scope="session")
def web_data(tmp_path_factory, skimage_data) -> dict:
    base = tmp_path_factory.mktemp("web")
    gallery = _gallery(base / "gallery", skimage_data)
    ckpt = tiny_checkpoint(base / "tiny.pt")
    assert search_main(["index", str(gallery), "--method", "phash", "-o", str(base / "phash")]) == 0
    assert (
        search_main(["index", str(gallery), "--method", "ae", "--checkpoint", str(ckpt), "-o", str(base / "ae")]) == 0
    )
    rng = np.random.default_rng(0)
    upload = base / "query.jpg"
    Image.open(skimage_data / "astronaut.png").convert("RGB").resize((640, 480)).save(upload, quality=85)
    noise = base / "noise.png"
    Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(noise)
    return {
        "base": base,
        "gallery": gallery,
        "checkpoint": ckpt,
        "phash": base / "phash",
        "ae": base / "ae",
        "upload": upload,
        "noise": noise,
        "run_dir": _run_dir(base / "run", gallery),
    }

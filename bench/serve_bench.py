"""Load test of `search.py serve`: 16 clients uploading 640x480 JPEG photos for 30 s per index.

    python bench/serve_bench.py            # >= 10,000-image phash and ae indexes, 16 clients x 30 s
    python bench/serve_bench.py --quick    # CI-size: 2,000 images, 4 clients x 5 s

What it builds (under --out, default runs/serve_bench; reused when present):
* a gallery: Fashion-MNIST exported by ``train.py prepare-fashion-mnist --limit N`` (Debian
  package dataset-fashion-mnist) plus 640x480 crops/tiles/flips of scikit-image's sample photos;
* a phash index and an ae index of it (``search.py index``); the ae model is an UNTRAINED,
  seeded ConvAutoencoder (default size) saved with ``encoder.ae.inference.save_encoder``: its
  speed is a trained model's, its neighbours are not meaningful;
* the uploads: 640x480 JPEGs (quality 90) of the sample photos.

Then it starts the server (a subprocess on 127.0.0.1), and per index: a 1-client phase (the
latency of one request on an idle server) and the N-client phase (throughput; latency there is
mostly queueing: by Little's law p50 ~ clients / queries-per-second). It reports queries/s,
p50/p99 latency, errors and the server's RSS at the start and end of each phase, and writes
them to OUT/serve_bench.json. Every loop is bounded by time; the server is stopped at the end.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere
PHOTOS = (
    "astronaut.png",
    "coffee.png",
    "chelsea.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "retina.jpg",
    "hubble_deep_field.jpg",
    "immunohistochemistry.png",
    "color.png",
    "logo.png",
)


def skimage_photos() -> list[Path]:
    import skimage

    d = Path(skimage.__file__).parent / "data"
    return [d / p for p in PHOTOS if (d / p).is_file()]


def to_640x480(im: Image.Image) -> Image.Image:
    return ImageOps.fit(im.convert("RGB"), (640, 480), Image.Resampling.BILINEAR)


def sh(*args) -> None:
    cmd = [sys.executable, *map(str, args)]
    print("$ " + " ".join(map(str, args)), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def build_gallery(out: Path, n_fashion: int, n_photos: int) -> Path:
    gallery = out / "gallery"
    if (gallery / ".done").exists():
        return gallery
    sh("train.py", "prepare-fashion-mnist", "--out", gallery / "fashion", "--limit", n_fashion)
    rng = np.random.default_rng(0)
    photos = [Image.open(p).convert("RGB") for p in skimage_photos()]
    (gallery / "photos").mkdir(parents=True, exist_ok=True)
    for i in range(n_photos):  # crops, tiles and flips of the sample photos at 640x480-ish sizes
        im = photos[i % len(photos)]
        w, h = im.size
        cw, ch = int(w * rng.uniform(0.4, 1.0)), int(h * rng.uniform(0.4, 1.0))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = im.crop((x, y, x + cw, y + ch))
        if i % 3 == 1:
            crop = ImageOps.mirror(crop)
        crop.resize((min(640, cw), min(480, ch))).save(gallery / "photos" / f"p{i:05d}.jpg", quality=88)
    (gallery / ".done").write_text("")
    return gallery


def build_indexes(out: Path, gallery: Path) -> dict[str, Path]:
    import torch

    from encoder.ae.inference import save_encoder
    from encoder.ae.model import ConvAutoencoder

    ckpt = out / "untrained_seed0.pt"
    if not ckpt.exists():
        torch.manual_seed(0)
        save_encoder(ConvAutoencoder().eval(), ckpt)
    idx = {"phash": out / "index_phash", "ae": out / "index_ae"}
    if not (idx["phash"] / "meta.json").exists():
        sh("search.py", "index", gallery, "--method", "phash", "-o", idx["phash"])
    if not (idx["ae"] / "meta.json").exists():
        sh("search.py", "index", gallery, "--method", "ae", "--checkpoint", ckpt, "-o", idx["ae"])
    return idx


def uploads(out: Path) -> list[bytes]:
    bodies = []
    for p in skimage_photos()[:6]:
        buf = io.BytesIO()
        to_640x480(Image.open(p)).save(buf, "JPEG", quality=90)
        bodies.append(buf.getvalue())
    return bodies


def multipart(jpeg: bytes, index: str, k: int = 5) -> tuple[bytes, str]:
    b = uuid.uuid4().hex
    parts = [
        f'--{b}\r\nContent-Disposition: form-data; name="index"\r\n\r\n{index}\r\n'.encode(),
        f'--{b}\r\nContent-Disposition: form-data; name="k"\r\n\r\n{k}\r\n'.encode(),
        f'--{b}\r\nContent-Disposition: form-data; name="image"; filename="q.jpg"\r\n'
        f"Content-Type: image/jpeg\r\n\r\n".encode()
        + jpeg
        + b"\r\n",
        f"--{b}--\r\n".encode(),
    ]
    return b"".join(parts), f"multipart/form-data; boundary={b}"


def rss_mb(pid: int) -> float:
    """Resident memory of the server: the process and its children (the --processes workers)."""
    total = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            total += int(line.split()[1]) / 1024
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                total += rss_mb(int(child))
            except (FileNotFoundError, ProcessLookupError):
                pass
    return total


def client_loop(port: int, bodies: list, stop: float, lat: list, errors: list, seed: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    i = seed
    while time.perf_counter() < stop:
        body, ctype = bodies[i % len(bodies)]
        i += 1
        t0 = time.perf_counter()
        try:
            conn.request("POST", "/api/query", body=body, headers={"Content-Type": ctype})
            r = conn.getresponse()
            data = r.read()
            if r.status != 200 or b'"neighbours"' not in data:
                errors.append(f"{r.status} {data[:120]!r}")
                continue
        except (OSError, http.client.HTTPException) as e:
            errors.append(repr(e))
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            continue
        lat.append(time.perf_counter() - t0)
    conn.close()


def phase(port: int, pid: int, bodies: list, clients: int, seconds: float) -> dict:
    lat: list[float] = []
    errors: list[str] = []
    rss0 = rss_mb(pid)
    t0 = time.perf_counter()
    stop = t0 + seconds
    threads = [
        threading.Thread(target=client_loop, args=(port, bodies, stop, lat, errors, c), daemon=True)
        for c in range(clients)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    wall = time.perf_counter() - t0
    ms = np.array(lat) * 1000 if lat else np.array([np.nan])
    return {
        "clients": clients,
        "seconds": round(wall, 1),
        "queries": len(lat),
        "qps": round(len(lat) / wall, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "errors": len(errors),
        "error_sample": errors[:3],
        "rss_start_mb": round(rss0, 1),
        "rss_end_mb": round(rss_mb(pid), 1),
    }


def start_server(idx: dict[str, Path], log: Path, processes: int = 1) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "encoder.cli.serve",
            *map(str, idx.values()),
            "--port",
            str(port),
            "--processes",
            str(processes),
        ],
        cwd=ROOT,
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/healthz")
            if c.getresponse().status == 200:
                return proc, port
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"server did not start:\n{log.read_text()}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2,000 images, 4 clients x 5 s (a CI-size check)")
    ap.add_argument("--out", default=None, help="work folder (default runs/serve_bench[_quick])")
    ap.add_argument("--clients", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--processes", type=int, default=2, help="server processes (search.py serve --processes)")
    a = ap.parse_args(argv)
    out = ROOT / (a.out or ("runs/serve_bench_quick" if a.quick else "runs/serve_bench"))
    out.mkdir(parents=True, exist_ok=True)
    clients = a.clients or (4 if a.quick else 16)
    seconds = a.seconds or (5.0 if a.quick else 30.0)
    n_fashion, n_photos = (1_800, 200) if a.quick else (4_800, 600)  # per split: 2 x 4,800 + 600
    gallery = build_gallery(out, n_fashion, n_photos)
    idx = build_indexes(out, gallery)
    jpegs = uploads(out)
    proc, port = start_server(idx, out / "server.log", a.processes)
    report = {
        "cores": os.cpu_count(),
        "server_processes": a.processes,
        "upload_bytes": [len(j) for j in jpegs],
        "upload_size": "640x480 JPEG q90",
        "ae_model": "untrained ConvAutoencoder(), torch.manual_seed(0), save_encoder",
        "indexes": {},
    }
    try:
        for name, path in idx.items():
            count = len(json.loads((path / "ids.json").read_text()))
            bodies = [multipart(j, path.name) for j in jpegs]
            phase(port, proc.pid, bodies, 2, 3.0)  # warm-up
            one = phase(port, proc.pid, bodies, 1, min(10.0, seconds))
            many = phase(port, proc.pid, bodies, clients, seconds)
            report["indexes"][name] = {"images": count, "one_client": one, "concurrent": many}
            print_phase(name, count, one, many, a.processes)
        report["server_rss_mb"] = {"end": round(rss_mb(proc.pid), 1)}
    finally:
        proc.terminate()
        proc.wait(15)
    (out / "serve_bench.json").write_text(json.dumps(report, indent=1))
    print(f"\nwritten {out / 'serve_bench.json'}")
    return 0


def print_phase(name: str, count: int, one: dict, many: dict, processes: int = 1) -> None:
    print(f"\n{name} index, {count:,} images, 640x480 JPEG uploads, k=5, server processes: {processes}")
    for label, r in (("1 client", one), (f"{many['clients']} clients", many)):
        growth = (r["rss_end_mb"] / r["rss_start_mb"] - 1) * 100
        print(
            f"  {label:>10}: {r['queries']:>6} queries in {r['seconds']:>5} s = {r['qps']:>6} q/s   "
            f"p50 {r['p50_ms']:>7} ms  p99 {r['p99_ms']:>7} ms  errors {r['errors']}   "
            f"RSS {r['rss_start_mb']} -> {r['rss_end_mb']} MB ({growth:+.1f}%)"
        )
        for e in r["error_sample"]:
            print(f"      error: {e}")


if __name__ == "__main__":
    sys.exit(main())

"""Peak memory of `quantize.py FILE` on 35 MP images: this tree beside an anchor commit's, in the same run.

    python bench/palette_memory_bench.py                   # 35 MP photo-like + 35 MP bilevel scan, vs ANCHOR
    python bench/palette_memory_bench.py --mp 8            # smaller images (a quick check)
    python bench/palette_memory_bench.py --anchor HEAD~3   # another commit as the old path

The three images are made here, seeded: a photo-like one (scikit-image's astronaut upscaled
bicubically to the size, plus Gaussian noise of sigma 3 grey levels, JPEG quality 92: 415,000
distinct colours at 35 MP), a bilevel scan (mode "1" PNG: a white page with lines of black word
blocks, a few rules and a dark margin), and the worst case for the colour set, uniform random
pixels (an uncompressed BMP: 14.6 million distinct colours at 35 MP). Each command runs in a
fresh subprocess, alone; its peak resident memory is the kernel's ``ru_maxrss`` of that child (``os.wait4``), which
counts the interpreter and the libraries too. Bytes per pixel = peak / pixels. The old path is
the anchor commit's tree (``git archive`` into a temporary folder), run by the same Python.
PSNR comes from each run's results.json (default K=256, seed 0); the target is at most 24 bytes
per pixel, PSNR within 0.01 dB of the anchor's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
ANCHOR = "2e4fff8"  # main before the tiled palette path
TARGET_BYTES_PER_PIXEL = 24


def size_for(mp: float) -> tuple[int, int]:
    """(width, height) of a 3:2 image of about ``mp`` megapixels."""
    h = int(round((mp * 1e6 / 1.5) ** 0.5))
    return int(round(h * 1.5)), h


def photo_like(path: Path, mp: float, seed: int = 0) -> None:
    """A photo-like JPEG: a real photo upscaled bicubically, with sensor-like noise."""
    import skimage

    w, h = size_for(mp)
    src = Image.open(Path(skimage.__file__).parent / "data" / "astronaut.png").convert("RGB")
    big = np.asarray(src.resize((w, h), Image.Resampling.BICUBIC))
    rng = np.random.default_rng(seed)
    out = np.empty_like(big)
    for y in range(0, h, 512):  # in strips: the bench itself stays small
        noisy = big[y : y + 512].astype(np.float32) + rng.normal(0.0, 3.0, big[y : y + 512].shape).astype(np.float32)
        out[y : y + 512] = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    Image.fromarray(out).save(path, format="JPEG", quality=92)


def bilevel_scan(path: Path, mp: float, seed: int = 0) -> None:
    """A bilevel page scan (mode "1" PNG): lines of word blocks, rules, a dark scanner margin."""
    w, h = size_for(mp)
    rng = np.random.default_rng(seed)
    im = Image.new("1", (w, h), 1)
    d = ImageDraw.Draw(im)
    line = max(8, h // 180)
    for y in range(4 * line, h - 4 * line, 2 * line):
        x = 3 * line
        while x < w - 3 * line:
            word = int(rng.integers(2, 9)) * line // 2
            d.rectangle([x, y, min(x + word, w - 3 * line), y + line], fill=0)
            x += word + line // 2
    for y in rng.integers(0, h, 6):
        d.rectangle([0, int(y), w, int(y) + 3], fill=0)
    d.rectangle([0, 0, line, h], fill=0)
    im.save(path, format="PNG")


def noise(path: Path, mp: float, seed: int = 0) -> None:
    """The worst case for the colour set: uniform random pixels (at 35 MP, 14.6 million distinct
    colours), as an uncompressed BMP."""
    w, h = size_for(mp)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, format="BMP")


def peak_rss(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """(peak resident bytes, wall seconds) of ``cmd`` run in ``cwd``; raises if it fails."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{err[-2000:]}")
    return usage.ru_maxrss * 1024.0, seconds


def run_tree(tree: Path, image: Path, out: Path) -> dict:
    """quantize.py of ``tree`` on ``image``: peak bytes, seconds, PSNR."""
    peak, seconds = peak_rss([sys.executable, "quantize.py", str(image), "-o", str(out), "--json"], tree)
    rows = json.loads((out / "results.json").read_text())
    return {"peak": peak, "seconds": seconds, "psnr": rows[0]["psnr"]}


def _db(psnr: float | None) -> str:
    """PSNR for the table: results.json writes a lossless result's as null."""
    return "lossless" if psnr is None else f"{psnr:.3f}"


def anchor_tree(ref: str, dest: Path) -> Path:
    """The files of commit ``ref`` of this repository, unpacked under ``dest``."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mp", type=float, default=35.0, help="megapixels of each image (default %(default)g)")
    ap.add_argument("--anchor", default=ANCHOR, help="commit whose quantize.py is the old path (default %(default)s)")
    ap.add_argument("--no-anchor", action="store_true", help="only this tree")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="palette-memory-") as tmp:
        tmp = Path(tmp)
        images = {"photo-like": tmp / "photo.jpg", "bilevel scan": tmp / "scan.png", "random noise": tmp / "noise.bmp"}
        photo_like(images["photo-like"], a.mp)
        bilevel_scan(images["bilevel scan"], a.mp)
        noise(images["random noise"], a.mp)
        trees = {"new": ROOT} if a.no_anchor else {"old": anchor_tree(a.anchor, tmp / "anchor"), "new": ROOT}
        print(f"quantize.py FILE (K=256), peak RSS of the process; old = {a.anchor}, new = this tree")
        print(f"{'image':<14} {'pixels':>11} {'tree':<4} {'peak MB':>8} {'B/pixel':>8} {'PSNR dB':>8} {'s':>6}")
        psnrs: dict[str, dict[str, float]] = {}
        worst = 0.0
        for name, path in images.items():
            with Image.open(path) as im:
                pixels = im.size[0] * im.size[1]
            for tree_name, tree in trees.items():
                r = run_tree(tree, path, tmp / f"out-{tree_name}-{path.stem}")
                psnrs.setdefault(name, {})[tree_name] = r["psnr"]
                bpp = r["peak"] / pixels
                worst = max(worst, bpp) if tree_name == "new" else worst
                print(
                    f"{name:<14} {pixels:>11,} {tree_name:<4} {r['peak'] / 1e6:>8.0f} {bpp:>8.1f} "
                    f"{_db(r['psnr']):>8} {r['seconds']:>6.1f}"
                )
        print(f"\nnew path at most {worst:.1f} bytes per pixel (target <= {TARGET_BYTES_PER_PIXEL})")
        for name, p in psnrs.items():
            if "old" in p and None in (p["old"], p["new"]):
                print(f"{name}: PSNR old {_db(p['old'])}, new {_db(p['new'])}")
            elif "old" in p:
                print(f"{name}: PSNR new - old = {p['new'] - p['old']:+.4f} dB (target within 0.01)")
    return 0 if worst <= TARGET_BYTES_PER_PIXEL else 1


if __name__ == "__main__":
    sys.exit(main())

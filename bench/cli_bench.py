"""Each command as a user runs it: a fresh process, wall time, side by side with the tool a user
would otherwise run, in one run (issue 14). Best of 3 per cell; ratios = ours / anchor.

    .venv/bin/python bench/cli_bench.py                    # 0.3, 4 and 16 MP photos
    .venv/bin/python bench/cli_bench.py --quick            # 0.3 and 4 MP, best of 2
    .venv/bin/python bench/cli_bench.py --old-tree /tmp/old   # also the same calls in an older checkout

Photos: scikit-learn's china.jpg (0.27 MP) as PNG, and the same photo upscaled (bicubic) to 4 MP
(2560x1600) and 16 MP (5120x3200) with seeded Gaussian noise (sigma 2 levels) so that it has the
colour count of a real photo (0.9-1 M distinct colours), saved as PNG. Anchors: `pngquant 256
--nofs` (the user's plain call; PSNR and file size compared too), an `imagehash.phash` one-liner
for the hash query, and the pHash query for the ae query. The search index: 520 crops of the
scikit-image photos; the ae model is an untrained, seeded ConvAutoencoder (speed, not quality).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from encoder.metrics import psnr  # noqa: E402


def wall(cmd: list[str], cwd: Path, repeats: int) -> float:
    """Best wall time of ``cmd`` (a fresh process each time); raises with its stderr on failure."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
        best = min(best, time.perf_counter() - t)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, cmd))} failed: {p.stderr[-2000:]}")
    return best


def make_photos(tmp: Path, sizes: list[float]) -> dict[float, Path]:
    import sklearn

    src = Image.open(Path(sklearn.__file__).parent / "datasets" / "images" / "china.jpg").convert("RGB")
    rng = np.random.default_rng(0)
    out = {}
    for mp in sizes:
        if mp < 1:
            im = np.asarray(src)
        else:
            w = round((mp * 1e6 * 1.6) ** 0.5)
            big = np.asarray(src.resize((w, round(w / 1.6)), Image.Resampling.BICUBIC)).astype(np.float64)
            im = np.clip(np.rint(big + rng.normal(0, 2.0, big.shape)), 0, 255).astype(np.uint8)
        out[mp] = tmp / f"photo_{mp:g}mp.png"
        Image.fromarray(im).save(out[mp], compress_level=1)
    return out


def make_index_folder(tmp: Path) -> tuple[Path, Path, Path]:
    """520 crops of the scikit-image photos, a 640x480 JPEG query, an untrained seeded model."""
    import skimage
    import torch

    from encoder.ae.inference import save_encoder
    from encoder.ae.model import ConvAutoencoder

    folder = tmp / "gallery"
    folder.mkdir()
    data = Path(skimage.__file__).parent / "data"
    n = 0
    for f in sorted(data.glob("*.png")) + sorted(data.glob("*.jpg")):
        try:
            im = Image.open(f).convert("RGB")
        except OSError:
            continue
        w, h = im.size
        for i in range(20):
            x0, y0 = (i * 7) % max(1, w // 3), (i * 11) % max(1, h // 3)
            im.crop((x0, y0, x0 + w // 2 + 10, y0 + h // 2 + 10)).save(folder / f"{n:05d}.jpg", quality=90)
            n += 1
    query = tmp / "query.jpg"
    Image.open(data / "astronaut.png").convert("RGB").resize((640, 480)).save(query, quality=90)
    torch.manual_seed(0)
    save_encoder(ConvAutoencoder().eval(), tmp / "model.pt")
    return folder, query, tmp / "model.pt"


def quantize_rows(tree: Path, photos: dict, out: Path, repeats: int, label: str) -> list[tuple]:
    py = sys.executable
    rows = []
    pq = shutil.which("pngquant")
    for mp, photo in photos.items():
        src = np.asarray(Image.open(photo).convert("RGB"))
        o = out / f"{label}_{mp:g}"
        t = wall([py, "quantize.py", str(photo), "-k", "256", "-o", str(o)], tree, repeats)
        ours = o / f"{photo.stem}_k256.png"
        row = [
            f"quantize.py -k 256 ({label})",
            f"{mp:g} MP",
            t,
            psnr(src, np.asarray(Image.open(ours).convert("RGB"))),
            ours.stat().st_size,
        ]
        if pq:
            dst = out / f"pq_{mp:g}.png"
            tp = wall([pq, "256", "--nofs", "--force", "--output", str(dst), str(photo)], tree, repeats)
            row += [tp, psnr(src, np.asarray(Image.open(dst).convert("RGB"))), dst.stat().st_size]
        rows.append(tuple(row))
        t3 = wall([py, "quantize.py", str(photo), "-k", "16", "64", "256", "-o", str(o) + "_3k"], tree, repeats)
        row3 = [f"quantize.py -k 16 64 256 + figure ({label})", f"{mp:g} MP", t3]
        if pq:
            tp3 = sum(
                wall([pq, str(k), "--nofs", "--force", "--output", str(out / f"pq{k}.png"), str(photo)], tree, repeats)
                for k in (16, 64, 256)
            )
            row3 += [tp3]
        rows.append(tuple(row3))
    return rows


def search_rows(tree: Path, folder: Path, query: Path, model: Path, tmp: Path, repeats: int, label: str) -> list:
    py = sys.executable
    ph, ae = tmp / f"{label}_idx_phash", tmp / f"{label}_idx_ae"
    subprocess.run(
        [py, "search.py", "index", str(folder), "--method", "phash", "-o", str(ph)],
        cwd=tree,
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [py, "search.py", "index", str(folder), "--method", "ae", "--checkpoint", str(model), "-o", str(ae)],
        cwd=tree,
        check=True,
        capture_output=True,
    )
    t_ph = wall([py, "search.py", "query", str(ph), str(query), "-k", "5"], tree, repeats)
    t_ae = wall([py, "search.py", "query", str(ae), str(query), "-k", "5"], tree, repeats)
    one_liner = f"import imagehash, PIL.Image; print(imagehash.phash(PIL.Image.open({str(query)!r})))"
    t_ih = wall([py, "-c", one_liner], tree, repeats)
    return [
        (f"search.py query, phash ({label})", t_ph, "imagehash.phash one-liner", t_ih),
        (f"search.py query, ae ({label})", t_ae, f"search.py query, phash ({label})", t_ph),
    ]


def help_rows(tree: Path, repeats: int, label: str) -> list:
    return [
        (f"{cmd} --help ({label})", wall([sys.executable, cmd, "--help"], tree, repeats))
        for cmd in ("quantize.py", "search.py", "train.py")
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--old-tree", type=Path, help="an older checkout to time with the same calls (it shares this venv)")
    a = ap.parse_args(argv)
    repeats = 2 if a.quick else 3
    trees = [("new", ROOT)] + ([("old", a.old_tree.resolve())] if a.old_tree else [])
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        photos = make_photos(tmp, [0.27, 4] if a.quick else [0.27, 4, 16])
        folder, query, model = make_index_folder(tmp)
        print(
            f"best of {repeats}, wall seconds of a fresh process; pngquant: {shutil.which('pngquant') or 'not found'}\n"
        )
        print(
            f"{'call':<44} {'photo':>7} {'ours s':>7} {'ours dB':>8} {'ours bytes':>11} {'pngquant s':>10} "
            f"{'pq dB':>7} {'pq bytes':>10} {'time ratio':>10} {'dB diff':>8} {'size ratio':>10}"
        )
        for label, tree in trees:
            for r in quantize_rows(tree, photos, tmp, repeats, label):
                if len(r) == 8:
                    print(
                        f"{r[0]:<44} {r[1]:>7} {r[2]:>7.2f} {r[3]:>8.2f} {r[4]:>11,} {r[5]:>10.2f} {r[6]:>7.2f} "
                        f"{r[7]:>10,} {r[2] / r[5]:>10.2f} {r[3] - r[6]:>+8.2f} {r[4] / r[7]:>10.3f}",
                        flush=True,
                    )
                elif len(r) == 4:
                    print(
                        f"{r[0]:<44} {r[1]:>7} {r[2]:>7.2f} {'':>8} {'':>11} {r[3]:>10.2f} {'':>7} {'':>10} "
                        f"{r[2] / r[3]:>10.2f}  (pngquant: the three K, one call each)",
                        flush=True,
                    )
                else:
                    print(f"{r[0]:<44} {r[1]:>7} {r[2]:>7.2f}", flush=True)
        print()
        for label, tree in trees:
            for name, t, anchor, ta in search_rows(tree, folder, query, model, tmp, repeats, label):
                print(f"{name:<36} {t:6.2f} s   vs {anchor:<30} {ta:6.2f} s   ratio {t / ta:5.2f}", flush=True)
        print()
        for label, tree in trees:
            for name, t in help_rows(tree, repeats, label):
                print(f"{name:<36} {t:6.2f} s   (target <= 0.5)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

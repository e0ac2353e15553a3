"""Near-duplicate benchmark: recall of each method per transform, beside imagehash's crop-resistant hash.

    python bench/neardup_bench.py --quick                      # small gallery, < ~3 min
    python bench/neardup_bench.py --checkpoint runs/demo/train/fashion_mnist/version_0/checkpoints/best.ckpt

The photo folder: every RGB photo of scikit-image's data with both sides >= 256 px (the synthetic
``color``/``phantom`` charts and the stereo twin ``motorcycle_right`` left out) and scikit-learn's
china.jpg and flower.jpg. Distractors: 6 crops/tiles of each photo (hard negatives),
``motorcycle_right``, the grey scikit-image photos, scikit-image's 200 lfw faces and, if
data/fashion-mnist exists, Fashion-MNIST test images (2,000; 200 with --quick). Each photo is
transformed with every transform of :mod:`encoder.search.neardup`; the copy is the query and a
hit is its original ranked first (R@1) or in the top 5 (R@5).

Ours go through :func:`encoder.search.evaluate.evaluate_neardup` (``search.py evaluate --neardup``):
phash, mirror-aware phash (the better of the query and its mirror), raw pixels, PCA-128 and, with
``--checkpoint``, the autoencoder's codes: of the whole picture (``ae``), mirror-aware
(``ae-mirror``, ``search.py query --mirror``), on several views per picture (``ae-crops``,
``search.py index --views crops``) and both (``ae-crops-mirror``). The anchor, ``imagehash.crop_resistant_hash``, is
computed here with imagehash itself and ranked by its own distance (``hash1 - hash2``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import imagehash  # noqa: E402
import numpy as np  # noqa: E402
import skimage  # noqa: E402
import sklearn  # noqa: E402
from PIL import Image  # noqa: E402

from encoder.data import open_image  # noqa: E402
from encoder.search.evaluate import evaluate_neardup  # noqa: E402
from encoder.search.methods import evaluation_methods  # noqa: E402
from encoder.search.neardup import TRANSFORMS  # noqa: E402

SK = Path(skimage.__file__).parent / "data"
NOT_PHOTOS = {"color.png", "phantom.png", "chessboard_RGB.png", "motorcycle_right.png"}
FASHION = Path(__file__).resolve().parents[1] / "data" / "fashion-mnist" / "test"
CROPS = [(0, 0, 0.5), (0.5, 0, 0.5), (0, 0.5, 0.5), (0.5, 0.5, 0.5), (0.3, 0.2, 0.6), (0.1, 0.4, 0.4)]


def photos() -> list[Path]:
    """The RGB photos with sides >= 256 px: scikit-image's data, then scikit-learn's two."""
    out = []
    for p in sorted(SK.iterdir()):
        if p.suffix.lower() in (".png", ".jpg") and p.name not in NOT_PHOTOS:
            with Image.open(p) as im:
                if im.mode == "RGB" and min(im.size) >= 256:
                    out.append(p)
    return out + [Path(sklearn.__file__).parent / "datasets" / "images" / n for n in ("china.jpg", "flower.jpg")]


def distractors(originals: list[Path], quick: bool) -> list[Image.Image]:
    out = []
    for p in originals:  # tiles and off-centre crops of the photos themselves: hard negatives
        im = open_image(p).convert("RGB")
        w, h = im.size
        out += [im.crop((int(fx * w), int(fy * h), int((fx + f) * w), int((fy + f) * h))) for fx, fy, f in CROPS]
    for p in sorted(SK.glob("*.png")):  # the stereo twin and the grey photos
        with Image.open(p) as im:
            if p.name == "motorcycle_right.png" or (im.mode == "L" and min(im.size) >= 256):
                out.append(im.convert("RGB"))
    out += [Image.fromarray((f * 255).astype(np.uint8)) for f in np.load(SK / "lfw_subset.npy")]
    if FASHION.is_dir():
        files = sorted(FASHION.rglob("*.png"))
        out += [Image.open(f).convert("RGB") for f in files[:: max(1, len(files) // (200 if quick else 2000))]]
    return out


def crop_resistant(originals: list[Image.Image], gallery: list[Image.Image]) -> tuple[dict, float]:
    """({transform: (R@1, R@5)}, seconds per hashed image) of imagehash.crop_resistant_hash."""
    t, n = time.perf_counter(), len(gallery)
    g = [imagehash.crop_resistant_hash(im) for im in gallery]
    per = {}
    for tname, tf in TRANSFORMS.items():
        hits = np.zeros(2)
        for i, im in enumerate(originals):  # originals are gallery rows 0..len-1
            q = imagehash.crop_resistant_hash(tf(im))
            n += 1
            order = np.argsort([q - h for h in g], kind="stable")
            hits += [i in order[:1], i in order[:5]]
        per[tname] = tuple(hits / len(originals))
    return per, (time.perf_counter() - t) / n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="200 Fashion-MNIST distractors instead of 2,000")
    ap.add_argument("--checkpoint", help="also the autoencoder's codes (ae)")
    ap.add_argument("--no-crop-resistant", action="store_true", help="skip imagehash.crop_resistant_hash (slow)")
    a = ap.parse_args(argv)
    print(f"cpus={os.cpu_count()} (machine may be shared; timings are indicative)")
    ours = ["ae", "ae-mirror", "ae-crops", "ae-crops-mirror"] if a.checkpoint else []
    names = ours + ["phash", "phash-mirror", "raw", "pca"]
    methods = evaluation_methods(names, checkpoint=a.checkpoint)
    paths = photos()
    originals = [open_image(p).convert("RGB") for p in paths]
    others = distractors(paths, a.quick)
    print(f"photos: {', '.join(p.stem for p in paths)}")
    with tempfile.TemporaryDirectory() as tmp:
        qdir, ddir = Path(tmp, "photos"), Path(tmp, "distractors")
        qdir.mkdir(), ddir.mkdir()
        for p, im in zip(paths, originals):
            im.save(qdir / f"{p.stem}.png")
        for i, im in enumerate(others):
            im.save(ddir / f"{i:05d}.png")
        report = evaluate_neardup(ddir, methods=methods, queries=qdir)
    print(
        f"{len(paths)} photos x {len(TRANSFORMS)} transforms; gallery {report['n_gallery']} "
        f"(photos + {len(others)} distractors); R@1 / R@5 of the original"
    )
    cols = {r["method"]: {t: (v["R@1"], v["R@5"]) for t, v in r["transforms"].items()} for r in report["results"]}
    if not a.no_crop_resistant:
        cols["crop_resistant"], sec = crop_resistant(originals, originals + others)
        print(f"imagehash.crop_resistant_hash: {sec * 1000:.1f} ms per image (hashing, on this machine)")
    print(f"{'transform':12s} " + " ".join(f"{n:>15s}" for n in cols))
    for t in list(TRANSFORMS) + ["MEAN"]:
        cells = [np.mean(list(c.values()), 0) if t == "MEAN" else c[t] for c in cols.values()]
        print(f"{t:12s} " + " ".join(f"{r1:.2f} / {r5:.2f}".rjust(15) for r1, r5 in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())

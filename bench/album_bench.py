"""A photo album, edited as people edit pictures before sharing them: R@1 per edit and the false-match rate.

    python bench/photo_folder.py                                  # data/photos200 (the pictures used here)
    python bench/album_bench.py --checkpoint runs/train/default/version_0/checkpoints/best.ckpt
    python bench/album_bench.py --no-crop-resistant               # hashes only, fast

The pictures: the originals (not the crops) of the folder built by bench/photo_folder.py (photos of
scikit-image and scikit-learn, lomiri/debian-edu/sway/desktop-base wallpapers; nothing else). A seeded
permutation splits them into the **album** (30: each edited with every edit of
:data:`encoder.search.neardup.ALBUM_EDITS`, the copy is the query), **other pictures** (8, in the gallery
with 6 tiles each as hard negatives) and **held out** (the rest: never in the gallery; their edited
copies are the non-match queries). A hit is the album original ranked first (R@1). The false-match rate
(FM) is the share of non-match queries whose nearest gallery picture is nearer than the distance that
finds 90% of the thumbnail copies' originals (the threshold a user would set to keep the thumbnails).

Ours go through :func:`encoder.search.evaluate.evaluate_neardup` (``search.py evaluate --neardup``):
phash, phash-mirror and, with ``--checkpoint``, the autoencoder as ``search.py index`` picks it for
photos (``ae-crops``: crop views in the gallery, verified by a pHash, :mod:`encoder.search.verify`) and
mirror-aware (``ae-crops-mirror``); ``--unverified`` adds ``ae-crops-unverified`` (codes alone). The anchor,
``imagehash.crop_resistant_hash``, is computed with imagehash itself and ranked by its own distance.
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

from encoder.data import open_image, to_rgb  # noqa: E402
from encoder.search.evaluate import evaluate_neardup  # noqa: E402
from encoder.search.methods import AutoencoderMethod, evaluation_methods  # noqa: E402
from encoder.search.neardup import ALBUM_EDITS  # noqa: E402

FOLDER = Path(__file__).resolve().parents[1] / "data" / "photos200"
N_ALBUM, N_OTHER = 30, 8
TILES = [(0, 0, 0.5), (0.5, 0, 0.5), (0, 0.5, 0.5), (0.5, 0.5, 0.5), (0.3, 0.2, 0.6), (0.1, 0.4, 0.4)]
MAX_SIDE = 1600  # pictures are shrunk to this long side first (wallpapers are up to 4,352 px wide)


def pictures(folder: Path) -> list[Path]:
    """The originals listed in the folder's SOURCES.txt (its crops left out), in listed order."""
    src = folder / "SOURCES.txt"
    if not src.is_file():
        raise SystemExit(f"{src} not found: build the folder first (python bench/photo_folder.py --out {folder})")
    lines = [ln.split("\t") for ln in src.read_text().splitlines() if ln and not ln.startswith("#")]
    return [folder / f[0] for f in lines if not f[2].startswith("crop ")]


def load(p: Path):
    im = to_rgb(open_image(p))
    im.thumbnail((MAX_SIDE, MAX_SIDE))
    return im


def split(paths: list[Path], seed: int) -> tuple[list, list, list]:
    order = np.random.default_rng(seed).permutation(len(paths))
    picked = [paths[i] for i in order]
    return picked[:N_ALBUM], picked[N_ALBUM : N_ALBUM + N_OTHER], picked[N_ALBUM + N_OTHER :]


def non_match_queries(held: list) -> list:
    """Each held-out picture under each edit, cycled to at most 30 copies (edit i of picture i % n)."""
    edits = list(ALBUM_EDITS.values())
    n = min(30, len(held) * len(edits))
    return [edits[i % len(edits)](held[(i // len(edits) + i) % len(held)]) for i in range(n)]


def crop_resistant(album: list, gallery: list, non_matches: list) -> tuple[dict, float, float]:
    """({edit: R@1}, false-match rate, seconds per hashed image) of imagehash.crop_resistant_hash;
    album originals are gallery rows 0..len(album)-1."""
    t, n = time.perf_counter(), len(gallery)
    g = [imagehash.crop_resistant_hash(im) for im in gallery]

    def dists(im):
        q = imagehash.crop_resistant_hash(im)
        return np.array([q - h for h in g], np.float64)

    per, thresh = {}, np.inf
    for ename, edit in ALBUM_EDITS.items():
        d = np.stack([dists(edit(im)) for im in album])
        n += len(album)
        per[ename] = float((d.argmin(1) == np.arange(len(album))).mean())
        if ename == list(ALBUM_EDITS)[-1]:
            thresh = float(np.quantile(d[np.arange(len(album)), np.arange(len(album))], 0.9, method="lower"))
    fm = float(np.mean([dists(im).min() <= thresh for im in non_matches]))
    n += len(non_matches)
    return per, fm, (time.perf_counter() - t) / n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", type=Path, default=FOLDER, help="built by bench/photo_folder.py")
    ap.add_argument("--checkpoint", help="also the autoencoder's codes (ae-crops, ae-crops-mirror)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--methods", nargs="+", default=["ae-crops", "ae-crops-mirror", "phash", "phash-mirror"], help="ours to run"
    )
    ap.add_argument("--no-crop-resistant", action="store_true", help="skip imagehash.crop_resistant_hash (slow)")
    ap.add_argument(
        "--unverified", action="store_true", help="also ae-crops without the pHash verification (before/after)"
    )
    a = ap.parse_args(argv)
    print(f"cpus={os.cpu_count()} (machine may be shared; timings are indicative)")
    names = [n for n in a.methods if a.checkpoint or not n.startswith("ae")]
    methods = evaluation_methods(names, checkpoint=a.checkpoint)
    enc = next((m.encoder for m in methods if m.encoder is not None), None)
    if a.unverified and enc is not None:
        methods.append(AutoencoderMethod(encoder=enc, views="crops", verify=False))
    album_p, other_p, held_p = split(pictures(a.folder), a.seed)
    album, others, held = ([load(p) for p in ps] for ps in (album_p, other_p, held_p))
    tiles = [
        im.crop((int(fx * im.width), int(fy * im.height), int((fx + f) * im.width), int((fy + f) * im.height)))
        for im in others
        for fx, fy, f in TILES
    ]
    non_matches = non_match_queries(held)
    with tempfile.TemporaryDirectory() as tmp:
        qdir, ddir = Path(tmp, "album"), Path(tmp, "distractors")
        qdir.mkdir(), ddir.mkdir()
        for i, im in enumerate(album):
            im.save(qdir / f"{i:03d}.png")
        for i, im in enumerate(others + tiles):
            im.save(ddir / f"{i:03d}.png")
        t = time.perf_counter()
        report = evaluate_neardup(
            ddir,
            methods=methods,
            queries=qdir,
            transforms=ALBUM_EDITS,
            non_matches=non_matches,
            fm_transform="thumbnail_q20",
        )
        seconds = time.perf_counter() - t
    print(
        f"album {len(album)} pictures x {len(ALBUM_EDITS)} edits; gallery {report['n_gallery']} (album + "
        f"{len(others)} other pictures + {len(tiles)} tiles of them); {len(non_matches)} non-match queries "
        f"({len(held)} held-out pictures); ours in {seconds:.0f} s"
    )
    cols = {r["method"]: {t: v["R@1"] for t, v in r["transforms"].items()} for r in report["results"]}
    fms = {r["method"]: r["false_match"]["rate"] for r in report["results"]}
    if not a.no_crop_resistant:
        cols["crop_resistant"], fms["crop_resistant"], sec = crop_resistant(album, album + others + tiles, non_matches)
        print(f"imagehash.crop_resistant_hash: {sec * 1000:.0f} ms per image (hashing, on this machine)")
    print("R@1 of the original per edit; FM: false-match rate at the 90%-of-thumbnails distance")
    print(f"{'edit':14s} " + " ".join(f"{n:>16s}" for n in cols))
    for e in [*ALBUM_EDITS, "MEAN"]:
        cells = [np.mean(list(c.values())) if e == "MEAN" else c[e] for c in cols.values()]
        print(f"{e:14s} " + " ".join(f"{v:16.2f}" for v in cells))
    print(f"{'FM':14s} " + " ".join(f"{fms[n]:16.2f}" for n in cols))
    return 0


if __name__ == "__main__":
    sys.exit(main())

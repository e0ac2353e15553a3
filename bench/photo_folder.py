"""Build ``data/photos200/``: a flat folder of ~200 real photographs and photo-like wallpapers.

    .venv/bin/python bench/photo_folder.py                       # data/photos200, 200 files
    .venv/bin/python bench/photo_folder.py --out /tmp/p50 --n 50

Why: the issue asks that "a ~200-image photo folder must train past the PCA initialisation and
its codes beat PCA on it". The 10 photos shipped inside scikit-image and scikit-learn are far too
few for that, and Fashion-MNIST is not photographs; this script assembles a folder that is.

Sources (nothing else): Debian packages fetched with ``apt-get download`` into data/pkgs/ (kept:
a .deb already there is not fetched again) and unpacked with ``dpkg -x`` into data/<package>/,
without installing anything: lomiri-wallpapers, lomiri-wallpapers-16.04, lomiri-wallpapers-20.04,
sway-backgrounds, debian-edu-artwork and its theme variants, desktop-base (also unpacked by
``make bench-data``); the RGB photos of scikit-image's data (both sides >= 256 px; the synthetic
``color``/``phantom``/``chessboard_RGB`` and the stereo twin ``motorcycle_right`` left out) and
scikit-learn's china.jpg and flower.jpg. The wallpaper packages listed in ``RESERVED`` are kept
for other uses and never read here.

What is kept, in this order:

1. raster files (.png/.jpg/.jpeg; not symlinks) with both sides >= 256 px;
2. not a logo or overlay (at most 1% of the pixels not fully opaque) and not a screenshot of a
   desktop or login screen (``*preview*`` files: windows, clocks and buttons over a wallpaper);
3. not mostly flat colour (grub/plymouth/login backgrounds): grey standard deviation of the
   64x64 squashed picture (:func:`encoder.data.resize_gray`) >= 12 grey levels;
4. one file per byte content (sha256);
5. one file per picture: files whose stems differ only by a resolution or orientation token
   (``_1920x1080``, ``-16x9``, ``_Portrait``) in the same folder of one source are one picture
   at several sizes; the one with the most pixels is kept;
6. one file per look: two pictures whose 32x32 grey thumbnails differ by less than 8 grey levels
   on average (the same artwork with or without a logo, or framed for another screen) count as one;
   the larger is kept.

If fewer than ``--n`` pictures remain, the folder is topped up with crops of them, taken
deterministically: round after round over the pictures, widest first, each round one more crop
of each picture (left half, right half, centre, three vertical thirds, four quadrants; top/bottom
for portrait pictures), only crops with both sides >= 256 px, until there are exactly ``--n``
files; a crop that is itself flat colour (rule 3) is passed over. Originals are copied byte for
byte; crops are cut from the upright picture (:func:`encoder.data.open_image`) and saved in the
original's format (JPEG quality 95 or PNG).

Output: ``<source>__<stem>.<ext>`` for originals, ``<source>__<stem>__<crop>.<ext>`` for crops,
and SOURCES.txt (one tab-separated line per file: name, source, where it came from). The folder
is built beside its destination and renamed into place; when the destination is already complete
(SOURCES.txt lists ``--n`` files and all exist) the script says so and exits.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from encoder.data import ImageLoadError, open_image, resize_gray, to_gray  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
PKGS = DATA / "pkgs"
PACKAGES = [
    "lomiri-wallpapers",
    "lomiri-wallpapers-16.04",
    "lomiri-wallpapers-20.04",
    "sway-backgrounds",
    "debian-edu-artwork",
    "debian-edu-artwork-buster",
    "debian-edu-artwork-emerald",
    "debian-edu-artwork-homeworld",
    "debian-edu-artwork-softwaves",
    "debian-edu-artwork-spacefun",
    "desktop-base",
]
# Reserved for other work: never downloaded or read by this script.
RESERVED = {
    "plasma-workspace-wallpapers",
    "openclipart-png",
    "mate-backgrounds",
    "ukui-wallpapers",
    "gnome-backgrounds",
}
SK_NOT_PHOTOS = {"color.png", "phantom.png", "chessboard_RGB.png", "motorcycle_right.png"}
RASTER = {".png", ".jpg", ".jpeg"}
MIN_SIDE = 256
MAX_TRANSPARENT = 0.01  # fraction of pixels with alpha < 255
MIN_GREY_STD = 12.0  # grey levels, 64x64 squashed picture
NEAR_DUP_MAD = 8.0  # grey levels, mean absolute difference of 32x32 thumbnails
# resolution / aspect / orientation tokens that make several files of one picture
SIZE_TOKEN = re.compile(r"[_-]?(\d{1,5}x\d{1,5}|portrait|landscape)(?=$|[_-])", re.IGNORECASE)
# crops as fractions (x0, y0, x1, y1) of a landscape picture; transposed for a portrait one
CROPS = [
    ("left", (0, 0, 0.5, 1)),
    ("right", (0.5, 0, 1, 1)),
    ("centre", (0.25, 0.25, 0.75, 0.75)),
    ("third1", (0, 0, 1 / 3, 1)),
    ("third2", (1 / 3, 0, 2 / 3, 1)),
    ("third3", (2 / 3, 0, 1, 1)),
    ("q1", (0, 0, 0.5, 0.5)),
    ("q2", (0.5, 0, 1, 0.5)),
    ("q3", (0, 0.5, 0.5, 1)),
    ("q4", (0.5, 0.5, 1, 1)),
]
PORTRAIT_NAMES = {"left": "top", "right": "bottom", "third1": "band1", "third2": "band2", "third3": "band3"}


@dataclass
class Picture:
    source: str  # package name, "skimage" or "sklearn"
    path: Path
    origin: str  # where it came from, for SOURCES.txt
    size: tuple[int, int] = (0, 0)
    sha: str = ""
    thumb: np.ndarray | None = None
    grey: Image.Image | None = None  # small grey copy (long side <= 512) for the flatness of crops
    name: str = ""  # output stem, set once the set is final

    @property
    def pixels(self) -> int:
        return self.size[0] * self.size[1]


def fetch_package(pkg: str, log: list[str]) -> Path | None:
    """data/<pkg>/ unpacked from data/pkgs/<pkg>_*.deb (downloaded if missing); None if unavailable."""
    if pkg in RESERVED:
        raise ValueError(f"{pkg} is reserved and must not be used here")
    dest = DATA / pkg
    if dest.is_dir():
        return dest
    PKGS.mkdir(parents=True, exist_ok=True)
    debs = sorted(PKGS.glob(f"{pkg}_*.deb"))
    if not debs:
        r = subprocess.run(["apt-get", "download", "-q", pkg], cwd=PKGS, capture_output=True, text=True)
        debs = sorted(PKGS.glob(f"{pkg}_*.deb"))
        if r.returncode != 0 or not debs:
            err = (r.stderr.strip().splitlines() or ["no .deb"])[-1]
            log.append(f"{pkg}: apt-get download failed ({err})")
            return None
    tmp = Path(tempfile.mkdtemp(prefix=f".{pkg}.", suffix=".tmp", dir=DATA))
    r = subprocess.run(["dpkg", "-x", str(debs[-1]), str(tmp)], capture_output=True, text=True)
    if r.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        log.append(f"{pkg}: dpkg -x {debs[-1].name} failed ({r.stderr.strip()})")
        return None
    tmp.rename(dest)
    return dest


def deb_name(pkg: str) -> str:
    debs = sorted(PKGS.glob(f"{pkg}_*.deb"))
    return debs[-1].name if debs else "(unpacked before)"


def candidates(log: list[str]) -> list[Picture]:
    """Every raster file of the sources, in a fixed order (packages, then skimage, then sklearn)."""
    import skimage
    import sklearn

    out = []
    for pkg in PACKAGES:
        root = fetch_package(pkg, log)
        if root is None:
            continue
        deb = deb_name(pkg)
        for p in sorted(root.rglob("*")):
            if p.suffix.lower() in RASTER and p.is_file() and not p.is_symlink():
                out.append(Picture(pkg, p, f"debian:{deb}:/{p.relative_to(root)}"))
    sk = Path(skimage.__file__).parent / "data"
    for p in sorted(sk.iterdir()):
        if p.suffix.lower() in RASTER and p.name not in SK_NOT_PHOTOS:
            with Image.open(p) as im:
                if im.mode != "RGB":
                    continue
            out.append(Picture("skimage", p, f"scikit-image {skimage.__version__}:skimage/data/{p.name}"))
    sl = Path(sklearn.__file__).parent / "datasets" / "images"
    for n in ("china.jpg", "flower.jpg"):
        out.append(Picture("sklearn", sl / n, f"scikit-learn {sklearn.__version__}:sklearn/datasets/images/{n}"))
    return out


def transparent_fraction(im: Image.Image) -> float:
    if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's note on palette transparency
            return float((np.asarray(im.convert("RGBA"))[..., 3] < 255).mean())
    return 0.0


def picture_key(pic: Picture) -> tuple[str, str, str]:
    """Same key = same picture at another resolution/orientation (same source, same folder)."""
    folder = "/".join(SIZE_TOKEN.sub("", part) for part in pic.path.parent.parts)
    return pic.source, folder, SIZE_TOKEN.sub("", pic.path.stem).lower()


def select(cands: list[Picture], skipped: Counter) -> list[Picture]:
    """Apply the six rules of the module docstring; returns the distinct pictures, in input order."""
    kept, seen_sha = [], set()
    for pic in cands:
        try:
            with Image.open(pic.path) as im:  # header only
                small = min(im.size) < MIN_SIDE
        except OSError:
            skipped["unreadable"] += 1
            continue
        if small:
            skipped["smaller than 256 px"] += 1
            continue
        if "preview" in pic.path.stem.lower():
            skipped["UI screenshot (preview)"] += 1
            continue
        try:
            im = open_image(pic.path, draft_size=(MIN_SIDE, MIN_SIDE))
        except ImageLoadError as e:
            skipped[f"unreadable ({e.reason})"] += 1
            continue
        if transparent_fraction(im) > MAX_TRANSPARENT:
            skipped["logo/overlay (transparent)"] += 1
            continue
        grey = to_gray(im)
        if flat(grey):
            skipped["flat colour"] += 1
            continue
        pic.sha = hashlib.sha256(pic.path.read_bytes()).hexdigest()
        if pic.sha in seen_sha:
            skipped["byte duplicate"] += 1
            continue
        seen_sha.add(pic.sha)
        with Image.open(pic.path) as full:
            pic.size = full.size
        pic.thumb = resize_gray(grey, 32) * 255
        pic.grey = grey.copy()
        pic.grey.thumbnail((512, 512), Image.Resampling.BILINEAR)
        kept.append(pic)

    best: dict[tuple, Picture] = {}  # rule 5: largest file per picture
    for pic in kept:
        k = picture_key(pic)
        if k not in best or pic.pixels > best[k].pixels:
            best[k] = pic
    skipped["same picture, other resolution"] += len(kept) - len(best)
    kept = [p for p in kept if best[picture_key(p)] is p]

    # rule 6: near-identical look; larger first so the larger of a pair is the one kept
    out: list[Picture] = []
    for pic in sorted(kept, key=lambda p: -p.pixels):
        if any(np.abs(pic.thumb - q.thumb).mean() < NEAR_DUP_MAD for q in out):
            skipped["near-identical look"] += 1
        else:
            out.append(pic)
    order = {id(p): i for i, p in enumerate(kept)}
    return sorted(out, key=lambda p: order[id(p)])


def assign_names(pics: list[Picture]) -> None:
    """``<source>__<stem>``, with parent folder names prefixed where stems collide in a source."""
    depth = {id(p): 0 for p in pics}
    while True:
        for p in pics:
            parts = p.path.parent.parts[len(p.path.parent.parts) - depth[id(p)] :] if depth[id(p)] else ()
            p.name = f"{p.source}__" + "_".join([*parts, p.path.stem])
        counts = Counter(p.name for p in pics)
        clash = [p for p in pics if counts[p.name] > 1]
        if not clash:
            return
        for p in clash:
            depth[id(p)] += 1


def ext_of(pic: Picture) -> str:
    return ".jpg" if pic.path.suffix.lower() in (".jpg", ".jpeg") else ".png"


def flat(grey: Image.Image) -> bool:
    """Rule 3: grey standard deviation of the 64x64 squashed picture < 12 grey levels."""
    return resize_gray(grey, 64).std() * 255 < MIN_GREY_STD


def crop_plan(pics: list[Picture], m: int) -> list[tuple[Picture, str, tuple[int, int, int, int]]]:
    """The first ``m`` crops, round after round over the pictures (widest first); a crop must have
    both sides >= 256 px and pass the flat-colour rule itself (a gradient's corner may not)."""
    order = sorted(pics, key=lambda p: (-p.size[0], -p.pixels, p.name))
    plan = []
    for label, (x0, y0, x1, y1) in CROPS:
        for pic in order:
            if len(plan) == m:
                return plan
            w, h = pic.size
            if h > w:  # portrait: same cuts along the long side
                x0_, y0_, x1_, y1_ = y0, x0, y1, x1
                label_ = PORTRAIT_NAMES.get(label, label)
            else:
                x0_, y0_, x1_, y1_, label_ = x0, y0, x1, y1, label
            box = (round(x0_ * w), round(y0_ * h), round(x1_ * w), round(y1_ * h))
            if box[2] - box[0] < MIN_SIDE or box[3] - box[1] < MIN_SIDE:
                continue
            gw, gh = pic.grey.size
            if not flat(pic.grey.crop((round(x0_ * gw), round(y0_ * gh), round(x1_ * gw), round(y1_ * gh)))):
                plan.append((pic, label_, box))
    return plan


def is_complete(out: Path, n: int) -> int | None:
    """Number of files when SOURCES.txt lists ``n`` files that all exist, else None."""
    src = out / "SOURCES.txt"
    if not src.is_file():
        return None
    names = [ln.split("\t")[0] for ln in src.read_text().splitlines() if ln and not ln.startswith("#")]
    if len(names) != n or not all((out / f).is_file() for f in names):
        return None
    return len(names)


def build(out: Path, n: int) -> None:
    t0 = time.perf_counter()
    log: list[str] = []
    skipped: Counter = Counter()
    pics = select(candidates(log), skipped)
    assign_names(pics)
    if len(pics) > n:
        pics = pics[:n]
    plan = crop_plan(pics, n - len(pics))

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        lines = []
        for pic in pics:
            f = pic.name + ext_of(pic)
            shutil.copyfile(pic.path, tmp / f)
            lines.append(f"{f}\t{pic.source}\t{pic.origin}\t{pic.size[0]}x{pic.size[1]}")
        cache: tuple[Picture | None, Image.Image | None] = (None, None)
        for pic, label, box in sorted(plan, key=lambda c: c[0].name):  # one decode per picture
            if cache[0] is not pic:
                cache = (pic, open_image(pic.path))
            im = cache[1].crop(box)
            f = f"{pic.name}__{label}{ext_of(pic)}"
            if ext_of(pic) == ".jpg":
                im.convert("RGB").save(tmp / f, quality=95, icc_profile=cache[1].info.get("icc_profile"))
            else:
                im.save(tmp / f, compress_level=3)
            lines.append(
                f"{f}\t{pic.source}\tcrop {label} {box} of {pic.name + ext_of(pic)} ({pic.origin})\t"
                f"{box[2] - box[0]}x{box[3] - box[1]}"
            )
        by_source = Counter(ln.split("\t")[1] for ln in lines)
        header = [
            f"# {len(lines)} files = {len(pics)} originals + {len(plan)} crops; built by bench/photo_folder.py",
            "# per source: " + ", ".join(f"{s} {c}" for s, c in by_source.items()),
            "# file\tsource\torigin\tsize",
        ]
        (tmp / "SOURCES.txt").write_text("\n".join(header + lines) + "\n")
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            old.rmdir()
            out.rename(old)
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    print(f"{out}: {len(lines)} files = {len(pics)} originals + {len(plan)} crops ({time.perf_counter() - t0:.1f} s)")
    if len(lines) < n:
        print(f"  only {len(lines)} of the {n} asked for: not enough pictures and crops >= {MIN_SIDE} px")
    orig = Counter(p.source for p in pics)
    crops = Counter(p.source for p, _, _ in plan)
    for s in dict.fromkeys([*orig, *crops]):
        print(f"  {s:30s} {orig[s]:3d} originals + {crops[s]:3d} crops")
    print("  skipped: " + ", ".join(f"{k} {v}" for k, v in skipped.items()))
    for line in log:
        print("  " + line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DATA / "photos200", help="the folder to build")
    ap.add_argument("--n", type=int, default=200, help="number of image files wanted")
    ap.add_argument("--force", action="store_true", help="rebuild even when the folder is complete")
    args = ap.parse_args()
    if not args.force and (k := is_complete(args.out, args.n)) is not None:
        print(f"{args.out}: complete ({k} files listed in SOURCES.txt), nothing to do")
        return
    build(args.out, args.n)


if __name__ == "__main__":
    main()

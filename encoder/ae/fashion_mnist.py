"""Fashion-MNIST as an image folder: the default training set of the main job.

``export(out)`` writes the 70,000 labelled 28x28 grey images as PNG files::

    out/train/<class name>/00000.png ... (60,000)
    out/test/<class name>/00000.png  ... (10,000)

The IDX files come from the Debian package ``dataset-fashion-mnist``
(/usr/share/datasets/fashion-mnist) when it is installed, else from torchvision's
downloader (needs the internet). The folder is written under a temporary name and renamed
when complete, so an interrupted export never looks finished. Its ``DONE`` marker (JSON)
records what was exported (``limit``, ``source``, images per split); an export is reused
only when it matches the request, otherwise it is redone (and replaced atomically).

Example:
    >>> from encoder.ae.fashion_mnist import export
    >>> export("data/fashion-mnist")          # doctest: +SKIP
    PosixPath('data/fashion-mnist')
"""

from __future__ import annotations

import gzip
import json
import os
import struct
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from encoder.atomic import atomic_dir

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot")
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally .gz) into a uint8 array; raises ValueError if malformed."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4:
        raise ValueError(f"{path}: not an IDX file (only {len(data)} bytes)")
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: expected an unsigned-byte IDX file, got header {data[:4].hex()}")
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} but holds {body.size} bytes")
    return body.reshape(dims)


def _find_source(source: str | os.PathLike | None) -> Path:
    candidates = [Path(source)] if source else [DEBIAN_DIR]
    for d in candidates:
        if all((d / (n + ".gz")).exists() or (d / n).exists() for pair in FILES.values() for n in pair):
            return d
    if source:
        raise FileNotFoundError(f"Fashion-MNIST IDX files not found in {source}")
    return _download()


def _download() -> Path:
    """torchvision's downloader, used only when the Debian package is missing."""
    from torchvision.datasets import FashionMNIST

    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "encoder-fashion-mnist"
    print(f"dataset-fashion-mnist not installed; downloading with torchvision to {root}", file=sys.stderr)
    for train in (True, False):
        FashionMNIST(str(root), train=train, download=True)
    return root / "FashionMNIST" / "raw"


def _idx(d: Path, name: str) -> np.ndarray:
    return read_idx(d / (name + ".gz") if (d / (name + ".gz")).exists() else d / name)


def load_arrays(source: str | os.PathLike | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train": (images (60000,28,28) uint8, labels (60000,) uint8), "test": (...10000...)}``."""
    d = _find_source(source)
    return {split: (_idx(d, imgs), _idx(d, labels)) for split, (imgs, labels) in FILES.items()}


def _marker(limit: int | None, source: str | os.PathLike | None) -> dict:
    """What an export is of: compared with an existing ``DONE`` marker before reusing it."""
    return {"limit": limit, "source": None if source is None else str(Path(source).resolve())}


def _existing(out: Path) -> dict | None:
    """The ``DONE`` marker of ``out`` as a dict, or None (none, or an older plain-text one)."""
    try:
        done = json.loads((out / "DONE").read_text())
    except (OSError, ValueError):
        return None
    return done if isinstance(done, dict) else None


def export(
    out: str | os.PathLike = "data/fashion-mnist", source: str | os.PathLike | None = None, limit: int | None = None
) -> Path:
    """Write Fashion-MNIST as PNG files under ``out`` (see module docstring); return ``out``.

    ``limit`` keeps only the first ``limit`` images of each split (for quick runs/tests).
    An existing export of the same ``limit`` and ``source`` is reused; one of another is
    replaced (re-exported), saying so on stderr.
    """
    out = Path(out)
    want = _marker(limit, source)
    done = _existing(out) if (out / "DONE").exists() else None
    if done is not None and {k: done.get(k) for k in want} == want:
        return out
    if (out / "DONE").exists():
        have = {k: done.get(k) for k in (*want, "counts")} if done else "an older export (no record)"
        print(f"{out}: holds {have}, asked for {want}: exporting again", file=sys.stderr)
    arrays = load_arrays(source)
    with atomic_dir(out) as tmp:
        counts = {}
        for split, (images, labels) in arrays.items():
            n = counts[split] = len(images) if limit is None else min(limit, len(images))
            for c in CLASSES:
                (tmp / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(images[i], "L").save(
                    tmp / split / CLASSES[labels[i]] / f"{i:05d}.png", compress_level=1
                )
        (tmp / "DONE").write_text(json.dumps({**want, "counts": counts}) + "\n")
    return out

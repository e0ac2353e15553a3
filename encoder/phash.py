"""Perceptual hashes (pHash, dHash, aHash) as packed 64-bit arrays, batched.

pHash follows ``imagehash.phash`` exactly: grey (Pillow ``convert('L')``), LANCZOS resize to
32x32, 2-D DCT-II, the 8x8 lowest frequencies compared with their median. The DCT is a
matrix product ``D @ X @ D.T`` (no scipy), done for a whole batch at once, so for the same
decoded image the bits are identical to imagehash's (pinned in tests/test_phash.py).

A hash is 8 bytes, ``np.packbits`` of the 64 bits in row-major order (first bit = MSB of
byte 0), so ``hash_to_hex`` gives the same hex string as ``str(imagehash.phash(im))``.

Decode modes. Full decode (the default) decodes colour JPEGs to their luma channel only
(``open_image(luma_only=True)``: no chroma planes, no colour conversion), which is what
``convert('L')`` computes up to rounding; the hashes equaled imagehash's on every JPEG of the
bench and tests. ``draft=True`` also lets the JPEG decoder scale down by up to 1/8 before
hashing (2x-10x faster on big photos). Those pixels differ slightly, so a few bits can flip
(measured in bench/phash_bench.py); the mode is recorded in the index meta and an index never
mixes the two.

Example:
    >>> from PIL import Image
    >>> import numpy as np
    >>> im = Image.fromarray(np.arange(64 * 64, dtype=np.uint8).reshape(64, 64))
    >>> phash_images([im]).shape
    (1, 8)
"""
from __future__ import annotations

import os
from multiprocessing import get_context
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from encoder.data import ImageLoadError, open_image, to_gray

METHODS = ("phash", "dhash", "ahash")
# Bump when a definition changes: indexes record it and refuse to mix versions.
HASH_VERSION = {
    "phash": "phash-v1:L,lanczos32,dct2,8x8>median,imagehash-compatible",
    "dhash": "dhash-v1:L,lanczos9x8,row-gradient>0,imagehash-compatible",
    "ahash": "ahash-v1:L,lanczos8x8,>mean,imagehash-compatible",
}
# Grey 32x32 std below this (in 0..255 levels) = flat image: its hash carries no information.
FLAT_STD = 2.0
_SIZES = {"phash": (32, 32), "dhash": (9, 8), "ahash": (8, 8)}


def dct_matrix(n: int = 32) -> np.ndarray:
    """Unnormalised DCT-II matrix as scipy.fftpack.dct(type=2): ``y = D @ x``, (n, n) float64."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    return 2.0 * np.cos(np.pi * k * (2 * i + 1) / (2 * n))


_D32 = dct_matrix(32)


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method={method!r} must be one of {METHODS}")


def small_gray(im: Image.Image, method: str = "phash") -> np.ndarray:
    """Grey, resized pixels a hash is computed from: (32,32)|(8,9)|(8,8) float64 in [0,255]."""
    _check_method(method)
    g = to_gray(im)
    return np.asarray(g.resize(_SIZES[method], Image.Resampling.LANCZOS), dtype=np.float64)


def hash_pixels(pixels: np.ndarray, method: str = "phash") -> np.ndarray:
    """Hash a batch of small grey arrays from :func:`small_gray`: (N,h,w) -> (N,8) uint8."""
    _check_method(method)
    x = np.asarray(pixels, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(f"pixels must be (N,h,w), got shape {x.shape}")
    if method == "phash":
        dct = _D32 @ x @ _D32.T  # batched 2-D DCT-II, (N,32,32)
        low = dct[:, :8, :8].reshape(len(x), 64)
        bits = low > np.median(low, axis=1, keepdims=True)
    elif method == "dhash":
        bits = (x[:, :, 1:] > x[:, :, :-1]).reshape(len(x), 64)
    else:
        flat = x.reshape(len(x), 64)
        bits = flat > flat.mean(axis=1, keepdims=True)
    return np.packbits(bits, axis=1)


def is_flat(pixels: np.ndarray, threshold: float = FLAT_STD) -> np.ndarray:
    """Flag low-information images: (N,h,w) grey -> (N,) bool, std < threshold levels."""
    x = np.asarray(pixels, dtype=np.float64)
    return x.reshape(len(x), -1).std(axis=1) < threshold


def phash_images(images: Sequence[Image.Image], method: str = "phash") -> np.ndarray:
    """Hash PIL images: list of N images -> (N,8) uint8 packed hashes."""
    if len(images) == 0:
        return np.zeros((0, 8), np.uint8)
    return hash_pixels(np.stack([small_gray(im, method) for im in images]), method)


def hash_to_hex(h: np.ndarray) -> str:
    """(8,) uint8 -> 16-char hex, equal to ``str(imagehash.phash(...))``."""
    return bytes(np.asarray(h, np.uint8)).hex()


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distance between packed hashes, broadcasting: (...,8),(...,8) -> (...) int."""
    x = np.bitwise_xor(np.asarray(a, np.uint8), np.asarray(b, np.uint8))
    return np.unpackbits(x, axis=-1).sum(axis=-1)


def _load_small(args: tuple[str, str, bool, bool]):
    path, method, draft, mirror = args
    try:
        im = open_image(path, draft_size=(64, 64) if draft else None, luma_only=True)
        if mirror:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        px = small_gray(im, method)
        return path, px, None
    except ImageLoadError as e:
        return path, None, e.reason
    except OSError as e:
        return path, None, f"cannot read: {e}"


def hash_paths(
    paths: Sequence[str | os.PathLike],
    method: str = "phash",
    *,
    draft: bool = False,
    workers: int | None = None,
    errors: list | None = None,
    progress: bool = False,
    mirror: bool = False,
    batch_size: int = 1024,
) -> tuple[np.ndarray, list[Path], np.ndarray]:
    """Hash image files, skipping broken ones.

    Args:
        paths: image files.
        method: ``phash`` | ``dhash`` | ``ahash``.
        draft: JPEG draft decoding (faster, a few bits may differ from full decode).
        workers: processes for decoding (default: all cores when more than 64 files, else 1).
        errors: list that receives ``(path, reason)`` of files that could not be read.
        progress: show a tqdm bar.
        mirror: hash the horizontally flipped image instead.

    Returns:
        ``(hashes (N,8) uint8, kept_paths, flat (N,) bool)`` for the N readable files, in order.

    Example:
        >>> hashes, kept, flat = hash_paths([])
        >>> hashes.shape
        (0, 8)
    """
    _check_method(method)
    if workers is not None and workers < 1:
        raise ValueError(f"workers={workers} must be >= 1")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    jobs = [(str(p), method, draft, mirror) for p in paths]
    if workers is None:
        workers = (os.cpu_count() or 1) if len(jobs) > 64 else 1
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(jobs), desc=f"{method}", unit="img")
    hashes, kept, flats, buf = [], [], [], []

    def flush():
        if buf:
            px = np.stack(buf)
            hashes.append(hash_pixels(px, method))
            flats.append(is_flat(px))
            buf.clear()

    def consume(it):
        for path, px, reason in it:
            if bar is not None:
                bar.update(1)
            if px is None:
                if errors is not None:
                    errors.append((Path(path), reason))
                continue
            kept.append(Path(path))
            buf.append(px)
            if len(buf) >= batch_size:
                flush()

    if workers > 1:
        with get_context("spawn" if os.name == "nt" else "fork").Pool(workers) as pool:
            consume(pool.imap(_load_small, jobs, chunksize=16))
    else:
        consume(map(_load_small, jobs))
    flush()
    if bar is not None:
        bar.close()
    if not hashes:
        return np.zeros((0, 8), np.uint8), kept, np.zeros(0, bool)
    return np.concatenate(hashes), kept, np.concatenate(flats)

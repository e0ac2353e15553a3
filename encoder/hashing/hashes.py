"""Perceptual hashes (pHash, dHash, aHash) as packed 64-bit arrays, batched.

pHash follows ``imagehash.phash`` exactly: grey (Pillow ``convert('L')``), LANCZOS resize to
32x32, 2-D DCT-II, the 8x8 lowest frequencies compared with their median. The DCT is a
matrix product ``D @ X @ D.T`` (no scipy), done for a whole batch at once, so for the same
decoded image the bits are identical to imagehash's (pinned in tests/test_phash.py).

A hash is 8 bytes, ``np.packbits`` of the 64 bits in row-major order (first bit = MSB of
byte 0), so ``hash_to_hex`` gives the same hex string as ``str(imagehash.phash(im))``.

Decode modes. Full decode (the default) decodes as imagehash does (RGB, then
``convert('L')``), so the hashes are imagehash's, bit for bit. ``draft=True`` is the fast
mode: colour JPEGs are decoded to their luma channel only (``open_image(luma_only=True)``:
no chroma planes, no colour conversion; equal to ``convert('L')`` up to rounding) and the
decoder may scale down by up to 1/8 (2x-10x faster on big photos). Those pixels differ
slightly, so a few bits can flip (measured in bench/phash_bench.py: with luma alone, 3 of
226 hashes differed, by 1-2 bits); the mode is recorded in the index meta and an index never
mixes the two.

The 32x32 LANCZOS resize, Pillow's costliest step after the decode, runs as int8 matrix
products (:mod:`encoder.hashing.lanczos`, same pixels as Pillow) when ``fast_resize`` is on.

Example:
    >>> from PIL import Image
    >>> import numpy as np
    >>> im = Image.fromarray(np.arange(64 * 64, dtype=np.uint8).reshape(64, 64))
    >>> phash_images([im]).shape
    (1, 8)
"""
from __future__ import annotations

import importlib
import os
import sys
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from encoder.hashing import lanczos as resample
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
# Below this many pixels Pillow's resize is already fast (256x256: 0.28 ms vs 0.15-0.24 ms).
FAST_RESIZE_MIN_PIXELS = 1 << 16
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


def small_gray(im: Image.Image, method: str = "phash", *, fast_resize: bool = False) -> np.ndarray:
    """Grey, resized pixels a hash is computed from: (32,32)|(8,9)|(8,8) float64 in [0,255].

    ``fast_resize`` takes the same LANCZOS resize as int8 matrix products
    (:func:`encoder.hashing.lanczos.lanczos_resize`: bit-identical to Pillow's, 2-5x faster on
    photos; it imports torch) for images of ``FAST_RESIZE_MIN_PIXELS`` or more; Pillow's
    own call is cheaper on small ones (28x28 Fashion-MNIST: its fixed cost dominates).
    """
    _check_method(method)
    g = to_gray(im)
    size = _SIZES[method]
    if fast_resize and g.mode == "L" and g.width * g.height >= FAST_RESIZE_MIN_PIXELS:
        return resample.lanczos_resize(np.asarray(g), size).astype(np.float64)
    return np.asarray(g.resize(size, Image.Resampling.LANCZOS), dtype=np.float64)


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


def _load_small(args: tuple[str, str, bool, bool, bool]):
    path, method, draft, mirror, fast = args
    try:
        im = open_image(path, draft_size=(64, 64) if draft else None, luma_only=draft)
        if mirror:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        px = small_gray(im, method, fast_resize=fast)
        return path, px, None
    except ImageLoadError as e:
        return path, None, e.reason
    except OSError as e:
        return path, None, f"cannot read: {e}"


# Pillow keeps up to this many freed 16 MB image blocks for the next decode instead of giving
# them back to the OS: fresh pages cost a page fault each (35% of an RGB decode of a 12 MP JPEG,
# and 15% of hashing the bench folder in one process, measured here).
PILLOW_BLOCKS = 8


@contextmanager
def _pillow_block_cache():
    old = Image.core.get_blocks_max()
    Image.core.set_blocks_max(max(old, PILLOW_BLOCKS))
    try:
        yield
    finally:
        Image.core.set_blocks_max(old)  # also frees the cached blocks beyond the old limit


def _init_worker() -> None:
    """Decoding-process initializer: one torch thread each (the processes already fill the
    cores), Pillow's block cache, and (glibc) freed memory kept for reuse rather than returned
    to the OS, so the big per-image arrays do not page-fault afresh each time (measured: 25-50k
    faults per pass over the bench folder -> ~0, and steadier times)."""
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    Image.core.set_blocks_max(PILLOW_BLOCKS)
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 28)  # M_MMAP_THRESHOLD: heap, not fresh mmaps, up to 256 MB
        libc.mallopt(-1, 1 << 29)  # M_TRIM_THRESHOLD: keep up to 512 MB of freed heap
    except (OSError, AttributeError):  # not glibc: only the faults are saved, nothing breaks
        pass


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
    fast_resize: bool | None = None,
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
        fast_resize: resize with :mod:`encoder.hashing.lanczos` (same pixels as Pillow, 2-5x
            faster, needs torch). Default: when torch is already imported, or for 1,000
            files or more (where torch's one-time import, about 1-2 s, pays off).

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
    if fast_resize is None:
        fast_resize = "torch" in sys.modules or len(paths) >= 1000
    if fast_resize:
        importlib.import_module("torch")  # imported once here, inherited by forked workers
    jobs = [(str(p), method, draft, mirror, fast_resize) for p in paths]
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
        with get_context("spawn" if os.name == "nt" else "fork").Pool(workers, initializer=_init_worker) as pool:
            consume(pool.imap(_load_small, jobs, chunksize=16))
    else:
        with _pillow_block_cache():
            consume(map(_load_small, jobs))
    flush()
    if bar is not None:
        bar.close()
    if not hashes:
        return np.zeros((0, 8), np.uint8), kept, np.zeros(0, bool)
    return np.concatenate(hashes), kept, np.concatenate(flats)

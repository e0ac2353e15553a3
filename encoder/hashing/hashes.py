"""Perceptual hashes (pHash, dHash, aHash) as packed 64-bit arrays, batched.

Every hash is one entry of :data:`HASHES` (its grey thumbnail size, its bit function, the
definition text its version is made of); ``METHODS = tuple(HASHES)``. Adding a method means
adding one :class:`HashDef` here: the search registry builds one method per entry.

pHash follows ``imagehash.phash`` exactly: grey (Pillow ``convert('L')``), LANCZOS resize to
32x32, 2-D DCT-II, the 8x8 lowest frequencies compared with their median. The DCT is a
matrix product ``D @ X @ D.T`` (no scipy), done for a whole batch at once, so for the same
decoded image the bits are identical to imagehash's (pinned in tests/hashing/test_hashes.py).
dHash (9x8, row gradient > 0) and aHash (8x8, > mean) follow ``imagehash.dhash`` and
``imagehash.average_hash`` the same way.

A hash is 8 bytes, ``np.packbits`` of the 64 bits in row-major order (first bit = MSB of
byte 0), so ``hash_to_hex`` gives the same hex string as ``str(imagehash.phash(im))``.

Grey conversion (``alpha``, one of :data:`ALPHA_MODES`). ``"imagehash"`` (the default) is
imagehash's: Pillow's ``convert('L')`` of the decoded image, which ignores transparency (an
RGBA pixel's RGB counts however transparent it is; LA keeps its L; P and L/RGB with a
``transparency`` entry use their palette/pixel values). ``"white"`` composites transparency
on white first (:func:`encoder.data.to_gray`, as the autoencoder sees images); it was the only
mode before and its version strings are unchanged, so indexes built then stay usable. The two
agree on every image without transparency except YCbCr-mode ones (by rounding). In both modes:
- the file's EXIF orientation is applied (:func:`encoder.data.open_image`); imagehash hashes
  whatever it is given, and ``Image.open`` does not rotate, so on a JPEG with an EXIF rotation
  ours equals ``imagehash.phash(ImageOps.exif_transpose(Image.open(path)))``, not
  ``imagehash.phash(Image.open(path))``: a rotated photo and its upright copy hash alike;
- 16-bit and float images (modes I;16, I, F) are scaled to 0..255 (``convert('L')`` would clip
  them to 255, a near-white thumbnail whose hash says nothing).

Decode modes. Full decode (the default) decodes as imagehash does (RGB, then
``convert('L')``), so the hashes are imagehash's, bit for bit (226 of 226 bench JPEGs).
``draft=True`` is the fast mode and does two things: colour JPEGs are decoded to their luma
channel only (``open_image(luma_only=True)``: no chroma planes, no colour conversion; equal to
``convert('L')`` up to rounding) AND the decoder may scale down by up to 1/8 before the 32x32
resize (2x-10x faster on big photos). Measured by bench/phash_bench.py on its 226 JPEGs:
draft mode (luma + scaling) gives 149 of 226 pHashes equal to imagehash's, mean 0.9 bits
apart (docs/measured.md), at most 8. Nearly all of that is the scaling: the luma-only decode
alone, at full size (not a mode here; the bench's untimed line), leaves 223 of 226 equal and
the other 3 two bits apart. The mode is recorded in the index meta and an index never mixes
the two.

The 32x32 LANCZOS resize, Pillow's costliest step after the decode, runs as int8 matrix
products (:mod:`encoder.hashing.lanczos`, same pixels as Pillow) when ``fast_resize`` is on.

Example:
    >>> from PIL import Image
    >>> import numpy as np
    >>> im = Image.fromarray(np.arange(64 * 64, dtype=np.uint8).reshape(64, 64))
    >>> hash_images([im]).shape
    (1, 8)
    >>> hash_to_hex(hash_images([im], "dhash")[0])
    'ffffffffffffffff'
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from encoder.data import ImageLoadError, guarded, open_image, process_context, to_gray
from encoder.hashing import lanczos


def dct_matrix(n: int = 32) -> np.ndarray:
    """Unnormalised DCT-II matrix as scipy.fftpack.dct(type=2): ``y = D @ x``, (n, n) float64."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    return 2.0 * np.cos(np.pi * k * (2 * i + 1) / (2 * n))


_D32 = dct_matrix(32)


def _phash_bits(x: np.ndarray) -> np.ndarray:
    dct = _D32 @ x @ _D32.T  # batched 2-D DCT-II, (N,32,32)
    low = dct[:, :8, :8].reshape(len(x), 64)
    return low > np.median(low, axis=1, keepdims=True)


def _dhash_bits(x: np.ndarray) -> np.ndarray:
    return (x[:, :, 1:] > x[:, :, :-1]).reshape(len(x), 64)


def _ahash_bits(x: np.ndarray) -> np.ndarray:
    flat = x.reshape(len(x), 64)
    return flat > flat.mean(axis=1, keepdims=True)


@dataclass(frozen=True)
class HashDef:
    """One hash method.

    Attributes:
        name: the method's name (``"phash"``), also the key in :data:`HASHES`.
        size: ``(w, h)`` of the grey LANCZOS thumbnail it is computed from (Pillow's order;
            the pixel array is ``(h, w)``).
        bits: ``(N, h, w)`` float64 thumbnails in [0, 255] -> ``(N, 64)`` bool, row-major.
        definition: what the bits are, as recorded in an index's version string
            (:func:`hash_version`); change it (and so the version) when the bits change.
    """

    name: str
    size: tuple[int, int]
    bits: Callable[[np.ndarray], np.ndarray]
    definition: str


HASHES: dict[str, HashDef] = {
    d.name: d
    for d in (
        HashDef("phash", (32, 32), _phash_bits, "L,lanczos32,dct2,8x8>median,imagehash-compatible"),
        HashDef("dhash", (9, 8), _dhash_bits, "L,lanczos9x8,row-gradient>0,imagehash-compatible"),
        HashDef("ahash", (8, 8), _ahash_bits, "L,lanczos8x8,>mean,imagehash-compatible"),
    )
}
METHODS: tuple[str, ...] = tuple(HASHES)
#: Bits of every hash (packed into HASH_BITS // 8 uint8 bytes): the range of a Hamming distance.
HASH_BITS = 64
ALPHA_MODES: tuple[str, ...] = ("imagehash", "white")
# Version tag and suffix per grey conversion. "white" was the only mode up to v1 and its strings
# are frozen (indexes built then record them); "imagehash" is v2 so an index never mixes the two.
_ALPHA_VERSION = {"white": ("v1", ""), "imagehash": ("v2", ",alpha-ignored")}
# Grey 32x32 std below this (in 0..255 levels) = flat image: its hash carries no information.
FLAT_STD = 2.0
# Below this many pixels Pillow's resize is already fast (256x256: 0.28 ms vs 0.15-0.24 ms).
FAST_RESIZE_MIN_PIXELS = 1 << 16
# Modes whose grey comes from to_gray: convert('L') would clip the high-depth ones rather than
# scale them (see the module docstring), and Pillow has no LAB -> L or La -> L converter.
_OWN_GREY = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F", "LAB", "La"})


def _hash_def(method: str) -> HashDef:
    try:
        return HASHES[method]
    except KeyError:
        raise ValueError(f"method={method!r} must be one of {METHODS}") from None


def _check_alpha(alpha: str) -> None:
    if alpha not in ALPHA_MODES:
        raise ValueError(f"alpha={alpha!r} must be one of {ALPHA_MODES}")


def hash_version(method: str, alpha: str = "imagehash") -> str:
    """The version string an index records for hashes of ``method`` made with ``alpha``.

    Example:
        >>> hash_version("phash", "white")
        'phash-v1:L,lanczos32,dct2,8x8>median,imagehash-compatible'
        >>> hash_version("phash")
        'phash-v2:L,lanczos32,dct2,8x8>median,imagehash-compatible,alpha-ignored'
    """
    d = _hash_def(method)
    _check_alpha(alpha)
    tag, suffix = _ALPHA_VERSION[alpha]
    return f"{d.name}-{tag}:{d.definition}{suffix}"


def _gray(im: Image.Image, alpha: str = "imagehash") -> Image.Image:
    """Any Pillow image -> mode ``L`` as the hashes see it (``alpha``: see the module docstring)."""
    _check_alpha(alpha)
    if alpha == "white" or im.mode in _OWN_GREY:
        return to_gray(im)
    return im if im.mode == "L" else im.convert("L")  # convert('L') of an L image only copies


def small_gray(
    im: Image.Image, method: str = "phash", *, alpha: str = "imagehash", fast_resize: bool = False
) -> np.ndarray:
    """Grey, resized pixels a hash is computed from: (32,32)|(8,9)|(8,8) float64 in [0,255].

    ``alpha`` chooses the grey conversion (``"imagehash"`` | ``"white"``, module docstring).
    ``fast_resize`` takes the same LANCZOS resize as int8 matrix products
    (:func:`encoder.hashing.lanczos.lanczos_resize`: bit-identical to Pillow's, 2-5x faster on
    photos; it imports torch) for images of ``FAST_RESIZE_MIN_PIXELS`` or more; Pillow's
    own call is cheaper on small ones (28x28 Fashion-MNIST: its fixed cost dominates).
    """
    size = _hash_def(method).size
    g = _gray(im, alpha)
    if fast_resize and g.mode == "L" and g.width * g.height >= FAST_RESIZE_MIN_PIXELS:
        return lanczos.lanczos_resize(np.asarray(g), size).astype(np.float64)
    return np.asarray(g.resize(size, Image.Resampling.LANCZOS), dtype=np.float64)


def hash_pixels(pixels: np.ndarray, method: str = "phash") -> np.ndarray:
    """Hash a batch of small grey arrays from :func:`small_gray`: (N,h,w) -> (N,8) uint8."""
    d = _hash_def(method)
    x = np.asarray(pixels, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(f"pixels must be (N,h,w), got shape {x.shape}")
    return np.packbits(d.bits(x), axis=1)


def is_flat(pixels: np.ndarray, threshold: float = FLAT_STD) -> np.ndarray:
    """Flag low-information images: (N,h,w) grey -> (N,) bool, std < threshold levels."""
    x = np.asarray(pixels, dtype=np.float64)
    return x.reshape(len(x), -1).std(axis=1) < threshold


def hash_images(images: Sequence[Image.Image], method: str = "phash", *, alpha: str = "imagehash") -> np.ndarray:
    """Hash PIL images: list of N images -> (N,8) uint8 packed hashes.

    With the default ``alpha`` each row equals imagehash's hash of the same image object.
    """
    _hash_def(method)
    _check_alpha(alpha)
    if len(images) == 0:
        return np.zeros((0, 8), np.uint8)
    return hash_pixels(np.stack([small_gray(im, method, alpha=alpha) for im in images]), method)


def hash_to_hex(h: np.ndarray) -> str:
    """(8,) uint8 -> 16-char hex, equal to ``str(imagehash.phash(...))``."""
    return bytes(np.asarray(h, np.uint8)).hex()


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distance between packed hashes, broadcasting: (...,8),(...,8) -> (...) int."""
    x = np.bitwise_xor(np.asarray(a, np.uint8), np.asarray(b, np.uint8))
    return np.unpackbits(x, axis=-1).sum(axis=-1)


def _load_small(job: tuple[str, str, bool, bool, bool, str]):
    path, method, draft, mirror, fast, alpha = job
    try:
        with guarded(path):  # the conversion too: a mode Pillow cannot turn grey is this file's reason
            im = open_image(path, draft_size=(64, 64) if draft else None, luma_only=draft)
            if mirror:
                im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            return path, small_gray(im, method, alpha=alpha, fast_resize=fast), None
    except ImageLoadError as e:
        return path, None, e.reason


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


def _load_all(jobs: list[tuple], workers: int):
    """``(path, pixels | None, reason | None)`` per job, in order, from ``workers`` processes."""
    if workers > 1:
        with process_context().Pool(workers, initializer=_init_worker) as pool:
            yield from pool.imap(_load_small, jobs, chunksize=16)
    else:
        with _pillow_block_cache():
            yield from map(_load_small, jobs)


def _collect(results, method: str, batch_size: int, errors: list | None, bar):
    """Hash the ``(path, pixels | None, reason)`` of :func:`_load_all` in batches of ``batch_size``:
    ``(hashes (N,8) uint8, kept paths, flat (N,) bool)``; unreadable files go to ``errors``."""
    hashes: list[np.ndarray] = []
    kept: list[Path] = []
    flats: list[np.ndarray] = []
    buf: list[np.ndarray] = []

    def flush() -> None:
        px = np.stack(buf)
        hashes.append(hash_pixels(px, method))
        flats.append(is_flat(px))
        buf.clear()

    for path, px, reason in results:
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
    if buf:
        flush()
    if not hashes:
        return np.zeros((0, 8), np.uint8), kept, np.zeros(0, bool)
    return np.concatenate(hashes), kept, np.concatenate(flats)


def hash_paths(
    paths: Sequence[str | os.PathLike],
    method: str = "phash",
    *,
    draft: bool = False,
    alpha: str = "imagehash",
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
        method: one of :data:`METHODS` (``phash`` | ``dhash`` | ``ahash``).
        draft: JPEG luma-only, scaled decoding (faster; some bits differ from full decode).
        alpha: grey conversion, ``"imagehash"`` (transparency ignored, as imagehash) or
            ``"white"`` (composited on white); record :func:`hash_version` with the hashes.
        workers: processes for decoding (default: all cores when more than 64 files, else 1).
        errors: list that receives ``(path, reason)`` of files that could not be read.
        progress: show a tqdm bar.
        mirror: hash the horizontally flipped image instead.
        batch_size: thumbnails hashed per batch.
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
    _hash_def(method)
    _check_alpha(alpha)
    if workers is not None and workers < 1:
        raise ValueError(f"workers={workers} must be >= 1")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    if fast_resize is None:
        fast_resize = "torch" in sys.modules or len(paths) >= 1000
    if fast_resize:
        importlib.import_module("torch")  # imported once here, inherited by forked workers
    jobs = [(str(p), method, draft, mirror, fast_resize, alpha) for p in paths]
    if workers is None:
        workers = (os.cpu_count() or 1) if len(jobs) > 64 else 1
    bar = None
    if progress:
        from tqdm import tqdm  # late: only a progress bar needs it

        bar = tqdm(total=len(jobs), desc=f"{method}", unit="img")
    # closing(): an exception here (Ctrl-C) ends the worker pool now, not when the traceback goes
    with closing(_load_all(jobs, workers)) as results:
        out = _collect(results, method, batch_size, errors, bar)
    if bar is not None:
        bar.close()
    return out

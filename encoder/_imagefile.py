"""One guarded decode of one image: every exception becomes the file's reason, memory and time bounded.

Everything that reads an image goes through :func:`open_image` (re-exported by
:mod:`encoder.data`), so every stage sees the same pixels, and the same refusals, for the same file:

* Pillow decodes; the EXIF orientation tag is applied (a phone photo stored sideways comes out
  upright).
* **Any exception** raised by Pillow or one of its plugins while opening, decoding, turning or
  converting (``ValueError``, ``NotImplementedError``, ``MemoryError``, ``struct.error``,
  ``IndexError``, ``OSError``, ``SyntaxError``, ``EOFError``, the bomb errors, ...) becomes an
  :class:`ImageLoadError` that names the file and the reason. Only ``KeyboardInterrupt`` and
  ``SystemExit`` pass.
* **Memory is bounded per file**: ``max_pixels`` (64 MP by default) is checked from the header
  before decoding and again on the decoded image (ICO and ICNS choose their sub-image, and its
  size, only while loading); Pillow's own bomb check (``Image.MAX_IMAGE_PIXELS``, left as Pillow
  sets it) stays on for the sub-images and frames whose size no header tells, so no file decodes
  past ``2 * Image.MAX_IMAGE_PIXELS`` pixels (179 MP, 716 MB as RGBA). Only the first frame of
  a multi-page or animated file is decoded.
* **Time is bounded per file**: ``timeout`` seconds (10 by default) of decoding and conversion,
  then the file is refused. The limit is a ``SIGALRM`` timer, so it applies where a process's
  main thread decodes (command lines, decoding pools); elsewhere it is not set.
* Every Pillow plugin is registered before the first file opens, in Pillow's own order (0.1 s,
  once per process): Pillow imports only the
  plugin named by a file's extension when it is the first opened, so without this a process
  that opened a ``.tga`` first let the TGA plugin claim the next ``.ico`` ("cannot load this
  image"), and a worker pool gave a file a different answer from run to run.
* Any mode is converted to ``RGB`` or ``L`` correctly, or refused by name: 16-bit grey
  (``I;16*``, ``I`` in 0..65535) is *scaled* to 8 bits (``v * 255 / 65535``, rounded), never
  clipped; ``F`` is read as 0..1, 0..255 or 0..65535 by its largest value; alpha (``RGBA``,
  ``LA``, ``La``, ``RGBa``, ``PA``, palette or grey with transparency) is composited on a stated
  background (white by default); ``CMYK``, ``YCbCr``, ``HSV``, ``LAB``, ``1``, ``P`` go through
  Pillow's converters.

Example::

    >>> rgb = load_rgb("photo.jpg")               # (H, W, 3) uint8
    >>> x = load_gray("photo.jpg", size=64)        # (64, 64) float32 in [0, 1]
    >>> im = open_image(data, name="upload.png")   # bytes or a binary file object also work
"""

from __future__ import annotations

import io
import os
import signal
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS: int = 64 * 1024 * 1024  # 64 MP: a 8k x 8k photo passes, bombs do not
DEFAULT_TIMEOUT: float = 10.0  # seconds per file: the slowest valid file of Pillow's tests takes 2
DEFAULT_BACKGROUND: tuple[int, int, int] = (255, 255, 255)

# Names the grey preprocessing below; recorded with codes and indexes so that codes
# made by two different preprocessings are never compared.
GRAY_PREPROCESS_VERSION = "gray-v1:pil-L,exif,alpha-on-white,16bit-scaled,bilinear-squash,draft"

HIGH_DEPTH_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
Source = str | os.PathLike | bytes | BinaryIO


class ImageLoadError(ValueError):
    """An image file could not be read. ``str(err)`` is ``"<path>: <reason>"``."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class DecodeTimeout(Exception):
    """Raised inside a decode that ran past its time limit (becomes an :class:`ImageLoadError`)."""


def _reason(e: BaseException) -> str:
    """The reason an exception from Pillow gives, with its type when the message alone is unclear."""
    if isinstance(e, UnidentifiedImageError):
        return "not a recognised image format"
    if isinstance(e, PermissionError):
        return "permission denied"
    if isinstance(e, Image.DecompressionBombError):
        return f"possible decompression bomb: {e}"
    if isinstance(e, MemoryError):
        return "cannot decode: out of memory"
    if isinstance(e, DecodeTimeout):
        return str(e)
    return f"cannot decode ({type(e).__name__}): {e}" if str(e) else f"cannot decode: {type(e).__name__}"


@contextmanager
def guarded(name: str | os.PathLike) -> Iterator[None]:
    """Run a block that reads or converts the image ``name``: any exception (not ``KeyboardInterrupt``
    or ``SystemExit``) leaves it as an :class:`ImageLoadError` naming ``name``."""
    try:
        yield
    except ImageLoadError:
        raise
    except Exception as e:  # every plugin error, whatever its type, is this file's reason
        raise ImageLoadError(name, _reason(e)) from e


@contextmanager
def time_limit(seconds: float | None, what: str = "decoding") -> Iterator[None]:
    """Raise :class:`DecodeTimeout` in the block after ``seconds`` (main thread only; a no-op
    elsewhere, for ``None``, or while another real-time timer of this process is running)."""
    usable = (
        seconds
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
        and signal.getitimer(signal.ITIMER_REAL)[0] == 0
    )
    if not usable:
        yield
        return

    def on_alarm(signum, frame):
        raise DecodeTimeout(f"{what} took longer than the {seconds:g} s limit per file")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def register_plugins() -> None:
    """Register every Pillow plugin in one order, the one Pillow's own first open of a common file
    gives (its five common plugins, then the rest), before any file can pick one by its extension
    (module docstring). Free after the first call; call it before any ``Image.open``."""
    Image.preinit()
    Image.init()


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` from the file's header (no pixels decoded; ICO decodes its first icon);
    :class:`ImageLoadError` when it cannot be read."""
    register_plugins()
    with guarded(path), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Image.open(_check_file(Path(path))) as im:
            return im.size


def _shown(source: Source, name: str | os.PathLike | None) -> str:
    """The name of ``source`` in messages: ``name``, the path, the file object's name, or ``<bytes>``."""
    if name is not None:
        return str(name)
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<bytes>"
    return str(getattr(source, "name", "<file object>"))


def _source(source: Source, name: str | os.PathLike | None) -> tuple[Path | BinaryIO, str]:
    """``(what Pillow opens, the name in messages)``; a path must be a non-empty file."""
    shown = _shown(source, name)
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageLoadError(shown, "empty file (0 bytes)")
        return io.BytesIO(bytes(source)), shown
    if isinstance(source, (str, os.PathLike)):
        return _check_file(Path(source)), shown
    return source, shown


def _check_file(p: Path) -> Path:
    """``p`` if it is a non-empty file, else :class:`ImageLoadError` saying what it is."""
    if not p.exists():
        raise ImageLoadError(p, "no such file")
    if p.is_dir():
        raise ImageLoadError(p, "is a directory, expected an image file")
    try:
        size = p.stat().st_size
    except OSError as e:
        raise ImageLoadError(p, f"cannot stat: {e.strerror or e}") from e
    if size == 0:
        raise ImageLoadError(p, "empty file (0 bytes)")
    return p


def _check_size(name: str, size: tuple[int, int], max_pixels: int | None) -> None:
    """Refuse a size of no pixels or of more than ``max_pixels``."""
    w, h = size
    if w <= 0 or h <= 0:
        raise ImageLoadError(name, f"invalid size {w}x{h}")
    if max_pixels is not None and w * h > max_pixels:
        raise ImageLoadError(
            name,
            f"{w}x{h} = {w * h:,} pixels exceeds max_pixels={max_pixels:,} "
            "(possible decompression bomb; raise max_pixels to allow it)",
        )


def open_image(
    source: Source,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    draft_size: tuple[int, int] | None = None,
    luma_only: bool = False,
    timeout: float | None = DEFAULT_TIMEOUT,
    name: str | os.PathLike | None = None,
) -> Image.Image:
    """Decode an image fully, with its EXIF orientation applied.

    Args:
        source: a path, the file's bytes, or a binary file object (read from its start).
        max_pixels: refuse images with more pixels than this (checked from the header before
            decoding, and on the decoded size); ``None`` leaves only Pillow's own bomb check,
            which refuses more than ``2 * Image.MAX_IMAGE_PIXELS`` (179 MP) whatever this says:
            a program that needs more raises Pillow's limit itself.
        draft_size: if given and the file is a JPEG, let the decoder scale down by
            1/2, 1/4 or 1/8 while keeping each side >= the given size (much faster,
            slightly different pixels; used only where the caller says so).
        luma_only: for a colour (YCbCr) JPEG, let the decoder return only its luma
            channel as an ``L`` image at full size: the chroma planes are not decoded and
            no colour conversion runs (2-3x faster on big photos). The JPEG's Y differs from
            Pillow's ``convert('L')`` of the decoded RGB only by rounding (mean 0.02 grey
            levels measured, rare pixels by more); other files are unaffected.
        timeout: seconds of decoding before the file is refused (``None``: no limit).
        name: the name in error messages (default: the path, or the file object's ``name``).

    Returns:
        A loaded ``PIL.Image.Image`` in the file's own mode (first frame of an
        animation), upright.

    Raises:
        ImageLoadError: missing, unreadable, truncated, not an image, too large, too slow,
            or any other failure of the decoder.
    """
    fp, shown = _source(source, name)
    register_plugins()
    with guarded(shown), time_limit(timeout), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns on odd EXIF/ICC; we report errors
        im = Image.open(fp)
        _check_size(shown, im.size, max_pixels)
        if im.format == "JPEG":
            if luma_only and im.mode == "RGB":
                im.draft("L", draft_size or im.size)
            elif draft_size is not None:
                im.draft(im.mode if im.mode in ("L", "RGB") else "RGB", draft_size)
        im.load()
        _check_size(shown, im.size, max_pixels)  # ICO/ICNS pick their sub-image while loading
        ImageOps.exif_transpose(im, in_place=True)  # no copy of the pixels
    return im


def _scale_16bit(arr: np.ndarray) -> np.ndarray:
    """(H, W) integer array in 0..65535 -> uint8, rounded (v * 255 / 65535)."""
    a = arr.astype(np.uint32)
    return ((a * 255 + 32767) // 65535).astype(np.uint8)


def _float_to_l(a: np.ndarray) -> Image.Image:
    """Mode ``F`` pixels -> ``L``: read as 0..1, 0..255 or 0..65535 by the largest value."""
    if not np.isfinite(a).all():
        raise ValueError("32-bit float pixels include NaN or infinity")
    bottom, top = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    hi = 1.0 if top <= 1.0 else 255.0 if top <= 255.0 else 65535.0 if top <= 65535.0 else None
    if hi is None or bottom < 0:
        raise ValueError(f"32-bit float pixels span {bottom:g}..{top:g}, expected 0..1, 0..255 or 0..65535")
    return Image.fromarray(np.rint(a.astype(np.float32) * np.float32(255.0 / hi)).astype(np.uint8), "L")


def _high_depth_to_l(im: Image.Image) -> Image.Image:
    """Modes I;16*, I and F -> L, scaling instead of clipping; values out of range are refused."""
    arr = np.asarray(im)
    if im.mode == "F":
        return _float_to_l(arr)
    lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    if lo < 0 or hi > 65535:
        raise ValueError(f"32-bit integer pixels span {lo}..{hi}, expected 0..65535")
    if im.mode == "I" and hi <= 255 and not im.info.get("bits", 0) > 8:
        # 8-bit data stored as 32-bit ints (some TIFF/PGM decoders do this).
        return Image.fromarray(arr.astype(np.uint8), "L")
    return Image.fromarray(_scale_16bit(arr), "L")


def _unpremultiply_la(im: Image.Image) -> Image.Image:
    """Mode ``La`` (grey premultiplied by alpha; Pillow has no converter for it) -> ``LA``."""
    a = np.asarray(im).astype(np.uint16)
    alpha = a[..., 1]
    grey = np.where(alpha > 0, np.minimum(255, (a[..., 0] * 255 + alpha // 2) // np.maximum(alpha, 1)), 0)
    return Image.fromarray(np.stack([grey, alpha], axis=-1).astype(np.uint8), "LA")


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode in ("P", "L", "RGB") and "transparency" in im.info)


def to_rgb(im: Image.Image, background: tuple[int, int, int] = DEFAULT_BACKGROUND) -> Image.Image:
    """Convert any Pillow image to 8-bit ``RGB``; alpha is composited on ``background``.

    Raises ``ValueError`` naming the mode for pixels that cannot be read as a picture
    (a float image holding NaN, 32-bit integers beyond 16 bits)."""
    if im.mode == "RGB" and "transparency" not in im.info:
        return im
    if im.mode in HIGH_DEPTH_MODES:
        return _high_depth_to_l(im).convert("RGB")
    if im.mode == "La":
        im = _unpremultiply_la(im)
    if _has_alpha(im):
        rgba = im.convert("RGBA")
        base = Image.new("RGBA", rgba.size, tuple(background) + (255,))
        return Image.alpha_composite(base, rgba).convert("RGB")
    return im.convert("RGB")


def to_gray(im: Image.Image, background: tuple[int, int, int] = DEFAULT_BACKGROUND) -> Image.Image:
    """Convert any Pillow image to 8-bit ``L`` (ITU-R 601-2 luma, as Pillow's ``convert('L')``)."""
    if im.mode == "L" and "transparency" not in im.info:
        return im
    if im.mode in HIGH_DEPTH_MODES:
        return _high_depth_to_l(im)
    return to_rgb(im, background).convert("L")


STRIP_PIXELS = 1 << 20
# modes whose conversion to RGB is pixel by pixel (a strip converts as the whole image would)
PER_PIXEL_MODES = frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"})


def load_rgb(
    path: Source,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    background: tuple[int, int, int] = DEFAULT_BACKGROUND,
    timeout: float | None = DEFAULT_TIMEOUT,
    name: str | os.PathLike | None = None,
) -> np.ndarray:
    """Read an image as an ``(H, W, 3)`` ``uint8`` RGB array (orientation applied).

    ``path`` may also be bytes or a binary file object; every failure is an :class:`ImageLoadError`.
    Per-pixel modes convert in strips of ``STRIP_PIXELS`` into one preallocated array (the decoded
    image plus 3 bytes per pixel, where a whole conversion holds its RGB copy and numpy's copy of it
    too); modes scaled by their range (16-bit, 32-bit, float grey) convert whole."""
    shown = _shown(path, name)
    with guarded(shown), time_limit(timeout):
        im = open_image(path, max_pixels=max_pixels, timeout=None, name=name)
        if im.mode not in PER_PIXEL_MODES:
            return np.asarray(to_rgb(im, background))
        w, h = im.size
        out = np.empty((h, w, 3), np.uint8)
        rows = max(1, STRIP_PIXELS // w)
        for y in range(0, h, rows):
            out[y : y + rows] = np.asarray(to_rgb(im.crop((0, y, w, min(h, y + rows))), background))
        return out


def resize_gray(im: Image.Image, size: int = 64) -> np.ndarray:
    """Grey ``L`` image -> ``(size, size)`` float32 in [0, 1] (bilinear, aspect squashed).

    The whole picture is kept (no crop): squashing keeps every part of the image
    searchable, which matters more for retrieval than exact aspect.
    """
    if im.mode != "L":
        raise ValueError(f"resize_gray expects mode 'L', got {im.mode!r}")
    if im.size != (size, size):
        im = im.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(im, dtype=np.float32) / 255.0


def load_gray(
    path: Source,
    size: int = 64,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    background: tuple[int, int, int] = DEFAULT_BACKGROUND,
    draft: bool = True,
    timeout: float | None = DEFAULT_TIMEOUT,
    name: str | os.PathLike | None = None,
) -> np.ndarray:
    """Read an image file as a ``(size, size)`` float32 grey array in [0, 1].

    This is the encoder's preprocessing (:data:`GRAY_PREPROCESS_VERSION`). With
    ``draft=True`` large JPEGs are decoded at a reduced scale (each side still >= 4 x
    ``size``), which is several times faster and changes the 64x64 result by well under
    one grey level on average. ``path`` may also be bytes or a binary file object (``name`` then
    names it in errors).
    """
    shown = _shown(path, name)
    draft_size = (4 * size, 4 * size) if draft else None
    with guarded(shown), time_limit(timeout):
        im = open_image(path, max_pixels=max_pixels, draft_size=draft_size, timeout=None, name=name)
        return resize_gray(to_gray(im, background), size)

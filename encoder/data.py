"""The one image loader every stage uses: decode, orient, convert, scan folders.

Everything that reads an image file goes through :func:`open_image`, so every stage
sees the same pixels for the same file:

* Pillow decodes; the EXIF orientation tag is applied (a phone photo stored sideways
  comes out upright).
* Any mode is converted correctly: 16-bit grey (``I;16*``/``I``) is *scaled* to 8 bits
  (``v * 255 / 65535``, rounded), never clipped; alpha (``RGBA``, ``LA``, ``PA``, palette
  with transparency) is composited on a stated background (white by default); ``CMYK``,
  ``YCbCr``, ``1``, ``P`` go through Pillow's converters.
* A pixel limit (``max_pixels``, 64 MP by default) is checked from the header, before
  decoding, against decompression bombs.
* Anything unreadable raises :class:`ImageLoadError`, whose message names the file.

Folder scans (:func:`scan_folder`) are recursive, never follow directory symlinks
(so a symlink loop cannot hang a run) and return skipped files with a reason, so a
caller can report every one by name.

Example::

    >>> rgb = load_rgb("photo.jpg")               # (H, W, 3) uint8
    >>> x = load_gray("photo.jpg", size=64)        # (64, 64) float32 in [0, 1]
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Pillow's own bomb check is global state; we do our own per call from the header.
Image.MAX_IMAGE_PIXELS = None

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".bmp", ".dib", ".tif", ".tiff"}
)
DEFAULT_MAX_PIXELS: int = 64 * 1024 * 1024  # 64 MP: a 8k x 8k photo passes, bombs do not
DEFAULT_BACKGROUND: tuple[int, int, int] = (255, 255, 255)

# Names the grey preprocessing below; recorded with codes and indexes so that codes
# made by two different preprocessings are never compared.
GRAY_PREPROCESS_VERSION = "gray-v1:pil-L,exif,alpha-on-white,16bit-scaled,bilinear-squash,draft"


class ImageLoadError(ValueError):
    """An image file could not be read. ``str(err)`` is ``"<path>: <reason>"``."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def open_image(
    path: str | os.PathLike,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    draft_size: tuple[int, int] | None = None,
    luma_only: bool = False,
) -> Image.Image:
    """Decode an image file fully, with its EXIF orientation applied.

    Args:
        path: the file.
        max_pixels: refuse images with more pixels than this (checked from the header,
            before decoding); ``None`` disables the check.
        draft_size: if given and the file is a JPEG, let the decoder scale down by
            1/2, 1/4 or 1/8 while keeping each side >= the given size (much faster,
            slightly different pixels; used only where the caller says so).
        luma_only: for a colour (YCbCr) JPEG, let the decoder return only its luma
            channel as an ``L`` image at full size: the chroma planes are not decoded and
            no colour conversion runs (2-3x faster on big photos). The JPEG's Y differs from
            Pillow's ``convert('L')`` of the decoded RGB only by rounding (mean 0.02 grey
            levels measured, rare pixels by more); other files are unaffected.

    Returns:
        A loaded ``PIL.Image.Image`` in the file's own mode (first frame of an
        animation), upright.

    Raises:
        ImageLoadError: missing, unreadable, truncated, not an image, or too large.
    """
    p = _check_file(Path(path))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns on odd EXIF/ICC; we report errors
            im = Image.open(p)
            _check_size(p, im, max_pixels)
            if im.format == "JPEG":
                if luma_only and im.mode == "RGB":
                    im.draft("L", draft_size or im.size)
                elif draft_size is not None:
                    im.draft(im.mode if im.mode in ("L", "RGB") else "RGB", draft_size)
            im.load()
            ImageOps.exif_transpose(im, in_place=True)  # no copy of the pixels
    except ImageLoadError:
        raise
    except UnidentifiedImageError as e:
        raise ImageLoadError(p, "not a recognised image format") from e
    except PermissionError as e:
        raise ImageLoadError(p, "permission denied") from e
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        # Truncated data, bad chunks, broken headers all land here.
        raise ImageLoadError(p, f"cannot decode: {e}") from e
    return im


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


def _check_size(p: Path, im: Image.Image, max_pixels: int | None) -> None:
    """Refuse a header that declares no pixels or more than ``max_pixels`` (before decoding)."""
    w, h = im.size
    if w <= 0 or h <= 0:
        raise ImageLoadError(p, f"invalid size {w}x{h}")
    if max_pixels is not None and w * h > max_pixels:
        raise ImageLoadError(
            p,
            f"{w}x{h} = {w * h:,} pixels exceeds max_pixels={max_pixels:,} "
            "(possible decompression bomb; raise max_pixels to allow it)",
        )


def _scale_16bit(arr: np.ndarray) -> np.ndarray:
    """(H, W) integer array in 0..65535 -> uint8, rounded (v * 255 / 65535)."""
    a = arr.astype(np.uint32)
    return ((a * 255 + 32767) // 65535).astype(np.uint8)


def _high_depth_to_l(im: Image.Image) -> Image.Image:
    """Modes I;16*, I and F -> L, scaling instead of clipping."""
    arr = np.asarray(im)
    if im.mode == "F":
        a = np.nan_to_num(arr.astype(np.float64))
        hi = 1.0 if a.max(initial=0.0) <= 1.0 else 255.0
        return Image.fromarray(np.clip(np.rint(a * 255.0 / hi), 0, 255).astype(np.uint8), "L")
    a = arr.astype(np.int64)
    if im.mode == "I" and a.max(initial=0) <= 255 and not im.info.get("bits", 0) > 8:
        # 8-bit data stored as 32-bit ints (some TIFF/PGM decoders do this).
        return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "L")
    return Image.fromarray(_scale_16bit(np.clip(a, 0, 65535)), "L")


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode in ("P", "L", "RGB") and "transparency" in im.info)


def to_rgb(im: Image.Image, background: tuple[int, int, int] = DEFAULT_BACKGROUND) -> Image.Image:
    """Convert any Pillow image to 8-bit ``RGB``; alpha is composited on ``background``."""
    if im.mode == "RGB" and "transparency" not in im.info:
        return im
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return _high_depth_to_l(im).convert("RGB")
    if _has_alpha(im):
        rgba = im.convert("RGBA")
        base = Image.new("RGBA", rgba.size, tuple(background) + (255,))
        return Image.alpha_composite(base, rgba).convert("RGB")
    return im.convert("RGB")


def to_gray(im: Image.Image, background: tuple[int, int, int] = DEFAULT_BACKGROUND) -> Image.Image:
    """Convert any Pillow image to 8-bit ``L`` (ITU-R 601-2 luma, as Pillow's ``convert('L')``)."""
    if im.mode == "L" and "transparency" not in im.info:
        return im
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return _high_depth_to_l(im)
    return to_rgb(im, background).convert("L")


def load_rgb(
    path: str | os.PathLike,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    background: tuple[int, int, int] = DEFAULT_BACKGROUND,
) -> np.ndarray:
    """Read an image file as an ``(H, W, 3)`` ``uint8`` RGB array (orientation applied)."""
    return np.asarray(to_rgb(open_image(path, max_pixels=max_pixels), background))


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
    path: str | os.PathLike,
    size: int = 64,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    background: tuple[int, int, int] = DEFAULT_BACKGROUND,
    draft: bool = True,
) -> np.ndarray:
    """Read an image file as a ``(size, size)`` float32 grey array in [0, 1].

    This is the encoder's preprocessing (:data:`GRAY_PREPROCESS_VERSION`). With
    ``draft=True`` large JPEGs are decoded at a reduced scale (each side still >= 4 x
    ``size``), which is several times faster and changes the 64x64 result by well under
    one grey level on average.
    """
    im = open_image(path, max_pixels=max_pixels, draft_size=(4 * size, 4 * size) if draft else None)
    return resize_gray(to_gray(im, background), size)


# ----------------------------------------------------------------------------- folders


@dataclass
class ScanResult:
    """Image files found under a root, and everything passed over with the reason.

    ``paths`` are absolute, sorted by their path relative to ``root`` (which is the id
    stored in indexes); ``skipped`` holds ``(path, reason)`` pairs.
    """

    root: Path
    paths: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def relative(self, path: Path) -> str:
        """The id of a file: its POSIX path relative to ``root``."""
        return path.relative_to(self.root).as_posix()

    @property
    def ids(self) -> list[str]:
        return [self.relative(p) for p in self.paths]


def scan_folder(
    root: str | os.PathLike,
    extensions: Iterable[str] = IMAGE_EXTENSIONS,
    *,
    include_hidden: bool = False,
) -> ScanResult:
    """Find image files under ``root`` recursively, by extension (case-insensitive).

    Directory symlinks are not followed (no loops); file symlinks are followed when
    they resolve to a file. Files with other extensions, broken links and unreadable
    directories go to ``skipped`` with the reason. Hidden files/folders (dot-names) are
    passed over silently unless ``include_hidden``.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        NotADirectoryError: ``root`` is a file.
    """
    root = Path(root).absolute()
    if not root.exists():
        raise FileNotFoundError(f"image folder not found: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"expected a folder of images, got a file: {root}")
    exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
    result = ScanResult(root=root)

    def on_error(err: OSError) -> None:
        result.skipped.append((Path(err.filename or root), f"cannot list folder: {err.strerror}"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error, followlinks=False):
        if not include_hidden:
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for d in dirnames:
            if os.path.islink(os.path.join(dirpath, d)):
                result.skipped.append((Path(dirpath, d), "directory symlink not followed"))
        for name in filenames:
            if name.startswith(".") and not include_hidden:
                continue
            p = Path(dirpath, name)
            if Path(name).suffix.lower() not in exts:
                result.skipped.append((p, f"not an image extension ({Path(name).suffix or 'none'})"))
            elif not p.is_file():
                result.skipped.append((p, "broken link or not a regular file"))
            else:
                result.paths.append(p)
    result.paths.sort(key=lambda q: q.relative_to(root).as_posix())
    return result


def image_paths(inputs: str | os.PathLike | Sequence[str | os.PathLike]) -> ScanResult:
    """Expand CLI inputs (files and/or folders) into one :class:`ScanResult`.

    A single folder keeps ids relative to it; explicit files get ids relative to their
    common parent. Missing inputs raise ``FileNotFoundError`` naming them.
    """
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not items:
        raise ValueError("no input given: expected image files or folders")
    if len(items) == 1 and Path(items[0]).is_dir():
        return scan_folder(items[0])
    missing = [str(i) for i in items if not Path(i).exists()]
    if missing:
        raise FileNotFoundError(f"input not found: {', '.join(missing)}")
    files = [Path(i).absolute() for i in items]
    root = Path(os.path.commonpath([f if f.is_dir() else f.parent for f in files]))
    result = ScanResult(root=root)
    for f in files:
        if f.is_dir():
            sub = scan_folder(f)
            result.paths += sub.paths
            result.skipped += sub.skipped
        else:
            result.paths.append(f)
    result.paths = sorted(set(result.paths), key=lambda q: q.relative_to(root).as_posix())
    return result


T = TypeVar("T")


def load_each(
    paths: Iterable[Path],
    load: Callable[[Path], T],
    errors: list[tuple[Path, str]] | None = None,
) -> Iterator[tuple[Path, T]]:
    """Apply ``load`` to each path; yield ``(path, result)`` for the good ones.

    Failures (:class:`ImageLoadError`, ``OSError``) never stop the run and are never dropped:
    they are appended to ``errors`` as ``(path, reason)`` when a list is given (the caller
    reports them), otherwise printed at once to stderr as ``skipped <path>: <reason>``. Other
    exceptions propagate (they are bugs).
    """
    for p in paths:
        try:
            yield p, load(p)
        except ImageLoadError as e:
            _failed(p, e.reason, errors)
        except OSError as e:
            _failed(p, f"cannot read: {e}", errors)


def _failed(path: Path, reason: str, errors: list[tuple[Path, str]] | None) -> None:
    if errors is not None:
        errors.append((path, reason))
    else:
        report_skipped([(path, reason)])


def report_skipped(skipped: Sequence[tuple[Path, str]], *, stream=None, limit: int | None = None) -> None:
    """Print one line per skipped file (``skipped <path>: <reason>``) to stderr."""
    stream = stream or sys.stderr
    shown = skipped if limit is None else skipped[:limit]
    for p, reason in shown:
        print(f"skipped {p}: {reason}", file=stream)
    if limit is not None and len(skipped) > limit:
        print(f"... and {len(skipped) - limit} more skipped files", file=stream)


# ----------------------------------------------------------------------------- decoding many files


def decode_gray_u8(args: tuple[str, int]) -> tuple[np.ndarray | None, str | None]:
    """``(path, size)`` -> ``((size, size) uint8 grey, None)`` or ``(None, reason)`` (picklable, for pools)."""
    path, size = args
    try:
        return (load_gray(path, size) * 255.0 + 0.5).astype(np.uint8), None
    except ImageLoadError as e:
        return None, e.reason
    except OSError as e:
        return None, f"cannot read: {e}"


def decoding_workers(workers: int = 0) -> int:
    """Decoding processes to use: ``workers``, or (0) up to 4 by CPU count."""
    return workers or min(4, os.cpu_count() or 1)


def decoding_pool(workers: int = 0):
    """A process pool for :func:`decode_folder` (``workers=0``: up to 4 by CPU count)."""
    workers = decoding_workers(workers)
    return get_context("spawn" if sys.platform == "darwin" else "fork").Pool(workers)


def decode_folder(
    paths: list[Path],
    size: int = 64,
    workers: int = 0,
    progress: bool = True,
    pool=None,
    job=decode_gray_u8,
    extra: tuple = (),
    shape: tuple = (),
) -> tuple[np.ndarray, list[int], list[tuple[Path, str]]]:
    """Decode ``paths`` to a ``(M, size, size)`` uint8 array.

    Returns ``(images, kept_rows, skipped)``: ``kept_rows`` are the positions in ``paths`` of the
    M images decoded; ``skipped`` lists ``(path, reason)`` for the others. ``pool`` (from
    :func:`decoding_pool`) is used when given, so that a caller decoding many chunks starts
    its processes once; otherwise 2,000 or more paths get a pool of their own. ``job`` (picklable)
    maps ``(path, size, *extra)`` to ``(array of shape (*shape, size, size), None)`` or ``(None,
    reason)``: another decoding, such as several views per picture.
    """
    from tqdm import tqdm  # only where a bar may be shown (its import costs ~0.1 s)

    jobs = [(str(p), size, *extra) for p in paths]
    workers = decoding_workers(workers)
    bar = dict(total=len(jobs), desc="decoding", unit="img", disable=not progress or len(jobs) < 500, file=sys.stderr)
    if pool is not None:
        results = list(tqdm(pool.imap(job, jobs, chunksize=256), **bar))
    elif workers > 1 and len(jobs) >= 2000:
        with decoding_pool(workers) as own:
            results = list(tqdm(own.imap(job, jobs, chunksize=256), **bar))
    else:
        results = [job(j) for j in tqdm(jobs, **bar)]
    images, kept, skipped = [], [], []
    for i, (arr, reason) in enumerate(results):
        if arr is None:
            skipped.append((paths[i], reason))
        else:
            images.append(arr)
            kept.append(i)
    out = np.stack(images) if images else np.zeros((0, *shape, size, size), np.uint8)
    return out, kept, skipped


def folder_labels(ids: list[str]) -> tuple[list[int], list[str]]:
    """Labels from class subfolders: ``("a/x.png", "b/y.png") -> ([0, 1], ["a", "b"])``.

    Returns ``([], [])`` when some image is not inside a subfolder (unlabelled folder).
    """
    if not ids or any("/" not in i for i in ids):
        return [], []
    names = sorted({i.split("/", 1)[0] for i in ids})
    lookup = {n: k for k, n in enumerate(names)}
    return [lookup[i.split("/", 1)[0]] for i in ids], names


# ----------------------------------------------------------------------------- bytes (object stores)


def open_image_bytes(
    data: bytes,
    name: str,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    draft_size: tuple[int, int] | None = None,
    luma_only: bool = False,
) -> Image.Image:
    """:func:`open_image` of a file's bytes (read from an object store), with the same checks.

    ``name`` (a URL or path) only names the image in errors; nothing is written to disk.

    Raises:
        ImageLoadError: empty, unreadable, truncated, not an image, or too large.
    """
    import io

    if len(data) == 0:
        raise ImageLoadError(name, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # as open_image: errors are reported, warnings are noise
            im = Image.open(io.BytesIO(data))
            _check_size(name, im, max_pixels)  # type: ignore[arg-type]  (it only names the image)
            if im.format == "JPEG":
                if luma_only and im.mode == "RGB":
                    im.draft("L", draft_size or im.size)
                elif draft_size is not None:
                    im.draft(im.mode if im.mode in ("L", "RGB") else "RGB", draft_size)
            im.load()
            ImageOps.exif_transpose(im, in_place=True)
    except ImageLoadError:
        raise
    except UnidentifiedImageError as e:
        raise ImageLoadError(name, "not a recognised image format") from e
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise ImageLoadError(name, f"cannot decode: {e}") from e
    return im

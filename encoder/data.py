"""The one image loader every stage uses, folder scans, skipped-file reports, decoding pools.

Decoding one image (:func:`open_image`, :func:`load_rgb`, :func:`load_gray`, :func:`to_rgb`,
:func:`to_gray`) lives in :mod:`encoder._imagefile` and is re-exported here: every failure of a
file, whatever the decoder raised, is an :class:`ImageLoadError` naming it; memory and time are
bounded per file (see that module).

Folder scans (:func:`scan_folder`) are recursive, never follow directory symlinks
(so a symlink loop cannot hang a run) and return skipped files with a reason, so a
caller can report every one by name; :func:`write_skipped` writes that list beside a
command's output and :func:`report_skipped` prints the count and the first few.

Example::

    >>> rgb = load_rgb("photo.jpg")               # (H, W, 3) uint8
    >>> x = load_gray("photo.jpg", size=64)        # (64, 64) float32 in [0, 1]
"""

from __future__ import annotations

import csv
import io
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from encoder._imagefile import (  # noqa: F401  (re-exported: the loader's public names)
    DEFAULT_BACKGROUND,
    DEFAULT_MAX_PIXELS,
    DEFAULT_TIMEOUT,
    GRAY_PREPROCESS_VERSION,
    ImageLoadError,
    guarded,
    image_size,
    load_gray,
    load_rgb,
    open_image,
    register_plugins,
    resize_gray,
    time_limit,
    to_gray,
    to_rgb,
)
from encoder.atomic import write_text

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".bmp", ".dib", ".tif", ".tiff"}
)


# ----------------------------------------------------------------------------- folders


def relative_id(path: str | os.PathLike, root: str | os.PathLike) -> str:
    """The id of a file: its POSIX path relative to ``root`` (both taken as absolute paths), or
    its absolute POSIX path when it is not under ``root``.

    Example:
        >>> relative_id("/photos/2024/a.jpg", "/photos"), relative_id("/elsewhere/b.png", "/photos")
        ('2024/a.jpg', '/elsewhere/b.png')
    """
    path = Path(path).absolute()
    try:
        return path.relative_to(Path(root).absolute()).as_posix()
    except ValueError:
        return path.as_posix()


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
        """The id of a file: :func:`relative_id` under ``root``."""
        return relative_id(path, self.root)

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


def report_skipped(skipped: Sequence[tuple[str | os.PathLike, str]], *, stream=None, limit: int | None = None) -> None:
    """Print one line per skipped file (``skipped <path>: <reason>``) to stderr."""
    stream = stream or sys.stderr
    shown = skipped if limit is None else skipped[:limit]
    for p, reason in shown:
        print(f"skipped {p}: {reason}", file=stream)
    if limit is not None and len(skipped) > limit:
        print(f"... and {len(skipped) - limit} more skipped files", file=stream)


SKIPPED_SHOWN = 5  # skipped files named on the console; the file written beside the output has all


def skipped_report_path(output: str | os.PathLike) -> Path:
    """Where the skipped list of a command writing ``output`` goes: ``<output>.skipped.csv`` beside
    a file or an index folder (``runs/idx`` -> ``runs/idx.skipped.csv``)."""
    out = Path(output)
    return out.with_name(out.name + ".skipped.csv")


def write_skipped(path: str | os.PathLike, skipped: Sequence[tuple[str | os.PathLike, str]]) -> Path:
    """Write every skipped file with its reason as CSV (header ``path,reason``), atomically; an
    empty list writes only the header, so an old list never outlives the run that replaced it."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "reason"])
    for p, reason in skipped:
        w.writerow([str(p), reason])
    write_text(path, buf.getvalue())
    return Path(path)


def summarise_skipped(
    skipped: Sequence[tuple[str | os.PathLike, str]],
    written_to: str | os.PathLike | None = None,
    *,
    stream=None,
    shown: int = SKIPPED_SHOWN,
) -> None:
    """Print the count of skipped files, the first ``shown`` by name with the reason, and where
    the whole list is (``written_to``) to stderr; nothing when none was skipped."""
    if not skipped:
        return
    stream = stream or sys.stderr
    where = f"; all listed with reasons in {written_to}" if written_to is not None else ""
    print(f"skipped {len(skipped)} files{where}", file=stream)
    report_skipped(list(skipped), stream=stream, limit=shown)


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


def process_context(*, fresh: bool = False):
    """The multiprocessing context of every process pool of the toolkit: decoding, hashing and palette
    pools fork; ``fresh=True`` (the job runners, whose tasks search FAISS indexes and run torch) spawns."""
    # fork where it is safe: workers start at once, with the parent's modules loaded. Spawn on Windows
    # (no fork), on macOS (its system libraries are not fork-safe; Python's default there), and for
    # fresh workers: a forked child of a process whose OpenMP threads (FAISS, torch) ran can hang
    return get_context("spawn" if fresh or sys.platform in ("win32", "darwin") else "fork")


def decoding_pool(workers: int = 0):
    """A process pool for :func:`decode_folder` (``workers=0``: up to 4 by CPU count)."""
    return process_context().Pool(decoding_workers(workers))


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
    bar: dict[str, Any] = dict(
        total=len(jobs), desc="decoding", unit="img", disable=not progress or len(jobs) < 500, file=sys.stderr
    )
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

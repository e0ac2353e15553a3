"""Several views per picture, so that a crop or an aspect change still finds its original.

A code of the whole picture squashed to ``size x size`` (:func:`encoder.data.resize_gray`)
cannot match a copy that shows only part of it: a phone-screen 9:16 crop of a landscape photo,
or half of its area off-centre. A **view set** names the parts of a picture that are encoded:

* ``"full"``: the whole picture only (one view; what indexes without views hold);
* ``"crops"``: in the gallery, the whole picture, then same-aspect crops of :data:`CROP_SIDE`
  x each side at the :data:`CROP_POSITIONS`, then the centred squares of :data:`SQUARES` x the
  short side, then full-height 9:16 windows at the :data:`WINDOW_POSITIONS`, then the top and
  bottom :data:`BAND` of the height; a query adds to its whole picture its centred square of the
  short side, the same two and the two bands of the picture inside its borders (:func:`trim_box`:
  a screenshot's window, a letterbox, a frame; the whole picture again when it has none) and its
  whole picture turned by a quarter turn each way (:data:`QUERY_TURNS`).

Each gallery image is then scored by its best (smallest) distance over all pairs of its views
and the query's views. View 0 is always the whole picture, made exactly as the single view
(same decoding, grey conversion and resize), so its code equals the code of a ``"full"`` index.

The crops sit at a 3x3 grid of positions rather than the 4 corners and the centre: the grid
finds more of the half-area crops, for 12 gallery views instead of 8 (figures: docs/measured.md).

The trimmed and turned query views and the windows, on bench/album_bench.py (30 photos and
wallpapers x 9 edits against 86 gallery pictures, 30 non-match queries; the epoch-0 checkpoint that
configs/default.yaml kept on a 131-picture folder before early_stopping.min_fraction): R@1
screenshot 0.13 -> 0.77 and turned 90 degrees 0.10 -> 0.97 (query views, index unchanged),
off-centre phone crop 0.30 -> 0.87 (the 5 windows), caption 0.53 -> 0.93 (the bands: a 2x2 grid on
both sides instead got 0.80 but cost phone crop 0.17, flip+dark 0.27), 60% corner crop 0.33 -> 0.47,
the other edits within one query; 19 gallery views instead of 12 (index x1.58), 8 query views
instead of 2; false-match rate 0.00 before and after.

Example:
    >>> gallery_boxes(400, 300, "full")
    [(0, 0, 400, 300)]
    >>> query_boxes(400, 300, "crops", trim=(0, 40, 400, 300))[2:4]
    [(0, 40, 400, 300), (70, 40, 330, 300)]
    >>> len(gallery_boxes(400, 300, "crops")), view_count("crops", "gallery"), view_count("crops", "query")
    (19, 19, 8)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from encoder.data import ImageLoadError, decode_folder, guarded, image_size, open_image, resize_gray, to_gray
from encoder.search.base import OptionError
from encoder.search.errors import IndexMismatchError
from encoder.search.index_files import n_distinct

VIEWS = ("full", "crops")
ROLES = ("gallery", "query")
CROP_SIDE = 0.5**0.5  # each side x 0.707: half of the area
# A 3x3 grid of positions (fx, fy: 0 left/top, 1 right/bottom), row by row. The 4 corners + centre
# alone (8 gallery views instead of 12) found fewer half-area crops (see the module docstring).
CROP_POSITIONS = tuple((fx, fy) for fy in (0.0, 0.5, 1.0) for fx in (0.0, 0.5, 1.0))
SQUARES = (1.0, 0.5625)  # centred squares, x the short side
# Phone-screen windows: full-height 9:16 (portrait) boxes of a landscape picture, full-width 16:9 boxes of a
# portrait one, at these positions along the long side (0 left/top, 1 right/bottom): a phone story shows
# one off-centre window of the picture.
WINDOW_POSITIONS = (0.0, 0.25, 0.5, 0.75, 1.0)
Box = tuple[int, int, int, int]


#: ``search.py index --method ae`` without ``--views`` picks "crops" when the pictures' median
#: short side is at least this many pixels (photos), else "full" (thumbnails such as Fashion-MNIST's
#: 28x28: a crop of a thumbnail is mostly blur, and the index stays 12x smaller).
AUTO_CROPS_MIN_SIDE = 256


def view_sample(n: int, sample: int = 64) -> list[int]:
    """Rows of the up to ``sample`` evenly spaced items of ``n`` that :func:`auto_views` reads."""
    return list(range(0, n, max(1, n // sample)))[:sample]


def auto_views(
    paths: Sequence[str | os.PathLike | Image.Image],
    sample: int = 64,
    size_of: Callable[[Any], tuple[int, int]] = image_size,
) -> tuple[str, int]:
    """("crops" or "full", the median short side in px) from the headers of up to ``sample``
    evenly spaced files (:func:`view_sample`), or PIL images (no pixels decoded; unreadable files are
    left out, and none readable gives "full"). ``size_of(item) -> (w, h)`` reads a file's size
    (default its header; a job passes one that reads URLs too) and raises ImageLoadError."""
    paths = list(paths)
    sides = []
    for p in (paths[r] for r in view_sample(len(paths), sample)):
        if isinstance(p, Image.Image):
            sides.append(min(p.size))
            continue
        try:
            sides.append(min(size_of(p)))
        except ImageLoadError:
            continue
    side = int(np.median(sides)) if sides else 0
    return ("crops" if side >= AUTO_CROPS_MIN_SIDE else "full"), side


def check_views(views: str) -> str:
    if views not in VIEWS:
        raise ValueError(f"views={views!r} must be one of {VIEWS}")
    return views


def _centred_square(w: int, h: int, scale: float) -> Box:
    side = max(1, round(min(w, h) * scale))
    left, top = (w - side) // 2, (h - side) // 2
    return left, top, left + side, top + side


def gallery_boxes(w: int, h: int, views: str) -> list[Box]:
    """Crop boxes (left, top, right, bottom) in pixels of the gallery views of a ``w x h`` picture."""
    boxes = [(0, 0, w, h)]
    if check_views(views) == "crops":
        cw, ch = max(1, round(w * CROP_SIDE)), max(1, round(h * CROP_SIDE))
        for fx, fy in CROP_POSITIONS:
            left, top = round(fx * (w - cw)), round(fy * (h - ch))
            boxes.append((left, top, left + cw, top + ch))
        boxes += [_centred_square(w, h, s) for s in SQUARES]
        boxes += _windows(w, h) + _bands((0, 0, w, h))
    return boxes


BAND = 0.8  # share of the height a band view keeps


def _bands(box: Box) -> list[Box]:
    """The top and bottom :data:`BAND` of a box: a caption or banner over the other edge leaves one whole."""
    left, top, right, bottom = box
    bh = max(1, round((bottom - top) * BAND))
    return [(left, top, right, top + bh), (left, bottom - bh, right, bottom)]


def _windows(w: int, h: int) -> list[Box]:
    """The :data:`WINDOW_POSITIONS` 9:16 windows of a picture (16:9 ones of a portrait picture)."""
    if w >= h:
        cw = min(w, max(1, round(h * 9 / 16)))
        return [(round(f * (w - cw)), 0, round(f * (w - cw)) + cw, h) for f in WINDOW_POSITIONS]
    ch = min(h, max(1, round(w * 9 / 16)))
    return [(0, round(f * (h - ch)), w, round(f * (h - ch)) + ch) for f in WINDOW_POSITIONS]


def query_boxes(w: int, h: int, views: str, trim: Box | None = None) -> list[Box]:
    """Crop boxes of the query views: the whole picture; for ``"crops"`` also its centred square, then
    the ``trim`` box (the picture inside a screenshot's or frame's borders, :func:`trim_box`; default the
    whole picture), that box's centred square and its two bands."""
    boxes = [(0, 0, w, h)]
    if check_views(views) == "crops":
        boxes.append(_centred_square(w, h, 1.0))
        left, top, right, bottom = trim or (0, 0, w, h)
        sl, st, sr, sb = _centred_square(right - left, bottom - top, 1.0)
        boxes += [(left, top, right, bottom), (left + sl, top + st, left + sr, top + sb)]
        boxes += _bands((left, top, right, bottom))
    return boxes


TRIM_TOLERANCE = 10  # grey levels: a line belongs to the border when its pixels stay this near its colour
TRIM_SHARE = 0.9  # ... for at least this share of them (a title bar's text or buttons are the rest)
TRIM_WORK_SIDE = 384  # the border is found on a copy with this long side (faster; box mapped back)
TRIM_SEAM = 2  # lines of the work copy: a blended line between two borders


def _border_lines(lines: np.ndarray, level: float) -> int:
    """How many of ``lines`` (L, n) grey, outermost first, are border of colour ``level``."""
    near = (np.abs(lines - level) <= TRIM_TOLERANCE).mean(1) >= TRIM_SHARE
    return len(near) if near.all() else int(np.argmin(near))


def _peel(a: np.ndarray, surround: bool) -> tuple[tuple[int, int, int, int], list[list[float]]]:
    """Peel the borders of ``a`` (H, W) float32 grey: ``((top, bottom, left, right), grey levels peeled per
    side)``; ``surround``: after the first round a side peels only a level some side has peeled, or
    once at most :data:`TRIM_SEAM` lines of another."""
    top, left, bottom, right = 0, 0, a.shape[0], a.shape[1]
    peeled: list[list[float]] = [[], [], [], []]
    seams = [1, 1, 1, 1]
    moved, first = True, True
    while moved and bottom - top > 2 and right - left > 2:
        inner = a[top:bottom, left:right]
        sides = (inner, inner[::-1], inner.T, inner.T[::-1])  # top, bottom, left, right: outermost first
        levels = [float(np.median(s[0])) for s in sides]
        cuts = [_border_lines(s, level) for s, level in zip(sides, levels)]
        seen = [p for side in peeled for p in side]
        for j, level in enumerate(levels):
            if not surround or first or not cuts[j] or any(abs(level - p) <= TRIM_TOLERANCE for p in seen):
                continue
            if cuts[j] <= TRIM_SEAM and seams[j]:
                seams[j] -= 1
            else:
                cuts[j] = 0
        for j, c in enumerate(cuts):
            peeled[j] += [levels[j]] if c else []
        moved, first = any(cuts), False
        top, bottom = top + cuts[0], bottom - cuts[1]
        left, right = left + cuts[2], right - cuts[3]
    return (top, bottom, left, right), peeled


def _surrounded(peeled: list[list[float]]) -> bool:
    """Whether some grey level was peeled on two sides or more (a background around the picture)."""
    return any(
        any(abs(p - q) <= TRIM_TOLERANCE for q in peeled[k] for p in peeled[j])
        for j in range(4)
        for k in range(j + 1, 4)
    )


def trim_box(g: Image.Image) -> Box:
    """The box (left, top, right, bottom) of a grey picture inside its borders: edge lines are peeled
    while most of their pixels keep the grey level of the outermost remaining line on that side (a
    viewer's title bar, then its background; a letterbox; a frame), round after round until no side
    moves. When one grey surrounds the picture (peeled on two sides or more), a side goes on after
    the first round only through a grey some side has peeled, or a seam of :data:`TRIM_SEAM` lines
    once: a smooth picture's edge near the background's grey is not peeled away line by line.
    A whole picture (nothing peeled, or the rest under a tenth of a side) gives the full box."""
    w, h = g.size
    f = min(1.0, TRIM_WORK_SIDE / max(w, h))
    a = np.asarray(g.resize((max(1, round(w * f)), max(1, round(h * f))), Image.Resampling.BOX), np.float32)
    (top, bottom, left, right), peeled = _peel(a, surround=True)
    if not _surrounded(peeled):
        (top, bottom, left, right), _ = _peel(a, surround=False)
    if bottom - top < 0.1 * a.shape[0] or right - left < 0.1 * a.shape[1]:
        return 0, 0, w, h
    return round(left / f), round(top / f), min(w, round(right / f)), min(h, round(bottom / f))


def boxes(w: int, h: int, views: str, role: str) -> list[Box]:
    if role not in ROLES:
        raise ValueError(f"role={role!r} must be one of {ROLES}")
    return gallery_boxes(w, h, views) if role == "gallery" else query_boxes(w, h, views)


#: Quarter turns of the whole picture added to a ``"crops"`` query (a phone that lost its orientation).
QUERY_TURNS = (1, 3)


def view_count(views: str, role: str = "gallery") -> int:
    """Views per picture (the same for every picture size)."""
    turns = len(QUERY_TURNS) if role == "query" and views == "crops" else 0
    return len(boxes(64, 64, views, role)) + turns


def image_views(im: Image.Image, size: int, views: str, role: str = "gallery") -> np.ndarray:
    """A PIL image -> ``(V, size, size)`` uint8 grey views (view 0: the whole picture, as the single view);
    a ``"crops"`` query's boxes come from :func:`query_boxes` with its :func:`trim_box`, then view 0 turned
    by each of :data:`QUERY_TURNS` quarter turns (the squashed picture turned is the turned picture squashed)."""
    g = to_gray(im)
    crops = role == "query" and check_views(views) == "crops"
    bxs = query_boxes(g.width, g.height, views, trim_box(g)) if crops else boxes(g.width, g.height, views, role)
    out = np.empty((view_count(views, role), size, size), np.uint8)
    for v, box in enumerate(bxs):
        crop = g if box == (0, 0, g.width, g.height) else g.crop(box)
        out[v] = (resize_gray(crop, size) * 255.0 + 0.5).astype(np.uint8)
    for v, k in enumerate(QUERY_TURNS if crops else (), len(bxs)):
        out[v] = np.rot90(out[0], k)
    return out


def decode_views_u8(args: tuple[str, int, str, str]) -> tuple[np.ndarray | None, str | None]:
    """``(path, size, views, role)`` -> ``((V, size, size) uint8, None)`` or ``(None, reason)``
    (picklable, for :func:`encoder.data.decoding_pool`). Decoded as :func:`encoder.data.load_gray`
    (JPEG draft to >= 4 x size), so view 0 equals :func:`encoder.data.decode_gray_u8`."""
    path, size, views, role = args
    try:
        with guarded(path):
            return image_views(open_image(path, draft_size=(4 * size, 4 * size)), size, views, role), None
    except ImageLoadError as e:
        return None, e.reason


def decode_views(
    paths: Sequence[str | os.PathLike], size: int, views: str, role: str = "gallery", workers: int = 0, pool=None
) -> tuple[np.ndarray, list[int], list[tuple[Path, str]]]:
    """Files -> ``((M, V, size, size) uint8, kept rows of paths, [(path, reason)] skipped)``, decoded as
    :func:`encoder.data.decode_folder` does (``pool`` used when given)."""
    return decode_folder(
        [Path(p) for p in paths],
        size,
        workers,
        progress=False,
        pool=pool,
        job=decode_views_u8,
        extra=(views, role),
        shape=(view_count(views, role),),
    )


def source_views(sources: Sequence, size: int, views: str, role: str = "gallery", workers: int = 0) -> np.ndarray:
    """Files or PIL images (evaluation's ``sources``) -> ``(N, V, size, size)`` uint8; an unreadable
    file is a ValueError naming it (evaluation decoded every source once already)."""
    if len(sources) and isinstance(sources[0], Image.Image):
        return np.stack([image_views(im, size, views, role) for im in sources])
    arrays, kept, skipped = decode_views(list(sources), size, views, role, workers)
    if skipped:
        raise ValueError(f"{skipped[0][0]}: {skipped[0][1]}")
    return arrays


def with_mirror(arrays: np.ndarray) -> np.ndarray:
    """``(N, V, S, S)`` -> ``(N, 2V, S, S)``: the views, then each view flipped left-right (the views of
    the mirrored picture: query boxes are centred, so flipping a view is the view of the flip)."""
    return np.concatenate([arrays, arrays[..., ::-1]], 1)


def views_decoder(size: int, views: str, role: str = "gallery", *, mirror: bool = False, workers: int = 0):
    """``decode(chunk, pool) -> ((M, R, S, S) uint8, kept rows, skipped)`` for
    :func:`encoder.ae.runtime.encode_paths`: R rows per kept file, its views in box order
    (``mirror``: then each view flipped)."""

    def decode(chunk, pool):
        arrays, rows, skipped = decode_views(chunk, size, views, role, workers, pool=pool)
        return (with_mirror(arrays) if mirror and len(arrays) else arrays), rows, skipped

    return decode


# ----------------------------------------------------------------------------- rows of a multi-view index


class _ViewsMismatch(IndexMismatchError, OptionError):
    """The ``views`` asked for is not the index's view set (the message names the option)."""


def index_view_set(meta: Mapping[str, Any], views: str | None) -> str:
    """The view set an index was built with (meta ``view_set``, ``views``); ``views`` (asked for), when
    given, must be the same (:class:`IndexMismatchError` naming the option otherwise)."""
    have = meta.get("view_set", "full")
    if views is not None and views != have:
        raise _ViewsMismatch(
            f"`views` {views} but the index was built with `views` {have}; query it with "
            f"`views` {have} (or leave `views` out), or build a new index with `views` {views}"
        )
    if meta.get("views", 1) != view_count(have, "gallery"):
        raise IndexMismatchError(
            f"the index holds {meta.get('views', 1)} views per image but view set {have!r} "
            f"has {view_count(have, 'gallery')}; rebuild it with this version"
        )
    return have


def merge_query_views(distances, ids, n: int, k: int) -> tuple[list[list], list[list]]:
    """Results of ``n`` queries x R views (rows query-major) -> per query the ``k`` best ids, each at
    its best distance over the query's R result lists (and within one list)."""
    per = len(ids) // n if n else 1
    return merge_best([(distances[v::per], ids[v::per]) for v in range(per)], k)


def check_view_rows(ids: Sequence[str], per: int) -> str | None:
    """None when ``ids`` (one per row) come in runs of ``per`` equal ids, each id in one run (an index
    with ``per`` views per image); else what is wrong, for an error message."""
    if per == 1:
        return None if n_distinct(ids) == len(ids) else "ids must be unique"
    if len(ids) % per:
        return f"{len(ids)} rows is not a whole number of images of {per} views"
    heads = list(ids[::per])
    for v in range(1, per):
        if list(ids[v::per]) != heads:
            return f"each id must have {per} consecutive rows (one per view)"
    return None if len(set(heads)) == len(heads) else "ids must be unique (one run of views per image)"


def merge_best(lists: Sequence[tuple[Sequence, Sequence]], k: int) -> tuple[list[list], list[list]]:
    """Per query, the ``k`` best distinct ids over several result lists, each id at its smallest
    distance (ties: the smaller id first). ``lists``: ``[(distances, ids), ...]``, each indexed by
    query (the views of a multi-view index, a query and its mirror, the views of a query); a FAISS
    ``-1`` (no result) is skipped. Returns ``(distances, ids)``, a list per query."""
    out_d, out_i = [], []
    for q in range(len(lists[0][1]) if lists else 0):
        best: dict = {}
        for dist, ids in lists:
            for d, i in zip(dist[q], ids[q]):
                if isinstance(i, (int, np.integer)) and i < 0:
                    continue
                best[i] = min(d, best[i]) if i in best else d
        top = sorted(best.items(), key=lambda t: (t[1], t[0]))[:k]
        out_i.append([t[0] for t in top])
        out_d.append([t[1] for t in top])
    return out_d, out_i


__all__ = [
    "VIEWS",
    "CROP_SIDE",
    "CROP_POSITIONS",
    "SQUARES",
    "WINDOW_POSITIONS",
    "BAND",
    "QUERY_TURNS",
    "trim_box",
    "AUTO_CROPS_MIN_SIDE",
    "view_sample",
    "auto_views",
    "check_views",
    "gallery_boxes",
    "query_boxes",
    "view_count",
    "image_views",
    "decode_views_u8",
    "decode_views",
    "source_views",
    "with_mirror",
    "views_decoder",
    "check_view_rows",
    "merge_best",
]

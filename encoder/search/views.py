"""Several views per picture, so that a crop or an aspect change still finds its original.

A code of the whole picture squashed to ``size x size`` (:func:`encoder.data.resize_gray`)
cannot match a copy that shows only part of it: a phone-screen 9:16 crop of a landscape photo,
or half of its area off-centre. A **view set** names the parts of a picture that are encoded:

* ``"full"``: the whole picture only (one view; what indexes without views hold);
* ``"crops"``: in the gallery, the whole picture, then same-aspect crops of :data:`CROP_SIDE`
  x each side at the :data:`CROP_POSITIONS`, then the centred squares of :data:`SQUARES` x the
  short side; a query adds to its whole picture its centred square of the short side.

Each gallery image is then scored by its best (smallest) distance over all pairs of its views
and the query's views. View 0 is always the whole picture, made exactly as the single view
(same decoding, grey conversion and resize), so its code equals the code of a ``"full"`` index.

The crops sit at a 3x3 grid of positions rather than the 4 corners and the centre: the grid
finds more of the half-area crops, for 12 gallery views instead of 8 (figures: docs/measured.md).

Example:
    >>> gallery_boxes(400, 300, "full")
    [(0, 0, 400, 300)]
    >>> query_boxes(400, 300, "crops")
    [(0, 0, 400, 300), (50, 0, 350, 300)]
    >>> len(gallery_boxes(400, 300, "crops")), view_count("crops", "gallery")
    (12, 12)
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from encoder.data import ImageLoadError, decode_folder, guarded, image_size, open_image, resize_gray, to_gray
from encoder.search.base import OptionError
from encoder.search.errors import IndexMismatchError

VIEWS = ("full", "crops")
ROLES = ("gallery", "query")
CROP_SIDE = 0.5**0.5  # each side x 0.707: half of the area
# A 3x3 grid of positions (fx, fy: 0 left/top, 1 right/bottom), row by row. The 4 corners + centre
# alone (8 gallery views instead of 12) found fewer half-area crops (see the module docstring).
CROP_POSITIONS = tuple((fx, fy) for fy in (0.0, 0.5, 1.0) for fx in (0.0, 0.5, 1.0))
SQUARES = (1.0, 0.5625)  # centred squares, x the short side
Box = tuple[int, int, int, int]


#: ``search.py index --method ae`` without ``--views`` picks "crops" when the pictures' median
#: short side is at least this many pixels (photos), else "full" (thumbnails such as Fashion-MNIST's
#: 28x28: a crop of a thumbnail is mostly blur, and the index stays 12x smaller).
AUTO_CROPS_MIN_SIDE = 256


def auto_views(paths: Sequence[str | os.PathLike | Image.Image], sample: int = 64) -> tuple[str, int]:
    """("crops" or "full", the median short side in px) from the headers of up to ``sample``
    evenly spaced files, or PIL images (no pixels decoded; unreadable files are left out, and
    none readable gives "full")."""
    picked = list(paths)[:: max(1, len(paths) // sample)][:sample]
    sides = []
    for p in picked:
        if isinstance(p, Image.Image):
            sides.append(min(p.size))
            continue
        try:
            sides.append(min(image_size(p)))
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
    return boxes


def query_boxes(w: int, h: int, views: str) -> list[Box]:
    """Crop boxes of the query views: the whole picture (and, for ``"crops"``, its centred square)."""
    boxes = [(0, 0, w, h)]
    if check_views(views) == "crops":
        boxes.append(_centred_square(w, h, 1.0))
    return boxes


def boxes(w: int, h: int, views: str, role: str) -> list[Box]:
    if role not in ROLES:
        raise ValueError(f"role={role!r} must be one of {ROLES}")
    return gallery_boxes(w, h, views) if role == "gallery" else query_boxes(w, h, views)


def view_count(views: str, role: str = "gallery") -> int:
    """Views per picture (the same for every picture size)."""
    return len(boxes(64, 64, views, role))


def image_views(im: Image.Image, size: int, views: str, role: str = "gallery") -> np.ndarray:
    """A PIL image -> ``(V, size, size)`` uint8 grey views (view 0: the whole picture, as the single view)."""
    g = to_gray(im)
    out = np.empty((view_count(views, role), size, size), np.uint8)
    for v, box in enumerate(boxes(g.width, g.height, views, role)):
        crop = g if box == (0, 0, g.width, g.height) else g.crop(box)
        out[v] = (resize_gray(crop, size) * 255.0 + 0.5).astype(np.uint8)
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
        return None if len(set(ids)) == len(ids) else "ids must be unique"
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
    "AUTO_CROPS_MIN_SIDE",
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

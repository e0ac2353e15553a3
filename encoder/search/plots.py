"""Pictures of search results: the query beside its top-k, and duplicate groups.

An image that cannot be read is drawn as a grey tile titled "unreadable"; both functions return
``[(path, reason)]`` of those, so the caller can say which (search.py prints "cannot draw ...").

Example:
    >>> # failed = plot_query("q.jpg", ["a.jpg", "b.jpg"], [3, 7], "out.png")   # [] when all drew
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from encoder._lazy import pyplot
from encoder.atomic import atomic_path
from encoder.data import ImageLoadError, guarded, open_image, to_rgb

UNREADABLE = "unreadable"


def _thumb(path: str | Path, size: int, failed: list[tuple[str, str]]) -> np.ndarray:
    """(h,w,3) uint8 thumbnail; a grey tile if unreadable, with ``(path, reason)`` appended to ``failed``."""
    try:
        with guarded(path):
            im = to_rgb(open_image(path, draft_size=(size, size)))
            im.thumbnail((size, size))
            return np.asarray(im)
    except ImageLoadError as e:  # missing files and OS errors included
        failed.append((str(path), e.reason))
    return np.full((size, size, 3), 200, np.uint8)


def _show(ax, path: str | Path, size: int, title: str, fontsize: int, failed: list) -> None:
    """Draw the thumbnail of ``path`` with ``title``; an unreadable file's title says so."""
    n = len(failed)
    ax.imshow(_thumb(path, size, failed))
    ax.set_title(
        f"{title}\n{UNREADABLE}" if len(failed) > n else title,
        fontsize=fontsize,
        color="red" if len(failed) > n else "black",
    )


def _save(fig, out: str | Path) -> None:
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=Path(out).suffix.lstrip(".") or "png", dpi=100, bbox_inches="tight")
    pyplot().close(fig)


def plot_query(
    query: str | Path,
    paths: Sequence[str | Path],
    distances: Sequence[float],
    out: str | Path,
    labels: Sequence[str] | None = None,
    recons: Sequence[np.ndarray] | None = None,
) -> list[tuple[str, str]]:
    """Query image then its neighbours, each titled with rank and distance; PNG at ``out``.

    ``recons``: optional (H,W) or (H,W,3) arrays drawn in a second row under each neighbour.
    Returns ``[(path, reason)]`` of the images that could not be drawn (grey tiles, so titled).
    """
    if len(paths) != len(distances):
        raise ValueError(f"{len(paths)} paths but {len(distances)} distances")
    n = len(paths) + 1
    rows = 2 if recons is not None else 1
    fig, axes = pyplot().subplots(rows, n, figsize=(2.4 * n, 2.6 * rows), squeeze=False)
    failed: list[tuple[str, str]] = []
    _show(axes[0, 0], query, 256, "query", 9, failed)
    for i, (p, d) in enumerate(zip(paths, distances), start=1):
        name = labels[i - 1] if labels else Path(p).name
        dtxt = f"{d:g}" if isinstance(d, (float, np.floating)) else str(d)
        _show(axes[0, i], p, 256, f"#{i} d={dtxt}\n{name[-24:]}", 8, failed)
    if recons is not None:
        for i, r in enumerate(recons, start=1):
            axes[1, i].imshow(
                r, cmap="gray" if np.ndim(r) == 2 else None, vmin=0, vmax=1
            )  # true grey levels, no auto-contrast
            axes[1, i].set_title("decoded code", fontsize=8)
    for ax in axes.ravel():
        ax.axis("off")
    _save(fig, out)
    return failed


def plot_groups(
    groups: Sequence[dict], root: str | Path, out: str | Path, max_groups: int = 8, max_per_group: int = 6
) -> list[tuple[str, str]]:
    """One row per duplicate group (first ``max_groups``), up to ``max_per_group`` images each.

    Returns ``[(path, reason)]`` of the images that could not be drawn (grey tiles, so titled).
    """
    failed: list[tuple[str, str]] = []
    groups = list(groups)[:max_groups]
    rows = max(len(groups), 1)
    cols = max([min(len(g["ids"]), max_per_group) for g in groups] or [1])
    fig, axes = pyplot().subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows), squeeze=False)
    for r, g in enumerate(groups):
        for c, i in enumerate(g["ids"][:max_per_group]):
            _show(axes[r, c], Path(root) / i, 160, f"g{r + 1}: {i[-20:]}", 7, failed)
    if not groups:
        axes[0, 0].text(0.5, 0.5, "no duplicate groups", ha="center")
    for ax in axes.ravel():
        ax.axis("off")
    _save(fig, out)
    return failed

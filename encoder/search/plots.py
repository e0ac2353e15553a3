"""Pictures of search results: the query beside its top-k, and duplicate groups.

Example:
    >>> # plot_query("q.jpg", ["a.jpg", "b.jpg"], [3, 7], "out.png")
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from encoder.atomic import atomic_path  # noqa: E402
from encoder.data import ImageLoadError, open_image, to_rgb  # noqa: E402


def _thumb(path: str | Path, size: int = 256) -> np.ndarray:
    try:
        im = to_rgb(open_image(path, draft_size=(size, size)))
        im.thumbnail((size, size))
        return np.asarray(im)
    except ImageLoadError:
        return np.full((size, size, 3), 200, np.uint8)


def _save(fig, out: str | Path) -> None:
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=Path(out).suffix.lstrip(".") or "png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def plot_query(query: str | Path, paths: Sequence[str | Path], distances: Sequence[float],
               out: str | Path, labels: Sequence[str] | None = None,
               recons: Sequence[np.ndarray] | None = None) -> None:
    """Query image then its neighbours, each titled with rank and distance; PNG at ``out``.

    ``recons``: optional (H,W) or (H,W,3) arrays drawn in a second row under each neighbour.
    """
    if len(paths) != len(distances):
        raise ValueError(f"{len(paths)} paths but {len(distances)} distances")
    n = len(paths) + 1
    rows = 2 if recons is not None else 1
    fig, axes = plt.subplots(rows, n, figsize=(2.4 * n, 2.6 * rows), squeeze=False)
    axes[0, 0].imshow(_thumb(query))
    axes[0, 0].set_title("query", fontsize=9)
    for i, (p, d) in enumerate(zip(paths, distances), start=1):
        axes[0, i].imshow(_thumb(p))
        name = labels[i - 1] if labels else Path(p).name
        dtxt = f"{d:g}" if isinstance(d, (float, np.floating)) else str(d)
        axes[0, i].set_title(f"#{i} d={dtxt}\n{name[-24:]}", fontsize=8)
    if recons is not None:
        for i, r in enumerate(recons, start=1):
            axes[1, i].imshow(r, cmap="gray" if np.ndim(r) == 2 else None, vmin=0, vmax=1)  # true grey levels, no auto-contrast
            axes[1, i].set_title("decoded code", fontsize=8)
    for ax in axes.ravel():
        ax.axis("off")
    _save(fig, out)


def plot_groups(groups: Sequence[dict], root: str | Path, out: str | Path, max_groups: int = 8,
                max_per_group: int = 6) -> None:
    """One row per duplicate group (first ``max_groups``), up to ``max_per_group`` images each."""
    groups = list(groups)[:max_groups]
    rows = max(len(groups), 1)
    cols = max([min(len(g["ids"]), max_per_group) for g in groups] or [1])
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows), squeeze=False)
    for r, g in enumerate(groups):
        for c, i in enumerate(g["ids"][:max_per_group]):
            axes[r, c].imshow(_thumb(Path(root) / i, 160))
            axes[r, c].set_title(f"g{r + 1}: {i[-20:]}", fontsize=7)
    if not groups:
        axes[0, 0].text(0.5, 0.5, "no duplicate groups", ha="center")
    for ax in axes.ravel():
        ax.axis("off")
    _save(fig, out)

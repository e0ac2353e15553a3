"""Figures for palette quantization (matplotlib, Agg backend; every figure is written to a PNG).

* :func:`side_by_side` - original + one panel per K, colour counts in the titles (Pillow).
* :func:`error_vs_k` - PSNR and mean CIEDE2000 against K (the "how do I choose K" plot).
* :func:`scatter` - 2-D (R-G, R-B) and 3-D RGB scatter of a pixel sample, coloured by
  original colour and by assigned palette colour.
* :func:`segmentation_figure` - original, label map, centroid-painted image.

Example::

    >>> side_by_side(rgb, [q16, q64], "runs/quantize/photo_side.png")
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from encoder._lazy import pyplot
from encoder.atomic import atomic_path
from encoder.palette.api import Quantized
from encoder.palette.colors import distinct_colors
from encoder.palette.report import segmentation


def _save(fig, path: str | os.PathLike) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight", format="png")
    pyplot().close(fig)


PANEL_HEIGHT = 360  # pixels of each panel of the side-by-side figure


def side_by_side(
    image: np.ndarray, results: Sequence[Quantized], path: str | os.PathLike, labels: Sequence[str] | None = None
) -> None:
    """Original (H, W, 3) uint8 and each quantized result side by side, colour counts in titles.

    Drawn with Pillow, not matplotlib: the panels are the pictures themselves, scaled to
    :data:`PANEL_HEIGHT` (box-filtered, so a 16 MP photo costs 0.1 s, not the 0.8 s of
    matplotlib's import plus its resampling), with a title line over each.
    """
    from PIL import Image, ImageDraw, ImageFont

    h, w = image.shape[:2]
    size = (max(1, round(w * PANEL_HEIGHT / h)), PANEL_HEIGHT)
    before = next((q.info["colors_before"] for q in results if "colors_before" in q.info), None)
    if before is None:
        before = len(distinct_colors(image.reshape(-1, 3))[0])
    panels = [("original", f"{before:,} colours", image)] + [
        (labels[i] if labels else f"K={q.n_colors}", f"{len(q.palette)} colours", q.image())
        for i, q in enumerate(results)
    ]
    font = ImageFont.load_default(size=15)
    pad, head = 12, 46
    fig = Image.new("RGB", (pad + len(panels) * (size[0] + pad), head + PANEL_HEIGHT + pad), "white")
    draw = ImageDraw.Draw(fig)
    for i, (title, sub, pixels) in enumerate(panels):
        x = pad + i * (size[0] + pad)
        fig.paste(Image.fromarray(pixels).resize(size, Image.Resampling.BOX), (x, head))
        for line, y in ((title, 6), (sub, 24)):
            tw = draw.textlength(line, font=font)
            draw.text((x + (size[0] - tw) / 2, y), line, fill=(20, 20, 20), font=font)
    with atomic_path(path, suffix=".png") as tmp:
        fig.save(tmp, format="PNG")


def error_vs_k(
    curve: Sequence[dict], path: str | os.PathLike, target_psnr: float | None = None, chosen: int | None = None
) -> None:
    """PSNR (left axis) and mean CIEDE2000 (right axis) against K, from
    :func:`~encoder.palette.report.auto_n_colors`'s curve (rows keyed ``k``, ``psnr``, ``ciede2000``)."""
    ks = [r["n_colors"] for r in curve]
    fig, ax = pyplot().subplots(figsize=(5.5, 3.6))
    ax.plot(ks, [r["psnr"] for r in curve], "o-", color="C0", label="PSNR")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("K (palette size)")
    ax.set_ylabel("PSNR (dB)", color="C0")
    if target_psnr is not None:
        ax.axhline(target_psnr, color="C0", ls=":", lw=1)
    if chosen is not None:
        ax.axvline(chosen, color="k", ls="--", lw=1, label=f"chosen K={chosen}")
    ax2 = ax.twinx()
    ax2.plot(ks, [r["ciede2000"] for r in curve], "s-", color="C1", label="CIEDE2000")
    ax2.set_ylabel("mean CIEDE2000", color="C1")
    ax.set_title("error vs K")
    ax.legend(loc="lower right", fontsize=8)
    _save(fig, path)


def scatter(
    image: np.ndarray,
    q: Quantized,
    path_2d: str | os.PathLike,
    path_3d: str | os.PathLike,
    n_sample: int = 3000,
    seed: int = 0,
) -> None:
    """2-D (R-G, R-B) and 3-D RGB scatter of ``n_sample`` pixels: before (own colour) and
    after (assigned palette colour)."""
    px = image.reshape(-1, 3)
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(px), size=min(n_sample, len(px)), replace=False)
    before = px[idx].astype(float)
    after_c = q.palette[q.labels.reshape(-1)[idx]] / 255.0
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(8, 8))
    for row, (cols, name) in enumerate(
        [(before / 255.0, "original colour"), (after_c, f"palette colour (K={q.n_colors})")]
    ):
        for col, (j, lab) in enumerate([(1, "G"), (2, "B")]):
            a = axes[row, col]
            a.scatter(before[:, 0], before[:, j], c=cols, s=3)
            a.set_xlabel("R")
            a.set_ylabel(lab)
            a.set_title(f"R-{lab}, {name}", fontsize=9)
    _save(fig, path_2d)
    fig = plt.figure(figsize=(10, 5))
    for i, (cols, name) in enumerate(
        [(before / 255.0, "original colour"), (after_c, f"palette colour (K={q.n_colors})")]
    ):
        a = fig.add_subplot(1, 2, i + 1, projection="3d")
        a.scatter(before[:, 0], before[:, 1], before[:, 2], c=cols, s=2)
        a.set_xlabel("R")
        a.set_ylabel("G")
        a.set_zlabel("B")
        a.set_title(name, fontsize=9)
    _save(fig, path_3d)


def segmentation_figure(image: np.ndarray, q: Quantized, path: str | os.PathLike) -> None:
    """Original, label map (grey mask for 2 colours, distinct colours otherwise), centroid-painted image."""
    seg = segmentation(q)
    fig, axes = pyplot().subplots(1, 3, figsize=(10, 3.6))
    axes[0].imshow(image)
    axes[0].set_title("original", fontsize=9)
    axes[1].imshow(seg, cmap="gray" if seg.ndim == 2 else None, vmin=0, vmax=255)
    axes[1].set_title(f"labels ({len(q.palette)} segments)", fontsize=9)
    axes[2].imshow(q.image())
    axes[2].set_title("centroid colours", fontsize=9)
    for a in axes:
        a.axis("off")
    _save(fig, path)


__all__ = ["side_by_side", "error_vs_k", "scatter", "segmentation_figure"]

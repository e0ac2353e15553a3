"""What a palette result is worth: stats, the lossless reference size, tables, the palette
size for a target, and label maps.

Example::

    >>> q = quantize(rgb, 64)
    >>> palette_stats(rgb, q)["psnr"]              # dB; also bytes before/after, CIEDE2000
    >>> n, curve = auto_n_colors(rgb, target_psnr=38.0)   # smallest size reaching 38 dB
    >>> segmentation(quantize(rgb, 2)).shape       # (H, W) uint8 mask in {0, 255}
"""

from __future__ import annotations

import colorsys
import io
from typing import Any, Sequence

import numpy as np
from PIL import Image

from encoder.metrics import psnr
from encoder.palette.api import Quantized, check_image, check_n_colors, quantize
from encoder.palette.colors import ciede2000, distinct_colors, pack, srgb_to_lab, unpack

# the palette sizes :func:`auto_n_colors` tries by default
CANDIDATES = (2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)


def encode_png(array: np.ndarray, **options: Any) -> bytes:
    """PNG bytes of an (H, W) grey or (H, W, 3) RGB uint8 array (``options``: Pillow's PNG options)."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(buf, format="PNG", **options)
    return buf.getvalue()


def lossless_png_size(image: np.ndarray) -> int:
    """Bytes of a lossless RGB PNG of ``image`` (H, W, 3) uint8: the "bytes before" reference.

    Slow (~0.15 s for a 0.27 MP photo, zlib level 9): compute it once per image.
    """
    return len(encode_png(image, optimize=False, compress_level=9))


def mean_ciede2000(image: np.ndarray, palette: np.ndarray, labels: np.ndarray) -> float:
    """Mean CIEDE2000 between ``image`` (H, W, 3) uint8 and ``palette[labels]``.

    Computed once per (distinct colour, label) pair weighted by pixel count, so it is
    cheap on photos.
    """
    pix = pack(image.reshape(-1, 3)).astype(np.int64) * 256 + labels.reshape(-1).astype(np.int64)
    pairs, counts = np.unique(pix, return_counts=True)
    cols, labs = unpack(pairs >> 8), (pairs & 255)
    d = ciede2000(srgb_to_lab(cols), srgb_to_lab(np.asarray(palette)[labs]))
    return float(np.sum(d * counts) / counts.sum())


def palette_stats(image: np.ndarray, q: Quantized, *, source_bytes: int | None = None,
                  bytes_before: int | None = None) -> dict:
    """Stats of one result ``q`` of ``image`` (H, W, 3) uint8 -> a dict (one JSON row).

    Keys: ``k`` (the palette size asked for, ``q.n_colors``: the command line's ``-k``),
    ``colors_before``/``colors_after`` (distinct colours; after = ``len(q.palette)``),
    ``bytes_before`` (a lossless RGB PNG of the same pixels; pass it when evaluating several
    results of one image, see :func:`lossless_png_size`), ``bytes_source`` (the input
    file's size, reported beside it), ``bytes_after`` (the indexed PNG),
    ``ratio = bytes_before / bytes_after``, ``psnr`` (dB, inf when lossless), ``ciede2000``
    (mean), ``seconds``.
    """
    before = lossless_png_size(image) if bytes_before is None else int(bytes_before)
    after = len(q.png_bytes())
    return {
        "k": q.n_colors,
        "colors_before": int(len(distinct_colors(image.reshape(-1, 3))[0])),
        "colors_after": len(q.palette),
        "bytes_before": before,
        "bytes_source": source_bytes,
        "bytes_after": after,
        "ratio": before / after,
        "psnr": psnr(image, q.image()),
        "ciede2000": mean_ciede2000(image, q.palette, q.labels),
        "seconds": q.seconds,
    }


def format_table(rows: Sequence[dict]) -> str:
    """A plain-text table of :func:`palette_stats` rows (with ``file`` and ``method`` keys)."""
    head = (f"{'file':<24} {'method':<7} {'K':>4} {'colours':>15} {'PNG before':>10} {'source':>9} "
            f"{'after':>8} {'ratio':>6} {'PSNR':>6} {'dE2000':>6} {'sec':>6}")
    lines = [head, "-" * len(head)]
    for r in rows:
        name = r.get("file", "")
        name = name if len(name) <= 24 else "..." + name[-21:]
        lines.append(
            f"{name:<24} {r.get('method', 'kmeans'):<7} {r['k']:>4} {r['colors_before']:>7,}->{r['colors_after']:<3}  "
            f"{r['bytes_before']:>10,} {r['bytes_source'] or 0:>9,} {r['bytes_after']:>8,} {r['ratio']:>6.2f} "
            f"{r['psnr'] if r['psnr'] is not None else float('inf'):>6.2f} {r['ciede2000']:>6.2f} {r['seconds']:>6.3f}")
    return "\n".join(lines)


def auto_n_colors(
    image: np.ndarray,
    *,
    target_psnr: float | None = None,
    max_bytes: int | None = None,
    candidates: Sequence[int] = CANDIDATES,
    seed: int = 0,
    lab: bool = False,
    bytes_before: int | None = None,
    threads: int | None = None,
) -> tuple[int | None, list[dict]]:
    """The smallest palette size in ``candidates`` whose result reaches ``target_psnr`` (dB),
    or the largest whose PNG fits in ``max_bytes``. Exactly one target must be given.
    ``bytes_before``: the lossless PNG size if the caller has it already (see
    :func:`lossless_png_size`).

    Returns ``(n_colors or None if none qualifies, curve)``, curve = one :func:`palette_stats`
    dict per size tried (ascending), for the error-vs-K plot.

    Example: ``auto_n_colors(rgb, target_psnr=38.0)`` -> ``(64, [row for 2, 4, ..., 64])``.
    """
    if (target_psnr is None) == (max_bytes is None):
        raise ValueError("give exactly one of target_psnr or max_bytes")
    if max_bytes is not None and max_bytes <= 0:
        raise ValueError(f"max_bytes={max_bytes} must be > 0")
    sizes = sorted({check_n_colors(n) for n in candidates})
    image = check_image(image)
    curve, chosen = [], None
    before = lossless_png_size(image) if bytes_before is None else int(bytes_before)
    for n in sizes:
        row = palette_stats(image, quantize(image, n, seed=seed, lab=lab, threads=threads), bytes_before=before)
        curve.append(row)
        if target_psnr is not None and row["psnr"] >= target_psnr:
            chosen = n
            break
        if max_bytes is not None:
            if row["bytes_after"] <= max_bytes:
                chosen = n
            else:
                break
        if row["colors_after"] < n:  # lossless already, a larger palette changes nothing
            break
    return chosen, curve


def segment_colors(n: int) -> np.ndarray:
    """``n`` well-separated label colours (n, 3) uint8 (golden-angle hues)."""
    return np.array([[round(255 * v) for v in colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.65 + 0.35 * (i % 2), 0.95 - 0.3 * (i % 3 == 2))]
                     for i in range(n)], dtype=np.uint8)


def segmentation(q: Quantized) -> np.ndarray:
    """The label map as an image: for 2 colours a grey mask (H, W) uint8 with values
    {0, 255} (darker palette colour -> 0); otherwise (H, W, 3) uint8 distinct colours."""
    n = len(q.palette)
    if n <= 2:
        lum = q.palette.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        order = np.argsort(lum, kind="stable")
        val = np.zeros(n, np.uint8)
        val[order[-1]] = 255 if n == 2 else 0
        return val[q.labels]
    return segment_colors(n)[q.labels]


__all__ = ["CANDIDATES", "encode_png", "lossless_png_size", "mean_ciede2000", "palette_stats", "format_table",
           "auto_n_colors", "segment_colors", "segmentation"]

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
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from encoder.metrics import psnr
from encoder.palette.api import Quantized, check_image, check_n_colors, quantize
from encoder.palette.colors import CHUNK, ciede2000, distinct_colors, pack, srgb_to_lab, unique_counts, unpack

# pixels of the CIEDE2000 sample of the fast report: on a 4 MP photo 25 ms instead of 1 s, the
# standard error of the mean (reported beside it) about 0.01 at a mean of 3
CIEDE_SAMPLE = 1 << 16
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
    px, flat = image.reshape(-1, 3), labels.reshape(-1)
    pix = np.empty(len(flat), np.uint32)  # colour << 8 | label: 32 bits, packed a chunk at a time
    for s in range(0, len(flat), CHUNK):
        pix[s : s + CHUNK] = pack(px[s : s + CHUNK]).astype(np.uint32) << 8 | flat[s : s + CHUNK]
    pairs, counts = unique_counts(pix)
    del pix
    cols, labs = unpack(pairs >> 8), (pairs & 255)
    d = ciede2000(srgb_to_lab(cols), srgb_to_lab(np.asarray(palette)[labs]))
    return float(np.sum(d * counts) / counts.sum())


def palette_stats(
    image: np.ndarray,
    q: Quantized,
    *,
    source_bytes: int | None = None,
    bytes_before: int | None = None,
    png: bytes | None = None,
    full: bool = True,
    sample: int = CIEDE_SAMPLE,
    seed: int = 0,
) -> dict:
    """Stats of one result ``q`` of ``image`` (H, W, 3) uint8 -> a dict (one JSON row).

    Keys: ``k`` (the palette size asked for, ``q.n_colors``: the command line's ``-k``),
    ``colors_before``/``colors_after`` (distinct colours; after = ``len(q.palette)``),
    ``bytes_before`` (a lossless RGB PNG of the same pixels; pass it when evaluating several
    results of one image, see :func:`lossless_png_size`; None when ``full`` is off and it is
    not given), ``bytes_source`` (the input file's size), ``bytes_after`` (the indexed PNG:
    ``len(png)`` when the caller has encoded it already), ``ratio`` (``bytes_before`` or, without
    it, ``bytes_source``, over ``bytes_after``; ``ratio_basis`` says which), ``psnr`` (dB, inf
    when lossless), ``ciede2000`` (mean; over every pixel when ``full``, else over a seeded
    sample of ``sample`` pixels with its standard error in ``ciede2000_se``), ``seconds``.

    ``full=False`` is the fast report of the command line: the lossless reference PNG (4 s for a
    4 MP photo) and CIEDE2000 over every pixel (1 s) are what made it slow.
    """
    if bytes_before is None and full:
        bytes_before = lossless_png_size(image)
    after = len(q.png_bytes() if png is None else png)
    base, basis = (bytes_before, "lossless PNG") if bytes_before is not None else (source_bytes, "source file")
    dE, dE_se, n_sampled = _ciede2000(image, q, None if full else sample, seed)
    return {
        "n_colors": q.n_colors,
        "k": q.n_colors,  # the same, under the name earlier JSON readers know
        "colors_before": int(q.info.get("colors_before") or len(distinct_colors(image.reshape(-1, 3))[0])),
        "colors_after": len(q.palette),
        "bytes_before": None if bytes_before is None else int(bytes_before),
        "bytes_source": source_bytes,
        "bytes_after": after,
        "ratio": None if base is None else base / after,
        "ratio_basis": None if base is None else basis,
        "psnr": psnr(image, q.image()),
        "ciede2000": dE,
        "ciede2000_se": dE_se,
        "ciede2000_pixels": n_sampled,
        "seconds": q.seconds,
    }


def _ciede2000(image: np.ndarray, q: Quantized, sample: int | None, seed: int) -> tuple[float, float | None, int]:
    """(mean CIEDE2000, its standard error or None when exact, pixels measured)."""
    n = q.labels.size
    if sample is None or sample >= n:
        return mean_ciede2000(image, q.palette, q.labels), None, n
    rows = np.random.default_rng(seed).choice(n, sample, replace=False)
    pix = image.reshape(-1, 3)[rows]
    d = ciede2000(srgb_to_lab(pix), srgb_to_lab(q.palette[q.labels.reshape(-1)[rows]]))
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(sample)), sample


def format_table(rows: Sequence[dict]) -> str:
    """A plain-text table of :func:`palette_stats` rows (with ``file`` and ``method`` keys)."""
    head = (
        f"{'file':<24} {'method':<7} {'K':>4} {'colours':>15} {'PNG before':>10} {'source':>9} "
        f"{'after':>8} {'ratio':>6} {'PSNR':>6} {'dE2000':>6} {'sec':>6}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        name = r.get("file", "")
        name = name if len(name) <= 24 else "..." + name[-21:]
        lines.append(
            f"{name:<24} {r.get('method', 'kmeans'):<7} {r['n_colors']:>4} "
            f"{r['colors_before']:>7,}->{r['colors_after']:<3}  "
            f"{_num(r['bytes_before']):>10} {_num(r['bytes_source']):>9} {r['bytes_after']:>8,} "
            f"{_num(r['ratio'], '.2f'):>6} "
            f"{r['psnr'] if r['psnr'] is not None else float('inf'):>6.2f} {r['ciede2000']:>6.2f} {r['seconds']:>6.3f}"
        )
    return "\n".join(lines)


def _num(v, fmt: str = ",") -> str:
    return "-" if v is None else format(v, fmt)


def format_line(r: dict) -> str:
    """One result as a line: ``photo.png K=256: 36.27 dB, dE2000 2.96 (+-0.01), 884,501 -> 256 colours,
    7,403,651 -> 1,748,293 bytes (4.23x smaller than the source file), 0.77 s``."""
    psnr_txt = "lossless" if r["psnr"] is None or r["psnr"] == float("inf") else f"{r['psnr']:.2f} dB"
    de = f"dE2000 {r['ciede2000']:.2f}" + (
        f" (+-{r['ciede2000_se']:.2f}, {r['ciede2000_pixels']:,}-pixel sample)"
        if r.get("ciede2000_se") is not None
        else ""
    )
    base = r["bytes_before"] if r["bytes_before"] is not None else r["bytes_source"]
    size = (
        f"{r['bytes_after']:,} bytes"
        if base is None
        else (f"{base:,} -> {r['bytes_after']:,} bytes ({r['ratio']:.2f}x smaller than the {r['ratio_basis']})")
    )
    method = "" if r.get("method", "kmeans") == "kmeans" else f" {r['method']}"
    return (
        f"{r.get('file', '')}{method} K={r['n_colors']}: {psnr_txt}, {de}, {r['colors_before']:,} -> "
        f"{r['colors_after']} colours, {size}, {r['seconds']:.2f} s"
    )


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
    full: bool = True,
) -> tuple[int | None, list[dict]]:
    """The smallest palette size in ``candidates`` whose result reaches ``target_psnr`` (dB),
    or the largest whose PNG fits in ``max_bytes``. Exactly one target must be given.
    ``bytes_before``: the lossless PNG size if the caller has it already (see
    :func:`lossless_png_size`); ``full``: as in :func:`palette_stats`.

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
    before = lossless_png_size(image) if bytes_before is None and full else bytes_before
    for n in sizes:
        row = palette_stats(
            image, quantize(image, n, seed=seed, lab=lab, threads=threads), bytes_before=before, full=full
        )
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
    return np.array(
        [
            [
                round(255 * v)
                for v in colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.65 + 0.35 * (i % 2), 0.95 - 0.3 * (i % 3 == 2))
            ]
            for i in range(n)
        ],
        dtype=np.uint8,
    )


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


__all__ = [
    "CANDIDATES",
    "encode_png",
    "lossless_png_size",
    "mean_ciede2000",
    "palette_stats",
    "format_table",
    "format_line",
    "auto_n_colors",
    "segment_colors",
    "segmentation",
]

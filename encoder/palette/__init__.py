"""k-means colour palettes: fit, assign, indexed PNG, stats, segmentation, figures.

Modules: :mod:`~encoder.palette.colors` (packed colours, distinct colours, Lab, CIEDE2000),
:mod:`~encoder.palette.kmeans` (the weighted k-means engine), :mod:`~encoder.palette.api`
(fit, assign, quantize), :mod:`~encoder.palette.report` (stats, reference PNG, table,
palette size for a target, label maps), :mod:`~encoder.palette.plots` (figures).

Example::

    >>> from encoder.palette import quantize, palette_stats
    >>> q = quantize(rgb, 64)              # q.palette (<= 64, 3) uint8, q.labels (H, W) uint8
    >>> palette_stats(rgb, q)["psnr"]      # dB
"""

from encoder._lazy import exports

_PUBLIC = {
    "encoder.palette.api": ("Quantized", "quantize", "fit_palette", "assign", "random_palette", "check_n_colors"),
    "encoder.palette.colors": ("ColorSet", "distinct_colors", "srgb_to_lab", "lab_to_srgb", "ciede2000"),
    "encoder.palette.kmeans": ("weighted_kmeans",),
    "encoder.palette.report": (
        "palette_stats",
        "auto_n_colors",
        "lossless_png_size",
        "encode_png",
        "format_table",
        "segmentation",
        "segment_colors",
        "mean_ciede2000",
    ),
}

__getattr__, __dir__ = exports(__name__, {n: f"{m}:{n}" for m, names in _PUBLIC.items() for n in names})

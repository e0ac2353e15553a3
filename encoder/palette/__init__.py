"""k-means colour palettes: fit, assign, indexed PNG, stats, segmentation, figures."""
from encoder._lazy import exports

__getattr__, __dir__ = exports(__name__, {
    n: f"encoder.palette.api:{n}" for n in (
        "Quantized", "quantize", "fit_palette", "assign", "evaluate", "auto_k", "segmentation",
        "random_palette", "check_k")})

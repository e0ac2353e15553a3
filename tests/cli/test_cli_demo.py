"""encoder.cli.demo: the summary it renders (the end-to-end run is in tests/test_readme.py)."""

from encoder.cli.demo import render_summary


def _summary(quantize_rows):
    return {
        "data": "d",
        "epochs": 1,
        "checkpoint": "c.ckpt",
        "reconstruction": {"count": 2, "mean_psnr": 20.0, "mean_ssim": 0.5},
        "retrieval": {"results": [{"method": "ae", "P@1": 1.0, "P@5": 0.8, "mAP@5": 0.7}]},
        "quantize": quantize_rows,
        "seconds": {"total": 1.0},
    }


def test_summary_renders_a_lossless_palette_result():
    # quantize.py --json writes a lossless result's infinite PSNR as null: it used to raise TypeError here
    rows = [
        {"n_colors": 16, "k": 16, "psnr": None, "bytes_before": 900, "bytes_after": 100, "ratio": 9.0},
        {"k": 64, "psnr": 31.234, "bytes_before": 900, "bytes_after": 300, "ratio": 3.0},  # a row before n_colors
    ]
    text = render_summary(_summary(rows))
    assert "| 16 | lossless | 900 | 100 | 9.00 |" in text
    assert "| 64 | 31.23 | 900 | 300 | 3.00 |" in text
    assert "| ae | 1.000 | 0.800 | 0.700 |" in text

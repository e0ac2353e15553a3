"""encoder.palette.report: stats of a result, the reference PNG, the table, the size for a target, label maps."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from encoder.metrics import psnr
from encoder.palette.api import quantize
from encoder.palette.report import (
    auto_n_colors,
    encode_png,
    format_table,
    lossless_png_size,
    mean_ciede2000,
    palette_stats,
    segment_colors,
    segmentation,
)


def test_palette_stats_row(photo):
    q = quantize(photo, 16)
    row = palette_stats(photo, q, source_bytes=1234)
    reference = io.BytesIO()
    Image.fromarray(photo).save(reference, format="PNG", compress_level=9)
    assert row["bytes_before"] == lossless_png_size(photo) == len(reference.getvalue())
    assert row["k"] == q.n_colors == 16 and row["colors_after"] == len(q.palette)
    assert row["colors_before"] == len(np.unique(photo.reshape(-1, 3), axis=0))
    assert row["bytes_after"] == len(q.png_bytes()) and row["bytes_source"] == 1234
    assert row["ratio"] == row["bytes_before"] / row["bytes_after"]
    assert row["psnr"] == psnr(photo, q.image())
    assert row["ciede2000"] == pytest.approx(mean_ciede2000(photo, q.palette, q.labels)) and row["ciede2000"] > 0
    assert palette_stats(photo, q, bytes_before=99)["bytes_before"] == 99  # a known reference is not encoded again
    table = format_table([{"file": "photo.png", "method": "kmeans", **row}])
    assert "PSNR" in table.splitlines()[0] and "photo.png" in table.splitlines()[2]


def test_encode_png_round_trips_grey_and_rgb(photo):
    grey = photo[..., 0]
    for a in (grey, photo):
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode_png(a)))), a)


def test_segmentation_outputs(photo):
    q2 = quantize(photo, 2)
    mask = segmentation(q2)
    assert mask.shape == photo.shape[:2] and mask.dtype == np.uint8
    assert set(np.unique(mask)) == {0, 255}
    q16 = quantize(photo, 16)
    seg = segmentation(q16)
    assert seg.shape == photo.shape
    # one distinct label colour per segment, and the label map is recoverable from it
    assert len(np.unique(seg.reshape(-1, 3), axis=0)) == len(q16.palette)
    assert len(np.unique(segment_colors(256), axis=0)) == 256


def test_auto_n_colors_picks_smallest_meeting_target(photo):
    sizes = (4, 8, 16, 32, 64)
    n, curve = auto_n_colors(photo, target_psnr=30.0, candidates=sizes)
    assert n is not None and curve[-1]["k"] == n and curve[-1]["psnr"] >= 30.0
    assert all(r["psnr"] < 30.0 for r in curve[:-1])
    budget = curve[2]["bytes_after"]
    nb, curve_b = auto_n_colors(photo, max_bytes=budget, candidates=sizes)
    assert nb is not None and [r for r in curve_b if r["k"] == nb][0]["bytes_after"] <= budget
    with pytest.raises(ValueError):
        auto_n_colors(photo)

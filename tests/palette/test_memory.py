"""The palette path in bounded memory: chunked steps give the whole-array results, the strip
loader gives the whole conversion's pixels, and quantize's numpy peak stays a few bytes per pixel."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from PIL import Image

from encoder import data, metrics
from encoder.palette import api, colors
from encoder.palette.api import Quantized, quantize
from encoder.palette.report import mean_ciede2000


@pytest.fixture
def tiny_chunks(monkeypatch):
    """Chunks of 1,000 pixels, so a small image crosses many chunk edges."""
    monkeypatch.setattr(colors, "CHUNK", 1000)
    monkeypatch.setattr(api, "CHUNK", 1000)


def test_pack_by_chunks_equals_whole(tiny_chunks):
    px = np.random.default_rng(0).integers(0, 256, (12_345, 3), dtype=np.uint8)
    p = px.astype(np.int64)
    assert np.array_equal(colors.pack(px), (p[:, 0] << 16) | (p[:, 1] << 8) | p[:, 2])


@pytest.mark.parametrize("method", ["kmeans", "random"])  # random leaves palette colours unused: the remap
def test_quantize_by_chunks_equals_whole(photo, tiny_chunks, method, monkeypatch):
    small = quantize(photo, 64, method=method, seed=1)
    monkeypatch.setattr(colors, "CHUNK", 1 << 20)
    monkeypatch.setattr(api, "CHUNK", 1 << 20)
    whole = quantize(photo, 64, method=method, seed=1)
    assert np.array_equal(small.palette, whole.palette)
    assert np.array_equal(small.labels, whole.labels)
    assert small.labels.max() == len(small.palette) - 1  # only used colours kept


def test_image_by_chunks(tiny_chunks):
    rng = np.random.default_rng(2)
    q = Quantized(rng.integers(0, 256, (7, 3), dtype=np.uint8), rng.integers(0, 7, (61, 53), dtype=np.uint8), 8)
    assert np.array_equal(q.image(), q.palette[q.labels])


def test_psnr_by_chunks_equals_formula():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (101, 37, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (101, 37, 3), dtype=np.uint8)
    d = a.astype(np.float64) - b.astype(np.float64)
    expected = 10 * np.log10(255.0**2 / np.mean(d * d))
    assert metrics._mse(a.reshape(-1), b.reshape(-1), chunk=1000) == pytest.approx(np.mean(d * d), rel=1e-12)
    assert metrics.psnr(a, b) == pytest.approx(expected, rel=1e-12)


def _images(rgb: np.ndarray) -> dict[str, Image.Image]:
    """One image of each mode the strip loader handles, plus two it converts whole."""
    im = Image.fromarray(rgb)
    p = im.quantize(16)
    pt = p.copy()
    pt.info["transparency"] = 3
    rgba = np.dstack([rgb, (np.arange(rgb.shape[1]) * 5 % 256).astype(np.uint8)[None].repeat(len(rgb), 0)])
    grey16 = (rgb[..., 0].astype(np.uint16) * 257 + 5).astype(np.uint16)
    return {
        "rgb.png": im,
        "l.png": im.convert("L"),
        "bilevel.png": im.convert("1"),
        "p.png": p,
        "p_transparent.png": pt,
        "rgba.png": Image.fromarray(rgba, "RGBA"),
        "la.png": Image.fromarray(rgba, "RGBA").convert("LA"),
        "cmyk.tif": im.convert("CMYK"),
        "i16.png": Image.fromarray(grey16),
        "f.tif": Image.fromarray(rgb[..., 1].astype(np.float32) / 255.0),
    }


def test_load_rgb_in_strips_equals_the_whole_conversion(tmp_path, smooth, monkeypatch):
    monkeypatch.setattr("encoder._imagefile.STRIP_PIXELS", 500)  # 500 // 70 = 7 rows a strip
    rgb = smooth(4, size=(70, 45))
    for name, im in _images(rgb).items():
        path = tmp_path / name
        im.save(path)
        got = data.load_rgb(path)
        assert got.dtype == np.uint8 and got.shape == (45, 70, 3), name
        assert np.array_equal(got, np.asarray(data.to_rgb(data.open_image(path)))), name


def test_load_rgb_in_strips_applies_orientation(tmp_path, smooth, monkeypatch):
    monkeypatch.setattr("encoder._imagefile.STRIP_PIXELS", 300)
    rgb = smooth(5, size=(40, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: the upright image is 30 wide, 40 high
    path = tmp_path / "rotated.png"
    Image.fromarray(rgb).save(path, exif=exif)
    got = data.load_rgb(path)
    assert got.shape == (40, 30, 3)
    assert np.array_equal(got, np.asarray(data.to_rgb(data.open_image(path))))


def test_load_rgb_names_a_bad_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(data.ImageLoadError, match="broken.png"):
        data.load_rgb(bad)


def _numpy_peak(fn, *args) -> int:
    """Peak bytes numpy allocated (tracemalloc sees its arrays) while ``fn(*args)`` ran."""
    tracemalloc.start()
    try:
        fn(*args)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _quantize_and_measure(img: np.ndarray) -> None:
    q = quantize(img, 256)
    metrics.psnr(img, q.image())
    mean_ciede2000(img, q.palette, q.labels)


def test_quantize_memory_per_pixel():
    """The memory quantize (and its PSNR and exact CIEDE2000) add per pixel, the image itself aside: one image
    and the same tiled 2 x 2 (the same colours, so the costs per colour are equal and cancel).
    At most 4,096 colours, so that the per-pixel steps hold the peak at both sizes. The packed
    pixels, their sorted copy, the labels and chunk temporaries: under 8 bytes a pixel (the
    whole-array steps took 20, 51 with PSNR and CIEDE2000 over every pixel)."""
    rng = np.random.default_rng(6)
    small = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    one = np.asarray(Image.fromarray(small).resize((1200, 850), Image.Resampling.BICUBIC)) & np.uint8(0xF0)
    four = np.tile(one, (2, 2, 1))
    quantize(one[:8, :8], 4)  # the per-thread lookup table exists before the measurements
    extra = four.shape[0] * four.shape[1] - one.shape[0] * one.shape[1]
    for run in (lambda img: quantize(img, 256), _quantize_and_measure):
        assert (_numpy_peak(run, four) - _numpy_peak(run, one)) / extra < 8.0

"""encoder.hashing.lanczos: Pillow's LANCZOS resize of grey images, bit for bit."""

from pathlib import Path

import numpy as np
import pytest
import skimage
from PIL import Image

from encoder.hashing import lanczos as resample
from encoder.hashing.lanczos import coefficients, lanczos_resize

PHOTO = Path(skimage.__file__).parent / "data" / "astronaut.png"


def pillow(a: np.ndarray, size) -> np.ndarray:
    return np.asarray(Image.fromarray(a).resize(size, Image.Resampling.LANCZOS))


def shapes():
    rng = np.random.default_rng(1)
    fixed = [
        (427, 640),
        (640, 427),
        (32, 32),
        (33, 31),
        (10, 10),
        (1, 1),
        (2, 7),
        (1, 3000),
        (3000, 1),
        (4000, 30),
        (31, 1000),
        (64, 64),
        (1411, 1411),
        (3000, 4000),
    ]
    return fixed + [tuple(int(v) for v in rng.integers(1, 1500, 2)) for _ in range(40)]


@pytest.mark.parametrize("shape", shapes())
def test_equals_pillow_on_noise_and_ramps(shape):
    h, w = shape
    rng = np.random.default_rng(h * 10007 + w)
    noise = rng.integers(0, 256, shape, dtype=np.uint8)  # worst case: overshoot, clipping
    ramp = (np.add.outer(np.arange(h), np.arange(w)) * 255 // max(1, h + w - 2)).astype(np.uint8)
    for a in (noise, ramp):
        for size in [(32, 32), (9, 8), (8, 8), (w, 32), (32, h), (57, 3)]:
            np.testing.assert_array_equal(lanczos_resize(a, size), pillow(a, size), err_msg=f"{shape} -> {size}")


def test_equals_pillow_on_a_photo_and_after_caching():
    grey = np.asarray(Image.open(PHOTO).convert("L"))
    for _ in range(2):  # second round uses the cached weights
        for size in [(32, 32), (9, 8), (8, 8), (100, 37)]:
            np.testing.assert_array_equal(lanczos_resize(grey, size), pillow(grey, size))


def test_float64_fallback_is_exact_too(monkeypatch):
    import torch

    monkeypatch.delattr(torch, "_int_mm")
    rng = np.random.default_rng(3)
    for shape in [(427, 640), (5, 900), (2000, 15)]:
        a = rng.integers(0, 256, shape, dtype=np.uint8)
        np.testing.assert_array_equal(lanczos_resize(a, (32, 32)), pillow(a, (32, 32)))


def test_weights_are_pillows_fixed_point():
    ints, xmin, n = coefficients(640, 32)
    # each output's weights sum to 1.0 in 22-bit fixed point, up to the rounding of each weight
    assert np.all(np.abs(ints.sum(1) - (1 << 22)) <= n)
    assert xmin[0] == 0 and xmin[-1] + n[-1] == 640
    assert resample._plan(640, 32)[1].shape == (32,)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="uint8"):
        lanczos_resize(np.zeros((4, 4), np.float32), (2, 2))
    with pytest.raises(ValueError, match="shape"):
        lanczos_resize(np.zeros((4, 4, 3), np.uint8), (2, 2))
    with pytest.raises(ValueError, match="positive"):
        lanczos_resize(np.zeros((4, 4), np.uint8), (0, 2))
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    out = lanczos_resize(a, (4, 3))
    assert np.array_equal(out, a) and out is not a

"""Small images shared by the palette tests."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="package")
def photo(astronaut) -> np.ndarray:
    """A real photo, downscaled to 128x128 to keep the tests fast: (128, 128, 3) uint8."""
    return np.asarray(Image.fromarray(astronaut).resize((128, 128), Image.Resampling.BILINEAR))


def _smooth(seed: int, size=(48, 40)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize(size, Image.Resampling.BICUBIC))


@pytest.fixture(scope="package")
def smooth() -> Callable[..., np.ndarray]:
    """``smooth(seed, size=(w, h))``: a smooth seeded colour image (h, w, 3) uint8 (bicubic 5x5 noise)."""
    return _smooth

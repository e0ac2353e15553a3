"""Fixtures shared by the whole suite (tests mirror the package: tests/ae, tests/hashing, ...).

Every test makes its own small, seeded data; nothing is downloaded. Real photos come from the
scikit-image and scikit-learn wheels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skimage

SKIMAGE_DATA = Path(skimage.__file__).parent / "data"


@pytest.fixture(scope="session")
def skimage_data() -> Path:
    """The folder of sample photos shipped in the scikit-image wheel (astronaut.png, ...)."""
    return SKIMAGE_DATA


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """scikit-image's astronaut photo, (512, 512, 3) uint8 RGB."""
    from PIL import Image

    return np.asarray(Image.open(SKIMAGE_DATA / "astronaut.png").convert("RGB"))

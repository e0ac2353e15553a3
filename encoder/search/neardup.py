"""The near-duplicate transform set shared by the hash benchmark and ``search.py evaluate --neardup``.

Each transform makes the kind of copy a near-duplicate search must still find: recompressed,
resized, cropped, brightened, blurred, mirrored, slightly rotated, or made grey.

Example:
    >>> from PIL import Image
    >>> im = Image.new("RGB", (100, 80), (120, 60, 30))
    >>> sorted(TRANSFORMS)[:3], TRANSFORMS["resize_50"](im).size
    (['blur', 'bright_+20', 'crop_90'], (50, 40))
"""
from __future__ import annotations

import io
from typing import Callable

from PIL import Image, ImageEnhance, ImageFilter


def jpeg(im: Image.Image, quality: int) -> Image.Image:
    """The image after a JPEG round trip at ``quality`` (decoded again)."""
    b = io.BytesIO()
    im.convert("RGB").save(b, "JPEG", quality=quality)
    b.seek(0)
    out = Image.open(b)
    out.load()
    return out


def _crop_90(im: Image.Image) -> Image.Image:
    """Centre crop keeping 90% of each side (5% off every edge)."""
    dx, dy = im.width // 20, im.height // 20
    return im.crop((dx, dy, im.width - dx, im.height - dy))


TRANSFORMS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "jpeg_q30": lambda im: jpeg(im, 30),
    "resize_50": lambda im: im.resize((max(1, im.width // 2), max(1, im.height // 2))),
    "crop_90": _crop_90,
    "bright_+20": lambda im: ImageEnhance.Brightness(im).enhance(1.2),
    "blur": lambda im: im.filter(ImageFilter.GaussianBlur(2)),
    "hflip": lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    "rotate_5": lambda im: im.rotate(5, resample=Image.Resampling.BILINEAR),
    "grey": lambda im: im.convert("L").convert("RGB"),
}

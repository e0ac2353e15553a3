"""The near-duplicate transform set shared by the hash benchmark and ``search.py evaluate --neardup``.

Each transform makes the kind of copy a near-duplicate search must still find: recompressed,
resized, cropped, brightened, blurred, mirrored, slightly rotated, or made grey; and the harder
copies of the wild: a phone-screen portrait crop, a half-area crop, a dark re-exposure, a
recoloured copy, a watermark banner. Every transform is a pure function of the image: the few
choices that vary (crop offsets, banner side) are seeded by the image size, never a global RNG.

Example:
    >>> from PIL import Image
    >>> im = Image.new("RGB", (100, 80), (120, 60, 30))
    >>> sorted(TRANSFORMS)[:3], TRANSFORMS["resize_50"](im).size
    (['aspect_9x16', 'blur', 'bright_+20'], (50, 40))
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable

from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont

PHONE_HEIGHT = 720


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


def _rng(im: Image.Image, salt: int) -> random.Random:
    """A generator seeded by the image size (and the transform's ``salt``): same image, same choice."""
    return random.Random(im.width * 1_000_003 + im.height * 7919 + salt)


def _aspect_9x16(im: Image.Image) -> Image.Image:
    """A phone screenshot: the centred 9:16 portrait part of the picture, resized to 720 px high."""
    w, h = im.size
    cw, ch = (min(w, round(h * 9 / 16)), h) if w * 16 >= h * 9 else (w, min(h, round(w * 16 / 9)))
    left, top = (w - cw) // 2, (h - ch) // 2
    out = im.crop((left, top, left + cw, top + ch))
    return out.resize((round(PHONE_HEIGHT * 9 / 16), PHONE_HEIGHT), Image.Resampling.BICUBIC)


def _crop50(im: Image.Image) -> Image.Image:
    """A re-framed copy: half of the area (each side x 0.707), off-centre towards a size-seeded corner."""
    w, h = im.size
    cw, ch = max(1, round(w * 0.5**0.5)), max(1, round(h * 0.5**0.5))
    r = _rng(im, 50)
    fx, fy = (r.choice((r.uniform(0, 0.25), r.uniform(0.75, 1))) for _ in range(2))
    left, top = round(fx * (w - cw)), round(fy * (h - ch))
    return im.crop((left, top, left + cw, top + ch))


_GAMMA_DARK = [min(255, round(255 * (i / 255) ** 2.2 * 0.6)) for i in range(256)]


def _gamma_dark(im: Image.Image) -> Image.Image:
    """An under-exposed copy: gamma 2.2 on [0,1] values, then brightness x 0.6 (one lookup table)."""
    return im.convert("RGB").point(_GAMMA_DARK * 3)


def _recolour(im: Image.Image) -> Image.Image:
    """A colour-graded copy: hue turned by 120 degrees, then red and blue swapped; edges stay where they were."""
    h, s, v = im.convert("RGB").convert("HSV").split()
    r, g, b = Image.merge("HSV", (h.point(lambda x: (x + 85) % 256), s, v)).convert("RGB").split()
    return Image.merge("RGB", (b, g, r))


def _overlay(im: Image.Image) -> Image.Image:
    """A watermarked copy: a semi-opaque dark banner over 15% of the height (top or bottom, size-seeded),
    with white text and a round logo drawn on it."""
    w, h = im.size
    bh = max(1, round(h * 0.15))
    top = 0 if _rng(im, 15).random() < 0.5 else h - bh
    layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    d.rectangle((0, top, w, top + bh), fill=(20, 20, 20, 170))
    pad = max(1, bh // 8)
    d.ellipse((pad, top + pad, bh - pad, top + bh - pad), fill=(230, 40, 40, 220))
    font = ImageFont.load_default(size=max(8, bh // 2))
    d.text((bh + pad, top + bh // 2), "(c) NEARDUP PHOTOS", fill=(255, 255, 255, 230), font=font, anchor="lm")
    return Image.alpha_composite(im.convert("RGBA"), layer).convert("RGB")


TRANSFORMS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "jpeg_q30": lambda im: jpeg(im, 30),
    "resize_50": lambda im: im.resize((max(1, im.width // 2), max(1, im.height // 2))),
    "crop_90": _crop_90,
    "bright_+20": lambda im: ImageEnhance.Brightness(im).enhance(1.2),
    "blur": lambda im: im.filter(ImageFilter.GaussianBlur(2)),
    "hflip": lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    "rotate_5": lambda im: im.rotate(5, resample=Image.Resampling.BILINEAR),
    "grey": lambda im: im.convert("L").convert("RGB"),
    "aspect_9x16": _aspect_9x16,
    "crop50": _crop50,
    "gamma_dark": _gamma_dark,
    "recolour": _recolour,
    "overlay": _overlay,
}

# The first eight: the original transform set; bench/phash_bench.py keeps using it so that its
# recall and dedup figures stay comparable with the earlier ones in docs/measured.md.
CLASSIC = ("jpeg_q30", "resize_50", "crop_90", "bright_+20", "blur", "hflip", "rotate_5", "grey")
CLASSIC_TRANSFORMS = {name: TRANSFORMS[name] for name in CLASSIC}

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


# ----------------------------------------------------------------------------- edits people make before sharing

SCREEN = (1920, 1080)
TITLE_BAR = 40  # px of the viewer window's title bar
GAMMA_FLIP_DARK = 1.8


def _screenshot(im: Image.Image) -> Image.Image:
    """A screenshot of a picture viewer: the picture at ~70% of a 1920x1080 window's area below a
    light title bar with text, on the viewer's dark background."""
    w, h = SCREEN
    scale = min(0.7 * w / im.width, 0.7 * (h - TITLE_BAR) / im.height)
    pic = im.convert("RGB").resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))))
    out = Image.new("RGB", SCREEN, (38, 38, 42))
    d = ImageDraw.Draw(out)
    d.rectangle((0, 0, w, TITLE_BAR), fill=(225, 225, 228))
    d.text(
        (16, TITLE_BAR // 2),
        "photo.jpg - Image Viewer",
        fill=(30, 30, 30),
        anchor="lm",
        font=ImageFont.load_default(20),
    )
    out.paste(pic, ((w - pic.width) // 2, TITLE_BAR + (h - TITLE_BAR - pic.height) // 2))
    return out


def _caption(im: Image.Image) -> Image.Image:
    """A captioned copy: an opaque black band over the bottom 15% with white text."""
    out = im.convert("RGB")
    d = ImageDraw.Draw(out)
    bh = max(1, round(out.height * 0.15))
    d.rectangle((0, out.height - bh, out.width, out.height), fill=(0, 0, 0))
    font = ImageFont.load_default(size=max(8, bh // 2))
    d.text((bh // 3, out.height - bh // 2), "Best day of the summer!", fill=(255, 255, 255), font=font, anchor="lm")
    return out


def _phone_crop(im: Image.Image) -> Image.Image:
    """A phone story: a full-height 9:16 window from the left part of the picture (its left edge in the
    first fifth of the free width, size-seeded), resized to 720x1280."""
    w, h = im.size
    cw, ch = (min(w, round(h * 9 / 16)), h) if w * 16 >= h * 9 else (w, min(h, round(w * 16 / 9)))
    left = round(_rng(im, 916).uniform(0, 0.2) * (w - cw))
    out = im.crop((left, (h - ch) // 2, left + cw, (h - ch) // 2 + ch))
    return out.resize((720, 1280), Image.Resampling.BICUBIC)


def _flip_dark(im: Image.Image) -> Image.Image:
    """Mirrored and darkened (gamma 1.8 on [0,1] values)."""
    lut = [round(255 * (i / 255) ** GAMMA_FLIP_DARK) for i in range(256)]
    return im.convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT).point(lut * 3)


def _corner_crop60(im: Image.Image) -> Image.Image:
    """60% of each side, at a size-seeded corner."""
    w, h = im.size
    cw, ch = max(1, round(w * 0.6)), max(1, round(h * 0.6))
    r = _rng(im, 60)
    left, top = (w - cw) * r.randint(0, 1), (h - ch) * r.randint(0, 1)
    return im.crop((left, top, left + cw, top + ch))


def _rotate3(im: Image.Image) -> Image.Image:
    """Turned by 3 degrees and cropped to the largest centred box without the turned-in corners."""
    w, h = im.size
    out = im.convert("RGB").rotate(3, resample=Image.Resampling.BICUBIC)
    s, c = 0.0523, 0.9986  # sin, cos of 3 degrees
    # the centred box of the picture's aspect that fits inside the turned rectangle
    f = 1 / (c + s * max(w / h, h / w))
    cw, ch = round(w * f), round(h * f)
    return out.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch))


def _sepia(im: Image.Image) -> Image.Image:
    """A sepia filter with raised contrast (x1.3) and a vignette darkening the corners to 45%."""
    g = ImageEnhance.Contrast(im.convert("L")).enhance(1.3)
    out = Image.merge("RGB", [g.point(lambda v, m=m: min(255, round(v * m))) for m in (1.07, 0.87, 0.62)])
    w, h = out.size
    mask = Image.radial_gradient("L").resize((w, h))  # 0 at the centre, 255 at the corners' circle
    dark = Image.new("RGB", (w, h), (0, 0, 0))
    return Image.composite(dark, out, mask.point(lambda v: round(min(255, v * 1.1) * 0.55)))


def _thumbnail_q20(im: Image.Image) -> Image.Image:
    """A 256 px (long side) thumbnail saved at JPEG quality 20."""
    t = im.convert("RGB")
    t.thumbnail((256, 256), Image.Resampling.BICUBIC)
    return jpeg(t, 20)


#: Edits people make to a photo before they share it (the album of bench/album_bench.py and
#: ``search.py evaluate --neardup --edits album``).
ALBUM_EDITS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "screenshot": _screenshot,
    "caption": _caption,
    "phone_crop": _phone_crop,
    "turn_90": lambda im: im.transpose(Image.Transpose.ROTATE_90),
    "flip_dark": _flip_dark,
    "corner_crop60": _corner_crop60,
    "rotate_3": _rotate3,
    "sepia": _sepia,
    "thumbnail_q20": _thumbnail_q20,
}

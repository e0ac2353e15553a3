"""Few-colour test images rendered from code (no files): graphics, a screenshot, a chart, a
near-flat wallpaper. Each is dominated by a few exact colours with a long tail of edge and
gradient colours, the kind where k-means on a coarse colour histogram did worst."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

SS = 4  # supersampling factor: edges get anti-aliased tails of in-between colours


def _finish(big: Image.Image, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(big.resize(size, Image.Resampling.LANCZOS).convert("RGB"))


def _gradient(w: int, h: int, top, bottom) -> Image.Image:
    t = np.linspace(0.0, 1.0, h)[:, None, None]
    arr = np.rint(np.asarray(top, float) * (1 - t) + np.asarray(bottom, float) * t)
    return Image.fromarray(np.repeat(arr, w, axis=1).astype(np.uint8), "RGB")


def illustration(size=(1600, 1000), seed: int = 0) -> np.ndarray:
    """Flat shapes in a few colours over a sky gradient and flat ground."""
    rng = np.random.default_rng(seed)
    W, H = size[0] * SS, size[1] * SS
    im = Image.new("RGB", (W, H), (236, 226, 198))
    im.paste(_gradient(W, H // 2, (255, 176, 120), (255, 226, 170)), (0, 0))
    d = ImageDraw.Draw(im)
    d.ellipse([W * 0.62, H * 0.12, W * 0.78, H * 0.38], fill=(255, 244, 214))
    hills = [(64, 120, 90), (44, 96, 72), (30, 70, 60)]
    for i, col in enumerate(hills):
        base = H * (0.5 + 0.1 * i)
        xs = np.linspace(-0.1, 1.1, 9) * W
        ys = base - rng.uniform(0.05, 0.2, 9) * H
        d.polygon([(0, H)] + list(zip(xs, ys)) + [(W, H)], fill=col)
    for _ in range(7):
        x, y, r = rng.uniform(0.05, 0.95) * W, rng.uniform(0.6, 0.9) * H, rng.uniform(0.02, 0.05) * W
        d.rectangle([x - r * 0.12, y, x + r * 0.12, y + r * 1.5], fill=(92, 58, 40))
        d.ellipse([x - r, y - r * 1.6, x + r, y + r * 0.4], fill=(24, 110, 60))
    return _finish(im, size)


def screenshot(size=(1440, 900), seed: int = 1) -> np.ndarray:
    """A desktop app window: flat panels, buttons, anti-aliased text, a small photo."""
    rng = np.random.default_rng(seed)
    W, H = size
    im = Image.new("RGB", (W, H), (246, 246, 248))
    d = ImageDraw.Draw(im)
    d.rectangle([0, 0, W, 44], fill=(44, 48, 56))
    d.rectangle([0, 44, 260, H], fill=(232, 234, 238))
    font = ImageFont.load_default(size=15)
    big = ImageFont.load_default(size=26)
    d.text((16, 10), "encoder - results", fill=(235, 235, 240), font=big)
    for i in range(14):
        y = 64 + 34 * i
        if i == 3:
            d.rectangle([0, y - 6, 260, y + 24], fill=(52, 120, 246))
        d.text(
            (24, y),
            f"Folder {i + 1:02d}  ({rng.integers(10, 999)})",
            font=font,
            fill=(255, 255, 255) if i == 3 else (40, 40, 48),
        )
    for r in range(6):
        for c in range(4):
            x, y = 290 + c * 280, 70 + r * 135
            d.rounded_rectangle([x, y, x + 260, y + 120], 10, fill=(255, 255, 255), outline=(214, 216, 222))
            d.text((x + 14, y + 12), f"image_{r * 4 + c:03d}.png", font=font, fill=(30, 30, 36))
            d.text((x + 14, y + 40), f"distance {rng.uniform(0, 1):.4f}", font=font, fill=(110, 112, 120))
            d.rounded_rectangle([x + 150, y + 80, x + 248, y + 108], 6, fill=(52, 120, 246))
            d.text((x + 170, y + 85), "Open", font=font, fill=(255, 255, 255))
    yy, xx = np.mgrid[0:96, 0:128]
    thumb = np.dstack([(xx * 2) % 256, (yy * 2 + xx) % 256, 255 - (yy * 2) % 256]).astype(np.uint8)
    im.paste(Image.fromarray(thumb).filter(ImageFilter.GaussianBlur(2)), (W - 150, H - 120))
    return np.asarray(im)


def chart(size=(1200, 800), seed: int = 2) -> np.ndarray:
    """A line chart with a legend and grid, drawn anti-aliased."""
    rng = np.random.default_rng(seed)
    W, H = size[0] * SS, size[1] * SS
    im = Image.new("RGB", (W, H), (255, 255, 255))
    d = ImageDraw.Draw(im)
    for i in range(11):
        x = int(W * (0.1 + 0.08 * i))
        d.line([(x, H * 0.1), (x, H * 0.9)], fill=(226, 226, 226), width=SS)
        y = int(H * (0.1 + 0.08 * i))
        d.line([(W * 0.1, y), (W * 0.9, y)], fill=(226, 226, 226), width=SS)
    d.rectangle([W * 0.1, H * 0.1, W * 0.9, H * 0.9], outline=(40, 40, 40), width=2 * SS)
    colours = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]
    xs = np.linspace(W * 0.1, W * 0.9, 60)
    for j, col in enumerate(colours):
        ys = H * (0.5 + 0.3 * np.sin(xs / W * (3 + j) + j) * rng.uniform(0.5, 1.0))
        d.line(list(zip(xs, ys)), fill=col, width=3 * SS, joint="curve")
        d.rectangle([W * 0.72, H * (0.13 + 0.05 * j), W * 0.76, H * (0.16 + 0.05 * j)], fill=col)
    font = ImageFont.load_default(size=14 * SS)
    for j in range(5):
        d.text((W * 0.77, H * (0.125 + 0.05 * j)), f"series {j}", fill=(20, 20, 20), font=font)
    return _finish(im, size)


def wallpaper(size=(1920, 1080), seed: int = 3) -> np.ndarray:
    """A near-flat wallpaper: a faint two-tone gradient with a soft glow and a flat logo."""
    W, H = size
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    base = np.array([22, 60, 98]) + (np.array([34, 86, 130]) - np.array([22, 60, 98])) * (yy / H)[..., None]
    glow = np.exp(-(((xx - W * 0.3) / (W * 0.25)) ** 2 + ((yy - H * 0.4) / (H * 0.3)) ** 2))[..., None]
    arr = base + glow * np.array([18, 30, 40])
    arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    big = Image.fromarray(arr).resize((W * 2, H * 2), Image.Resampling.NEAREST)
    d = ImageDraw.Draw(big)
    cx, cy, r = W * 1.0, H * 1.0, H * 0.3
    d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(240, 240, 240))
    d.ellipse([cx - r * 0.6, cy - r * 0.6, cx + r * 0.6, cy + r * 0.6], fill=(215, 10, 83))
    d.rectangle([cx - r * 0.15, cy - r * 1.6, cx + r * 0.15, cy - r * 1.05], fill=(240, 240, 240))
    return _finish(big, size)


IMAGES = {"illustration": illustration, "screenshot": screenshot, "chart": chart, "wallpaper": wallpaper}

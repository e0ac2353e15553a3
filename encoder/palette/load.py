"""Read an image file for the palette path in strips: the pixels of :func:`encoder.data.load_rgb`, in less memory.

``load_rgb`` converts the decoded image to RGB whole and lets numpy copy it out of Pillow, which
holds the decoded image, its RGB copy (4 bytes per pixel in Pillow) and two byte copies of that
at once: 11 bytes per pixel at the peak. Here the RGB conversion and the copy run on strips of
``STRIP_PIXELS`` pixels into one preallocated (H, W, 3) array: the decoded image plus 3 bytes per
pixel. Modes whose conversion looks at the whole image (16-bit, 32-bit and float grey are scaled
by their range) are converted whole, as ``load_rgb`` does.

Example::

    >>> rgb = read_rgb("scan.png")          # (H, W, 3) uint8, equal to encoder.data.load_rgb's
"""

from __future__ import annotations

import os

import numpy as np

from encoder import data

STRIP_PIXELS = 1 << 20
# modes whose conversion to RGB is pixel by pixel (a strip converts as the whole image would)
PER_PIXEL_MODES = frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"})


def read_rgb(
    path: str | os.PathLike,
    *,
    max_pixels: int | None = data.DEFAULT_MAX_PIXELS,
    background: tuple[int, int, int] = data.DEFAULT_BACKGROUND,
) -> np.ndarray:
    """``path`` as an (H, W, 3) uint8 RGB array, equal to ``encoder.data.load_rgb(path)``.

    Raises what :func:`encoder.data.open_image` raises (``ImageLoadError`` naming the file).
    """
    with data.guarded(path), data.time_limit(data.DEFAULT_TIMEOUT):  # a conversion's refusal names the file too
        im = data.open_image(path, max_pixels=max_pixels, timeout=None)
        if im.mode not in PER_PIXEL_MODES:
            return np.asarray(data.to_rgb(im, background))
        w, h = im.size
        out = np.empty((h, w, 3), np.uint8)
        rows = max(1, STRIP_PIXELS // w)
        for y in range(0, h, rows):
            out[y : y + rows] = np.asarray(data.to_rgb(im.crop((0, y, w, min(h, y + rows))), background))
        return out


__all__ = ["read_rgb", "STRIP_PIXELS"]

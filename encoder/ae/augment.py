"""Batched image augmentations on the training device: the second view of the two-view loss.

:func:`augment` turns a batch ``(N,1,S,S)`` of grey images in [0,1] into copies a near-duplicate
search must still match, each image with its own random draw, in a handful of tensor operations
(no per-image Python loop), on whatever device the batch is on (a GPU when training has one):

* geometry: a random resized crop (a share of the area in ``crop_area``, the aspect ratio changed
  by up to ``aspect`` times either way, so a 9:16 crop of a 16:9 picture is in the range), a
  horizontal flip, a small rotation; one ``affine_grid`` + ``grid_sample``;
* tone: gamma, brightness, contrast and a non-monotone wiggle of the tone curve (a dark re-exposure,
  or a recolouring that turns colours into other greys);
* degradation: blur, a down-and-up resize (what JPEG and rescaling leave), noise;
* an overlay: a semi-opaque dark banner over the top or bottom of the picture, with bright marks.

The draws use the torch RNG (seeded runs repeat). :data:`PRESETS` holds the named strengths a
config picks with ``model.augment`` ("shift" keeps the old shift-only view).

Example:
    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> x = torch.rand(4, 1, 64, 64)
    >>> y = augment(x, PRESETS["strong"])
    >>> y.shape, bool(y.min() >= 0), bool(y.max() <= 1)
    (torch.Size([4, 1, 64, 64]), True, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augmentation:
    """Ranges of the random draws (0 switches an operation off)."""

    crop_area: tuple[float, float] = (0.25, 1.0)  # share of the picture a crop keeps
    aspect: float = 3.0  # aspect change up to x3 either way
    flip: float = 0.5  # probability of a horizontal flip
    rotate: float = 10.0  # degrees, either way
    gamma: float = 1.0  # log-gamma in [-gamma, gamma]
    brightness: float = 0.4  # factor in [1 - b, 1 + b/2]
    contrast: float = 0.4  # factor in [1 - c, 1 + c]
    wiggle: float = 0.12  # amplitude of sin(2 pi v) added to the tone curve
    blur: float = 0.3  # probability of a blur
    downscale: float = 0.3  # probability of a down-and-up resize
    noise: float = 0.03  # largest noise standard deviation
    overlay: float = 0.2  # probability of a banner


PRESETS: dict[str, Augmentation | None] = {
    "shift": None,
    "light": Augmentation(
        crop_area=(0.6, 1.0),
        aspect=1.5,
        rotate=5.0,
        gamma=0.5,
        brightness=0.2,
        contrast=0.2,
        wiggle=0.05,
        blur=0.2,
        downscale=0.2,
        noise=0.02,
        overlay=0.1,
    ),
    "strong": Augmentation(),
}


def _uniform(n: int, lo: float, hi: float, device) -> torch.Tensor:
    return torch.rand(n, device=device) * (hi - lo) + lo


def _geometry(x: torch.Tensor, a: Augmentation) -> torch.Tensor:
    n, dev = len(x), x.device
    area = _uniform(n, *a.crop_area, dev)
    log_r = _uniform(n, -math.log(a.aspect), math.log(a.aspect), dev) if a.aspect > 1 else torch.zeros(n, device=dev)
    sw = (area * log_r.exp()).sqrt().clamp(max=1.0)  # half-widths in grid units (1 = whole side)
    sh = (area / log_r.exp()).sqrt().clamp(max=1.0)
    cx = (torch.rand(n, device=dev) * 2 - 1) * (1 - sw)
    cy = (torch.rand(n, device=dev) * 2 - 1) * (1 - sh)
    ang = _uniform(n, -a.rotate, a.rotate, dev) * (math.pi / 180)
    flip = torch.where(torch.rand(n, device=dev) < a.flip, -1.0, 1.0)
    cos, sin = ang.cos(), ang.sin()
    theta = torch.stack(
        [torch.stack([sw * cos * flip, -sh * sin, cx], 1), torch.stack([sw * sin * flip, sh * cos, cy], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # zeros outside the picture: a rotated copy has black corners, as Pillow's rotate leaves them
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _tone(x: torch.Tensor, a: Augmentation) -> torch.Tensor:
    n, dev = len(x), x.device
    shape = (n, 1, 1, 1)
    g = _uniform(n, -a.gamma, a.gamma, dev).exp().view(shape)
    x = x.clamp_min(1e-4) ** g
    x = x + _uniform(n, -a.wiggle, a.wiggle, dev).view(shape) * torch.sin(2 * math.pi * x)
    mean = x.mean((1, 2, 3), keepdim=True)
    x = (x - mean) * _uniform(n, 1 - a.contrast, 1 + a.contrast, dev).view(shape) + mean
    return x * _uniform(n, 1 - a.brightness, 1 + a.brightness / 2, dev).view(shape)


def _some(x: torch.Tensor, p: float, changed: torch.Tensor) -> torch.Tensor:
    """``changed`` where a coin with probability ``p`` says so, else ``x``."""
    pick = (torch.rand(len(x), device=x.device) < p).view(-1, 1, 1, 1)
    return torch.where(pick, changed, x)


def _blur(x: torch.Tensor) -> torch.Tensor:
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], device=x.device, dtype=x.dtype) / 16
    x = F.conv2d(F.pad(x, (2, 2, 0, 0), mode="reflect"), k.view(1, 1, 1, 5))
    return F.conv2d(F.pad(x, (0, 0, 2, 2), mode="reflect"), k.view(1, 1, 5, 1))


def _down_up(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode="bilinear", align_corners=False)


def _overlay(x: torch.Tensor) -> torch.Tensor:
    n, _, h, w = x.shape
    dev = x.device
    height = _uniform(n, 0.1, 0.2, dev).view(n, 1, 1, 1)
    rows = (torch.arange(h, device=dev, dtype=x.dtype) + 0.5).view(1, 1, h, 1) / h
    top = (torch.rand(n, device=dev) < 0.5).view(n, 1, 1, 1)
    band = torch.where(top, rows < height, rows > 1 - height)
    alpha = _uniform(n, 0.4, 0.8, dev).view(n, 1, 1, 1)
    shade = _uniform(n, 0.0, 0.2, dev).view(n, 1, 1, 1)
    marks = band & (torch.rand(n, 1, h // 4, w // 4, device=dev).repeat_interleave(4, 2).repeat_interleave(4, 3) < 0.25)
    out = torch.where(band, x * (1 - alpha) + alpha * shade, x)
    return torch.where(marks, torch.ones_like(x) * 0.95, out)


def augment(x: torch.Tensor, a: Augmentation) -> torch.Tensor:
    """A randomly transformed copy of ``x`` ``(N,1,S,S)`` in [0,1] (see the module docstring)."""
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"augment expects a grey batch (N,1,S,S), got shape {tuple(x.shape)}")
    x = _geometry(x.float(), a)
    x = _tone(x, a).clamp(0, 1)
    if a.blur > 0:
        x = _some(x, a.blur, _blur(x))
    if a.downscale > 0 and x.shape[-1] % 2 == 0 and x.shape[-2] % 2 == 0:
        x = _some(x, a.downscale, _down_up(x))
    if a.overlay > 0:
        x = _some(x, a.overlay, _overlay(x))
    if a.noise > 0:
        x = x + torch.randn_like(x) * _uniform(len(x), 0, a.noise, x.device).view(-1, 1, 1, 1)
    return x.clamp(0, 1)

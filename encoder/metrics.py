"""Image quality metrics shared by training, reconstruction, palettes and benchmarks.

One :func:`psnr` for every caller, one convention: identical images give ``inf``, the
peak is ``data_range`` (default: 255 for uint8 arrays, 65535 for uint16, else 1.0), and
the arrays may be numpy arrays or torch tensors (the result is of the same library).

Example:
    >>> import numpy as np
    >>> a = np.zeros((2, 4, 4), np.uint8); b = a.copy(); b[1] = 255
    >>> psnr(a[0], b[0])
    inf
    >>> psnr(a, b, per_image=True).tolist()
    [inf, 0.0]
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def _peak(x: Any, data_range: float | None) -> float:
    if data_range is not None:
        if data_range <= 0:
            raise ValueError(f"data_range={data_range} must be > 0")
        return float(data_range)
    dtype = getattr(x, "dtype", None)
    if str(dtype) in ("uint8", "torch.uint8"):
        return 255.0
    if str(dtype) in ("uint16", "torch.uint16"):
        return 65535.0
    return 1.0


def psnr(a: Any, b: Any, *, data_range: float | None = None, per_image: bool = False):
    """Peak signal-to-noise ratio in dB.

    Args:
        a, b: images of one shape, numpy arrays or torch tensors (uint8 or float).
        data_range: the peak value; default 255 for uint8, 65535 for uint16, else 1.0.
        per_image: the first axis is a batch: return one PSNR per image, ``(N,)``.

    Returns:
        A float (numpy input, ``per_image=False``), an ``(N,)`` float64 array, or for torch
        input a float tensor (scalar or ``(N,)``). ``inf`` where the images are equal.
    """
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"psnr needs images of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    peak = _peak(a, data_range)
    if type(a).__module__.startswith("torch"):
        import torch

        d = a.double() - b.double()
        mse = d.flatten(1).pow(2).mean(1) if per_image else d.pow(2).mean()
        return (10 * torch.log10(peak * peak / mse)).float()  # x / 0 -> inf, as numpy below
    if per_image:
        d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
        mse = (d * d).reshape(len(d), -1).mean(1)
        with np.errstate(divide="ignore"):
            return 10 * np.log10(peak * peak / mse)
    mse = _mse(np.asarray(a).reshape(-1), np.asarray(b).reshape(-1))
    return math.inf if mse == 0 else 10.0 * math.log10(peak * peak / mse)


def _mse(a: np.ndarray, b: np.ndarray, chunk: int = 1 << 20) -> float:
    """Mean squared difference of two flat arrays, ``chunk`` values at a time in float64.

    Chunks keep the float64 copies at 8 MB each: whole arrays cost 32 bytes per value (two
    copies, the difference and its square: 3.4 GB for a 35 MP RGB image).
    """
    if len(a) == 0:
        return math.nan  # as numpy's mean of nothing, without its warning
    total = 0.0
    for s in range(0, len(a), chunk):
        d = a[s : s + chunk].astype(np.float64) - b[s : s + chunk].astype(np.float64)
        total += float(np.dot(d, d))
    return total / len(a)


def ssim(a: np.ndarray, b: np.ndarray, sigma: float = 1.5, win: int = 11) -> np.ndarray:
    """Per-image SSIM of ``(N, S, S)`` arrays in [0, 1] -> ``(N,)`` float64.

    Wang et al. 2004: Gaussian window 11/1.5, K1=0.01, K2=0.03, data range 1. Matches
    ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1)`` (checked in tests).
    """
    import torch  # the separable blur as two small convolutions
    import torch.nn.functional as F

    x = torch.as_tensor(np.asarray(a, np.float64)).unsqueeze(1)
    y = torch.as_tensor(np.asarray(b, np.float64)).unsqueeze(1)
    r = win // 2
    g = torch.exp(-(torch.arange(-r, r + 1, dtype=torch.float64) ** 2) / (2 * sigma**2))
    g = g / g.sum()
    kh, kv = g.view(1, 1, 1, -1), g.view(1, 1, -1, 1)

    def blur(t):
        return F.conv2d(F.conv2d(t, kh), kv)  # valid region only, as skimage crops the border

    c1, c2 = 0.01**2, 0.03**2
    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1).numpy()


__all__ = ["psnr", "ssim"]

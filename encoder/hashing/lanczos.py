"""Pillow's LANCZOS resize of 8-bit grey images, bit for bit, as integer matrix products.

``imagehash`` (and so :mod:`encoder.hashing.hashes`) shrinks every image to 32x32 with Pillow's
LANCZOS filter. Pillow runs that filter as a scalar C loop in 22-bit fixed point: a
horizontal pass (each output column a weighted sum of about 6 * W/32 input columns,
rounded and clipped to 0..255), then a vertical pass the same way. On photos that costs
more than decoding the JPEG's luma does.

Here the same integer weights (computed as Pillow's ``precompute_coeffs`` and
``normalize_coeffs_8bpc`` do) are applied as int8 x int8 -> int32 matrix products
(``torch._int_mm``, which uses the CPU's int8 dot-product instructions): pixels are
stored as ``p - 128`` in int8 and each 23-bit weight as four signed base-128 digits, so
every partial sum is an exact integer and the recombined sums equal Pillow's. After
Pillow's rounding (``(sum + 2**21) >> 22``, clipped to 0..255) the result is the same
uint8 array ``Image.resize`` returns, including its choice of pass order (pinned against
Pillow in tests/hashing/test_lanczos.py). Where ``torch._int_mm`` is unavailable the same sums
are taken in float64, which is also exact (every sum is an integer below 2**53).

Example:
    >>> import numpy as np
    >>> from PIL import Image
    >>> a = np.random.default_rng(0).integers(0, 256, (427, 640), dtype=np.uint8)
    >>> out = lanczos_resize(a, (32, 32))
    >>> bool((out == np.asarray(Image.fromarray(a).resize((32, 32), Image.Resampling.LANCZOS))).all())
    True
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from functools import lru_cache

import numpy as np

PRECISION_BITS = 32 - 8 - 2  # Pillow's Resample.c
_SUPPORT = 3.0  # LANCZOS (a = 3)
_DIGITS = 4  # signed base-128 digits per weight: |weight| < 2**24 fits with room to spare
_GROUP = 8  # outputs per matrix product when the input is much wider than one output's window


def _lanczos(x: np.ndarray) -> np.ndarray:
    """Pillow's ``lanczos_filter`` (sinc(x) * sinc(x / 3) on [-3, 3)), vectorised.

    One ``sin`` per weight: sin(pi x) = sin(3 t) = s (3 - 4 s**2) with s = sin(pi x / 3).
    Accurate to about 1e-15, far below what could change a rounded 22-bit weight except
    at exact ties, which :func:`coefficients` recomputes with the C library's ``sin``.
    """
    t = x * (math.pi / 3.0)
    s = np.sin(t)
    with np.errstate(invalid="ignore", divide="ignore"):
        w = s * s * (3.0 - 4.0 * s * s) / (3.0 * t * t)  # sinc(x) * sinc(x / 3)
    w[x == 0.0] = 1.0
    w[(x < -3.0) | (x >= 3.0)] = 0.0
    return w


def _lanczos_c(x: float) -> float:
    """The same filter through the C library's ``sin`` (what Pillow calls)."""
    if not -3.0 <= x < 3.0:
        return 0.0
    s1 = 1.0 if x == 0.0 else math.sin(x * math.pi) / (x * math.pi)
    y = x / 3
    s3 = 1.0 if y == 0.0 else math.sin(y * math.pi) / (y * math.pi)
    return s1 * s3


@lru_cache(maxsize=128)
def coefficients(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pillow's integer LANCZOS weights for resizing ``in_size`` -> ``out_size`` samples.

    Returns ``(weights (out_size, ksize) int64, xmin (out_size,), n (out_size,))``: output
    ``j`` is ``sum_t weights[j, t] * x[xmin[j] + t]`` over ``t < n[j]``, before rounding.
    The weights are Pillow's 22-bit fixed-point integers.
    """
    scale = float(in_size) / out_size
    filterscale = max(scale, 1.0)
    support = _SUPPORT * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    center = (np.arange(out_size, dtype=np.float64) + 0.5) * scale
    xmin = np.maximum((center - support + 0.5).astype(np.int64), 0)  # C (int) casts truncate
    n = np.minimum((center + support + 0.5).astype(np.int64), in_size) - xmin
    taps = np.arange(ksize)
    valid = taps[None, :] < n[:, None]
    w = np.where(valid, _lanczos((taps[None, :] + xmin[:, None] - center[:, None] + 0.5) * (1.0 / filterscale)), 0.0)
    ww = w.sum(1, keepdims=True)
    scaled = np.where(ww != 0.0, w / np.where(ww != 0.0, ww, 1.0), w) * float(1 << PRECISION_BITS)
    # Pillow rounds half away from zero through a C (int) cast. A weight within float noise
    # of .5 could round the other way if numpy's sin differs from the C library's by an
    # ulp, so such rows are recomputed with math.sin, summed in Pillow's order.
    near_half = np.abs(scaled - np.floor(scaled) - 0.5) < 1e-6
    for j in np.flatnonzero(near_half.any(1)):
        wj = [_lanczos_c((t + int(xmin[j]) - center[j] + 0.5) * (1.0 / filterscale)) for t in range(int(n[j]))]
        s = 0.0
        for v in wj:
            s += v
        scaled[j] = 0.0
        scaled[j, : len(wj)] = [(v / s if s != 0.0 else v) * float(1 << PRECISION_BITS) for v in wj]
    ints = np.where(scaled < 0, np.ceil(scaled - 0.5), np.floor(scaled + 0.5)).astype(np.int64)
    return ints, xmin, n


def _dense(in_size: int, out_size: int) -> tuple[np.ndarray, int]:
    """The weights as a dense (out_size, span) int64 matrix and the first input index."""
    ints, xmin, n = coefficients(in_size, out_size)
    lo, hi = int(xmin.min()), int((xmin + n).max())
    dense = np.zeros((out_size, hi - lo), np.int64)
    taps = np.arange(ints.shape[1])
    rows, cols = np.nonzero(taps[None, :] < n[:, None])
    dense[rows, xmin[rows] - lo + cols] = ints[rows, cols]
    return dense, lo


_PLANS: OrderedDict = OrderedDict()  # (in_size, out_size) -> _plan(...), least recently used first
_MAX_PLANS = 128
_PLANS_LOCK = threading.Lock()


def _plan(in_size: int, out_size: int):
    """:func:`_build_plan`, cached (the last ``_MAX_PLANS`` sizes)."""
    key = (in_size, out_size)
    with _PLANS_LOCK:
        plan = _PLANS.get(key)
        if plan is not None:
            _PLANS.move_to_end(key)
            return plan
    plan = _build_plan(in_size, out_size)
    with _PLANS_LOCK:
        _PLANS[key] = plan
        while len(_PLANS) > _MAX_PLANS:
            _PLANS.popitem(last=False)
    return plan


def _build_plan(in_size: int, out_size: int):
    """int8 digit matrices for :func:`_sums`: ``(groups, weight sums (out_size,) int64)``.

    ``groups`` lists ``(lo, hi, digits (hi - lo, g * _DIGITS) int8 torch tensor)`` for
    groups of ``g`` consecutive outputs: ``_GROUP`` when the input is much wider than a
    group's window (less work), else one group.
    """
    import torch

    ints, xmin, n = coefficients(in_size, out_size)
    ksize = ints.shape[1]
    first, last = int(xmin.min()), int((xmin + n).max())
    span = last - first
    window = (_GROUP - 1) * span / max(out_size - 1, 1) + ksize
    g = _GROUP if out_size > _GROUP and 2 * window < span else out_size
    # signed base-128 digits in [-64, 63]: weight = sum_i digit_i * 128**i
    rest, digits = ints, []
    for _ in range(_DIGITS):
        d = ((rest + 64) & 127) - 64
        digits.append(d)
        rest = (rest - d) >> 7
    if rest.any():
        raise ValueError(f"LANCZOS weight too large for {_DIGITS} int8 digits ({in_size} -> {out_size})")
    rows, taps = np.nonzero(np.arange(ksize)[None, :] < n[:, None])
    full = np.zeros((span, out_size, _DIGITS), np.int8)  # (input sample, output, digit)
    full[xmin[rows] - first + taps, rows] = np.stack(digits, axis=2)[rows, taps]
    groups = []
    for s in range(0, out_size, g):
        e = min(s + g, out_size)
        lo, hi = int(xmin[s]) - first, int((xmin[s:e] + n[s:e]).max()) - first
        mat = np.ascontiguousarray(full[lo:hi, s:e]).reshape(hi - lo, -1)  # columns [output, digit]
        groups.append((first + lo, first + hi, torch.from_numpy(mat)))
    return groups, ints.sum(1)


def _sums(x: np.ndarray, in_size: int, out_size: int, offset: int = 0) -> np.ndarray:
    """Exact weighted sums along axis 1 -> (m, out_size) int64.

    ``x`` (m, n) uint8 holds samples ``offset:offset + n`` of each length-``in_size`` row
    (all the samples the weights touch).
    """
    try:
        import torch

        mm = torch._int_mm
    except (ImportError, AttributeError):
        mm = None
    # int32 partial sums hold |p - 128| * |digit| <= 2**13 per tap: exact below 2**18 taps
    if mm is None or coefficients(in_size, out_size)[0].shape[1] >= 1 << 18:
        # float64 fallback, exact too: every sum is an integer below 2**53
        dense, lo = _dense(in_size, out_size)
        sub = np.asarray(x[:, lo - offset : lo - offset + dense.shape[1]], np.float64)
        return (sub @ dense.T.astype(np.float64)).astype(np.int64)
    groups, wsum = _plan(in_size, out_size)
    x8 = torch.from_numpy((x ^ np.uint8(0x80)).view(np.int8))  # p - 128, contiguous
    parts = [mm(x8[:, lo - offset : hi - offset], mat).numpy() for lo, hi, mat in groups]
    t = (parts[0] if len(parts) == 1 else np.concatenate(parts, 1)).reshape(len(x), out_size, _DIGITS)
    s = t[..., 3].astype(np.int64)  # Horner in base 128: sum of (p - 128) * weight
    for i in range(_DIGITS - 2, -1, -1):
        s <<= 7
        s += t[..., i]
    s += 128 * wsum
    return s


def _pass(x: np.ndarray, out_size: int, axis: int, in_size: int | None = None, offset: int = 0) -> np.ndarray:
    """One resampling pass of uint8 ``x`` along ``axis``, rounded and clipped as Pillow's clip8.

    ``x`` holds samples ``offset:offset + x.shape[axis]`` of an axis ``in_size`` long.
    """
    if axis == 0:
        return _pass(np.ascontiguousarray(x.T), out_size, 1, in_size, offset).T
    s = _sums(x, x.shape[1] if in_size is None else in_size, out_size, offset)
    s += 1 << (PRECISION_BITS - 1)
    s >>= PRECISION_BITS
    return np.clip(s, 0, 255).astype(np.uint8)


def lanczos_resize(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``Image.fromarray(a).resize(size, LANCZOS)`` for an (H, W) uint8 array, bit-identical.

    Args:
        a: (H, W) uint8 grey pixels.
        size: (width, height) of the result, as in Pillow.

    Returns:
        (height, width) uint8.
    """
    a = np.asarray(a)
    if a.ndim != 2 or a.dtype != np.uint8 or a.size == 0:
        raise ValueError(f"expected a non-empty (H, W) uint8 array, got shape={a.shape} dtype={a.dtype}")
    out_w, out_h = int(size[0]), int(size[1])
    if out_w < 1 or out_h < 1:
        raise ValueError(f"size must be positive, got {size}")
    h, w = a.shape
    if (out_w, out_h) == (w, h):
        return a.copy()
    if h > w * 100 and out_h < h:
        # Image.resize runs the vertical pass first for very tall images
        return _pass(_pass(a, out_h, 0), out_w, 1)
    x = a
    if out_w != w:
        if out_h != h:  # Pillow's horizontal pass covers only the rows the vertical one reads
            _, ymin, yn = coefficients(h, out_h)
            first, last = int(ymin[0]), int(ymin[-1] + yn[-1])
            return _pass(_pass(x[first:last], out_w, 1), out_h, 0, h, first)
        return _pass(x, out_w, 1)
    return _pass(x, out_h, 0)

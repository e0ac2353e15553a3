"""K-means colour quantization: fit a palette, assign every pixel, save an indexed PNG.

The k-means objective over all pixels equals a *weighted* k-means over the image's
distinct colours (each weighted by its pixel count), which is usually 2-10x smaller
than the pixel count, and the 6-bit-per-channel histogram cells (mean colour, pixel
count) are smaller still. So :func:`fit_palette` seeds on the cells (Var-Part, plus
k-means++ starts for K <= 64), runs Lloyd on them, then polishes with a few
over-relaxed Lloyd steps on the exact distinct colours. Every nearest-centre search
is faiss's fused k=1 kernel on CPU (torch on CUDA). The final per-pixel assignment is
exact: the nearest palette colour of each distinct colour, then a 2**24-entry lookup
table maps every pixel to its label.

Alpha: images are loaded by :mod:`encoder.data` and composited on white.

Example::

    >>> from encoder.data import load_rgb
    >>> rgb = load_rgb("photo.jpg")                 # (H, W, 3) uint8
    >>> q = quantize(rgb, k=16, seed=0)             # Quantized
    >>> q.palette.shape, q.labels.shape             # (16, 3) uint8, (H, W) uint8
    >>> png = q.png_bytes()                         # a real mode-"P" PNG
    >>> psnr(rgb, q.image())                        # dB
"""

from __future__ import annotations

import heapq
import io
import itertools
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Sequence

import faiss
import numpy as np
import torch
from PIL import Image

from encoder.metrics import psnr

K_MIN, K_MAX = 2, 256
DEFAULT_MAX_POINTS = 1 << 18  # more distinct colours than this: polish on 7-bit cells
# Measured on the 7 bench photos at K=256 (worst per-photo PSNR vs full-pixel k-means / mean
# s/MP on 2 cores, over-relaxation 1.95): polish 3 steps -0.07 dB / 0.084-0.097 s/MP, 4 steps
# -0.05 dB / about 0.01 s/MP more; stopping the cell-level Lloyd at a 1e-3 relative change instead of
# 1e-4 cost nothing; capping it at 8 steps cost 0.015 dB.
POLISH_ITER = 3  # over-relaxed Lloyd steps on the distinct colours after the fit on 6-bit cells
COARSE_ITER, COARSE_TOL = 30, 1e-3  # Lloyd on the 6-bit cells: at most, and relative inertia change
METHODS = ("kmeans", "random")
# K <= 64: best of N_INIT_SMALL_K starts (Var-Part + k-means++ seeds drawn on 5-bit cells).
# Measured on the bench photos (worst PSNR vs full k-means, mean s/MP): k-means++ on the 6-bit
# cells K=16 -0.06 dB / 0.104, K=64 -0.07 / 0.190; on 5-bit cells -0.07 / 0.097, -0.04 / 0.132;
# 4-bit cells K=64 -0.10; 2 starts instead of 3: K=16 -0.10.
KPP_BITS = 5
N_INIT_SMALL_K = 3


def check_k(k: int) -> int:
    """Return ``k`` as int if it is in [2, 256], else raise ``ValueError`` naming it."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not K_MIN <= int(k) <= K_MAX:
        raise ValueError(f"k={k!r} must be an integer in [{K_MIN}, {K_MAX}] (a PNG palette holds at most 256 colours)")
    return int(k)


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or image.size == 0:
        raise ValueError(f"image must be a non-empty (H, W, 3) uint8 array, got shape={image.shape} dtype={image.dtype}")
    return image


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# Threads for the nearest-centre searches on CPU (None: one per available core). A search of
# more than _PAR_MIN points is cut into chunks of _CHUNK that this thread and a small pool
# take in turn, each a one-thread faiss call: no OpenMP team, whose threads spin after each
# call (on this machine's 2 vCPUs the spinning slowed our numpy work between searches up to 2x,
# and with the other core busy every search waited for it). Measured on 2 cores, 7 bench photos
# at K=256, interleaved runs: 0.090 s/MP this way vs 0.092 with faiss's OpenMP threads and 0.116
# with one thread; with one core busy elsewhere 0.116 vs 0.121 and 0.113.
THREADS: int | None = None


# ----------------------------------------------------------------------------- colour sets

def pack(pixels: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 -> (N,) int32 colour ints ``r << 16 | g << 8 | b``."""
    p = pixels.astype(np.int32)
    return (p[:, 0] << 16) | (p[:, 1] << 8) | p[:, 2]


def unpack(codes: np.ndarray) -> np.ndarray:
    """(M,) int colour ints -> (M, 3) uint8."""
    codes = np.asarray(codes, dtype=np.int64)
    return np.stack([(codes >> 16) & 255, (codes >> 8) & 255, codes & 255], axis=1).astype(np.uint8)


def _unique_counts(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values of packed colour ints and their counts (int64).

    A sort, not a 2**24-bin bincount: measured 6 vs 11 ms at 2 MP (46 ms for the bincount in
    a real run, page faults on its fresh 134 MB array); at 16 MP 60 vs 43 ms before those.
    """
    u, c = np.unique(codes, return_counts=True)
    return u, c.astype(np.int64)


def distinct_colors(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct colours of ``pixels`` (N, 3) uint8 and their pixel counts.

    Returns ``(colors (M, 3) uint8, counts (M,) int64)``, colours sorted by packed value.
    Example: ``distinct_colors(np.array([[1,2,3],[1,2,3]], np.uint8))``
    -> ``([[1,2,3]], [2])``.
    """
    u, c = _unique_counts(pack(pixels))
    return unpack(u), c


def binned_colors(pixels: np.ndarray, bits: int = 6, counts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Histogram cells of ``bits`` per channel: (mean colour (M, 3) float64, weight (M,) float64).

    ``pixels`` (N, 3) uint8, each weighted by ``counts`` (default 1), so distinct colours
    with their pixel counts give the same cells as the pixels themselves.
    """
    p = np.asarray(pixels).astype(np.int32)
    w = np.ones(len(p)) if counts is None else np.asarray(counts, np.float64)
    s = 8 - bits
    cell = ((p[:, 0] >> s) << (2 * bits)) | ((p[:, 1] >> s) << bits) | (p[:, 2] >> s)
    n = np.bincount(cell, weights=w, minlength=1 << (3 * bits))
    nz = np.flatnonzero(n)
    sums = np.stack([np.bincount(cell, weights=p[:, c] * w, minlength=1 << (3 * bits))[nz] for c in range(3)], axis=1)
    return sums / n[nz, None], n[nz]


# ----------------------------------------------------------------------------- Lab, errors

def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (..., 3) uint8 (or float in [0, 255]) -> CIE Lab (..., 3) float64 (D65).

    Example: ``srgb_to_lab(np.array([255, 255, 255], np.uint8))`` -> ``[100, 0, 0]`` (approx.).
    """
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    m = np.array([[0.412453, 0.357580, 0.180423],
                  [0.212671, 0.715160, 0.072169],
                  [0.019334, 0.119193, 0.950227]])
    xyz = c @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    L = np.where(xyz[..., 1] > 0.008856, 116.0 * np.cbrt(xyz[..., 1]) - 16.0, 903.3 * xyz[..., 1])
    a = 500.0 * (f[..., 0] - f[..., 1])
    b = 200.0 * (f[..., 1] - f[..., 2])
    return np.stack([L, a, b], axis=-1)


def lab_to_srgb(lab: np.ndarray) -> np.ndarray:
    """CIE Lab (..., 3) float (D65) -> sRGB (..., 3) uint8 (clipped to the gamut)."""
    lab = np.asarray(lab, dtype=np.float64)
    fy = (lab[..., 0] + 16.0) / 116.0
    fx = fy + lab[..., 1] / 500.0
    fz = fy - lab[..., 2] / 200.0
    f = np.stack([fx, fy, fz], axis=-1)
    xyz = np.where(f > 0.206893, f ** 3, (f - 16.0 / 116.0) / 7.787) * np.array([0.95047, 1.0, 1.08883])
    m = np.array([[0.412453, 0.357580, 0.180423],
                  [0.212671, 0.715160, 0.072169],
                  [0.019334, 0.119193, 0.950227]])
    c = np.clip(xyz @ np.linalg.inv(m).T, 0.0, 1.0)
    c = np.where(c > 0.0031308, 1.055 * c ** (1 / 2.4) - 0.055, 12.92 * c)
    return np.clip(np.rint(c * 255.0), 0, 255).astype(np.uint8)


def ciede2000(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """CIEDE2000 colour difference between Lab arrays (..., 3) -> (...) float64 (kL=kC=kH=1).

    Follows Sharma, Wu & Dalal (2005). Example: identical colours give 0; a just
    noticeable difference is about 1-2.
    """
    L1, a1, b1 = np.moveaxis(np.asarray(lab1, np.float64), -1, 0)
    L2, a2, b2 = np.moveaxis(np.asarray(lab2, np.float64), -1, 0)
    C1, C2 = np.hypot(a1, b1), np.hypot(a2, b2)
    Cm7 = ((C1 + C2) / 2.0) ** 7
    G = 0.5 * (1.0 - np.sqrt(Cm7 / (Cm7 + 25.0 ** 7)))
    a1p, a2p = (1.0 + G) * a1, (1.0 + G) * a2
    C1p, C2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360.0
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360.0
    dLp = L2 - L1
    dCp = C2p - C1p
    dh = h2p - h1p
    dh = np.where(dh > 180.0, dh - 360.0, np.where(dh < -180.0, dh + 360.0, dh))
    zero = (C1p * C2p) == 0
    dh = np.where(zero, 0.0, dh)
    dHp = 2.0 * np.sqrt(C1p * C2p) * np.sin(np.radians(dh) / 2.0)
    Lpm = (L1 + L2) / 2.0
    Cpm = (C1p + C2p) / 2.0
    hs = h1p + h2p
    hpm = np.where(np.abs(h1p - h2p) <= 180.0, hs / 2.0, np.where(hs < 360.0, (hs + 360.0) / 2.0, (hs - 360.0) / 2.0))
    hpm = np.where(zero, hs, hpm)
    T = (1 - 0.17 * np.cos(np.radians(hpm - 30)) + 0.24 * np.cos(np.radians(2 * hpm))
         + 0.32 * np.cos(np.radians(3 * hpm + 6)) - 0.20 * np.cos(np.radians(4 * hpm - 63)))
    dtheta = 30.0 * np.exp(-(((hpm - 275.0) / 25.0) ** 2))
    Cpm7 = Cpm ** 7
    RC = 2.0 * np.sqrt(Cpm7 / (Cpm7 + 25.0 ** 7))
    SL = 1.0 + 0.015 * (Lpm - 50.0) ** 2 / np.sqrt(20.0 + (Lpm - 50.0) ** 2)
    SC = 1.0 + 0.045 * Cpm
    SH = 1.0 + 0.015 * Cpm * T
    RT = -np.sin(np.radians(2.0 * dtheta)) * RC
    return np.sqrt((dLp / SL) ** 2 + (dCp / SC) ** 2 + (dHp / SH) ** 2 + RT * (dCp / SC) * (dHp / SH))


def mean_ciede2000(image: np.ndarray, palette: np.ndarray, labels: np.ndarray) -> float:
    """Mean CIEDE2000 between ``image`` (H, W, 3) uint8 and ``palette[labels]``.

    Computed once per (distinct colour, label) pair weighted by pixel count, so it is
    cheap on photos.
    """
    pix = pack(image.reshape(-1, 3)).astype(np.int64) * 256 + labels.reshape(-1).astype(np.int64)
    pairs, counts = np.unique(pix, return_counts=True)
    cols, labs = unpack(pairs >> 8), (pairs & 255)
    d = ciede2000(srgb_to_lab(cols), srgb_to_lab(np.asarray(palette)[labs]))
    return float(np.sum(d * counts) / counts.sum())


# ----------------------------------------------------------------------------- k-means

# faiss's k=1 search has a fused SIMD kernel (distance and argmin in one pass, 0.1-0.2 ns per
# distance here) that it uses only above a "BLAS threshold" number of queries; below it, a
# scalar loop runs 13x slower (measured, 25k x 256: 17.6 ms vs 1.4 ms). We lower the threshold
# around our own calls, under a lock, since it is a process-wide setting.
_FAISS_LOCK = threading.Lock()
_BLAS_THRESHOLD = 20
# Lloyd steps move each centre this far past the new mean (over-relaxation, beta in [1, 2)).
# Measured on the bench photos at K=256 (3 polish steps; worst / mean PSNR vs full k-means):
# beta 1.0 (plain Lloyd) -0.11 / -0.08 dB, 1.6 -0.07 / -0.05, 1.95 -0.05 / -0.04 with 4 steps,
# 2.3 worse again. A step that raises the inertia turns it off for the rest of the run.
OVERRELAX = 1.95


def _sqdist_argmin(x: torch.Tensor, c: torch.Tensor, chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """CUDA kernel: nearest centre for each row of ``x`` (M, D) among ``c`` (K, D) -> (labels, sq. distance).

    Chunks of about 2**19 distances keep each (chunk, K) block small.
    """
    chunk = chunk or max(2048, (1 << 19) // max(1, c.shape[0]))
    cn = (c * c).sum(1)
    labels, dists = [], []
    for s in range(0, x.shape[0], chunk):
        xs = x[s:s + chunk]
        m, i = torch.addmm(cn.unsqueeze(0), xs, c.T, alpha=-2.0).min(1)  # ||c||^2 - 2 x.c
        labels.append(i)
        dists.append((m + (xs * xs).sum(1)).clamp_min_(0))
    return torch.cat(labels), torch.cat(dists)


def _nearest(x: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centre of each row of ``x`` (M, D) among ``c`` (K, D) -> (labels (M,) int64, sq. distance (M,) float32).

    Exact for integer RGB (every term of ``||x||^2 - 2 x.c + ||c||^2`` is an integer below
    2**24, which float32 holds exactly), and ties go to the lowest index as with ``argmin``
    (the tests pin both against brute force). faiss on CPU (see ``THREADS``), torch on CUDA.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    c = np.ascontiguousarray(c, dtype=np.float32)
    dev = _device()
    if dev.type == "cuda":
        i, d = _sqdist_argmin(torch.from_numpy(x).to(dev), torch.from_numpy(c).to(dev))
        return i.cpu().numpy(), d.cpu().numpy()
    threads = _threads()
    d = np.empty((len(x), 1), np.float32)
    i = np.empty((len(x), 1), np.int64)
    with _FAISS_LOCK:
        old, old_threads = faiss.cvar.distance_compute_blas_threshold, faiss.omp_get_max_threads()
        faiss.cvar.distance_compute_blas_threshold = _BLAS_THRESHOLD
        faiss.omp_set_num_threads(1)
        try:
            if threads == 1 or len(x) < _PAR_MIN:
                d[:], i[:] = faiss.knn(x, c, 1)
            else:
                bounds = np.linspace(0, len(x), max(2, len(x) // _CHUNK) + 1).astype(np.int64)
                todo = itertools.count()  # chunks are taken in turn: a thread kept off its core
                                          # by other work just takes fewer of them
                def work() -> None:
                    while (j := next(todo)) < len(bounds) - 1:
                        s, e = bounds[j], bounds[j + 1]
                        d[s:e], i[s:e] = faiss.knn(x[s:e], c, 1)

                helpers = [_pool(threads).submit(work) for _ in range(threads - 1)]
                work()
                for h in helpers:
                    h.result()
        finally:
            faiss.cvar.distance_compute_blas_threshold = old
            faiss.omp_set_num_threads(old_threads)
    return i[:, 0], np.maximum(d[:, 0], 0.0)


_PAR_MIN, _CHUNK = 8192, 4096
_POOL: dict = {}


def _threads() -> int:
    if THREADS is not None:
        return max(1, int(THREADS))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _pool(threads: int) -> ThreadPoolExecutor:
    """The helper threads for :func:`_nearest` (made again after a fork: threads do not survive it)."""
    key = (os.getpid(), threads)
    if key not in _POOL:
        for (pid, _), pool in _POOL.items():
            if pid == os.getpid():
                pool.shutdown(wait=False)
        _POOL.clear()
        _POOL[key] = ThreadPoolExecutor(threads - 1, thread_name_prefix="palette",
                                        initializer=faiss.omp_set_num_threads, initargs=(1,))
    return _POOL[key]


def _kmeanspp(x: np.ndarray, w: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy weighted k-means++ seeding (as scikit-learn: 2 + log k candidates per step).

    Element-wise numpy only, no BLAS product: OpenBLAS's threads, left spinning after a
    call, slowed the next faiss search 2x on 2 cores (and faiss's threads slow BLAS).
    """
    x = np.asarray(x, np.float64)
    n_local = 2 + int(np.log(k))
    cw = np.cumsum(w)
    first = min(int(np.searchsorted(cw, rng.random() * cw[-1], side="right")), len(x) - 1)
    centers = [first]
    xt = np.ascontiguousarray(x.T)
    closest = ((xt - xt[:, first:first + 1]) ** 2).sum(0)
    for _ in range(1, k):
        cp = np.cumsum(w * closest)
        if cp[-1] <= 0:
            break
        cand = np.minimum(np.searchsorted(cp, rng.random(n_local) * cp[-1], side="right"), len(x) - 1)
        d = (xt[0][None] - xt[0][cand][:, None]) ** 2  # (n_local, M) squared distances
        for j in range(1, len(xt)):
            d += (xt[j][None] - xt[j][cand][:, None]) ** 2
        np.minimum(d, closest[None], out=d)
        best = int(np.argmin((d * w).sum(1)))
        centers.append(int(cand[best]))
        closest = d[best]
    return x[centers]


def _varpart(x: np.ndarray, w: np.ndarray, k: int) -> np.ndarray:
    """Var-Part seeding (Celebi 2011): split the cluster of largest SSE at its mean, along
    its axis of largest variance, until there are ``k`` clusters -> their means (k', D).

    Deterministic and cheap: a cluster is a contiguous range of rows, a split moves its
    rows as whole records (a void view: 2x faster than 2-D boolean indexing), and only
    the smaller child's moments are summed, the other's is the difference. Fewer than
    ``k`` means only when the points cannot be split further.
    """
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    dim = x.shape[1]
    m = 1 + 2 * dim  # moments per row: w, w*x, w*x^2; then x itself for the split tests
    f = np.ascontiguousarray(np.concatenate([w[:, None], w[:, None] * x, w[:, None] * x * x, x], axis=1))
    rows = f.view(np.dtype((np.void, f.shape[1] * f.itemsize)))[:, 0]

    def entry(s: int, e: int, mom: list) -> tuple:
        mean = [a / mom[0] for a in mom[1:1 + dim]]
        var = [max(b - a * c, 0.0) for a, b, c in zip(mom[1:1 + dim], mom[1 + dim:m], mean)]  # SSE per axis
        return (-sum(var), s, e, mom, mean, var)

    heap = [entry(0, len(f), f[:, :m].sum(0).tolist())]
    done = []
    while heap and len(heap) + len(done) < k:
        sse, s, e, mom, mean, var = heapq.heappop(heap)
        a = var.index(max(var))
        left = f[s:e, m + a] <= mean[a]
        n_left = int(np.count_nonzero(left))
        if sse >= 0 or n_left in (0, e - s):  # a single colour: cannot split
            done.append(mean)
            continue
        part = rows[s:e]
        rows[s:e] = np.concatenate([part[left], part[~left]])
        if 2 * n_left <= e - s:
            lm = f[s:s + n_left, :m].sum(0).tolist()
            rm = [p - q for p, q in zip(mom, lm)]
        else:
            rm = f[s + n_left:e, :m].sum(0).tolist()
            lm = [p - q for p, q in zip(mom, rm)]
        heapq.heappush(heap, entry(s, s + n_left, lm))
        heapq.heappush(heap, entry(s + n_left, e, rm))
    return np.array([h[4] for h in heap] + done)


def _lloyd(x: np.ndarray, w: np.ndarray, c: np.ndarray, max_iter: int, tol: float,
           beta: float | None = None) -> tuple[np.ndarray, float]:
    """Weighted Lloyd from centres ``c`` with over-relaxation ``beta`` -> (centres, inertia).

    Stops after ``max_iter`` steps or when the inertia falls by less than ``tol`` (relative).
    Empty clusters are re-seeded on the worst-served points. The inertia returned is that
    of the last assignment (before the last centre update).
    """
    beta = OVERRELAX if beta is None else beta
    x = np.ascontiguousarray(x, dtype=np.float32)
    w = np.asarray(w, np.float64)
    c = np.asarray(c, np.float64)
    k = len(c)
    xw = [x[:, j] * w for j in range(x.shape[1])]
    prev = inertia = np.inf
    for it in range(max_iter):
        labels, d = _nearest(x, c)
        inertia = float((d * w).sum())  # no BLAS call in this loop: see _kmeanspp
        if inertia > prev:
            beta = 1.0  # over-relaxation overshot: plain Lloyd from here on
        ws = np.bincount(labels, weights=w, minlength=k)
        mean = np.stack([np.bincount(labels, weights=v, minlength=k) for v in xw], axis=1)
        full = ws > 0
        mean[full] /= ws[full, None]
        new = c.copy()
        new[full] = mean[full] if it == 0 else c[full] + beta * (mean[full] - c[full])
        if not full.all():
            new[~full] = x[np.argsort(d * w)[::-1][: int((~full).sum())]]
        c = new
        if 0.0 <= prev - inertia <= tol * inertia:  # converged (after an overshoot: go on, plain)
            break
        prev = inertia
    return c, inertia


def weighted_kmeans(
    points: np.ndarray,
    weights: np.ndarray,
    k: int,
    *,
    seed: int = 0,
    max_iter: int = 100,
    tol: float = 1e-6,
    init: np.ndarray | str | None = None,
) -> tuple[np.ndarray, float]:
    """Weighted Lloyd k-means (over-relaxed, see ``OVERRELAX``).

    Args:
        points: (M, D) float, e.g. distinct colours.
        weights: (M,) positive, e.g. pixel counts.
        k: number of centres (``k <= M``).
        seed: seeds the k-means++ draws, so results reproduce.
        max_iter, tol: stop when the relative inertia change is below ``tol``.
        init: (k, D) starting centres, ``"varpart"``, or None for k-means++.

    Returns:
        ``(centers (k, D) float64, inertia)``, inertia = sum of weight * squared distance
        to the returned centres.

    Example: ``weighted_kmeans(np.array([[0.],[1.],[10.]]), np.array([1, 1, 2]), 2)``
    -> centres ``[[0.5], [10.]]`` (in some order), inertia 0.5.
    """
    x = np.asarray(points, np.float64)
    w = np.asarray(weights, np.float64)
    if x.ndim != 2 or w.shape != (len(x),):
        raise ValueError(f"points must be (M, D) and weights (M,), got {x.shape} and {w.shape}")
    if not 1 <= k <= len(x):
        raise ValueError(f"k={k} must be in [1, n_points={len(x)}]")
    if init is None:
        c = _kmeanspp(x, w, k, np.random.default_rng(seed))
    elif isinstance(init, str) and init == "varpart":
        c = _varpart(x, w, k)
    else:
        c = np.asarray(init, np.float64)
    if len(c) < k:  # fewer distinct points carry weight than k
        c = np.concatenate([c, x[: k - len(c)]])
    c, _ = _lloyd(x, w, c, max_iter, tol)
    _, d = _nearest(x, c)
    return c, float(d @ w)


# ----------------------------------------------------------------------------- API

@dataclass
class Quantized:
    """A palette image: ``palette`` (n_colors, 3) uint8 and ``labels`` (H, W) uint8 indices."""

    palette: np.ndarray
    labels: np.ndarray
    k: int
    seconds: float = 0.0
    info: dict = field(default_factory=dict)

    @property
    def n_colors(self) -> int:
        return int(self.palette.shape[0])

    def image(self) -> np.ndarray:
        """The quantized image (H, W, 3) uint8 = ``palette[labels]``."""
        return np.take(self.palette, self.labels, axis=0)  # 4x faster than fancy indexing

    def to_pil(self) -> Image.Image:
        """A mode-"P" Pillow image holding exactly this palette and these indices."""
        im = Image.fromarray(self.labels.astype(np.uint8), mode="P")
        im.putpalette(self.palette.astype(np.uint8).reshape(-1).tolist())
        return im

    def png_bytes(self) -> bytes:
        """The indexed PNG file's bytes (bit depth 1/2/4/8 chosen by Pillow from the palette size)."""
        buf = io.BytesIO()
        bits = next(b for b in (1, 2, 4, 8) if self.n_colors <= 1 << b)
        self.to_pil().save(buf, format="PNG", optimize=True, bits=bits)
        return buf.getvalue()


def png_bytes(image: np.ndarray) -> bytes:
    """A lossless RGB PNG of ``image`` (H, W, 3) uint8 (the "bytes before" reference)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", optimize=False, compress_level=9)
    return buf.getvalue()


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of an (H, W) grey or (H, W, 3) RGB uint8 array."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def format_table(rows: Sequence[dict]) -> str:
    """A plain-text table of :func:`evaluate` rows (with ``file`` and ``method`` keys)."""
    head = (f"{'file':<24} {'method':<7} {'K':>4} {'colours':>15} {'PNG before':>10} {'source':>9} "
            f"{'after':>8} {'ratio':>6} {'PSNR':>6} {'dE2000':>6} {'sec':>6}")
    lines = [head, "-" * len(head)]
    for r in rows:
        name = r.get("file", "")
        name = name if len(name) <= 24 else "..." + name[-21:]
        lines.append(
            f"{name:<24} {r.get('method', 'kmeans'):<7} {r['k']:>4} {r['colors_before']:>7,}->{r['colors_after']:<3}  "
            f"{r['bytes_before']:>10,} {r['bytes_source'] or 0:>9,} {r['bytes_after']:>8,} {r['ratio']:>6.2f} "
            f"{r['psnr'] if r['psnr'] is not None else float('inf'):>6.2f} {r['ciede2000']:>6.2f} {r['seconds']:>6.3f}")
    return "\n".join(lines)


def fit_palette(
    image: np.ndarray,
    k: int,
    *,
    seed: int = 0,
    lab: bool = False,
    max_points: int = DEFAULT_MAX_POINTS,
    polish_iter: int = POLISH_ITER,
    n_init: int | None = None,
) -> np.ndarray:
    """Fit a k-colour palette to ``image`` (H, W, 3) or pixels (N, 3) uint8 -> (k', 3) uint8.

    Minimises the sum over *all* pixels of squared distance (RGB, or CIE Lab when
    ``lab``) via weighted k-means on the distinct colours. If the image has at most
    ``k`` distinct colours they are returned as they are (lossless; ``k' < k``).

    Args:
        max_points: above this many distinct colours, polish on 7-bit cells instead.
        polish_iter: Lloyd steps on the exact colours after the cell-level fit.
        n_init: starts tried on the cells, lowest inertia kept (default: 3 for k <= 64,
            Var-Part plus k-means++ seeds; above, Var-Part alone).

    Example: ``fit_palette(rgb, 16)`` -> (16, 3) uint8, sorted rows.
    """
    k = check_k(k)
    pixels = np.asarray(image).reshape(-1, 3)
    if pixels.dtype != np.uint8 or pixels.size == 0:
        raise ValueError(f"pixels must be non-empty uint8 (..., 3), got shape={np.shape(image)} dtype={pixels.dtype}")
    colors, counts = distinct_colors(pixels)
    return _fit_colors(colors, counts, k, seed=seed, lab=lab, max_points=max_points, polish_iter=polish_iter,
                       n_init=n_init)


def _fit_colors(colors: np.ndarray, counts: np.ndarray, k: int, *, seed: int, lab: bool, max_points: int,
                polish_iter: int, n_init: int | None) -> np.ndarray:
    """:func:`fit_palette` on distinct colours (M, 3) uint8 with pixel counts (M,)."""
    if len(colors) <= k:
        return colors
    # Stage 1: Lloyd on 6-bit histogram cells (mean colour, pixel count) from Var-Part,
    # plus k-means++ starts (drawn on 5-bit cells) for K <= 64 where a run is cheap and
    # luck matters most; the start with the lowest cell-level inertia goes on to stage 2:
    # polish_iter over-relaxed Lloyd steps on the exact distinct colours (7-bit cells when
    # there are more than max_points of them). Measured on the bench photos: this matches
    # full-pixel k-means within 0.1 dB at K=16..256 (see the constants at the top).
    conv = srgb_to_lab if lab else (lambda a: np.asarray(a, np.float64))
    if len(colors) > max_points:
        fine, fw = binned_colors(colors, bits=7, counts=counts)
    else:
        fine, fw = colors, counts.astype(np.float64)
    fine = conv(fine)
    coarse, cw = binned_colors(colors, bits=6, counts=counts)
    if n_init is None:
        n_init = N_INIT_SMALL_K if k <= 64 else 1
    if len(coarse) >= 4 * k:
        xc = conv(coarse)
        starts = [_varpart(xc, cw, k)]
        if n_init > 1:
            sx, sw = binned_colors(colors, bits=KPP_BITS, counts=counts)
            sx = conv(sx)
            starts += [_kmeanspp(sx, sw, k, np.random.default_rng(seed + i)) for i in range(1, n_init)]
        runs = [_lloyd(xc, cw, _pad(c, xc, k), COARSE_ITER, COARSE_TOL) for c in starts]
        centers = min(runs, key=lambda r: r[1])[0]
        centers, _ = _lloyd(fine, fw, centers, polish_iter, 0.0)
    else:  # few cells: Lloyd on the colours themselves, to convergence
        centers, _ = _lloyd(fine, fw, _pad(_varpart(fine, fw, k), fine, k), 100, 1e-6)
    if lab:
        pal = lab_to_srgb(centers)
    else:
        pal = np.clip(np.rint(centers), 0, 255).astype(np.uint8)
    return np.unique(pal, axis=0)  # rounding can merge centres


def _pad(c: np.ndarray, x: np.ndarray, k: int) -> np.ndarray:
    """``c`` with rows of ``x`` appended up to ``k`` rows (a seeding that found fewer)."""
    return c if len(c) >= k else np.concatenate([c, x[: k - len(c)]])


def random_palette(image: np.ndarray, k: int, *, seed: int = 0) -> np.ndarray:
    """The baseline: ``k`` colours drawn uniformly at random from the RGB cube -> (k', 3) uint8."""
    k = check_k(k)
    rng = np.random.default_rng(seed)
    return np.unique(rng.integers(0, 256, (k, 3), dtype=np.uint8), axis=0)


def assign(image: np.ndarray, palette: np.ndarray, *, lab: bool = False) -> np.ndarray:
    """Exact nearest palette index for every pixel.

    Args:
        image: (H, W, 3) or (N, 3) uint8.
        palette: (K, 3) uint8, K <= 256.
        lab: measure distance in CIE Lab instead of RGB.

    Returns:
        labels with the image's leading shape, uint8 (ties go to the lowest index).
    """
    image = np.asarray(image)
    codes = pack(image.reshape(-1, 3))
    u, _ = _unique_counts(codes)
    idx = _assign_colors(unpack(u), np.asarray(palette, dtype=np.uint8), lab)
    return _lookup(codes, u, idx).reshape(image.shape[:-1])


def _assign_colors(colors: np.ndarray, palette: np.ndarray, lab: bool) -> np.ndarray:
    """Nearest palette index (M,) uint8 of each distinct colour (M, 3) uint8."""
    if lab:
        return _nearest(srgb_to_lab(colors), srgb_to_lab(palette))[0].astype(np.uint8)
    return _nearest(colors, palette)[0].astype(np.uint8)


_LUT = threading.local()


def _lookup(codes: np.ndarray, keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values[j]`` for each ``codes[i] == keys[j]`` (every code is a key), via a 2**24 table.

    The table (16 MB, one per thread) is kept between calls: a fresh one costs page faults
    on every write (~3 ms per photo), and stale entries are never read, since every code
    looked up was written just before.
    """
    lut = getattr(_LUT, "table", None)
    if lut is None:
        lut = _LUT.table = np.empty(1 << 24, dtype=np.uint8)
    lut[keys] = values
    return lut[codes]


def quantize(
    image: np.ndarray,
    k: int,
    *,
    seed: int = 0,
    method: str = "kmeans",
    lab: bool = False,
    dither: bool = False,
) -> Quantized:
    """Fit a palette and assign every pixel: (H, W, 3) uint8 -> :class:`Quantized`.

    ``method`` is ``"kmeans"`` or ``"random"`` (the random-palette baseline). With
    ``dither``, Floyd-Steinberg error diffusion is done by Pillow's C quantizer with
    our palette.
    """
    k = check_k(k)
    image = _check_image(image)
    if method not in METHODS:
        raise ValueError(f"method={method!r} must be one of {METHODS}")
    t0 = time.perf_counter()
    codes = pack(image.reshape(-1, 3))
    u, counts = _unique_counts(codes)
    colors = unpack(u)
    if method == "kmeans":
        pal = _fit_colors(colors, counts, k, seed=seed, lab=lab, max_points=DEFAULT_MAX_POINTS,
                          polish_iter=POLISH_ITER, n_init=None)
    else:
        pal = random_palette(image, k, seed=seed)
    if dither:
        pim = Image.new("P", (1, 1))
        pim.putpalette(pal.reshape(-1).tolist() + pal[0].tolist() * (256 - len(pal)))
        out = Image.fromarray(image).quantize(palette=pim, dither=Image.Dither.FLOYDSTEINBERG)
        labels = np.asarray(out).copy()
        labels[labels >= len(pal)] = 0  # padding entries repeat colour 0
        used = np.flatnonzero(np.bincount(labels.reshape(-1), minlength=len(pal)))
    else:
        idx = _assign_colors(colors, pal, lab)
        labels = _lookup(codes, u, idx).reshape(image.shape[:2])
        used = np.flatnonzero(np.bincount(idx, minlength=len(pal)))  # every colour occurs in the image
    # keep only used colours so the PNG palette is as small as it can be
    if len(used) < len(pal):
        remap = np.zeros(len(pal), np.uint8)
        remap[used] = np.arange(len(used), dtype=np.uint8)
        labels = remap[labels]
    q = Quantized(palette=pal[used], labels=labels, k=k)
    q.seconds = time.perf_counter() - t0
    return q


def evaluate(image: np.ndarray, q: Quantized, *, source_bytes: int | None = None,
             bytes_before: int | None = None) -> dict:
    """Stats for one result: colours before/after, bytes before/after, ratio, PSNR, CIEDE2000.

    ``bytes_before`` is a lossless RGB PNG of the same pixels (pass it when evaluating
    several results of one image: it is the slow part, ~0.15 s for a 0.27 MP photo);
    ``source_bytes`` (the input file's size) is reported beside it.
    ``ratio = bytes_before / bytes_after``.
    """
    before = len(png_bytes(image)) if bytes_before is None else int(bytes_before)
    after = len(q.png_bytes())
    return {
        "k": q.k,
        "colors_before": int(len(distinct_colors(image.reshape(-1, 3))[0])),
        "colors_after": q.n_colors,
        "bytes_before": before,
        "bytes_source": source_bytes,
        "bytes_after": after,
        "ratio": before / after,
        "psnr": psnr(image, q.image()),
        "ciede2000": mean_ciede2000(image, q.palette, q.labels),
        "seconds": q.seconds,
    }


def segment_colors(n: int) -> np.ndarray:
    """``n`` well-separated label colours (n, 3) uint8 (golden-angle hues)."""
    import colorsys

    return np.array([[round(255 * v) for v in colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.65 + 0.35 * (i % 2), 0.95 - 0.3 * (i % 3 == 2))]
                     for i in range(n)], dtype=np.uint8)


def segmentation(q: Quantized) -> np.ndarray:
    """The label map as an image: for 2 colours a grey mask (H, W) uint8 with values
    {0, 255} (darker palette colour -> 0); otherwise (H, W, 3) uint8 distinct colours."""
    if q.n_colors <= 2:
        lum = q.palette.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        order = np.argsort(lum, kind="stable")
        val = np.zeros(q.n_colors, np.uint8)
        val[order[-1]] = 255 if q.n_colors == 2 else 0
        return val[q.labels]
    return segment_colors(q.n_colors)[q.labels]


def auto_k(
    image: np.ndarray,
    *,
    target_psnr: float | None = None,
    max_bytes: int | None = None,
    ks: Sequence[int] = (2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256),
    seed: int = 0,
    lab: bool = False,
    bytes_before: int | None = None,
) -> tuple[int | None, list[dict]]:
    """The smallest K in ``ks`` whose result reaches ``target_psnr`` (dB), or the largest
    K whose PNG fits in ``max_bytes``. Exactly one target must be given. ``bytes_before``:
    the lossless PNG size if the caller has it already (see :func:`evaluate`).

    Returns ``(k or None if none qualifies, curve)``, curve = one :func:`evaluate` dict
    per K tried (ascending), for the error-vs-K plot.
    """
    if (target_psnr is None) == (max_bytes is None):
        raise ValueError("give exactly one of target_psnr or max_bytes")
    if max_bytes is not None and max_bytes <= 0:
        raise ValueError(f"max_bytes={max_bytes} must be > 0")
    ks = sorted({check_k(k) for k in ks})
    image = _check_image(image)
    curve, chosen = [], None
    before = len(png_bytes(image)) if bytes_before is None else int(bytes_before)
    for k in ks:
        row = evaluate(image, quantize(image, k, seed=seed, lab=lab), bytes_before=before)
        curve.append(row)
        if target_psnr is not None and row["psnr"] >= target_psnr:
            chosen = k
            break
        if max_bytes is not None:
            if row["bytes_after"] <= max_bytes:
                chosen = k
            else:
                break
        if row["colors_after"] < k:  # lossless already, larger K changes nothing
            break
    return chosen, curve


__all__ = [
    "K_MIN", "K_MAX", "Quantized", "check_k", "distinct_colors", "binned_colors", "srgb_to_lab",
    "lab_to_srgb", "ciede2000", "psnr", "mean_ciede2000", "weighted_kmeans", "fit_palette",
    "random_palette", "assign", "quantize", "evaluate", "png_bytes", "encode_png", "format_table", "segmentation",
    "segment_colors", "auto_k",
]

"""Weighted k-means for palettes: exact nearest-centre search, Var-Part and k-means++ seeds, Lloyd.

Every nearest-centre search (:func:`nearest`) is faiss's fused k=1 kernel on CPU, cut into
chunks that a small thread pool takes in turn (``threads``: None = one per available core),
and torch on CUDA. :func:`weighted_kmeans` minimises the sum of weight * squared distance,
so k-means over an image's distinct colours weighted by pixel count is k-means over its
pixels.

Example::

    >>> x = np.array([[0.0], [1.0], [10.0]]); w = np.array([1, 1, 2])
    >>> centers, inertia = weighted_kmeans(x, w, 2, init="varpart", threads=1)
    >>> sorted(centers[:, 0].tolist()), inertia
    ([0.5, 10.0], 0.5)
"""

from __future__ import annotations

import functools
import heapq
import itertools
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import faiss
import numpy as np

if TYPE_CHECKING:
    import torch


@functools.lru_cache(maxsize=1)
def device() -> str:
    """Where the searches run: ``"cuda"`` when torch sees a GPU, else ``"cpu"`` (faiss).

    torch is imported only where a GPU can be there (an NVIDIA driver is loaded) or when the
    process has imported it already: on a CPU machine its import (1-2.5 s) would cost more than
    the whole quantization of a 4 MP photo.
    """
    if "torch" not in sys.modules and not any(os.path.exists(p) for p in _NVIDIA_DRIVER):
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


_NVIDIA_DRIVER = ("/proc/driver/nvidia/version", "/dev/nvidiactl")


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
    import torch  # late, as in device()

    chunk = chunk or max(2048, (1 << 19) // max(1, c.shape[0]))
    cn = (c * c).sum(1)
    labels, dists = [], []
    for s in range(0, x.shape[0], chunk):
        xs = x[s : s + chunk]
        m, i = torch.addmm(cn.unsqueeze(0), xs, c.T, alpha=-2.0).min(1)  # ||c||^2 - 2 x.c
        labels.append(i)
        dists.append((m + (xs * xs).sum(1)).clamp_min_(0))
    return torch.cat(labels), torch.cat(dists)


def nearest(x: np.ndarray, c: np.ndarray, *, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centre of each row of ``x`` (M, D) among ``c`` (K, D) -> (labels (M,) int64, sq. distance (M,) float32).

    Exact for integer RGB (every term of ``||x||^2 - 2 x.c + ||c||^2`` is an integer below
    2**24, which float32 holds exactly), and ties go to the lowest index as with ``argmin``
    (the tests pin both against brute force). faiss on CPU with ``threads`` threads (None:
    one per available core, see :func:`thread_count`), torch on CUDA.

    Example: ``nearest(np.array([[0, 0, 0], [9, 9, 9]]), np.array([[1, 1, 1], [8, 8, 8]]))``
    -> ``([0, 1], [3., 3.])``.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    c = np.ascontiguousarray(c, dtype=np.float32)
    dev = device()
    if dev == "cuda":
        import torch  # late, as in device() (which imported it already)

        i, d = _sqdist_argmin(torch.from_numpy(x).to(dev), torch.from_numpy(c).to(dev))
        return i.cpu().numpy(), d.cpu().numpy()
    threads = thread_count(threads)
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


# A search of more than _PAR_MIN points is cut into chunks of _CHUNK that this thread and a
# small pool take in turn, each a one-thread faiss call: no OpenMP team, whose threads spin
# after each call (on this machine's 2 vCPUs the spinning slowed our numpy work between
# searches up to 2x, and with the other core busy every search waited for it). Measured on 2
# cores, 7 bench photos at K=256, interleaved runs: 0.090 s/MP this way vs 0.092 with faiss's
# OpenMP threads and 0.116 with one thread; with one core busy elsewhere 0.116 vs 0.121 and 0.113.
_PAR_MIN, _CHUNK = 8192, 4096
_POOL: dict = {}


def thread_count(threads: int | None = None) -> int:
    """The search threads to use: ``threads`` (at least 1), or one per available core if None."""
    if threads is not None:
        return max(1, int(threads))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _pool(threads: int) -> ThreadPoolExecutor:
    """The helper threads for :func:`nearest` (made again after a fork: threads do not survive it)."""
    key = (os.getpid(), threads)
    if key not in _POOL:
        for (pid, _), pool in _POOL.items():
            if pid == os.getpid():
                pool.shutdown(wait=False)
        _POOL.clear()
        _POOL[key] = ThreadPoolExecutor(
            threads - 1, thread_name_prefix="palette", initializer=faiss.omp_set_num_threads, initargs=(1,)
        )
    return _POOL[key]


def kmeanspp(x: np.ndarray, w: np.ndarray, n_clusters: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy weighted k-means++ seeding of ``x`` (M, D) weighted by ``w`` (M,) -> (n', D) float64
    centres, n' <= ``n_clusters`` (as scikit-learn: 2 + log n_clusters candidates per step).

    Element-wise numpy only, no BLAS product: OpenBLAS's threads, left spinning after a
    call, slowed the next faiss search 2x on 2 cores (and faiss's threads slow BLAS).
    """
    x = np.asarray(x, np.float64)
    n_local = 2 + int(np.log(n_clusters))
    cw = np.cumsum(w)
    first = min(int(np.searchsorted(cw, rng.random() * cw[-1], side="right")), len(x) - 1)
    centers = [first]
    xt = np.ascontiguousarray(x.T)
    closest = ((xt - xt[:, first : first + 1]) ** 2).sum(0)
    for _ in range(1, n_clusters):
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


def varpart(x: np.ndarray, w: np.ndarray, n_clusters: int) -> np.ndarray:
    """Var-Part seeding (Celebi 2011): split the cluster of largest SSE at its mean, along
    its axis of largest variance, until there are ``n_clusters`` -> their means (n', D) float64.

    Deterministic and cheap: a cluster is a contiguous range of rows, a split moves its
    rows as whole records (a void view: 2x faster than 2-D boolean indexing), and only
    the smaller child's moments are summed, the other's is the difference. Fewer than
    ``n_clusters`` means only when the points cannot be split further.
    """
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    dim = x.shape[1]
    m = 1 + 2 * dim  # moments per row: w, w*x, w*x^2; then x itself for the split tests
    f = np.ascontiguousarray(np.concatenate([w[:, None], w[:, None] * x, w[:, None] * x * x, x], axis=1))
    rows = f.view(np.dtype((np.void, f.shape[1] * f.itemsize)))[:, 0]

    def entry(s: int, e: int, mom: list) -> tuple:
        mean = [a / mom[0] for a in mom[1 : 1 + dim]]
        var = [max(b - a * c, 0.0) for a, b, c in zip(mom[1 : 1 + dim], mom[1 + dim : m], mean)]  # SSE per axis
        return (-sum(var), s, e, mom, mean, var)

    heap = [entry(0, len(f), f[:, :m].sum(0).tolist())]
    done = []
    while heap and len(heap) + len(done) < n_clusters:
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
            lm = f[s : s + n_left, :m].sum(0).tolist()
            rm = [p - q for p, q in zip(mom, lm)]
        else:
            rm = f[s + n_left : e, :m].sum(0).tolist()
            lm = [p - q for p, q in zip(mom, rm)]
        heapq.heappush(heap, entry(s, s + n_left, lm))
        heapq.heappush(heap, entry(s + n_left, e, rm))
    return np.array([h[4] for h in heap] + done)


def lloyd(
    x: np.ndarray,
    w: np.ndarray,
    c: np.ndarray,
    max_iter: int,
    tol: float,
    beta: float | None = None,
    *,
    threads: int | None = None,
) -> tuple[np.ndarray, float]:
    """Weighted Lloyd on ``x`` (M, D), weights ``w`` (M,), from centres ``c`` (K, D) with
    over-relaxation ``beta`` (default ``OVERRELAX``) -> (centres (K, D) float64, inertia).

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
        labels, d = nearest(x, c, threads=threads)
        inertia = float((d * w).sum())  # no BLAS call in this loop: see kmeanspp
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
    n_clusters: int,
    *,
    seed: int = 0,
    max_iter: int = 100,
    tol: float = 1e-6,
    init: np.ndarray | str | None = None,
    threads: int | None = None,
) -> tuple[np.ndarray, float]:
    """Weighted Lloyd k-means (over-relaxed, see ``OVERRELAX``).

    Args:
        points: (M, D) float, e.g. distinct colours.
        weights: (M,) positive, e.g. pixel counts.
        n_clusters: number of centres (``n_clusters <= M``).
        seed: seeds the k-means++ draws, so results reproduce.
        max_iter, tol: stop when the relative inertia change is below ``tol``.
        init: (n_clusters, D) starting centres, ``"varpart"``, or None for k-means++.
        threads: search threads on CPU (None: one per available core).

    Returns:
        ``(centers (n_clusters, D) float64, inertia)``, inertia = sum of weight * squared distance
        to the returned centres.

    Example: ``weighted_kmeans(np.array([[0.],[1.],[10.]]), np.array([1, 1, 2]), 2)``
    -> centres ``[[0.5], [10.]]`` (in some order), inertia 0.5.
    """
    x = np.asarray(points, np.float64)
    w = np.asarray(weights, np.float64)
    if x.ndim != 2 or w.shape != (len(x),):
        raise ValueError(f"points must be (M, D) and weights (M,), got {x.shape} and {w.shape}")
    if not 1 <= n_clusters <= len(x):
        raise ValueError(f"n_clusters={n_clusters} must be in [1, n_points={len(x)}]")
    if init is None:
        c = kmeanspp(x, w, n_clusters, np.random.default_rng(seed))
    elif isinstance(init, str) and init == "varpart":
        c = varpart(x, w, n_clusters)
    else:
        c = np.asarray(init, np.float64)
    c = pad(c, x, n_clusters)  # fewer distinct points carry weight than n_clusters
    c, _ = lloyd(x, w, c, max_iter, tol, threads=threads)
    _, d = nearest(x, c, threads=threads)
    return c, float(d @ w)


def pad(c: np.ndarray, x: np.ndarray, n_clusters: int) -> np.ndarray:
    """``c`` with rows of ``x`` appended up to ``n_clusters`` rows (a seeding that found fewer)."""
    return c if len(c) >= n_clusters else np.concatenate([c, x[: n_clusters - len(c)]])


__all__ = ["device", "thread_count", "nearest", "kmeanspp", "varpart", "lloyd", "weighted_kmeans", "pad", "OVERRELAX"]

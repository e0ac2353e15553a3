"""FAISS indexes for float codes: chosen by size and memory, tuned to a recall target, memory-mapped.

Which index (``factory="auto"``), after FAISS's "Guidelines to choose an index":

* ``n <= FLAT_MAX`` codes: ``Flat``, exact: at that size an exact batched query is fast enough
  for a command line (bench/search_bench.py).
* more: ``IVF{nlist},Flat`` with ``nlist = 4*sqrt(n)`` (the low end of FAISS's 4..16*sqrt(n)),
  trained on ``TRAIN_PER_LIST * nlist`` codes (FAISS wants >= 39 per centroid). IVF builds
  faster than HNSW on 2 cores and its lists can be memory-mapped; on clustered codes it answers
  two orders of magnitude faster than exact search at recall@5 0.98 (docs/measured.md).
  When the codes have no cluster structure and the tuned ``nprobe`` would scan over a quarter
  of the lists, IVF is no faster than exact search, so ``Flat`` is kept instead.
* ``memory_budget`` (bytes) smaller than the uncompressed codes: ``OPQ{m},IVF{nlist},PQ{m}``
  with the most bytes per code ``m`` (of 64/32/16/8, dividing d) that fits the budget.
* any FAISS factory string (``"HNSW32"``, ``"IVF1024,PQ16"``, ...) overrides the choice.

Metric: ``"l2"`` ranks by squared Euclidean distance (the autoencoder is trained with a pixel
MSE, so L2 between codes is the natural first choice); ``"cosine"`` L2-normalises codes and
queries and ranks by inner product; the distance reported is then ``1 - cos``.

Search parameters (``nprobe`` for IVF, ``efSearch`` for HNSW) are tuned after building: the
smallest value whose recall@5 against exact search reaches ``target_recall`` (0.95) on a sample
of the stored codes used as queries (each query's own row left out). The chosen string
(e.g. ``"nprobe=16"``) and the measured recall are kept with the index and can be overridden.
PQ codes rank only approximately, so for them the tuning may add ``rerank=R``: ``R*k``
candidates re-ordered by exact distance from the stored codes (codes.npy, memory-mapped, so
RAM still holds only the compressed index).

Example:
    >>> import numpy as np
    >>> codes = np.random.default_rng(0).normal(size=(1000, 16)).astype(np.float32)
    >>> built = build(codes)
    >>> built.factory, built.search_params
    ('Flat', '')
    >>> distances, rows = search(built.index, codes[:2], k=3, metric="l2")
    >>> rows[:, 0].tolist()
    [0, 1]
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from encoder.search import ondisk

METRICS = ("l2", "cosine")
FLAT_MAX = 100_000
TRAIN_PER_LIST = 50  # training codes per IVF list (FAISS warns below 39)
PQ_MIN_TRAIN = 256 * 39  # a PQ codebook has 256 centroids per sub-quantizer
TUNE_QUERIES = 500
# Tuning queries are stored codes, which flatters recall a little even with their own row left
# out; on 30k real Fashion-MNIST codes the estimate ran 0.005-0.01 above the recall of truly new
# queries, so the tuning aims this much above the target.
TUNE_MARGIN = 0.01
HNSW_EF = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
ADD_CHUNK = 65_536


@dataclass
class Built:
    """A trained, filled FAISS index and how it was chosen and tuned."""

    index: Any
    factory: str
    search_params: str  # "" (no knob), "nprobe=16", "efSearch=64"
    recall: float | None  # recall@5 vs exact measured while tuning (None: not measured)


def check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r} must be one of {METRICS}")


def faiss_metric(metric: str) -> int:
    check_metric(metric)
    return faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT


def prepare(codes: np.ndarray, metric: str) -> np.ndarray:
    """Codes as FAISS wants them: C-contiguous float32, L2-normalised for cosine. (N,D) -> (N,D)."""
    x = np.ascontiguousarray(codes, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"codes must be 2-D (N, D), got shape {x.shape}")
    if metric == "cosine":
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = x / np.maximum(norms, 1e-12)
    else:
        check_metric(metric)
    return x


def nlist_for(n: int) -> int:
    """IVF list count for n codes: 4*sqrt(n), but no more than n/39 (39 training codes per list)."""
    return max(1, min(int(round(4 * math.sqrt(n))), n // 39))


def choose_factory(n: int, d: int, memory_budget: int | None = None) -> str:
    """FAISS factory string for n codes of width d (see the module docstring).

    >>> choose_factory(5_000, 128), choose_factory(1_000_000, 128)
    ('Flat', 'IVF4000,Flat')
    >>> choose_factory(1_000_000, 128, memory_budget=40_000_000)
    'OPQ32,IVF4000,PQ32'
    """
    if n < 0 or d <= 0:
        raise ValueError(f"n={n} and d={d} must be >= 0 and > 0")
    if memory_budget is not None and memory_budget <= 0:
        raise ValueError(f"memory_budget={memory_budget} must be a positive number of bytes")
    flat_bytes = n * d * 4
    if memory_budget is not None and flat_bytes > memory_budget and n >= PQ_MIN_TRAIN:
        nlist = nlist_for(n)
        # per code: m PQ bytes + 8 bytes of id in the inverted list
        for m in (64, 32, 16, 8):
            if m <= d and d % m == 0 and n * (m + 8) <= memory_budget:
                return f"OPQ{m},IVF{nlist},PQ{m}"
        raise ValueError(
            f"memory_budget={memory_budget} bytes cannot hold {n} codes even at 8 bytes each (need >= {n * 16} bytes)"
        )
    if n <= FLAT_MAX:
        return "Flat"
    return f"IVF{nlist_for(n)},Flat"


def still_fits(current: str, wanted: str) -> bool:
    """Can an index built as ``current`` keep serving where ``wanted`` is chosen now?

    Yes for the same recipe with an IVF list count within 2x of the wanted one: retraining for
    a small change in collection size costs more than it gains.

    >>> still_fits("IVF1000,Flat", "IVF1200,Flat"), still_fits("IVF1000,Flat", "IVF4000,Flat")
    (True, False)
    """
    a, b = re.search(r"IVF(\d+)", current), re.search(r"IVF(\d+)", wanted)
    if re.sub(r"IVF\d+", "IVF", current) != re.sub(r"IVF\d+", "IVF", wanted):
        return False
    return a is None or 0.5 <= int(a[1]) / int(b[1]) <= 2


def _ivf(index):
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def _hnsw(index):
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexPreTransform):
        index = faiss.downcast_index(index.index)
    return index if hasattr(index, "hnsw") else None


def knob(index) -> tuple[str, list[int]]:
    """The search-time speed/recall knob of an index and the values to try, ("", []) if none."""
    ivf = _ivf(index)
    if ivf is not None:
        values, p = [], 1  # 1, 2, 3, 4, 6, 8, 12, 16, ... (steps of 1.5x and 2x)
        while p < ivf.nlist:
            values += [p] + ([p * 3 // 2] if p >= 2 and p * 3 // 2 < ivf.nlist else [])
            p *= 2
        return "nprobe", values + [ivf.nlist]
    if _hnsw(index) is not None:
        return "efSearch", list(HNSW_EF)
    return "", []


def split_params(params: str) -> tuple[str, int]:
    """``"nprobe=16,rerank=4"`` -> (FAISS part ``"nprobe=16"``, rerank factor 4; 1 when absent)."""
    faiss_part, rerank = [], 1
    for part in filter(None, (p.strip() for p in (params or "").split(","))):
        if part.startswith("rerank="):
            try:
                rerank = int(part.split("=", 1)[1])
            except ValueError:
                rerank = 0
            if rerank < 1:
                raise ValueError(f"search params {params!r}: rerank must be a positive integer")
        else:
            faiss_part.append(part)
    return ",".join(faiss_part), rerank


def set_params(index, params: str) -> None:
    """Apply ``"nprobe=16"`` / ``"efSearch=64"`` (comma-separated, FAISS ParameterSpace syntax).

    A ``rerank=R`` entry is ours, not FAISS's: :func:`search` then fetches ``R*k`` candidates
    and orders them by exact distance computed from the stored (memory-mapped) codes, which
    lifts PQ's recall without holding full codes in RAM.
    """
    faiss_part, _ = split_params(params)
    if faiss_part:
        try:
            faiss.ParameterSpace().set_index_parameters(index, faiss_part)
        except RuntimeError as e:
            raise ValueError(
                f"search params {params!r} do not apply to this index: {str(e).strip().splitlines()[-1][-120:]}"
            ) from None


def tuning_rows(n: int, n_queries: int = TUNE_QUERIES, seed: int = 0) -> np.ndarray:
    """The stored rows used as queries when tuning (sorted): (min(n, n_queries),) int64."""
    return np.sort(np.random.default_rng(seed + 1).choice(n, min(n_queries, n), replace=False))


def sample_rows(n: int, size: int, seed: int = 0, exclude: np.ndarray | None = None) -> np.ndarray:
    """Sorted random row numbers of ``range(n)``, none of ``exclude``: -> (min(size, rows left),) int64."""
    pool = np.arange(n) if exclude is None else np.setdiff1d(np.arange(n), exclude)
    if size >= len(pool):
        return pool
    return np.sort(np.random.default_rng(seed).choice(pool, size, replace=False))


def train_sample(codes: np.ndarray, size: int, seed: int = 0, exclude: np.ndarray | None = None) -> np.ndarray:
    """Random rows, none of ``exclude`` (sorted, so a memory-mapped array is read in order): -> (<=size, D)."""
    if exclude is None and size >= len(codes):
        return np.asarray(codes)
    return np.asarray(codes[sample_rows(len(codes), size, seed, exclude)])


def add_chunked(index, codes: np.ndarray, metric: str, chunk: int = ADD_CHUNK) -> None:
    """Add codes to a trained index in chunks (a memory-mapped array is never copied whole)."""
    for s in range(0, len(codes), chunk):
        index.add(prepare(codes[s : s + chunk], metric))


def new_index(d: int, factory: str, metric: str):
    try:
        return faiss.index_factory(d, factory, faiss_metric(metric))
    except RuntimeError as e:
        raise ValueError(
            f"faiss_type={factory!r} is not a FAISS factory string FAISS can build "
            f"for d={d}: {str(e).strip().splitlines()[-1]}"
        ) from None


def _fast_training(index) -> None:
    """Skip the slow polysemous code ordering (it only helps Hamming pre-filtering, unused here)
    and cap OPQ at 20 iterations (of 50): PQ and OPQ indexes then build 3-10x faster."""
    top = faiss.downcast_index(index)
    if isinstance(top, faiss.IndexPreTransform):
        for i in range(top.chain.size()):
            vt = faiss.downcast_VectorTransform(top.chain.at(i))
            if isinstance(vt, faiss.OPQMatrix):
                vt.niter = min(vt.niter, 20)
        top = faiss.downcast_index(top.index)
    if hasattr(top, "do_polysemous_training"):
        top.do_polysemous_training = False


def build(
    codes: np.ndarray,
    metric: str = "l2",
    factory: str = "auto",
    *,
    memory_budget: int | None = None,
    search_params: str = "auto",
    target_recall: float = 0.95,
    seed: int = 0,
) -> Built:
    """Build, train, fill and tune an index over codes (N,D) float32 (may be memory-mapped).

    Args:
        codes: (N,D) float codes; row i of the index is row i of ``codes``.
        metric: ``"l2"`` or ``"cosine"``.
        factory: ``"auto"`` (:func:`choose_factory`) or a FAISS factory string.
        memory_budget: bytes the index may take; picks PQ/OPQ when Flat would not fit.
        search_params: ``"auto"`` (tuned to ``target_recall``) or e.g. ``"nprobe=32"``.
        target_recall: recall@5 vs exact that the tuned parameters must reach.
    """
    check_metric(metric)
    if codes.ndim != 2:
        raise ValueError(f"codes must be 2-D (N, D), got shape {codes.shape}")
    n, d = codes.shape
    chosen = choose_factory(n, d, memory_budget) if factory == "auto" else factory
    index = new_index(d, chosen, metric)
    _fast_training(index)
    if not index.is_trained:
        ivf = _ivf(index)
        need = max(39 * (ivf.nlist if ivf is not None else 1), 1)
        if n < need:
            raise ValueError(
                f"faiss_type={chosen!r} needs at least {need} codes to train, got {n}; use 'Flat' or fewer lists"
            )
        size = TRAIN_PER_LIST * ivf.nlist if ivf is not None else PQ_MIN_TRAIN * 4
        if "PQ" in chosen:
            size = max(size, PQ_MIN_TRAIN * 4)
        # codes used to tune are kept out of training, as new queries are (centroids fitted to a
        # query make it look easier than it is)
        index.train(prepare(train_sample(codes, size, seed, exclude=tuning_rows(n, seed=seed)), metric))
    add_chunked(index, codes, metric)
    params, recall = tune(index, codes, metric, search_params, target_recall, seed=seed)
    ivf = _ivf(index)
    if (
        factory == "auto"
        and memory_budget is None
        and ivf is not None
        and search_params == "auto"
        and _probes(params) * 4 > ivf.nlist
    ):
        # codes without cluster structure (e.g. i.i.d. noise): IVF must scan over a quarter of its
        # lists to reach the target, which is no faster than exact search, so use exact search
        flat = new_index(d, "Flat", metric)
        add_chunked(flat, codes, metric)
        return Built(flat, "Flat", "", 1.0)
    return Built(index, chosen, params, recall)


def _probes(params: str) -> int:
    found = [part.split("=", 1)[1] for part in params.split(",") if part.startswith("nprobe=")]
    return int(found[0]) if found else 0


def refill(index, codes: np.ndarray, metric: str) -> Any:
    """Same trained index (quantizers, codebooks kept), emptied and filled with ``codes``."""
    fresh = faiss.clone_index(index)
    fresh.reset()
    add_chunked(fresh, codes, metric)
    return fresh


def exact_knn(
    queries: np.ndarray, codes: np.ndarray, k: int, metric: str, chunk: int = 262_144
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by brute force over codes in chunks: (Q,D),(N,D) -> (distances, rows) (Q,k).

    Distances are FAISS's raw scores (squared L2, or inner product for cosine).
    """
    q = prepare(queries, metric)
    k = min(k, len(codes))
    keep_max = metric == "cosine"
    heap = faiss.ResultHeap(len(q), k, keep_max=keep_max)
    for s in range(0, len(codes), chunk):
        xb = prepare(codes[s : s + chunk], metric)
        D, I = faiss.knn(q, xb, min(k, len(xb)), metric=faiss.METRIC_INNER_PRODUCT if keep_max else faiss.METRIC_L2)
        if D.shape[1] < k:  # a short last chunk: pad with worst values
            pad = k - D.shape[1]
            D = np.hstack([D, np.full((len(q), pad), -np.inf if keep_max else np.inf, np.float32)])
            I = np.hstack([I, np.full((len(q), pad), -1, np.int64)])
        heap.add_result(np.ascontiguousarray(D, np.float32), np.ascontiguousarray(I + s * (I >= 0), np.int64))
    heap.finalize()
    return heap.D, heap.I


def _true_scores(q: np.ndarray, codes: np.ndarray, rows: np.ndarray, metric: str) -> np.ndarray:
    """Exact score of each returned row: (Q,D), rows (Q,k) -> (Q,k); -1 rows get the worst score."""
    safe = np.where(rows >= 0, rows, 0)
    xb = prepare(np.asarray(codes[safe.ravel()]).reshape(-1, q.shape[1]), metric).reshape(*safe.shape, q.shape[1])
    if metric == "cosine":
        s = np.einsum("qd,qkd->qk", q, xb)
        return np.where(rows >= 0, s, -np.inf)
    s = ((xb - q[:, None, :]) ** 2).sum(-1)
    return np.where(rows >= 0, s, np.inf)


def recall_at_k(
    queries: np.ndarray, codes: np.ndarray, approx_rows: np.ndarray, exact_scores: np.ndarray, metric: str, k: int = 5
) -> float:
    """Mean fraction of the k returned rows that are true top-k neighbours.

    A returned row counts when its exact score is at least as good as the exact k-th best (so
    ties and duplicate codes do not count as misses). approx_rows, exact_scores: (Q,>=k).
    """
    q = prepare(queries, metric)
    true = _true_scores(q, codes, approx_rows[:, :k], metric)
    kth = exact_scores[:, k - 1 : k]
    tol = 1e-4 * np.maximum(np.abs(kth), 1e-6)
    good = true >= kth - tol if metric == "cosine" else true <= kth + tol
    return float(good.sum(1).mean() / k)


def search(
    index, queries: np.ndarray, k: int, metric: str, params: str = "", codes: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k: (Q,D) -> (distances (Q,k) float32, rows (Q,k) int64, -1 where fewer exist).

    Distances are squared L2, or ``1 - cos`` for cosine. With ``rerank=R`` in ``params`` and
    the stored ``codes`` given, ``R*k`` candidates are re-ordered by exact distance.
    """
    set_params(index, params)
    _, rerank = split_params(params)
    q = prepare(queries, metric)
    if rerank > 1 and codes is not None:
        _, cand = index.search(q, k * rerank)
        scores = _true_scores(q, codes, cand, metric)
        order = np.argsort(-scores if metric == "cosine" else scores, axis=1, kind="stable")[:, :k]
        I = np.take_along_axis(cand, order, 1)
        D = np.take_along_axis(scores, order, 1).astype(np.float32)
    else:
        D, I = index.search(q, k)
    if metric == "cosine":
        D = np.where(I >= 0, 1.0 - D, np.inf).astype(np.float32)
    return D, I


def tune(
    index,
    codes: np.ndarray,
    metric: str,
    search_params: str = "auto",
    target_recall: float = 0.95,
    k: int = 5,
    n_queries: int = TUNE_QUERIES,
    seed: int = 0,
) -> tuple[str, float | None]:
    """Pick and apply search parameters; returns (params, measured recall@k vs exact or None).

    Queries are ``n_queries`` stored codes (:func:`tuning_rows`); each query's own row is left
    out of both result lists, so the measure is about finding *other* images, as a real query
    does. The smallest setting reaching ``target_recall + TUNE_MARGIN`` is chosen.
    """
    if not 0 < target_recall <= 1:
        raise ValueError(f"target_recall={target_recall} must be in (0, 1]")
    n = len(codes)
    name, values = knob(index)
    if search_params != "auto":
        set_params(index, search_params)
    if n <= k + 1 or (not name and search_params == "auto" and _is_exact(index)):
        return ("" if search_params == "auto" else search_params), (1.0 if _is_exact(index) else None)
    rows = tuning_rows(n, n_queries, seed)
    q = np.asarray(codes[rows])
    goal = min(1.0, target_recall + TUNE_MARGIN)
    De, Ie = exact_knn(q, codes, k + 1, metric)
    De = _drop_self(De, Ie, rows, k)

    def measure(params: str) -> float:
        _, Ia = search(index, q, k + 1, metric, params, codes)
        return recall_at_k(q, codes, _drop_self(Ia, Ia, rows, k), De, metric, k)

    if search_params != "auto":
        return search_params, measure(search_params)
    # compressed codes (PQ) rank only approximately: try re-ranking more candidates exactly
    reranks = (1,) if _exact_storage(index) else (1, 4, 16)
    recall, params = 0.0, ""
    for r in reranks:
        for v in values or [None]:
            params = ",".join(p for p in (f"{name}={v}" if name else "", f"rerank={r}" if r > 1 else "") if p)
            recall = measure(params)
            if recall >= goal:
                set_params(index, params)
                return params, recall
    set_params(index, params)
    return params, recall


def _exact_storage(index) -> bool:
    """True when the index keeps full float codes (Flat, IVF-Flat, HNSW-Flat): distances are exact."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexPreTransform):
        return False
    if isinstance(index, (faiss.IndexFlat, faiss.IndexIVFFlat)):
        return True
    return hasattr(index, "hnsw") and isinstance(faiss.downcast_index(index.storage), faiss.IndexFlat)


def _is_exact(index) -> bool:
    return isinstance(faiss.downcast_index(index), faiss.IndexFlat)


def _drop_self(values: np.ndarray, rows: np.ndarray, self_rows: np.ndarray, k: int) -> np.ndarray:
    """Per query, drop the entry whose row is the query's own (else the last): (Q,k+1) -> (Q,k)."""
    out = np.empty((len(values), k), values.dtype)
    for i, r in enumerate(self_rows):
        hit = np.flatnonzero(rows[i] == r)
        drop = hit[0] if len(hit) else k
        out[i] = np.delete(values[i], drop)[:k]
    return out


def read(path: str, mmap: bool = False):
    """Read an index file; ``mmap=True`` maps the stored codes instead of reading them (read-only).

    ``IO_FLAG_MMAP_IFC`` maps the code arrays of Flat, IVF lists and HNSW storage, so those load
    in a small part of their size in RAM (HNSW still reads its graph). (``IO_FLAG_MMAP`` alone maps
    only IVF lists, and the two together are refused for IVF.) An IVF merged on disk
    (:mod:`encoder.search.ondisk`) maps its lists from the ``.ivfdata`` file beside ``path``,
    read-only, with or without ``mmap``.
    """
    on_disk = ondisk.read(path)  # lists in an .ivfdata file beside: always mapped
    if on_disk is not None:
        return on_disk
    return (
        faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)
        if mmap
        else faiss.read_index(str(path))
    )

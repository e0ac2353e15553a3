"""``search.py dedup IDX --engine local|ray``: duplicate groups of a hash index too big for one process.

1. Exact grouping first: rows with equal hashes are one node (``np.unique``), so a million copies
   of one picture cost one search.
2. One binary index over the distinct hashes, written to the work folder: ``IndexBinaryFlat``
   (exact) below ``IVF_MIN`` (500k) distinct hashes, else ``IndexBinaryIVF`` (``nlist`` lists searched
   at ``nprobe``; 10^8 hashes are 0.8 GB, so every task can hold it).
3. One task per slice of ``shard_rows`` distinct hashes range-searches them against that index and
   writes its pairs (``pairs/pairs-NNNNN.npy``, (M,2) int64, tmp + rename; a rerun skips slices done).
4. Connected components of the pairs on the driver (:func:`scipy.sparse.csgraph.connected_components`).

With the exact index the groups equal :func:`encoder.hashing.dedup.find_groups`'s (same links, same
output); with IVF a pair is missed when the two hashes fall in lists more than ``nprobe`` apart
(pair recall against exact: bench/scale_bench.py).

Example::

    >>> groups = find_groups_job("runs/idx", "runs/dedup", threshold=10, engine="ray")   # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from encoder.atomic import atomic_path, save_npy, write_json
from encoder.hashing.dedup import DEFAULT_THRESHOLD
from encoder.hashing.hashes import HASH_BITS
from encoder.jobs import runners

# distinct hashes from which the range search goes through IndexBinaryIVF: the exact scan's cost grows
# as N^2 and stays a few core-minutes below this; above it IVF (DEFAULT_NLIST at DEFAULT_NPROBE) scans a
# quarter as much at pair recall >= 0.99 (bench/scale_bench.py part 3, real-shaped hashes)
IVF_MIN = 500_000
DEFAULT_NLIST = 1024
DEFAULT_NPROBE = 128
DEFAULT_SHARD_ROWS = 100_000
PLAN = "dedup.json"


def _pairs_path(work: str | os.PathLike, shard: int) -> Path:
    return Path(work) / "pairs" / f"pairs-{shard:05d}.npy"


def binary_index(hashes: np.ndarray, nlist: int = 0):
    """Index over (N,8) uint8 distinct hashes: exact flat for ``nlist`` 0, else IVF of ``nlist`` lists."""
    d = hashes.shape[1] * 8
    n = len(hashes)
    if not nlist:
        index = faiss.IndexBinaryFlat(d)
    else:
        if n < 39 * nlist:
            raise ValueError(f"nlist={nlist} needs at least {39 * nlist} distinct hashes to train, got {n}")
        index = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(d), d, nlist)
        rows = np.sort(np.random.default_rng(0).choice(n, min(n, 50 * nlist), replace=False))
        index.train(hashes[rows])
    index.add(hashes)
    return index


def pairs_shard(work: str, shard: int) -> dict[str, int]:
    """Task: range-search one slice of the distinct hashes, write its pairs (i < j). -> counts."""
    out = _pairs_path(work, shard)
    if out.is_file():
        return {"images": 0, "skipped": 0}
    plan = json.loads((Path(work) / PLAN).read_text())
    hashes = np.load(Path(work) / "hashes.npy", mmap_mode="r")
    index = faiss.read_index_binary(str(Path(work) / "index.faiss"))
    if isinstance(index, faiss.IndexBinaryIVF):
        index.nprobe = plan["nprobe"]
    a = shard * plan["shard_rows"]
    q = np.ascontiguousarray(hashes[a : a + plan["shard_rows"]])
    threads = faiss.omp_get_max_threads()
    # one thread per task, as the runner starts one task per core: FAISS's OpenMP threads on cores
    # that other tasks already fill spin and wait instead of working
    faiss.omp_set_num_threads(1)
    try:  # FAISS binary range_search keeps distances < radius
        lims, _, found = index.range_search(q, plan["threshold"] + 1)
    finally:  # a task run in the caller's process (workers=1) leaves its FAISS as it was
        faiss.omp_set_num_threads(threads)
    rows = np.repeat(np.arange(a, a + len(q), dtype=np.int64), np.diff(lims).astype(np.int64))
    pairs = np.stack([np.minimum(rows, found), np.maximum(rows, found)], 1)
    pairs = np.unique(pairs[pairs[:, 0] != pairs[:, 1]], axis=0) if len(pairs) else np.zeros((0, 2), np.int64)
    save_npy(out, pairs.astype(np.int64))
    return {"images": len(q), "skipped": 0}


def _prepare(work: Path, hashes: np.ndarray, plan: dict[str, Any]) -> None:
    """Write the distinct hashes, their index and the plan; reuse them when the plan is the same."""
    if (work / PLAN).is_file():
        old = json.loads((work / PLAN).read_text())
        if old != plan:
            raise ValueError(f"work folder {work} holds another dedup ({old}); give another --work or delete it")
        return
    save_npy(work / "hashes.npy", hashes)
    with atomic_path(work / "index.faiss") as tmp:
        faiss.write_index_binary(binary_index(hashes, plan["nlist"]), str(tmp))
    write_json(work / PLAN, plan)  # last: its presence says the files above are whole


def _components(n: int, pairs: np.ndarray) -> np.ndarray:
    """(n,) component label of each node, from (M,2) int64 edges."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def _groups(ids: list[str], rows: np.ndarray, labels: np.ndarray, distinct: np.ndarray) -> list[dict]:
    """Groups of 2+ rows sharing a label, as :func:`encoder.hashing.dedup.find_groups` gives them."""
    order = np.argsort(labels, kind="stable")
    cuts = np.flatnonzero(np.diff(labels[order])) + 1
    groups = []
    for members in np.split(order, cuts):
        if len(members) < 2:
            continue
        h = np.unique(distinct[members], axis=0)
        d = np.unpackbits(np.bitwise_xor(h[:, None], h[None]), axis=-1).sum(-1)
        groups.append({"ids": sorted(ids[rows[m]] for m in members), "max_distance": int(d.max())})
    groups.sort(key=lambda g: (-len(g["ids"]), g["ids"][0]))
    return groups


def find_groups_job(
    index_dir: str | os.PathLike,
    work: str | os.PathLike,
    *,
    threshold: int = DEFAULT_THRESHOLD,
    include_flat: bool = False,
    engine: str = "local",
    workers: int = 0,
    address: str | None = None,
    nlist: int | None = None,
    nprobe: int = DEFAULT_NPROBE,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    progress: bool = True,
) -> list[dict]:
    """Duplicate groups of a hash index (the output of :func:`encoder.hashing.dedup.find_groups`).

    ``nlist``: 0 exact (IndexBinaryFlat), N an IndexBinaryIVF of N lists searched at ``nprobe``;
    None chooses (exact below IVF_MIN distinct hashes, else DEFAULT_NLIST lists).
    """
    from encoder.search.index import Index, IndexMismatchError

    if not 0 <= threshold <= HASH_BITS:
        raise ValueError(f"threshold={threshold} must be in [0, {HASH_BITS}]")
    idx = Index.load(index_dir)
    if not idx.binary:
        raise IndexMismatchError(f"dedup needs a hash index, {index_dir} holds {idx.meta['method']} codes")
    rows = np.flatnonzero(np.ones(len(idx.ids), bool) if include_flat else ~idx.flat_mask())
    distinct, inverse = np.unique(idx.vectors[rows], axis=0, return_inverse=True)
    inverse = inverse.ravel()
    n = len(distinct)
    if nlist is None:
        nlist = DEFAULT_NLIST if n >= IVF_MIN else 0
    plan = {
        "hashes_sha256": hashlib.sha256(np.ascontiguousarray(distinct).tobytes()).hexdigest(),
        "threshold": threshold,
        "nlist": nlist,
        "nprobe": nprobe,
        "shard_rows": shard_rows,
    }
    work = Path(work)
    _prepare(work, distinct, plan)
    n_shards = (n + shard_rows - 1) // shard_rows
    todo = [s for s in range(n_shards) if not _pairs_path(work, s).is_file()]
    runners.run(pairs_shard, work, todo, engine=engine, workers=workers, address=address, progress=progress)
    pairs = [np.load(_pairs_path(work, s)) for s in range(n_shards)]
    labels = _components(n, np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64))
    return _groups(idx.ids, rows, labels[inverse], distinct[inverse])

"""One part file per shard: ``parts/part-NNNNN.parquet`` in the job's work folder.

A part holds every row of its shard, in manifest order: ``id`` (string), ``vector`` (hashes:
``fixed_size_binary(8)``; codes: ``fixed_size_list<float32>[D]``; null for a skipped file),
``flat`` (bool) and ``reason`` (null, or why the file was skipped). It is written to a temporary
name and renamed (:func:`encoder.atomic.atomic_path`), so a part is there whole or not at all: a
killed task leaves nothing, a retried task writes the same bytes, and a rerun skips the shards
whose part exists.

Example::

    >>> write_part(part_path("runs/job", 0), ["a.jpg", "b.jpg"], np.zeros((1, 8), np.uint8),
    ...            np.array([False]), {1: "not an image"})     # doctest: +SKIP
    >>> read_part(part_path("runs/job", 0)).skipped           # doctest: +SKIP
    [('b.jpg', 'not an image')]
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from encoder.atomic import atomic_path
from encoder.search.index_files import IdColumn


@dataclass
class Part:
    """A shard's results: ``ids`` (a list or, read back, an :class:`~encoder.search.index_files.IdColumn`)
    and ``vectors`` ((M,8) uint8 hashes or (M,D) float32 codes) of the M readable files, ``flat``
    (M,) bool, ``skipped`` ``[(id, reason)]`` of the others."""

    ids: Sequence[str]
    vectors: np.ndarray
    flat: np.ndarray
    skipped: list[tuple[str, str]]
    hashes: np.ndarray | None = None  # (M,8) uint8: the pHash verifying a crops ae search (codes' parts)


def part_path(work: str | os.PathLike, shard: int) -> Path:
    return Path(work) / "parts" / f"part-{shard:05d}.parquet"


def done_shards(work: str | os.PathLike, n_shards: int) -> set[int]:
    """Shards whose part is written (temporary files of killed tasks do not count)."""
    return {s for s in range(n_shards) if part_path(work, s).is_file()}


def _vector_column(vectors: np.ndarray, good: np.ndarray):
    import pyarrow as pa

    n = len(good)
    if vectors.dtype == np.uint8:
        full = np.zeros((n, vectors.shape[1]), np.uint8)
        full[good] = vectors
        values = [bytes(r) if g else None for r, g in zip(full, good)]
        return pa.array(values, pa.binary(vectors.shape[1]))
    d = vectors.shape[1]
    full = np.zeros((n, d), np.float32)
    full[good] = vectors
    return pa.FixedSizeListArray.from_arrays(pa.array(full.ravel()), d, mask=pa.array(~good))


def write_part(
    path: str | os.PathLike,
    ids: list[str],
    vectors: np.ndarray,
    flat: np.ndarray,
    skipped: dict[int, str],
    hashes: np.ndarray | None = None,
) -> None:
    """Write a shard's part atomically.

    Args:
        ids: the shard's N ids, in manifest order.
        vectors: (N - len(skipped), W) uint8 hashes or float32 codes of the readable rows, in order.
        flat: (N - len(skipped),) bool flat-image flags (all False for codes).
        skipped: ``{row: reason}`` of the unreadable rows.
        hashes: (N - len(skipped), 8) uint8 verification hashes of the readable rows (a ``hash`` column), or None.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    good = np.array([i not in skipped for i in range(len(ids))], bool)
    if int(good.sum()) != len(vectors) or len(flat) != len(vectors):
        raise ValueError(f"{len(ids)} ids, {len(skipped)} skipped but {len(vectors)} vectors, {len(flat)} flags")
    flags = np.zeros(len(ids), bool)
    flags[good] = flat
    columns = {
        "id": pa.array(ids, pa.string()),
        "vector": _vector_column(np.asarray(vectors), good),
        "flat": pa.array(flags),
        "reason": pa.array([skipped.get(i) for i in range(len(ids))], pa.string()),
    }
    if hashes is not None:
        columns["hash"] = _vector_column(np.asarray(hashes, np.uint8), good)
    table = pa.table(columns)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_part(path: str | os.PathLike) -> Part:
    """A part back as arrays (see :class:`Part`); its ids stay an Arrow column (an IdColumn)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    t = pq.read_table(path)
    bad = pc.is_valid(t.column("reason"))
    good = ~bad.to_numpy(zero_copy_only=False).astype(bool)
    ids = t.column("id")
    vectors = _array(t.column("vector").combine_chunks().filter(pa.array(good)))
    hashes = _array(t.column("hash").combine_chunks().filter(pa.array(good))) if "hash" in t.column_names else None
    flat = np.asarray(t.column("flat").to_numpy(zero_copy_only=False), bool)[good]
    skipped = zip(ids.filter(bad).to_pylist(), t.column("reason").filter(bad).to_pylist())
    return Part(IdColumn(ids.filter(pa.array(good))), vectors, flat, list(skipped), hashes)


def _array(col) -> np.ndarray:
    """A vector column's rows: (M,W) uint8 of fixed-size binary, (M,D) float32 of fixed-size lists."""
    import pyarrow as pa

    if pa.types.is_fixed_size_binary(col.type):
        w = col.type.byte_width
        return np.frombuffer(col.buffers()[1], np.uint8, len(col) * w, col.offset * w).reshape(-1, w).copy()
    return col.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, col.type.list_size)

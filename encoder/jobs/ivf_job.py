"""A code job's parts into one IVF index merged on disk: trained on a sample, filled part by part, memory-mapped.

When a code job's automatic FAISS choice (:func:`encoder.search.ann.choose_factory`) is
``IVF{nlist},Flat``, :func:`build` makes that index without ever holding every code in RAM, all in
the job's work folder under ``ivf/``:

1. ``plan.json``: the factory, metric and each part's first global row (rows counted from the parts'
   ``id`` and ``reason`` columns, which also give the ids and skipped files);
2. ``codes.npy``: the parts' codes streamed in shard order (``open_memmap``, one part in RAM at a time);
3. ``trained.index``: the empty IVF trained on a seeded sample of those (memory-mapped) codes, drawn as
   :func:`encoder.search.ann.build` draws it (the rows the tuning queries left out);
4. ``part-NNNNN.index``: one task per part (:func:`encoder.jobs.runners.run`: the local pool or Ray) adds
   that part's codes with their global rows as ids to the trained index;
5. ``merged/``: the part indexes merged by ``faiss.contrib.ondisk.merge_ondisk`` (index.faiss + its
   lists in index.ivfdata, :mod:`encoder.search.ondisk`); then nprobe is tuned on the mapped codes
   (:func:`encoder.search.ann.tune`) as ann.build tunes it.

Each step writes to a temporary name and renames, and a rerun skips what is written (a plan that
changed, e.g. another metric, starts ``ivf/`` afresh). Unlike ann.build the IVF is kept when its tuned
nprobe passes a quarter of the lists (codes without clusters): exact search would need every code in
RAM. :meth:`encoder.search.index.Index.save` then links (or copies) codes.npy and index.ivfdata into
the index folder.

Example::

    >>> codes, ids, skipped, built = build("runs/job", 10, "IVF12649,Flat")     # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from encoder.atomic import atomic_path, write_json
from encoder.jobs import parts, runners
from encoder.search import ann, ondisk
from encoder.search.index_files import IdColumn

SEED = 0  # the training sample's, as ann.build's default


def ivf_dir(work: str | os.PathLike) -> Path:
    return Path(work) / "ivf"


def part_index(work: str | os.PathLike, shard: int) -> Path:
    return ivf_dir(work) / f"part-{shard:05d}.index"


def _rows(work: str | os.PathLike, n_shards: int) -> tuple[list[int], IdColumn, list[tuple[str, str]], int]:
    """(codes per part, ids of the codes in order (the parts' Arrow columns joined), ``[(id, reason)]``
    skipped, code width) from the parts' id and reason columns (the vectors are not read)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    counts, columns, skipped, d = [], [], [], 0
    for s in range(n_shards):
        path = parts.part_path(work, s)
        t = pq.read_table(path, columns=["id", "reason"])
        bad = pc.is_valid(t.column("reason"))  # a readable row has no reason
        columns.append(IdColumn(t.column("id").filter(pc.invert(bad))))
        skipped += zip(t.column("id").filter(bad).to_pylist(), t.column("reason").filter(bad).to_pylist())
        counts.append(t.column("reason").null_count)
        d = getattr(pq.read_schema(path).field("vector").type, "list_size", 0) or d
    return counts, IdColumn.concat(columns), skipped, d


def count(work: str | os.PathLike, n_shards: int) -> tuple[int, int]:
    """(codes in all parts, their width D; 0 for parts of hashes) from the parts' reason column and schema."""
    import pyarrow.parquet as pq

    n, d = 0, 0
    for s in range(n_shards):
        path = parts.part_path(work, s)
        n += pq.read_table(path, columns=["reason"]).column("reason").null_count
        d = getattr(pq.read_schema(path).field("vector").type, "list_size", 0) or d
    return n, d


def factory_for(n: int, d: int, options: dict[str, Any]) -> str | None:
    """``IVF{nlist},Flat`` when the automatic choice for n codes of width d is an IVF-Flat and ``options``
    (a method's index options) leave it automatic; else None (the index is built in memory)."""
    automatic = options.get("faiss_type", "auto") == "auto" and options.get("memory_budget") is None
    if not automatic or options.get("views", 1) != 1 or not n or not d:
        return None
    factory = ann.choose_factory(n, d)
    return factory if re.fullmatch(r"IVF\d+,Flat", factory) else None


def _plan(work: str | os.PathLike, counts: list[int], d: int, factory: str, metric: str) -> dict[str, Any]:
    starts = np.concatenate([[0], np.cumsum(counts)]).tolist()
    plan = {"factory": factory, "metric": metric, "dim": d, "starts": starts[:-1], "counts": counts}
    file = ivf_dir(work) / "plan.json"
    if file.is_file() and json.loads(file.read_text()) != plan:
        shutil.rmtree(ivf_dir(work))  # made for other parts or settings: nothing in it applies
    if not file.is_file():
        write_json(file, plan)
    return plan


def _stream_codes(work: str | os.PathLike, plan: dict[str, Any]) -> np.ndarray:
    """``ivf/codes.npy`` (N,D) float32 of every part in order, memory-mapped read-only."""
    file = ivf_dir(work) / "codes.npy"
    if not file.is_file():
        n = sum(plan["counts"])
        with atomic_path(file, suffix=".npy") as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, plan["dim"]))
            for s, (start, count) in enumerate(zip(plan["starts"], plan["counts"])):
                vectors = parts.read_part(parts.part_path(work, s)).vectors
                if len(vectors) != count:
                    raise ValueError(f"{parts.part_path(work, s)}: {len(vectors)} codes, expected {count}")
                out[start : start + count] = vectors
            out.flush()
            del out
    return np.load(file, mmap_mode="r")


def _train(work: str | os.PathLike, codes: np.ndarray, plan: dict[str, Any]) -> Path:
    """``ivf/trained.index``: the empty IVF trained on a sample of ``codes``, drawn as ann.build draws it."""
    file = ivf_dir(work) / "trained.index"
    if file.is_file():
        return file
    index = ann.new_index(codes.shape[1], plan["factory"], plan["metric"])
    nlist, n = faiss.extract_index_ivf(index).nlist, len(codes)
    held_out = ann.tuning_rows(n, seed=SEED)
    # the tuning rows stay out of training, as in ann.build, unless too few codes would be left for the lists
    exclude = held_out if n - len(held_out) >= nlist else None
    index.train(ann.prepare(ann.train_sample(codes, ann.TRAIN_PER_LIST * nlist, SEED, exclude), plan["metric"]))
    with atomic_path(file) as tmp:
        faiss.write_index(index, str(tmp))
    return file


def add_part(work: str, shard: int) -> dict[str, int]:
    """Task: add one part's codes (ids: their global rows) to the trained IVF -> ``ivf/part-NNNNN.index``
    (nothing done when it exists). -> counts."""
    out = part_index(work, shard)
    if out.is_file():
        return {"images": 0, "skipped": 0}
    plan = json.loads((ivf_dir(work) / "plan.json").read_text())
    start, count = plan["starts"][shard], plan["counts"][shard]
    codes = np.load(ivf_dir(work) / "codes.npy", mmap_mode="r")[start : start + count]
    index = faiss.read_index(str(ivf_dir(work) / "trained.index"))
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # one task per core: the engine fills the cores
    try:
        for s in range(0, count, ann.ADD_CHUNK):
            chunk = ann.prepare(codes[s : s + ann.ADD_CHUNK], plan["metric"])
            index.add_with_ids(chunk, np.arange(start + s, start + s + len(chunk), dtype=np.int64))
    finally:
        faiss.omp_set_num_threads(threads)
    with atomic_path(out) as tmp:
        faiss.write_index(index, str(tmp))
    return {"images": count, "skipped": 0}


def _merge(work: str | os.PathLike, n_shards: int) -> Path:
    """``ivf/merged/`` (index.faiss + index.ivfdata) from the part indexes; kept when already there."""
    done = ivf_dir(work) / "merged"
    if (done / "index.faiss").is_file():
        return done
    tmp = ivf_dir(work) / "merged.tmp"
    shutil.rmtree(tmp, ignore_errors=True)  # a merge killed half-way: its files are redone whole
    tmp.mkdir()
    ondisk.merge(ivf_dir(work) / "trained.index", [part_index(work, s) for s in range(n_shards)], tmp)
    os.replace(tmp, done)  # the list file's name inside index.faiss is never used (read beside it)
    return done


def build(
    work: str | os.PathLike,
    n_shards: int,
    factory: str,
    metric: str = "l2",
    search_params: str = "auto",
    target_recall: float = 0.95,
    **run: Any,
) -> tuple[np.ndarray, IdColumn, list[tuple[str, str]], ann.Built]:
    """The parts' codes in one IVF merged on disk (module docstring); ``run``: :func:`runners.run`'s
    ``engine``, ``workers``, ``address``, ``progress``.

    Returns:
        (codes (N,D) float32 memory-mapped from ``ivf/codes.npy``, their N ids (an IdColumn),
        ``[(id, reason)]`` of the skipped files, the tuned :class:`encoder.search.ann.Built` whose
        lists are mapped from ``ivf/merged/index.ivfdata``).
    """
    counts, ids, skipped, d = _rows(work, n_shards)
    plan = _plan(work, counts, d, factory, metric)
    codes = _stream_codes(work, plan)
    _train(work, codes, plan)
    todo = [s for s in range(n_shards) if not part_index(work, s).is_file()]
    runners.run(add_part, work, todo, **run)
    index = ondisk.read(_merge(work, n_shards) / "index.faiss")
    params, recall = ann.tune(index, codes, metric, search_params, target_recall, seed=SEED)
    return codes, ids, skipped, ann.Built(index, factory, params, recall)

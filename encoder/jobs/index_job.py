"""``search.py index SRC --engine local|ray``: hash or encode each shard in a task, merge parts into one index.

Each task calls the products' own functions on its shard (:func:`encoder.hashing.hashes.small_gray`
and :func:`~encoder.hashing.hashes.hash_pixels`, exactly as ``hash_paths`` does; the autoencoder's
``encode`` on :func:`encoder.data.decode_gray_u8`'s pixels, as ``encode_paths`` does), so hashes are
bit-identical and codes equal to the one-process path's. The merge takes the parts in shard order
(the folder's sorted order, as one process reads it) into :meth:`encoder.search.index.Index.create`,
so ``search.py query`` and the web page serve it unchanged. Codes whose automatic FAISS choice is an
IVF (past ``ann.FLAT_MAX``) go into one IVF trained on a sample, filled part by part and merged on
disk (:mod:`encoder.jobs.ivf_job`), never all in RAM; hashes and fewer codes are read into RAM and
indexed in one process.

Example::

    >>> report = index_source("photos/", "runs/job", "runs/idx", method="phash", engine="ray")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from encoder.data import resize_gray, to_gray
from encoder.hashing.hashes import _pillow_block_cache, hash_pixels, is_flat, small_gray
from encoder.jobs import ivf_job, parts, runners, sources

HASH_BATCH = 1024  # thumbnails hashed per batch, as hash_paths
_ENCODERS: dict[str, Any] = {}  # a worker process loads each model once, then reuses it


def _hash_row(location: str, spec: dict, fast: bool) -> np.ndarray:
    draft = spec["draft"]
    im = sources.open_item(location, draft_size=(64, 64) if draft else None, luma_only=draft)
    return small_gray(im, spec["method"], alpha=spec["alpha"], fast_resize=fast)


def _load(locations: list[str], load) -> tuple[list, dict[int, str]]:
    """``([load(location) of the readable rows], {row: reason} of the others)``."""
    got, skipped = [], {}
    for r, loc in enumerate(locations):
        try:
            got.append(load(loc))
        except sources.ImageLoadError as e:
            skipped[r] = e.reason
        except OSError as e:
            skipped[r] = f"cannot read: {e}"
    return got, skipped


def hash_shard(work: str, shard: int) -> dict[str, int]:
    """Task: hash one shard into its part (nothing done when the part exists). -> counts."""
    path = parts.part_path(work, shard)
    if path.is_file():
        return {"images": 0, "skipped": 0}
    spec = sources.read_spec(work)
    ids, locations = sources.shard_rows(work, shard)
    # the int8 resize (same pixels as Pillow): as hash_paths, once torch's import pays off
    fast = "torch" in sys.modules or len(locations) >= 1000
    if fast:
        importlib.import_module("torch")
    with _pillow_block_cache():  # as hash_paths: freed image blocks reused, not page-faulted afresh
        px, skipped = _load(locations, lambda loc: _hash_row(loc, spec, fast))
    hashes, flat = np.zeros((0, 8), np.uint8), np.zeros(0, bool)
    if px:
        batches = [np.stack(px[i : i + HASH_BATCH]) for i in range(0, len(px), HASH_BATCH)]
        hashes = np.concatenate([hash_pixels(b, spec["method"]) for b in batches])
        flat = np.concatenate([is_flat(b) for b in batches])
    parts.write_part(path, ids, hashes, flat, skipped)
    return {"images": len(ids), "skipped": len(skipped)}


def _gray_u8(location: str, size: int) -> np.ndarray:
    """As :func:`encoder.data.decode_gray_u8` (load_gray's draft decode), for a path or a URL: (size, size) uint8."""
    im = sources.open_item(location, draft_size=(4 * size, 4 * size))
    return (resize_gray(to_gray(im), size) * 255.0 + 0.5).astype(np.uint8)


def encode_shard(work: str, shard: int) -> dict[str, int]:
    """Task: encode one shard with the autoencoder into its part (nothing done when it exists). -> counts."""
    path = parts.part_path(work, shard)
    if path.is_file():
        return {"images": 0, "skipped": 0}
    spec = sources.read_spec(work)
    import torch

    torch.set_num_threads(1)  # one task per core: the engine fills the cores
    from encoder.ae.inference import load_encoder

    if spec["checkpoint"] not in _ENCODERS:
        _ENCODERS[spec["checkpoint"]] = load_encoder(spec["checkpoint"])
    enc = _ENCODERS[spec["checkpoint"]]
    ids, locations = sources.shard_rows(work, shard)
    images, skipped = _load(locations, lambda loc: _gray_u8(loc, enc.image_size))
    codes = np.zeros((0, enc.code_dim), np.float32)
    if images:
        codes = enc.encode(np.stack(images), spec["batch_size"])
    parts.write_part(path, ids, codes, np.zeros(len(codes), bool), skipped)
    return {"images": len(ids), "skipped": len(skipped)}


def read_parts(work: str | os.PathLike, n_shards: int) -> parts.Part:
    """All parts in shard order as one :class:`encoder.jobs.parts.Part`; its ids are the parts' Arrow
    columns joined (an :class:`~encoder.search.index_files.IdColumn`), never a list of every id."""
    from encoder.search.index_files import IdColumn

    got = [parts.read_part(parts.part_path(work, s)) for s in range(n_shards)]
    if not got:
        return parts.Part([], np.zeros((0, 8), np.uint8), np.zeros(0, bool), [])
    return parts.Part(
        IdColumn.concat(p.ids for p in got),
        np.concatenate([p.vectors for p in got]),
        np.concatenate([p.flat for p in got]),
        [s for p in got for s in p.skipped],
    )


def _merge_parts(work: str | os.PathLike, n_shards: int, m, run: dict[str, Any]):
    """(the parts as one :class:`parts.Part`, a built FAISS index or None). Codes whose automatic choice
    is an IVF: memory-mapped codes and an IVF merged on disk (:func:`ivf_job.build`); else read into RAM."""
    options = m.index_options()
    factory = ivf_job.factory_for(*ivf_job.count(work, n_shards), options)  # None for hashes (no code width)
    if factory is None:
        return read_parts(work, n_shards), None
    search = {"metric": options["metric"], "search_params": options["search_params"]}
    codes, ids, skipped, built = ivf_job.build(work, n_shards, factory, **search, **run)
    return parts.Part(ids, codes, np.zeros(len(codes), bool), skipped), built


def _method(method: str, options: dict[str, Any]):
    from encoder.search.methods import applicable_options, get_method

    if options.get("views", "full") != "full":
        raise ValueError(f"views={options['views']!r}: a job encodes whole pictures only (views 'full')")
    return get_method(method, **{**applicable_options(method, {"views": "full"}), **options})


def _hash_spec(method, options: dict[str, Any]) -> dict[str, Any]:
    return {"method": method.name, "draft": method.draft, "alpha": method.alpha}


def _code_spec(method, options: dict[str, Any]) -> dict[str, Any]:
    return {
        "method": method.name,
        "checkpoint": str(Path(options["checkpoint"]).absolute()),
        "batch_size": int(options.get("batch_size") or 256),
    }


# Per vector kind (Method.kind): the shard task, the spec a task rebuilds the method from, and
# whether the index keeps flat-image flags.
_KINDS = {"hash": (hash_shard, _hash_spec, True), "code": (encode_shard, _code_spec, False)}


def index_source(
    source: str,
    work: str | os.PathLike,
    output: str | os.PathLike,
    *,
    method: str = "phash",
    engine: str = "local",
    workers: int = 0,
    address: str | None = None,
    shard_size: int = sources.DEFAULT_SHARD_SIZE,
    progress: bool = True,
    task=None,
    **options: Any,
) -> dict[str, Any]:
    """Index ``source`` (folder, list file or URL) into ``output`` through shards in ``work``.

    ``options`` are the method's (``draft``, ``alpha``, ``checkpoint``, ``batch_size``, ``metric``,
    ``faiss_type``, ...), as for ``search.py index``. A rerun with the same ``work`` resumes: parts
    already written are kept and their shards not run again. ``task`` replaces the shard task
    (a wrapper around it, for fault tests).

    Returns:
        ``{"index": Index, "skipped": [(location, reason)], "shards": n, "ran": shards run now}``.
    """
    from encoder.search.index import Index
    from encoder.search.lock import writer_lock

    m = _method(method, options)
    shard_task, spec, keeps_flat = _KINDS[m.kind]
    manifest = sources.make_manifest(source, work, spec(m, options), shard_size)
    todo = sorted(set(range(manifest.n_shards)) - parts.done_shards(work, manifest.n_shards))
    task = task or shard_task
    run = {"engine": engine, "workers": workers, "address": address, "progress": progress}
    runners.run(task, work, todo, **run)
    merged, built = _merge_parts(work, manifest.n_shards, m, run)
    idx = Index.create(
        m.name,
        m.version,
        merged.vectors,
        merged.ids,
        kind=m.kind,
        flat=merged.flat if keeps_flat else None,
        root=manifest.root,
        extra=m.index_meta(),
        attachments=m.index_attachments(),
        built=built,
        **m.index_options(),
    )
    with writer_lock(output):
        idx.save(output)
    named = [(i if sources.is_url(i) else os.path.join(manifest.root, i), r) for i, r in merged.skipped]
    skipped = [tuple(s) for s in manifest.skipped] + named
    return {"index": idx, "skipped": skipped, "shards": manifest.n_shards, "ran": len(todo)}

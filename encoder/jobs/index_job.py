"""``search.py index SRC --engine local|ray``: hash or encode each shard in a task, merge parts into one index.

Each task calls the products' own functions on its shard (:func:`encoder.hashing.hashes.small_gray`
and :func:`~encoder.hashing.hashes.hash_pixels`, exactly as ``hash_paths`` does; the autoencoder's
``encode`` on the views of :func:`encoder.search.views.image_views`, as ``search.py index --method ae``
does, the view set chosen once by the method's own ``resolve_views`` on the same files), so hashes
are bit-identical and codes equal to the one-process path's. The merge takes the parts in shard
order (the folder's sorted order, as one process reads it) into
:meth:`encoder.search.index.Index.create`, so ``search.py query`` and the web page serve it
unchanged. Codes of one view per picture whose automatic FAISS choice is an IVF (past
``ann.FLAT_MAX``) go into one IVF trained on a sample, filled part by part and merged on disk
(:mod:`encoder.jobs.ivf_job`), never all in RAM; hashes, multi-view codes and fewer codes are read
into RAM and indexed in one process.

Example::

    >>> report = index_source("photos/", "runs/job", "runs/idx", method="phash", engine="ray")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from encoder.atomic import write_json
from encoder.data import guarded, image_size
from encoder.hashing.hashes import _pillow_block_cache, hash_pixels, is_flat, small_gray
from encoder.jobs import ivf_job, parts, runners, sources
from encoder.search.views import image_views, view_count, view_sample

HASH_BATCH = 1024  # thumbnails hashed per batch, as hash_paths
VIEWS = "views.json"  # the view set of an ae job, decided once from the listing
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
            with guarded(loc):  # as the one-process path: a conversion's error is this file's reason too
                got.append(load(loc))
        except sources.ImageLoadError as e:
            skipped[r] = e.reason
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


def _views_u8(location: str, size: int, views: str) -> np.ndarray:
    """As :func:`encoder.search.views.decode_views_u8` (the one-process decode: JPEG draft to >= 4 x size,
    then :func:`~encoder.search.views.image_views`), for a path or a URL: (V, size, size) uint8."""
    return image_views(sources.open_item(location, draft_size=(4 * size, 4 * size)), size, views)


def encode_shard(work: str, shard: int) -> dict[str, int]:
    """Task: encode one shard with the autoencoder into its part (nothing done when it exists). -> counts.

    A picture's V gallery views are one row of the part (V x code_dim floats), split again at the merge."""
    path = parts.part_path(work, shard)
    if path.is_file():
        return {"images": 0, "skipped": 0}
    spec = sources.read_spec(work)
    decided = json.loads((Path(work) / VIEWS).read_text())
    views = decided["view_set"]
    import torch

    torch.set_num_threads(1)  # one task per core: the engine fills the cores
    from encoder.ae.inference import load_encoder

    if spec["checkpoint"] not in _ENCODERS:
        _ENCODERS[spec["checkpoint"]] = load_encoder(spec["checkpoint"])
    enc = _ENCODERS[spec["checkpoint"]]
    ids, locations = sources.shard_rows(work, shard)
    images, skipped = _load(locations, lambda loc: _views_u8(loc, enc.image_size, views))
    per = view_count(views, "gallery")
    s = enc.image_size
    pixels = np.stack(images) if images else np.zeros((0, per, s, s), np.uint8)
    codes = enc.encode(pixels.reshape(-1, s, s), spec["batch_size"]).reshape(len(pixels), per * enc.code_dim)
    hashes, flat = None, np.zeros(len(pixels), bool)
    if decided.get("verify"):  # as the one-process index: each picture's hash from its view 0
        from encoder.search.methods import VERIFIER

        hashes, flat = VERIFIER.hash_views(pixels[:, 0])
    parts.write_part(path, ids, codes, flat, skipped, hashes)
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
        None if got[0].hashes is None else np.concatenate([p.hashes for p in got]),
    )


def _merge_parts(work: str | os.PathLike, n_shards: int, m, run: dict[str, Any]):
    """(the parts as one :class:`parts.Part`, a built FAISS index or None). Codes whose automatic choice
    is an IVF: memory-mapped codes and an IVF merged on disk (:func:`ivf_job.build`); else read into RAM."""
    options = m.index_options()
    factory = ivf_job.factory_for(*ivf_job.count(work, n_shards), options)  # None for hashes (no code width)
    if factory is None or getattr(m, "verifying", False):  # verification hashes ride in the parts: read them all
        return read_parts(work, n_shards), None
    search = {"metric": options["metric"], "search_params": options["search_params"]}
    codes, ids, skipped, built = ivf_job.build(work, n_shards, factory, **search, **run)
    return parts.Part(ids, codes, np.zeros(len(codes), bool), skipped), built


def _attachments(m, merged: parts.Part) -> dict[str, bytes]:
    """The method's attachments, and the pictures' verification hashes when the parts hold them."""
    from encoder.search.verify import attachment

    out = m.index_attachments()
    if merged.hashes is not None:
        out.update(attachment(list(merged.ids), merged.hashes, merged.flat))
    return out


def _method(method: str, options: dict[str, Any]):
    from encoder.search.methods import get_method

    return get_method(method, **options)


def _item_size(location: str) -> tuple[int, int]:
    """(w, h) of one image of a source: a file's header, as the one-process path reads it; a URL's image."""
    return sources.open_item(location).size if sources.is_url(location) else image_size(location)


def _job_views(m, work: Path, manifest: sources.Manifest) -> None:
    """Set ``m``'s view set as the one-process path does (``views="auto"``: :func:`encoder.search.views.auto_views`
    on the same evenly spaced files, through the method's own ``resolve_views``), once per job: the choice is
    kept in the work folder for the tasks and for a rerun."""
    path = Path(work) / VIEWS
    if path.is_file():
        kept = json.loads(path.read_text())
        m.views, m.views_auto = kept["view_set"], kept["views_auto"]
        return
    size = manifest.spec["shard_size"]
    rows = view_sample(manifest.n_images)
    shards = {s: sources.shard_rows(work, s)[1] for s in sorted({r // size for r in rows})}
    m.resolve_views([shards[r // size][r % size] for r in rows], size_of=_item_size)
    write_json(path, {"view_set": m.views, "views_auto": m.views_auto, "verify": bool(getattr(m, "verifying", False))})


def _hash_spec(method, options: dict[str, Any]) -> dict[str, Any]:
    return {"method": method.name, "draft": method.draft, "alpha": method.alpha}


def _code_spec(method, options: dict[str, Any]) -> dict[str, Any]:
    return {
        "method": method.name,
        "checkpoint": str(Path(options["checkpoint"]).absolute()),
        "batch_size": int(options.get("batch_size") or 256),
        "views": method.views,  # as asked ("auto" is decided from the listing: _job_views)
    }


def _no_views(m, work: Path, manifest: sources.Manifest) -> None:
    """Hashes have one row per picture: nothing to decide."""


# Per vector kind (Method.kind): the shard task, the spec a task rebuilds the method from, whether
# the index keeps flat-image flags, and what the driver decides from the listing before the tasks run.
_KINDS = {
    "hash": (hash_shard, _hash_spec, True, _no_views),
    "code": (encode_shard, _code_spec, False, _job_views),
}


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
        ``{"index": Index, "skipped": [(location, reason)], "shards": n, "ran": shards run now,
        "images": files those shards held (as the progress bar counts them)}``.
    """
    from encoder.search.index import Index
    from encoder.search.lock import writer_lock

    m = _method(method, options)
    shard_task, spec, keeps_flat, decide = _KINDS[m.kind]
    manifest = sources.make_manifest(source, work, spec(m, options), shard_size)
    decide(m, Path(work), manifest)
    todo = sorted(set(range(manifest.n_shards)) - parts.done_shards(work, manifest.n_shards))
    task = task or shard_task
    run = {"engine": engine, "workers": workers, "address": address, "progress": progress}
    done = runners.run(task, work, todo, **run)
    merged, built = _merge_parts(work, manifest.n_shards, m, run)
    per = m.index_options().get("views", 1)  # rows per picture: its gallery views
    ids = merged.ids if per == 1 else [i for i in merged.ids for _ in range(per)]
    idx = Index.create(
        m.name,
        m.version,
        merged.vectors.reshape(len(merged.ids) * per, -1),
        ids,
        kind=m.kind,
        flat=merged.flat if keeps_flat else None,
        root=manifest.root,
        extra=m.index_meta(),
        attachments=_attachments(m, merged),
        built=built,
        **m.index_options(),
    )
    with writer_lock(output):
        idx.save(output)
    named = [(i if sources.is_url(i) else os.path.join(manifest.root, i), r) for i, r in merged.skipped]
    skipped = [tuple(s) for s in manifest.skipped] + named
    return {"index": idx, "skipped": skipped, "shards": manifest.n_shards, "ran": len(todo), "images": done["images"]}

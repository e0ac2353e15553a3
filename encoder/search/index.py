"""On-disk similarity index: vectors + ids + meta + FAISS index, method-agnostic.

An index directory holds::

    meta.json     method, version (hash definition or model fingerprint), metric, vector kind,
                  faiss type, count, root folder, decode mode
    ids.json      relative POSIX paths, in row order (an id repeated per view, see below)
     or ids.parquet one string column ``id`` (from ``IDS_PARQUET_MIN`` rows, pyarrow installed),
                  read as an immutable :class:`~encoder.search.index_files.IdColumn`, not a list
    hashes.npy    (N,8) uint8 packed 64-bit hashes   (kind "hash", Hamming metric)
     or codes.npy (N,D) float32 codes                 (kind "code", "l2" or "cosine" metric)
    index.faiss   the FAISS index built from the vectors
    index.ivfdata (an IVF merged on disk from a job's parts, :mod:`encoder.search.ondisk`) its
                  inverted lists, memory-mapped read-only from beside index.faiss wherever the
                  folder is moved; ``add``/``remove`` read them into RAM first and the folder
                  saved after holds them in index.faiss

Every write replaces the whole directory atomically (encoder.atomic.atomic_dir), so an
interrupted ``add`` or ``remove`` leaves the old index intact. Writers of one index exclude
each other with :func:`encoder.search.lock.writer_lock` (held from load to save); readers need
no lock. Adding appends new rows without touching old ones; removing drops rows by id (the
list of flat images, meta ``flat``, follows both). Indexes of another method, version, alpha
mode or decode mode are refused with a message naming both.

Several views per image (code indexes made with ``views=V`` > 1, meta ``views``; see
:mod:`encoder.search.views`): each id has V consecutive rows, its first the whole picture
(:meth:`Index.rows` gives it). ``len`` and meta ``count`` count images, :attr:`Index.n_rows` rows;
:meth:`Index.search` returns distinct ids, each at the best distance of its views.

Binary index choice: ``IndexBinaryFlat`` (exact) up to ``HNSW_MIN`` hashes, ``IndexBinaryIVF``
(1,024 lists, nprobe 256) beyond (approximate; ms/query and recall@5 vs exact flat at 1M and 4M
are measured in bench/scale_bench.py part 5); ``IndexBinaryHNSW`` on request.

Float codes: :mod:`encoder.search.ann` chooses the FAISS index by size and memory budget (``Flat``
exact up to 100k codes, ``IVF`` beyond, ``OPQ+IVF+PQ`` under a memory budget, or any factory
string), tunes ``nprobe``/``efSearch`` to recall@5 >= 0.95 against exact (meta ``search_params``
and ``tuned_recall``), and :meth:`Index.load` can memory-map codes and index (``mmap=True``).
Adding codes to a trained IVF/PQ index reuses its training; it is retrained only when the
automatic choice changes with the new size.

Example:
    >>> import numpy as np
    >>> idx = Index.create("phash", "phash-v1", np.zeros((2, 8), np.uint8), ["a.jpg", "b.jpg"], kind="hash")
    >>> idx.meta["kind"]                       # told by the method, never guessed from the dtype
    'hash'
    >>> distances, ids = idx.search(np.zeros((1, 8), np.uint8), k=5)
    >>> ids[0]
    ['a.jpg', 'b.jpg']
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from encoder.atomic import atomic_dir, save_npy, write_json
from encoder.search import ann, ondisk
from encoder.search.errors import CorruptIndexError, IndexBusyError, IndexMismatchError
from encoder.search.index_files import (
    ATTACHMENT_NAME,
    INDEX_FILES,
    IdColumn,
    faiss_reason,
    first_rows,
    ids_at,
    ids_in,
    read_attachments,
    read_ids,
    read_json,
    read_vectors,
    write_ids,
)
from encoder.search.views import check_view_rows, merge_best

__all__ = ["Index", "IdColumn", "IndexMismatchError", "CorruptIndexError", "IndexBusyError", "HNSW_MIN"]

FORMAT_VERSION = 1
# Exact Hamming scans stay cheap up to a few million hashes; from HNSW_MIN an IVF probed at a quarter
# of its lists keeps top-5 recall >= 0.99 on random and near-duplicate 64-bit hashes at about a third
# of the scan's time, where BinaryHNSW stays near 0.92 (bench/scale_bench.py part 5), so HNSW is
# built only on request. The name HNSW_MIN is kept for the callers of the threshold.
HNSW_MIN = 2_000_000
IVF_LISTS = 1024
IVF_PROBE_SHARE = 4  # nprobe = nlist / 4
IVF_TRAIN_PER_LIST = 64


def _binary_ivf(hashes: np.ndarray, d: int):
    """IndexBinaryIVF over (N,8) uint8 hashes: ``IVF_LISTS`` lists (at most one per 39 hashes, FAISS's
    least training per list), trained on a seeded sample, probed at ``nlist / IVF_PROBE_SHARE``."""
    nlist = max(1, min(IVF_LISTS, len(hashes) // 39))
    index = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(d), d, nlist)
    sample = np.random.default_rng(0).choice(len(hashes), min(len(hashes), nlist * IVF_TRAIN_PER_LIST), replace=False)
    index.train(np.ascontiguousarray(hashes[np.sort(sample)], dtype=np.uint8))
    index.nprobe = max(1, nlist // IVF_PROBE_SHARE)
    return index


def _binary_index(hashes: np.ndarray, faiss_type: str = "auto"):
    """(FAISS binary index over (N,8) uint8 hashes, its type): BinaryFlat, or BinaryIVF from HNSW_MIN;
    BinaryHNSW on request."""
    if faiss_type == "auto":
        faiss_type = "BinaryIVF" if len(hashes) >= HNSW_MIN else "BinaryFlat"
    d = hashes.shape[1] * 8
    index: faiss.IndexBinary
    if faiss_type == "BinaryFlat":
        index = faiss.IndexBinaryFlat(d)
    elif faiss_type == "BinaryIVF":
        if not len(hashes):
            raise ValueError("faiss_type='BinaryIVF' needs hashes to train on, got none; use 'BinaryFlat'")
        index = _binary_ivf(hashes, d)
    elif faiss_type == "BinaryHNSW":
        hnsw = faiss.IndexBinaryHNSW(d, 32)
        hnsw.hnsw.efSearch = 128
        index = hnsw
    else:
        raise ValueError(
            f"faiss_type={faiss_type!r} must be 'auto', 'BinaryFlat', 'BinaryIVF' or 'BinaryHNSW' for hashes"
        )
    if len(hashes):
        index.add(np.ascontiguousarray(hashes, dtype=np.uint8))
    return index, faiss_type


class _HashKind:
    """(N,8) uint8 packed hashes, Hamming distance, a FAISS binary index; remembers flat images.

    ``binary``: packed bits (flat images, duplicate groups); ``views``: several rows per image
    allowed; ``mmap``: vectors and FAISS index memory-mapped on request (a binary index is small).
    """

    name, file, dtype, dist_dtype, bits = "hash", "hashes.npy", np.uint8, np.int32, 8
    binary, views, mmap, faiss_name = True, False, False, "FAISS binary index"

    def meta(self, metric: str, memory_budget: int | None, search_params: str) -> dict:
        return {"metric": "hamming"}

    def rebuild(self, idx: Index, appended: int | None) -> None:
        idx.faiss_index, idx.meta["faiss_type"] = _binary_index(idx.vectors, idx.meta.get("faiss_type_request", "auto"))

    def adopt(self, idx: Index, built: ann.Built) -> None:
        raise ValueError("a FAISS index built elsewhere is for code indexes; a hash index builds its own")

    def search(self, idx: Index, q: np.ndarray, k: int, params: str | None):
        return idx.faiss_index.search(q, k)

    def describe(self, meta: dict) -> str:
        return f"{meta['method']}, {meta['faiss_type']}"

    def write(self, index, file: Path) -> None:
        faiss.write_index_binary(index, str(file))

    def read(self, file: Path, meta: dict, mmap: bool):
        return faiss.read_index_binary(str(file))


class _CodeKind:
    """(N,D) float32 codes, L2 or cosine, a FAISS index chosen and tuned by :mod:`encoder.search.ann`."""

    name, file, dtype, dist_dtype, bits = "code", "codes.npy", np.float32, np.float32, 1
    binary, views, mmap, faiss_name = False, True, True, "FAISS index"

    def meta(self, metric: str, memory_budget: int | None, search_params: str) -> dict:
        ann.check_metric(metric)
        return {"metric": metric, "memory_budget": memory_budget, "search_params_request": search_params}

    def rebuild(self, idx: Index, appended: int | None) -> None:
        m = idx.meta
        request, metric = m.get("faiss_type_request", "auto"), m["metric"]
        n, d = idx.vectors.shape
        want = ann.choose_factory(n, d, m.get("memory_budget")) if request == "auto" else request
        have = m.get("faiss_type", "")
        if idx.faiss_index is not None and (want == have or request == "auto" and ann.still_fits(have, want)):
            want = have
            if idx.source is not None:  # a memory-mapped index is read-only: read it whole
                idx.faiss_index, idx.source = ann.read(str(idx.source / "index.faiss")), None
            # lists merged on disk are read-only and served: changes go to a copy in RAM
            idx.faiss_index = ondisk.in_memory(idx.faiss_index)
            if appended is not None:  # keep the training (IVF lists, PQ codebooks), add the new rows
                ann.add_chunked(idx.faiss_index, idx.vectors[n - appended :], metric)
            else:
                idx.faiss_index = ann.refill(idx.faiss_index, idx.vectors, metric)
            params, recall = ann.tune(idx.faiss_index, idx.vectors, metric, m.get("search_params_request", "auto"))
        else:
            built = ann.build(
                idx.vectors,
                metric,
                request,
                memory_budget=m.get("memory_budget"),
                search_params=m.get("search_params_request", "auto"),
            )
            idx.faiss_index, want, params, recall = built.index, built.factory, built.search_params, built.recall
            idx.source = None
        m["faiss_type"], m["search_params"], m["tuned_recall"] = want, params, recall

    def adopt(self, idx: Index, built: ann.Built) -> None:
        """Keep ``built`` (over exactly the index's rows) as the FAISS index, with its type and tuning."""
        if built.index.ntotal != len(idx.vectors):
            raise ValueError(f"built index holds {built.index.ntotal} rows, expected {len(idx.vectors)} codes")
        idx.faiss_index = built.index
        idx.meta.update(faiss_type=built.factory, search_params=built.search_params, tuned_recall=built.recall)

    def search(self, idx: Index, q: np.ndarray, k: int, params: str | None):
        params = idx.meta.get("search_params", "") if params is None else params
        return ann.search(idx.faiss_index, q, k, idx.meta["metric"], params, idx.vectors)

    def describe(self, meta: dict) -> str:
        recall = f", recall@5 vs exact {meta['tuned_recall']:.3f}" if meta.get("tuned_recall") is not None else ""
        params = f", {meta['search_params']}" if meta.get("search_params") else ""
        return f"{meta['method']} {meta['version']}, {meta['faiss_type']}, {meta['metric']}{params}{recall}"

    def write(self, index, file: Path) -> None:
        ondisk.write(index, file)

    def read(self, file: Path, meta: dict, mmap: bool):
        index = ann.read(str(file), mmap)
        ann.set_params(index, meta.get("search_params", ""))
        return index


_KINDS: dict[str, _HashKind | _CodeKind] = {"hash": _HashKind(), "code": _CodeKind()}


@dataclass
class Index:
    """Vectors, their ids (a list, or an :class:`IdColumn` read from ids.parquet) and how they were
    made; see the module docstring for the files."""

    meta: dict[str, Any]
    ids: Sequence[str]
    vectors: np.ndarray
    faiss_index: Any = field(default=None, repr=False)
    source: Path | None = field(default=None, repr=False)  # directory it was memory-mapped from
    attachments: dict[str, bytes] = field(default_factory=dict, repr=False)  # see attach()

    @classmethod
    def create(
        cls,
        method: str,
        version: str,
        vectors: np.ndarray,
        ids: Sequence[str],
        *,
        kind: str,
        flat: Sequence[bool] | np.ndarray | None = None,
        root: str = "",
        extra: dict | None = None,
        faiss_type: str = "auto",
        metric: str = "l2",
        memory_budget: int | None = None,
        search_params: str = "auto",
        attachments: Mapping[str, bytes] | None = None,
        views: int = 1,
        built: ann.Built | None = None,
    ) -> Index:
        """New index of N vectors ((N,8) uint8 hashes or (N,D) float32 codes) and N ids (an
        :class:`IdColumn` is kept as it is, anything else copied into a list).

        ``kind`` (``"hash"``/``"code"``): what ``method`` makes (its :attr:`Method.kind`); the index
        does not know methods. ``flat`` (N,) bool marks low-information images (hash indexes; dedup
        leaves them out). For codes: ``metric`` ``"l2"``/``"cosine"``, ``faiss_type`` ``"auto"`` or a
        FAISS factory string, ``memory_budget`` in bytes, ``search_params`` ``"auto"`` or e.g.
        ``"nprobe=32"`` (:mod:`encoder.search.ann`), ``built`` a FAISS index tuned over them elsewhere.
        ``attachments``: see :meth:`attach`. ``views`` (codes): rows per image, each id's ``views``
        rows consecutive (module docstring).
        """
        if kind not in _KINDS:
            raise ValueError(f"kind={kind!r} must be one of {tuple(_KINDS)}")
        k = _KINDS[kind]
        vectors = np.asarray(vectors)
        if vectors.ndim != 2:
            raise ValueError(f"vectors must be 2-D, got shape {vectors.shape}")
        if len(vectors) != len(ids):
            raise ValueError(f"{len(vectors)} vectors but {len(ids)} ids")
        if views != 1 and (not k.views or not isinstance(views, int) or views < 1):
            raise ValueError(f"views={views!r} must be 1, or a positive int for a code index")
        problem = check_view_rows(ids, views)
        if problem:
            raise ValueError(problem)
        vectors = vectors.astype(k.dtype, copy=False)
        meta = {
            "format": FORMAT_VERSION,
            "method": method,
            "version": version,
            "kind": kind,
            **k.meta(metric, memory_budget, search_params),
            "dim": int(vectors.shape[1]) * k.bits,
            "faiss_type_request": faiss_type,
            "root": str(root),
            **({"views": views} if views != 1 else {}),
            **(extra or {}),
        }
        idx = cls(meta, ids if isinstance(ids, IdColumn) else list(ids), vectors)
        idx._set_flat([], ids, flat)
        idx.attach(attachments or {})
        idx._rebuild(built=built)
        return idx

    def attach(self, files: Mapping[str, bytes]) -> None:
        """Keep ``{file name: bytes}`` in the index folder beside the vectors (an ae index keeps its
        model's ONNX graphs there, so a query needs neither torch nor the checkpoint). They live as
        long as the index; meta.json records each one's size and SHA-256, checked on load."""
        for name, data in files.items():
            if not ATTACHMENT_NAME.fullmatch(name) or name in INDEX_FILES:
                raise ValueError(f"attachment name {name!r} must be a plain file name other than {sorted(INDEX_FILES)}")
            self.attachments[name] = bytes(data)
        self.meta["attachments"] = {
            n: {"bytes": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in sorted(self.attachments.items())
        }

    @property
    def kind(self) -> str:
        """``"hash"`` or ``"code"``."""
        return self.meta["kind"]

    @property
    def _kind(self):
        return _KINDS[self.meta["kind"]]

    @property
    def binary(self) -> bool:
        """Packed hashes compared by Hamming (flat images and duplicate groups apply), not float codes."""
        return self._kind.binary

    def _set_flat(self, old: Sequence[str], ids: Sequence[str], flat) -> None:
        """meta["flat"] (hash indexes): the ``old`` flat ids still present plus the flagged new ones, sorted."""
        if flat is not None and not self.binary:
            raise ValueError("flat flags belong to hash indexes; this index holds codes")
        if not self.binary:
            return
        # the old flat ids (few) looked up in the index's ids, never a set of every id
        present = set(ids_at(self.ids, np.flatnonzero(ids_in(self.ids, old)))) if len(old) else set()
        if flat is None:
            self.meta["flat"] = sorted(present)
            return
        flat = np.asarray(flat, bool)
        if flat.shape != (len(ids),):
            raise ValueError(f"flat has shape {flat.shape}, expected ({len(ids)},)")
        new = set(ids) if present else set()
        self.meta["flat"] = sorted({i for i in present if i not in new} | set(ids_at(ids, np.flatnonzero(flat))))

    def _rebuild(self, appended: int | None = None, built: ann.Built | None = None) -> None:
        """Rebuild the FAISS index after a change; ``appended``: only that many rows were added at the end;
        ``built``: a FAISS index over these rows built elsewhere, kept instead."""
        if built is None:
            self._kind.rebuild(self, appended)
        else:
            self._kind.adopt(self, built)
        self.meta["count"] = len(self)

    def __len__(self) -> int:
        """Images (distinct ids)."""
        return len(self.ids) // self.views

    @property
    def views(self) -> int:
        """Rows per image (1 unless made with ``views``)."""
        return self.meta.get("views", 1)

    @property
    def n_rows(self) -> int:
        """Rows of vectors (``len(self) * self.views``)."""
        return len(self.ids)

    @property
    def vector_file(self) -> str:
        return self._kind.file

    def add(self, vectors: np.ndarray, ids: Sequence[str], flat: Sequence[bool] | np.ndarray | None = None) -> None:
        """Append rows; old rows are kept as they are. Ids already present are replaced (all their
        rows; with views, each new id's rows consecutive, as in :meth:`create`).

        ``flat`` (hash indexes): (M,) bool per new row; the index's flat list is updated with it
        (a replaced id takes its new flag).
        """
        vectors = np.asarray(vectors, dtype=self.vectors.dtype)
        if len(vectors) != len(ids):
            raise ValueError(f"{len(vectors)} vectors but {len(ids)} ids")
        if len(vectors) and vectors.shape[1] != self.vectors.shape[1]:
            raise IndexMismatchError(f"vector width {vectors.shape[1]} != index width {self.vectors.shape[1]}")
        new = set(ids)
        problem = check_view_rows(ids, self.views)
        if problem:
            raise ValueError(f"ids to add: {problem}")
        keep = np.flatnonzero(~ids_in(self.ids, new))
        replaced = len(keep) < len(self.ids)
        self.vectors = np.concatenate([self.vectors[keep], vectors])
        self.ids = ids_at(self.ids, keep) + list(ids)
        self._set_flat(self.meta.get("flat", []), ids, flat)
        self._rebuild(None if replaced else len(vectors))

    def remove(self, ids: Sequence[str]) -> list[str]:
        """Drop the rows of ids (and from the flat list); returns the ids that were not in the index."""
        hit = ids_in(self.ids, ids)
        present = set(ids_at(self.ids, np.flatnonzero(hit)))
        missing = [x for x in ids if x not in present]
        keep = np.flatnonzero(~hit)
        self.vectors = self.vectors[keep]
        self.ids = ids_at(self.ids, keep)
        self._set_flat(self.meta.get("flat", []), [], None)
        self._rebuild()
        return missing

    def describe(self) -> str:
        """One line: method (and model), FAISS type, metric, search parameters and tuned recall (codes)."""
        return self._kind.describe(self.meta)

    def flat_note(self) -> str:
        """``"N flat, "`` for a hash index (images too plain to hash usefully), ``""`` for codes."""
        return f"{len(self.meta['flat'])} flat, " if self.binary else ""

    def flat_mask(self) -> np.ndarray:
        """(N,) bool: which rows are flat (low-information) images."""
        return ids_in(self.ids, self.meta.get("flat", []))

    def search(
        self,
        queries: np.ndarray,
        k: int = 5,
        params: str | None = None,
    ) -> tuple[np.ndarray, list[list[str]]]:
        """Top-k neighbours: (Q,8) uint8 or (Q,D) float32 -> (distances (Q,k') , ids Q lists).

        ``k' = min(k, len(index))``; distances are Hamming bits (int), squared L2 or ``1 - cos``
        (float). ``params`` overrides the stored search parameters of a code index (``"nprobe=64"``).
        With views, FAISS finds ``k' x views`` rows and each id is kept once, at its best distance.
        """
        if not isinstance(k, (int, np.integer)) or k <= 0:
            raise ValueError(f"k={k} must be a positive integer")
        q = np.ascontiguousarray(queries, dtype=self.vectors.dtype)
        if q.ndim != 2 or q.shape[1] != self.vectors.shape[1]:
            raise ValueError(f"queries shape {q.shape} does not match index width {self.vectors.shape[1]}")
        kk = min(int(k), len(self))
        if kk == 0 or len(q) == 0:
            return np.zeros((len(q), 0), self._kind.dist_dtype), [[] for _ in range(len(q))]
        D, I = self._kind.search(self, q, min(kk * self.views, self.n_rows), params)
        found = [ids_at(self.ids, row[row >= 0]) for row in I]  # only the found rows become str
        if self.views == 1:
            return D, found
        dist, ids = merge_best([(D, found)], kk)  # one id per image, at its best view
        return np.array([row + [np.inf] * (kk - len(row)) for row in dist], D.dtype).reshape(len(q), kk), ids

    def rows(self, ids: Sequence[str]) -> np.ndarray:
        """Row numbers of ids, each id's first row (with views: the whole picture; KeyError names a missing one)."""
        return first_rows(self.ids, ids)

    def save(self, path: str | Path) -> None:
        """Write the directory atomically (old contents survive a crash); ids.json or ids.parquet by size.

        Memory-mapped codes and on-disk IVF lists (files nothing ever writes into once renamed in)
        are hard-linked into the new folder, or copied where the file system cannot link.
        """
        with atomic_dir(path) as tmp:
            backing = ondisk.npy_file(self.vectors)
            if backing is not None:  # memory-mapped from a whole .npy: link it, never read it into RAM
                ondisk.link_or_copy(backing, tmp / self.vector_file)
            else:
                save_npy(tmp / self.vector_file, self.vectors)
            write_ids(tmp, self.ids)
            write_json(tmp / "meta.json", self.meta)
            self._kind.write(self.faiss_index, tmp / "index.faiss")
            for name, data in self.attachments.items():
                (tmp / name).write_bytes(data)

    @classmethod
    def load(cls, path: str | Path, mmap: bool = False) -> Index:
        """Read an index directory; ``mmap=True`` memory-maps a code index (codes.npy and index.faiss).

        Raises:
            FileNotFoundError: no index there (no meta.json), or one of its files is missing.
            CorruptIndexError: a file is unreadable or inconsistent (truncated, edited, pickled,
                of another kind); the message names the file. Nothing is ever unpickled.
        """
        path = Path(path)
        if not (path / "meta.json").is_file():
            raise FileNotFoundError(f"not an index directory (no meta.json): {path}")
        meta = read_json(path / "meta.json", dict)
        if meta.get("format") != FORMAT_VERSION:
            raise CorruptIndexError(f"{path}: index format {meta.get('format')!r}, expected {FORMAT_VERSION}")
        kind = _KINDS.get(meta.get("kind"))
        if kind is None:
            raise CorruptIndexError(f"{path / 'meta.json'}: kind={meta.get('kind')!r}, expected one of {tuple(_KINDS)}")
        ids = read_ids(path)
        vf = path / kind.file
        mmap = mmap and kind.mmap
        vectors = read_vectors(vf, kind.dtype, mmap)
        if len(vectors) != len(ids):
            raise CorruptIndexError(f"{path}: {len(vectors)} vectors but {len(ids)} ids (corrupt index)")
        views = meta.get("views", 1)
        problem = (
            "views must be a positive int"
            if not isinstance(views, int) or views < 1
            else (check_view_rows(ids, views) if views > 1 else None)
        )
        if problem:
            ids_file = "ids.parquet" if isinstance(ids, IdColumn) else "ids.json"
            raise CorruptIndexError(f"{path / ids_file}: {problem} (meta.json says views={views!r})")
        bits = vectors.shape[1] * kind.bits
        if meta.get("dim", bits) != bits:
            raise CorruptIndexError(f"{vf}: vectors of width {bits} but meta.json says dim={meta.get('dim')}")
        fi = cls._read_faiss(path / "index.faiss", kind, meta, mmap)
        if fi.ntotal != len(ids) or fi.d != bits:
            raise CorruptIndexError(
                f"{path / 'index.faiss'}: FAISS index has {fi.ntotal} rows of width {fi.d} "
                f"but the index holds {len(ids)} of width {bits} (corrupt index)"
            )
        return cls(meta, ids, vectors, fi, path if mmap else None, read_attachments(path, meta))

    @staticmethod
    def _read_faiss(file: Path, kind, meta: dict, mmap: bool):
        if not file.is_file():
            raise FileNotFoundError(f"index file missing: {file}")
        try:
            return kind.read(file, meta, mmap)
        except RuntimeError as e:
            raise CorruptIndexError(f"{file}: not a readable {kind.faiss_name} ({faiss_reason(e)})") from None

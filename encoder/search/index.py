"""On-disk similarity index: vectors + ids + meta + FAISS index, method-agnostic.

An index directory holds::

    meta.json     method, version (hash definition or model fingerprint), metric, vector kind,
                  faiss type, count, root folder, decode mode
    ids.json      relative POSIX paths, in row order
    hashes.npy    (N,8) uint8 packed 64-bit hashes   (kind "hash", Hamming metric)
     or codes.npy (N,D) float32 codes                 (kind "code", "l2" or "cosine" metric)
    index.faiss   the FAISS index built from the vectors

Every write replaces the whole directory atomically (encoder.atomic.atomic_dir), so an
interrupted ``add`` or ``remove`` leaves the old index intact. Adding appends new rows
without touching old ones; removing drops rows by id. Indexes of another method, version
or decode mode are refused with a message naming both.

Binary index choice: ``IndexBinaryFlat`` (exact) up to ``HNSW_MIN`` hashes, ``IndexBinaryHNSW``
beyond (approximate; speed and recall vs exact at 1M are measured in bench/phash_bench.py).

Float codes: :mod:`encoder.search.ann` chooses the FAISS index by size and memory budget (``Flat``
exact up to 100k codes, ``IVF`` beyond, ``OPQ+IVF+PQ`` under a memory budget, or any factory
string), tunes ``nprobe``/``efSearch`` to recall@5 >= 0.95 against exact (meta ``search_params``
and ``tuned_recall``), and :meth:`Index.load` can memory-map codes and index (``mmap=True``).
Adding codes to a trained IVF/PQ index reuses its training; it is retrained only when the
automatic choice changes with the new size.

Example:
    >>> import numpy as np
    >>> idx = Index.create("phash", "phash-v1", np.zeros((2, 8), np.uint8), ["a.jpg", "b.jpg"])
    >>> distances, ids = idx.search(np.zeros((1, 8), np.uint8), k=5)
    >>> ids[0]
    ['a.jpg', 'b.jpg']
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import faiss
import numpy as np

from encoder.search import ann
from encoder.atomic import atomic_dir, save_npy, write_json

FORMAT_VERSION = 1
# Exact Hamming scans are cheap: bench/phash_bench.py measured 0.5 ms/query (batched, 2 shared
# cores) at 1M hashes. HNSW only pays beyond a few million, and its recall
# is modest on random 64-bit codes (recall@5 vs exact at 1M: 0.85 with M=32/ef=128 at
# 0.15 ms/query, 0.33 with M=16/ef=64), so exact BinaryFlat is the default up to HNSW_MIN.
HNSW_MIN = 2_000_000


class IndexMismatchError(ValueError):
    """An index and the hashes/codes offered to it come from different methods or versions."""


class CorruptIndexError(ValueError):
    """A file of an index directory is unreadable or inconsistent; the message names it."""


def _read_json(file: Path, want: type):
    if not file.is_file():
        raise FileNotFoundError(f"index file missing: {file}")
    try:
        obj = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise CorruptIndexError(f"{file}: not valid JSON ({e})") from None
    if not isinstance(obj, want):
        raise CorruptIndexError(f"{file}: expected a JSON {want.__name__}, got {type(obj).__name__}")
    return obj


def _read_vectors(file: Path, dtype, mmap: bool = False) -> np.ndarray:
    """A 2-D .npy of ``dtype``; pickled or object data is refused, never loaded."""
    if not file.is_file():
        raise FileNotFoundError(f"index file missing: {file}")
    try:
        v = np.load(file, allow_pickle=False, mmap_mode="r" if mmap else None)
    except (ValueError, OSError, EOFError) as e:
        raise CorruptIndexError(f"{file}: not a plain .npy array ({e})") from None
    if not isinstance(v, np.ndarray) or v.ndim != 2 or v.dtype != dtype:
        raise CorruptIndexError(f"{file}: expected a 2-D {np.dtype(dtype).name} array, "
                                f"got {getattr(v, 'shape', '?')} {getattr(v, 'dtype', type(v).__name__)}")
    return v


def _read_faiss(file: Path, binary: bool, mmap: bool = False):
    if not file.is_file():
        raise FileNotFoundError(f"index file missing: {file}")
    try:
        return faiss.read_index_binary(str(file)) if binary else ann.read(str(file), mmap)
    except RuntimeError as e:  # FAISS's C++ errors: keep the reason, drop its source location
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        reason = ("file ends early (truncated?)" if "read error" in msg
                  else re.sub(r"^.* at \S+:\d+: (Error: )?", "", msg)[:200])
        raise CorruptIndexError(f"{file}: not a readable FAISS {'binary ' if binary else ''}index ({reason})") from None


def build_faiss(vectors: np.ndarray, kind: str, faiss_type: str = "auto"):
    """FAISS index over ``vectors``: (N,8) uint8 hashes or (N,D) float32 codes."""
    if kind == "hash":
        d = vectors.shape[1] * 8
        if faiss_type == "auto":
            faiss_type = "BinaryHNSW" if len(vectors) >= HNSW_MIN else "BinaryFlat"
        if faiss_type == "BinaryFlat":
            index = faiss.IndexBinaryFlat(d)
        elif faiss_type == "BinaryHNSW":
            index = faiss.IndexBinaryHNSW(d, 32)
            index.hnsw.efSearch = 128
        else:
            raise ValueError(f"faiss_type={faiss_type!r} must be 'auto', 'BinaryFlat' or 'BinaryHNSW' for hashes")
        if len(vectors):
            index.add(np.ascontiguousarray(vectors, dtype=np.uint8))
        return index, faiss_type
    if kind == "code":
        built = ann.build(vectors, "l2", faiss_type)
        return built.index, built.factory
    raise ValueError(f"kind={kind!r} must be 'hash' or 'code'")


@dataclass
class Index:
    """Vectors, their ids and how they were made; see the module docstring for the files."""

    meta: dict[str, Any]
    ids: list[str]
    vectors: np.ndarray
    faiss_index: Any = field(default=None, repr=False)
    source: Path | None = field(default=None, repr=False)  # directory it was memory-mapped from

    @classmethod
    def create(cls, method: str, version: str, vectors: np.ndarray, ids: Sequence[str], *,
               root: str = "", extra: dict | None = None, faiss_type: str = "auto", metric: str = "l2",
               memory_budget: int | None = None, search_params: str = "auto") -> "Index":
        """New index from (N,8) uint8 hashes or (N,D) float32 codes and N ids.

        For codes: ``metric`` ``"l2"``/``"cosine"``, ``faiss_type`` ``"auto"`` or a FAISS factory
        string, ``memory_budget`` in bytes, ``search_params`` ``"auto"`` or e.g. ``"nprobe=32"``
        (see :mod:`encoder.search.ann`).
        """
        vectors = np.asarray(vectors)
        kind = "hash" if vectors.dtype == np.uint8 else "code"
        if vectors.ndim != 2:
            raise ValueError(f"vectors must be 2-D, got shape {vectors.shape}")
        if len(vectors) != len(ids):
            raise ValueError(f"{len(vectors)} vectors but {len(ids)} ids")
        if len(set(ids)) != len(ids):
            raise ValueError("ids must be unique")
        code_meta = {}
        if kind == "code":
            vectors = vectors.astype(np.float32)
            ann.check_metric(metric)
            code_meta = {"memory_budget": memory_budget, "search_params_request": search_params}
        meta = {"format": FORMAT_VERSION, "method": method, "version": version, "kind": kind,
                "metric": "hamming" if kind == "hash" else metric,
                "dim": int(vectors.shape[1]) * (8 if kind == "hash" else 1),
                "faiss_type_request": faiss_type, **code_meta, "root": str(root), **(extra or {})}
        idx = cls(meta, list(ids), vectors)
        idx._rebuild()
        return idx

    def _rebuild(self, appended: int | None = None) -> None:
        """Rebuild the FAISS index after a change; ``appended``: only that many rows were added at the end."""
        if self.meta["kind"] == "code":
            self._rebuild_codes(appended)
        else:
            self.faiss_index, t = build_faiss(self.vectors, "hash", self.meta.get("faiss_type_request", "auto"))
            self.meta["faiss_type"] = t
        self.meta["count"] = len(self.ids)

    def _rebuild_codes(self, appended: int | None) -> None:
        m = self.meta
        request, metric = m.get("faiss_type_request", "auto"), m["metric"]
        n, d = self.vectors.shape
        want = ann.choose_factory(n, d, m.get("memory_budget")) if request == "auto" else request
        have = m.get("faiss_type", "")
        if self.faiss_index is not None and (want == have or request == "auto" and ann.still_fits(have, want)):
            want = have
            if self.source is not None:  # a memory-mapped index is read-only: read it whole
                self.faiss_index, self.source = ann.read(str(self.source / "index.faiss")), None
            if appended is not None:  # keep the training (IVF lists, PQ codebooks), add the new rows
                ann.add_chunked(self.faiss_index, self.vectors[n - appended:], metric)
            else:
                self.faiss_index = ann.refill(self.faiss_index, self.vectors, metric)
            params, recall = ann.tune(self.faiss_index, self.vectors, metric, m.get("search_params_request", "auto"))
        else:
            built = ann.build(self.vectors, metric, request, memory_budget=m.get("memory_budget"),
                              search_params=m.get("search_params_request", "auto"))
            self.faiss_index, want, params, recall = built.index, built.factory, built.search_params, built.recall
            self.source = None
        m["faiss_type"], m["search_params"], m["tuned_recall"] = want, params, recall

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def vector_file(self) -> str:
        return "hashes.npy" if self.meta["kind"] == "hash" else "codes.npy"

    def check_compatible(self, method: str, version: str, **extra: Any) -> None:
        """Raise IndexMismatchError unless method, version and ``extra`` meta keys match."""
        for key, want in [("method", method), ("version", version), *extra.items()]:
            have = self.meta.get(key)
            if have != want:
                raise IndexMismatchError(
                    f"index {key} is {have!r} but the new data has {key} {want!r}; "
                    "hashes/codes of different definitions cannot be compared - build a new index")

    def add(self, vectors: np.ndarray, ids: Sequence[str]) -> None:
        """Append rows; old rows are kept as they are. Ids already present are replaced."""
        vectors = np.asarray(vectors, dtype=self.vectors.dtype)
        if len(vectors) != len(ids):
            raise ValueError(f"{len(vectors)} vectors but {len(ids)} ids")
        if len(vectors) and vectors.shape[1] != self.vectors.shape[1]:
            raise IndexMismatchError(f"vector width {vectors.shape[1]} != index width {self.vectors.shape[1]}")
        new = set(ids)
        if len(new) != len(ids):
            raise ValueError("ids to add must be unique")
        keep = [i for i, x in enumerate(self.ids) if x not in new]
        replaced = len(keep) < len(self.ids)
        self.vectors = np.concatenate([self.vectors[keep], vectors])
        self.ids = [self.ids[i] for i in keep] + list(ids)
        self._rebuild(None if replaced else len(vectors))

    def remove(self, ids: Sequence[str]) -> list[str]:
        """Drop rows by id; returns the ids that were not in the index."""
        gone = set(ids)
        missing = [x for x in ids if x not in set(self.ids)]
        keep = [i for i, x in enumerate(self.ids) if x not in gone]
        self.vectors = self.vectors[keep]
        self.ids = [self.ids[i] for i in keep]
        self._rebuild()
        return missing

    def search(self, queries: np.ndarray, k: int = 5, params: str | None = None,
               ) -> tuple[np.ndarray, list[list[str]]]:
        """Top-k neighbours: (Q,8) uint8 or (Q,D) float32 -> (distances (Q,k') , ids Q lists).

        ``k' = min(k, len(index))``; distances are Hamming bits (int), squared L2 or ``1 - cos``
        (float). ``params`` overrides the stored search parameters of a code index (``"nprobe=64"``).
        """
        if not isinstance(k, (int, np.integer)) or k <= 0:
            raise ValueError(f"k={k} must be a positive integer")
        q = np.ascontiguousarray(queries, dtype=self.vectors.dtype)
        if q.ndim != 2 or q.shape[1] != self.vectors.shape[1]:
            raise ValueError(f"queries shape {q.shape} does not match index width {self.vectors.shape[1]}")
        kk = min(int(k), len(self))
        if kk == 0 or len(q) == 0:
            return np.zeros((len(q), 0), self._dist_dtype()), [[] for _ in range(len(q))]
        if self.meta["kind"] == "code":
            params = self.meta.get("search_params", "") if params is None else params
            D, I = ann.search(self.faiss_index, q, kk, self.meta["metric"], params, self.vectors)
        else:
            D, I = self.faiss_index.search(q, kk)
        return D, [[self.ids[j] for j in row if j >= 0] for row in I]

    def _dist_dtype(self):
        return np.int32 if self.meta["kind"] == "hash" else np.float32

    def rows(self, ids: Sequence[str]) -> np.ndarray:
        """Row numbers of ids (KeyError names a missing one)."""
        pos = {x: i for i, x in enumerate(self.ids)}
        return np.array([pos[x] for x in ids], dtype=np.int64)

    def save(self, path: str | Path) -> None:
        """Write the directory atomically (old contents survive a crash)."""
        with atomic_dir(path) as tmp:
            save_npy(tmp / self.vector_file, self.vectors)
            write_json(tmp / "ids.json", self.ids)
            write_json(tmp / "meta.json", self.meta)
            if self.meta["kind"] == "hash":
                faiss.write_index_binary(self.faiss_index, str(tmp / "index.faiss"))
            else:
                faiss.write_index(self.faiss_index, str(tmp / "index.faiss"))

    @classmethod
    def load(cls, path: str | Path, mmap: bool = False) -> "Index":
        """Read an index directory; ``mmap=True`` memory-maps a code index (codes.npy and index.faiss).

        Raises:
            FileNotFoundError: no index there (no meta.json), or one of its files is missing.
            CorruptIndexError: a file is unreadable or inconsistent (truncated, edited, pickled,
                of another kind); the message names the file. Nothing is ever unpickled.
        """
        path = Path(path)
        if not (path / "meta.json").is_file():
            raise FileNotFoundError(f"not an index directory (no meta.json): {path}")
        meta = _read_json(path / "meta.json", dict)
        if meta.get("format") != FORMAT_VERSION:
            raise CorruptIndexError(f"{path}: index format {meta.get('format')!r}, expected {FORMAT_VERSION}")
        kind = meta.get("kind")
        if kind not in ("hash", "code"):
            raise CorruptIndexError(f"{path / 'meta.json'}: kind={kind!r}, expected 'hash' or 'code'")
        ids = _read_json(path / "ids.json", list)
        if not all(isinstance(i, str) for i in ids):
            raise CorruptIndexError(f"{path / 'ids.json'}: expected a list of path strings")
        vf = path / ("hashes.npy" if kind == "hash" else "codes.npy")
        mmap = mmap and kind == "code"
        vectors = _read_vectors(vf, np.uint8 if kind == "hash" else np.float32, mmap)
        if len(vectors) != len(ids):
            raise CorruptIndexError(f"{path}: {len(vectors)} vectors but {len(ids)} ids (corrupt index)")
        bits = vectors.shape[1] * (8 if kind == "hash" else 1)
        if meta.get("dim", bits) != bits:
            raise CorruptIndexError(f"{vf}: vectors of width {bits} but meta.json says dim={meta.get('dim')}")
        fi = _read_faiss(path / "index.faiss", binary=kind == "hash", mmap=mmap)
        if fi.ntotal != len(ids) or fi.d != bits:
            raise CorruptIndexError(f"{path / 'index.faiss'}: FAISS index has {fi.ntotal} rows of width {fi.d} "
                                    f"but the index holds {len(ids)} of width {bits} (corrupt index)")
        if kind == "code":
            ann.set_params(fi, meta.get("search_params", ""))
        return cls(meta, ids, vectors, fi, path if mmap else None)

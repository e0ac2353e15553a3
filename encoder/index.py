"""On-disk similarity index: vectors + ids + meta + FAISS index, method-agnostic.

An index directory holds::

    meta.json     method, version (hash definition or model fingerprint), metric, vector kind,
                  faiss type, count, root folder, decode mode
    ids.json      relative POSIX paths, in row order
    hashes.npy    (N,8) uint8 packed 64-bit hashes   (kind "hash", Hamming metric)
     or codes.npy (N,D) float32 codes                 (kind "code", L2 metric)
    index.faiss   the FAISS index built from the vectors

Every write replaces the whole directory atomically (encoder.atomic.atomic_dir), so an
interrupted ``add`` or ``remove`` leaves the old index intact. Adding appends new rows
without touching old ones; removing drops rows by id. Indexes of another method, version
or decode mode are refused with a message naming both.

Binary index choice: ``IndexBinaryFlat`` (exact) up to ``HNSW_MIN`` hashes, ``IndexBinaryHNSW``
beyond (approximate; speed and recall vs exact at 1M are measured in bench/phash_bench.py).

Example:
    >>> import numpy as np
    >>> idx = Index.create("phash", "phash-v1", np.zeros((2, 8), np.uint8), ["a.jpg", "b.jpg"])
    >>> distances, ids = idx.search(np.zeros((1, 8), np.uint8), k=5)
    >>> ids[0]
    ['a.jpg', 'b.jpg']
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import faiss
import numpy as np

from encoder.atomic import atomic_dir, save_npy, write_json

FORMAT_VERSION = 1
# Exact Hamming scans are cheap: bench/phash_bench.py measured 0.5 ms/query (batched, 2 shared
# cores) at 1M hashes. HNSW only pays beyond a few million, and its recall
# is modest on random 64-bit codes (recall@5 vs exact at 1M: 0.85 with M=32/ef=128 at
# 0.15 ms/query, 0.33 with M=16/ef=64), so exact BinaryFlat is the default up to HNSW_MIN.
HNSW_MIN = 2_000_000


class IndexMismatchError(ValueError):
    """An index and the hashes/codes offered to it come from different methods or versions."""


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
        if faiss_type == "auto":
            faiss_type = "Flat"
        index = faiss.index_factory(vectors.shape[1], faiss_type)
        if not index.is_trained:
            index.train(np.ascontiguousarray(vectors, dtype=np.float32))
        if len(vectors):
            index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        return index, faiss_type
    raise ValueError(f"kind={kind!r} must be 'hash' or 'code'")


@dataclass
class Index:
    """Vectors, their ids and how they were made; see the module docstring for the files."""

    meta: dict[str, Any]
    ids: list[str]
    vectors: np.ndarray
    faiss_index: Any = field(default=None, repr=False)

    @classmethod
    def create(cls, method: str, version: str, vectors: np.ndarray, ids: Sequence[str], *,
               root: str = "", extra: dict | None = None, faiss_type: str = "auto") -> "Index":
        """New index from (N,8) uint8 hashes or (N,D) float32 codes and N ids."""
        vectors = np.asarray(vectors)
        kind = "hash" if vectors.dtype == np.uint8 else "code"
        if vectors.ndim != 2:
            raise ValueError(f"vectors must be 2-D, got shape {vectors.shape}")
        if len(vectors) != len(ids):
            raise ValueError(f"{len(vectors)} vectors but {len(ids)} ids")
        if len(set(ids)) != len(ids):
            raise ValueError("ids must be unique")
        if kind == "code":
            vectors = vectors.astype(np.float32)
        meta = {"format": FORMAT_VERSION, "method": method, "version": version, "kind": kind,
                "metric": "hamming" if kind == "hash" else "l2", "dim": int(vectors.shape[1]) * (8 if kind == "hash" else 1),
                "faiss_type_request": faiss_type, "root": str(root), **(extra or {})}
        idx = cls(meta, list(ids), vectors)
        idx._rebuild()
        return idx

    def _rebuild(self) -> None:
        self.faiss_index, t = build_faiss(self.vectors, self.meta["kind"], self.meta.get("faiss_type_request", "auto"))
        self.meta["faiss_type"] = t
        self.meta["count"] = len(self.ids)

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
        self.vectors = np.concatenate([self.vectors[keep], vectors])
        self.ids = [self.ids[i] for i in keep] + list(ids)
        self._rebuild()

    def remove(self, ids: Sequence[str]) -> list[str]:
        """Drop rows by id; returns the ids that were not in the index."""
        gone = set(ids)
        missing = [x for x in ids if x not in set(self.ids)]
        keep = [i for i, x in enumerate(self.ids) if x not in gone]
        self.vectors = self.vectors[keep]
        self.ids = [self.ids[i] for i in keep]
        self._rebuild()
        return missing

    def search(self, queries: np.ndarray, k: int = 5) -> tuple[np.ndarray, list[list[str]]]:
        """Top-k neighbours: (Q,8) uint8 or (Q,D) float32 -> (distances (Q,k') , ids Q lists).

        ``k' = min(k, len(index))``; distances are Hamming bits (int) or squared L2 (float).
        """
        if not isinstance(k, (int, np.integer)) or k <= 0:
            raise ValueError(f"k={k} must be a positive integer")
        q = np.ascontiguousarray(queries, dtype=self.vectors.dtype)
        if q.ndim != 2 or q.shape[1] != self.vectors.shape[1]:
            raise ValueError(f"queries shape {q.shape} does not match index width {self.vectors.shape[1]}")
        kk = min(int(k), len(self))
        if kk == 0 or len(q) == 0:
            return np.zeros((len(q), 0), self._dist_dtype()), [[] for _ in range(len(q))]
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
    def load(cls, path: str | Path) -> "Index":
        """Read an index directory; FileNotFoundError / ValueError name what is wrong."""
        path = Path(path)
        if not (path / "meta.json").is_file():
            raise FileNotFoundError(f"not an index directory (no meta.json): {path}")
        meta = json.loads((path / "meta.json").read_text())
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"{path}: index format {meta.get('format')!r}, expected {FORMAT_VERSION}")
        ids = json.loads((path / "ids.json").read_text())
        vf = "hashes.npy" if meta["kind"] == "hash" else "codes.npy"
        vectors = np.load(path / vf, allow_pickle=False)
        if len(vectors) != len(ids):
            raise ValueError(f"{path}: {len(vectors)} vectors but {len(ids)} ids (corrupt index)")
        if meta["kind"] == "hash":
            fi = faiss.read_index_binary(str(path / "index.faiss"))
        else:
            fi = faiss.read_index(str(path / "index.faiss"))
        if fi.ntotal != len(ids):
            raise ValueError(f"{path}: FAISS index has {fi.ntotal} rows but {len(ids)} ids (corrupt index)")
        return cls(meta, ids, vectors, fi)

"""The evaluation side of the autoencoder method (``search.py evaluate``): features, gallery features
and exact ranking of decoded images, with views, mirrored queries and the hash verification of
:mod:`encoder.search.verify` done as the index and query path do them.

:class:`AutoencoderEvaluation` is a mixin of :class:`encoder.search.methods.AutoencoderMethod`; it uses
its ``encoder``, ``image_size``, ``views``, ``mirror``, ``workers`` and ``verifier`` (a
:class:`encoder.search.verify.Verifier`, or None).

With verification (view set ``"crops"``), features carry the hashes in extra columns after the codes:
a query's :data:`HASH_COLUMNS` per hashed view (8 hash bytes, then 1 for a flat view), a gallery
row its picture's (the same for each of the picture's V rows).
"""

from __future__ import annotations

import numpy as np

from encoder.search import ann
from encoder.search.verify import FUSE_K, confident_matches, query_hash_views, rerank, upright_bits
from encoder.search.views import merge_query_views, source_views, view_count, with_mirror

HASH_COLUMNS = 9


def _hash_columns(hashes: np.ndarray, flat: np.ndarray) -> np.ndarray:
    """``(N, H, 8)`` uint8 and ``(N, H)`` bool -> ``(N, H * 9)`` float32."""
    return np.concatenate([hashes, flat[..., None]], -1).reshape(len(hashes), -1).astype(np.float32)


def _split_hashes(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`_hash_columns`: ``(N, H * 9)`` -> ``(hashes (N, H, 8) uint8, flat (N, H) bool)``."""
    cols = np.asarray(x).reshape(len(x), -1, HASH_COLUMNS)
    return cols[..., :8].astype(np.uint8), cols[..., 8] > 0.5


class AutoencoderEvaluation:
    """Mixin: :meth:`features`, :meth:`gallery_features`, :meth:`knn` of the autoencoder method."""

    encoder = None
    image_size: int | None = None
    views: str = "full"
    mirror: bool = False
    workers: int | None = None
    verifier = None

    @property
    def verifying(self) -> bool:
        """Whether a search of this method is verified by the hash (view set ``"crops"``)."""
        return self.verifier is not None and self.views == "crops"

    def features(self, images, sources) -> np.ndarray:
        """(N,D) codes; with ``mirror`` (N,2D): each code, then the code of the mirrored image; with
        views (N,R*D): the codes of the query views (then of each flipped), and when verifying the
        hash columns of its hashed views after them."""
        if self.views == "full" and not self.mirror:
            return self.encoder.encode(images)
        plain = (
            images[:, None]
            if self.views == "full"
            else source_views(sources, self.image_size, self.views, "query", self.workers or 0)
        )
        arrays = with_mirror(plain) if self.mirror else plain
        codes = self.encoder.encode(np.ascontiguousarray(arrays.reshape(-1, *arrays.shape[2:]))).reshape(
            len(arrays), -1
        )
        if not self.verifying:
            return codes
        return np.concatenate([codes, _hash_columns(*self.verifier.hash_views(query_hash_views(plain)))], 1)

    def gallery_features(self, images, sources) -> np.ndarray:
        """(N,D) codes: only queries are mirrored; with views (N*V,D): V rows per image, in order (and
        when verifying, each row with its picture's hash columns)."""
        if self.views == "full":
            return self.encoder.encode(images)
        arrays = source_views(sources, self.image_size, self.views, "gallery", self.workers or 0)
        codes = self.encoder.encode(arrays.reshape(-1, *arrays.shape[2:]))
        if not self.verifying:
            return codes
        cols = _hash_columns(*self.verifier.hash_views(arrays[:, :1]))
        return np.concatenate([codes, np.repeat(cols, arrays.shape[1], 0)], 1)

    def knn(self, gallery, queries, k, metric="l2", *, distances: bool = False):
        """Top-k gallery images by ``metric``; with ``mirror`` or views each at its best distance over
        the query's views (and their mirrors) and, with views, over its own V rows (as the index's
        query does); when verifying, the confident matches first, at distance 0 (so a false
        confident match counts as a match in a false-match rate), or with none the first
        :data:`encoder.search.verify.FUSE_K` re-ranked by code and hash (each at its code distance);
        ``distances``: ``(distances, rows)``,
        smaller nearer."""
        confident, fuse_bits, want = None, None, k
        if self.verifying:
            d_code = self.encoder.code_dim
            g_hashes, g_flat = _split_hashes(gallery[:, d_code:])
            n_codes = view_count(self.views, "query") * d_code * (2 if self.mirror else 1)
            q_hashes, q_flat = _split_hashes(queries[:, n_codes:])
            gallery, queries = gallery[:, :d_code], queries[:, :n_codes]
            per_g = view_count(self.views, "gallery")
            g_args = (g_hashes[::per_g, 0], ~g_flat[::per_g, 0])
            confident = confident_matches(q_hashes, q_flat, *g_args, self.verifier.bits)
            fuse_bits, want = upright_bits(q_hashes, q_flat, *g_args, self.verifier.bits), max(k, FUSE_K)
        dist, rows = self._ranked(gallery, queries, want, metric)
        if confident is not None:
            found = [r[r >= 0].tolist() for r in rows]  # rows -1 past the end left out
            md, mi = rerank(
                [d[: len(r)].tolist() for d, r in zip(dist, found)],
                found,
                [b[r].tolist() for b, r in zip(fuse_bits, found)],
                [[(r, 0.0) for r, _ in hits] for hits in confident],
                k,
            )
            dist, rows = _padded(md, mi, k)
        return (dist, rows) if distances else rows

    def _ranked(self, gallery, queries, k, metric) -> tuple[np.ndarray, np.ndarray]:
        """``(distances (Q,k), rows (Q,k))`` of the codes alone (rows: gallery images)."""
        d = gallery.shape[1]
        per = view_count(self.views, "gallery")
        q = np.ascontiguousarray(queries.reshape(-1, d))
        dist, rows = ann.exact_knn(q, gallery, min(k * per, len(gallery)), metric)
        dist = 1 - dist if metric == "cosine" else dist  # exact_knn's cosine scores: larger is nearer
        if q.shape[0] == len(queries) and per == 1:
            return dist, rows
        owners = np.where(rows >= 0, rows // per, -1)
        return _padded(*merge_query_views(dist.tolist(), owners.tolist(), len(queries), k), k)


def _padded(distances: list[list], rows: list[list], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Ragged ranked lists -> ``(distances (Q,k) float32, inf past the end; rows (Q,k) int64, -1 past the end)``."""
    return (
        np.array([d + [np.inf] * (k - len(d)) for d in distances], np.float32).reshape(len(rows), k),
        np.array([r + [-1] * (k - len(r)) for r in rows], np.int64).reshape(len(rows), k),
    )

"""A perceptual hash of the whole picture that verifies an autoencoder search (view set ``"crops"``).

Codes of 64x64 grey views tell pictures apart by their layout, and a tone edit (sepia, a darkened
and flipped copy) moves a code further than it moves a pHash of the same picture, which compares
only the signs of its lowest frequencies. So an ae index of view set ``"crops"`` also keeps, in the
attachment :data:`HASH_FILE`, the 64-bit hash of each picture's view 0 (its whole picture as the
64x64 grey view the codes are made from) and whether that view is flat. A query hashes its own
views that make sense for a whole-picture hash (:data:`QUERY_HASH_VIEWS`: its whole picture, the
picture inside its borders, both mirrored, and its quarter turns). A gallery picture within
:data:`VERIFY_BITS` bits of any of them (neither flat) is a confident match: those rank first, the
nearest hash first, then the autoencoder's ranking goes on without them. With none, the picture
nearest to the query's upright hashes counts as one when it is near and far ahead of the others
(:data:`NEAREST_BITS`, :data:`GAP_BITS`). With no match at all, the autoencoder's :data:`FUSE_K`
nearest pictures are re-ranked by their code distance and their bits together (:func:`fuse`).

The hash function is given by the caller (:mod:`encoder.search.methods` passes the pHash of
:mod:`encoder.hashing.hashes`): ``hash_fn((M, S, S) uint8) -> (hashes (M, 8) uint8, flat (M,) bool)``.

An index built before these hashes (no :data:`HASH_FILE`), or one whose pictures were added by a
job that does not hash, queries as the autoencoder alone for the pictures without a hash.

Example:
    >>> import numpy as np
    >>> g = np.array([[0] * 8, [255] * 8], np.uint8)           # two gallery hashes
    >>> q = np.array([[[0] * 7 + [1], [255] * 8]], np.uint8)    # one query, two hash views
    >>> confident_matches(q, np.zeros((1, 2), bool), g, np.ones(2, bool), bits=2, nearest=None)
    [[(1, 0), (0, 1)]]
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from PIL import Image

from encoder.search import ann

#: The attachment of an ae index that holds its pictures' hashes.
HASH_FILE = "verify_phash.json"
#: What the hashes are; an attachment of another version is not used.
HASH_VERSION = "phash-of-view0-64px-v1"
#: A gallery picture this many bits or fewer from a query hash is a confident match. Measured on the
#: album (bench/album_bench.py, 64-bit pHash of 64x64 views): the edited copies of pictures outside the
#: gallery were 10 bits or more from every gallery picture; sepia, flipped-dark, turned, screenshot
#: and thumbnail copies mostly 0-8 from their original. On the photo bench 2 of 37,675 pairs of
#: distinct gallery pictures were within 8 bits (a stereo pair, and two 25x25 faces).
VERIFY_BITS = 8
#: ... for a quarter-turned query view: a turned copy hashes to 0-2 bits from its original, and each
#: turn is one more chance to meet a smooth picture (a gradient's turn came 8 bits from a tile).
TURN_BITS = 4
#: Query views hashed, as indexes of the ``"crops"`` query views (encoder.search.views.query_boxes,
#: then QUERY_TURNS): the whole picture, the picture inside its borders, the two quarter turns; the
#: first two are hashed mirrored as well. VIEW_BITS: the threshold of each, in that order.
QUERY_HASH_VIEWS = (0, 2, 6, 7)
MIRRORED_HASH_VIEWS = (0, 2)
VIEW_BITS = (VERIFY_BITS, VERIFY_BITS, TURN_BITS, TURN_BITS, VERIFY_BITS, VERIFY_BITS)
#: With no confident match, the picture nearest to the query's upright views is one still when it is
#: within NEAREST_BITS and every other picture is GAP_BITS further (a sepia copy with a vignette
#: lands 10-14 bits from its original and 18-20 from the rest; the album's non-match queries were
#: within 12 bits of no picture so far ahead of the next).
NEAREST_BITS, GAP_BITS = 12, 6
#: With no confident match either, the autoencoder's FUSE_K nearest pictures are re-ranked by the sum of
#: two distances, each on its own scale: the code distance over that of the query's K-th candidate, and
#: the bits to the query's upright hashes over CHANCE_BITS, bits past it counted as CHANCE_BITS
#: (:func:`fuse`), so only a hash nearer than chance moves a picture up. Fair coins would put two unrelated
#: 64-bit hashes 32 +- 4 bits apart, but pictures are not coins: distinct smooth wallpapers of the album
#: came 18-24 bits apart, so 18 or more counts as chance; a sepia copy with a vignette lands 14-18 bits
#: from its original, past the confident rules.
FUSE_K, CHANCE_BITS = 10, 18
HashFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
THUMB = (32, 32)  # the hash's thumbnail of a view

_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], np.uint8)


def hash_view_count() -> int:
    return len(QUERY_HASH_VIEWS) + len(MIRRORED_HASH_VIEWS)


def query_hash_views(arrays: np.ndarray) -> np.ndarray:
    """``(N, V, S, S)`` uint8 ``"crops"`` query views (V >= 8; mirrored copies after them are ignored)
    -> ``(N, H, S, S)`` uint8 views to hash, H = :func:`hash_view_count`."""
    plain = arrays[:, list(QUERY_HASH_VIEWS)]
    return np.concatenate([plain, arrays[:, list(MIRRORED_HASH_VIEWS), :, ::-1]], 1)


def hamming(queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """``(Q, H, 8)`` and ``(N, 8)`` uint8 packed hashes -> ``(Q, H, N)`` Hamming distances (int)."""
    return _POPCOUNT[queries[:, :, None, :] ^ gallery[None, None]].sum(-1, dtype=np.int64)


def confident_matches(
    q_hashes: np.ndarray,
    q_flat: np.ndarray,
    g_hashes: np.ndarray,
    g_usable: np.ndarray,
    bits: Sequence[int] | int = VIEW_BITS,
    nearest: tuple[int, int] | None = (NEAREST_BITS, GAP_BITS),
) -> list[list[tuple[int, int]]]:
    """Per query, ``[(gallery picture, bits), ...]`` of the pictures within ``bits`` (one per hash view,
    or one for all) of one of its hashes, nearest first (ties: the lower picture); when there is none,
    ``nearest`` ``(most, gap)``: the picture nearest to the views of the largest ``bits`` if it is within
    ``most`` and ``gap`` nearer than any other. ``q_hashes`` (Q, H, 8), ``q_flat`` (Q, H) bool,
    ``g_hashes`` (N, 8), ``g_usable`` (N,) bool (False: flat or no hash)."""
    limit = np.broadcast_to(np.asarray(bits), q_hashes.shape[1:2])
    far = 1 << 30
    out = []
    for q in range(len(q_hashes)):
        d = hamming(q_hashes[q : q + 1], g_hashes)[0]  # one query at a time: (H, N) stays small
        d[q_flat[q]] = far
        d[:, ~g_usable] = far
        best = np.where(d <= limit[:, None], d, far).min(0) if len(d) else np.full(len(g_hashes), far)
        hits = np.flatnonzero(best < far)
        if not len(hits) and nearest is not None and len(g_hashes) > 1 and len(d):
            upright = d[limit == limit.max()].min(0)
            order = np.argsort(upright, kind="stable")
            if upright[order[0]] <= nearest[0] and upright[order[1]] - upright[order[0]] >= nearest[1]:
                hits, best = order[:1], upright
        out.append([(int(i), int(best[i])) for i in hits[np.lexsort((hits, best[hits]))]])
    return out


def upright_bits(
    q_hashes: np.ndarray, q_flat: np.ndarray, g_hashes: np.ndarray, g_usable: np.ndarray, bits=VIEW_BITS
) -> np.ndarray:
    """``(Q, N)`` int: per query, the bits from each gallery picture to the nearest of its views of the
    largest ``bits`` (the upright ones), 64 where a view is flat or a picture has no usable hash; the
    arguments as :func:`confident_matches`'."""
    limit = np.broadcast_to(np.asarray(bits), q_hashes.shape[1:2])
    up = limit == limit.max()
    out = np.full((len(q_hashes), len(g_hashes)), 64, np.int64)
    for q in range(len(q_hashes)):
        d = hamming(q_hashes[q : q + 1, up], g_hashes)[0]
        d[q_flat[q, up]] = 64
        if len(d):
            out[q] = d.min(0)
    out[:, ~g_usable] = 64
    return out


def fuse(distances: Sequence[float], bits: Sequence[int], k: int) -> list[int]:
    """Positions of the first ``k`` of one query's ranked candidates (``distances`` of its codes,
    ascending; ``bits`` from its upright hashes, as :func:`upright_bits`) re-ranked by
    ``distance / distances[FUSE_K - 1] + min(bits, CHANCE_BITS) / CHANCE_BITS`` over the first
    :data:`FUSE_K` (the rest keep their places after them; ties keep the code order).

    >>> fuse([1.0, 1.5, 2.0], [30, 9, 30], 3)
    [1, 0, 2]
    """
    n = min(FUSE_K, len(distances))
    if n < 2:
        return list(range(min(k, len(distances))))
    d = np.asarray(distances[:n], np.float64)
    scale = d[-1] if d[-1] > 0 else 1.0
    score = d / scale + np.minimum(np.asarray(bits[:n], np.float64), CHANCE_BITS) / CHANCE_BITS
    order = np.argsort(score, kind="stable").tolist()
    return (order + list(range(n, len(distances))))[:k]


def rerank(
    distances: Sequence[Sequence], keys: Sequence[Sequence], bits: Sequence[Sequence[int]], confident: Sequence, k: int
) -> tuple[list[list], list[list]]:
    """Per query, its ranked ``(distances, keys)`` re-ranked by :func:`fuse` when it has no ``confident``
    match (``bits``: those of each ranked key), then :func:`promote` (the confident pairs first); ``k`` in all."""
    fused_d, fused_k = [], []
    for dist, row, b, conf in zip(distances, keys, bits, confident):
        dist, row = list(dist), list(row)
        if not conf and len(row) > 1:
            order = fuse(dist, b, len(row))
            dist, row = [dist[j] for j in order], [row[j] for j in order]
        fused_d.append(dist)
        fused_k.append(row)
    return promote(fused_d, fused_k, confident, k)


def promote(
    distances: Sequence[Sequence], ids: Sequence[Sequence], confident: Sequence[Sequence], k: int
) -> tuple[list[list], list[list]]:
    """Per query, the ``confident`` ``(id, distance)`` pairs first, in their order, then the ranked
    ``(distances, ids)`` without them; ``k`` in all."""
    out_d, out_i = [], []
    for dist, row, conf in zip(distances, ids, confident):
        first = dict(conf[:k])
        rest = [(i, d) for d, i in zip(dist, row) if i not in first]
        top = (list(first.items()) + rest)[:k]
        out_i.append([i for i, _ in top])
        out_d.append([d for _, d in top])
    return out_d, out_i


# ----------------------------------------------------------------------------- the index attachment


def attachment(ids: Sequence[str], hashes: np.ndarray, flat: np.ndarray, old: bytes | None = None) -> dict[str, bytes]:
    """``{HASH_FILE: bytes}``: the hash (hex; None when flat) of each picture id, added to those of
    ``old`` (an earlier attachment: a replaced id takes its new hash)."""
    entries = _entries(old) if old else {}
    entries.update({i: (None if f else bytes(h).hex()) for i, h, f in zip(ids, np.asarray(hashes, np.uint8), flat)})
    doc = {"version": HASH_VERSION, "hashes": entries}
    return {HASH_FILE: json.dumps(doc, separators=(",", ":")).encode()}


def _entries(data: bytes) -> dict[str, str | None]:
    try:
        doc = json.loads(data)
    except ValueError:
        return {}
    if not isinstance(doc, dict) or doc.get("version") != HASH_VERSION or not isinstance(doc.get("hashes"), dict):
        return {}
    return doc["hashes"]


def gallery_hashes(attachments: Mapping[str, bytes], image_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """``(hashes (N, 8) uint8, usable (N,) bool)`` of the index's pictures ``image_ids`` from its
    attachment, or None when it has none (usable: a hash that is not flat)."""
    data = attachments.get(HASH_FILE)
    if data is None:
        return None
    entries = _entries(data)
    hashes, usable = np.zeros((len(image_ids), 8), np.uint8), np.zeros(len(image_ids), bool)
    for r, i in enumerate(image_ids):
        h = entries.get(i)
        if isinstance(h, str) and len(h) == 16:
            hashes[r], usable[r] = np.frombuffer(bytes.fromhex(h), np.uint8), True
    return hashes, usable


# ----------------------------------------------------------------------------- hashing views, verifying queries


class Verifier:
    """Hashes views with ``hash_fn`` (``(M, 32, 32)`` float64 grey in [0, 255] -> ``(hashes (M, 8) uint8,
    flat (M,) bool)``) and puts the confident matches of a query first (module docstring)."""

    def __init__(self, hash_fn: HashFn, bits: Sequence[int] | int = VIEW_BITS):
        self.hash_fn, self.bits = hash_fn, bits
        self._cache: tuple = (None, None, None)
        self._position: tuple = (None, {})

    def hash_views(self, views: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(..., S, S)`` uint8 grey views -> ``(hashes (..., 8) uint8, flat (...) bool)``: each view's hash,
        from its LANCZOS 32x32 thumbnail."""
        lead, flat_views = views.shape[:-2], views.reshape(-1, *views.shape[-2:])
        if not len(flat_views):
            return np.zeros((*lead, 8), np.uint8), np.zeros(lead, bool)
        px = np.stack(
            [np.asarray(Image.fromarray(v).resize(THUMB, Image.Resampling.LANCZOS), np.float64) for v in flat_views]
        )
        hashes, flat = self.hash_fn(px)
        return np.asarray(hashes, np.uint8).reshape(*lead, -1), np.asarray(flat, bool).reshape(lead)

    def recording(self, decode: Callable, role: str) -> tuple[Callable, list]:
        """``decode`` of :func:`encoder.search.views.views_decoder` wrapped to also hash each chunk's views
        (``"gallery"``: view 0; ``"query"``: :func:`query_hash_views`); the list it returns gets
        ``(hashes, flat)`` per chunk, in the order of the kept files."""
        got: list = []

        def wrapped(chunk, pool):
            arrays, rows, skipped = decode(chunk, pool)
            got.append(self.hash_views(arrays[:, 0] if role == "gallery" else query_hash_views(arrays)))
            return arrays, rows, skipped

        return wrapped, got

    def _gallery(self, index) -> tuple[list[str], tuple[np.ndarray, np.ndarray] | None]:
        """The index's picture ids and :func:`gallery_hashes` (kept for the next query of the same index)."""
        if self._cache[0] is not index or self._cache[1] != index.n_rows:
            ids = list(index.ids[:: index.views])
            self._cache = (index, index.n_rows, (ids, gallery_hashes(index.attachments, ids)))
        return self._cache[2]

    def _positions(self, image_ids: list[str]) -> dict[str, int]:
        """``{id: picture number}`` of the cached gallery ``image_ids``."""
        if self._position[0] is not image_ids:
            self._position = (image_ids, {i: r for r, i in enumerate(image_ids)})
        return self._position[1]

    def verify_query(self, index, codes: np.ndarray, recorded: list, distances, ids, k: int):
        """The merged ``(distances, ids)`` of the queries whose view codes are ``codes`` ((Q*R, D)) and
        whose hashes :meth:`recording` kept (ranked lists of :data:`FUSE_K` or more), with the confident
        matches first (each at its own best code distance), or with none re-ranked by :func:`fuse`;
        ``k`` in all; unchanged for an index without hashes."""
        image_ids, g = self._gallery(index)
        if g is None or not recorded or not len(codes):
            return distances, ids
        q_hashes, q_flat = (np.concatenate(a) for a in zip(*recorded))
        per = len(codes) // len(q_hashes)
        confident, position = [], self._positions(image_ids)
        bits = upright_bits(q_hashes, q_flat, *g, self.bits)
        for q, hits in enumerate(confident_matches(q_hashes, q_flat, *g, self.bits)):
            known = dict(zip(ids[q], distances[q]))
            picked = [image_ids[r] for r, _ in hits]
            confident.append(
                [(i, known.get(i, _best_distance(index, codes[q * per : (q + 1) * per], i))) for i in picked]
            )
        ranked_bits = [[bits[q, position[i]] for i in row] for q, row in enumerate(ids)]
        return rerank(distances, ids, ranked_bits, confident, k)


def _best_distance(index, codes: np.ndarray, image_id: str) -> float:
    """The smallest distance between ``codes`` (R, D) and the views of ``image_id``, as the index measures."""
    r = int(index.rows([image_id])[0])
    rows = np.asarray(index.vectors[r : r + index.views], np.float32)
    metric = index.meta.get("metric", "l2")
    d, _ = ann.exact_knn(np.ascontiguousarray(codes, np.float32), rows, 1, metric)
    return float(1 - d.max() if metric == "cosine" else d.min())


__all__ = [
    "HASH_FILE",
    "VERIFY_BITS",
    "TURN_BITS",
    "VIEW_BITS",
    "NEAREST_BITS",
    "GAP_BITS",
    "QUERY_HASH_VIEWS",
    "MIRRORED_HASH_VIEWS",
    "hash_view_count",
    "query_hash_views",
    "Verifier",
    "hamming",
    "confident_matches",
    "promote",
    "rerank",
    "FUSE_K",
    "CHANCE_BITS",
    "upright_bits",
    "fuse",
    "attachment",
    "gallery_hashes",
]

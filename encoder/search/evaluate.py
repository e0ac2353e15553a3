"""How well each method retrieves: class precision on a labelled folder, near-duplicate recall.

**Labelled folder** (``FOLDER/<class>/.../image``; the class is the top-level subfolder). A
seeded split takes ``n_queries`` images as queries and leaves the rest as the gallery (or
``queries=`` names a separate folder with the same class subfolders). For every method the
top-5 gallery images of each query are found by exact search and scored:

* P@1, P@5: fraction of the top 1 / top 5 of the same class, averaged over queries;
* mAP@5: mean over queries of AP@5 = sum_{i<=5} P@i * rel_i / min(5, R), where R is the number
  of gallery images of the query's class (so a perfect top 5 scores 1).

Methods, all on the same decoded 64x64 grey images (encoder.data.load_gray):

* ``ae``: the autoencoder's codes;
* ``raw``: the 4,096 pixels in [0,1];
* ``pca``: PCA with 128 components fitted on the gallery (randomized SVD, torch);

  all three ranked by ``metric`` (L2, or cosine: the same for all, so the comparison is fair);
* ``phash``/``dhash``/``ahash``: 64-bit hashes of the original files, Hamming;
* ``hybrid``: two ways to combine hash and code - ``phash>ae`` re-ranks the top ``candidates``
  (50) by Hamming with code distance; ``ae>phash`` re-ranks the top codes by Hamming.

Measured (Fashion-MNIST test, 9,500 gallery / 500 queries, seed 0; autoencoder of
configs/fashion_mnist.yaml stopped after 3 epochs): P@1 / P@5 / mAP@5 with L2 - ae .802/.769/.729,
pca .808/.772/.732, raw .798/.778/.737, phash .654/.648/.581; with cosine - ae .824/.789/.750,
pca .824/.789/.750, raw .818/.787/.752. Hybrid does not win here: phash50>ae .756/.751/.703,
ae50>phash .772/.764/.707 (L2), so search.py offers no hybrid query mode.

**Near-duplicates** (:func:`evaluate_neardup`): every image of the folder is in the gallery; a
seeded sample of them is transformed with each transform of :mod:`encoder.search.neardup`, and the
transformed copy is the query. recall@1/@5 = fraction of queries whose original is ranked first
/ in the top 5. Measured on the 18 scikit-image/scikit-learn photos against 2,308 distractors
(crops/tiles of them, lfw faces, Fashion-MNIST), same model: mean R@1/R@5 ae .90/.92, phash
.82/.85, pca .89/.92, raw .83/.89; ae is better on crop/rotate/flip, phash on brightness;
phash50>ae .85/.85 and ae50>phash .85/.87 again do not beat ae alone.

Example:
    >>> import numpy as np
    >>> rows = np.array([[0, 1], [2, 0]])
    >>> m = retrieval_metrics(rows, ["a", "b"], ["a", "a", "b"], k=2)
    >>> m["P@1"], m["P@2"]
    (1.0, 0.75)
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Sequence

import faiss
import numpy as np

from encoder.search import ann
from encoder.data import ImageLoadError, decode_folder, image_paths, open_image, resize_gray, to_gray, to_rgb
from encoder.hashing.hashes import METHODS as HASH_METHODS, hamming, hash_paths, phash_images

FEATURE_METHODS = ("ae", "raw", "pca", *HASH_METHODS)
PCA_COMPONENTS = 128


def class_labels(ids: Sequence[str], where: str | os.PathLike = "") -> list[str]:
    """Top-level subfolder of each id; ValueError naming an image that is in no subfolder."""
    loose = [i for i in ids if "/" not in i]
    if loose:
        raise ValueError(f"{where}: images must sit in class subfolders (FOLDER/<class>/...), "
                         f"found {len(loose)} at the top level, e.g. {loose[0]!r}")
    return [i.split("/", 1)[0] for i in ids]


def retrieval_metrics(rows: np.ndarray, query_labels: Sequence, gallery_labels: Sequence, k: int = 5) -> dict:
    """P@1, P@k and mAP@k of ranked gallery rows (Q,>=k) (-1 = no result); see the module docstring."""
    g = np.asarray(gallery_labels)
    q = np.asarray(query_labels)
    rows = np.asarray(rows)[:, :k]
    rel = np.where(rows >= 0, g[np.where(rows >= 0, rows, 0)] == q[:, None], False).astype(np.float64)
    prec_at = np.cumsum(rel, 1) / np.arange(1, rel.shape[1] + 1)
    n_rel = np.array([(g == lab).sum() for lab in q])
    ap = (prec_at * rel).sum(1) / np.maximum(np.minimum(k, n_rel), 1)
    return {"P@1": float(rel[:, 0].mean()), f"P@{k}": float(rel.mean(1).mean()), f"mAP@{k}": float(ap.mean())}


def pca_fit(x: np.ndarray, n_components: int = PCA_COMPONENTS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """PCA of (N,D) data: (mean (D,), components (D,k)) by randomized SVD (torch.pca_lowrank)."""
    import torch

    k = min(n_components, *x.shape)
    t = torch.from_numpy(np.ascontiguousarray(x, np.float32))
    mean = t.mean(0)
    torch.manual_seed(seed)
    # oversampled (k + 32 directions) and 8 power iterations: the k leading directions come out
    # as exact SVD's to a relative error far below what changes a nearest neighbour
    _, _, v = torch.pca_lowrank(t - mean, q=min(k + 32, *x.shape), center=False, niter=8)
    return mean.numpy(), v[:, :k].numpy()


def pca_project(x: np.ndarray, mean: np.ndarray, components: np.ndarray) -> np.ndarray:
    return ((np.asarray(x, np.float32) - mean) @ components).astype(np.float32)


def knn(method: str, gallery: np.ndarray, queries: np.ndarray, k: int, metric: str = "l2") -> np.ndarray:
    """Exact top-k gallery rows (Q,k): Hamming for hashes, ``metric`` for float vectors."""
    if method in HASH_METHODS:
        index = faiss.IndexBinaryFlat(gallery.shape[1] * 8)
        index.add(np.ascontiguousarray(gallery))
        return index.search(np.ascontiguousarray(queries), min(k, len(gallery)))[1]
    return ann.exact_knn(queries, gallery, k, metric)[1]


def rerank(shortlist: np.ndarray, gallery: np.ndarray, queries: np.ndarray, hashes: bool, metric: str = "l2",
           ) -> np.ndarray:
    """Order each query's shortlist (Q,C) by exact distance (Hamming or code); ties keep shortlist order."""
    safe = np.where(shortlist >= 0, shortlist, 0)
    if hashes:
        d = hamming(queries[:, None, :], gallery[safe]).astype(np.float64)
    elif metric == "cosine":
        qn, gn = ann.prepare(queries, "cosine"), ann.prepare(gallery[safe.ravel()], "cosine")
        d = -np.einsum("qd,qcd->qc", qn, gn.reshape(*safe.shape, -1))
    else:
        d = ((gallery[safe] - queries[:, None, :]) ** 2).sum(-1)
    d = np.where(shortlist >= 0, d, np.inf)
    return np.take_along_axis(shortlist, np.argsort(d, axis=1, kind="stable"), 1)


def _decode(paths: list[Path], size: int, workers: int = 0):
    images, rows, skipped = decode_folder(paths, size, workers, progress=len(paths) > 2000)
    return images, [paths[r] for r in rows], skipped


class _Features:
    """Gallery vectors per method (PCA fitted on the gallery), then query vectors on demand."""

    def __init__(self, methods: list[str], enc, g_images: np.ndarray, g_paths: list[Path]):
        self.methods, self.enc, self.gallery, self.seconds = methods, enc, {}, {}
        for m in methods:
            t = time.perf_counter()
            if m == "ae":
                self.gallery[m] = enc.encode(g_images)
            elif m == "raw":
                self.gallery[m] = _pixels(g_images)
            elif m == "pca":
                self.pca = pca_fit(_pixels(g_images))
                self.gallery[m] = pca_project(_pixels(g_images), *self.pca)
            else:
                h, kept, _ = hash_paths(g_paths, m, errors=[])
                if len(kept) != len(g_paths):
                    raise ValueError(f"{len(g_paths) - len(kept)} gallery images decode to grey but cannot "
                                     f"be hashed with {m}")
                self.gallery[m] = h
            self.seconds[m] = time.perf_counter() - t

    def pairs(self, q_images: np.ndarray, q_hashes) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """{method: (gallery, queries)}; ``q_hashes(method)`` gives the queries' (Q,8) hashes."""
        out = {}
        for m in self.methods:
            if m == "ae":
                q = self.enc.encode(q_images)
            elif m == "raw":
                q = _pixels(q_images)
            elif m == "pca":
                q = pca_project(_pixels(q_images), *self.pca)
            else:
                q = q_hashes(m)
            out[m] = self.gallery[m], q
        return out


def _pixels(images: np.ndarray) -> np.ndarray:
    """(N,S,S) uint8 -> (N,S*S) float32 in [0,1]."""
    return images.reshape(len(images), -1).astype(np.float32) / np.float32(255)


def _methods(methods: Sequence[str], enc) -> tuple[list[str], bool]:
    methods = list(dict.fromkeys(methods))
    bad = [m for m in methods if m not in (*FEATURE_METHODS, "hybrid")]
    if bad:
        raise ValueError(f"methods={bad} unknown; choose from {(*FEATURE_METHODS, 'hybrid')}")
    hybrid = "hybrid" in methods
    feat = [m for m in methods if m != "hybrid"]
    if hybrid:
        feat += [m for m in ("ae", "phash") if m not in feat]
    if "ae" in feat and enc is None:
        raise ValueError("method 'ae' (and 'hybrid') needs a checkpoint (--checkpoint CKPT)")
    return feat, hybrid


def _ranked(feats, methods, hybrid, k, metric, candidates):
    """{row name: ranked gallery rows (Q,k)} for each method and both hybrid orders."""
    out = {m: knn(m, feats[m][0], feats[m][1], k, metric) for m in methods}
    if hybrid:
        (gc, qc), (gh, qh) = feats["ae"], feats["phash"]
        c = max(candidates, k)
        out[f"phash{c}>ae"] = rerank(knn("phash", gh, qh, c), gc, qc, hashes=False, metric=metric)[:, :k]
        out[f"ae{c}>phash"] = rerank(knn("ae", gc, qc, c, metric), gh, qh, hashes=True)[:, :k]
    return out


def evaluate_folder(folder: str | os.PathLike, enc=None, methods: Sequence[str] = ("ae", "phash", "raw", "pca"), *,
                    queries: str | os.PathLike | None = None, n_queries: int = 500, seed: int = 0,
                    metric: str = "l2", candidates: int = 50, k: int = 5, image_size: int | None = None) -> dict:
    """P@1/P@k/mAP@k per method on a labelled folder; returns a JSON-ready report.

    ``enc`` is an :class:`encoder.ae.inference.Encoder` (needed for ``ae`` and ``hybrid``).
    """
    ann.check_metric(metric)
    feat_methods, hybrid = _methods(methods, enc)
    size = enc.image_size if enc is not None else (image_size or 64)
    scan = image_paths(folder)
    images, kept, skipped = _decode(scan.paths, size)
    skipped = list(scan.skipped) + skipped
    labels = class_labels([scan.relative(p) for p in kept], folder)
    if queries is not None:
        qscan = image_paths(queries)
        q_images, q_kept, q_skipped = _decode(qscan.paths, size)
        skipped += list(qscan.skipped) + q_skipped
        q_labels = class_labels([qscan.relative(p) for p in q_kept], queries)
        g_images, g_kept, g_labels = images, kept, labels
        split = f"queries from {queries}"
    else:
        if not 0 < n_queries < len(kept):
            raise ValueError(f"n_queries={n_queries} must be in [1, {len(kept) - 1}] for {len(kept)} images")
        perm = np.random.default_rng(seed).permutation(len(kept))
        qi, gi = np.sort(perm[:n_queries]), np.sort(perm[n_queries:])
        q_images, q_kept, q_labels = images[qi], [kept[i] for i in qi], [labels[i] for i in qi]
        g_images, g_kept, g_labels = images[gi], [kept[i] for i in gi], [labels[i] for i in gi]
        split = f"random split, seed {seed}"

    def q_hashes(m):
        h, hk, _ = hash_paths(q_kept, m, errors=[])
        if len(hk) != len(q_kept):
            raise ValueError(f"some query images could not be hashed with {m}")
        return h

    fz = _Features(feat_methods, enc, g_images, g_kept)
    feats = fz.pairs(q_images, q_hashes)
    results = []
    for name, rows in _ranked(feats, feat_methods, hybrid, k, metric, candidates).items():
        results.append({"method": name, **retrieval_metrics(rows, q_labels, g_labels, k),
                        "gallery_seconds": round(fz.seconds.get(name, 0.0), 2)})
    return {"folder": str(folder), "split": split, "n_gallery": len(g_kept), "n_queries": len(q_kept),
            "classes": len(set(g_labels)), "k": k, "metric": metric,
            "fingerprint": enc.fingerprint if enc is not None else None,
            "checkpoint": enc.path if enc is not None else None, "results": results,
            "skipped": [f"{p}: {r}" for p, r in skipped]}


def evaluate_neardup(folder: str | os.PathLike, enc=None, methods: Sequence[str] = ("ae", "phash"), *,
                     queries: str | os.PathLike | None = None, n_queries: int = 100, seed: int = 0,
                     metric: str = "l2", candidates: int = 50, transforms: dict | None = None,
                     image_size: int | None = None) -> dict:
    """recall@1/@5 of finding the original of each transformed copy, per transform and method.

    The originals are a seeded sample of ``n_queries`` images of ``folder``, or, with
    ``queries``, every image of that folder (then added to the gallery, ``folder`` being the
    distractors).
    """
    from encoder.search.neardup import TRANSFORMS

    transforms = transforms or TRANSFORMS
    feat_methods, hybrid = _methods(methods, enc)
    size = enc.image_size if enc is not None else (image_size or 64)
    scan = image_paths(folder)
    paths, skipped = list(scan.paths), list(scan.skipped)
    if queries is not None:
        qscan = image_paths(queries)
        paths += [p for p in qscan.paths if p not in set(paths)]
        skipped += qscan.skipped
    images, kept, bad = _decode(paths, size)
    skipped += bad
    if len(kept) < 2:
        raise ValueError(f"{folder}: need at least 2 readable images, found {len(kept)}")
    if queries is not None:
        wanted = set(qscan.paths)
        originals = np.array([i for i, p in enumerate(kept) if p in wanted], np.int64)
    else:
        originals = np.sort(np.random.default_rng(seed).permutation(len(kept))[:min(n_queries, len(kept))])
    n_q = len(originals)
    pil = []
    for r in originals:
        try:
            pil.append(to_rgb(open_image(kept[r])))
        except ImageLoadError as e:  # decoded once already; a file changed under us
            raise ValueError(str(e)) from None
    per = {}
    fz = _Features(feat_methods, enc, images, kept)
    for tname, tf in transforms.items():
        copies = [tf(im) for im in pil]
        q_images = np.stack([np.rint(resize_gray(to_gray(c), size) * 255).astype(np.uint8) for c in copies])
        feats = fz.pairs(q_images, lambda m: phash_images(copies, m))
        for name, rows in _ranked(feats, feat_methods, hybrid, 5, metric, candidates).items():
            hit = rows == originals[:, None]
            per.setdefault(name, {})[tname] = {"R@1": float(hit[:, :1].any(1).mean()),
                                               "R@5": float(hit[:, :5].any(1).mean())}
    results = []
    for name, by_t in per.items():
        mean = {m: float(np.mean([v[m] for v in by_t.values()])) for m in ("R@1", "R@5")}
        results.append({"method": name, "transforms": by_t, "mean": mean})
    return {"folder": str(folder), "n_gallery": len(kept), "n_queries": n_q, "seed": seed, "metric": metric,
            "fingerprint": enc.fingerprint if enc is not None else None, "results": results,
            "skipped": [f"{p}: {r}" for p, r in skipped]}


def format_report(report: dict) -> str:
    """The labelled-folder report as a text table."""
    lines = [f"{report['folder']}: {report['n_gallery']} gallery, {report['n_queries']} queries, "
             f"{report['classes']} classes ({report['split']}), metric {report['metric']}"]
    k = report["k"]
    lines.append(f"{'method':16s} {'P@1':>6s} {f'P@{k}':>6s} {f'mAP@{k}':>7s} {'gallery s':>9s}")
    for r in report["results"]:
        lines.append(f"{r['method']:16s} {r['P@1']:6.3f} {r[f'P@{k}']:6.3f} {r[f'mAP@{k}']:7.3f} "
                     f"{r.get('gallery_seconds', 0.0):9.1f}")
    if report["skipped"]:
        lines.append(f"{len(report['skipped'])} files skipped (unreadable or not images)")
    return "\n".join(lines)


def format_neardup(report: dict) -> str:
    """The near-duplicate report as a text table: R@1/R@5 per transform and method."""
    names = [r["method"] for r in report["results"]]
    transforms = list(report["results"][0]["transforms"]) if report["results"] else []
    lines = [f"{report['folder']}: {report['n_queries']} originals x {len(transforms)} transforms, "
             f"gallery {report['n_gallery']}; recall@1 / recall@5 of the original"]
    lines.append(f"{'transform':12s} " + " ".join(f"{n:>15s}" for n in names))
    for t in transforms + ["MEAN"]:
        cells = []
        for r in report["results"]:
            v = r["mean"] if t == "MEAN" else r["transforms"][t]
            cells.append(f"{v['R@1']:.2f} / {v['R@5']:.2f}".rjust(15))
        lines.append(f"{t:12s} " + " ".join(cells))
    return "\n".join(lines)

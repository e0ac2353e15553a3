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
* ``phash``/``dhash``/``ahash``: 64-bit hashes of the original files, Hamming; ``phash-mirror``
  (or ``HashMethod("phash", mirror=True)``): each query also mirrored, the better distance kept;
* ``ae-mirror``, ``ae-crops``, ``ae-crops-mirror``: the autoencoder with mirrored queries and/or
  several views per picture (:mod:`encoder.search.views`): the gallery's features are V codes
  per image (row ``r`` belongs to image ``r // V``), a query's its views' codes, and each gallery
  image ranks at its best distance over all pairs (``search.py evaluate --views crops`` turns
  ``ae`` into ``ae-crops``).

Each is a :class:`encoder.search.methods.Method` (its ``fit`` on the gallery, ``features`` and
``knn``); this module only splits, ranks and scores.

Measured (Fashion-MNIST test, 9,500 gallery / 500 queries, seed 0; autoencoder of
configs/fashion_mnist.yaml stopped after 3 epochs): P@1 / P@5 / mAP@5 with L2 - ae .802/.769/.729,
pca .808/.772/.732, raw .798/.778/.737, phash .654/.648/.581; with cosine - ae .824/.789/.750,
pca .824/.789/.750, raw .818/.787/.752. Re-ranking a hash shortlist by codes or the other way
round did not win (phash50>ae .756/.751/.703, ae50>phash .772/.764/.707, L2) and was removed.

**Near-duplicates** (:func:`evaluate_neardup`): every image of the folder is in the gallery; a
seeded sample of them is transformed with each transform of :mod:`encoder.search.neardup`, and the
transformed copy is the query. recall@1/@5 = fraction of queries whose original is ranked first
/ in the top 5. Measured on the 18 scikit-image/scikit-learn photos against 2,308 distractors
(crops/tiles of them, lfw faces, Fashion-MNIST), same model: mean R@1/R@5 ae .90/.92, phash
.82/.85, pca .89/.92, raw .83/.89; ae is better on crop/rotate/flip, phash on brightness;
the re-ranking combinations (phash50>ae .85/.85, ae50>phash .85/.87) did not beat ae alone.
Views (issue 15; the 10 photos of bench/neardup_bench.py x 13 transforms against 469 --quick
distractors, demo checkpoint runs/demo/train/fashion_mnist/version_0): R@1 ae -> ae-crops on
aspect_9x16 .3 -> 1.0, crop50 .0 -> .5, overlay 1.0 -> .9, hflip .4 -> .3, others unchanged;
mean R@1 ae .75, ae-mirror .78, ae-crops .82, ae-crops-mirror .88.

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
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from encoder.data import ImageLoadError, decode_folder, image_paths, open_image, resize_gray, to_gray, to_rgb
from encoder.search import ann
from encoder.search.methods import Method, evaluation_methods


def class_labels(ids: Sequence[str], where: str | os.PathLike = "") -> list[str]:
    """Top-level subfolder of each id; ValueError naming an image that is in no subfolder."""
    loose = [i for i in ids if "/" not in i]
    if loose:
        raise ValueError(
            f"{where}: images must sit in class subfolders (FOLDER/<class>/...), "
            f"found {len(loose)} at the top level, e.g. {loose[0]!r}"
        )
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


def _decode(paths: list[Path], size: int, workers: int = 0):
    images, rows, skipped = decode_folder(paths, size, workers, progress=len(paths) > 2000)
    return images, [paths[r] for r in rows], skipped


class _Gallery:
    """Each method fitted on the gallery and its gallery vectors, then query vectors on demand."""

    def __init__(self, methods: list[Method], g_images: np.ndarray, g_paths: list[Path]):
        self.methods, self.vectors, self.seconds = methods, {}, {}
        for m in methods:
            t = time.perf_counter()
            self.vectors[m.label] = m.fit(g_images, g_paths).gallery_features(g_images, g_paths)
            self.seconds[m.label] = time.perf_counter() - t

    def ranked(self, q_images: np.ndarray, q_sources: Sequence, k: int, metric: str, distances: bool = False) -> dict:
        """{method: top-k gallery rows (Q,k)} of the queries (grey images and the files/PIL images they came
        from); ``distances``: {method: (distances (Q,k), rows)}."""
        return {
            m.label: m.knn(self.vectors[m.label], m.features(q_images, q_sources), k, metric, distances=distances)
            for m in self.methods
        }


def _grey(copies: Sequence, size: int) -> np.ndarray:
    """PIL images -> ``(N, size, size)`` uint8 grey, as the folder decoder makes them."""
    return np.stack([np.rint(resize_gray(to_gray(c), size) * 255).astype(np.uint8) for c in copies])


def _recalls(
    gallery: _Gallery, pil: list, originals: np.ndarray, transforms: dict, size: int, metric: str, fm_transform
):
    """``({method: {transform: {"R@1", "R@5"}}}, {method: threshold})``: recall of each transform's copies of
    ``pil`` (gallery rows ``originals``), and the distance that finds 90% of the ``fm_transform`` copies'
    originals (inf for an original outside the top 5)."""
    per, thresholds = {}, {}
    for tname, tf in transforms.items():
        copies = [tf(im) for im in pil]
        for name, (dist, rows) in gallery.ranked(_grey(copies, size), copies, 5, metric, True).items():
            hit = rows == originals[:, None]
            per.setdefault(name, {})[tname] = {
                "R@1": float(hit[:, :1].any(1).mean()),
                "R@5": float(hit[:, :5].any(1).mean()),
            }
            if tname == fm_transform:
                found = np.where(hit.any(1), np.where(hit, dist, np.inf).min(1), np.inf)
                thresholds[name] = float(np.quantile(found, 0.9, method="lower"))
    return per, thresholds


def _false_match_rates(gallery: _Gallery, non_matches: Sequence, size: int, metric: str, thresholds: dict) -> dict:
    """{method: {"rate", "threshold", "n"}}: the share of ``non_matches`` (PIL images of pictures not in
    the gallery) whose nearest gallery image is at most the method's ``thresholds[method]`` away."""
    out = {}
    for name, (dist, _) in gallery.ranked(_grey(non_matches, size), non_matches, 1, metric, True).items():
        t = thresholds[name]
        out[name] = {"rate": float((dist[:, 0] <= t).mean()), "threshold": float(t), "n": len(non_matches)}
    return out


def _setup(methods, enc, image_size: int | None) -> tuple[list[Method], int, object]:
    """(methods, decoded image size, the autoencoder or None)."""
    ms = evaluation_methods(methods, encoder=enc)
    enc = next((m.encoder for m in ms if m.encoder is not None), enc)
    size = next((m.image_size for m in ms if m.image_size is not None), None) or image_size or 64
    return ms, size, enc


def evaluate_folder(
    folder: str | os.PathLike,
    enc=None,
    methods: Sequence[str | Method] = ("ae", "phash", "raw", "pca"),
    *,
    queries: str | os.PathLike | None = None,
    n_queries: int = 500,
    seed: int = 0,
    metric: str = "l2",
    k: int = 5,
    image_size: int | None = None,
) -> dict:
    """P@1/P@k/mAP@k per method on a labelled folder; returns a JSON-ready report.

    ``methods``: names of :data:`encoder.search.methods.METHODS` or Method objects; ``enc`` an
    :class:`encoder.ae.inference.Encoder` for ``ae`` (or pass an ae Method).
    """
    ann.check_metric(metric)
    ms, size, enc = _setup(methods, enc, image_size)
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
    gallery = _Gallery(ms, g_images, g_kept)
    results = [
        {
            "method": name,
            **retrieval_metrics(rows, q_labels, g_labels, k),
            "gallery_seconds": round(gallery.seconds[name], 2),
        }
        for name, rows in gallery.ranked(q_images, q_kept, k, metric).items()
    ]
    return {
        "folder": str(folder),
        "split": split,
        "n_gallery": len(g_kept),
        "n_queries": len(q_kept),
        "classes": len(set(g_labels)),
        "k": k,
        "metric": metric,
        "fingerprint": enc.fingerprint if enc is not None else None,
        "checkpoint": enc.path if enc is not None else None,
        "results": results,
        "skipped": [f"{p}: {r}" for p, r in skipped],
    }


def evaluate_neardup(
    folder: str | os.PathLike,
    enc=None,
    methods: Sequence[str | Method] = ("ae", "phash"),
    *,
    queries: str | os.PathLike | None = None,
    n_queries: int = 100,
    seed: int = 0,
    metric: str = "l2",
    transforms: dict | None = None,
    image_size: int | None = None,
    non_matches: Sequence | None = None,
    fm_transform: str | None = None,
) -> dict:
    """recall@1/@5 of finding the original of each transformed copy, per transform and method.

    The originals are a seeded sample of ``n_queries`` images of ``folder``, or, with
    ``queries``, every image of that folder (then added to the gallery, ``folder`` being the
    distractors). ``non_matches`` (PIL images of pictures that are not in the gallery) add each
    method's false-match rate: the share of them whose nearest gallery image is nearer than the
    distance that finds 90% of the ``fm_transform`` copies' originals (default: the last transform;
    an original outside the top 5 counts as infinitely far).
    """
    from encoder.search.neardup import TRANSFORMS

    transforms = transforms or TRANSFORMS
    ms, size, enc = _setup(methods, enc, image_size)
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
        originals = np.sort(np.random.default_rng(seed).permutation(len(kept))[: min(n_queries, len(kept))])
    pil = []
    for r in originals:
        try:
            pil.append(to_rgb(open_image(kept[r])))
        except ImageLoadError as e:  # decoded once already; a file changed under us
            raise ValueError(str(e)) from None
    gallery = _Gallery(ms, images, kept)
    per, thresholds = _recalls(gallery, pil, originals, transforms, size, metric, fm_transform or list(transforms)[-1])
    fm = _false_match_rates(gallery, non_matches, size, metric, thresholds) if non_matches else {}
    return {
        "folder": str(folder),
        "n_gallery": len(kept),
        "n_queries": len(originals),
        "seed": seed,
        "metric": metric,
        "fingerprint": enc.fingerprint if enc is not None else None,
        "results": _with_means(per, fm),
        "skipped": [f"{p}: {r}" for p, r in skipped],
    }


def _with_means(per: dict, fm: dict | None = None) -> list[dict]:
    """``{method: {transform: {"R@1", "R@5"}}}`` -> one row per method with its mean over transforms
    (and its false-match rate, when ``fm`` has one)."""
    results = []
    for name, by_t in per.items():
        mean = {m: float(np.mean([v[m] for v in by_t.values()])) for m in ("R@1", "R@5")}
        results.append({"method": name, "transforms": by_t, "mean": mean, **({"false_match": fm[name]} if fm else {})})
    return results


def format_report(report: dict) -> str:
    """The labelled-folder report as a text table."""
    lines = [
        f"{report['folder']}: {report['n_gallery']} gallery, {report['n_queries']} queries, "
        f"{report['classes']} classes ({report['split']}), metric {report['metric']}"
    ]
    k = report["k"]
    lines.append(f"{'method':16s} {'P@1':>6s} {f'P@{k}':>6s} {f'mAP@{k}':>7s} {'gallery s':>9s}")
    for r in report["results"]:
        lines.append(
            f"{r['method']:16s} {r['P@1']:6.3f} {r[f'P@{k}']:6.3f} {r[f'mAP@{k}']:7.3f} "
            f"{r.get('gallery_seconds', 0.0):9.1f}"
        )
    if report["skipped"]:
        lines.append(f"{len(report['skipped'])} files skipped (unreadable or not images)")
    return "\n".join(lines)


def format_neardup(report: dict) -> str:
    """The near-duplicate report as a text table: R@1/R@5 per transform and method."""
    names = [r["method"] for r in report["results"]]
    transforms = list(report["results"][0]["transforms"]) if report["results"] else []
    lines = [
        f"{report['folder']}: {report['n_queries']} originals x {len(transforms)} transforms, "
        f"gallery {report['n_gallery']}; recall@1 / recall@5 of the original"
    ]
    lines.append(f"{'transform':12s} " + " ".join(f"{n:>15s}" for n in names))
    for t in transforms + ["MEAN"]:
        cells = []
        for r in report["results"]:
            v = r["mean"] if t == "MEAN" else r["transforms"][t]
            cells.append(f"{v['R@1']:.2f} / {v['R@5']:.2f}".rjust(15))
        lines.append(f"{t:12s} " + " ".join(cells))
    if report["results"] and "false_match" in report["results"][0]:
        fm = [r["false_match"] for r in report["results"]]
        lines.append(f"{'false match':12s} " + " ".join(f"{f['rate']:.2f} of {f['n']}".rjust(15) for f in fm))
    return "\n".join(lines)

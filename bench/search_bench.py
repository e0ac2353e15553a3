"""Float-code search benchmark: Flat vs IVF vs HNSW at 100k and 1M codes, speed and recall@5.

    python bench/search_bench.py            # 100k and 1M codes (about 15 min on 2 cores)
    python bench/search_bench.py --quick    # 50k codes, < 1 min
    python bench/search_bench.py --codes runs/idx/codes.npy   # real codes, tiled with noise to size

Two kinds of 128-d codes:
* random: i.i.d. Gaussian, the hardest case for any index (no structure to exploit);
* code-shaped: what autoencoder codes look like - a mixture of 1,000 clusters in a 24-d
  subspace, with a decaying spectrum and isotropic noise on top.

Every approximate index is built and tuned by encoder.search.ann (nprobe/efSearch the smallest
reaching recall@5 >= 0.95 on stored codes used as queries), then measured on 1,000 *held-out*
queries from the same distribution: ms per query when all are searched in one batch, and
recall@5 against exact search (a returned code counts when it is at least as close as the
exact 5th neighbour). Target from the issue: at 1M codes, < 1 ms/query with recall@5 >= 0.95.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from encoder.search import ann  # noqa: E402


def random_codes(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d), dtype=np.float32)


def code_shaped(n: int, d: int, seed: int, n_clusters: int = 1000, rank: int = 24) -> np.ndarray:
    """Clustered, low-rank Gaussian codes (same generator seed 0 for database and queries)."""
    g = np.random.default_rng(0)
    basis = np.linalg.qr(g.standard_normal((d, rank)))[0].T.astype(np.float32)  # (rank, d)
    scale = (1.0 / np.sqrt(1 + np.arange(rank))).astype(np.float32) * 4
    centres = g.standard_normal((n_clusters, rank)).astype(np.float32) * scale
    r = np.random.default_rng(seed)
    lab = r.integers(0, n_clusters, n)
    out = np.empty((n, d), np.float32)
    for s in range(0, n, 200_000):
        e = min(n, s + 200_000)
        z = centres[lab[s:e]] + r.standard_normal((e - s, rank), dtype=np.float32) * scale * 0.5
        out[s:e] = z @ basis + 0.05 * r.standard_normal((e - s, d), dtype=np.float32)
    return out


def tiled_real(path: str, n: int, seed: int) -> np.ndarray:
    """Real codes: a random n of them, or, past their count, repeated with small noise (1% of spread)."""
    base = np.load(path, allow_pickle=False).astype(np.float32)
    r = np.random.default_rng(seed)
    if n <= len(base) // 2:  # database and queries from disjoint random halves (a file's order may be by class)
        half = np.random.default_rng(0).permutation(len(base))
        part = half[: len(base) // 2] if seed == 1 else half[len(base) // 2 :]
        return base[np.sort(r.permutation(part)[:n])]
    rows = r.integers(0, len(base), n)
    return base[rows] + 0.01 * base.std(0) * r.standard_normal((n, base.shape[1]), dtype=np.float32)


def timed_search(index, xq: np.ndarray, k: int = 5) -> tuple[float, np.ndarray]:
    index.search(xq[:10], k)  # warm-up
    t = time.perf_counter()
    _, rows = index.search(xq, k)
    return (time.perf_counter() - t) / len(xq) * 1e3, rows


def run(kind: str, xb: np.ndarray, xq: np.ndarray, methods: list[str]) -> None:
    n, d = xb.shape
    t = time.perf_counter()
    De, _ = ann.exact_knn(xq, xb, 5, "l2")
    t_exact = (time.perf_counter() - t) / len(xq) * 1e3
    print(
        f"\n## {kind}: {n:,} codes x {d}, {len(xq)} held-out queries batched, k=5, "
        f"{faiss.omp_get_max_threads()} threads"
    )
    print(
        f"{'index':22s} {'params':>13s} {'build s':>8s} {'ms/query':>9s} {'q/s':>8s} {'recall@5':>9s} "
        f"{'tuned R@5':>9s} {'MB':>6s}"
    )
    print(
        f"{'exact (faiss.knn)':22s} {'':>13s} {0:8.1f} {t_exact:9.3f} {1e3 / t_exact:8.0f} {1.0:9.3f} {'':>9s} "
        f"{xb.nbytes / 2**20:6.0f}"
    )
    for factory in methods:
        t = time.perf_counter()
        built = ann.build(xb, "l2", factory)
        tb = time.perf_counter() - t
        ms, rows = timed_search(built.index, xq)
        rec = ann.recall_at_k(xq, xb, rows, De, "l2", 5)
        size = len(faiss.serialize_index(built.index)) / 2**20
        tuned = f"{built.recall:9.3f}" if built.recall is not None else f"{'':>9s}"
        print(
            f"{built.factory:22s} {built.search_params:>13s} {tb:8.1f} {ms:9.3f} {1e3 / ms:8.0f} {rec:9.3f} "
            f"{tuned} {size:6.0f}",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="50k codes only (< 1 min)")
    ap.add_argument("--sizes", type=int, nargs="+", default=None)
    ap.add_argument("--kinds", nargs="+", default=["code-shaped", "random"], choices=["code-shaped", "random", "real"])
    ap.add_argument("--codes", help="real codes .npy for --kinds real")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument(
        "--methods", nargs="+", default=None, help="FAISS factory strings or 'auto' (default: auto IVF, HNSW32)"
    )
    ap.add_argument("--dim", type=int, default=128)
    a = ap.parse_args(argv)
    faiss.omp_set_num_threads(a.threads)
    sizes = a.sizes or ([50_000] if a.quick else [100_000, 1_000_000])
    print(f"cpus={os.cpu_count()}, threads={a.threads} (machine may be shared; timings are indicative)")
    for n in sizes:
        for kind in a.kinds:
            if kind == "real" and not a.codes:
                ap.error("--kinds real needs --codes PATH")
            gen = {
                "random": lambda m, s: random_codes(m, a.dim, s),
                "code-shaped": lambda m, s: code_shaped(m, a.dim, s),
                "real": lambda m, s: tiled_real(a.codes, m, s),
            }[kind]
            xb, xq = gen(n, 1), gen(a.queries, 2)
            methods = a.methods or [f"IVF{ann.nlist_for(n)},Flat", "HNSW32"]
            run(kind, xb, xq, methods)
    return 0


if __name__ == "__main__":
    sys.exit(main())

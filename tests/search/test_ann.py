"""encoder.search.ann and the code branch of encoder.search.index.

Index choice, tuning vs brute force, cosine, mmap, growth.
"""

import faiss
import numpy as np
import pytest

from encoder.search import ann
from encoder.search.index import Index


def clustered(n, d=32, seed=0, n_clusters=40):
    g = np.random.default_rng(0)
    centres = g.normal(size=(n_clusters, d)) * 3
    r = np.random.default_rng(seed)
    return (centres[r.integers(0, n_clusters, n)] + r.normal(size=(n, d))).astype(np.float32)


def brute(q, x, k, metric="l2"):
    if metric == "cosine":
        qn = q / np.linalg.norm(q, axis=1, keepdims=True)
        xn = x / np.linalg.norm(x, axis=1, keepdims=True)
        d = 1 - qn @ xn.T
    else:
        d = ((q[:, None, :].astype(np.float64) - x[None]) ** 2).sum(-1)
    rows = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, rows, 1), rows


def test_choose_factory_by_size_and_memory():
    assert ann.choose_factory(10, 128) == "Flat"
    assert ann.choose_factory(ann.FLAT_MAX, 128) == "Flat"
    assert ann.choose_factory(ann.FLAT_MAX + 1, 128).startswith("IVF")
    assert ann.choose_factory(1_000_000, 128) == "IVF4000,Flat"
    # 1M x 128 float32 = 512 MB; under 100 MB PQ/OPQ is chosen with the largest code that fits
    assert ann.choose_factory(1_000_000, 128, memory_budget=100_000_000) == "OPQ64,IVF4000,PQ64"
    assert ann.choose_factory(1_000_000, 128, memory_budget=20_000_000) == "OPQ8,IVF4000,PQ8"
    assert ann.choose_factory(20_000, 16, memory_budget=20_000 * 20) == f"OPQ8,IVF{20_000 // 39},PQ8"
    assert ann.choose_factory(5_000, 128, memory_budget=10**9) == "Flat"
    with pytest.raises(ValueError, match="memory_budget=1000"):
        ann.choose_factory(1_000_000, 128, memory_budget=1000)
    with pytest.raises(ValueError, match="faiss_type='NotAnIndex'"):
        ann.build(clustered(100), factory="NotAnIndex")
    with pytest.raises(ValueError, match="metric='dot'"):
        ann.build(clustered(100), metric="dot")


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_exact_knn_chunked_matches_brute_force(metric):
    x, q = clustered(1000, seed=1), clustered(20, seed=2)
    D, rows = ann.exact_knn(q, x, 7, metric, chunk=300)  # chunks of 300, 300, 300, 100
    bd, brows = brute(q, x, 7, metric)
    np.testing.assert_array_equal(rows, brows)
    got = 1 - D if metric == "cosine" else D
    np.testing.assert_allclose(got, bd, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("factory,knob", [("IVF32,Flat", "nprobe"), ("HNSW16", "efSearch")])
def test_tuned_index_reaches_recall_on_held_out_queries(factory, knob):
    x, q = clustered(4000), clustered(300, seed=9)
    built = ann.build(x, "l2", factory)
    assert built.factory == factory and built.search_params.startswith(knob + "=")
    assert built.recall >= 0.95
    _, rows = ann.search(built.index, q, 5, "l2")
    bd, _ = brute(q, x, 5)
    true = ((q[:, None, :] - x[rows]) ** 2).sum(-1)
    assert (true <= bd[:, 4:5] + 1e-3).mean() >= 0.93  # held-out queries, as in bench/search_bench.py


def test_recall_counts_ties_and_duplicates_as_hits():
    x = np.repeat(clustered(50), 3, axis=0)  # every code three times
    q = x[:10] + 1e-3
    De, Ie = ann.exact_knn(q, x, 5, "l2")
    shuffled = Ie[:, [2, 1, 0, 4, 3]]
    assert ann.recall_at_k(q, x, shuffled, De, "l2", 5) == 1.0
    wrong = np.full_like(Ie, len(x) - 1)
    assert ann.recall_at_k(q, x, wrong, De, "l2", 5) < 0.5


def test_auto_ivf_falls_back_to_flat_on_structureless_codes(monkeypatch):
    monkeypatch.setattr(ann, "FLAT_MAX", 1000)
    x = np.random.default_rng(0).normal(size=(4000, 64)).astype(np.float32)  # i.i.d.: no clusters
    built = ann.build(x)
    assert built.factory == "Flat" and built.recall == 1.0
    assert ann.build(clustered(4000)).factory.startswith("IVF")


def test_code_index_cosine_distances():
    x = clustered(300)
    idx = Index.create(
        "ae",
        "fp",
        x * np.random.default_rng(3).uniform(0.5, 3, (300, 1)).astype(np.float32),
        [f"i{j}" for j in range(300)],
        metric="cosine",
        kind="code",
    )
    q = x[:5] * 7  # scale does not matter for cosine
    d, ids = idx.search(q, k=4)
    bd, brows = brute(q, idx.vectors, 4, "cosine")
    assert ids == [[f"i{j}" for j in row] for row in brows]
    np.testing.assert_allclose(d, bd, atol=1e-5)
    assert idx.meta["metric"] == "cosine"


def test_code_index_grows_keeps_training_mmap_and_switches_type(tmp_path, monkeypatch):
    monkeypatch.setattr(ann, "FLAT_MAX", 2000)
    x = clustered(6000)
    ids = [f"d/{j}.png" for j in range(6000)]
    idx = Index.create("ae", "fp1", x[:1500], ids[:1500], kind="code")
    assert idx.meta["faiss_type"] == "Flat"
    idx.add(x[1500:3000], ids[1500:3000])  # crosses FLAT_MAX: auto choice becomes IVF
    nlist = ann.nlist_for(3000)
    assert idx.meta["faiss_type"] == f"IVF{nlist},Flat" and idx.meta["search_params"].startswith("nprobe=")
    centroids = faiss.extract_index_ivf(idx.faiss_index).quantizer.reconstruct_n(0, nlist)
    idx.save(tmp_path / "idx")

    mapped = Index.load(tmp_path / "idx", mmap=True)
    assert isinstance(mapped.vectors, np.memmap)
    q = clustered(50, seed=5)
    d0, i0 = idx.search(q, 5)
    d1, i1 = mapped.search(q, 5)
    assert i0 == i1 and np.allclose(d0, d1)
    mapped.add(x[3000:3300], ids[3000:3300])  # same IVF size class: training kept, rows appended
    assert mapped.meta["faiss_type"] == f"IVF{nlist},Flat" and len(mapped) == 3300
    np.testing.assert_array_equal(
        faiss.extract_index_ivf(mapped.faiss_index).quantizer.reconstruct_n(0, nlist), centroids
    )
    assert mapped.remove(["d/7.png"]) == [] and mapped.faiss_index.ntotal == 3299
    _, got = mapped.search(x[8:9], 1)
    assert got == [["d/8.png"]]
    mapped.save(tmp_path / "idx")
    back = Index.load(tmp_path / "idx")
    assert len(back) == 3299 and back.meta["count"] == 3299 and "d/7.png" not in back.ids
    np.testing.assert_array_equal(back.vectors[:7], x[:7])
    np.testing.assert_array_equal(back.vectors[7:], np.concatenate([x[8:3300]]))


def test_pq_reranked_from_stored_codes_reaches_target():
    x = clustered(10_000, d=16)
    built = ann.build(x, factory="IVF32,PQ4")  # 4 bytes a code: PQ alone ranks only roughly
    assert built.recall >= 0.95 and "rerank=" in built.search_params and "nprobe=" in built.search_params
    q = clustered(200, d=16, seed=4)
    De, _ = ann.exact_knn(q, x, 5, "l2")
    _, with_codes = ann.search(built.index, q, 5, "l2", built.search_params, codes=x)
    _, pq_only = ann.search(built.index, q, 5, "l2", built.search_params.split(",rerank")[0])
    r_rerank, r_pq = (ann.recall_at_k(q, x, r, De, "l2") for r in (with_codes, pq_only))
    assert r_rerank >= 0.93 and r_rerank > r_pq + 0.05
    with pytest.raises(ValueError, match="rerank"):
        ann.set_params(built.index, "rerank=0")

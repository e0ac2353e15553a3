"""Index vs brute-force Hamming, add/remove, persistence, refusal, dedup groups."""
import json

import numpy as np
import pytest

from encoder.hashing.dedup import find_groups
from encoder.search.index import Index, IndexMismatchError
from encoder.hashing.hashes import hamming


def _rand(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, 8), dtype=np.uint8)


def test_search_matches_brute_force():
    h = _rand(300)
    ids = [f"img{i:03d}.jpg" for i in range(300)]
    idx = Index.create("phash", "v1", h, ids)
    q = _rand(10, seed=1)
    distances, got = idx.search(q, k=5)
    full = hamming(q[:, None], h[None])
    for r in range(10):
        assert sorted(distances[r].tolist()) == sorted(np.sort(full[r])[:5].tolist())
        for d, i in zip(distances[r], got[r]):
            assert full[r, ids.index(i)] == d


def test_k_bigger_than_index_and_bad_k():
    idx = Index.create("phash", "v1", _rand(3), ["a", "b", "c"])
    d, ids = idx.search(_rand(1), k=10)
    assert len(ids[0]) == 3 and d.shape == (1, 3)
    for k in (0, -1):
        with pytest.raises(ValueError, match=f"k={k}"):
            idx.search(_rand(1), k=k)


def test_save_load_add_remove(tmp_path):
    h = _rand(20)
    ids = [f"d/{i}.png" for i in range(20)]
    idx = Index.create("phash", "v1", h[:15], ids[:15], root="/x")
    idx.save(tmp_path / "idx")
    idx = Index.load(tmp_path / "idx")
    old = idx.vectors.copy()
    idx.add(h[15:], ids[15:])
    np.testing.assert_array_equal(idx.vectors[:15], old)
    assert idx.remove(["d/3.png", "nope"]) == ["nope"]
    idx.save(tmp_path / "idx")
    back = Index.load(tmp_path / "idx")
    assert len(back) == 19 and "d/3.png" not in back.ids
    meta = json.loads((tmp_path / "idx" / "meta.json").read_text())
    assert meta["count"] == 19 and meta["faiss_type"] == "BinaryFlat" and meta["metric"] == "hamming"
    d, got = back.search(h[7:8], k=1)
    assert got[0] == ["d/7.png"] and d[0, 0] == 0


def test_refuses_other_version():
    idx = Index.create("phash", "phash-v1", _rand(2), ["a", "b"], extra={"decode": "full"})
    with pytest.raises(IndexMismatchError, match="version"):
        idx.check_compatible("phash", "phash-v2")
    with pytest.raises(IndexMismatchError, match="decode"):
        idx.check_compatible("phash", "phash-v1", decode="draft")
    with pytest.raises(IndexMismatchError, match="method"):
        idx.check_compatible("ae", "phash-v1")


def test_code_index_and_hnsw():
    codes = np.random.default_rng(0).normal(size=(50, 16)).astype(np.float32)
    idx = Index.create("ae", "fp123", codes, [str(i) for i in range(50)])
    d, ids = idx.search(codes[4:5], k=3)
    assert ids[0][0] == "4" and d[0, 0] == pytest.approx(0, abs=1e-5)
    h = _rand(500)
    hn = Index.create("phash", "v1", h, [str(i) for i in range(500)], faiss_type="BinaryHNSW")
    assert hn.meta["faiss_type"] == "BinaryHNSW"
    _, ids = hn.search(h[:20], k=1)
    assert sum(ids[i][0] == str(i) for i in range(20)) >= 19


def test_missing_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="no meta.json"):
        Index.load(tmp_path)


def test_dedup_groups_connected_components():
    base = _rand(1)[0]
    near = base.copy()
    near[0] ^= 0b111  # 3 bits away
    nearer = near.copy()
    nearer[1] ^= 0b1  # 4 from base, 1 from near
    other = _rand(1, seed=5)[0]
    h = np.stack([base, other, near, nearer])
    groups = find_groups(h, ["a", "o", "b", "c"], threshold=3)
    assert groups == [{"ids": ["a", "b", "c"], "max_distance": 4}]
    assert find_groups(h, ["a", "o", "b", "c"], threshold=0) == []
    assert find_groups(h, ["a", "o", "b", "c"], threshold=3, flat=np.array([1, 0, 0, 0], bool)) == \
        [{"ids": ["b", "c"], "max_distance": 1}]
    with pytest.raises(ValueError, match="threshold=65"):
        find_groups(h, list("abcd"), threshold=65)

"""encoder.palette.kmeans: the exact nearest-centre kernels, seeding, Lloyd and weighted k-means."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from encoder.palette import kmeans
from encoder.palette.api import assign
from encoder.palette.colors import distinct_colors


@pytest.mark.parametrize("n", [2, 5, 16, 64, 200])
def test_nearest_colour_equals_brute_force_with_ties(n):
    rng = np.random.default_rng(n)
    colors = rng.integers(0, 256, (20000, 3), dtype=np.uint8)
    pal = rng.integers(0, 256, (n, 3), dtype=np.uint8)
    pal[1] = pal[0] + 1  # near-duplicates and exact ties are the hard cases
    pal[-1] = pal[0]
    got = assign(colors, pal)
    d = ((colors[:, None, :].astype(np.int64) - pal[None].astype(np.int64)) ** 2).sum(2)
    assert np.array_equal(got, d.argmin(1))
    idx, dist = kmeans.nearest(colors, pal)  # the kernel itself: exact distances, lowest index on ties
    assert np.array_equal(idx, d.argmin(1)) and np.array_equal(dist, d.min(1))


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_threaded_search_equals_brute_force(threads):
    rng = np.random.default_rng(threads)
    x = rng.integers(0, 256, (kmeans._PAR_MIN * 2 + 123, 3)).astype(np.uint8)  # several uneven chunks
    c = rng.integers(0, 256, (50, 3)).astype(np.uint8)
    idx, dist = kmeans.nearest(x, c, threads=threads)
    ref = ((x[:, None].astype(np.int64) - c[None].astype(np.int64)) ** 2).sum(2)
    assert np.array_equal(idx, ref.argmin(1)) and np.array_equal(dist, ref.min(1))


def test_threads_is_an_argument_not_a_module_global():
    assert not hasattr(kmeans, "THREADS")
    assert kmeans.thread_count(3) == 3 and kmeans.thread_count(0) == 1 and kmeans.thread_count(None) >= 1
    rng = np.random.default_rng(11)
    x = rng.normal(128, 40, (kmeans._PAR_MIN * 3, 3))
    w = rng.integers(1, 9, len(x)).astype(np.float64)
    one = kmeans.weighted_kmeans(x, w, 16, threads=1)
    two = kmeans.weighted_kmeans(x, w, 16, threads=2)
    assert np.array_equal(one[0], two[0]) and one[1] == two[1]


def test_weighted_kmeans_matches_sklearn_inertia(smooth):
    from sklearn.cluster import KMeans

    img = smooth(1, (40, 32))
    px = img.reshape(-1, 3).astype(np.float64)
    cols, counts = distinct_colors(img.reshape(-1, 3))
    ours, inertia = kmeans.weighted_kmeans(cols.astype(np.float64), counts, 8, seed=0)
    ref = KMeans(8, n_init=10, random_state=0).fit(px)
    # our weighted objective is the pixel objective: evaluate our centres on all pixels
    full = ((px[:, None] - ours[None]) ** 2).sum(2).min(1).sum()
    assert full == pytest.approx(inertia, rel=1e-4)
    assert inertia <= ref.inertia_ * 1.02
    with pytest.raises(ValueError, match="n_clusters=9 must be in"):
        kmeans.weighted_kmeans(np.zeros((8, 3)), np.ones(8), 9)


def test_torch_kernel_for_cuda_equals_brute_force():
    """The CUDA path's kernel (run here on CPU tensors): exact labels and distances."""
    rng = np.random.default_rng(7)
    x = rng.integers(0, 256, (5000, 3)).astype(np.float32)
    c = rng.integers(0, 256, (40, 3)).astype(np.float32)
    c[5] = c[3]  # an exact tie: the lower index wins
    i, d = kmeans._sqdist_argmin(torch.from_numpy(x), torch.from_numpy(c), chunk=1024)
    ref = ((x[:, None].astype(np.int64) - c[None].astype(np.int64)) ** 2).sum(2)
    assert np.array_equal(i.numpy(), ref.argmin(1)) and np.array_equal(d.numpy(), ref.min(1))


def test_varpart_splits_the_widest_cluster_at_its_mean():
    x = np.array([[0.0, 0, 0], [2, 0, 0], [100, 0, 0], [102, 0, 0], [100, 50, 0]])
    w = np.array([1.0, 1, 1, 1, 2])
    two = kmeans.varpart(x, w, 2)
    assert sorted(map(tuple, two.round(6))) == [(1.0, 0.0, 0.0), (100.5, 25.0, 0.0)]
    three = kmeans.varpart(x, w, 3)  # then the right cluster, along its widest axis (y)
    assert sorted(map(tuple, three.round(6))) == [(1.0, 0.0, 0.0), (100.0, 50.0, 0.0), (101.0, 0.0, 0.0)]
    # a single colour cannot be split: fewer seeds than asked
    assert kmeans.varpart(np.array([[5.0, 5, 5]]), np.array([3.0]), 4).tolist() == [[5.0, 5.0, 5.0]]


def test_overrelaxed_lloyd_never_ends_worse_than_its_start():
    rng = np.random.default_rng(3)
    x = rng.normal(0, 30, (3000, 3)) + 128
    w = rng.integers(1, 5, 3000).astype(np.float64)
    c0 = x[:32]
    start = kmeans.nearest(x, c0)[1] @ w
    c, _ = kmeans.lloyd(x, w, c0, 20, 0.0)
    assert kmeans.nearest(x, c)[1] @ w < start

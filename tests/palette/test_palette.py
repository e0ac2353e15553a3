"""encoder.palette.api against references (brute force, scikit-learn, scikit-image) and properties."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import skimage
from PIL import Image

from encoder.palette import api as palette

PHOTO = Path(skimage.__file__).parent / "data" / "astronaut.png"


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A real photo, downscaled to 128x128 to keep the tests fast."""
    return np.asarray(Image.open(PHOTO).convert("RGB").resize((128, 128), Image.Resampling.BILINEAR))


def smooth(seed: int, size=(48, 40)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize(size, Image.Resampling.BICUBIC))


def test_png_is_mode_p_and_decodes_to_assigned_image(photo):
    import faiss

    before = faiss.cvar.distance_compute_blas_threshold
    q = palette.quantize(photo, 32)
    assert faiss.cvar.distance_compute_blas_threshold == before  # our change to faiss's setting is undone
    data = q.png_bytes()
    im = Image.open(io.BytesIO(data))
    assert im.format == "PNG" and im.mode == "P"
    assert np.array_equal(np.asarray(im.convert("RGB")), q.image())
    assert np.array_equal(np.asarray(im), q.labels)
    assert len(data) < len(palette.png_bytes(photo))


def test_assignment_equals_brute_force(photo):
    pal = palette.fit_palette(photo, 24, seed=3)
    labels = palette.assign(photo, pal)
    px = photo.reshape(-1, 3).astype(np.int64)
    d = ((px[:, None, :] - pal[None].astype(np.int64)) ** 2).sum(2)
    assert np.array_equal(labels.reshape(-1), d.argmin(1))


@pytest.mark.parametrize("k", [2, 5, 16, 64, 200])
def test_nearest_colour_equals_brute_force_with_ties(k):
    rng = np.random.default_rng(k)
    colors = rng.integers(0, 256, (20000, 3), dtype=np.uint8)
    pal = rng.integers(0, 256, (k, 3), dtype=np.uint8)
    pal[1] = pal[0] + 1  # near-duplicates and exact ties are the hard cases
    pal[-1] = pal[0]
    got = palette.assign(colors, pal)
    d = ((colors[:, None, :].astype(np.int64) - pal[None].astype(np.int64)) ** 2).sum(2)
    assert np.array_equal(got, d.argmin(1))
    idx, dist = palette._nearest(colors, pal)  # the kernel itself: exact distances, lowest index on ties
    assert np.array_equal(idx, d.argmin(1)) and np.array_equal(dist, d.min(1))


def test_lab_assignment_is_nearest_in_lab(photo):
    pal = palette.fit_palette(photo, 16, lab=True)
    labels = palette.assign(photo, pal, lab=True).reshape(-1)
    x, c = palette.srgb_to_lab(photo.reshape(-1, 3)), palette.srgb_to_lab(pal)
    d = ((x[:, None] - c[None]) ** 2).sum(2)
    chosen = d[np.arange(len(x)), labels]
    assert np.allclose(chosen, d.min(1), atol=1e-6)


def test_psnr_grows_with_k(photo):
    p = [palette.psnr(photo, palette.quantize(photo, k).image()) for k in (16, 32, 64)]
    assert p[2] > p[1] > p[0]
    assert p[0] > 20


def test_weighted_kmeans_matches_sklearn_inertia():
    from sklearn.cluster import KMeans

    img = smooth(1, (40, 32))
    px = img.reshape(-1, 3).astype(np.float64)
    cols, counts = palette.distinct_colors(img.reshape(-1, 3))
    ours, inertia = palette.weighted_kmeans(cols.astype(np.float64), counts, 8, seed=0)
    ref = KMeans(8, n_init=10, random_state=0).fit(px)
    # our weighted objective is the pixel objective: evaluate our centres on all pixels
    full = ((px[:, None] - ours[None]) ** 2).sum(2).min(1).sum()
    assert full == pytest.approx(inertia, rel=1e-4)
    assert inertia <= ref.inertia_ * 1.02


def test_ciede2000_matches_skimage():
    from skimage.color import deltaE_ciede2000, rgb2lab

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (500, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-40, 41, (500, 3)), 0, 255).astype(np.uint8)
    la, lb = palette.srgb_to_lab(a), palette.srgb_to_lab(b)
    assert np.allclose(la, rgb2lab(a[None] / 255.0)[0], atol=0.05)
    assert np.allclose(palette.ciede2000(la, lb), deltaE_ciede2000(la, lb), atol=1e-6)
    # and on colours far apart, including greys (zero chroma)
    c = rng.normal(0, 40, (500, 3)) + [50, 0, 0]
    d = rng.normal(0, 40, (500, 3)) + [50, 0, 0]
    c[:20, 1:] = 0
    assert np.allclose(palette.ciede2000(c, d), deltaE_ciede2000(c, d), atol=1e-6)


def test_lab_round_trip():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (1000, 3), dtype=np.uint8)
    assert np.abs(palette.lab_to_srgb(palette.srgb_to_lab(rgb)).astype(int) - rgb).max() <= 1


def test_exact_palette_when_k_at_least_distinct_colors():
    rng = np.random.default_rng(2)
    cols = rng.integers(0, 256, (10, 3), dtype=np.uint8)
    img = cols[rng.integers(0, 10, (20, 30))]
    for k in (10, 64):
        q = palette.quantize(img, k)
        assert q.n_colors == len(np.unique(cols, axis=0))
        assert np.array_equal(q.image(), img)
        assert palette.psnr(img, q.image()) == float("inf")


@pytest.mark.parametrize("k", [0, 1, 257, -3, 2.5, True])
def test_bad_k_is_refused_naming_it(k):
    with pytest.raises(ValueError, match=f"k={k!r}"):
        palette.quantize(smooth(0), k)


def test_one_pixel_and_grey_images():
    one = np.array([[[200, 30, 30]]], np.uint8)
    q = palette.quantize(one, 16)
    assert q.n_colors == 1 and np.array_equal(q.image(), one)
    grey = np.repeat(np.linspace(0, 255, 64 * 48).reshape(48, 64, 1).astype(np.uint8), 3, axis=2)
    q = palette.quantize(grey, 8)
    img = q.image()
    assert q.n_colors == 8 and np.all(img[..., 0] == img[..., 1]) and np.all(img[..., 1] == img[..., 2])


def test_segmentation_outputs(photo):
    q2 = palette.quantize(photo, 2)
    mask = palette.segmentation(q2)
    assert mask.shape == photo.shape[:2] and mask.dtype == np.uint8
    assert set(np.unique(mask)) == {0, 255}
    q16 = palette.quantize(photo, 16)
    seg = palette.segmentation(q16)
    assert seg.shape == photo.shape
    # one distinct label colour per segment, and the label map is recoverable from it
    assert len(np.unique(seg.reshape(-1, 3), axis=0)) == q16.n_colors
    assert len(np.unique(palette.segment_colors(256), axis=0)) == 256


def test_auto_k_picks_smallest_meeting_target(photo):
    ks = (4, 8, 16, 32, 64)
    k, curve = palette.auto_k(photo, target_psnr=30.0, ks=ks)
    assert k is not None and curve[-1]["k"] == k and curve[-1]["psnr"] >= 30.0
    assert all(r["psnr"] < 30.0 for r in curve[:-1])
    budget = curve[2]["bytes_after"]
    kb, curve_b = palette.auto_k(photo, max_bytes=budget, ks=ks)
    assert kb is not None and [r for r in curve_b if r["k"] == kb][0]["bytes_after"] <= budget
    with pytest.raises(ValueError):
        palette.auto_k(photo)


def test_dither_and_random_baseline(photo):
    qd = palette.quantize(photo, 16, dither=True)
    qr = palette.quantize(photo, 16, method="random")
    qk = palette.quantize(photo, 16)
    assert qd.n_colors <= 16 and set(map(tuple, qd.image().reshape(-1, 3))) <= set(map(tuple, qk.palette))
    assert palette.psnr(photo, qk.image()) > palette.psnr(photo, qr.image()) + 3
    # seeded: same result twice
    assert np.array_equal(palette.quantize(photo, 16).palette, qk.palette)


def test_colourful_image_uses_binned_fit():
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)  # ~40k distinct colours
    binned = palette.fit_palette(img, 16, max_points=1000)  # fits on 6-bit cells
    exact = palette.fit_palette(img, 16, max_points=10**6)  # fits on distinct colours
    p_binned = palette.psnr(img, binned[palette.assign(img, binned)])
    p_exact = palette.psnr(img, exact[palette.assign(img, exact)])
    assert len(binned) == 16 and abs(p_binned - p_exact) < 0.1


def test_torch_kernel_for_cuda_equals_brute_force():
    """The CUDA path's kernel (run here on CPU tensors): exact labels and distances."""
    import torch

    rng = np.random.default_rng(7)
    x = rng.integers(0, 256, (5000, 3)).astype(np.float32)
    c = rng.integers(0, 256, (40, 3)).astype(np.float32)
    c[5] = c[3]  # an exact tie: the lower index wins
    i, d = palette._sqdist_argmin(torch.from_numpy(x), torch.from_numpy(c), chunk=1024)
    ref = ((x[:, None].astype(np.int64) - c[None].astype(np.int64)) ** 2).sum(2)
    assert np.array_equal(i.numpy(), ref.argmin(1)) and np.array_equal(d.numpy(), ref.min(1))


def test_varpart_splits_the_widest_cluster_at_its_mean():
    x = np.array([[0.0, 0, 0], [2, 0, 0], [100, 0, 0], [102, 0, 0], [100, 50, 0]])
    w = np.array([1.0, 1, 1, 1, 2])
    two = palette._varpart(x, w, 2)
    assert sorted(map(tuple, two.round(6))) == [(1.0, 0.0, 0.0), (100.5, 25.0, 0.0)]
    three = palette._varpart(x, w, 3)  # then the right cluster, along its widest axis (y)
    assert sorted(map(tuple, three.round(6))) == [(1.0, 0.0, 0.0), (100.0, 50.0, 0.0), (101.0, 0.0, 0.0)]
    # a single colour cannot be split: fewer seeds than asked
    assert palette._varpart(np.array([[5.0, 5, 5]]), np.array([3.0]), 4).tolist() == [[5.0, 5.0, 5.0]]


@pytest.mark.parametrize("k", [16, 64])
def test_palette_as_good_as_full_pixel_kmeans(photo, k):
    """The quality bar of the bench, on a small photo: PSNR >= full-pixel k-means - 0.1 dB."""
    from sklearn.cluster import KMeans

    px = photo.reshape(-1, 3).astype(np.float32)
    km = KMeans(k, n_init=1, random_state=0).fit(px)
    ref = np.clip(np.rint(km.cluster_centers_), 0, 255).astype(np.uint8)[km.labels_].reshape(photo.shape)
    ours = palette.quantize(photo, k).image()
    assert palette.psnr(photo, ours) >= palette.psnr(photo, ref) - 0.1


def test_overrelaxed_lloyd_never_ends_worse_than_its_start():
    rng = np.random.default_rng(3)
    x = rng.normal(0, 30, (3000, 3)) + 128
    w = rng.integers(1, 5, 3000).astype(np.float64)
    c0 = x[:32]
    start = palette._nearest(x, c0)[1] @ w
    c, _ = palette._lloyd(x, w, c0, 20, 0.0)
    assert palette._nearest(x, c)[1] @ w < start


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_threaded_search_equals_brute_force(threads, monkeypatch):
    monkeypatch.setattr(palette, "THREADS", threads)
    rng = np.random.default_rng(threads)
    x = rng.integers(0, 256, (palette._PAR_MIN * 2 + 123, 3)).astype(np.uint8)  # several uneven chunks
    c = rng.integers(0, 256, (50, 3)).astype(np.uint8)
    idx, dist = palette._nearest(x, c)
    ref = ((x[:, None].astype(np.int64) - c[None].astype(np.int64)) ** 2).sum(2)
    assert np.array_equal(idx, ref.argmin(1)) and np.array_equal(dist, ref.min(1))


def _quantize_in_child(img):
    return palette.quantize(img, 64).palette


def test_quantize_in_a_forked_child_after_threads_ran():
    """The helper threads do not survive a fork: the child makes its own instead of waiting forever."""
    import multiprocessing

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)  # enough colours for the threaded search
    here = palette.quantize(img, 64).palette
    with multiprocessing.get_context("fork").Pool(1) as pool:
        there = pool.apply_async(_quantize_in_child, (img,)).get(timeout=120)
    assert np.array_equal(here, there)

"""encoder.palette.api: fit, assign and quantize against brute force and full-pixel k-means."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from encoder.metrics import psnr
from encoder.palette.api import Quantized, assign, check_n_colors, fit_palette, quantize, random_palette
from encoder.palette.colors import ColorSet, srgb_to_lab
from encoder.palette.report import lossless_png_size


def test_png_is_mode_p_and_decodes_to_assigned_image(photo):
    import faiss

    before = faiss.cvar.distance_compute_blas_threshold
    q = quantize(photo, 32)
    assert faiss.cvar.distance_compute_blas_threshold == before  # our change to faiss's setting is undone
    data = q.png_bytes()
    im = Image.open(io.BytesIO(data))
    assert im.format == "PNG" and im.mode == "P"
    assert np.array_equal(np.asarray(im.convert("RGB")), q.image())
    assert np.array_equal(np.asarray(im), q.labels)
    assert len(data) < lossless_png_size(photo)


def test_quantize_is_fit_then_assign(photo):
    for n, lab in ((16, False), (64, True), (256, False)):
        q = quantize(photo, n, seed=2, lab=lab)
        pal = fit_palette(photo, n, seed=2, lab=lab)
        labels = assign(photo, pal, lab=lab)
        assert isinstance(q, Quantized) and q.n_colors == n  # the size asked for
        assert np.array_equal(q.palette, pal) and np.array_equal(q.labels, labels)
        assert np.array_equal(q.image(), pal[labels])


def test_fit_and_assign_take_a_shared_color_set(photo, smooth):
    cs = ColorSet.of(photo)
    pal = fit_palette(photo, 24, color_set=cs)
    assert np.array_equal(pal, fit_palette(photo, 24))
    assert np.array_equal(assign(photo, pal, color_set=cs), assign(photo, pal))
    with pytest.raises(ValueError, match="color_set holds 16384 pixels, the image 1920"):
        assign(smooth(0), pal, color_set=cs)  # a colour set of another image is refused


def test_threads_give_identical_palettes(photo):
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)  # enough colours for the threaded search
    for img in (photo, noisy):
        one, two = quantize(img, 64, threads=1), quantize(img, 64, threads=2)
        assert np.array_equal(one.palette, two.palette) and np.array_equal(one.labels, two.labels)
        assert np.array_equal(fit_palette(img, 16, threads=1), fit_palette(img, 16, threads=2))


def test_assignment_equals_brute_force(photo):
    pal = fit_palette(photo, 24, seed=3)
    labels = assign(photo, pal)
    px = photo.reshape(-1, 3).astype(np.int64)
    d = ((px[:, None, :] - pal[None].astype(np.int64)) ** 2).sum(2)
    assert np.array_equal(labels.reshape(-1), d.argmin(1))


def test_lab_assignment_is_nearest_in_lab(photo):
    pal = fit_palette(photo, 16, lab=True)
    labels = assign(photo, pal, lab=True).reshape(-1)
    x, c = srgb_to_lab(photo.reshape(-1, 3)), srgb_to_lab(pal)
    d = ((x[:, None] - c[None]) ** 2).sum(2)
    chosen = d[np.arange(len(x)), labels]
    assert np.allclose(chosen, d.min(1), atol=1e-6)


def test_psnr_grows_with_n_colors(photo):
    p = [psnr(photo, quantize(photo, n).image()) for n in (16, 32, 64)]
    assert p[2] > p[1] > p[0]
    assert p[0] > 20


def test_exact_palette_when_n_colors_at_least_distinct_colors():
    rng = np.random.default_rng(2)
    cols = rng.integers(0, 256, (10, 3), dtype=np.uint8)
    img = cols[rng.integers(0, 10, (20, 30))]
    for n in (10, 64):
        q = quantize(img, n)
        assert q.n_colors == n and len(q.palette) == len(np.unique(cols, axis=0))
        assert np.array_equal(q.image(), img)
        assert psnr(img, q.image()) == float("inf")


@pytest.mark.parametrize("n", [0, 1, 257, -3, 2.5, True])
def test_bad_n_colors_is_refused_naming_it(n, smooth):
    for call in (
        lambda: quantize(smooth(0), n),
        lambda: fit_palette(smooth(0), n),
        lambda: random_palette(n),
        lambda: check_n_colors(n),
    ):
        with pytest.raises(ValueError, match=f"n_colors={n!r} must be an integer in \\[2, 256\\]"):
            call()


def test_one_pixel_and_grey_images():
    one = np.array([[[200, 30, 30]]], np.uint8)
    q = quantize(one, 16)
    assert len(q.palette) == 1 and np.array_equal(q.image(), one)
    grey = np.repeat(np.linspace(0, 255, 64 * 48).reshape(48, 64, 1).astype(np.uint8), 3, axis=2)
    q = quantize(grey, 8)
    img = q.image()
    assert len(q.palette) == 8 and np.all(img[..., 0] == img[..., 1]) and np.all(img[..., 1] == img[..., 2])


def test_dither_and_random_baseline(photo):
    qd = quantize(photo, 16, dither=True)
    qr = quantize(photo, 16, method="random")
    qk = quantize(photo, 16)
    assert len(qd.palette) <= 16 and set(map(tuple, qd.image().reshape(-1, 3))) <= set(map(tuple, qk.palette))
    assert psnr(photo, qk.image()) > psnr(photo, qr.image()) + 3
    # seeded: same result twice
    assert np.array_equal(quantize(photo, 16).palette, qk.palette)
    # the random baseline needs no image: its palette, less colours no pixel takes
    pal = random_palette(16, seed=0)
    assert pal.shape == (16, 3) and {tuple(c) for c in qr.palette} <= {tuple(c) for c in pal}
    assert np.array_equal(qr.image(), pal[assign(photo, pal)])
    # dithered: the fitted palette, assigned with error diffusion
    fitted = fit_palette(photo, 16)
    assert np.array_equal(qd.image(), fitted[assign(photo, fitted, dither=True)])


def test_colourful_image_uses_binned_fit():
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)  # ~40k distinct colours
    binned = fit_palette(img, 16, max_points=1000)  # fits on 6-bit cells
    exact = fit_palette(img, 16, max_points=10**6)  # fits on distinct colours
    p_binned = psnr(img, binned[assign(img, binned)])
    p_exact = psnr(img, exact[assign(img, exact)])
    assert len(binned) == 16 and abs(p_binned - p_exact) < 0.1


@pytest.mark.parametrize("n", [16, 64])
def test_palette_as_good_as_full_pixel_kmeans(photo, n):
    """The quality bar of the bench, on a small photo: PSNR >= full-pixel k-means - 0.1 dB."""
    from sklearn.cluster import KMeans

    px = photo.reshape(-1, 3).astype(np.float32)
    km = KMeans(n, n_init=1, random_state=0).fit(px)
    ref = np.clip(np.rint(km.cluster_centers_), 0, 255).astype(np.uint8)[km.labels_].reshape(photo.shape)
    ours = quantize(photo, n).image()
    assert psnr(photo, ours) >= psnr(photo, ref) - 0.1


def _quantize_in_child(img):
    return quantize(img, 64).palette


def test_quantize_in_a_forked_child_after_threads_ran():
    """The helper threads do not survive a fork: the child makes its own instead of waiting forever."""
    import multiprocessing

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)  # enough colours for the threaded search
    here = quantize(img, 64).palette
    with multiprocessing.get_context("fork").Pool(1) as pool:
        there = pool.apply_async(_quantize_in_child, (img,)).get(timeout=120)
    assert np.array_equal(here, there)


def test_few_colour_graphics_reach_full_kmeans():
    """A flat illustration (68% of pixels in 10 colours, gradients, anti-aliased edges): the fit on
    6-bit cells ended 2.1 dB below full-pixel k-means at K=64; the exact-colour path matches it."""
    from fewcolor_images import illustration
    from sklearn.cluster import KMeans

    img = illustration((480, 300))
    for n in (16, 64):
        ours = psnr(img, quantize(img, n).image())
        km = KMeans(n, n_init=3, random_state=0).fit(img.reshape(-1, 3).astype(np.float64))
        centres = np.clip(np.rint(km.cluster_centers_), 0, 255).astype(np.uint8)
        ref = psnr(img, centres[km.labels_].reshape(img.shape))
        assert ours >= ref - 0.1, (n, ours, ref)

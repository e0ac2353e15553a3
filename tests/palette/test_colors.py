"""encoder.palette.colors: packed colours, colour sets, histogram cells, Lab and CIEDE2000 against scikit-image."""

from __future__ import annotations

import numpy as np

from encoder.palette.colors import (
    ColorSet,
    binned_colors,
    ciede2000,
    distinct_colors,
    lab_to_srgb,
    pack,
    srgb_to_lab,
    unpack,
)


def test_pack_unpack_round_trip_and_color_set():
    rng = np.random.default_rng(4)
    px = rng.integers(0, 256, (5000, 3), dtype=np.uint8)
    px[100:200] = px[0]  # repeats
    packed = pack(px)
    assert packed.dtype == np.int32 and packed[0] == (int(px[0, 0]) << 16 | int(px[0, 1]) << 8 | int(px[0, 2]))
    assert np.array_equal(unpack(packed), px)
    cs = ColorSet.of(px.reshape(50, 100, 3))  # an image or pixels: the same set
    ref, counts = np.unique(px, axis=0, return_counts=True)  # rows sorted as r, g, b = by packed value
    assert np.array_equal(cs.colors, ref) and np.array_equal(cs.counts, counts)
    assert np.array_equal(cs.packed, packed) and np.array_equal(unpack(cs.keys), cs.colors)
    cols, cnt = distinct_colors(px)
    assert np.array_equal(cols, ref) and np.array_equal(cnt, counts)


def test_binned_colors_of_distinct_colours_equal_those_of_pixels():
    rng = np.random.default_rng(6)
    px = rng.integers(0, 256, (3000, 3), dtype=np.uint8)[rng.integers(0, 3000, 20000)]
    cols, counts = distinct_colors(px)
    m1, w1 = binned_colors(px, bits=5)
    m2, w2 = binned_colors(cols, bits=5, counts=counts)
    assert np.allclose(m1, m2) and np.array_equal(w1, w2) and w1.sum() == len(px)
    cell = pack(px >> 3)  # 5-bit cells, ordered as binned_colors orders them
    for mean, weight, key in zip(m1, w1, np.unique(cell)):  # brute force, cell by cell
        members = px[cell == key]
        assert weight == len(members) and np.allclose(mean, members.mean(0))


def test_ciede2000_matches_skimage():
    from skimage.color import deltaE_ciede2000, rgb2lab

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (500, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-40, 41, (500, 3)), 0, 255).astype(np.uint8)
    la, lb = srgb_to_lab(a), srgb_to_lab(b)
    assert np.allclose(la, rgb2lab(a[None] / 255.0)[0], atol=0.05)
    assert np.allclose(ciede2000(la, lb), deltaE_ciede2000(la, lb), atol=1e-6)
    # and on colours far apart, including greys (zero chroma)
    c = rng.normal(0, 40, (500, 3)) + [50, 0, 0]
    d = rng.normal(0, 40, (500, 3)) + [50, 0, 0]
    c[:20, 1:] = 0
    assert np.allclose(ciede2000(c, d), deltaE_ciede2000(c, d), atol=1e-6)


def test_lab_round_trip():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (1000, 3), dtype=np.uint8)
    assert np.abs(lab_to_srgb(srgb_to_lab(rgb)).astype(int) - rgb).max() <= 1

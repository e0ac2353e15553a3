"""pHash/dHash/aHash against imagehash on real photos, golden values, properties."""
from pathlib import Path

import imagehash
import numpy as np
import pytest
import skimage
from PIL import Image

from encoder.data import open_image
from encoder.hashing.hashes import (dct_matrix, hamming, hash_paths, hash_to_hex, is_flat, phash_images,
                           small_gray)

DATA = Path(skimage.__file__).parent / "data"
PHOTOS = ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "camera.png", "moon.png"]
REF = {"phash": imagehash.phash, "dhash": imagehash.dhash, "ahash": imagehash.average_hash}


@pytest.mark.parametrize("method", ["phash", "dhash", "ahash"])
@pytest.mark.parametrize("name", PHOTOS)
def test_bit_identical_to_imagehash(method, name):
    im = open_image(DATA / name)
    assert hash_to_hex(phash_images([im], method)[0]) == str(REF[method](im))


@pytest.mark.parametrize("name,golden", [("astronaut.png", "c2924c5532bddfc8"),
                                          ("camera.png", "bff1c1c0434e8cbc")])
def test_golden_phash(name, golden):
    # Values pinned from imagehash.phash; a change here means the hash definition changed.
    assert hash_to_hex(phash_images([open_image(DATA / name)])[0]) == golden


def test_dct_matrix_matches_definition():
    x = np.random.default_rng(0).normal(size=32)
    n = np.arange(32)
    ref = np.array([2 * np.sum(x * np.cos(np.pi * k * (2 * n + 1) / 64)) for k in range(32)])
    np.testing.assert_allclose(dct_matrix(32) @ x, ref, atol=1e-9)


def test_small_change_near_flip_far():
    im = open_image(DATA / "chelsea.png")
    h0 = phash_images([im])[0]
    h_rot = phash_images([im.rotate(2)])[0]
    h_flip = phash_images([im.transpose(Image.Transpose.FLIP_TOP_BOTTOM)])[0]
    assert hamming(h0, h_rot) <= 8
    assert hamming(h0, h_flip) >= 20


def test_flat_flag_and_paths(tmp_path):
    Image.new("RGB", (50, 40), (120, 30, 200)).save(tmp_path / "flat.png")
    Image.open(DATA / "coffee.png").save(tmp_path / "coffee.jpg", quality=90)
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    errors = []
    paths = sorted(tmp_path.iterdir())
    hashes, kept, flat = hash_paths(paths, errors=errors)
    assert [p.name for p in kept] == ["coffee.jpg", "flat.png"]
    assert hashes.shape == (2, 8) and hashes.dtype == np.uint8
    assert flat.tolist() == [False, True]
    assert [p.name for p, _ in errors] == ["broken.jpg"]
    assert is_flat(small_gray(Image.new("L", (9, 9), 7))[None]).all()


def test_multiprocess_equals_single(tmp_path):
    for i, name in enumerate(PHOTOS[:4]):
        Image.open(DATA / name).convert("RGB").save(tmp_path / f"{i}.jpg", quality=85)
    paths = sorted(tmp_path.iterdir())
    a, _, _ = hash_paths(paths, workers=1)
    b, _, _ = hash_paths(paths, workers=2)
    c, _, _ = hash_paths(paths, draft=True, workers=1)
    np.testing.assert_array_equal(a, b)
    assert (hamming(a, c) <= 12).all()  # draft decode is close but not guaranteed identical


def test_bad_arguments():
    with pytest.raises(ValueError, match="method='xhash'"):
        phash_images([Image.new("L", (8, 8))], "xhash")
    with pytest.raises(ValueError, match="workers=0"):
        hash_paths([], workers=0)


def test_full_decode_of_jpegs_matches_imagehash(tmp_path):
    # full decode gives imagehash's hashes, with Pillow's resize and with the int8 one; the
    # draft mode's luma-only decode is within rounding of Pillow's convert('L')
    import sklearn

    sk = Path(sklearn.__file__).parent / "datasets" / "images"
    srcs = [DATA / n for n in PHOTOS] + [sk / "china.jpg", sk / "flower.jpg"]
    for i, src in enumerate(srcs):
        Image.open(src).convert("RGB").save(tmp_path / f"{i:02d}.jpg", quality=90)
    paths = sorted(tmp_path.iterdir())
    ref = [str(imagehash.phash(Image.open(p))) for p in paths]
    for fast, workers in [(False, 1), (True, 1), (True, 2)]:
        ours, kept, _ = hash_paths(paths, workers=workers, fast_resize=fast)
        assert len(kept) == len(paths)
        assert [hash_to_hex(h) for h in ours] == ref
    luma = open_image(paths[-1], luma_only=True)
    rgb_l = open_image(paths[-1]).convert("L")
    assert luma.mode == "L" and luma.size == rgb_l.size
    diff = np.abs(np.asarray(luma, int) - np.asarray(rgb_l, int))
    # they differ where the decoded RGB clips (saturated colours): rare, and by rounding elsewhere
    assert diff.mean() < 0.1 and (diff > 1).mean() < 0.01
    # PNGs and grey JPEGs are decoded as before
    assert open_image(DATA / "coffee.png", luma_only=True).mode == "RGB"

"""pHash/dHash/aHash against imagehash on real photos, golden values, transparency, properties."""

from pathlib import Path

import imagehash
import numpy as np
import pytest
import skimage
from PIL import Image, ImageOps

from encoder.data import open_image
from encoder.hashing.hashes import (
    ALPHA_MODES,
    HASHES,
    METHODS,
    HashDef,
    dct_matrix,
    hamming,
    hash_images,
    hash_paths,
    hash_pixels,
    hash_to_hex,
    hash_version,
    is_flat,
    small_gray,
)

DATA = Path(skimage.__file__).parent / "data"
PHOTOS = ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "camera.png", "moon.png"]
REF = {"phash": imagehash.phash, "dhash": imagehash.dhash, "ahash": imagehash.average_hash}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", PHOTOS)
def test_bit_identical_to_imagehash(method, name):
    im = open_image(DATA / name)
    assert hash_to_hex(hash_images([im], method)[0]) == str(REF[method](im))


@pytest.mark.parametrize("name,golden", [("astronaut.png", "c2924c5532bddfc8"), ("camera.png", "bff1c1c0434e8cbc")])
def test_golden_phash(name, golden):
    # Values pinned from imagehash.phash; a change here means the hash definition changed.
    assert hash_to_hex(hash_images([open_image(DATA / name)])[0]) == golden


def test_dct_matrix_matches_definition():
    x = np.random.default_rng(0).normal(size=32)
    n = np.arange(32)
    ref = np.array([2 * np.sum(x * np.cos(np.pi * k * (2 * n + 1) / 64)) for k in range(32)])
    np.testing.assert_allclose(dct_matrix(32) @ x, ref, atol=1e-9)


def test_small_change_near_flip_far():
    im = open_image(DATA / "chelsea.png")
    h0 = hash_images([im])[0]
    h_rot = hash_images([im.rotate(2)])[0]
    h_flip = hash_images([im.transpose(Image.Transpose.FLIP_TOP_BOTTOM)])[0]
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
        hash_images([Image.new("L", (8, 8))], "xhash")
    with pytest.raises(ValueError, match="workers=0"):
        hash_paths([], workers=0)
    with pytest.raises(ValueError, match="alpha='black'"):
        hash_paths([], alpha="black")
    with pytest.raises(ValueError, match="alpha='black'"):
        hash_version("phash", "black")


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


def test_table_is_the_one_definition():
    assert METHODS == tuple(HASHES) == ("phash", "dhash", "ahash")
    im = open_image(DATA / "coffee.png")
    for name, d in HASHES.items():
        px = small_gray(im, name)[None]
        assert d.name == name and px.shape == (1, d.size[1], d.size[0])
        bits = d.bits(px)
        assert bits.shape == (1, 64) and bits.dtype == bool
        assert (hash_pixels(px, name) == np.packbits(bits, axis=1)).all()


def test_a_new_table_entry_is_a_new_method(monkeypatch, tmp_path):
    # adding a hash = one HashDef: imagehash's vertical dHash, with nothing else touched
    vdef = HashDef("vdhash", (8, 9), lambda x: (x[:, 1:] > x[:, :-1]).reshape(len(x), 64), "L,lanczos8x9,col>0")
    monkeypatch.setitem(HASHES, "vdhash", vdef)
    im = open_image(DATA / "chelsea.png")
    assert hash_to_hex(hash_images([im], "vdhash")[0]) == str(imagehash.dhash_vertical(im))
    im.save(tmp_path / "c.png")
    assert hash_to_hex(hash_paths([tmp_path / "c.png"], "vdhash")[0][0]) == str(imagehash.dhash_vertical(im))
    assert hash_version("vdhash", "white") == "vdhash-v1:L,lanczos8x9,col>0"


def test_versions():
    # the "white" strings are what indexes built before the alpha modes record: frozen
    assert {m: hash_version(m, "white") for m in METHODS} == {
        "phash": "phash-v1:L,lanczos32,dct2,8x8>median,imagehash-compatible",
        "dhash": "dhash-v1:L,lanczos9x8,row-gradient>0,imagehash-compatible",
        "ahash": "ahash-v1:L,lanczos8x8,>mean,imagehash-compatible",
    }
    versions = {hash_version(m, a) for m in METHODS for a in ALPHA_MODES}
    assert len(versions) == len(METHODS) * len(ALPHA_MODES)  # an index never mixes two
    assert hash_version("phash") == hash_version("phash", "imagehash") != hash_version("phash", "white")


def _transparent_images():
    """Images with transparency: RGBA with transparent corners (a photo rotated with expand),
    LA the same, P with a transparent palette entry."""
    photo = open_image(DATA / "astronaut.png").convert("RGBA")
    rgba = photo.rotate(30, expand=True)  # corners: (0, 0, 0, 0)
    la = photo.convert("LA").rotate(45, expand=True)
    p = open_image(DATA / "coffee.png").convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    p.info["transparency"] = int(np.asarray(p)[0, 0])  # the top-left pixel's colour is see-through
    return {"rgba": rgba, "la": la, "p": p}


@pytest.mark.parametrize("kind", ["rgba", "la", "p"])
@pytest.mark.parametrize("method", METHODS)
def test_transparency_as_imagehash_by_default(kind, method, tmp_path):
    im = _transparent_images()[kind]
    ref = str(REF[method](im))
    assert hash_to_hex(hash_images([im], method)[0]) == ref
    white = hash_images([im], method, alpha="white")[0]
    on_white = Image.alpha_composite(Image.new("RGBA", im.size, "white"), im.convert("RGBA"))
    assert hash_to_hex(white) == str(REF[method](on_white))  # "white": the old behaviour
    if method == "phash":  # composited on white the thumbnail changes: so does the pHash
        assert hash_to_hex(white) != ref
    # from a file, in worker processes as well: the job carries alpha
    im.save(tmp_path / f"{kind}.png")
    assert Image.open(tmp_path / f"{kind}.png").mode == im.mode
    paths = [tmp_path / f"{kind}.png"] * 2
    for workers in (1, 2):
        got, _, _ = hash_paths(paths, method, workers=workers)
        assert [hash_to_hex(h) for h in got] == [ref] * 2
        got, _, _ = hash_paths(paths, method, workers=workers, alpha="white")
        assert (got == white).all()


def test_exif_orientation_applied_unlike_imagehash(tmp_path):
    # imagehash hashes the stored pixels; we hash the upright image (encoder.data.open_image)
    im = open_image(DATA / "chelsea.png").convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    im.save(tmp_path / "rot.jpg", quality=90, exif=exif)
    stored = Image.open(tmp_path / "rot.jpg")
    (got,), _, _ = hash_paths([tmp_path / "rot.jpg"])
    assert hash_to_hex(got) == str(imagehash.phash(ImageOps.exif_transpose(stored)))
    assert hash_to_hex(got) != str(imagehash.phash(stored))


def test_draft_mode_has_no_alpha_to_handle(tmp_path):
    Image.open(DATA / "rocket.jpg").save(tmp_path / "r.jpg", quality=90)
    a, _, _ = hash_paths([tmp_path / "r.jpg"], draft=True)
    b, _, _ = hash_paths([tmp_path / "r.jpg"], draft=True, alpha="white")
    assert (a == b).all()

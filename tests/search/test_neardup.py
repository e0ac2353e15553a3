"""neardup: the transforms are deterministic, RGB, of the expected shape; mirror-aware pHash in evaluate_neardup."""

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

import search
from encoder.search.evaluate import evaluate_neardup
from encoder.search.methods import HashMethod, evaluation_methods
from encoder.search.neardup import PHONE_HEIGHT, TRANSFORMS

NEW = ("aspect_9x16", "crop50", "gamma_dark", "recolour", "overlay")


def _photo(w: int = 300, h: int = 200, seed: int = 0) -> Image.Image:
    """A colourful, asymmetric picture: gradients, a bright block on the left, some noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    a = np.stack([xx / w, yy / h, 0.5 + 0.5 * np.sin(xx / 9)], -1) * 200
    a[h // 4 : h // 2, w // 10 : w // 3] = (250, 240, 30)
    a += rng.normal(0, 8, a.shape)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")


@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize("size", [(300, 200), (200, 300)])
def test_new_transforms_deterministic_rgb_and_changed(name, size):
    im = _photo(*size)
    out = TRANSFORMS[name](im)
    assert out.mode == "RGB"
    assert np.array_equal(np.asarray(out), np.asarray(TRANSFORMS[name](im.copy())))  # pure: same picture, same copy
    assert out.size != im.size or np.abs(np.asarray(out, np.int16) - np.asarray(im, np.int16)).mean() > 5
    w, h = out.size
    if name == "aspect_9x16":
        assert h == PHONE_HEIGHT and w == pytest.approx(PHONE_HEIGHT * 9 / 16, abs=1)
    elif name == "crop50":
        assert w * h == pytest.approx(im.width * im.height / 2, rel=0.02)
        assert (w, h) != im.size
    else:
        assert (w, h) == im.size


def test_crop50_is_off_centre_and_the_old_transforms_are_kept():
    im = _photo()
    crop = np.asarray(TRANSFORMS["crop50"](im))
    w, h = crop.shape[1], crop.shape[0]
    left, top = (im.width - w) // 2, (im.height - h) // 2
    assert not np.array_equal(crop, np.asarray(im.crop((left, top, left + w, top + h))))
    assert list(TRANSFORMS)[:8] == [
        "jpeg_q30",
        "resize_50",
        "crop_90",
        "bright_+20",
        "blur",
        "hflip",
        "rotate_5",
        "grey",
    ]


def test_mirror_aware_phash_finds_the_flipped_copy_plain_phash_misses(tmp_path, capsys):
    im = _photo()
    queries, distractors = tmp_path / "q", tmp_path / "d"
    queries.mkdir(), distractors.mkdir()
    im.save(queries / "a.png")
    # a mirrored twin with a black patch: plain pHash of the flipped query lands on it (14 bits), not on
    # the original (32 bits); mirror-aware pHash finds the original at 0
    twin = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    ImageDraw.Draw(twin).rectangle((200, 120, 240, 140), fill=(0, 0, 0))
    twin.save(distractors / "b.png")
    for s in range(1, 4):
        _photo(seed=s).rotate(90 * s, expand=True).save(distractors / f"c{s}.png")
    methods = ["phash", "phash-mirror", HashMethod("dhash", mirror=True)]
    report = evaluate_neardup(
        distractors, methods=methods, queries=queries, transforms={"hflip": TRANSFORMS["hflip"], "none": lambda x: x}
    )
    got = {r["method"]: r["transforms"] for r in report["results"]}
    assert list(got) == ["phash", "phash-mirror", "dhash-mirror"]
    assert got["phash"]["hflip"]["R@1"] == 0.0 and got["phash"]["none"]["R@1"] == 1.0
    assert got["phash-mirror"]["hflip"]["R@1"] == 1.0 and got["phash-mirror"]["none"]["R@1"] == 1.0
    assert got["dhash-mirror"]["hflip"]["R@1"] == 1.0
    # the command line takes the same name
    assert (
        search.main(
            [
                "evaluate",
                str(distractors),
                "--neardup",
                "--queries",
                str(queries),
                "--methods",
                "phash-mirror",
                "--json",
            ]
        )
        == 0
    )
    cli = json.loads(capsys.readouterr().out)["results"][0]
    assert cli["method"] == "phash-mirror" and cli["transforms"]["hflip"]["R@1"] == 1.0


def test_mirror_names_and_plain_hash_unchanged():
    plain, mirror = evaluation_methods(["phash", "phash-mirror"])
    assert (plain.label, plain.mirror, mirror.label, mirror.mirror, mirror.name) == (
        "phash",
        False,
        "phash-mirror",
        True,
        "phash",
    )
    ims = [_photo(seed=s) for s in range(3)]
    assert plain.features(None, ims).shape == (3, 8)
    f = mirror.features(None, ims)
    assert f.shape == (3, 16) and np.array_equal(f[:, :8], plain.features(None, ims))
    with pytest.raises(ValueError, match="unknown"):
        evaluation_methods(["raw-mirror"])

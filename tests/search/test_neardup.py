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


@pytest.mark.parametrize("size", [(480, 320), (320, 480)])
def test_album_edits_deterministic_rgb_of_their_shape(size):
    from encoder.search.neardup import ALBUM_EDITS, SCREEN

    im = _photo(*size)
    for name, edit in ALBUM_EDITS.items():
        out = edit(im)
        assert out.mode == "RGB", name
        assert np.array_equal(np.asarray(out), np.asarray(edit(im.copy()))), name  # same picture, same copy
        assert out.size != im.size or np.abs(np.asarray(out, np.int16) - np.asarray(im, np.int16)).mean() > 3, name
    w, h = size
    assert ALBUM_EDITS["screenshot"](im).size == SCREEN and ALBUM_EDITS["phone_crop"](im).size == (720, 1280)
    assert ALBUM_EDITS["turn_90"](im).size == (h, w) and max(ALBUM_EDITS["thumbnail_q20"](im).size) == 256
    cap = np.asarray(ALBUM_EDITS["caption"](im).convert("L"))
    assert cap[-round(h * 0.15) :].mean() < 40 < cap[: -round(h * 0.15)].mean()  # a dark band over the bottom 15%
    crop = ALBUM_EDITS["corner_crop60"](im)
    assert crop.size == (round(w * 0.6), round(h * 0.6))
    assert min(abs(np.asarray(crop, np.int16) - np.asarray(im.crop(b), np.int16)).max() for b in _corners(w, h)) == 0


def _corners(w, h):
    cw, ch = round(w * 0.6), round(h * 0.6)
    return [(x, y, x + cw, y + ch) for x in (0, w - cw) for y in (0, h - ch)]


def test_false_match_rate_counts_non_matches_nearer_than_the_threshold(tmp_path):
    queries, distractors = tmp_path / "q", tmp_path / "d"
    queries.mkdir(), distractors.mkdir()
    for s in range(3):
        _photo(seed=s).rotate(90 * s, expand=True).save(queries / f"a{s}.png")
        _photo(seed=10 + s).transpose(Image.Transpose.FLIP_TOP_BOTTOM).save(distractors / f"b{s}.png")
    copies = {"jpeg_q30": TRANSFORMS["jpeg_q30"]}
    # a picture in no gallery, and a re-save of a gallery picture posing as one (it must count as a false match)
    strangers = [Image.new("RGB", (300, 200), (90, 160, 40)), Image.open(distractors / "b1.png").convert("RGB")]
    report = evaluate_neardup(distractors, methods=["phash"], queries=queries, transforms=copies, non_matches=strangers)
    fm = report["results"][0]["false_match"]
    assert report["results"][0]["transforms"]["jpeg_q30"]["R@1"] == 1.0
    assert fm["n"] == 2 and fm["rate"] == 0.5 and 0 <= fm["threshold"] < 32

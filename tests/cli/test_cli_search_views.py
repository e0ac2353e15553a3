"""search.py --views: an ae index of several views per picture finds crops; the option's refusals."""

import json

import numpy as np
import pytest
from helpers import class_folder, tiny_checkpoint
from PIL import Image

import search
from encoder.search.index import Index
from encoder.search.views import CROP_SIDE, view_count


def photo(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("views")
    g = d / "gallery"
    g.mkdir()
    im = photo(320, 240, 0)
    im.save(g / "original.png")
    im.crop((120, 90, 320, 240)).save(g / "tile.png")  # a hard negative: part of the same photo
    for s in range(1, 4):
        photo(240, 320, s).save(g / f"other{s}.png")
    (g / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    crop = d / "crop.png"
    cw, ch = round(320 * CROP_SIDE), round(240 * CROP_SIDE)
    im.crop((320 - cw, 0, 320, ch)).save(crop)  # half the area, top-right
    return g, crop, tiny_checkpoint(d / "model.pt")


def _json(capsys):
    return json.loads(capsys.readouterr().out)


def test_crops_index_query_add_remove(setup, tmp_path, capsys):
    g, crop, ckpt = setup
    idx = tmp_path / "idx"
    assert (
        search.main(["index", str(g), "--method", "ae", "--checkpoint", str(ckpt), "--views", "crops", "-o", str(idx)])
        == 0
    )
    out = capsys.readouterr()
    assert "indexed 5 images" in out.out and "1 unreadable" in out.out and "broken.jpg" in out.err
    meta = json.loads((idx / "meta.json").read_text())
    v = view_count("crops")
    assert meta["views"] == v and meta["view_set"] == "crops" and meta["count"] == 5
    assert np.load(idx / "codes.npy").shape == (5 * v, 128)
    assert (
        search.main(
            ["query", str(idx), str(crop), "-k", "5", "--json", "--plot", str(tmp_path / "q.png"), "--show-recon"]
        )
        == 0
    )
    nb = _json(capsys)[0]["neighbours"]
    ids = [n["id"] for n in nb]
    # the crop is one of the original's gallery views: found first at ~0 (ONNX graphs vs torch: ~1e-6)
    assert ids[0] == "original.png" and nb[0]["distance"] < 1e-4 < nb[1]["distance"]
    assert sorted(ids) == sorted(["original.png", "tile.png", "other1.png", "other2.png", "other3.png"])
    assert (tmp_path / "q.png").stat().st_size > 1000
    assert search.main(["query", str(idx), str(crop), "--mirror", "--json", "-k", "2"]) == 0
    assert _json(capsys)[0]["neighbours"][0]["id"] == "original.png"
    # add: the index's view set is used (and may be repeated); a re-added id replaces all its rows
    assert search.main(["add", str(idx), str(g / "tile.png"), str(crop), "--views", "crops"]) == 0
    assert "added 2 images; index now holds 6" in capsys.readouterr().out
    loaded = Index.load(idx)
    assert len(loaded) == 6 and loaded.ids.count("tile.png") == v and loaded.ids.count(str(crop)) == v
    assert search.main(["remove", str(idx), "tile.png"]) == 0
    assert "index now holds 5" in capsys.readouterr().out and "tile.png" not in Index.load(idx).ids


def test_views_refusals(setup, tmp_path, capsys):
    g, crop, ckpt = setup
    idx, full = tmp_path / "idx", tmp_path / "full"
    search.main(["index", str(g), "--method", "ae", "--checkpoint", str(ckpt), "--views", "crops", "-o", str(idx)])
    search.main(["index", str(g), "--method", "ae", "--checkpoint", str(ckpt), "-o", str(full)])
    assert json.loads((full / "meta.json").read_text())["view_set"] == "full"
    assert "views" not in json.loads((full / "meta.json").read_text())  # one row per image, as before
    capsys.readouterr()
    for cmd, index, views, have in (
        ("query", idx, "full", "crops"),
        ("add", idx, "full", "crops"),
        ("query", full, "crops", "full"),
        ("add", full, "crops", "full"),
    ):
        assert search.main([cmd, str(index), str(crop), "--views", views]) == 2
        err = capsys.readouterr().err
        assert f"--views {views} but the index was built with --views {have}" in err
    assert search.main(["index", str(g), "--views", "crops", "-o", str(tmp_path / "h")]) == 2
    assert "--views applies to --method ae, not phash" in capsys.readouterr().err
    search.main(["index", str(g), "-o", str(tmp_path / "h")])
    capsys.readouterr()
    assert search.main(["query", str(tmp_path / "h"), str(crop), "--views", "crops"]) == 2
    assert "--views applies to ae indexes, not phash" in capsys.readouterr().err
    assert (
        search.main(
            [
                "index",
                str(g),
                "--method",
                "ae",
                "--checkpoint",
                str(ckpt),
                "--views",
                "crops",
                "--devices",
                "2",
                "-o",
                str(tmp_path / "d"),
            ]
        )
        == 2
    )
    assert "not supported with distributed encoding" in capsys.readouterr().err
    assert search.main(["evaluate", str(g), "--methods", "phash", "--views", "crops", "--neardup"]) == 2
    assert "--views applies to the ae methods" in capsys.readouterr().err


def test_evaluate_neardup_with_views(tmp_path, capsys):
    folder = class_folder(tmp_path / "imgs", per_class=4)
    ckpt = tiny_checkpoint(tmp_path / "m.pt")
    cw, ch = round(48 * CROP_SIDE), round(40 * CROP_SIDE)
    from encoder.search import evaluate
    from encoder.search.neardup import TRANSFORMS

    corner = {"corner": lambda im: im.crop((0, 0, cw, ch)), "jpeg_q30": TRANSFORMS["jpeg_q30"]}
    from encoder.ae.inference import load_encoder

    rep = evaluate.evaluate_neardup(
        folder, load_encoder(ckpt), ["ae", "ae-crops", "ae-crops-mirror"], n_queries=6, transforms=corner
    )
    got = {r["method"]: r["transforms"] for r in rep["results"]}
    assert list(got) == ["ae", "ae-crops", "ae-crops-mirror"]
    # an exact gallery view: found every time whatever the model
    assert got["ae-crops"]["corner"]["R@1"] == got["ae-crops-mirror"]["corner"]["R@1"] == 1.0
    assert all(0 <= v[m] <= 1 for t in got.values() for v in t.values() for m in ("R@1", "R@5"))
    # the command line: --views crops turns ae into ae-crops
    assert (
        search.main(
            [
                "evaluate",
                str(folder),
                "--neardup",
                "--n-queries",
                "3",
                "--methods",
                "ae",
                "raw",
                "--views",
                "crops",
                "--checkpoint",
                str(ckpt),
                "--json",
            ]
        )
        == 0
    )
    assert [r["method"] for r in _json(capsys)["results"]] == ["ae-crops", "raw"]


def test_index_picks_crops_for_photos_and_full_for_thumbnails(setup, tmp_path, capsys):
    from encoder.search.views import AUTO_CROPS_MIN_SIDE, auto_views

    _, _, ckpt = setup
    photos, thumbs = tmp_path / "photos", tmp_path / "thumbs"
    photos.mkdir(), thumbs.mkdir()
    for s in range(3):
        photo(400, 300, s).save(photos / f"p{s}.jpg")
        photo(28, 28, s).save(thumbs / f"t{s}.png")
    (photos / "broken.jpg").write_bytes(b"not a picture")  # left out of the median
    assert auto_views(sorted(photos.iterdir())) == ("crops", 300) and AUTO_CROPS_MIN_SIDE == 256
    assert auto_views(sorted(thumbs.iterdir())) == ("full", 28) and auto_views([]) == ("full", 0)
    for folder, want in ((photos, "crops"), (thumbs, "full")):
        out = tmp_path / f"idx_{want}"
        assert search.main(["index", str(folder), "--method", "ae", "--checkpoint", str(ckpt), "-o", str(out)]) == 0
        assert json.loads((out / "meta.json").read_text())["view_set"] == want
        assert f"views: {want} (median short side" in capsys.readouterr().err
    out = tmp_path / "told"
    assert (
        search.main(
            ["index", str(photos), "--method", "ae", "--checkpoint", str(ckpt), "--views", "full", "-o", str(out)]
        )
        == 0
    )  # told: no probe, no message
    assert json.loads((out / "meta.json").read_text())["view_set"] == "full"
    assert "views:" not in capsys.readouterr().err

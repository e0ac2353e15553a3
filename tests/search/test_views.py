"""Several views per picture: the boxes, view 0 = the single view, a multi-view index, evaluation."""

import numpy as np
import pytest
from helpers import tiny_checkpoint
from PIL import Image

from encoder.data import decode_gray_u8
from encoder.search.ae_eval import HASH_COLUMNS
from encoder.search.errors import CorruptIndexError
from encoder.search.index import Index
from encoder.search.methods import AutoencoderMethod, evaluation_methods
from encoder.search.verify import hash_view_count
from encoder.search.views import (
    CROP_SIDE,
    QUERY_TURNS,
    WINDOW_POSITIONS,
    _peel,
    decode_views_u8,
    gallery_boxes,
    image_views,
    query_boxes,
    source_views,
    trim_box,
    view_count,
)
from tests.helpers import photo


@pytest.fixture(scope="module")
def enc(tmp_path_factory):
    from encoder.ae.inference import load_encoder

    return load_encoder(tiny_checkpoint(tmp_path_factory.mktemp("m") / "m.pt"))


@pytest.mark.parametrize("w,h", [(400, 300), (300, 400), (256, 256)])
def test_boxes_of_landscape_portrait_and_square_pictures(w, h):
    assert gallery_boxes(w, h, "full") == query_boxes(w, h, "full") == [(0, 0, w, h)]
    g = gallery_boxes(w, h, "crops")
    assert len(g) == view_count("crops", "gallery") == 12 + len(WINDOW_POSITIONS) + 2 and g[0] == (0, 0, w, h)
    assert all(0 <= l < r <= w and 0 <= t < b <= h for l, t, r, b in g)
    cw, ch = round(w * CROP_SIDE), round(h * CROP_SIDE)
    crops = g[1:10]  # same aspect, half the area, on a 3x3 grid of positions: corners included
    assert all((r - l, b - t) == (cw, ch) for l, t, r, b in crops)
    assert {(l, t) for l, t, _, _ in crops} == {
        (round(fx * (w - cw)), round(fy * (h - ch))) for fx in (0, 0.5, 1) for fy in (0, 0.5, 1)
    }
    assert (0, 0, cw, ch) in crops and (w - cw, h - ch, w, h) in crops
    short = min(w, h)
    for (l, t, r, b), s in zip(g[10:], (1.0, 0.5625)):  # centred squares of the short side
        assert r - l == b - t == round(short * s) and abs((l + r) - w) <= 1 and abs((t + b) - h) <= 1
    windows = g[12:-2]  # 9:16 along the long side (a square's are squares), from one end to the other
    long, across = (w, h) if w >= h else (h, w)
    for l, t, r, b in windows:
        assert ((r - l, b - t) if w >= h else (b - t, r - l)) == (round(across * 9 / 16), across)
    starts = [(l if w >= h else t) for l, t, _, _ in windows]
    assert starts[0] == 0 and starts == sorted(starts) and starts[-1] == long - round(across * 9 / 16)
    bh = round(h * 0.8)  # the top and bottom 80%: one of them whole under a caption band
    assert g[-2:] == [(0, 0, w, bh), (0, h - bh, w, h)]
    q = query_boxes(w, h, "crops")  # untrimmed: the trimmed views repeat the whole picture's
    assert len(q) == 6 and q[0] == q[2] == (0, 0, w, h) and q[1] == q[3] == g[10] and q[4:] == g[-2:]
    assert view_count("crops", "query") == 6 + len(QUERY_TURNS)
    with pytest.raises(ValueError, match="views='tiles' must be one of"):
        gallery_boxes(w, h, "tiles")


def test_view_zero_is_the_single_view_and_its_code(tmp_path, enc):
    big = tmp_path / "big.jpg"
    photo(1200, 900).save(big, quality=90)  # large enough for JPEG draft decoding
    small = tmp_path / "small.png"
    photo(150, 200, seed=1).save(small)
    for f in (big, small):
        views, reason = decode_views_u8((str(f), 64, "crops", "gallery"))
        single, _ = decode_gray_u8((str(f), 64))
        assert reason is None and views.shape == (view_count("crops"), 64, 64) and views.dtype == np.uint8
        np.testing.assert_array_equal(views[0], single)
        assert not np.array_equal(views[1], views[0])
    assert decode_views_u8((str(tmp_path / "gone.png"), 64, "crops", "gallery"))[0] is None
    full = AutoencoderMethod(encoder=enc, views="full").vectors([big, small])
    crops = AutoencoderMethod(encoder=enc, views="crops").vectors([big, tmp_path / "gone.png", small], errors=[])
    v = view_count("crops")
    assert crops.vectors.shape == (2 * v, enc.code_dim) and crops.paths == [big] * v + [small] * v
    # the same pixels in; the codes differ only by float rounding of another batch size in torch
    np.testing.assert_allclose(crops.vectors[::v], full.vectors, rtol=0, atol=1e-5)
    # evaluation: PIL images and files give the same views
    np.testing.assert_array_equal(
        source_views([Image.open(small)], 64, "crops", "query"), source_views([small], 64, "crops", "query")
    )


def _views_index(tmp_path=None):
    rng = np.random.default_rng(0)
    v = rng.normal(size=(6, 4)).astype(np.float32)
    return Index.create("ae", "fp", v, ["a", "a", "b", "b", "c", "c"], views=2, kind="code"), v


def test_index_of_several_views_per_image(tmp_path):
    idx, v = _views_index()
    assert len(idx) == 3 and idx.n_rows == 6 and idx.meta["count"] == 3 and idx.meta["views"] == 2
    d, ids = idx.search(v[[3]] + 1e-3, k=3)  # near b's second view
    assert ids[0][0] == "b"
    assert len(set(ids[0])) == len(ids[0]) == 3 and d.shape == (1, 3) and d[0, 0] == pytest.approx(3e-6, abs=1e-5)
    # each id at its best distance over its rows
    for j, i in enumerate(ids[0]):
        rows = [r for r, x in enumerate(idx.ids) if x == i]
        assert d[0, j] == pytest.approx(min(((v[r] - v[3] - 1e-3) ** 2).sum() for r in rows), rel=1e-4)
    np.testing.assert_array_equal(idx.rows(["c", "a"]), [4, 0])  # each id's first row
    # add replaces every row of a re-added id; remove drops them all
    idx.add(np.zeros((4, 4), np.float32), ["b", "b", "d", "d"])
    assert len(idx) == 4 and idx.ids == ["a", "a", "c", "c", "b", "b", "d", "d"]
    assert idx.search(np.zeros((1, 4), np.float32), k=2)[1][0] == ["b", "d"]
    assert idx.remove(["a", "zz"]) == ["zz"] and idx.ids == ["c", "c", "b", "b", "d", "d"] and len(idx) == 3
    idx.save(tmp_path / "i")
    back = Index.load(tmp_path / "i", mmap=True)
    assert back.ids == idx.ids and len(back) == 3 and back.meta["views"] == 2
    np.testing.assert_array_equal(back.search(v[:2], k=5)[1], idx.search(v[:2], k=5)[1])
    # k beyond the images: every image once
    assert sorted(back.search(v[:1], k=10)[1][0]) == ["b", "c", "d"]


def test_index_views_layout_is_checked(tmp_path):
    v = np.zeros((4, 4), np.float32)
    with pytest.raises(ValueError, match="consecutive rows"):
        Index.create("ae", "fp", v, ["a", "b", "a", "b"], views=2, kind="code")
    with pytest.raises(ValueError, match="whole number"):
        Index.create("ae", "fp", v[:3], ["a", "a", "b"], views=2, kind="code")
    with pytest.raises(ValueError, match="unique"):
        Index.create("ae", "fp", v, ["a", "a", "a", "a"], views=2, kind="code")
    with pytest.raises(ValueError, match="unique"):  # one view per image: repeated ids refused, as before
        Index.create("ae", "fp", v, ["a", "a", "b", "c"], kind="code")
    with pytest.raises(ValueError, match="code index"):
        Index.create("phash", "v", np.zeros((2, 8), np.uint8), ["a", "a"], views=2, kind="hash")
    idx, _ = _views_index()
    with pytest.raises(ValueError, match="ids to add: each id must have 2"):
        idx.add(v[:2], ["x", "y"])
    idx.save(tmp_path / "i")
    (tmp_path / "i" / "ids.json").write_text('["a", "b", "a", "b", "c", "c"]')
    with pytest.raises(CorruptIndexError, match=r"ids.json: each id must have 2 consecutive rows.*views=2"):
        Index.load(tmp_path / "i")


def test_a_half_area_corner_crop_is_found_by_a_crops_index(tmp_path, enc):
    """The original is found at distance ~0: the crop is one of its gallery views. A hard negative (a tile
    of the same photo) and other photos are in the gallery too."""
    g = tmp_path / "gallery"
    g.mkdir()
    im = photo(320, 240)
    im.save(g / "original.png")
    im.crop((120, 90, 320, 240)).save(g / "tile.png")  # the bottom-right part, as its own picture
    for s in range(1, 5):
        photo(320, 240, seed=s).save(g / f"other{s}.png")
    cw, ch = round(320 * CROP_SIDE), round(240 * CROP_SIDE)
    q = tmp_path / "crop.png"
    im.crop((0, 0, cw, ch)).save(q)  # half the area, top-left
    files = sorted(g.iterdir())
    found = {}
    for views in ("full", "crops"):
        m = AutoencoderMethod(encoder=enc, views=views)
        got = m.vectors(files)
        idx = Index.create("ae", m.version, got.vectors, [p.name for p in got.paths], **m.index_options(), kind="code")
        found[views] = m.query(idx, [q], k=6)
        assert len(idx) == 6 and found[views].ids[0] and len(set(found[views].ids[0])) == 6
    assert found["crops"].ids[0][0] == "original.png" and found["crops"].distances[0][0] == pytest.approx(0, abs=1e-6)
    assert found["crops"].distances[0][1] > 0
    # a whole-picture index has no view of that part: the original is not at distance 0 there
    full = dict(zip(found["full"].ids[0], found["full"].distances[0]))
    assert full["original.png"] > 1e-3
    # the mirror option combines with views (flipped query views too); the exact view still wins
    mm = AutoencoderMethod(encoder=enc, views="crops", mirror=True)
    res = mm.query(idx, [q], k=3)
    assert res.ids[0][0] == "original.png" and res.distances[0][0] == pytest.approx(0, abs=1e-6)


def test_evaluation_methods_with_views(tmp_path, enc):
    ms = evaluation_methods(["ae", "ae-crops", "ae-crops-mirror", "raw"], encoder=enc)
    assert [m.label for m in ms] == ["ae", "ae-crops", "ae-crops-mirror", "raw"]
    assert ms[1].encoder is ms[0].encoder and ms[2].views == "crops" and ms[2].mirror
    ims = [photo(200, 150, seed=s) for s in range(3)]
    gallery = ms[1].gallery_features(None, ims)
    hash_cols = HASH_COLUMNS * hash_view_count()  # the verifying pHash's columns after the codes
    assert gallery.shape == (3 * view_count("crops"), enc.code_dim + HASH_COLUMNS)
    cw, ch = round(200 * CROP_SIDE), round(150 * CROP_SIDE)
    queries = [ims[2].crop((200 - cw, 0, 200, ch)), ims[0]]  # a top-right half-area crop, a whole picture
    for m in ms[1:3]:
        q = m.features(None, queries)
        assert q.shape == (2, enc.code_dim * view_count("crops", "query") * (2 if m.mirror else 1) + hash_cols)
        rows = m.knn(gallery, q, 3)
        assert rows.shape == (2, 3) and rows[:, 0].tolist() == [2, 0] and sorted(rows[0]) == [0, 1, 2]
        assert m.knn(gallery, q, 3, metric="cosine")[:, 0].tolist() == [2, 0]


def test_views_option_rules(tmp_path, enc):
    with pytest.raises(ValueError, match="views='tiles' must be one of"):
        AutoencoderMethod(encoder=enc, views="tiles")
    with pytest.raises(ValueError, match="^views crops is not supported with distributed encoding"):
        AutoencoderMethod(encoder=enc, views="crops", devices=2)
    assert image_views(photo(50, 80), 64, "crops", "query").shape == (view_count("crops", "query"), 64, 64)


def _screenshot(pic: Image.Image, bar: int = 30) -> tuple[Image.Image, tuple]:
    """``pic`` pasted into a dark 800x500 window under a light title bar with text; (image, pasted box)."""
    from PIL import ImageDraw

    out = Image.new("RGB", (800, 500), (35, 35, 40))
    d = ImageDraw.Draw(out)
    d.rectangle((0, 0, 800, bar), fill=(225, 225, 228))
    d.text((10, 8), "photo.jpg - Viewer", fill=(20, 20, 20))
    left, top = 170, bar + 60
    out.paste(pic, (left, top))
    return out, (left, top, left + pic.width, top + pic.height)


def test_trim_box_peels_a_screenshot_window_down_to_the_picture():
    from encoder.data import to_gray

    shot, box = _screenshot(photo(400, 300, seed=2))
    got = trim_box(to_gray(shot))
    assert all(abs(a - b) <= 4 for a, b in zip(got, box)), (got, box)
    # letterbox bars of another grey on two sides only
    bars = Image.new("RGB", (400, 400), (0, 0, 0))
    bars.paste(photo(400, 250, seed=3), (0, 75))
    assert all(abs(a - b) <= 3 for a, b in zip(trim_box(to_gray(bars)), (0, 75, 400, 325)))
    # a photo and a flat gradient wallpaper keep their whole picture
    assert trim_box(to_gray(photo(400, 300, seed=4))) == (0, 0, 400, 300)
    ramp = Image.fromarray(np.tile(np.linspace(40, 200, 400).astype(np.uint8), (300, 1)))
    assert trim_box(ramp) == (0, 0, 400, 300)


def test_trim_box_stops_at_a_smooth_picture_whose_edge_is_near_the_background_grey():
    from encoder.data import to_gray

    # a dark gradient wallpaper: its left edge (grey 50) is 12 levels from the window's background (38)
    ramp = np.tile(np.linspace(50, 130, 400), (300, 1)).astype(np.uint8)
    shot, box = _screenshot(Image.fromarray(ramp).convert("RGB"))
    got = trim_box(to_gray(shot))
    assert all(abs(a - b) <= 4 for a, b in zip(got, box)), (got, box)
    # peeling each side's outermost grey round after round instead eats the gradient from its dark edge
    g = to_gray(shot).resize((384, 240), Image.Resampling.BOX)
    (_, _, left, _), _ = _peel(np.asarray(g, np.float32), surround=False)
    assert left / 384 * 800 > box[0] + 40


def test_query_views_add_the_trimmed_picture_and_quarter_turns():
    pic = photo(400, 300, seed=2)
    shot, box = _screenshot(pic)
    q = image_views(shot, 64, "crops", "query")
    assert q.shape == (view_count("crops", "query"), 64, 64)
    # the trimmed view is the picture itself (to a few grey levels of resampling), the whole view is not
    alone = image_views(pic, 64, "full", "query")[0].astype(int)
    assert np.abs(q[2].astype(int) - alone).mean() < 4 < np.abs(q[0].astype(int) - alone).mean()
    for v, k in enumerate(QUERY_TURNS, 6):  # the squashed picture turned is the turned picture squashed
        np.testing.assert_array_equal(q[v], np.rot90(q[0], k))
    turned = image_views(pic.transpose(Image.Transpose.ROTATE_90), 64, "crops", "query")
    assert min(np.abs(turned[v].astype(int) - alone).mean() for v in (6, 7)) < 3
    assert image_views(pic, 64, "crops", "gallery").shape == (view_count("crops"), 64, 64)  # no turns in galleries

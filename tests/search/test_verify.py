"""The pHash that verifies an ae search of view set "crops": edited copies found through the hash, non-matches
not promoted, indexes without the hashes queried as before, the hashes following an add."""

import numpy as np
import pytest
from helpers import tiny_checkpoint
from PIL import Image, ImageOps

from encoder.search.index import Index
from encoder.search.methods import AutoencoderMethod
from encoder.search.verify import (
    CHANCE_BITS,
    FUSE_K,
    HASH_FILE,
    VERIFY_BITS,
    confident_matches,
    fuse,
    gallery_hashes,
    promote,
    upright_bits,
)
from tests.helpers import photo


def sepia(im: Image.Image) -> Image.Image:
    return ImageOps.colorize(ImageOps.autocontrast(im.convert("L"), cutoff=2), (40, 20, 5), (255, 235, 190))


def flip_dark(im: Image.Image) -> Image.Image:
    a = np.asarray(ImageOps.mirror(im), np.float64) / 255.0
    return Image.fromarray(np.rint(255 * a**1.8).astype(np.uint8))


@pytest.fixture(scope="module")
def enc(tmp_path_factory):
    from encoder.ae.inference import load_encoder

    return load_encoder(tiny_checkpoint(tmp_path_factory.mktemp("m") / "m.pt"))


@pytest.fixture()
def gallery(tmp_path):
    g = tmp_path / "gallery"
    g.mkdir()
    for s in range(6):
        photo(320, 240, seed=s).save(g / f"p{s}.png")
    return sorted(g.iterdir())


def _index(m: AutoencoderMethod, files) -> Index:
    got = m.vectors(files)
    ids = [p.name for p in got.paths]
    return Index.create(
        "ae", m.version, got.vectors, ids, **m.index_options(), kind="code", attachments=m.index_attachments(ids)
    )


def test_the_index_keeps_each_pictures_hash_and_a_query_puts_the_verified_original_first(tmp_path, enc, gallery):
    m = AutoencoderMethod(encoder=enc, views="crops")
    idx = _index(m, gallery)
    idx.save(tmp_path / "idx")
    idx = Index.load(tmp_path / "idx", mmap=True)
    hashes, usable = gallery_hashes(idx.attachments, idx.ids[:: idx.views])
    assert usable.all() and len({bytes(h) for h in hashes}) == 6
    plain = AutoencoderMethod(encoder=enc, views="crops", verify=False)
    for n, edit in enumerate((sepia, flip_dark)):
        q = tmp_path / f"q{n}.png"
        edit(Image.open(gallery[3])).save(q)
        got, before = m.query(idx, [q], k=6), plain.query(idx, [q], k=6)
        assert got.ids[0][0] == "p3.png"
        # the same six pictures, each at its own code distance (the hash moves, it does not re-measure)
        assert dict(zip(got.ids[0], got.distances[0])) == pytest.approx(dict(zip(before.ids[0], before.distances[0])))


def test_evaluation_promotes_the_hash_match_at_distance_zero_and_leaves_a_non_match(enc):
    m = AutoencoderMethod(encoder=enc, views="crops")
    ims = [photo(320, 240, seed=s) for s in range(6)]
    gallery = m.gallery_features(None, ims)
    queries = [flip_dark(ims[2]), sepia(ims[4]), sepia(photo(320, 240, seed=99))]  # the last is in no gallery
    dist, rows = m.knn(gallery, m.features(None, queries), 3, distances=True)
    assert rows[:2, 0].tolist() == [2, 4] and dist[:2, 0].tolist() == [0.0, 0.0]
    assert dist[2, 0] > 0  # not promoted: its nearest picture is ranked by its code distance
    plain = AutoencoderMethod(encoder=enc, views="crops", verify=False)
    assert plain.label == "ae-crops-unverified" and m.label == "ae-crops"
    p_dist, p_rows = plain.knn(plain.gallery_features(None, ims), plain.features(None, queries), 3, distances=True)
    assert p_rows[2].tolist() == rows[2].tolist() and p_dist[2] == pytest.approx(dist[2])


def test_confident_matches_need_few_bits_and_no_flat_hash():
    g = np.array([[0] * 8, [0] * 7 + [0xFF], [0xF0] * 8], np.uint8)  # 0, 8 and 32 bits from zero
    q = np.zeros((1, 2, 8), np.uint8)
    usable, sharp = np.ones(3, bool), np.zeros((1, 2), bool)
    assert confident_matches(q, sharp, g, usable, bits=VERIFY_BITS) == [[(0, 0), (1, 8)]]
    assert confident_matches(q, sharp, g, usable, bits=VERIFY_BITS - 1) == [[(0, 0)]]
    assert confident_matches(q, np.ones((1, 2), bool), g, usable, bits=8) == [[]]  # a flat query view verifies nothing
    assert confident_matches(q, sharp, g, np.array([False, True, True]), bits=8) == [[(1, 8)]]
    # one threshold per hash view: the second view (a turn) must be nearer
    q2 = np.array([[[0xF0] * 7 + [0xF1], [0] * 7 + [0x0F]]], np.uint8)  # 1 bit from g[2]; 4 from g[1], 4 from g[0]
    assert confident_matches(q2, sharp, g, usable, bits=(0, 4), nearest=None) == [[(0, 4), (1, 4)]]
    assert confident_matches(q2, sharp, g, usable, bits=(1, 3), nearest=None) == [[(2, 1)]]
    # no confident match: the nearest picture counts when it is near and far ahead of the next
    far = np.array([[[0] * 6 + [0x3F, 0xFF]]], np.uint8)  # 14 bits from g[0], 6 from g[1], 34 from g[2]
    assert confident_matches(far, np.zeros((1, 1), bool), g, usable, bits=4, nearest=(6, 6)) == [[(1, 6)]]
    assert confident_matches(far, np.zeros((1, 1), bool), g, usable, bits=4, nearest=(6, 9)) == [
        []
    ]  # not far enough ahead
    assert confident_matches(far, np.zeros((1, 1), bool), g, usable, bits=4, nearest=(5, 6)) == [[]]  # not near enough
    d, i = promote([[0.1, 0.2, 0.3]], [["a", "b", "c"]], [[("c", 0.3), ("z", 0.9)]], k=3)
    assert i == [["c", "z", "a"]] and d == [[0.3, 0.9, 0.1]]


def test_an_index_without_hashes_queries_as_before(tmp_path, enc, gallery):
    m = AutoencoderMethod(encoder=enc, views="crops")
    idx = _index(m, gallery)
    old = Index.create("ae", m.version, idx.vectors, idx.ids, **m.index_options(), kind="code")  # as built before
    assert HASH_FILE in idx.attachments and HASH_FILE not in old.attachments
    old.save(tmp_path / "old")
    old = Index.load(tmp_path / "old")
    q = tmp_path / "q.png"
    sepia(Image.open(gallery[1])).save(q)
    plain = AutoencoderMethod(encoder=enc, views="crops", verify=False).query(old, [q], k=6)
    got = AutoencoderMethod(encoder=enc, views="crops").query(old, [q], k=6)
    assert got.ids == plain.ids and got.distances == plain.distances
    # an add to such an index keeps it without hashes (m has hashed the gallery: it would add them to a new one)
    assert m.index_attachments(idx.ids, old) == {} and HASH_FILE in m.index_attachments(idx.ids)


def test_an_add_hashes_the_new_pictures(tmp_path, enc, gallery):
    m = AutoencoderMethod(encoder=enc, views="crops")
    idx = _index(m, gallery[:4])
    got = m.vectors(gallery[4:])
    ids = [p.name for p in got.paths]
    idx.attach(m.index_attachments(ids, idx))
    idx.add(got.vectors, ids)
    hashes, usable = gallery_hashes(idx.attachments, idx.ids[:: idx.views])
    assert usable.all() and len({bytes(h) for h in hashes}) == 6
    q = tmp_path / "q.png"
    flip_dark(Image.open(gallery[5])).save(q)
    assert m.query(idx, [q], k=3).ids[0][0] == "p5.png"


def test_the_command_line_index_keeps_the_hashes_and_a_plain_query_uses_them(tmp_path, enc, capsys):
    import json

    import search
    from encoder.ae.inference import save_encoder

    save_encoder(enc.model, tmp_path / "m.pt")
    idx, folder = tmp_path / "idx", tmp_path / "photos"
    folder.mkdir()
    for s in range(6):
        photo(400, 300, seed=s).save(folder / f"p{s}.png")
    gallery = sorted(folder.iterdir())
    assert (
        search.main(
            ["index", str(gallery[0].parent), "--method", "ae", "--checkpoint", str(tmp_path / "m.pt"), "-o", str(idx)]
        )
        == 0
    )
    assert json.loads((idx / "meta.json").read_text())["view_set"] == "crops"  # chosen for 400x300 pictures
    assert HASH_FILE in json.loads((idx / "meta.json").read_text())["attachments"]
    q = tmp_path / "q.png"
    flip_dark(Image.open(gallery[4])).save(q)
    capsys.readouterr()
    assert search.main(["query", str(idx), str(q), "--json", "-k", "3"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["neighbours"][0]["id"] == "p4.png"
    # an added picture is hashed too: its edited copy is found through its hash
    extra = tmp_path / "extra"
    extra.mkdir()
    photo(320, 240, seed=42).save(extra / "new.png")
    assert search.main(["add", str(idx), str(extra / "new.png")]) == 0
    hashes, usable = gallery_hashes(Index.load(idx).attachments, Index.load(idx).ids[:: Index.load(idx).views])
    assert usable.all() and len(usable) == 7


def test_fuse_moves_up_a_candidate_whose_hash_is_nearer_than_chance_and_only_that():
    d = [1.0, 1.1, 1.2, 1.3, 2.0]
    assert fuse(d, [32, 30, 12, 28, 33], 5) == [2, 0, 1, 3, 4]  # 12 bits: a third nearer than chance
    assert fuse(d, [40, CHANCE_BITS, 36, CHANCE_BITS + 1, 33], 5) == [0, 1, 2, 3, 4]  # chance never reorders
    # a near hash does not lift a picture whose code is twice as far as the nearest's
    assert fuse([0.5, 0.8, 1.0], [30, 28, 12], 3) == [0, 2, 1]
    assert fuse([0.5, 0.8, 1.0], [30, 28, 12], 1) == [0]
    assert fuse([0.5], [0], 3) == [0]
    # only the first FUSE_K are re-ranked; the rest keep their places
    many = [1.0 + i / 100 for i in range(FUSE_K + 2)]
    bits = [30] * FUSE_K + [0, 0]
    assert fuse(many, bits, FUSE_K + 2) == list(range(FUSE_K + 2))


def test_upright_bits_take_the_nearest_upright_view_and_ignore_flat_ones():
    g = np.array([[0] * 8, [0xFF] * 8], np.uint8)
    q = np.array([[[0] * 7 + [0x0F], [0] * 8, [0xFF] * 8]], np.uint8)  # upright, upright, turn (limits 8, 8, 4)
    sharp = np.zeros((1, 3), bool)
    assert upright_bits(q, sharp, g, np.ones(2, bool), (8, 8, 4)).tolist() == [[0, 60]]
    assert upright_bits(q, np.array([[False, True, False]]), g, np.ones(2, bool), (8, 8, 4)).tolist() == [[4, 60]]
    assert upright_bits(q, sharp, g, np.array([True, False]), (8, 8, 4)).tolist() == [[0, 64]]


def _features(m: AutoencoderMethod, codes: np.ndarray, hashes: np.ndarray, per: int) -> np.ndarray:
    """Rows of ``m``'s features from (N, per, D) view codes and (N, H, 8) hashes (no view flat)."""
    cols = np.concatenate([hashes, np.zeros((*hashes.shape[:2], 1), np.uint8)], -1).reshape(len(hashes), -1)
    return np.concatenate([codes.reshape(len(codes), -1), cols.astype(np.float32)], 1)


def test_evaluation_reranks_by_code_and_hash_when_nothing_is_confident(enc):
    from encoder.search.verify import hash_view_count
    from encoder.search.views import view_count

    m = AutoencoderMethod(encoder=enc, views="crops")
    rng = np.random.default_rng(0)
    d, per_g, per_q, n_h = enc.code_dim, view_count("crops", "gallery"), view_count("crops", "query"), hash_view_count()
    base = rng.normal(size=d).astype(np.float32)
    # picture p's codes are 1 + p / 10 (squared) from the query's; its hash 32 bits from the query's, picture 2's 14
    n = 10
    g_codes = np.stack(
        [np.tile(base + np.sqrt(1 + p / 10) * np.eye(d, dtype=np.float32)[p], (per_g, 1)) for p in range(n)]
    )
    q_hash = np.zeros(8, np.uint8)
    g_hash = np.array([[0xFF] * 4 + [0] * 4] * n, np.uint8)
    g_hash[2] = [0xFF, 0x3F] + [0] * 6
    gallery = np.repeat(_features(m, g_codes[:, :1], g_hash[:, None], 1), per_g, 0)
    gallery[:, :d] = g_codes.reshape(-1, d)
    query = _features(m, np.tile(base, (1, per_q, 1)), np.tile(q_hash, (1, n_h, 1)), per_q)
    dist, rows = m.knn(gallery, query, 4, distances=True)
    assert rows[0].tolist() == [2, 0, 1, 3] and dist[0, 0] == pytest.approx(1.2)  # at its own code distance
    assert m.knn(gallery, query, 1).tolist() == [[2]]  # the same first with k=1: FUSE_K are fused, k kept
    gallery[2 * per_g : 3 * per_g, d : d + 8] = 0xF0  # now 32 bits, like the rest: the code order stands
    assert m.knn(gallery, query, 4).tolist() == [[0, 1, 2, 3]]

"""methods: the registry, refusal of options that do not apply, rebuilding the method of an index."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import tiny_checkpoint
from PIL import Image

import search
from encoder.hashing.hashes import HASHES, hash_version
from encoder.search.errors import IndexMismatchError
from encoder.search.methods import (
    INDEX_METHODS,
    METHODS,
    OPTIONS,
    AutoencoderMethod,
    HashMethod,
    OptionError,
    applicable_options,
    get_method,
    kind_of,
    method_for_index,
)
from encoder.search.views import AUTO_CROPS_MIN_SIDE, gallery_boxes

REPO = Path(__file__).resolve().parents[2]


def noise_folder(root: Path, n: int = 3, seed: int = 0, mode: str = "RGB") -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        px = rng.integers(0, 256, (40, 48, 4 if mode == "RGBA" else 3), dtype=np.uint8)
        Image.fromarray(px, mode).save(root / f"n{seed}_{i:02d}.png")
    return root


def test_registry():
    assert set(INDEX_METHODS) == set(HASHES) | {"ae"}  # one hash method per HASHES entry
    assert set(METHODS) == set(INDEX_METHODS) | {"raw", "pca"}
    assert {n: kind_of(n) for n in METHODS} == {
        **{h: "hash" for h in HASHES},
        "ae": "code",
        "raw": "code",
        "pca": "code",
    }
    for name in HASHES:
        m = get_method(name)
        assert isinstance(m, HashMethod) and m.name == name and m.kind == "hash"
        assert m.alpha == "imagehash" and m.version == hash_version(name, "imagehash")
        assert m.index_meta() == {"decode": "full", "alpha": "imagehash"}
    with pytest.raises(ValueError, match="'nope'"):
        get_method("nope")
    with pytest.raises(ValueError, match="alpha='grey'"):
        get_method("phash", alpha="grey")
    with pytest.raises(OptionError, match="^checkpoint is required for method ae$") as e:
        get_method("ae")
    assert e.value.spelled(lambda n: f"--{n}") == "--checkpoint is required for --method ae"
    with pytest.raises(OptionError, match="^metric applies to method ae, not phash$"):  # names, not flags
        get_method("phash", metric="cosine")


AE_FLAGS = [
    ("--metric", "cosine"),
    ("--memory-budget", "1000"),
    ("--search-params", "nprobe=2"),
    ("--devices", "2"),
    ("--strategy", "ddp"),
    ("--accelerator", "cpu"),
    ("--num-nodes", "2"),
    ("--shard-dir", "shards"),
    ("--checkpoint", "m.pt"),
    ("--batch-size", "8"),
]


@pytest.mark.parametrize("flag,value", AE_FLAGS, ids=[f for f, _ in AE_FLAGS])
def test_ae_flags_refused_for_a_hash_method(tmp_path, capsys, flag, value):
    imgs = noise_folder(tmp_path / "imgs", 2)
    out = tmp_path / "idx"
    assert search.main(["index", str(imgs), "--method", "dhash", flag, value, "-o", str(out)]) == 2
    assert capsys.readouterr().err == f"error: {flag} applies to --method ae, not dhash\n"
    assert not out.exists()


@pytest.mark.parametrize("flag", [["--draft"], ["--alpha", "white"]], ids=["--draft", "--alpha"])
def test_hash_flags_refused_for_ae(tmp_path, capsys, flag):
    imgs = noise_folder(tmp_path / "imgs", 2)
    # refused before the checkpoint is even read (it does not exist)
    argv = [
        "index",
        str(imgs),
        "--method",
        "ae",
        "--checkpoint",
        str(tmp_path / "m.pt"),
        *flag,
        "-o",
        str(tmp_path / "i"),
    ]
    assert search.main(argv) == 2
    assert capsys.readouterr().err == f"error: {flag[0]} applies to --method phash, dhash, ahash, not ae\n"


def test_flags_given_at_their_default_are_not_refused(tmp_path):
    imgs = noise_folder(tmp_path / "imgs", 2)
    assert search.main(["index", str(imgs), "--faiss-type", "auto", "-o", str(tmp_path / "i")]) == 0


def test_alpha_recorded_and_legacy_index_is_white(tmp_path, capsys):
    imgs = noise_folder(tmp_path / "imgs", 3, mode="RGBA")
    new, white = tmp_path / "new", tmp_path / "white"
    assert search.main(["index", str(imgs), "-o", str(new)]) == 0
    assert search.main(["index", str(imgs), "--alpha", "white", "-o", str(white)]) == 0
    m_new, m_white = (json.loads((d / "meta.json").read_text()) for d in (new, white))
    assert m_new["alpha"] == "imagehash" and m_new["version"] == hash_version("phash", "imagehash")
    assert m_white["alpha"] == "white" and m_white["version"] == hash_version("phash", "white")
    # dropping alpha and compositing on white give other hashes for these transparent images
    assert not np.array_equal(np.load(new / "hashes.npy"), np.load(white / "hashes.npy"))
    # an index written before alpha was recorded holds white-composited hashes: add keeps to that
    del m_white["alpha"]
    (white / "meta.json").write_text(json.dumps(m_white))
    assert isinstance(method_for_index(m_white), HashMethod) and method_for_index(m_white).alpha == "white"
    more = noise_folder(tmp_path / "imgs" / "more", 1, seed=3, mode="RGBA")
    assert search.main(["add", str(white), str(more)]) == 0
    ref = HashMethod("phash", alpha="white").vectors(sorted(more.iterdir())).vectors
    np.testing.assert_array_equal(np.load(white / "hashes.npy")[-1:], ref)


def test_from_index_refusals(tmp_path):
    meta = {"method": "phash", "version": "phash-v0:old", "decode": "full", "alpha": "white"}
    with pytest.raises(IndexMismatchError, match="phash-v0:old") as e:
        method_for_index(meta)
    assert hash_version("phash", "white") in str(e.value)
    with pytest.raises(IndexMismatchError, match="'pca' is not a method"):
        method_for_index({"method": "pca", "version": "x"})
    ok = {**meta, "version": hash_version("phash", "white")}
    with pytest.raises(OptionError, match="^checkpoint applies to ae indexes, not phash"):
        method_for_index(ok, checkpoint="m.pt")
    ckpt, other = tiny_checkpoint(tmp_path / "a.pt"), tiny_checkpoint(tmp_path / "b.pt", seed=1)
    ae = AutoencoderMethod(str(ckpt), views="full")
    ae_meta = {"method": "ae", "version": ae.version, **ae.index_meta()}
    with pytest.raises(OptionError, match="^alpha applies to phash, dhash, ahash indexes, not ae"):
        method_for_index(ae_meta, alpha="white")
    assert method_for_index(ae_meta, mirror=True).label == "ae-mirror"  # mirror-aware codes (issue 15)
    assert method_for_index(ae_meta).version == ae.version  # the checkpoint recorded in the index
    with pytest.raises(IndexMismatchError, match="fingerprint") as e:
        method_for_index(ae_meta, checkpoint=str(other))
    assert ae.version in str(e.value) and AutoencoderMethod(str(other)).version in str(e.value)
    gone = {**ae_meta, "checkpoint": str(tmp_path / "gone.pt")}
    with pytest.raises(FileNotFoundError, match="gone.pt"):
        method_for_index(gone)


def test_hash_query_imports_neither_torch_nor_lightning(tmp_path):
    imgs = noise_folder(tmp_path / "imgs", 3)
    assert search.main(["index", str(imgs), "-o", str(tmp_path / "idx")]) == 0
    code = (
        "import sys, search; rc = search.main(sys.argv[1:]); "
        "print(sorted(m for m in ('torch', 'pytorch_lightning', 'lightning') if m in sys.modules)); sys.exit(rc)"
    )
    p = subprocess.run(
        [sys.executable, "-c", code, "query", str(tmp_path / "idx"), str(imgs / "n0_00.png"), "-k", "1"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[-1] == "[]"


def test_mirror_aware_codes_find_a_flipped_copy(tmp_path):
    # issue 15: `ae-mirror` in evaluation, `--mirror` on ae indexes: each query also flipped left-right,
    # every gallery row at the better of the two distances
    from encoder.search.methods import evaluation_methods

    ckpt = tiny_checkpoint(tmp_path / "a.pt")
    plain, mirror = evaluation_methods(["ae", "ae-mirror"], checkpoint=str(ckpt))
    assert (plain.label, mirror.label) == ("ae", "ae-mirror")
    rng = np.random.default_rng(0)
    gallery = (rng.random((20, 64, 64)) * 255).astype(np.uint8)
    gallery[:, :, :20] //= 4  # a dark left side: flips are far apart
    queries = np.ascontiguousarray(gallery[:5, :, ::-1])
    g = plain.gallery_features(gallery, [None] * 20)
    assert (mirror.gallery_features(gallery, [None] * 20) == g).all() and mirror.features(queries, []).shape == (
        5,
        2 * g.shape[1],
    )
    assert mirror.knn(g, mirror.features(queries, []), 3)[:, 0].tolist() == [0, 1, 2, 3, 4]
    assert plain.knn(g, plain.features(queries, []), 3)[:, 0].tolist() != [0, 1, 2, 3, 4]


def test_applicable_options_keep_what_each_method_takes():
    offered = {"show_recon": True, "checkpoint": "m.pt", "mirror": True}
    assert applicable_options("phash", offered) == {"mirror": True}
    assert applicable_options("ae", offered) == offered
    assert OPTIONS == AutoencoderMethod.options | HashMethod.options
    with pytest.raises(ValueError, match="'nope'"):
        applicable_options("nope", offered)


def test_ae_views_auto_chosen_from_the_gallery_and_reported(tmp_path):
    small = noise_folder(tmp_path / "small", 3)  # thumbnails: one view
    big = tmp_path / "big"
    big.mkdir()
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (300, 400), np.uint8)).save(big / f"{i}.png")
    ckpt = tiny_checkpoint(tmp_path / "m.pt")
    for folder, want, per in ((small, "full", 1), (big, "crops", len(gallery_boxes(400, 300, "crops")))):
        m = get_method("ae", checkpoint=str(ckpt))  # Python and the command line share the default
        assert m.views == "auto"
        got = m.vectors(sorted(folder.iterdir()))
        assert m.views == want and len(got.vectors) == 3 * per and m.index_options()["views"] == per
        meta = m.index_meta()
        assert meta["view_set"] == want and meta["views_auto"]["crops_from"] == AUTO_CROPS_MIN_SIDE
        assert (meta["views_auto"]["median_short_side"] >= AUTO_CROPS_MIN_SIDE) == (want == "crops")
    fixed = get_method("ae", checkpoint=str(ckpt), views="full")
    fixed.vectors(sorted(big.iterdir()))
    assert fixed.views == "full" and "views_auto" not in fixed.index_meta()
    with pytest.raises(OptionError, match="views crops is not supported with distributed"):
        get_method("ae", checkpoint=str(ckpt), devices=2).vectors(sorted(big.iterdir()))

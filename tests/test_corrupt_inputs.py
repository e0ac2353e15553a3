"""Corrupt or foreign index / codes / checkpoint files are refused with a message naming the file.

Never a traceback, never unpickled: the pickle payloads below would create a marker file
when unpickled, and each test checks that the marker does not exist.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import search
from encoder.hashing.hashes import hash_version
from encoder.search.index import CorruptIndexError, Index


class Payload:
    """Unpickling this runs ``open(marker, "w")``: proof that something was unpickled."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def photos(folder: Path, n: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for s in range(n):
        rng = np.random.default_rng(s)
        im = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((64, 48), Image.Resampling.BICUBIC)
        im.save(folder / f"img{s}.png")
    return folder


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("corrupt")
    imgs = photos(root / "imgs")
    assert search.main(["index", str(imgs), "-o", str(root / "idx")]) == 0
    return root / "idx", imgs


def edit_json(name: str, fn):
    def edit(d: Path):
        (d / name).write_text(json.dumps(fn(json.loads((d / name).read_text()))))

    return edit


def truncate(name: str):
    return lambda d: os.truncate(d / name, (d / name).stat().st_size // 2)


def float_index_file(d: Path):
    import faiss

    faiss.write_index(faiss.IndexFlatL2(64), str(d / "index.faiss"))


# (name, corruption, file the message must name ("" = the index folder), words it must contain)
CORRUPTIONS = [
    ("truncated index.faiss", truncate("index.faiss"), "index.faiss", "truncated"),
    ("zero-byte index.faiss", lambda d: (d / "index.faiss").write_bytes(b""), "index.faiss", "FAISS"),
    (
        "garbage index.faiss",
        lambda d: (d / "index.faiss").write_bytes(np.random.default_rng(0).bytes(300)),
        "index.faiss",
        "FAISS",
    ),
    ("float index.faiss in a hash index", float_index_file, "index.faiss", "not recognized"),
    ("missing index.faiss", lambda d: (d / "index.faiss").unlink(), "index.faiss", "missing"),
    ("truncated hashes.npy", truncate("hashes.npy"), "hashes.npy", ".npy"),
    ("float hashes.npy", lambda d: np.save(d / "hashes.npy", np.zeros((3, 8), np.float32)), "hashes.npy", "uint8"),
    ("1-D hashes.npy", lambda d: np.save(d / "hashes.npy", np.zeros(24, np.uint8)), "hashes.npy", "2-D"),
    ("32-bit hashes.npy", lambda d: np.save(d / "hashes.npy", np.zeros((3, 4), np.uint8)), "hashes.npy", "dim=64"),
    ("ids/vectors count mismatch", edit_json("ids.json", lambda ids: ids + ["extra.png"]), "", "3 vectors but 4 ids"),
    ("ids.json not a list", edit_json("ids.json", lambda ids: {"a": 1}), "ids.json", "list"),
    ("ids.json of numbers", edit_json("ids.json", lambda ids: list(range(len(ids)))), "ids.json", "strings"),
    ("truncated meta.json", truncate("meta.json"), "meta.json", "JSON"),
    ("meta.json a list", lambda d: (d / "meta.json").write_text("[]"), "meta.json", "dict"),
    ("meta.json of another format", edit_json("meta.json", lambda m: {**m, "format": 99}), "", "format 99"),
    (
        "meta.json without kind",
        edit_json("meta.json", lambda m: {k: v for k, v in m.items() if k != "kind"}),
        "meta.json",
        "kind",
    ),
    (
        "meta.json says codes, folder holds hashes",
        edit_json("meta.json", lambda m: {**m, "kind": "code"}),
        "codes.npy",
        "missing",
    ),
]


@pytest.mark.parametrize("name,corrupt,names,says", CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS])
def test_corrupt_index_is_refused_by_every_command(built, tmp_path, capsys, name, corrupt, names, says):
    idx, imgs = built
    bad = tmp_path / "idx"
    shutil.copytree(idx, bad)
    corrupt(bad)
    before = {f.name: f.read_bytes() for f in bad.iterdir() if f.is_file()}
    names = str(bad / names) if names else str(bad)
    with pytest.raises((CorruptIndexError, FileNotFoundError)) as e:
        Index.load(bad)
    assert names in str(e.value) and says in str(e.value), str(e.value)
    for argv in (
        ["query", str(bad), str(imgs / "img0.png")],
        ["add", str(bad), str(imgs / "img1.png")],
        ["remove", str(bad), "img1.png"],
        ["dedup", str(bad)],
    ):
        capsys.readouterr()
        assert search.main(argv) == 2, argv  # an uncaught exception would fail the test here
        err = capsys.readouterr().err
        assert err.startswith("error: ") and names in err and says in err, (argv, err)
    # nothing was written over the broken index
    assert {f.name: f.read_bytes() for f in bad.iterdir() if f.is_file()} == before


def test_foreign_method_or_version_is_refused_naming_both(built, tmp_path, capsys):
    idx, imgs = built
    bad = tmp_path / "idx"
    shutil.copytree(idx, bad)
    edit_json("meta.json", lambda m: {**m, "method": "dhash", "version": "dhash-v0:old"})(bad)
    assert search.main(["query", str(bad), str(imgs / "img0.png")]) == 2
    err = capsys.readouterr().err
    assert "dhash-v0:old" in err and hash_version("dhash") in err, err
    assert search.main(["add", str(bad), str(imgs / "img0.png")]) == 2
    assert "dhash-v0:old" in capsys.readouterr().err


@pytest.mark.parametrize("how", ["raw pickle renamed", "object array .npy"])
@pytest.mark.parametrize("vector_file", ["hashes.npy", "codes.npy"])
def test_pickled_vectors_are_refused_never_unpickled(built, tmp_path, capsys, how, vector_file):
    idx, imgs = built
    bad = tmp_path / "idx"
    marker = tmp_path / "UNPICKLED"
    if vector_file == "hashes.npy":
        shutil.copytree(idx, bad)
    else:  # a float-code index (the autoencoder's kind)
        codes = np.random.default_rng(0).normal(size=(3, 16)).astype(np.float32)
        Index.create("ae", "model-fingerprint", codes, ["a.png", "b.png", "c.png"], kind="code").save(bad)
    if how == "raw pickle renamed":
        (bad / vector_file).write_bytes(pickle.dumps(Payload(marker)))
    else:
        np.save(bad / vector_file, np.array([Payload(marker)] * 3, dtype=object), allow_pickle=True)
    assert not marker.exists()
    with pytest.raises(CorruptIndexError, match=vector_file) as e:
        Index.load(bad)
    assert "pickle" in str(e.value) or "Object arrays" in str(e.value)
    assert search.main(["query", str(bad), str(imgs / "img0.png")]) == 2
    assert vector_file in capsys.readouterr().err
    assert not marker.exists(), "the payload was unpickled"


# ----------------------------------------------------------------------------- checkpoints


def ckpt_corruptions():
    """(name, make(path, good_ckpt_path, marker), words the message must contain)."""
    import torch

    def garbage(p, good, marker):
        p.write_bytes(np.random.default_rng(1).bytes(2000))

    def truncated(p, good, marker):
        data = good.read_bytes()
        p.write_bytes(data[: len(data) // 2])

    def torch_pickle(p, good, marker):  # a real torch file whose payload is an arbitrary object
        obj = torch.load(good, weights_only=True)
        obj["config"] = Payload(marker)
        torch.save(obj, p)

    def raw_pickle(p, good, marker):
        p.write_bytes(pickle.dumps({"config": Payload(marker), "state_dict": {}}))

    def other_arch(p, good, marker):
        obj = torch.load(good, weights_only=True)
        torch.save({**obj, "config": {**obj["config"], "arch": "resnet18"}}, p)

    def wrong_shapes(p, good, marker):  # config says 16-d codes, weights are of an 8-d model
        from encoder.ae.model import ConvAutoencoder

        obj = torch.load(good, weights_only=True)
        torch.save({**obj, "state_dict": ConvAutoencoder(code_dim=8, width=4).state_dict()}, p)

    def foreign_lightning(p, good, marker):
        torch.save({"state_dict": {"backbone.fc.weight": torch.ones(2, 2)}, "hyper_parameters": {}}, p)

    def foreign_dict(p, good, marker):
        torch.save({"weights": torch.ones(3)}, p)

    def a_tensor(p, good, marker):
        torch.save(torch.ones(3), p)

    def a_folder(p, good, marker):
        p.mkdir()

    return [
        ("garbage bytes", garbage, "cannot load checkpoint"),
        ("zero bytes", lambda p, g, m: p.write_bytes(b""), "cannot load checkpoint"),
        ("truncated", truncated, "cannot load checkpoint"),
        ("torch file holding a pickled object", torch_pickle, "cannot load checkpoint"),
        ("raw pickle", raw_pickle, "cannot load checkpoint"),
        ("another architecture", other_arch, "resnet18"),
        ("weights of another code size", wrong_shapes, "do not fit"),
        ("Lightning checkpoint of another module", foreign_lightning, "not of this toolkit"),
        ("foreign dict", foreign_dict, "expected a Lightning checkpoint"),
        ("a bare tensor", a_tensor, "expected a dict"),
        ("a folder", a_folder, "folder"),
    ]


CKPT_CASES = ckpt_corruptions()


@pytest.fixture(scope="module")
def encoder_file(tmp_path_factory) -> Path:
    import torch

    from encoder.ae.inference import save_encoder
    from encoder.ae.model import ConvAutoencoder

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("enc") / "encoder.pt"
    save_encoder(ConvAutoencoder(code_dim=16, width=4), path)
    return path


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch warns before refusing the raw pickle
@pytest.mark.parametrize("name,make,says", CKPT_CASES, ids=[c[0] for c in CKPT_CASES])
def test_corrupt_or_foreign_checkpoint_is_refused(encoder_file, built, tmp_path, capsys, name, make, says):
    import train
    from encoder.ae.inference import CheckpointError, load_encoder

    bad, marker = tmp_path / "model.ckpt", tmp_path / "UNPICKLED"
    make(bad, encoder_file, marker)
    with pytest.raises(CheckpointError) as e:
        load_encoder(bad, device="cpu")
    assert str(bad) in str(e.value) and says in str(e.value), str(e.value)
    _, imgs = built
    assert train.main(["reconstruct", "--checkpoint", str(bad), str(imgs), "-o", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(bad) in err, err
    assert not marker.exists(), "the payload was unpickled"


def test_codes_of_another_code_size_are_refused(encoder_file, tmp_path, capsys):
    import train

    codes = tmp_path / "codes.npy"
    np.save(codes, np.zeros((2, 8), np.float32))  # 8-d codes, the checkpoint makes 16-d ones
    assert train.main(["decode", str(codes), "--checkpoint", str(encoder_file), "-o", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert str(codes) in err and "8-d" in err and "16" in err, err


@pytest.mark.parametrize("how", ["raw pickle renamed", "object array .npy"])
def test_pickled_codes_file_is_refused_never_unpickled(encoder_file, tmp_path, capsys, how):
    import train

    codes, marker = tmp_path / "codes.npy", tmp_path / "UNPICKLED"
    if how == "raw pickle renamed":
        codes.write_bytes(pickle.dumps(Payload(marker)))
    else:
        np.save(codes, np.array([Payload(marker)] * 2, dtype=object), allow_pickle=True)
    assert train.main(["decode", str(codes), "--checkpoint", str(encoder_file), "-o", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(codes) in err, err
    assert not marker.exists(), "the payload was unpickled"


@pytest.fixture(scope="module")
def ae_built(built, encoder_file, tmp_path_factory) -> Path:
    idx = tmp_path_factory.mktemp("ae") / "idx"
    assert (
        search.main(["index", str(built[1]), "--method", "ae", "--checkpoint", str(encoder_file), "-o", str(idx)]) == 0
    )
    return idx


def test_ae_index_refuses_a_model_of_another_code_size(ae_built, built, tmp_path, capsys):
    import torch

    from encoder.ae.inference import save_encoder
    from encoder.ae.model import ConvAutoencoder

    torch.manual_seed(1)
    other = tmp_path / "other_size.pt"
    save_encoder(ConvAutoencoder(code_dim=8, width=4), other)
    for cmd in ("query", "add"):
        capsys.readouterr()
        argv = [cmd, str(ae_built), str(built[1] / "img0.png"), "--checkpoint", str(other)]
        assert search.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert str(other) in err and "fingerprint" in err, err
    assert len(Index.load(ae_built)) == 3  # add wrote nothing


AE_CORRUPTIONS = [
    ("truncated codes.npy", truncate("codes.npy"), "codes.npy", ".npy"),
    ("float64 codes.npy", lambda d: np.save(d / "codes.npy", np.zeros((3, 16))), "codes.npy", "float32"),
    (
        "codes.npy of another width",
        lambda d: np.save(d / "codes.npy", np.zeros((3, 8), np.float32)),
        "codes.npy",
        "dim=16",
    ),
    ("truncated index.faiss", truncate("index.faiss"), "index.faiss", "FAISS"),
    (
        "binary index.faiss in a code index",
        lambda d: __import__("faiss").write_index_binary(
            __import__("faiss").IndexBinaryFlat(64), str(d / "index.faiss")
        ),
        "index.faiss",
        "FAISS",
    ),
]


@pytest.mark.parametrize("name,corrupt,names,says", AE_CORRUPTIONS, ids=[c[0] for c in AE_CORRUPTIONS])
def test_corrupt_ae_index_is_refused(ae_built, built, encoder_file, tmp_path, capsys, name, corrupt, names, says):
    bad = tmp_path / "idx"
    shutil.copytree(ae_built, bad)
    corrupt(bad)
    with pytest.raises(CorruptIndexError) as e:
        Index.load(bad)
    assert str(bad / names) in str(e.value) and says in str(e.value), str(e.value)
    capsys.readouterr()
    assert search.main(["query", str(bad), str(built[1] / "img0.png"), "--checkpoint", str(encoder_file)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(bad / names) in err, err


def test_ae_index_whose_recorded_checkpoint_was_corrupted(ae_built, built, tmp_path, capsys):
    """The index remembers its checkpoint; if that file is later broken, an index without its own
    ONNX graphs (made before they were kept) names it; one with them answers from the graphs."""
    bad = tmp_path / "idx"
    shutil.copytree(ae_built, bad)
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"PK\x03\x04 not really a zip")
    edit_json("meta.json", lambda m: {**m, "checkpoint": str(ckpt)})(bad)
    assert search.main(["query", str(bad), str(built[1] / "img0.png")]) == 0
    capsys.readouterr()
    for name in ("encoder.onnx", "decoder.onnx", "onnx.json"):
        (bad / name).unlink()
    edit_json("meta.json", lambda m: {k: v for k, v in m.items() if k != "attachments"})(bad)
    assert search.main(["query", str(bad), str(built[1] / "img0.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(ckpt) in err, err


def test_hash_only_options_refuse_an_ae_index(ae_built, built, capsys):
    assert search.main(["dedup", str(ae_built)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(ae_built) in err and "hash index" in err, err
    assert search.main(["query", str(ae_built), str(built[1] / "img0.png"), "--mirror"]) == 0  # codes too (issue 15)

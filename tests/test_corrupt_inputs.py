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
from encoder.index import CorruptIndexError, Index


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
    ("garbage index.faiss", lambda d: (d / "index.faiss").write_bytes(np.random.default_rng(0).bytes(300)),
     "index.faiss", "FAISS"),
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
    ("meta.json without kind", edit_json("meta.json", lambda m: {k: v for k, v in m.items() if k != "kind"}),
     "meta.json", "kind"),
    ("meta.json says codes, folder holds hashes", edit_json("meta.json", lambda m: {**m, "kind": "code"}),
     "codes.npy", "missing"),
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
    for argv in (["query", str(bad), str(imgs / "img0.png")], ["add", str(bad), str(imgs / "img1.png")],
                 ["remove", str(bad), "img1.png"], ["dedup", str(bad)]):
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
    assert "dhash-v0:old" in err and "dhash-v1" in err, err
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
        Index.create("ae", "model-fingerprint", codes, ["a.png", "b.png", "c.png"]).save(bad)
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

"""encoder.ae.fashion_mnist through train.py prepare-fashion-mnist: IDX files -> image folder."""

from __future__ import annotations

import gzip
import json

import numpy as np
from helpers import tiny_fashion, write_idx

from encoder.ae.fashion_mnist import export


def test_prepare_fashion_mnist_from_idx(tmp_path, run):
    src = tmp_path / "idx"
    src.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 20), ("t10k", 10)):
        write_idx(src / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)))
        write_idx(src / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    run("train.py", "prepare-fashion-mnist", "--source", src, "--out", tmp_path / "fm")
    assert len(list((tmp_path / "fm" / "train").rglob("*.png"))) == 20
    assert len(list((tmp_path / "fm" / "test" / "sandal").glob("*.png"))) == 1
    assert (tmp_path / "fm" / "DONE").exists()
    (src / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x0c\x01junk"))
    p = run("train.py", "prepare-fashion-mnist", "--source", src, "--out", tmp_path / "fm2", check=False)
    assert p.returncode == 2 and "t10k-labels" in p.stderr
    assert not (tmp_path / "fm2").exists()


def _pngs(out, split="train"):
    return len(list((out / split).rglob("*.png")))


def test_same_request_reuses_the_export(tmp_path, capsys):
    src = tiny_fashion(tmp_path / "idx", n_train=30, n_test=12)
    out = export(tmp_path / "fm", source=src, limit=10)
    done = json.loads((out / "DONE").read_text())
    assert done["limit"] == 10 and done["counts"] == {"train": 10, "test": 10}
    assert done["source"] == str(src.resolve())
    stamp = (out / "DONE").stat().st_mtime_ns
    (out / "train" / "keep.txt").write_text("left alone")
    export(out, source=src, limit=10)
    assert (out / "DONE").stat().st_mtime_ns == stamp and (out / "train" / "keep.txt").exists()
    assert "exporting again" not in capsys.readouterr().err


def test_another_limit_or_an_old_marker_re_exports(tmp_path, capsys):
    # it used to reuse any finished export: --limit 10 then no limit gave 10 images silently
    src = tiny_fashion(tmp_path / "idx", n_train=30, n_test=12)
    out = export(tmp_path / "fm", source=src, limit=10)
    assert _pngs(out) == 10
    export(out, source=src)
    err = capsys.readouterr().err
    assert "exporting again" in err and "'limit': 10" in err and "'limit': None" in err
    assert _pngs(out) == 30 and _pngs(out, "test") == 12
    assert json.loads((out / "DONE").read_text())["counts"] == {"train": 30, "test": 12}
    (out / "DONE").write_text("42 images\n")  # the marker of older versions
    export(out, source=src, limit=5)
    assert "older export" in capsys.readouterr().err and _pngs(out) == 5

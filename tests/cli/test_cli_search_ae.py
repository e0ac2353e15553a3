"""search.py with --method ae: index/query/add/remove with codes, reconstructions, refusals, errors."""

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import class_folder, tiny_checkpoint
from PIL import Image

import search
from encoder.search.index import Index


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("ae")
    folder = class_folder(d / "imgs")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    return folder, tiny_checkpoint(d / "model.pt"), tiny_checkpoint(d / "other.pt", seed=1)


def _json(capsys):
    return json.loads(capsys.readouterr().out)


def test_index_query_table_json_plot_recon(setup, tmp_path, capsys):
    folder, ckpt, _ = setup
    idx = tmp_path / "idx"
    assert search.main(["index", str(folder), "--method", "ae", "--checkpoint", str(ckpt), "-o", str(idx)]) == 0
    err = capsys.readouterr().err
    assert "broken.jpg" in err
    meta = json.loads((idx / "meta.json").read_text())
    from encoder.ae.inference import load_encoder

    assert meta["method"] == "ae" and meta["version"] == load_encoder(ckpt).fingerprint
    assert meta["faiss_type"] == "Flat" and meta["metric"] == "l2" and meta["tuned_recall"] == 1.0
    codes = np.load(idx / "codes.npy")
    ids = json.loads((idx / "ids.json").read_text())
    assert codes.shape == (24, 128) and codes.dtype == np.float32 and len(ids) == 24 and ids[0] == "across/00.png"
    # the stored codes are the encoder's codes of those files
    from encoder.ae.inference import encode_paths

    ref, _ = encode_paths(load_encoder(ckpt), [folder / ids[5]])
    np.testing.assert_allclose(codes[5], ref[0], rtol=1e-4, atol=1e-5)

    q = folder / "rings" / "03.png"
    out = tmp_path / "q.png"
    assert search.main(["query", str(idx), str(q), "-k", "3", "--json", "--plot", str(out), "--show-recon"]) == 0
    res = _json(capsys)
    nb = res[0]["neighbours"]
    assert nb[0]["id"] == "rings/03.png" and nb[0]["distance"] == pytest.approx(0, abs=1e-4)
    assert [n["rank"] for n in nb] == [1, 2, 3] and nb[1]["distance"] <= nb[2]["distance"]
    assert out.stat().st_size > 1000
    with Image.open(out) as im:  # a second row of reconstructions makes the picture taller
        h_recon = im.height
    assert search.main(["query", str(idx), str(q), "-k", "3", "--plot", str(tmp_path / "q2.png")]) == 0
    with Image.open(tmp_path / "q2.png") as im:
        assert h_recon > 1.5 * im.height
    table = capsys.readouterr().out.splitlines()
    assert table[0] == f"query {q}" and table[1].split()[-1] == "rings/03.png" and len(table) == 4
    # k larger than the index returns what exists; a folder query returns one result per image
    assert search.main(["query", str(idx), str(folder / "down"), "-k", "100", "--json"]) == 0
    res = _json(capsys)
    assert len(res) == 8 and all(len(r["neighbours"]) == 24 for r in res)


def test_add_remove_and_refuse_other_model(setup, tmp_path, capsys):
    folder, ckpt, other = setup
    idx = tmp_path / "idx"
    assert (
        search.main(
            [
                "index",
                str(folder / "across"),
                str(folder / "down"),
                "--method",
                "ae",
                "--checkpoint",
                str(ckpt),
                "-o",
                str(idx),
            ]
        )
        == 0
    )
    before = np.load(idx / "codes.npy")
    assert search.main(["add", str(idx), str(folder / "rings" / "00.png")]) == 0  # model from the index meta
    after = np.load(idx / "codes.npy")
    np.testing.assert_array_equal(after[:16], before)
    assert json.loads((idx / "ids.json").read_text())[-1] == "rings/00.png"
    assert search.main(["remove", str(idx), "down/03.png", "nope.png"]) == 0
    assert "not in index:" in (err := capsys.readouterr().err) and "nope.png" in err
    ids = json.loads((idx / "ids.json").read_text())
    assert len(ids) == 16 and "down/03.png" not in ids
    snapshot = {f.name: f.read_bytes() for f in idx.iterdir()}
    for cmd in (
        ["add", str(idx), str(folder / "rings" / "01.png")],
        ["query", str(idx), str(folder / "rings" / "01.png")],
    ):
        capsys.readouterr()
        assert search.main(cmd + ["--checkpoint", str(other)]) == 2
        err = capsys.readouterr().err
        fp_idx = json.loads((idx / "meta.json").read_text())["version"]
        from encoder.ae.inference import load_encoder

        assert fp_idx in err and load_encoder(other).fingerprint in err and "fingerprint" in err
    assert {f.name: f.read_bytes() for f in idx.iterdir()} == snapshot  # nothing written


def test_errors(setup, tmp_path, capsys):
    folder, ckpt, _ = setup
    q = str(folder / "across" / "00.png")
    assert search.main(["query", str(tmp_path / "none"), q]) == 2
    assert "no meta.json" in capsys.readouterr().err
    # no checkpoint: the method refuses (the command line only spells its option as a flag)
    assert search.main(["index", str(folder), "--method", "ae", "-o", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err == "error: --checkpoint is required for --method ae\n"
    assert (
        search.main(
            ["index", str(folder), "--method", "ae", "--checkpoint", str(tmp_path / "no.pt"), "-o", str(tmp_path / "x")]
        )
        == 2
    )
    assert "no.pt" in capsys.readouterr().err and not (tmp_path / "x").exists()
    idx = tmp_path / "idx"
    search.main(["index", str(folder / "down"), "--method", "ae", "--checkpoint", str(ckpt), "-o", str(idx)])
    for k in ("0", "-2"):
        with pytest.raises(SystemExit):
            search.main(["query", str(idx), q, "-k", k])
    capsys.readouterr()
    assert search.main(["query", str(idx), str(folder / "broken.jpg")]) == 1  # unreadable query: named, no result
    assert "broken.jpg" in capsys.readouterr().err
    assert search.main(["dedup", str(idx)]) == 2
    assert "needs a hash index" in capsys.readouterr().err
    assert search.main(["query", str(idx), q, "--mirror"]) == 0  # mirror-aware codes (issue 15)
    hidx = tmp_path / "hidx"
    search.main(["index", str(folder / "down"), "-o", str(hidx)])
    capsys.readouterr()
    for cmd in ("query", "add"):  # a hash index has no model
        assert search.main([cmd, str(hidx), q, "--checkpoint", str(ckpt)]) == 2
        assert "ae indexes" in capsys.readouterr().err


def test_cosine_metric_and_search_params_override(setup, tmp_path, capsys):
    folder, ckpt, _ = setup
    idx = tmp_path / "idx"
    base = ["index", str(folder), "--method", "ae", "--checkpoint", str(ckpt), "-o", str(idx), "--metric", "cosine"]
    assert search.main(base + ["--faiss-type", "IVF2,Flat"]) == 2  # 24 codes cannot train 2 lists well
    assert "needs at least 78 codes to train" in capsys.readouterr().err and not idx.exists()
    assert search.main(base + ["--faiss-type", "HNSW8", "--search-params", "efSearch=4"]) == 0
    loaded = Index.load(idx, mmap=True)
    assert loaded.meta["faiss_type"] == "HNSW8" and loaded.meta["search_params"] == "efSearch=4"
    capsys.readouterr()
    q = str(folder / "down" / "02.png")
    assert search.main(["query", str(idx), q, "-k", "24", "--json", "--search-params", "efSearch=64"]) == 0
    nb = _json(capsys)[0]["neighbours"]
    assert len(nb) == 24 and nb[0]["id"] == "down/02.png"
    assert 0 <= nb[0]["distance"] < 1e-4 and all(0 <= n["distance"] <= 2 for n in nb)  # 1 - cos
    assert search.main(["query", str(idx), q, "--search-params", "bogus=3"]) == 2
    assert "bogus=3" in capsys.readouterr().err


def test_queries_run_on_the_onnx_graphs_kept_in_the_index(setup, tmp_path, capsys):
    """An ae index keeps its model as checked ONNX graphs: a query needs neither torch nor the
    checkpoint, and finds what the torch encoder finds (same ids, distances within 1e-4)."""
    import subprocess
    import sys

    folder, ckpt, _ = setup
    idx = tmp_path / "idx"
    assert search.main(["index", str(folder), "--method", "ae", "--checkpoint", str(ckpt), "-o", str(idx)]) == 0
    info = json.loads((idx / "onnx.json").read_text())
    assert info["fingerprint"] == json.loads((idx / "meta.json").read_text())["version"]
    assert max(info["max_abs_diff"].values()) <= info["tolerance"]
    capsys.readouterr()
    queries = [str(folder / "rings" / "03.png"), str(folder / "down" / "05.png")]
    assert search.main(["query", str(idx), *queries, "-k", "5", "--json", "--checkpoint", str(ckpt)]) == 0
    with_torch = _json(capsys)
    code = (
        "import json, sys\nfrom encoder.cli.search import main\n"
        f"rc = main(['query', {str(idx)!r}, *{queries!r}, '-k', '5', '--json'])\n"
        "print(json.dumps({'rc': rc, 'torch': 'torch' in sys.modules}), file=sys.stderr)"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert json.loads(p.stderr.strip().splitlines()[-1]) == {"rc": 0, "torch": False}, p.stderr
    onnx = json.loads(p.stdout)
    for a, b in zip(with_torch, onnx):
        assert [n["id"] for n in a["neighbours"]] == [n["id"] for n in b["neighbours"]]
        np.testing.assert_allclose(
            [n["distance"] for n in a["neighbours"]], [n["distance"] for n in b["neighbours"]], atol=1e-4
        )
    # the checkpoint may be gone: the index still answers (and decodes its neighbours)
    moved = tmp_path / "gone.pt"
    Path(ckpt).rename(moved)
    try:
        assert (
            search.main(["query", str(idx), queries[0], "-k", "3", "--show-recon", "--plot", str(tmp_path / "q.png")])
            == 0
        )
    finally:
        moved.rename(ckpt)
    # an edited graph is refused by name, never run
    (idx / "encoder.onnx").write_bytes((idx / "encoder.onnx").read_bytes()[:-10])
    assert search.main(["query", str(idx), queries[0]]) == 2
    assert "encoder.onnx" in capsys.readouterr().err

"""encoder.ae.export through train.py export: ONNX checked against torch, or refused, or --no-check."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from encoder.ae.export import OnnxCheckUnavailable, export_encoder
from encoder.ae.inference import load_encoder, save_encoder
from encoder.ae.model import ConvAutoencoder


def test_export_onnx_and_pt_give_same_codes(trained, tmp_path, run, ckpt_of):
    import onnxruntime as ort

    ckpt = ckpt_of(trained)
    p = run("train.py", "export", "--checkpoint", ckpt, "-o", tmp_path / "enc.onnx")
    info = json.loads(p.stdout)
    assert info["checked"] is True and info["max_abs_diff"] < 1e-4
    run("train.py", "export", "--checkpoint", ckpt, "-o", tmp_path / "enc.pt")
    enc, enc_pt = load_encoder(ckpt, "cpu"), load_encoder(tmp_path / "enc.pt", "cpu")
    assert enc.fingerprint == enc_pt.fingerprint
    x = np.random.default_rng(0).random((7, 64, 64)).astype(np.float32)
    sess = ort.InferenceSession(str(tmp_path / "enc.onnx"), providers=["CPUExecutionProvider"])
    onnx_codes = sess.run(["codes"], {"images": x[:, None]})[0]
    np.testing.assert_allclose(onnx_codes, enc.encode(x), atol=1e-4)
    np.testing.assert_array_equal(enc_pt.encode(x), enc.encode(x))


@pytest.fixture
def small_model(tmp_path):
    save_encoder(ConvAutoencoder(width=4), tmp_path / "m.pt")
    return tmp_path / "m.pt"


def test_onnx_check_needs_onnxruntime(small_model, tmp_path, monkeypatch):
    # it used to write an unchecked file silently; now it refuses and says how to opt out
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    with pytest.raises(OnnxCheckUnavailable, match=r"onnxruntime.*--no-check"):
        export_encoder(small_model, tmp_path / "e.onnx")
    assert not (tmp_path / "e.onnx").exists()
    info = export_encoder(small_model, tmp_path / "e.onnx", check=False)  # the explicit opt-out
    assert info["checked"] is False and info["max_abs_diff"] is None and (tmp_path / "e.onnx").stat().st_size > 0
    export_encoder(small_model, tmp_path / "e.pt")  # .pt needs no onnxruntime


def test_train_py_export_no_check_and_missing_onnxruntime(small_model, tmp_path, run):
    p = run("train.py", "export", "--checkpoint", small_model, "-o", tmp_path / "n.onnx", "--no-check")
    info = json.loads(p.stdout)
    assert info["checked"] is False and info["max_abs_diff"] is None and "not checked" in p.stderr
    # a stand-in onnxruntime that fails to import, first on the path
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "onnxruntime.py").write_text("raise ImportError('no onnxruntime here')\n")
    p = run(
        "-c",
        "import sys; sys.path.insert(0, sys.argv[1]); sys.argv = ['train.py'] + sys.argv[2:]; "
        "import train; sys.exit(train.main(sys.argv[1:]))",
        tmp_path / "fake",
        "export",
        "--checkpoint",
        small_model,
        "-o",
        tmp_path / "c.onnx",
        check=False,
    )
    assert p.returncode == 2 and "onnxruntime" in p.stderr and "--no-check" in p.stderr
    assert not (tmp_path / "c.onnx").exists()

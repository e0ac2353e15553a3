"""encoder.ae.inference: checkpoints, fingerprints, encoding files; no Lightning on this path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from encoder.ae.inference import (
    CheckpointError,
    encode_paths,
    encoder_from_model,
    fingerprint,
    load_encoder,
    load_model,
    read_checkpoint,
    save_encoder,
)
from encoder.ae.model import ConvAutoencoder

ROOT = Path(__file__).resolve().parents[2]


def test_fingerprint_tracks_weights(tmp_path):
    m = ConvAutoencoder(width=4)
    save_encoder(m, tmp_path / "a.pt")
    assert load_encoder(tmp_path / "a.pt").fingerprint == fingerprint(m)
    with torch.no_grad():
        m.encoder.fc.bias.add_(1e-3)
    assert fingerprint(m) != load_encoder(tmp_path / "a.pt").fingerprint


def test_bad_checkpoints_refused(tmp_path):
    rng = np.random.default_rng(0)
    for _ in range(50):  # random bytes fail inside the unpickler in many ways (IndexError, KeyError, ...)
        (tmp_path / "garbage.ckpt").write_bytes(rng.integers(0, 256, int(rng.integers(1, 400)), np.uint8).tobytes())
        with pytest.raises(CheckpointError, match="garbage.ckpt"):
            load_encoder(tmp_path / "garbage.ckpt")
    (tmp_path / "garbage.ckpt").write_bytes(b"\x80\x02" + b"\x00" * 20)  # pickle protocol 2, then pops an empty stack
    with pytest.raises(CheckpointError, match="garbage.ckpt"):
        load_encoder(tmp_path / "garbage.ckpt")
    with pytest.raises(CheckpointError, match="not found"):
        load_encoder(tmp_path / "missing.ckpt")
    # a pickle that would run code is never executed
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"config": Evil(), "state_dict": {}}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_encoder(tmp_path / "evil.pt")
    assert not marker.exists()
    # another code size / architecture
    m = ConvAutoencoder(code_dim=64, width=4)
    sd = {k: v for k, v in m.state_dict().items()}
    torch.save({"config": {**m.config, "code_dim": 128}, "state_dict": sd}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="do not fit"):
        load_encoder(tmp_path / "other.pt")
    torch.save({"config": {**m.config, "arch": "resnet"}, "state_dict": sd}, tmp_path / "arch.pt")
    with pytest.raises(CheckpointError, match="resnet"):
        load_encoder(tmp_path / "arch.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="expected a Lightning checkpoint"):
        load_model(tmp_path / "foreign.pt")


def test_read_checkpoint_is_public(tmp_path):
    torch.save({"epoch": 3, "w": torch.ones(2)}, tmp_path / "x.ckpt")
    got = read_checkpoint(str(tmp_path / "x.ckpt"))  # a str is fine as well as a Path
    assert got["epoch"] == 3 and torch.equal(got["w"], torch.ones(2))
    with pytest.raises(CheckpointError, match="got a folder"):
        read_checkpoint(tmp_path)
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="expected a dict"):
        read_checkpoint(tmp_path / "list.pt")


def test_lightning_checkpoint_without_width_reads_as_width_16(tmp_path):
    # AutoencoderModule saves every argument; a checkpoint without `width` was trained with the
    # default, 16 (the model's own default was 32 until the defaults were made one)
    torch.manual_seed(0)
    m = ConvAutoencoder(width=16)
    sd = {f"model.{k}": v for k, v in m.state_dict().items()}
    torch.save({"state_dict": sd, "hyper_parameters": {"code_dim": 128}}, tmp_path / "old.ckpt")
    loaded = load_model(tmp_path / "old.ckpt")
    assert loaded.width == 16 and fingerprint(loaded) == fingerprint(m)


def test_encoder_from_model_matches_load_encoder(tmp_path):
    m = ConvAutoencoder(width=4)
    save_encoder(m, tmp_path / "m.pt")
    enc, mem = load_encoder(tmp_path / "m.pt", "cpu"), encoder_from_model(m, device="cpu")
    assert mem.fingerprint == enc.fingerprint and mem.path == "<memory>" and not mem.model.training
    x = np.random.default_rng(0).random((3, 64, 64)).astype(np.float32)
    np.testing.assert_array_equal(mem.encode(x), enc.encode(x))


def test_encode_paths_reports_bad(tmp_path, folder):
    save_encoder(ConvAutoencoder(width=4), tmp_path / "m.pt")
    enc = load_encoder(tmp_path / "m.pt")
    paths = sorted(folder.rglob("*.png"))[:5] + [tmp_path / "nope.jpg"]
    (tmp_path / "nope.jpg").write_text("text")
    errors = []
    codes, kept = encode_paths(enc, paths, batch_size=2, errors=errors)
    assert codes.shape == (5, 128) and codes.dtype == np.float32 and kept == paths[:5]
    assert [e[0] for e in errors] == [tmp_path / "nope.jpg"]
    single, _ = encode_paths(enc, paths[:1])
    np.testing.assert_allclose(single[0], codes[0], rtol=1e-4, atol=1e-5)


def test_encode_paths_many_files_in_chunks(tmp_path, folder):
    # >= 2,000 paths: decoded by one process pool across 4,096-image chunks, in order
    save_encoder(ConvAutoencoder(width=4), tmp_path / "m.pt")
    enc = load_encoder(tmp_path / "m.pt")
    pngs = sorted(folder.rglob("*.png"))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    paths = [pngs[i % len(pngs)] for i in range(4200)]
    paths[4150] = tmp_path / "bad.png"
    errors = []
    codes, kept = encode_paths(enc, paths, errors=errors, workers=2)
    assert codes.shape == (4199, 128) and kept == paths[:4150] + paths[4151:]
    assert [e[0] for e in errors] == [tmp_path / "bad.png"]
    few, _ = encode_paths(enc, pngs)
    np.testing.assert_allclose(codes[: len(pngs)], few, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(codes[4160], few[4161 % len(pngs)], rtol=1e-4, atol=1e-5)


def test_inference_recon_export_never_import_lightning(tmp_path, folder):
    # load, encode, decode, reconstruct and export a .pt with only torch: Lightning stays unloaded
    save_encoder(ConvAutoencoder(width=4), tmp_path / "m.pt")
    pngs = [str(p) for p in sorted(folder.rglob("*.png"))[:4]]
    code = f"""
import sys
import encoder.ae, encoder.ae.inference, encoder.ae.recon, encoder.ae.export
from encoder.ae import load_encoder, encode_paths, reconstruct_paths, export_encoder
enc = load_encoder({str(tmp_path / "m.pt")!r}, "cpu")
codes, kept = encode_paths(enc, {pngs!r})
assert enc.decode(codes).shape == (4, 64, 64)
reconstruct_paths(enc, {pngs!r}, {str(tmp_path / "rec")!r})
export_encoder({str(tmp_path / "m.pt")!r}, {str(tmp_path / "copy.pt")!r})
bad = sorted(m for m in sys.modules if m.split(".")[0] in ("pytorch_lightning", "lightning", "lightning_fabric"))
assert not bad, bad
print("no lightning")
"""
    p = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1"),
    )
    assert p.returncode == 0 and "no lightning" in p.stdout, p.stderr[-3000:]

"""encoder.ae.recon through train.py reconstruct/decode, and SSIM against scikit-image."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from encoder.ae.inference import load_encoder


def test_reconstruct_and_decode(trained, folder, tmp_path, run, ckpt_of):
    ckpt = ckpt_of(trained, "best.ckpt")
    p = run("train.py", "reconstruct", "--checkpoint", ckpt, folder, "-o", tmp_path / "rec", "--json")
    summary = json.loads(p.stdout)
    assert summary["count"] == 36 and summary["mean_psnr"] > 5 and 0 < summary["mean_ssim"] <= 1
    codes = np.load(tmp_path / "rec" / "codes.npy")
    assert codes.shape == (36, 128)
    lines = (tmp_path / "rec" / "metrics.csv").read_text().splitlines()
    assert lines[0] == "id,psnr_db,ssim" and len(lines) == 37
    assert Image.open(tmp_path / "rec" / "grid.png").size[0] > 64
    # decoding from the saved codes alone gives the same reconstructions
    run("train.py", "decode", "--checkpoint", ckpt, tmp_path / "rec" / "codes.npy", "-o", tmp_path / "dec")
    first = json.loads((tmp_path / "rec" / "ids.json").read_text())[0]
    dec = np.asarray(Image.open(tmp_path / "dec" / (first + ".png")), np.float32) / 255
    enc = load_encoder(ckpt)
    x = (
        np.asarray(Image.open(folder / first).convert("L").resize((64, 64), Image.Resampling.BILINEAR), np.float32)
        / 255
    )
    want = enc.decode(enc.encode(x[None]))[0]
    assert np.abs(dec - want).max() <= 1 / 255 + 1e-6
    psnr_from_csv = float(lines[1].split(",")[1])
    assert psnr_from_csv == pytest.approx(10 * np.log10(1 / np.mean((x - want) ** 2)), abs=0.05)
    # without --json: the one-line summary
    p = run("train.py", "reconstruct", "--checkpoint", ckpt, folder, "-o", tmp_path / "rec2", "--grid", 4)
    assert p.stdout.startswith("reconstructed 36 images (0 skipped)") and "grid.png" in p.stdout


def test_decode_rejects_wrong_codes(trained, tmp_path, run, ckpt_of):
    np.save(tmp_path / "c.npy", np.zeros((2, 64), np.float32))
    p = run(
        "train.py", "decode", "--checkpoint", ckpt_of(trained), tmp_path / "c.npy", "-o", tmp_path / "o", check=False
    )
    assert p.returncode == 2 and "64-d codes" in p.stderr and "128" in p.stderr


def test_ssim_matches_skimage():
    from skimage.metrics import structural_similarity

    from encoder.metrics import ssim

    rng = np.random.default_rng(1)
    a = rng.random((2, 64, 64))
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
    ours = ssim(a, b)
    for i in range(2):
        ref = structural_similarity(
            a[i], b[i], gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0
        )
        assert ours[i] == pytest.approx(ref, abs=1e-3)

"""The autoencoder, its data module, train.py (fit, resume, DDP, tools) and checkpoint loading."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from encoder.ae.model import ConvAutoencoder
from encoder.ae.inference import CheckpointError, encode_paths, fingerprint, load_encoder, load_model, save_encoder
from encoder.ae.datamodule import ImageFolderDataModule
from encoder.ae.lit import AutoencoderModule
from encoder.data import folder_labels
from helpers import write_idx

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable


def run(*args, cwd=ROOT, timeout=300, check=True):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    p = subprocess.run([PY, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and p.returncode != 0:
        raise AssertionError(f"{args} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def make_folder(root: Path, n_per_class: int = 12, classes=("circle", "square", "stripe"), size=40) -> Path:
    """Small synthetic labelled folder: distinct shapes per class, random position/size."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            cx, cy, r = rng.integers(10, size - 10, 2).tolist() + [int(rng.integers(5, 10))]
            if c == "circle":
                im = ((xx - cx) ** 2 + (yy - cy) ** 2 < r * r) * 230
            elif c == "square":
                im = ((abs(xx - cx) < r) & (abs(yy - cy) < r)) * 230
            else:
                im = ((xx // max(2, r // 2)) % 2) * 200
            im = np.clip(im + rng.normal(0, 8, im.shape), 0, 255).astype(np.uint8)
            Image.fromarray(im, "L").save(root / c / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("imgs") / "data")


@pytest.fixture(scope="module")
def trained(folder, tmp_path_factory) -> Path:
    """A real (tiny) run of `train.py fit` with the smoke config; returns its run folder."""
    out = tmp_path_factory.mktemp("run")
    run("train.py", "fit", "--config", "configs/smoke.yaml", "--data.root", folder,
        "--trainer.default_root_dir", out, "--trainer.logger.init_args.save_dir", out,
        "--trainer.max_epochs", 2, "--data.limit", "null", "--trainer.enable_progress_bar", "false")
    return out


def ckpt_of(run_dir: Path, name="last.ckpt") -> Path:
    found = sorted(run_dir.rglob(name))
    assert found, f"no {name} under {run_dir}"
    return found[-1]


# ----------------------------------------------------------------------------- model

def test_shapes_and_range():
    m = ConvAutoencoder(code_dim=128, width=8).eval()
    x = torch.rand(3, 1, 64, 64)
    recon, z = m(x)
    assert z.shape == (3, 128) and recon.shape == (3, 1, 64, 64)
    assert recon.min() >= 0 and recon.max() <= 1
    assert torch.allclose(m.encode(x), z)
    assert ConvAutoencoder(code_dim=32, width=4, image_size=32).encode(torch.rand(2, 1, 32, 32)).shape == (2, 32)
    with pytest.raises(ValueError, match="multiple of 16"):
        ConvAutoencoder(image_size=40)


def test_training_step_reduces_loss():
    torch.manual_seed(0)
    m = ConvAutoencoder(width=8)
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    x = torch.rand(16, 1, 64, 64).round()       # a fixed batch it can memorise
    losses = []
    for _ in range(30):
        recon, _ = m(x)
        loss = torch.nn.functional.mse_loss(recon, x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_random_shift_moves_each_image_by_its_own_offset():
    from encoder.ae.lit import random_shift

    torch.manual_seed(0)
    x = torch.zeros(64, 1, 64, 64)
    x[:, :, 30, 30] = 1.0                         # one bright pixel per image
    y = random_shift(x, 3)
    assert y.shape == x.shape
    pos = [divmod(int(i), 64) for i in y.flatten(1).argmax(1)]
    assert all(y[i].sum() == 1 for i in range(64))          # moved, not lost or duplicated
    assert all(27 <= r <= 33 and 27 <= c <= 33 for r, c in pos)
    assert len(set(pos)) > 20                                 # offsets differ per image
    assert torch.equal(random_shift(x, 0), x)
    edge = torch.ones(8, 1, 64, 64)
    assert (random_shift(edge, 3) == 0).any()                 # filled with zeros, not wrapped


def test_nt_xent_prefers_matching_pairs():
    from encoder.ae.lit import nt_xent

    torch.manual_seed(0)
    a = torch.randn(32, 16)
    matched = nt_xent(a, a + 0.05 * torch.randn(32, 16), 0.2)
    shuffled = nt_xent(a, a[torch.randperm(32)], 0.2)
    assert matched < 1.0 < shuffled


def test_contrastive_term_trains_and_logs():
    torch.manual_seed(0)
    module = AutoencoderModule(width=4, contrastive_weight=0.01, channels_last=False, pca_init=False)
    logged = {}
    module.log_dict = lambda d, **kw: logged.update(d)
    x = (torch.rand(8, 64, 64) * 255).to(torch.uint8)
    loss = module._step((x, torch.full((8,), -1)), "train")
    assert "train/ntxent" in logged and float(logged["train/ntxent"].detach()) > 0
    assert torch.isclose(loss, logged["train/mse"] + 0.01 * logged["train/ntxent"])
    loss.backward()
    assert module.model.encoder.fc.weight.grad.abs().sum() > 0
    module._step((x, torch.full((8,), -1)), "val")
    assert "val/ntxent" not in logged                          # validation loss stays reconstruction
    off = AutoencoderModule(width=4, contrastive_weight=0.0, channels_last=False)
    logged.clear()
    off.log_dict = lambda d, **kw: logged.update(d)
    off._step((x, torch.full((8,), -1)), "train")
    assert "train/ntxent" not in logged
    for bad in (dict(contrastive_weight=-1), dict(contrastive_fraction=0), dict(temperature=0), dict(shift=-1)):
        with pytest.raises(ValueError):
            AutoencoderModule(**bad)


# ----------------------------------------------------------------------------- data

def test_folder_labels():
    assert folder_labels(["b/1.png", "a/2.png", "b/3.png"]) == ([1, 0, 1], ["a", "b"])
    assert folder_labels(["x.png", "a/2.png"]) == ([], [])


def test_datamodule_split_labels_and_bad_files(tmp_path, capsys):
    root = make_folder(tmp_path / "d", n_per_class=5)
    (root / "circle" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (root / "square" / "empty.jpg").write_bytes(b"")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "square" / "tiny.png")   # < 64x64 is upsampled
    dm = ImageFolderDataModule(str(root), batch_size=4, val_fraction=0.25)
    assert dm.num_classes == 3
    dm.setup("fit")
    err = capsys.readouterr().err
    assert "broken.png" in err and "empty.jpg" in err
    assert len(dm.ids) == 16 and "square/tiny.png" in dm.ids
    assert dm.images.shape == (16, 64, 64) and dm.images.dtype == torch.uint8
    assert len(dm.val_rows) == 4 and len(dm.train_rows) == 12
    assert set(dm.labels.tolist()) == {0, 1, 2}
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 64, 64) and y.shape == (4,)


def test_datamodule_empty_and_unreadable(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no readable images in .*empty"):
        ImageFolderDataModule(str(tmp_path / "empty")).setup("fit")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jpg").write_text("not an image")
    with pytest.raises(ValueError, match="1 image files tried"):
        ImageFolderDataModule(str(bad)).setup("fit")
    with pytest.raises(FileNotFoundError, match="missing"):
        ImageFolderDataModule(str(tmp_path / "missing")).setup("fit")


def test_supervised_needs_classes():
    with pytest.raises(ValueError, match="class subfolders"):
        AutoencoderModule(supervised_weight=0.5, num_classes=0)


# ----------------------------------------------------------------------------- train.py

def test_fit_writes_checkpoints_config_logs_grid(trained):
    last, best = ckpt_of(trained), ckpt_of(trained, "best.ckpt")
    run_dir = last.parent.parent
    assert (run_dir / "config.yaml").exists() and "width: 8" in (run_dir / "config.yaml").read_text()
    metrics = (run_dir / "metrics.csv").read_text()
    assert "val/psnr" in metrics and "train/loss" in metrics
    assert (run_dir / "recon_epoch001.png").exists()
    ck = torch.load(last, map_location="cpu", weights_only=True)   # loadable without pickle
    assert ck["epoch"] == 1 and ck["hyper_parameters"]["num_classes"] == 3   # linked from the folder
    enc = load_encoder(best)
    assert enc.code_dim == 128 and len(enc.fingerprint) == 16


def test_resume_from_last(trained, folder, tmp_path):
    last = ckpt_of(trained)
    p = run("train.py", "fit", "--config", "configs/smoke.yaml", "--data.root", folder,
            "--trainer.default_root_dir", tmp_path, "--trainer.logger.init_args.save_dir", tmp_path,
            "--trainer.max_epochs", 3, "--data.limit", "null", "--ckpt_path", last,
            "--trainer.enable_progress_bar", "false")
    assert "Restored all states" in p.stdout + p.stderr
    ck = torch.load(ckpt_of(tmp_path), map_location="cpu", weights_only=True)
    assert ck["epoch"] == 2


def test_print_config_and_unknown_key(folder):
    p = run("train.py", "fit", "--config", "configs/fashion_mnist.yaml", "--print_config")
    assert "code_dim: 128" in p.stdout and "checkpoint:" in p.stdout
    p = run("train.py", "fit", "--config", "configs/smoke.yaml", "--model.colour_dim", "3", check=False)
    assert p.returncode != 0 and "colour_dim" in p.stderr


def test_supervised_fit(folder, tmp_path):
    run("train.py", "fit", "--config", "configs/smoke.yaml", "--data.root", folder, "--model.supervised_weight", 0.5,
        "--trainer.default_root_dir", tmp_path, "--trainer.logger.init_args.save_dir", tmp_path,
        "--data.limit", "null", "--trainer.enable_progress_bar", "false")
    metrics = next(tmp_path.rglob("metrics.csv")).read_text()
    assert "val/acc" in metrics and "train/ce" in metrics
    ck = torch.load(ckpt_of(tmp_path), map_location="cpu", weights_only=True)
    assert ck["state_dict"]["head.weight"].shape == (3, 128)


def test_fit_ddp_two_cpu_processes(folder, tmp_path):
    p = run("train.py", "fit", "--config", "configs/smoke.yaml", "--data.root", folder,
            "--trainer.strategy", "ddp", "--trainer.devices", 2, "--trainer.accelerator", "cpu",
            "--trainer.default_root_dir", tmp_path, "--trainer.logger.init_args.save_dir", tmp_path,
            "--data.limit", "null", "--trainer.enable_progress_bar", "false", timeout=400)
    out = p.stdout + p.stderr
    assert "distributed_backend=gloo" in out and "All distributed processes registered" in out
    assert load_encoder(ckpt_of(tmp_path)).code_dim == 128


# ----------------------------------------------------------------------------- checkpoints

def test_fingerprint_tracks_weights(tmp_path):
    m = ConvAutoencoder(width=4)
    save_encoder(m, tmp_path / "a.pt")
    assert load_encoder(tmp_path / "a.pt").fingerprint == fingerprint(m)
    with torch.no_grad():
        m.encoder.fc.bias.add_(1e-3)
    assert fingerprint(m) != load_encoder(tmp_path / "a.pt").fingerprint


def test_bad_checkpoints_refused(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(50):   # random bytes fail inside the unpickler in many ways (IndexError, KeyError, ...)
        (tmp_path / "garbage.ckpt").write_bytes(rng.integers(0, 256, int(rng.integers(1, 400)), np.uint8).tobytes())
        with pytest.raises(CheckpointError, match="garbage.ckpt"):
            load_encoder(tmp_path / "garbage.ckpt")
    (tmp_path / "garbage.ckpt").write_bytes(b"\x80\x02" + b"\x00" * 20)   # pickle protocol 2, then pops an empty stack
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


# ----------------------------------------------------------------------------- tools

def test_reconstruct_and_decode(trained, folder, tmp_path):
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
    x = np.asarray(Image.open(folder / first).convert("L").resize((64, 64), Image.Resampling.BILINEAR),
                   np.float32) / 255
    want = enc.decode(enc.encode(x[None]))[0]
    assert np.abs(dec - want).max() <= 1 / 255 + 1e-6
    psnr_from_csv = float(lines[1].split(",")[1])
    assert psnr_from_csv == pytest.approx(10 * np.log10(1 / np.mean((x - want) ** 2)), abs=0.05)


def test_decode_rejects_wrong_codes(trained, tmp_path):
    np.save(tmp_path / "c.npy", np.zeros((2, 64), np.float32))
    p = run("train.py", "decode", "--checkpoint", ckpt_of(trained), tmp_path / "c.npy", "-o", tmp_path / "o",
            check=False)
    assert p.returncode == 2 and "64-d codes" in p.stderr and "128" in p.stderr


def test_ssim_matches_skimage():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(1)
    a = rng.random((2, 64, 64))
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
    from encoder.metrics import ssim

    ours = ssim(a, b)
    for i in range(2):
        ref = structural_similarity(a[i], b[i], gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                    data_range=1.0)
        assert ours[i] == pytest.approx(ref, abs=1e-3)


def test_export_onnx_and_pt_give_same_codes(trained, tmp_path):
    import onnxruntime as ort

    ckpt = ckpt_of(trained)
    p = run("train.py", "export", "--checkpoint", ckpt, "-o", tmp_path / "enc.onnx")
    assert json.loads(p.stdout)["max_abs_diff"] < 1e-4
    run("train.py", "export", "--checkpoint", ckpt, "-o", tmp_path / "enc.pt")
    enc, enc_pt = load_encoder(ckpt, "cpu"), load_encoder(tmp_path / "enc.pt", "cpu")
    assert enc.fingerprint == enc_pt.fingerprint
    x = np.random.default_rng(0).random((7, 64, 64)).astype(np.float32)
    sess = ort.InferenceSession(str(tmp_path / "enc.onnx"), providers=["CPUExecutionProvider"])
    onnx_codes = sess.run(["codes"], {"images": x[:, None]})[0]
    np.testing.assert_allclose(onnx_codes, enc.encode(x), atol=1e-4)
    np.testing.assert_array_equal(enc_pt.encode(x), enc.encode(x))


def test_prepare_fashion_mnist_from_idx(tmp_path):
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

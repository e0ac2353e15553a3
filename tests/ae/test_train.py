"""train.py fit through LightningCLI: checkpoints, config, logs, resume, supervised, DDP."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from encoder.ae.inference import load_encoder


def test_fit_writes_checkpoints_config_logs_grid(trained, ckpt_of):
    last, best = ckpt_of(trained), ckpt_of(trained, "best.ckpt")
    run_dir = last.parent.parent
    assert (run_dir / "config.yaml").exists() and "width: 8" in (run_dir / "config.yaml").read_text()
    metrics = (run_dir / "metrics.csv").read_text()
    assert "val/psnr" in metrics and "train/loss" in metrics
    assert (run_dir / "recon_epoch001.png").exists()
    ck = torch.load(last, map_location="cpu", weights_only=True)  # loadable without pickle
    assert ck["epoch"] == 1 and ck["hyper_parameters"]["num_classes"] == 3  # linked from the folder
    enc = load_encoder(best)
    assert enc.code_dim == 128 and len(enc.fingerprint) == 16


def test_resume_from_last(trained, folder, tmp_path, run, ckpt_of):
    last = ckpt_of(trained)
    p = run(
        "train.py",
        "fit",
        "--config",
        "configs/smoke.yaml",
        "--data.root",
        folder,
        "--trainer.default_root_dir",
        tmp_path,
        "--trainer.logger.init_args.save_dir",
        tmp_path,
        "--trainer.max_epochs",
        3,
        "--data.limit",
        "null",
        "--ckpt_path",
        last,
        "--trainer.enable_progress_bar",
        "false",
    )
    assert "Restored all states" in p.stdout + p.stderr
    ck = torch.load(ckpt_of(tmp_path), map_location="cpu", weights_only=True)
    assert ck["epoch"] == 2


def test_print_config_and_unknown_key(folder, run):
    p = run("train.py", "fit", "--config", "configs/fashion_mnist.yaml", "--print_config")
    assert "code_dim: 128" in p.stdout and "checkpoint:" in p.stdout
    p = run("train.py", "fit", "--config", "configs/smoke.yaml", "--model.colour_dim", "3", check=False)
    assert p.returncode != 0 and "colour_dim" in p.stderr


def test_supervised_fit(folder, tmp_path, run, ckpt_of):
    run(
        "train.py",
        "fit",
        "--config",
        "configs/smoke.yaml",
        "--data.root",
        folder,
        "--model.supervised_weight",
        0.5,
        "--trainer.default_root_dir",
        tmp_path,
        "--trainer.logger.init_args.save_dir",
        tmp_path,
        "--data.limit",
        "null",
        "--trainer.enable_progress_bar",
        "false",
    )
    metrics = next(tmp_path.rglob("metrics.csv")).read_text()
    assert "val/acc" in metrics and "train/ce" in metrics
    ck = torch.load(ckpt_of(tmp_path), map_location="cpu", weights_only=True)
    assert ck["state_dict"]["head.weight"].shape == (3, 128)


def test_fit_ddp_two_cpu_processes(folder, tmp_path, run, ckpt_of):
    p = run(
        "train.py",
        "fit",
        "--config",
        "configs/smoke.yaml",
        "--data.root",
        folder,
        "--trainer.strategy",
        "ddp",
        "--trainer.devices",
        2,
        "--trainer.accelerator",
        "cpu",
        "--trainer.default_root_dir",
        tmp_path,
        "--trainer.logger.init_args.save_dir",
        tmp_path,
        "--data.limit",
        "null",
        "--trainer.enable_progress_bar",
        "false",
        timeout=400,
    )
    out = p.stdout + p.stderr
    assert "distributed_backend=gloo" in out and "All distributed processes registered" in out
    assert load_encoder(ckpt_of(tmp_path)).code_dim == 128


def test_fit_with_the_issue_15_settings(folder, tmp_path, run, ckpt_of):
    # tone-standardised, whitened codes; strong augmentations in the two-view term, varied batches, a small
    # folder repeated to 6 batches an epoch: the path configs/default.yaml takes, at smoke size
    p = run(
        "train.py",
        "fit",
        "--config",
        "configs/smoke.yaml",
        "--data.root",
        folder,
        "--data.limit",
        "null",
        "--model.tone",
        "true",
        "--model.whiten",
        "0.5",
        "--model.augment",
        "strong",
        "--model.contrastive_weight",
        "0.01",
        "--model.recon_augment",
        "light",
        "--data.min_steps_per_epoch",
        "6",
        "--data.batch_size",
        "8",
        "--trainer.default_root_dir",
        tmp_path,
        "--trainer.logger.init_args.save_dir",
        tmp_path,
        "--trainer.enable_progress_bar",
        "false",
    )
    assert "augmented copies" in p.stderr  # the PCA start of a small folder
    run_dir = ckpt_of(tmp_path).parent.parent
    metrics = (run_dir / "metrics.csv").read_text()
    assert "val/ntxent" in metrics  # the codes count in validation
    ck = torch.load(ckpt_of(tmp_path), map_location="cpu", weights_only=True)
    assert ck["global_step"] == 7  # 29 images < 6 batches of 8: drawn twice, 58 rows, 7 batches
    model = load_encoder(ckpt_of(tmp_path, "best.ckpt")).model
    assert model.tone and model.whitened and model.config["tone"] is True
    x = torch.rand(4, 1, 64, 64)
    with torch.no_grad():  # the handed-out (whitened) code decodes as the raw one does
        assert torch.allclose(
            model.decode(model.encode(x)), model.decoder.raw(model.encoder.raw(x)).clamp(0, 1), atol=1e-4
        )


def _photo_crops(root, skimage_data, n: int = 40):
    """``n`` flat-folder photos: seeded 160-320 px crops of scikit-image's RGB sample photos."""
    from PIL import Image

    rng = np.random.default_rng(0)
    names = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "retina.jpg")
    photos = [Image.open(skimage_data / n_).convert("RGB") for n_ in names]
    root.mkdir(parents=True)
    for i in range(n):
        im = photos[i % len(photos)]
        side = int(rng.integers(160, min(im.size)))
        x, y = (int(rng.integers(0, s - side + 1)) for s in im.size)
        im.crop((x, y, x + side, y + side)).save(root / f"{i:03d}.jpg", quality=90)
    return root


def test_default_config_trains_a_small_folder_past_its_start(skimage_data, tmp_path, run, ckpt_of):
    # configs/default.yaml as a user runs it on a small photo folder (a smaller batch and epoch to run fast):
    # the validation loss wavers while the learning rate is high after the PCA start; the run goes on and
    # its best checkpoint is a trained one, below the start
    folder = _photo_crops(tmp_path / "photos", skimage_data, n=48)
    run(
        "train.py",
        "fit",
        "--config",
        "configs/default.yaml",
        "--data.root",
        folder,
        "--data.batch_size",
        32,
        "--data.min_steps_per_epoch",
        10,
        "--trainer.max_epochs",
        10,
        "--trainer.default_root_dir",
        tmp_path / "run",
        "--trainer.logger.init_args.save_dir",
        tmp_path / "run",
        "--trainer.enable_progress_bar",
        "false",
    )
    rows = list(csv.DictReader(open(next((tmp_path / "run").rglob("metrics.csv")))))
    val = {int(r["epoch"]): float(r["val/loss"]) for r in rows if r.get("val/loss")}
    assert max(val) == 9  # no stop before the end: patience counts from the schedule's middle (epoch 5)
    best = torch.load(ckpt_of(tmp_path / "run", "best.ckpt"), map_location="cpu", weights_only=True)
    assert best["epoch"] > 0, val
    assert val[best["epoch"]] < val[0] and val[best["epoch"]] == min(val.values()), val


class _ScriptedLoss(pl.LightningModule):
    """A module whose validation loss per epoch is ``curve[epoch]``: the shape of a small folder's run."""

    def __init__(self, curve):
        super().__init__()
        self.curve, self.w = curve, torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        return (self.w - 1).pow(2).sum()

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", float(self.curve[self.current_epoch]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_early_stopping_waits_for_the_schedule_then_counts_patience():
    from torch.utils.data import DataLoader, TensorDataset

    from encoder.cli.fit import ScheduledEarlyStopping

    # rises for 5 epochs after the start, recovers below it at epoch 7, then flattens
    curve = [1.0, 1.1, 1.3, 1.2, 1.25, 1.15, 1.05, 0.9, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8]
    data = DataLoader(TensorDataset(torch.zeros(4, 1)), batch_size=1)  # 4 steps an epoch

    def fit(min_fraction):
        stop = ScheduledEarlyStopping(monitor="val/loss", patience=3, min_fraction=min_fraction)
        trainer = pl.Trainer(
            max_epochs=len(curve), callbacks=[stop], logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False,
        )  # fmt: skip
        trainer.fit(_ScriptedLoss(curve), data, data)
        return trainer.current_epoch, round(float(stop.best_score), 4)

    assert fit(0.0) == (4, 1.0)  # plain patience: stops in the rise, the start is its best
    # no check before half the 80 steps (the end of epoch 9: best 0.8), then 3 epochs without a gain
    assert fit(0.5) == (13, 0.8)
    with pytest.raises(ValueError, match="min_fraction"):
        ScheduledEarlyStopping(monitor="val/loss", min_fraction=1.5)

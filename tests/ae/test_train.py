"""train.py fit through LightningCLI: checkpoints, config, logs, resume, supervised, DDP."""

from __future__ import annotations

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

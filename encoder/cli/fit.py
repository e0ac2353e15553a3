"""The Lightning half of train.py: LightningCLI with the toolkit's callbacks and atomic checkpoints.

Imported only when a Lightning subcommand runs (``fit``, ``validate``, ``test``, ``predict``):
``import pytorch_lightning`` alone takes 5 s, which ``train.py --help`` and the tools never pay.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.plugins.io import TorchCheckpointIO

from encoder.ae.datamodule import ImageFolderDataModule
from encoder.ae.lit import AutoencoderModule, ReconstructionGrid
from encoder.atomic import save_torch


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file, fsynced, then renamed; loaded weights-only."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        save_torch(path, checkpoint)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict[str, Any]:
        from encoder.ae.inference import CheckpointError, read_checkpoint

        try:
            return read_checkpoint(path)
        except CheckpointError as e:
            raise SystemExit(f"error: {e}") from None


class BestAndLastCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose ``last.ckpt`` is refreshed at every validation, improved or not
    (Lightning's own writes ``last`` only when a best checkpoint is written), so resuming
    always continues from the latest epoch."""

    def _refresh_last(self, trainer) -> None:
        if (
            self.save_last
            and not self._should_skip_saving_checkpoint(trainer)
            and self._last_global_step_saved != trainer.global_step
        ):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)  # best (top-k) first, then last
        if self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)


class ScheduledEarlyStopping(EarlyStopping):
    """EarlyStopping that starts counting only once ``min_fraction`` of the run's steps are done.

    After the PCA start the validation loss first rises while the learning rate is high, and
    falls below the start's only as the cosine schedule decays; a small folder (20 steps an
    epoch) ran out of plain patience before that and kept epoch 0 as its best checkpoint.

    Args:
        min_fraction: share of ``trainer.estimated_stepping_batches`` (the schedule's length) before
            which no stopping check is made, so ``patience`` counts from there (0 = plain EarlyStopping).
    """

    def __init__(self, *args, min_fraction: float = 0.5, **kwargs):
        if not 0 <= min_fraction <= 1:
            raise ValueError(f"min_fraction must be in [0, 1], got {min_fraction}")
        super().__init__(*args, **kwargs)
        self.min_fraction = min_fraction

    def _run_early_stopping_check(self, trainer) -> None:
        total = trainer.estimated_stepping_batches  # inf for a run without max_epochs/max_steps: no wait
        if math.isfinite(total) and trainer.global_step < self.min_fraction * total:
            return
        super()._run_early_stopping_check(trainer)


class TrainCLI(LightningCLI):
    """LightningCLI with the toolkit's callbacks configurable under their own keys."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(BestAndLastCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/loss",
                "checkpoint.mode": "min",
                "checkpoint.save_last": True,
                "checkpoint.save_top_k": 1,
                "checkpoint.filename": "best",
            }
        )
        parser.add_lightning_class_args(ScheduledEarlyStopping, "early_stopping")
        # checked after validation (not at train-epoch end), where val/loss always exists, resume included
        parser.set_defaults(
            {
                "early_stopping.monitor": "val/loss",
                "early_stopping.patience": 5,
                "early_stopping.mode": "min",
                "early_stopping.check_on_train_epoch_end": False,
                "early_stopping.min_fraction": 0.5,
            }
        )
        parser.add_lightning_class_args(ReconstructionGrid, "recon_grid")
        parser.link_arguments("data.image_size", "model.image_size")
        parser.link_arguments("data", "model.num_classes", compute_fn=lambda dm: dm.num_classes, apply_on="instantiate")

    def instantiate_trainer(self, **kwargs):
        plugins = self.config_init[self.subcommand]["trainer"].get("plugins") if self.subcommand else None
        if not plugins:
            kwargs.setdefault("plugins", [AtomicCheckpointIO()])
        return super().instantiate_trainer(**kwargs)


def run_lightning(args: list[str] | None = None) -> TrainCLI:
    torch.set_float32_matmul_precision("high")
    return TrainCLI(
        AutoencoderModule,
        ImageFolderDataModule,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        args=args,
        parser_kwargs={"default_env": False},
    )

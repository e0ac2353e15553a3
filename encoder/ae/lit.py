"""Lightning training logic: the autoencoder LightningModule, its loss terms, a callback.

The torch modules live in :mod:`encoder.ae.model`, the image-folder DataModule in
:mod:`encoder.ae.datamodule`; this file only adds training.

* :class:`AutoencoderModule` trains with MSE (what PSNR measures), AdamW and a warm-up +
  cosine schedule. The loss is the sum of the entries of :data:`LOSS_TERMS`, each weighted by
  one hyper-parameter:

  - ``reconstruction`` (weight 1): MSE of the unclamped decoder output.
  - ``contrastive`` (``contrastive_weight``): a self-supervised term that needs no labels:
    each image and a randomly shifted copy of it must have the most similar codes in the batch
    (NT-Xent, as in SimCLR, on the code itself), so that codes group by content rather than
    by exact pixel position, which is what top-5 retrieval asks of them.
  - ``supervised`` (``supervised_weight``): a classification head on the code (cross-entropy)
    so that codes group by class.

  Adding a loss term touches this file only (plus its test): write a function
  ``term(module, step) -> (loss, {name: value to log}) | None`` and append
  ``LossTerm("name", "its_weight_hparam", term)`` to :data:`LOSS_TERMS` with that weight
  as a new ``AutoencoderModule`` argument (default 0 keeps old runs unchanged).
  Prediction is not here: :class:`encoder.ae.shards.PredictModule` runs a loaded model.
* :class:`ReconstructionGrid` writes originals over reconstructions each validation epoch.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from encoder.ae.augment import PRESETS, augment
from encoder.ae.model import DEFAULT_WIDTH, ConvAutoencoder
from encoder.ae.recon import save_grid
from encoder.metrics import psnr

# ----------------------------------------------------------------------------- model


def to_input(batch: torch.Tensor, channels_last: bool = True) -> torch.Tensor:
    """uint8 ``(N,S,S)``/``(N,1,S,S)`` or float batch -> float ``(N,1,S,S)`` in [0,1]."""
    x = batch if batch.ndim == 4 else batch.unsqueeze(1)
    x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def random_shift(x: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Shift each image of ``(N,1,S,S)`` by its own random offset in ``[-max_shift, max_shift]``
    pixels on each axis, filling with zeros (uses the torch RNG, so runs are seeded)."""
    if max_shift <= 0:
        return x
    n, c, h, w = x.shape
    xp = F.pad(x, (max_shift, max_shift, max_shift, max_shift))
    oy = torch.randint(0, 2 * max_shift + 1, (n,), device=x.device)
    ox = torch.randint(0, 2 * max_shift + 1, (n,), device=x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chans = torch.arange(c, device=x.device)[None, :, None, None]
    return xp[batch, chans, rows, cols]


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric NT-Xent (SimCLR): row i of ``a`` must be most similar (cosine) to row i of ``b``."""
    a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    sim = a @ b.T / temperature
    target = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(sim, target) + F.cross_entropy(sim.T, target))


LINEAR_PATH = {f"model.{part}.linear.{w}" for part in ("encoder", "decoder") for w in ("weight", "bias")}


@dataclass
class Step:
    """What every loss term sees of one batch: inputs ``x`` (N,1,S,S) float in [0,1], their
    ``code`` (N,D), the unclamped decoder output ``raw`` (N,1,S,S), ``labels`` (N,) int64
    (-1 = unlabelled) and the ``stage`` ("train" or "val")."""

    x: torch.Tensor
    code: torch.Tensor
    raw: torch.Tensor
    labels: torch.Tensor
    stage: str


def reconstruction_term(module: AutoencoderModule, step: Step) -> tuple[torch.Tensor, dict]:
    """MSE of the raw decoder output (what PSNR measures), plus the PSNR of the clamped one."""
    mse = F.mse_loss(step.raw, step.x)
    recon = step.raw.detach().clamp(0, 1)
    return mse, {"mse": mse, "psnr": psnr(recon, step.x, per_image=True).mean()}


def contrastive_term(module: AutoencoderModule, step: Step) -> tuple[torch.Tensor, dict] | None:
    """NT-Xent between the codes of the first ``contrastive_fraction`` of the batch and of a
    randomly shifted or augmented copy. With augmentations it counts in the validation loss too
    (seeded views); the shift-only term is for training only, as it always was."""
    hp, x, code = module.hparams, step.x, step.code
    if len(x) < 2 or (step.stage != "train" and hp.augment == "shift"):
        return None
    k = max(2, int(len(x) * hp.contrastive_fraction))
    preset = PRESETS[hp.augment]
    # validation draws the same views every epoch (a seeded generator), so the validation loss,
    # which early stopping and the best checkpoint follow, measures the codes as well as the pixels
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else [], enabled=step.stage != "train"):
        if step.stage != "train":
            torch.manual_seed(len(x))
        view = to_input(random_shift(x[:k], hp.shift) if preset is None else augment(x[:k], preset), hp.channels_last)
    c = module.model.content_dim  # the tone entries are measured, not learned: left out
    centre = code[:, :c].mean(0).detach()
    nt = nt_xent(code[:k, :c] - centre, module.model.encoder.raw(view)[:, :c] - centre, hp.temperature)
    return nt, {"ntxent": nt}


def supervised_term(module: AutoencoderModule, step: Step) -> tuple[torch.Tensor, dict] | None:
    """Cross-entropy of the class head on the code, on batches with at least one label."""
    if module.head is None or not (step.labels >= 0).any():
        return None
    logits = module.head(step.code)
    ce = F.cross_entropy(logits, step.labels, ignore_index=-1)
    return ce, {"ce": ce, "acc": (logits.argmax(1) == step.labels).float().mean()}


@dataclass(frozen=True)
class LossTerm:
    """One summand of the training loss: ``weight`` names the hyper-parameter weighting it
    (None: weight 1, the first term); a weight of 0 switches the term off."""

    name: str
    weight: str | None
    compute: Callable[[AutoencoderModule, Step], tuple[torch.Tensor, dict] | None]


#: The loss, in the order the terms are added (and their random numbers drawn).
LOSS_TERMS: tuple[LossTerm, ...] = (
    LossTerm("reconstruction", None, reconstruction_term),
    LossTerm("contrastive", "contrastive_weight", contrastive_term),
    LossTerm("supervised", "supervised_weight", supervised_term),
)


def _check_hparams(
    *,
    supervised_weight: float,
    num_classes: int,
    contrastive_weight: float,
    shift: int,
    temperature: float,
    contrastive_fraction: float,
) -> None:
    if contrastive_weight < 0 or supervised_weight < 0:
        raise ValueError(
            f"contrastive_weight and supervised_weight must be >= 0, got {contrastive_weight}, {supervised_weight}"
        )
    if not 0 < contrastive_fraction <= 1:
        raise ValueError(f"contrastive_fraction must be in (0, 1], got {contrastive_fraction}")
    if temperature <= 0 or shift < 0:
        raise ValueError(f"temperature must be > 0 and shift >= 0, got {temperature}, {shift}")
    if supervised_weight > 0 and num_classes < 2:
        raise ValueError(
            f"supervised_weight={supervised_weight} needs a folder with class subfolders "
            f"(num_classes >= 2), got num_classes={num_classes}"
        )


class AutoencoderModule(pl.LightningModule):
    """Trains :class:`encoder.ae.model.ConvAutoencoder`.

    Args:
        code_dim: length of the code (128 in the design).
        width: channels of the first conv stage (16 trains at > 500 images/s on 2 CPU cores).
        image_size: input side (64).
        lr: peak learning rate (AdamW, warm-up then cosine decay).
        weight_decay: AdamW weight decay.
        supervised_weight: weight of the class cross-entropy on the code; 0 = unsupervised.
        num_classes: classes for the supervised head (LightningCLI links it from the data).
        channels_last: use the channels-last memory format (faster convolutions on CPU).
        pca_init: start from PCA of (up to 20,000) training images: the linear path of the model
            is set to PCA and the conv path learns the rest (see ConvAutoencoder.init_linear_from_data).
        linear_lr_scale: learning-rate factor for the linear (PCA) path, so training refines it
            slowly instead of undoing the initialisation.
        contrastive_weight: weight of the self-supervised NT-Xent term on the code (0 = plain
            autoencoder). Small on purpose: it reorders neighbours without costing much PSNR
            (figures in bench/autoencoder_bench.py).
        shift: largest random shift in pixels (each axis) of the second view for that term.
        temperature: NT-Xent temperature.
        contrastive_fraction: share of each batch that gets a second view (the term costs one
            more encoder pass over that share).
        augment: the second view of that term: "shift" (a random shift of up to ``shift``
            pixels) or a preset of :mod:`encoder.ae.augment` ("light", "strong": crops with
            aspect changes, flips, rotation, tone curves, blur, resizing, noise, banners).
        tone: standardise each image (mean 0, contrast 1) before encoding and keep its mean and
            contrast as the last two code entries (the decoder restores them exactly): codes
            compare pictures, not exposures.
        tone_weight: the weight of those two entries in code distances (after whitening), as a
            share of one content entry's spread.
        recon_augment: "none", or a preset of :mod:`encoder.ae.augment` applied to the training
            batches themselves (and to the PCA start of a folder under 2,000 images): a small
            folder seen in ever new crops and tones stops being memorised by epoch 5.
        whiten: partial whitening of the codes handed out (0 = none, 0.5 = divide each principal
            direction by the 4th root of its variance; see :meth:`ConvAutoencoder.set_whitening`).
    """

    def __init__(
        self,
        code_dim: int = 128,
        width: int = DEFAULT_WIDTH,
        image_size: int = 64,
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        supervised_weight: float = 0.0,
        num_classes: int = 0,
        channels_last: bool = True,
        pca_init: bool = True,
        linear_lr_scale: float = 0.02,
        contrastive_weight: float = 0.001,
        shift: int = 3,
        temperature: float = 0.2,
        contrastive_fraction: float = 0.5,
        augment: str = "shift",
        whiten: float = 0.0,
        tone: bool = False,
        tone_weight: float = 0.1,
        recon_augment: str = "none",
    ):
        super().__init__()
        _check_hparams(
            supervised_weight=supervised_weight,
            num_classes=num_classes,
            contrastive_weight=contrastive_weight,
            shift=shift,
            temperature=temperature,
            contrastive_fraction=contrastive_fraction,
        )
        if not 0 <= whiten <= 1 or tone_weight < 0:
            raise ValueError(f"whiten must be in [0, 1] and tone_weight >= 0, got {whiten}, {tone_weight}")
        if augment not in PRESETS:
            raise ValueError(f"augment must be one of {sorted(PRESETS)}, got {augment!r}")
        if recon_augment != "none" and PRESETS.get(recon_augment) is None:
            raise ValueError(
                f"recon_augment must be 'none' or one of {sorted(k for k, v in PRESETS.items() if v)}, "
                f"got {recon_augment!r}"
            )
        self.save_hyperparameters()
        self.model = ConvAutoencoder(code_dim, width, image_size, tone)
        self.head = torch.nn.Linear(code_dim, num_classes) if supervised_weight > 0 else None
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(N,1,S,S)`` in [0,1] -> codes ``(N, code_dim)``."""
        return self.model.encode(x)

    def on_fit_start(self) -> None:
        """PCA initialisation on a fresh run (not on resume); every DDP rank computes the same."""
        dm = self.trainer.datamodule
        if (
            self.hparams.pca_init
            and self.trainer.ckpt_path is None
            and self.global_step == 0
            and dm is not None
            and getattr(dm, "images", None) is not None
        ):
            rows = dm.train_rows[:20000]
            x = to_input(dm.images[rows], False).to(self.device)
            if self.hparams.recon_augment != "none" and len(rows) < 2000:  # a small folder: PCA of varied copies
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(0)
                    copies = x.repeat(-(-2000 // len(x)) - 1, 1, 1, 1)
                    x = torch.cat([x, augment(copies, PRESETS[self.hparams.recon_augment])])
            share = self.model.init_linear_from_data(x)
            if self.trainer.is_global_zero:
                copies = " and augmented copies" if len(x) > len(rows) else ""
                print(
                    f"PCA initialisation on {len(x)} images ({len(rows)} training images{copies}): "
                    f"{share:.1%} of variance in the code",
                    file=sys.stderr,
                )

    @torch.no_grad()
    def refresh_whitening(self) -> None:
        """Set the model's code whitening (power ``whiten``) from the raw codes of up to 10,000
        training images; runs after every validation (before checkpoints are written) and at
        the end of each training epoch, so every checkpoint holds the whitening of its weights."""
        dm = self.trainer.datamodule if self._trainer is not None else None
        if (
            not self.hparams.whiten
            or dm is None
            or getattr(dm, "images", None) is None
            or getattr(self, "_whitened_at", None) == self.global_step
        ):
            return
        was_training = self.training
        self.eval()
        rows = dm.train_rows[:10000]
        codes = torch.cat(
            [
                self.model.encoder.raw(
                    to_input(dm.images[rows[i : i + 1024]], self.hparams.channels_last).to(self.device)
                )
                for i in range(0, len(rows), 1024)
            ]
        )
        self.model.set_whitening(codes, self.hparams.whiten, self.hparams.tone_weight)
        self.train(was_training)
        self._whitened_at = self.global_step

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.refresh_whitening()

    def on_train_epoch_end(self) -> None:
        self.refresh_whitening()

    def _step(self, batch, stage: str) -> torch.Tensor:
        """The weighted sum of :data:`LOSS_TERMS`; logs each term's values and the total."""
        images, labels = batch
        x = to_input(images, self.hparams.channels_last)
        if stage == "train" and self.hparams.recon_augment != "none":  # varied copies for small folders
            x = to_input(augment(x, PRESETS[self.hparams.recon_augment]), self.hparams.channels_last)
        code = self.model.encoder.raw(x)
        step = Step(x, code, self.model.decoder.raw(code), labels, stage)
        loss, log = None, {}
        for term in LOSS_TERMS:
            weight = 1.0 if term.weight is None else self.hparams[term.weight]
            out = term.compute(self, step) if weight > 0 else None
            if out is None:
                continue
            value, logged = out
            loss = value if loss is None else loss + weight * value
            log.update({f"{stage}/{k}": v for k, v in logged.items()})
        log[f"{stage}/loss"] = loss
        self.log_dict(
            log,
            prog_bar=stage == "val" or None,
            on_epoch=True,
            on_step=stage == "train",
            batch_size=len(images),
            sync_dist=stage == "val",
        )
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def configure_optimizers(self):
        """AdamW with linear warm-up then cosine decay to 1% over the run.

        The schedule is a plain function of the step (not stored in checkpoints), so resuming
        with a larger ``max_epochs`` stretches it instead of failing; past its end it stays at 1%.
        """
        lin = [p for n, p in self.named_parameters() if n in LINEAR_PATH]
        rest = [p for n, p in self.named_parameters() if n not in LINEAR_PATH]
        groups = [
            {"params": rest, "lr": self.hparams.lr},
            {"params": lin, "lr": self.hparams.lr * self.hparams.linear_lr_scale},
        ]
        opt = torch.optim.AdamW(groups, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warm = max(1, min(200, total // 10))

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            t = min(1.0, (step - warm) / max(1, total - warm))
            return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


# ----------------------------------------------------------------------------- callbacks


class ReconstructionGrid(pl.Callback):
    """Saves ``recon_epoch<NNN>.png`` (originals over reconstructions) in the log dir each epoch."""

    def __init__(self, n: int = 16):
        super().__init__()
        self.n = n

    def on_validation_epoch_end(self, trainer: pl.Trainer, module: AutoencoderModule) -> None:
        if trainer.sanity_checking:
            return
        log_dir = trainer.log_dir or trainer.default_root_dir  # a collective call: every rank runs it
        if not trainer.is_global_zero or trainer.datamodule is None:
            return
        dm = trainer.datamodule
        if getattr(dm, "images", None) is None or len(dm.val_rows) == 0:
            return
        rows = dm.val_rows[: self.n]
        x = to_input(dm.images[rows], module.hparams.channels_last).to(module.device)
        was_training = module.training
        module.eval()
        with torch.no_grad():
            recon, _ = module.model(x)
        module.train(was_training)
        out = Path(log_dir) / f"recon_epoch{trainer.current_epoch:03d}.png"
        save_grid(x.squeeze(1).cpu().numpy(), recon.squeeze(1).float().cpu().numpy(), out)

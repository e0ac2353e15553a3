"""Lightning wrappers: the image-folder DataModule, the autoencoder LightningModule, callbacks.

The torch modules live in :mod:`encoder.autoencoder`; this file only adds training logic.

* :class:`ImageFolderDataModule` scans a folder recursively with the shared loader
  (:func:`encoder.data.scan_folder`), decodes every image once to 64x64 grey (``cache=True``,
  in worker processes, with a progress bar) and keeps them as a uint8 tensor, so an epoch
  costs no decoding. Unreadable files are reported by name and skipped. When every image sits
  in a class subfolder (``root/<class>/...``) the subfolder names are the labels.
* :class:`AutoencoderModule` trains with MSE (what PSNR measures), AdamW and a warm-up +
  cosine schedule. ``contrastive_weight > 0`` adds a self-supervised term that needs no labels:
  each image and a randomly shifted copy of it must have the most similar codes in the batch
  (NT-Xent, as in SimCLR, on the code itself), so that codes group by content rather than by
  exact pixel position, which is what top-5 retrieval asks of them.
  ``supervised_weight > 0`` adds a classification head on the code (cross-entropy
  weighted against the reconstruction loss) so that codes group by class.
  ``predict_step`` returns ``{"codes", "index", "valid"}`` for the code-shard writer.
* :class:`ReconstructionGrid` writes originals over reconstructions each validation epoch.
"""
from __future__ import annotations

import math
import os
import sys
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

from encoder.autoencoder import ConvAutoencoder
from encoder.data import ImageLoadError, load_gray, report_skipped, scan_folder


# ----------------------------------------------------------------------------- data

def _decode_u8(args: tuple[str, int]) -> tuple[np.ndarray | None, str | None]:
    path, size = args
    try:
        return (load_gray(path, size) * 255.0 + 0.5).astype(np.uint8), None
    except ImageLoadError as e:
        return None, e.reason
    except OSError as e:
        return None, f"cannot read: {e}"


def decoding_workers(workers: int = 0) -> int:
    """Decoding processes to use: ``workers``, or (0) up to 4 by CPU count."""
    return workers or min(4, os.cpu_count() or 1)


def decoding_pool(workers: int = 0):
    """A process pool for :func:`decode_folder` (``workers=0``: up to 4 by CPU count)."""
    workers = decoding_workers(workers)
    return get_context("spawn" if sys.platform == "darwin" else "fork").Pool(workers)


def decode_folder(paths: list[Path], size: int = 64, workers: int = 0, progress: bool = True,
                  pool=None) -> tuple[np.ndarray, list[int], list[tuple[Path, str]]]:
    """Decode ``paths`` to a ``(M, size, size)`` uint8 array.

    Returns ``(images, kept_rows, skipped)``: ``kept_rows`` are the positions in ``paths`` of the
    M images decoded; ``skipped`` lists ``(path, reason)`` for the others. ``pool`` (from
    :func:`decoding_pool`) is used when given, so that a caller decoding many chunks starts
    its processes once; otherwise 2,000 or more paths get a pool of their own.
    """
    from tqdm import tqdm

    jobs = [(str(p), size) for p in paths]
    workers = decoding_workers(workers)
    bar = dict(total=len(jobs), desc="decoding", unit="img", disable=not progress or len(jobs) < 500,
               file=sys.stderr)
    if pool is not None:
        results = list(tqdm(pool.imap(_decode_u8, jobs, chunksize=256), **bar))
    elif workers > 1 and len(jobs) >= 2000:
        with decoding_pool(workers) as own:
            results = list(tqdm(own.imap(_decode_u8, jobs, chunksize=256), **bar))
    else:
        results = [_decode_u8(j) for j in tqdm(jobs, **bar)]
    images, kept, skipped = [], [], []
    for i, (arr, reason) in enumerate(results):
        if arr is None:
            skipped.append((paths[i], reason))
        else:
            images.append(arr)
            kept.append(i)
    out = np.stack(images) if images else np.zeros((0, size, size), np.uint8)
    return out, kept, skipped


def folder_labels(ids: list[str]) -> tuple[list[int], list[str]]:
    """Labels from class subfolders: ``("a/x.png", "b/y.png") -> ([0, 1], ["a", "b"])``.

    Returns ``([], [])`` when some image is not inside a subfolder (unlabelled folder).
    """
    if not ids or any("/" not in i for i in ids):
        return [], []
    names = sorted({i.split("/", 1)[0] for i in ids})
    lookup = {n: k for k, n in enumerate(names)}
    return [lookup[i.split("/", 1)[0]] for i in ids], names


class ImageFolderDataModule(pl.LightningDataModule):
    """A folder of images (recursive) as 64x64 grey tensors in [0, 1], split train/val.

    Args:
        root: the image folder. Class subfolders (``root/<class>/*.png``) give labels.
        image_size: side of the square grey input (the model's ``image_size``).
        batch_size: images per step.
        val_fraction: share held out for validation (fixed ``seed``); 0 disables validation.
        num_workers: processes decoding the folder once (0 = up to 4 by CPU count).
        seed: split seed.
        limit: use only the first ``limit`` images (sorted by path), for quick runs.
    """

    def __init__(self, root: str = "data/fashion-mnist/train", image_size: int = 64, batch_size: int = 256,
                 val_fraction: float = 0.1, num_workers: int = 0, seed: int = 0, limit: int | None = None):
        super().__init__()
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.root, self.image_size, self.batch_size = root, image_size, batch_size
        self.val_fraction, self.num_workers, self.seed, self.limit = val_fraction, num_workers, seed, limit
        self.images: torch.Tensor | None = None
        self.labels: torch.Tensor | None = None
        self.class_names: list[str] = []
        self.ids: list[str] = []
        self.skipped: list[tuple[Path, str]] = []
        self._scan = None

    def _scan_root(self):
        if self._scan is None:
            self._scan = scan_folder(self.root)
        return self._scan

    @property
    def num_classes(self) -> int:
        """Number of class subfolders (0 for an unlabelled folder); known before ``setup``."""
        return len(folder_labels(self._scan_root().ids)[1])

    def setup(self, stage: str | None = None) -> None:
        if self.images is not None:
            return
        scan = self._scan_root()
        paths = scan.paths[: self.limit] if self.limit else scan.paths
        rank_zero = int(os.environ.get("LOCAL_RANK", 0)) == 0
        images, kept, skipped = decode_folder(paths, self.image_size, self.num_workers, progress=rank_zero)
        self.skipped = list(scan.skipped) + skipped
        if rank_zero and self.skipped:
            report_skipped(self.skipped, limit=50)
        if len(images) == 0:
            raise ValueError(f"no readable images in {self.root} ({len(paths)} image files tried, "
                             f"{len(self.skipped)} skipped): expected a folder of images")
        self.ids = [scan.relative(paths[i]) for i in kept]
        labels, self.class_names = folder_labels(self.ids)
        self.images = torch.from_numpy(images)
        self.labels = torch.tensor(labels if labels else [-1] * len(self.ids), dtype=torch.long)
        g = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(len(self.ids), generator=g)
        n_val = int(round(len(order) * self.val_fraction))
        if self.val_fraction > 0 and len(order) > 1:
            n_val = max(1, n_val)
        self.val_rows, self.train_rows = order[:n_val], order[n_val:]
        if len(self.train_rows) == 0:
            raise ValueError(f"only {len(self.ids)} readable images in {self.root}: too few to train")
        if rank_zero:
            print(f"{self.root}: {len(self.train_rows)} training + {len(self.val_rows)} validation images"
                  f"{f', {len(self.class_names)} classes' if self.class_names else ''}"
                  f"{f', {len(self.skipped)} files skipped' if self.skipped else ''}", file=sys.stderr)

    def _dataset(self, rows: torch.Tensor) -> TensorDataset:
        return TensorDataset(self.images[rows], self.labels[rows])

    def _loader(self, rows, shuffle: bool) -> DataLoader:
        return DataLoader(self._dataset(rows), batch_size=self.batch_size, shuffle=shuffle,
                          drop_last=shuffle and len(rows) > self.batch_size,
                          pin_memory=torch.cuda.is_available())

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_rows, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.val_rows, shuffle=False) if len(self.val_rows) else []

    def predict_dataloader(self) -> DataLoader:
        rows = torch.arange(len(self.ids))
        return DataLoader(TensorDataset(self.images, rows, torch.ones(len(rows), dtype=torch.bool)),
                          batch_size=self.batch_size)


class PathDataset(Dataset):
    """Image files decoded on demand, for prediction over folders too big to cache.

    Items are ``(image (1,S,S) uint8, row, valid)``; an unreadable file gives a zero
    image with ``valid=False`` and its reason in ``self.errors[row]`` (of the worker process).
    """

    def __init__(self, paths: list[str | os.PathLike], image_size: int = 64):
        self.paths = [str(p) for p in paths]
        self.image_size = image_size
        self.errors: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        arr, reason = _decode_u8((self.paths[i], self.image_size))
        if arr is None:
            self.errors[i] = reason
            return torch.zeros(1, self.image_size, self.image_size, dtype=torch.uint8), i, False
        return torch.from_numpy(arr).unsqueeze(0), i, True


# ----------------------------------------------------------------------------- model

def to_input(batch: torch.Tensor, channels_last: bool = True) -> torch.Tensor:
    """uint8 ``(N,S,S)``/``(N,1,S,S)`` or float batch -> float ``(N,1,S,S)`` in [0,1]."""
    x = batch if batch.ndim == 4 else batch.unsqueeze(1)
    x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of images in [0, 1]: ``(N, ...)`` -> ``(N,)`` (100 dB cap for equal images)."""
    mse = (a.float() - b.float()).flatten(1).pow(2).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


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


class AutoencoderModule(pl.LightningModule):
    """Trains :class:`encoder.autoencoder.ConvAutoencoder`.

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
    """

    def __init__(self, code_dim: int = 128, width: int = 16, image_size: int = 64, lr: float = 3e-3,
                 weight_decay: float = 1e-4, supervised_weight: float = 0.0, num_classes: int = 0,
                 channels_last: bool = True, pca_init: bool = True, linear_lr_scale: float = 0.02,
                 contrastive_weight: float = 0.001, shift: int = 3, temperature: float = 0.2,
                 contrastive_fraction: float = 0.5):
        super().__init__()
        if contrastive_weight < 0 or supervised_weight < 0:
            raise ValueError(f"contrastive_weight and supervised_weight must be >= 0, "
                             f"got {contrastive_weight}, {supervised_weight}")
        if not 0 < contrastive_fraction <= 1:
            raise ValueError(f"contrastive_fraction must be in (0, 1], got {contrastive_fraction}")
        if temperature <= 0 or shift < 0:
            raise ValueError(f"temperature must be > 0 and shift >= 0, got {temperature}, {shift}")
        self.save_hyperparameters()
        self.model = ConvAutoencoder(code_dim, width, image_size)
        if supervised_weight > 0 and num_classes < 2:
            raise ValueError(f"supervised_weight={supervised_weight} needs a folder with class subfolders "
                             f"(num_classes >= 2), got num_classes={num_classes}")
        self.head = torch.nn.Linear(code_dim, num_classes) if supervised_weight > 0 else None
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(N,1,S,S)`` in [0,1] -> codes ``(N, code_dim)``."""
        return self.model.encode(x)

    def on_fit_start(self) -> None:
        """PCA initialisation on a fresh run (not on resume); every DDP rank computes the same."""
        dm = self.trainer.datamodule
        if (self.hparams.pca_init and self.trainer.ckpt_path is None and self.global_step == 0
                and dm is not None and getattr(dm, "images", None) is not None):
            rows = dm.train_rows[:20000]
            share = self.model.init_linear_from_data(to_input(dm.images[rows], False).to(self.device))
            if self.trainer.is_global_zero:
                print(f"PCA initialisation on {len(rows)} images: {share:.1%} of variance in the code", file=sys.stderr)

    def _step(self, batch, stage: str) -> torch.Tensor:
        images, labels = batch
        x = to_input(images, self.hparams.channels_last)
        code = self.model.encode(x)
        raw = self.model.decoder(code)
        recon = raw.detach().clamp(0, 1)
        mse = F.mse_loss(raw, x)
        loss = mse
        log = {f"{stage}/mse": mse, f"{stage}/psnr": psnr(recon, x).mean()}
        hp = self.hparams
        if stage == "train" and hp.contrastive_weight > 0:
            k = max(2, int(len(x) * hp.contrastive_fraction))
            if len(x) >= 2:
                view = random_shift(x[:k], hp.shift).contiguous(
                    memory_format=torch.channels_last if hp.channels_last else torch.contiguous_format)
                centre = code.mean(0).detach()
                nt = nt_xent(code[:k] - centre, self.model.encode(view) - centre, hp.temperature)
                loss = loss + hp.contrastive_weight * nt
                log[f"{stage}/ntxent"] = nt
        if self.head is not None and (labels >= 0).any():
            logits = self.head(code)
            ce = F.cross_entropy(logits, labels, ignore_index=-1)
            loss = loss + self.hparams.supervised_weight * ce
            log[f"{stage}/ce"] = ce
            log[f"{stage}/acc"] = (logits.argmax(1) == labels).float().mean()
        log[f"{stage}/loss"] = loss
        self.log_dict(log, prog_bar=stage == "val" or None, on_epoch=True, on_step=stage == "train",
                      batch_size=len(images), sync_dist=stage == "val")
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def predict_step(self, batch, batch_idx, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        images, rows, valid = batch
        codes = self.model.encode(to_input(images, self.hparams.channels_last))
        return {"codes": codes.float().cpu(), "index": rows.long().cpu(), "valid": valid.bool().cpu()}

    def configure_optimizers(self):
        """AdamW with linear warm-up then cosine decay to 1% over the run.

        The schedule is a plain function of the step (not stored in checkpoints), so resuming
        with a larger ``max_epochs`` stretches it instead of failing; past its end it stays at 1%.
        """
        lin = [p for n, p in self.named_parameters() if n in LINEAR_PATH]
        rest = [p for n, p in self.named_parameters() if n not in LINEAR_PATH]
        groups = [{"params": rest, "lr": self.hparams.lr},
                  {"params": lin, "lr": self.hparams.lr * self.hparams.linear_lr_scale}]
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
        log_dir = trainer.log_dir or trainer.default_root_dir   # a collective call: every rank runs it
        if not trainer.is_global_zero or trainer.datamodule is None:
            return
        dm = trainer.datamodule
        if getattr(dm, "images", None) is None or len(dm.val_rows) == 0:
            return
        from encoder.recon import save_grid

        rows = dm.val_rows[: self.n]
        x = to_input(dm.images[rows], module.hparams.channels_last).to(module.device)
        was_training = module.training
        module.eval()
        with torch.no_grad():
            recon, _ = module.model(x)
        module.train(was_training)
        out = Path(log_dir) / f"recon_epoch{trainer.current_epoch:03d}.png"
        save_grid(x.squeeze(1).cpu().numpy(), recon.squeeze(1).float().cpu().numpy(), out)


def checkpoint_payload(model: ConvAutoencoder) -> dict[str, Any]:
    """The minimal, pickle-free encoder file: config + weights (see encoder.codes.save_encoder)."""
    return {"config": model.config, "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}

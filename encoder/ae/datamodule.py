"""The image-folder DataModule: a folder of images as 64x64 grey tensors, split train/val.

The folder is scanned recursively with the shared loader (:func:`encoder.data.scan_folder`),
every image decoded once to 64x64 grey (in worker processes, with a progress bar) and kept as
a uint8 tensor, so an epoch costs no decoding. Unreadable files are reported by name and
skipped. When every image sits in a class subfolder (``root/<class>/...``) the subfolder
names are the labels. :class:`PathDataset` decodes on demand for prediction over folders too
big to cache.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from encoder.data import decode_folder, decode_gray_u8, folder_labels, scan_folder, summarise_skipped, write_skipped


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
        min_steps_per_epoch: a training epoch has at least this many batches: a small folder
            (200 photos are one batch) is drawn again, in a new order each time, so training
            counts in steps and the augmented second views give every repeat new variety;
            early stopping and the learning-rate schedule then see real progress per epoch.
    """

    def __init__(
        self,
        root: str = "data/fashion-mnist/train",
        image_size: int = 64,
        batch_size: int = 256,
        val_fraction: float = 0.1,
        num_workers: int = 0,
        seed: int = 0,
        limit: int | None = None,
        min_steps_per_epoch: int = 20,
    ):
        super().__init__()
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if batch_size < 1 or min_steps_per_epoch < 1:
            raise ValueError(
                f"batch_size and min_steps_per_epoch must be >= 1, got {batch_size}, {min_steps_per_epoch}"
            )
        self.min_steps_per_epoch = min_steps_per_epoch
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

    def _write_skipped(self) -> Path | None:
        """``skipped.csv`` (every skipped file with its reason) in the log folder of the trainer running this."""
        trainer = getattr(self, "trainer", None)
        folder = trainer and (trainer.log_dir or trainer.default_root_dir)
        return write_skipped(Path(folder) / "skipped.csv", self.skipped) if folder else None

    def setup(self, stage: str | None = None) -> None:
        if self.images is not None:
            return
        scan = self._scan_root()
        paths = scan.paths[: self.limit] if self.limit else scan.paths
        rank_zero = int(os.environ.get("LOCAL_RANK", 0)) == 0
        images, kept, skipped = decode_folder(paths, self.image_size, self.num_workers, progress=rank_zero)
        self.skipped = skipped + list(scan.skipped)  # files that failed to decode first, then other names
        if rank_zero and self.skipped:
            summarise_skipped(self.skipped, self._write_skipped())
        if len(images) == 0:
            raise ValueError(
                f"no readable images in {self.root} ({len(paths)} image files tried, "
                f"{len(self.skipped)} skipped): expected a folder of images"
            )
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
            print(
                f"{self.root}: {len(self.train_rows)} training + {len(self.val_rows)} validation images"
                f"{f', {len(self.class_names)} classes' if self.class_names else ''}"
                f"{f', {len(self.skipped)} files skipped' if self.skipped else ''}",
                file=sys.stderr,
            )

    def _dataset(self, rows: torch.Tensor) -> TensorDataset:
        return TensorDataset(self.images[rows], self.labels[rows])

    def _loader(self, rows, shuffle: bool) -> DataLoader:
        draws = self.min_steps_per_epoch * self.batch_size
        if shuffle and len(rows) < draws:  # a small folder: repeated (the shuffle mixes the repeats)
            rows = rows.repeat(-(-draws // len(rows)))
        return DataLoader(
            self._dataset(rows),
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=shuffle and len(rows) > self.batch_size,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_rows, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.val_rows, shuffle=False) if len(self.val_rows) else []

    def predict_dataloader(self) -> DataLoader:
        """Every cached image as ``(image, row, valid=True, reason="")``, the items of :class:`PathDataset`."""
        return DataLoader(_CachedImages(self.images), batch_size=self.batch_size)


class _CachedImages(Dataset):
    """Decoded images as prediction items: all readable, so ``valid`` is True and no reason."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, bool, str]:
        return self.images[i], i, True, ""


class PathDataset(Dataset):
    """Image files decoded on demand, for prediction over folders too big to cache.

    Items are ``(image (1,S,S) uint8, row, valid, reason)``; an unreadable file gives a zero
    image, ``valid=False`` and why it failed in ``reason`` (``""`` for a readable one). The
    reason travels in the batch because items are made in DataLoader worker processes, whose
    state the main process never sees.

    Example:
        >>> PathDataset(["missing.png"])[0][1:]                          # doctest: +SKIP
        (0, False, 'file not found')
    """

    def __init__(self, paths: list[str | os.PathLike], image_size: int = 64):
        self.paths = [str(p) for p in paths]
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, bool, str]:
        arr, reason = decode_gray_u8((self.paths[i], self.image_size))
        if arr is None:
            return torch.zeros(1, self.image_size, self.image_size, dtype=torch.uint8), i, False, str(reason)
        return torch.from_numpy(arr).unsqueeze(0), i, True, ""

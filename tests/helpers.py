"""Small, seeded test data shared by several test files (imported as ``helpers``).

Fixtures shared across folders live in ``tests/conftest.py``; plain functions that build data
on disk live here so a test can call them with its own arguments.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from encoder.ae.inference import save_encoder
from encoder.ae.model import ConvAutoencoder


def write_idx(path: Path, arr: np.ndarray) -> None:
    """An IDX file (the Fashion-MNIST format), gzipped."""
    header = struct.pack(">HBB", 0, 8, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    """An untrained but deterministic small autoencoder saved as an encoder file."""
    torch.manual_seed(seed)
    save_encoder(ConvAutoencoder(code_dim=128, width=8, image_size=64).eval(), path)
    return path


def class_folder(root: Path, per_class: int = 8, seed: int = 0) -> Path:
    """root/<class>/NN.png: three visually distinct classes (gradients across, down, rings) + noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:40, 0:48].astype(np.float64)
    patterns = {"across": xx / 47, "down": yy / 39, "rings": 0.5 + 0.5 * np.cos(np.hypot(yy - 20, xx - 24) / 2.5)}
    for name, base in patterns.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            g = np.clip(base * 200 + 25 + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
            tint = rng.integers(0, 40, 3)
            rgb = np.clip(np.dstack([g + t for t in tint]), 0, 255).astype(np.uint8)
            Image.fromarray(rgb).save(root / name / f"{i:02d}.png")
    return root


def tiny_fashion(src: Path, n_train: int = 200, n_test: int = 60) -> Path:
    """IDX files shaped like Fashion-MNIST: 10 classes, each a distinct bar pattern plus noise."""
    src.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        imgs = rng.integers(0, 40, (n, 28, 28))
        for i, c in enumerate(labels):
            imgs[i, 2 + 2 * c : 6 + 2 * c, 4:24] = 230  # a bar whose height encodes the class
        write_idx(src / f"{prefix}-images-idx3-ubyte.gz", imgs)
        write_idx(src / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return src


def photo(w: int = 320, h: int = 240, seed: int = 0) -> Image.Image:
    """A smooth, photo-like RGB picture (blurred noise: every region looks different)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)

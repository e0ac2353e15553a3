"""Fixtures of the job tests: a small seeded image folder (photos, drawings, broken files) and a tiny model."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # job_faults: task wrappers that a Ray worker imports by name too

PHOTOS = ("astronaut.png", "camera.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png")


def make_folder(root: Path, skimage_data: Path) -> Path:
    """30 readable images (photos resized, in a subfolder too, seeded noise and drawings), 2 broken files
    and a text file."""
    rng = np.random.default_rng(0)
    (root / "sub").mkdir(parents=True)
    for k, name in enumerate(PHOTOS):
        im = Image.open(skimage_data / name).convert("RGB")
        im.resize((160, 120)).save(root / f"photo_{k}.jpg", quality=90)
        im.resize((96, 96)).rotate(90 * (k % 4)).save(root / "sub" / f"photo_{k}.png")
    for k in range(18):
        a = rng.integers(0, 256, (48 + k, 64, 3), dtype=np.uint8)
        a[:, : 8 + k] = 255 - k * 10
        Image.fromarray(a).save(root / f"drawing_{k:02d}.png")
    (root / "broken.jpg").write_bytes(b"not an image at all")
    data = (root / "photo_0.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def photos(tmp_path_factory, skimage_data) -> Path:
    """10 pictures whose median short side (>= 300 px) makes ``views="auto"`` pick crops: the photos at
    their own size (JPEG, and PNG turned a quarter in a subfolder), 2 thumbnails, a broken file."""
    root = tmp_path_factory.mktemp("photos") / "photos"
    (root / "sub").mkdir(parents=True)
    for k, name in enumerate(PHOTOS[:4]):
        im = Image.open(skimage_data / name).convert("RGB")
        im.save(root / f"photo_{k}.jpg", quality=90)
        im.rotate(90, expand=True).save(root / "sub" / f"photo_{k}.png")
    for k, name in enumerate(PHOTOS[4:]):
        Image.open(skimage_data / name).convert("RGB").resize((120, 80)).save(root / f"thumb_{k}.png")
    (root / "broken.jpg").write_bytes(b"not an image at all")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory, skimage_data) -> Path:
    return make_folder(tmp_path_factory.mktemp("images") / "imgs", skimage_data)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A small untrained autoencoder saved as an exported .pt (seeded)."""
    import torch

    from encoder.ae.inference import save_encoder
    from encoder.ae.model import ConvAutoencoder

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "m.pt"
    save_encoder(ConvAutoencoder(code_dim=16, width=8, image_size=64), str(path))
    return path

"""encoder.ae.datamodule: the cached image-folder DataModule and PathDataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from encoder.ae.datamodule import ImageFolderDataModule, PathDataset
from encoder.data import folder_labels


def test_folder_labels():
    assert folder_labels(["b/1.png", "a/2.png", "b/3.png"]) == ([1, 0, 1], ["a", "b"])
    assert folder_labels(["x.png", "a/2.png"]) == ([], [])


def test_datamodule_split_labels_and_bad_files(tmp_path, capsys, make_folder):
    root = make_folder(tmp_path / "d", n_per_class=5)
    (root / "circle" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (root / "square" / "empty.jpg").write_bytes(b"")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "square" / "tiny.png")  # < 64x64 is upsampled
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
    images, rows, valid, reasons = next(iter(dm.predict_dataloader()))  # the items of PathDataset
    assert images.shape == (4, 64, 64) and rows.tolist() == [0, 1, 2, 3]
    assert valid.all() and list(reasons) == [""] * 4


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


def test_path_dataset_carries_the_reason_in_the_item(tmp_path, folder):
    # the reason travels with the batch (it used to be kept in a dict of the worker process)
    good = sorted(folder.rglob("*.png"))[0]
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    ds = PathDataset([good, tmp_path / "bad.png"])
    assert not hasattr(ds, "errors")
    img, row, ok, why = ds[0]
    assert img.shape == (1, 64, 64) and img.dtype == torch.uint8 and (row, ok, why) == (0, True, "")
    img, row, ok, why = ds[1]
    assert (row, ok) == (1, False) and why and img.sum() == 0
    # through a worker process, as predict_codes loads them
    images, rows, valid, reasons = next(iter(DataLoader(ds, batch_size=2, num_workers=1)))
    assert rows.tolist() == [0, 1] and valid.tolist() == [True, False] and reasons[1] == why


def test_a_small_folder_is_repeated_to_min_steps_per_epoch(tmp_path, make_folder):
    # issue 15: a 200-photo folder was one batch an epoch and early stopping ended the run at epoch 5
    root = make_folder(tmp_path / "d", n_per_class=4)  # 12 images
    dm = ImageFolderDataModule(str(root), batch_size=4, val_fraction=0.25, min_steps_per_epoch=5)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert len(dm.train_rows) == 9 and len(batches) == 6 and all(len(x) == 4 for x, _ in batches)  # 3 x 9 rows
    seen = torch.cat([x for x, _ in batches]).flatten(1)
    assert {tuple(r.tolist()) for r in seen} <= {tuple(dm.images[i].flatten().tolist()) for i in dm.train_rows.tolist()}
    assert len(list(dm.val_dataloader())) == 1  # validation is never repeated
    big = ImageFolderDataModule(str(root), batch_size=4, val_fraction=0.25, min_steps_per_epoch=1)
    big.setup("fit")
    assert len(list(big.train_dataloader())) == 2  # 9 images, drop_last: as before
    with pytest.raises(ValueError, match="min_steps_per_epoch must be >= 1|batch_size and min_steps_per_epoch"):
        ImageFolderDataModule(str(root), min_steps_per_epoch=0)

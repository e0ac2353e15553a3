"""encoder.ae.augment: batched augmentations for the two-view loss."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from encoder.ae.augment import PRESETS, Augmentation, augment


def _picture(n: int = 6) -> torch.Tensor:
    """A grey batch with structure: a bright square on a ramp, at a different place in each image."""
    x = torch.linspace(0, 0.6, 64).view(1, 1, 1, 64).repeat(n, 1, 64, 1)
    for i in range(n):
        x[i, :, 8 + 4 * i : 24 + 4 * i, 10:30] = 1.0
    return x


def test_shapes_range_seeding_and_independence():
    x = _picture()
    torch.manual_seed(1)
    a = augment(x, PRESETS["strong"])
    torch.manual_seed(1)
    b = augment(x, PRESETS["strong"])
    assert a.shape == x.shape and a.dtype == torch.float32
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b)  # the torch RNG: seeded runs repeat
    assert not torch.allclose(a, x, atol=0.05)  # it changes the images
    same = augment(x[:1].repeat(8, 1, 1, 1), PRESETS["strong"])
    assert (same - same[:1]).abs().flatten(1).mean(1)[1:].min() > 0.01  # each image its own draw


def test_each_operation_alone_does_what_it_says():
    x = _picture(4)
    off = Augmentation(
        crop_area=(1.0, 1.0),
        aspect=1.0,
        flip=0.0,
        rotate=0.0,
        gamma=0.0,
        brightness=0.0,
        contrast=0.0,
        wiggle=0.0,
        blur=0.0,
        downscale=0.0,
        noise=0.0,
        overlay=0.0,
    )
    assert torch.allclose(augment(x, off), x, atol=1e-4)  # all off: the identity
    flipped = augment(x, dataclasses.replace(off, flip=1.0))
    assert torch.allclose(flipped, x.flip(-1), atol=1e-4)
    dark = augment(x, dataclasses.replace(off, brightness=1.0))
    assert dark.mean() < x.mean()  # factors in [0, 1.5]: mostly darker here
    blurred = augment(x, dataclasses.replace(off, blur=1.0))
    assert (blurred - x).abs().max() > 0.1 and blurred.diff(dim=-2).abs().max() < x.diff(dim=-2).abs().max()
    banner = augment(torch.full((16, 1, 64, 64), 0.8), dataclasses.replace(off, overlay=1.0))
    rows = banner.mean((0, 1, 3))
    assert rows[:4].min() < 0.75 or rows[-4:].min() < 0.75  # a darker band at the top or bottom
    assert rows[28:36].allclose(torch.full((8,), 0.8))  # the middle untouched
    crop = augment(x, dataclasses.replace(off, crop_area=(0.25, 0.25)))
    assert not torch.allclose(crop, x, atol=0.05)  # a quarter of the picture, enlarged


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match=r"grey batch \(N,1,S,S\), got shape \(3, 64, 64\)"):
        augment(torch.rand(3, 64, 64), PRESETS["light"])
    assert PRESETS["shift"] is None and {"light", "strong"} <= set(PRESETS)

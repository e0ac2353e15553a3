"""encoder.ae.lit: the shift augmentation, NT-Xent, the loss terms and the module's checks."""

from __future__ import annotations

import pytest
import torch

from encoder.ae import lit
from encoder.ae.lit import LOSS_TERMS, AutoencoderModule, LossTerm, nt_xent, random_shift


def _logging(module) -> dict:
    logged = {}
    module.log_dict = lambda d, **kw: logged.update(d)
    return logged


def _batch(n=8):
    torch.manual_seed(1)
    return (torch.rand(n, 64, 64) * 255).to(torch.uint8), torch.full((n,), -1)


def test_random_shift_moves_each_image_by_its_own_offset():
    torch.manual_seed(0)
    x = torch.zeros(64, 1, 64, 64)
    x[:, :, 30, 30] = 1.0  # one bright pixel per image
    y = random_shift(x, 3)
    assert y.shape == x.shape
    pos = [divmod(int(i), 64) for i in y.flatten(1).argmax(1)]
    assert all(y[i].sum() == 1 for i in range(64))  # moved, not lost or duplicated
    assert all(27 <= r <= 33 and 27 <= c <= 33 for r, c in pos)
    assert len(set(pos)) > 20  # offsets differ per image
    assert torch.equal(random_shift(x, 0), x)
    edge = torch.ones(8, 1, 64, 64)
    assert (random_shift(edge, 3) == 0).any()  # filled with zeros, not wrapped


def test_nt_xent_prefers_matching_pairs():
    torch.manual_seed(0)
    a = torch.randn(32, 16)
    matched = nt_xent(a, a + 0.05 * torch.randn(32, 16), 0.2)
    shuffled = nt_xent(a, a[torch.randperm(32)], 0.2)
    assert matched < 1.0 < shuffled


def test_contrastive_term_trains_and_logs():
    torch.manual_seed(0)
    module = AutoencoderModule(width=4, contrastive_weight=0.01, channels_last=False, pca_init=False)
    logged = _logging(module)
    x = (torch.rand(8, 64, 64) * 255).to(torch.uint8)
    loss = module._step((x, torch.full((8,), -1)), "train")
    assert "train/ntxent" in logged and float(logged["train/ntxent"].detach()) > 0
    assert torch.isclose(loss, logged["train/mse"] + 0.01 * logged["train/ntxent"])
    loss.backward()
    assert module.model.encoder.fc.weight.grad.abs().sum() > 0
    module._step((x, torch.full((8,), -1)), "val")
    assert "val/ntxent" not in logged  # validation loss stays reconstruction
    off = AutoencoderModule(width=4, contrastive_weight=0.0, channels_last=False)
    logged = _logging(off)
    off._step((x, torch.full((8,), -1)), "train")
    assert "train/ntxent" not in logged
    for bad in (dict(contrastive_weight=-1), dict(contrastive_fraction=0), dict(temperature=0), dict(shift=-1)):
        with pytest.raises(ValueError):
            AutoencoderModule(**bad)


def test_supervised_term_logs_ce_and_acc():
    torch.manual_seed(0)
    module = AutoencoderModule(
        width=4, supervised_weight=0.5, num_classes=3, contrastive_weight=0.0, channels_last=False
    )
    logged = _logging(module)
    x, _ = _batch()
    labels = torch.tensor([0, 1, 2, 0, 1, 2, -1, -1])
    loss = module._step((x, labels), "train")
    assert torch.isclose(loss, logged["train/mse"] + 0.5 * logged["train/ce"])
    assert 0 <= float(logged["train/acc"]) <= 1
    logged.clear()
    module._step((x, torch.full((8,), -1)), "train")  # no labels in the batch: no term
    assert "train/ce" not in logged and torch.equal(logged["train/loss"], logged["train/mse"])


def test_supervised_needs_classes():
    with pytest.raises(ValueError, match="class subfolders"):
        AutoencoderModule(supervised_weight=0.5, num_classes=0)


def test_loss_is_the_list_of_terms_and_a_new_term_plugs_in(monkeypatch):
    # the extension point: a loss term is a function + an entry in LOSS_TERMS
    assert [t.name for t in LOSS_TERMS] == ["reconstruction", "contrastive", "supervised"]
    assert [t.weight for t in LOSS_TERMS] == [None, "contrastive_weight", "supervised_weight"]
    x, labels = _batch()
    module = AutoencoderModule(width=4, contrastive_weight=0.0, channels_last=False, lr=2.0)

    def code_norm(m, step):  # a made-up term, weighted by the hparam "lr"
        n = step.code.pow(2).mean()
        return n, {"code_norm": n}

    monkeypatch.setattr(lit, "LOSS_TERMS", (*LOSS_TERMS, LossTerm("code_norm", "lr", code_norm)))
    logged = _logging(module)
    loss = module._step((x, labels), "train")
    assert set(logged) == {"train/mse", "train/psnr", "train/code_norm", "train/loss"}
    assert torch.isclose(loss, logged["train/mse"] + 2.0 * logged["train/code_norm"])
    module.hparams.lr = 0.0  # weight 0 switches a term off
    logged.clear()
    module._step((x, labels), "train")
    assert "train/code_norm" not in logged

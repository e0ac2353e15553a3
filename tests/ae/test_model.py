"""encoder.ae.model: shapes, training signal, names and defaults."""
from __future__ import annotations

import inspect

import pytest
import torch

from encoder.ae.inference import fingerprint
from encoder.ae.lit import AutoencoderModule
from encoder.ae.model import DEFAULT_WIDTH, ConvAutoencoder, ConvDecoder, ConvEncoder


def test_shapes_and_range():
    m = ConvAutoencoder(code_dim=128, width=8).eval()
    x = torch.rand(3, 1, 64, 64)
    recon, z = m(x)
    assert z.shape == (3, 128) and recon.shape == (3, 1, 64, 64)
    assert recon.min() >= 0 and recon.max() <= 1
    assert torch.allclose(m.encode(x), z)
    assert ConvAutoencoder(code_dim=32, width=4, image_size=32).encode(torch.rand(2, 1, 32, 32)).shape == (2, 32)
    with pytest.raises(ValueError, match="multiple of 16"):
        ConvAutoencoder(image_size=40)


def test_training_step_reduces_loss():
    torch.manual_seed(0)
    m = ConvAutoencoder(width=8)
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    x = torch.rand(16, 1, 64, 64).round()       # a fixed batch it can memorise
    losses = []
    for _ in range(30):
        recon, _ = m(x)
        loss = torch.nn.functional.mse_loss(recon, x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_conv_modules_renamed_keys_and_fingerprint_unchanged():
    # the torch modules are ConvEncoder/ConvDecoder (Encoder is the inference wrapper); the
    # attributes stay `encoder`/`decoder`, so checkpoints and fingerprints are those of before
    torch.manual_seed(0)
    m = ConvAutoencoder(width=16)
    assert isinstance(m.encoder, ConvEncoder) and isinstance(m.decoder, ConvDecoder)
    assert {k.split(".")[0] for k in m.state_dict()} == {"encoder", "decoder"}
    assert "encoder.fc.weight" in m.state_dict() and "decoder.linear.bias" in m.state_dict()
    assert fingerprint(m) == "481662184111c3e9"          # the value before the rename
    torch.manual_seed(0)
    assert fingerprint(ConvAutoencoder(width=8)) == "b0184a7ceda70881"


def test_one_width_default():
    # it was 32 in the model and 16 in AutoencoderModule/configs; now one value everywhere
    assert DEFAULT_WIDTH == 16 and ConvAutoencoder().width == 16
    for f in (ConvAutoencoder, ConvEncoder, ConvDecoder, AutoencoderModule):
        assert inspect.signature(f).parameters["width"].default == DEFAULT_WIDTH, f

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
    x = torch.rand(16, 1, 64, 64).round()  # a fixed batch it can memorise
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
    assert fingerprint(m) == "481662184111c3e9"  # the value before the rename
    torch.manual_seed(0)
    assert fingerprint(ConvAutoencoder(width=8)) == "b0184a7ceda70881"


def test_one_width_default():
    # it was 32 in the model and 16 in AutoencoderModule/configs; now one value everywhere
    assert DEFAULT_WIDTH == 16 and ConvAutoencoder().width == 16
    for f in (ConvAutoencoder, ConvEncoder, ConvDecoder, AutoencoderModule):
        assert inspect.signature(f).parameters["width"].default == DEFAULT_WIDTH, f


def test_whitening_changes_the_codes_not_the_reconstructions(tmp_path):
    from encoder.ae.inference import load_model, save_encoder

    torch.manual_seed(0)
    m = ConvAutoencoder(code_dim=16, width=4).eval()
    x = torch.rand(200, 1, 64, 64) * torch.linspace(0.2, 1, 64)  # directions of unequal variance
    with torch.no_grad():
        raw = m.encoder.raw(x)
        before, fp = m.decode(m.encode(x)), fingerprint(m)
        assert not m.whitened and torch.allclose(m.encode(x), raw)
        m.set_whitening(raw, 1.0)
        z = m.encode(x)
        assert m.whitened and fingerprint(m) != fp
        cov = torch.cov(z.T.double())
        assert torch.allclose(
            cov, cov.diagonal().mean() * torch.eye(16, dtype=torch.float64), atol=1e-3 * cov.diagonal().mean()
        )
        assert abs(float(z.var(0).sum() / raw.var(0).sum()) - 1) < 1e-3  # total variance kept
        assert torch.allclose(m.decode(z), before, atol=1e-4)  # the decoder undoes it
        m.set_whitening(raw, 0.0)
        assert not m.whitened and fingerprint(m) == fp
    m.set_whitening(raw, 0.5)
    save_encoder(m, tmp_path / "w.pt")
    back = load_model(tmp_path / "w.pt")
    assert back.whitened and fingerprint(back) == fingerprint(m)


def test_a_checkpoint_from_before_whitening_loads_as_identity(tmp_path):
    from encoder.ae.inference import load_model
    from encoder.ae.model import WHITENING_KEYS

    torch.manual_seed(0)
    m = ConvAutoencoder(width=16)
    old = {k: v for k, v in m.state_dict().items() if k not in WHITENING_KEYS}
    torch.save({"config": m.config, "state_dict": old}, tmp_path / "old.pt")
    back = load_model(tmp_path / "old.pt")
    assert not back.whitened and fingerprint(back) == "481662184111c3e9"  # as before the buffers existed
    torch.save({"config": m.config, "state_dict": {**old, "encoder.extra": torch.zeros(1)}}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="unexpected keys"):
        load_model(tmp_path / "bad.pt")


def test_tone_codes_compare_pictures_not_exposures():
    from encoder.ae.model import TONE_DIMS, tone_of

    torch.manual_seed(0)
    m = ConvAutoencoder(code_dim=32, width=4, tone=True)
    assert m.config["tone"] is True and "tone" not in ConvAutoencoder(width=4).config  # old configs unchanged
    x = torch.rand(64, 1, 64, 64) * 0.6 + 0.2
    share = m.init_linear_from_data(x)
    m.eval()
    with torch.no_grad():
        z, dark = m.encode(x), m.encode(x * 0.5 + 0.05)  # a darker, flatter copy
        c = m.content_dim
        assert c == 32 - TONE_DIMS and z.shape == (64, 32)
        assert torch.allclose(z[:, :c], dark[:, :c], atol=1e-3)  # the picture: the same code
        mean, std = tone_of(x)
        assert torch.allclose(z[:, c:], torch.cat([mean.flatten(1), std.flatten(1)], 1), atol=1e-6)
        assert torch.allclose(
            dark[:, c:], torch.cat([(mean * 0.5 + 0.05).flatten(1), (std * 0.5).flatten(1)], 1), atol=1e-6
        )
        # the decoder gives each copy its own exposure back (the PCA start reconstructs the span)
        err = (m.decode(z) - x).abs().mean(), (m.decode(dark) - (x * 0.5 + 0.05)).abs().mean()
        assert share > 0.3 and err[1] < err[0] * 0.6
        flat = torch.full((2, 1, 64, 64), 0.7)  # a flat image stays flat
        assert torch.allclose(m.decode(m.encode(flat)), flat, atol=0.05)
        m.set_whitening(m.encoder.raw(x), 0.5, tone_weight=0.1)
        w = m.encode(x)
        spread = w[:, :c].std(0).square().mean().sqrt()
        assert torch.allclose(w[:, c:].std(0), torch.full((2,), 0.1) * spread, rtol=1e-3)
        assert torch.allclose(m.decode(w), m.decoder.raw(m.encoder.raw(x)).clamp(0, 1), atol=1e-4)

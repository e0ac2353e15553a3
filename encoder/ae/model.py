"""The convolutional autoencoder as plain torch modules (no Lightning here).

Shapes: images ``(N, 1, S, S)`` float in [0, 1] with ``S = image_size`` (64 by default);
codes ``(N, code_dim)`` float32 (128 by default).

Design, chosen for speed on a CPU (see bench/autoencoder_bench.py for the figures):

* The first step is a space-to-depth (``PixelUnshuffle(2)``): 1x64x64 becomes 4x32x32 with no
  arithmetic, so no convolution ever runs at full resolution. The decoder ends with the
  mirror ``PixelShuffle(2)``.
* Three strided 3x3 stages (32 -> 16 -> 8 -> 4), each ``conv -> BatchNorm -> SiLU`` plus a
  residual 3x3 block, then a linear layer to the code. The decoder mirrors it with
  nearest-neighbour upsampling + 3x3 conv (no checkerboard artefacts from transposed convs).
* A linear bypass: the code is ``linear(conv features) + linear(pixels)`` and the
  decoder's output adds a linear map of the code.
  :meth:`ConvAutoencoder.init_linear_from_data` sets the linear path to PCA of the training
  images and zeroes the conv path's last layers, so training starts from the PCA
  reconstruction (the linear baseline) and the conv path learns what PCA misses.
* The decoder output is not squashed by a sigmoid (that would break the linear path);
  training uses the raw output, :meth:`ConvAutoencoder.decode` clamps to [0, 1].
* Whitening: the code the encoder hands out is ``(raw - mean) @ W`` with ``W`` a partial
  (ZCA, power 0.5) whitening of the raw codes of the training images, and the decoder undoes it
  first (``@ W^-1 + mean``), so reconstructions are unchanged. Training works on raw codes
  (:meth:`ConvEncoder.raw`, :meth:`ConvDecoder.raw`); :meth:`ConvAutoencoder.set_whitening`
  fills the buffers (identity until then, and in checkpoints from before they existed).
  Measured on Fashion-MNIST (demo checkpoint, 3,000 test queries on the 60k training images):
  P@5 0.834 raw codes, 0.847 whitened (L2), 0.852 whitened (cosine).
* ``channels_last`` memory format is used by the Lightning module on CPU (1.5-2x faster
  convolutions with oneDNN).

``ARCH`` names the architecture; it is part of every checkpoint and of the model
fingerprint, so codes from two architectures are never mixed.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ARCH = "conv-ae-v1"

#: Buffers added after the first checkpoints were written (identity whitening when absent).
WHITENING_KEYS = frozenset({"encoder.code_mean", "encoder.code_whiten", "decoder.code_mean", "decoder.code_unwhiten"})

#: Channels of the first conv stage. 16 is what the configs and ``AutoencoderModule`` train
#: (> 500 images/s on 2 CPU cores); it is also what a Lightning checkpoint without ``width`` in
#: its hyper-parameters was trained with (see encoder.ae.inference), so there is one default.
DEFAULT_WIDTH = 16

#: With ``tone=True`` the last two code entries are the image's mean grey and contrast.
TONE_DIMS = 2
#: The smallest standard deviation an image is divided by (a flat image stays flat, not noise x 50).
MIN_STD = 0.02


def tone_of(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image mean and standard deviation (floored at :data:`MIN_STD`) of ``(N,1,S,S)``, each ``(N,1,1,1)``."""
    mean = x.mean((1, 2, 3), keepdim=True)
    std = (x - mean).square().mean((1, 2, 3), keepdim=True).sqrt().clamp_min(MIN_STD)
    return mean, std


def standardise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x - mean) / std`` per image (mean 0, contrast 1), with the mean and std of :func:`tone_of`."""
    mean, std = tone_of(x)
    return (x - mean) / std, mean, std


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.SiLU(inplace=True),
    )


class _Residual(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(c, c, 3, padding=1, bias=False),
            nn.BatchNorm2d(c),
            nn.SiLU(inplace=True),
            nn.Conv2d(c, c, 3, padding=1, bias=False),
            nn.BatchNorm2d(c),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x + self.conv(x))


class ConvEncoder(nn.Module):
    """``(N, 1, S, S)`` in [0, 1] -> ``(N, code_dim)``."""

    def __init__(self, code_dim: int = 128, width: int = DEFAULT_WIDTH, image_size: int = 64, tone: bool = False):
        super().__init__()
        if image_size % 16:
            raise ValueError(f"image_size must be a multiple of 16, got {image_size}")
        w = width
        self.stem = nn.PixelUnshuffle(2)  # 1 x S -> 4 x S/2
        self.body = nn.Sequential(
            _block(4, w),  # S/2
            _block(w, 2 * w, stride=2),  # S/4
            _block(2 * w, 4 * w, stride=2),  # S/8
            _block(4 * w, 4 * w, stride=2),  # S/16
        )
        side = image_size // 16
        self.tone = tone
        content = code_dim - TONE_DIMS if tone else code_dim
        self.fc = nn.Linear(4 * w * side * side, content)
        self.linear = nn.Linear(image_size * image_size, content)
        self.register_buffer("code_mean", torch.zeros(code_dim))
        self.register_buffer("code_whiten", torch.eye(code_dim))

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """The code before whitening (what training sees); with ``tone`` its last two entries
        are the image's mean and standard deviation and the rest describes the standardised image."""
        if self.tone:
            x, mean, std = standardise(x)
        h = self.body(self.stem(x))
        z = self.fc(h.flatten(1)) + self.linear(x.flatten(1))
        return torch.cat([z, mean.flatten(1), std.flatten(1)], 1) if self.tone else z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.raw(x) - self.code_mean) @ self.code_whiten.T


class ConvDecoder(nn.Module):
    """``(N, code_dim)`` -> ``(N, 1, S, S)``, unclamped (see :meth:`ConvAutoencoder.decode`)."""

    def __init__(self, code_dim: int = 128, width: int = DEFAULT_WIDTH, image_size: int = 64, tone: bool = False):
        super().__init__()
        w = width
        self.side = image_size // 16
        self.w = w
        self.tone = tone
        content = code_dim - TONE_DIMS if tone else code_dim
        self.fc = nn.Linear(content, 4 * w * self.side * self.side)

        def up(cin, cout):
            return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), _block(cin, cout))

        self.body = nn.Sequential(
            nn.BatchNorm2d(4 * w),
            nn.SiLU(inplace=True),
            up(4 * w, 4 * w),  # S/8
            up(4 * w, 2 * w),  # S/4
            up(2 * w, w),  # S/2
            nn.Conv2d(w, 4, 3, padding=1),
            nn.PixelShuffle(2),  # 1 x S
        )
        self.linear = nn.Linear(content, image_size * image_size)
        self.image_size = image_size
        self.register_buffer("code_mean", torch.zeros(code_dim))
        self.register_buffer("code_unwhiten", torch.eye(code_dim))

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        return self.raw(code @ self.code_unwhiten.T + self.code_mean)

    def raw(self, z: torch.Tensor) -> torch.Tensor:
        """The image of a raw (not whitened) code, unclamped (what training sees)."""
        if self.tone:
            z, mean, std = z[:, :-TONE_DIMS], z[:, -2].view(-1, 1, 1, 1), z[:, -1].view(-1, 1, 1, 1)
        h = self.fc(z).view(-1, 4 * self.w, self.side, self.side)
        lin = self.linear(z).view(-1, 1, self.image_size, self.image_size)
        out = self.body(h) + lin
        return out * std + mean if self.tone else out


class ConvAutoencoder(nn.Module):
    """:class:`ConvEncoder` + :class:`ConvDecoder`. ``forward(x)`` returns ``(reconstruction, code)``.

    Example:
        >>> m = ConvAutoencoder().eval()
        >>> z = m.encode(torch.rand(2, 1, 64, 64)); z.shape
        torch.Size([2, 128])
        >>> m.decode(z).shape
        torch.Size([2, 1, 64, 64])
    """

    def __init__(self, code_dim: int = 128, width: int = DEFAULT_WIDTH, image_size: int = 64, tone: bool = False):
        super().__init__()
        if code_dim < 1 + (TONE_DIMS if tone else 0) or width < 1:
            raise ValueError(
                f"code_dim must be >= {1 + (TONE_DIMS if tone else 0)} and width >= 1, got {code_dim}, {width}"
            )
        self.code_dim, self.width, self.image_size, self.tone = code_dim, width, image_size, tone
        self.encoder = ConvEncoder(code_dim, width, image_size, tone)
        self.decoder = ConvDecoder(code_dim, width, image_size, tone)

    @property
    def config(self) -> dict:
        """What is needed to rebuild the module (stored in checkpoints; ``tone`` only when on, so
        the configs and fingerprints of models without it are those of before)."""
        cfg = {"arch": ARCH, "code_dim": self.code_dim, "width": self.width, "image_size": self.image_size}
        return {**cfg, "tone": True} if self.tone else cfg

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ConvAutoencoder:
        """The module a :attr:`config` (or a training run's hyper-parameters) describes.

        Every constructor argument is read from ``config`` (a missing one takes its default), so a
        new argument can never be dropped on the way back; keys that are not arguments are ignored
        (``arch`` and the training-only hyper-parameters).

        Example:
            >>> ConvAutoencoder.from_config({"arch": ARCH, "code_dim": 16, "width": 4, "tone": True}).config
            {'arch': 'conv-ae-v1', 'code_dim': 16, 'width': 4, 'image_size': 64, 'tone': True}
        """
        args = inspect.signature(cls).parameters
        return cls(**{k: type(p.default)(config[k]) for k, p in args.items() if k in config})

    @classmethod
    def arguments(cls) -> tuple[str, ...]:
        """The constructor's arguments: what a config must carry to rebuild the module."""
        return tuple(inspect.signature(cls).parameters)

    @property
    def content_dim(self) -> int:
        """Code entries that describe the (standardised) picture; the rest, if any, are its tone."""
        return self.code_dim - TONE_DIMS if self.tone else self.code_dim

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Codes -> images clamped to [0, 1]."""
        return self.decoder(z).clamp(0, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(reconstruction clamped to [0,1], code)``; training uses ``decoder(code)`` unclamped."""
        z = self.encoder(x)
        return self.decode(z), z

    @property
    def whitened(self) -> bool:
        """Whether the codes handed out are whitened (the buffers are not identity)."""
        e, d = self.encoder, self.decoder
        eye = torch.eye(self.code_dim, device=e.code_whiten.device)
        return not (
            torch.equal(e.code_whiten, eye)
            and torch.equal(d.code_unwhiten, eye)
            and not e.code_mean.any()
            and not d.code_mean.any()
        )

    @torch.no_grad()
    def set_whitening(self, raw_codes: torch.Tensor, power: float = 0.5, tone_weight: float = 0.1) -> None:
        """Whiten the codes handed out by ``power`` (0 = identity, 1 = full ZCA whitening), from
        raw codes ``(N, code_dim)`` of training images; the total variance is kept, so code norms
        stay in the same range. Weak directions are floored at 1e-3 of the mean variance. With
        ``tone`` the two tone entries are scaled to ``tone_weight`` times the spread of a content
        entry: a darker or flatter copy of a picture stays near it, and the decoder still gets
        the exact tone back."""
        z = raw_codes.detach().double()
        mean = z.mean(0)
        c = self.content_dim
        if power == 0 or len(z) < 2:  # off: the identity (and no centring)
            w, mean = torch.eye(self.code_dim, dtype=torch.float64, device=z.device), torch.zeros_like(mean)
        else:
            w = torch.zeros(self.code_dim, self.code_dim, dtype=torch.float64, device=z.device)
            ev, v = torch.linalg.eigh(torch.cov((z[:, :c] - mean[:c]).T).reshape(c, c))
            ev = ev.clamp_min(1e-3 * ev.mean().clamp_min(1e-12))
            scale = ev ** (-power / 2)
            scale = scale * (ev.sum() / (ev * scale**2).sum()).sqrt()
            w[:c, :c] = v @ torch.diag(scale) @ v.T
            if self.tone:
                spread = (ev.sum() / c).sqrt()
                w[c:, c:] = torch.diag(tone_weight * spread / z[:, c:].std(0).clamp_min(1e-6))
        for part, name, value in (
            (self.encoder, "code_whiten", w),
            (self.encoder, "code_mean", mean),
            (self.decoder, "code_unwhiten", torch.linalg.inv(w)),
            (self.decoder, "code_mean", mean),
        ):
            getattr(part, name).copy_(value.to(getattr(part, name)))

    @torch.no_grad()
    def init_linear_from_data(self, images: torch.Tensor) -> float:
        """Set the linear path to PCA of ``images`` ``(N,1,S,S)`` in [0,1]; zero the conv outputs.

        Afterwards the model *is* PCA with ``code_dim`` components. Returns the share of
        variance the components explain.
        """
        if self.tone:  # the linear path sees standardised pictures (see ConvEncoder.raw)
            images = standardise(images.float())[0]
        x = images.float().flatten(1)
        if len(x) < 2:
            raise ValueError(f"PCA initialisation needs at least 2 images, got {len(x)}")
        mean = x.double().mean(0)
        xc = x - mean.float()
        k = min(self.content_dim, *xc.shape)
        # Randomised SVD (Halko et al.) with oversampling and power iterations: the top-k
        # directions of a (N, 4096) matrix in seconds, where a full eigendecomposition of the
        # 4096x4096 covariance takes minutes on 2 cores.
        with torch.random.fork_rng(devices=[]):  # seeded, without touching the global RNG
            torch.manual_seed(0)
            _, sv, v = torch.svd_lowrank(xc, q=min(k + 32, *xc.shape), niter=6)
        comps = v[:, :k].T.double()  # (k, P), strongest first
        explained = float((sv[:k].double() ** 2).sum() / (xc.double() ** 2).sum().clamp_min(1e-12))
        enc_w = torch.zeros_like(self.encoder.linear.weight, dtype=torch.float64)
        enc_w[:k] = comps
        self.encoder.linear.weight.copy_(enc_w)
        self.encoder.linear.bias.copy_(-(enc_w @ mean))
        self.decoder.linear.weight.copy_(enc_w.T)
        self.decoder.linear.bias.copy_(mean)
        self.encoder.fc.weight.zero_()
        self.encoder.fc.bias.zero_()
        last = self.decoder.body[-2]
        last.weight.zero_()
        last.bias.zero_()
        return explained

"""Load a trained encoder and turn images into codes (and codes back into images).

A checkpoint is either a Lightning ``.ckpt`` written by ``train.py fit`` or the small
encoder file written by :func:`save_encoder` / ``train.py export`` (``{"config", "state_dict"}``).
Both are read with ``torch.load(weights_only=True)``: tensors and plain values only, never
arbitrary pickled objects. Anything else is refused with :class:`CheckpointError` naming the file.

The **fingerprint** (16 hex digits) hashes the architecture, its config, every weight and the
preprocessing definition (:data:`encoder.data.GRAY_PREPROCESS_VERSION`); an index records it
and refuses codes of any other model.

Example:
    >>> enc = load_encoder("runs/train/checkpoints/last.ckpt")        # doctest: +SKIP
    >>> codes, kept = encode_paths(enc, ["a.jpg", "b.png"])          # doctest: +SKIP
    >>> codes.shape, codes.dtype                                     # doctest: +SKIP
    ((2, 128), dtype('float32'))
    >>> enc.decode(codes).shape                                      # doctest: +SKIP
    (2, 64, 64)
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from encoder.ae.model import ARCH, WHITENING_KEYS, ConvAutoencoder
from encoder.ae.runtime import BatchedCoder, encode_paths  # noqa: F401  (encode_paths: re-exported)
from encoder.atomic import save_torch
from encoder.data import GRAY_PREPROCESS_VERSION


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, foreign, or of another architecture."""


def best_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class Encoder(BatchedCoder):
    """A loaded autoencoder ready for inference (eval mode, no gradients)."""

    model: ConvAutoencoder
    fingerprint: str
    path: str
    device: torch.device
    code_dim: int = field(init=False, repr=False, compare=False)
    image_size: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.code_dim, self.image_size = self.model.code_dim, self.model.image_size

    @torch.inference_mode()
    def _encode_batch(self, x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(x).to(self.device).contiguous(memory_format=torch.channels_last)
        return self.model.encode(t).float().cpu().numpy()

    @torch.inference_mode()
    def _decode_batch(self, z: np.ndarray) -> np.ndarray:
        return self.model.decode(torch.from_numpy(z).to(self.device)).squeeze(1).float().cpu().numpy()


def fingerprint(model: ConvAutoencoder) -> str:
    """16 hex digits identifying architecture + config + weights + preprocessing."""
    h = hashlib.sha256()
    h.update(json.dumps(model.config, sort_keys=True).encode())
    h.update(GRAY_PREPROCESS_VERSION.encode())
    plain = not model.whitened  # identity whitening hashes as before the buffers existed
    for name, t in sorted(model.state_dict().items()):
        if plain and name in WHITENING_KEYS:
            continue
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The dict stored in a ``.ckpt``/``.pt`` file, read with ``weights_only=True`` on CPU.

    Raises :class:`CheckpointError` naming the file when it is missing, a folder, not a
    torch file of plain tensors and values (pickled objects are never run), or not a dict.

    Example:
        >>> read_checkpoint("runs/train/checkpoints/last.ckpt")["epoch"]     # doctest: +SKIP
        7
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"expected a checkpoint file (.ckpt or .pt), got a folder: {path}")
    try:
        with warnings.catch_warnings():  # torch's pickle-protocol notice would come before our message
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - garbage bytes fail in many ways (IndexError, KeyError, ...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"cannot load checkpoint {path}: not a torch checkpoint of plain tensors ({first[:200]})"
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path}: expected a dict, got {type(obj).__name__}")
    return obj


def _config_and_weights(obj: dict, path: Path) -> tuple[dict, dict]:
    if "config" in obj and "state_dict" in obj:  # encoder file (save_encoder)
        return dict(obj["config"]), obj["state_dict"]
    if "state_dict" in obj and "hyper_parameters" in obj:  # Lightning checkpoint
        hp = obj["hyper_parameters"]
        # every model argument travels (ConvAutoencoder.from_config reads them all); AutoencoderModule
        # saves its arguments with their defaults, and its default width is the model's (DEFAULT_WIDTH)
        cfg = {"arch": hp.get("arch", ARCH), **{k: hp[k] for k in ConvAutoencoder.arguments() if k in hp}}
        sd = {k[len("model.") :]: v for k, v in obj["state_dict"].items() if k.startswith("model.")}
        if not sd:
            raise CheckpointError(
                f"checkpoint {path}: a Lightning checkpoint but not of this toolkit's "
                f"AutoencoderModule (no 'model.*' weights)"
            )
        return cfg, sd
    raise CheckpointError(
        f"checkpoint {path}: expected a Lightning checkpoint (state_dict + hyper_parameters) "
        f"or an encoder file (config + state_dict), got keys {sorted(obj)[:8]}"
    )


def load_model(path: str | os.PathLike) -> ConvAutoencoder:
    """The :class:`ConvAutoencoder` stored in ``path`` (eval mode, on CPU)."""
    path = Path(path)
    cfg, sd = _config_and_weights(read_checkpoint(path), path)
    if cfg.get("arch") != ARCH:
        raise CheckpointError(f"checkpoint {path}: architecture {cfg.get('arch')!r}, this toolkit reads {ARCH!r}")
    try:
        model = ConvAutoencoder.from_config(cfg)
        missing, unexpected = model.load_state_dict(sd, strict=False)
        if unexpected or set(missing) - WHITENING_KEYS:  # older checkpoints: no whitening (identity)
            raise RuntimeError(
                f"missing keys {sorted(set(missing) - WHITENING_KEYS)[:5]}, unexpected keys {sorted(unexpected)[:5]}"
            )
    except (RuntimeError, KeyError, ValueError, TypeError) as e:
        msg = str(e).strip().splitlines()
        raise CheckpointError(
            f"checkpoint {path}: weights do not fit {ARCH} with config {cfg} "
            f"({(msg[0] if msg else type(e).__name__)[:300]})"
        ) from None
    return model.eval()


def load_encoder(path: str | os.PathLike, device: str | torch.device | None = None) -> Encoder:
    """Load a checkpoint for inference; ``device`` defaults to CUDA when present, else CPU."""
    return encoder_from_model(load_model(path), str(path), device)


def encoder_from_model(
    model: ConvAutoencoder, path: str = "<memory>", device: str | torch.device | None = None
) -> Encoder:
    """Wrap a model in memory (e.g. just trained) as an :class:`Encoder` (eval, channels-last).

    ``path`` is only recorded (``Encoder.path``); ``device`` defaults to CUDA when present,
    else CPU. The model itself is moved there and switched to eval mode.
    """
    dev = torch.device(device) if device is not None else best_device()
    fp = fingerprint(model)
    model = model.eval().to(dev).to(memory_format=torch.channels_last)
    return Encoder(model, fp, path, dev)


def save_encoder(model: ConvAutoencoder, path: str | os.PathLike) -> None:
    """Write the small, pickle-free encoder file (config + weights), atomically."""
    save_torch(
        path,
        {
            "config": model.config,
            "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        },
    )

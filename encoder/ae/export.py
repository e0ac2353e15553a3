"""Export the encoder for inference without Lightning.

* ``.pt``: the pickle-free encoder file (config + weights), read by
  :func:`encoder.ae.inference.load_encoder` (needs only torch and this package).
* ``.onnx``: the encoder graph (input ``images`` (N,1,S,S) float32 in [0,1], output ``codes``
  (N,D)), with a dynamic batch axis, checked against torch: codes from ONNX Runtime and from
  torch must agree within :data:`ONNX_TOLERANCE`. The check needs ``onnxruntime``; without it
  the export is refused (:class:`OnnxCheckUnavailable`) unless ``check=False``
  (``train.py export --no-check``) asks for an unchecked file.

The returned info says what happened: ``checked`` (bool) and ``max_abs_diff`` (float, or
None when unchecked) for ONNX.

Example:
    >>> export_encoder("runs/train/checkpoints/last.ckpt", "runs/encoder.onnx")   # doctest: +SKIP
    {'checkpoint': ..., 'output': 'runs/encoder.onnx', ..., 'checked': True, 'max_abs_diff': 2.4e-07}
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch

from encoder.ae.inference import fingerprint, load_model, save_encoder
from encoder.atomic import write_bytes

ONNX_TOLERANCE = 1e-4


class OnnxCheckUnavailable(ImportError):
    """``check=True`` but onnxruntime is not installed."""


def _onnxruntime():
    """The onnxruntime module, or :class:`OnnxCheckUnavailable` saying how to go on."""
    try:
        import onnxruntime   # late: only a checked ONNX export needs it, and it is optional
    except ImportError:
        raise OnnxCheckUnavailable(
            "checking the ONNX export against torch needs the onnxruntime package, which is not "
            "installed: install onnxruntime, or pass --no-check (check=False) to write it unchecked") from None
    return onnxruntime


def export_encoder(checkpoint: str | os.PathLike, out: str | os.PathLike, check: bool = True) -> dict:
    """Write the encoder of ``checkpoint`` to ``out`` (.onnx or .pt); return what was written.

    For ``.onnx`` the info holds ``checked`` and ``max_abs_diff`` (None when ``check=False``);
    a difference above :data:`ONNX_TOLERANCE` raises RuntimeError.
    """
    out = Path(out)
    if out.suffix not in (".pt", ".onnx"):
        raise ValueError(f"export target must end in .onnx or .pt, got {out.name!r}")
    ort = _onnxruntime() if check and out.suffix == ".onnx" else None   # before anything is written
    model = load_model(checkpoint)
    info = {"checkpoint": str(checkpoint), "output": str(out), "fingerprint": fingerprint(model),
            "code_dim": model.code_dim, "image_size": model.image_size}
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".pt":
        save_encoder(model, out)
        return info
    s = model.image_size
    net = model.encoder.eval()
    sample = torch.rand(4, 1, s, s, generator=torch.Generator().manual_seed(0))
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(net, (sample,), buf, input_names=["images"], output_names=["codes"],
                          dynamic_axes={"images": {0: "batch"}, "codes": {0: "batch"}},
                          opset_version=17, dynamo=False)
    write_bytes(out, buf.getvalue())
    info["checked"] = ort is not None
    info["max_abs_diff"] = check_onnx(net, out, sample) if ort is not None else None
    return info


def check_onnx(net: torch.nn.Module, path: str | os.PathLike, images: torch.Tensor) -> float:
    """Max abs difference between torch and ONNX Runtime codes of ``images`` (N,1,S,S) float32.

    Raises :class:`OnnxCheckUnavailable` without onnxruntime, RuntimeError above
    :data:`ONNX_TOLERANCE`.
    """
    ort = _onnxruntime()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(["codes"], {"images": images.numpy().astype(np.float32)})[0]
    with torch.no_grad():
        want = net(images).numpy()
    diff = float(np.abs(got - want).max())
    if diff > ONNX_TOLERANCE:
        raise RuntimeError(f"ONNX export of {path} disagrees with torch: max abs difference {diff:.2e} "
                           f"> {ONNX_TOLERANCE:.0e}")
    return diff

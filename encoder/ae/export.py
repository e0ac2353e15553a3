"""Export the encoder for inference without Lightning.

* ``.pt``: the pickle-free encoder file (config + weights), read by
  :func:`encoder.ae.inference.load_encoder` (needs only torch and this package).
* ``.onnx``: the encoder graph (input ``images`` (N,1,S,S) float32 in [0,1], output ``codes``
  (N,D)), with a dynamic batch axis. When onnxruntime is installed the export is checked:
  codes from ONNX Runtime and from torch must agree (max abs difference reported).

Example:
    >>> export_encoder("runs/train/checkpoints/last.ckpt", "runs/encoder.onnx")   # doctest: +SKIP
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch

from encoder.atomic import write_bytes
from encoder.ae.inference import fingerprint, load_model, save_encoder

ONNX_TOLERANCE = 1e-4


class _EncodeOnly(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.encoder = model.encoder

    def forward(self, images):
        return self.encoder(images)


def export_encoder(checkpoint: str | os.PathLike, out: str | os.PathLike, check: bool = True) -> dict:
    """Write the encoder of ``checkpoint`` to ``out`` (.onnx or .pt); return what was written."""
    out = Path(out)
    model = load_model(checkpoint)
    info = {"checkpoint": str(checkpoint), "output": str(out), "fingerprint": fingerprint(model),
            "code_dim": model.code_dim, "image_size": model.image_size}
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".pt":
        save_encoder(model, out)
        return info
    if out.suffix != ".onnx":
        raise ValueError(f"export target must end in .onnx or .pt, got {out.name!r}")
    s = model.image_size
    net = _EncodeOnly(model).eval()
    sample = torch.rand(4, 1, s, s, generator=torch.Generator().manual_seed(0))
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(net, (sample,), buf, input_names=["images"], output_names=["codes"],
                          dynamic_axes={"images": {0: "batch"}, "codes": {0: "batch"}},
                          opset_version=17, dynamo=False)
    write_bytes(out, buf.getvalue())
    if check:
        info["max_abs_diff"] = check_onnx(net, out, sample)
    return info


def check_onnx(net: torch.nn.Module, path: str | os.PathLike, images: torch.Tensor) -> float | None:
    """Max abs difference between torch and ONNX Runtime codes (None if onnxruntime is missing)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(["codes"], {"images": images.numpy().astype(np.float32)})[0]
    with torch.no_grad():
        want = net(images).numpy()
    diff = float(np.abs(got - want).max())
    if diff > ONNX_TOLERANCE:
        raise RuntimeError(f"ONNX export of {path} disagrees with torch: max abs difference {diff:.2e} "
                           f"> {ONNX_TOLERANCE:.0e}")
    return diff

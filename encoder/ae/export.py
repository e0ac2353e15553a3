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
import json
import os
from pathlib import Path

import numpy as np
import torch

from encoder.ae.inference import fingerprint, load_model, save_encoder
from encoder.ae.model import ConvAutoencoder
from encoder.ae.runtime import ONNX_FILES
from encoder.atomic import write_bytes

ONNX_TOLERANCE = 1e-4


class OnnxCheckUnavailable(ImportError):
    """``check=True`` but onnxruntime is not installed."""


def _onnxruntime():
    """The onnxruntime module, or :class:`OnnxCheckUnavailable` saying how to go on."""
    try:
        import onnxruntime  # late: only a checked ONNX export needs it, and it is optional
    except ImportError:
        raise OnnxCheckUnavailable(
            "checking the ONNX export against torch needs the onnxruntime package, which is not "
            "installed: install onnxruntime, or pass --no-check (check=False) to write it unchecked"
        ) from None
    return onnxruntime


def export_encoder(checkpoint: str | os.PathLike, out: str | os.PathLike, check: bool = True) -> dict:
    """Write the encoder of ``checkpoint`` to ``out`` (.onnx or .pt); return what was written.

    For ``.onnx`` the info holds ``checked`` and ``max_abs_diff`` (None when ``check=False``);
    a difference above :data:`ONNX_TOLERANCE` raises RuntimeError.
    """
    out = Path(out)
    if out.suffix not in (".pt", ".onnx"):
        raise ValueError(f"export target must end in .onnx or .pt, got {out.name!r}")
    ort = _onnxruntime() if check and out.suffix == ".onnx" else None  # before anything is written
    model = load_model(checkpoint)
    info = {
        "checkpoint": str(checkpoint),
        "output": str(out),
        "fingerprint": fingerprint(model),
        "code_dim": model.code_dim,
        "image_size": model.image_size,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".pt":
        save_encoder(model, out)
        return info
    data, diff = onnx_graph(model, "encoder", check=ort is not None)
    write_bytes(out, data)
    info["checked"] = ort is not None
    info["max_abs_diff"] = diff
    return info


def onnx_graph(model: ConvAutoencoder, part: str = "encoder", *, check: bool = True) -> tuple[bytes, float | None]:
    """One half of ``model`` as an ONNX graph with a dynamic batch axis -> (bytes, max abs difference).

    ``part="encoder"``: input ``images`` (N,1,S,S) float32 in [0,1], output ``codes`` (N,D);
    ``"decoder"``: input ``codes``, output ``images`` (N,1,S,S), not clamped (clamp to [0,1]
    after, as :meth:`ConvAutoencoder.decode` does). With ``check`` ONNX Runtime's output on a
    seeded random batch is compared with torch's (RuntimeError above :data:`ONNX_TOLERANCE`).
    """
    if part not in ("encoder", "decoder"):
        raise ValueError(f"part={part!r} must be 'encoder' or 'decoder'")
    net = (model.encoder if part == "encoder" else model.decoder).eval()
    g = torch.Generator().manual_seed(0)
    sample = (
        torch.rand(4, 1, model.image_size, model.image_size, generator=g)
        if part == "encoder"
        else torch.randn(4, model.code_dim, generator=g)
    )
    names = (["images"], ["codes"]) if part == "encoder" else (["codes"], ["images"])
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            net.float().cpu(),
            (sample,),
            buf,
            input_names=names[0],
            output_names=names[1],
            dynamic_axes={names[0][0]: {0: "batch"}, names[1][0]: {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    data = buf.getvalue()
    return data, (check_onnx(net, data, sample) if check else None)


def check_onnx(net: torch.nn.Module, graph: str | os.PathLike | bytes, inputs: torch.Tensor) -> float:
    """Max abs difference between torch and ONNX Runtime outputs of ``inputs`` for a graph (file or bytes).

    Raises :class:`OnnxCheckUnavailable` without onnxruntime, RuntimeError above
    :data:`ONNX_TOLERANCE`.
    """
    ort = _onnxruntime()
    sess = ort.InferenceSession(graph if isinstance(graph, bytes) else str(graph), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: inputs.numpy().astype(np.float32)})[0]
    with torch.no_grad():
        want = net(inputs).numpy()
    diff = float(np.abs(got - want).max())
    if diff > ONNX_TOLERANCE:
        where = "the graph" if isinstance(graph, bytes) else str(graph)
        raise RuntimeError(
            f"ONNX export of {where} disagrees with torch: max abs difference {diff:.2e} > {ONNX_TOLERANCE:.0e}"
        )
    return diff


def onnx_attachments(model: ConvAutoencoder) -> dict[str, bytes]:
    """The files an ae index keeps so its queries run on ONNX Runtime (see :mod:`encoder.ae.runtime`):
    ``encoder.onnx``, ``decoder.onnx`` (both checked against torch) and ``onnx.json`` (the model's
    fingerprint, sizes and the measured max abs differences)."""
    enc, d_enc = onnx_graph(model, "encoder")
    dec, d_dec = onnx_graph(model, "decoder")
    info = {
        "fingerprint": fingerprint(model),
        "code_dim": model.code_dim,
        "image_size": model.image_size,
        "max_abs_diff": {"encoder": d_enc, "decoder": d_dec},
        "tolerance": ONNX_TOLERANCE,
    }
    return dict(zip(ONNX_FILES, (enc, dec, json.dumps(info, indent=1).encode())))

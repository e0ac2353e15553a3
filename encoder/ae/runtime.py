"""Running a trained encoder over image files, and the torch-free ONNX encoder for queries.

:func:`encode_paths` works with any encoder object that has ``image_size``, ``code_dim`` and
``encode(images)``: the torch :class:`encoder.ae.inference.Encoder` or :class:`OnnxEncoder`.

:class:`OnnxEncoder` runs the encoder and decoder graphs that ``search.py index --method ae``
stores in the index folder (``encoder.onnx``, ``decoder.onnx``, checked against torch when they
are written) with ONNX Runtime: a query then loads onnxruntime (0.25 s) instead of torch (2 s),
so a one-image query answers in well under a second. Its codes equal torch's within
:data:`encoder.ae.export.ONNX_TOLERANCE` (measured max abs difference in the index meta).

Example::

    >>> enc = OnnxEncoder(enc_bytes, dec_bytes, fingerprint="481662184111c3e9", code_dim=128,
    ...                   image_size=64)                                    # doctest: +SKIP
    >>> codes, kept = encode_paths(enc, ["a.png"])                         # (1, 128) float32
    >>> enc.decode(codes).shape                                            # (1, 64, 64) in [0, 1]
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from encoder.data import decode_folder, decoding_pool, decoding_workers


def encode_paths(
    enc: Any,
    paths: Sequence[str | os.PathLike],
    batch_size: int = 256,
    errors: list | None = None,
    progress: bool = False,
    workers: int = 0,
    decode: Callable | None = None,
) -> tuple[np.ndarray, list[Path]]:
    """Decode and encode image files in batches.

    Returns ``(codes (M*R, code_dim) float32, kept paths (M))``; unreadable files are appended to
    ``errors`` as ``(path, reason)`` and left out. ``decode(chunk, pool) -> (arrays, kept rows,
    skipped)`` replaces the one-picture decoding: arrays ``(M, S, S)`` or ``(M, R, S, S)`` (R rows
    per file, such as the views of :mod:`encoder.search.views`).
    """
    from tqdm import tqdm  # late: only this function draws a progress bar

    if decode is None:

        def decode(chunk, pool):
            return decode_folder(chunk, enc.image_size, workers, progress=False, pool=pool)

    paths = [Path(p) for p in paths]
    codes, kept = [], []
    step = max(batch_size, 2048)
    bar = tqdm(total=len(paths), desc="encoding", unit="img", disable=not progress, file=sys.stderr)
    many = len(paths) >= 500 and decoding_workers(workers) > 1
    with decoding_pool(workers) if many else nullcontext() as pool:  # one pool for all chunks
        for i in range(0, len(paths), step):
            chunk = paths[i : i + step]
            images, rows, skipped = decode(chunk, pool)
            if errors is not None:
                errors.extend(skipped)
            if len(images):
                codes.append(enc.encode(images.reshape(-1, enc.image_size, enc.image_size), batch_size))
                kept += [chunk[r] for r in rows]
            bar.update(len(chunk))
    bar.close()
    out = np.concatenate(codes) if codes else np.zeros((0, enc.code_dim), np.float32)
    return out, kept


class BatchedCoder:
    """``encode``/``decode`` in batches with their shape checks; subclasses run one batch.

    Subclasses set ``code_dim`` and ``image_size`` and define ``_encode_batch`` ((n,1,S,S)
    float32 in [0,1] -> (n,D)) and ``_decode_batch`` ((n,D) float32 -> (n,S,S) in [0,1]).
    """

    code_dim: int
    image_size: int

    def encode(self, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """``(N,S,S)`` float32 in [0,1] (or uint8) -> ``(N, code_dim)`` float32."""
        images = np.asarray(images)
        s = self.image_size
        if images.ndim != 3 or images.shape[1:] != (s, s):
            raise ValueError(f"expected images of shape (N, {s}, {s}), got {images.shape}")
        out = np.empty((len(images), self.code_dim), np.float32)
        for i in range(0, len(images), batch_size):
            x = images[i : i + batch_size]
            x = x.astype(np.float32) / np.float32(255) if x.dtype == np.uint8 else x.astype(np.float32)
            out[i : i + batch_size] = self._encode_batch(np.ascontiguousarray(x[:, None]))
        return out

    def decode(self, codes: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """``(N, code_dim)`` -> ``(N,S,S)`` float32 in [0,1]."""
        codes = np.asarray(codes, np.float32)
        if codes.ndim != 2 or codes.shape[1] != self.code_dim:
            raise ValueError(f"expected codes of shape (N, {self.code_dim}), got {codes.shape}")
        out = np.empty((len(codes), self.image_size, self.image_size), np.float32)
        for i in range(0, len(codes), batch_size):
            out[i : i + batch_size] = self._decode_batch(np.ascontiguousarray(codes[i : i + batch_size]))
        return out

    def _encode_batch(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _decode_batch(self, z: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class OnnxEncoder(BatchedCoder):
    """The encoder and decoder graphs of one model, run by ONNX Runtime on the CPU (no torch).

    Same interface as :class:`encoder.ae.inference.Encoder`: ``fingerprint``, ``path``,
    ``code_dim``, ``image_size``, ``encode(images)``, ``decode(codes)``.
    """

    def __init__(
        self,
        encoder_onnx: bytes,
        decoder_onnx: bytes | None,
        *,
        fingerprint: str,
        code_dim: int,
        image_size: int,
        path: str = "<onnx>",
        threads: int | None = None,
    ):
        import onnxruntime as ort  # late: only queries of an ae index need it

        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # its warnings about unused initialisers are noise here
        if threads:
            opts.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        self._enc = ort.InferenceSession(encoder_onnx, opts, providers=providers)
        self._dec = ort.InferenceSession(decoder_onnx, opts, providers=providers) if decoder_onnx else None
        self.fingerprint, self.code_dim, self.image_size, self.path = fingerprint, code_dim, image_size, path

    def _encode_batch(self, x: np.ndarray) -> np.ndarray:
        return self._enc.run(None, {"images": x})[0]

    def _decode_batch(self, z: np.ndarray) -> np.ndarray:
        if self._dec is None:
            raise ValueError("this ONNX encoder has no decoder graph")
        return np.clip(self._dec.run(None, {"codes": z})[0][:, 0], 0, 1)


# The files an ae index keeps (written by encoder.ae.export.onnx_attachments): graphs and their info.
ONNX_FILES = ("encoder.onnx", "decoder.onnx", "onnx.json")


def onnx_encoder_for_index(meta: dict, attachments: dict[str, bytes]) -> OnnxEncoder | None:
    """The :class:`OnnxEncoder` an ae index keeps (:func:`encoder.ae.export.onnx_attachments`), or
    None when it has none, when they are of another model than the index's codes, or when
    onnxruntime is not installed (then the caller loads the checkpoint with torch)."""
    import importlib.util
    import json

    if not set(ONNX_FILES) <= set(attachments):
        return None
    info = json.loads(attachments["onnx.json"])
    if info.get("fingerprint") != meta.get("version") or importlib.util.find_spec("onnxruntime") is None:
        return None
    return OnnxEncoder(
        attachments["encoder.onnx"],
        attachments["decoder.onnx"],
        fingerprint=info["fingerprint"],
        code_dim=int(info["code_dim"]),
        image_size=int(info["image_size"]),
        path=f"{meta.get('checkpoint')} (ONNX graphs in the index)",
    )


__all__ = ["encode_paths", "BatchedCoder", "OnnxEncoder", "ONNX_FILES", "onnx_encoder_for_index"]

"""Reconstruction: images -> codes -> images, quality (PSNR, SSIM) and grids.

Arrays are ``(N, S, S)`` float32 grey in [0, 1].

Example:
    >>> from encoder.ae.inference import load_encoder                     # doctest: +SKIP
    >>> enc = load_encoder("runs/train/checkpoints/last.ckpt")     # doctest: +SKIP
    >>> result = reconstruct_paths(enc, ["a.png"], "runs/recon")   # doctest: +SKIP
    >>> result["mean_psnr"]                                        # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from encoder.atomic import finite, save_npy, write_bytes, write_json, write_text
from encoder.data import decode_folder, relative_id
from encoder.metrics import psnr, ssim


def grid_image(rows: Sequence[np.ndarray], pad: int = 2) -> np.ndarray:
    """Tile rows of ``(N,S,S)`` images into one uint8 picture (white padding)."""
    n = max(len(r) for r in rows)
    s = rows[0].shape[1]
    out = np.full((len(rows) * (s + pad) + pad, n * (s + pad) + pad), 255, np.uint8)
    for i, r in enumerate(rows):
        for j, im in enumerate(r):
            y, x = pad + i * (s + pad), pad + j * (s + pad)
            out[y : y + s, x : x + s] = np.clip(np.asarray(im) * 255 + 0.5, 0, 255).astype(np.uint8)
    return out


def save_grid(originals: np.ndarray, recons: np.ndarray, out: str | os.PathLike, scale: int = 2) -> None:
    """PNG with originals on the top row and reconstructions below (atomic write)."""
    im = Image.fromarray(grid_image([originals, recons]))
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    write_bytes(out, buf.getvalue())


def reconstruct_paths(
    enc,
    paths: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    root: str | os.PathLike | None = None,
    grid_n: int = 16,
    batch_size: int = 256,
    errors: list | None = None,
    save_images: bool = False,
) -> dict:
    """Encode ``paths``, decode the codes, write results under ``out``; return the summary.

    Writes ``codes.npy`` (float32, row order of ``ids.json``), ``ids.json``, ``grid.png``
    (``grid_n`` originals spread over the set, over their reconstructions), ``metrics.csv`` (per image PSNR
    and SSIM), ``summary.json``; with ``save_images`` also ``images/<id>.png`` per reconstruction.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    errors = [] if errors is None else errors
    images, rows, skipped = decode_folder([Path(p) for p in paths], enc.image_size, progress=len(paths) > 500)
    errors.extend(skipped)
    kept = [Path(paths[r]) for r in rows]
    if not kept:
        raise ValueError(f"none of the {len(paths)} input images could be read")
    x = images.astype(np.float32) / 255.0
    codes = enc.encode(x, batch_size)
    recon = enc.decode(codes, batch_size)
    p, s = psnr(x, recon, per_image=True), ssim(x, recon)
    base = Path(root) if root else Path(os.path.commonpath([str(k.absolute().parent) for k in kept]))
    ids = [relative_id(k, base) for k in kept]
    save_npy(out / "codes.npy", codes)
    write_json(out / "ids.json", ids)
    show = np.unique(np.linspace(0, len(x) - 1, min(grid_n, len(x))).round().astype(int))  # spread over the set
    save_grid(x[show], recon[show], out / "grid.png")
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "psnr_db", "ssim"])
    for i, pp, ss in zip(ids, p, s):
        w.writerow([i, f"{pp:.3f}", f"{ss:.4f}"])
    write_text(out / "metrics.csv", buf.getvalue())
    if save_images:
        decode_to_files(recon, ids, out / "images")
    summary = {
        "count": len(ids),
        "skipped": len(errors),
        "mean_psnr": finite(float(np.mean(p))),
        "median_psnr": finite(float(np.median(p))),
        "mean_ssim": float(np.mean(s)),
        "checkpoint": enc.path,
        "fingerprint": enc.fingerprint,
        "code_dim": enc.code_dim,
        "outputs": {k: str(out / k) for k in ("codes.npy", "ids.json", "grid.png", "metrics.csv")},
    }
    write_json(out / "summary.json", summary)
    return summary


def decode_to_files(images: np.ndarray, names: Sequence[str], out: str | os.PathLike) -> list[Path]:
    """Save ``(N,S,S)`` images in [0,1] as PNGs named after ``names`` (``.png`` appended)."""
    written = []
    for im, name in zip(images, names):
        dest = Path(out) / (Path(name).as_posix() + ".png")
        dest.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        Image.fromarray(np.clip(im * 255 + 0.5, 0, 255).astype(np.uint8), "L").save(buf, "PNG")
        write_bytes(dest, buf.getvalue())
        written.append(dest)
    return written


def load_codes(path: str | os.PathLike, code_dim: int | None = None) -> np.ndarray:
    """Read a ``.npy`` of float codes (never pickles); checks it is 2-D (N, code_dim)."""
    path = Path(path)
    try:
        codes = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"codes file not found: {path}") from None
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"cannot read codes file {path}: expected a .npy array of float codes ({e})") from None
    if codes.ndim != 2 or not np.issubdtype(codes.dtype, np.floating):
        raise ValueError(
            f"codes file {path}: expected a 2-D float array (N, code_dim), got shape {codes.shape} dtype {codes.dtype}"
        )
    if code_dim is not None and codes.shape[1] != code_dim:
        raise ValueError(
            f"codes file {path} holds {codes.shape[1]}-d codes but the checkpoint's code size is {code_dim}"
        )
    return codes.astype(np.float32)

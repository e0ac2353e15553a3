"""Encoding a huge folder at scale: Lightning ``predict`` + a writer of per-rank code shards.

Each process (one per GPU/CPU device, any number of nodes with DDP) encodes its share of the
files and :class:`CodeShardWriter` writes, per rank, a folder ``rank_00003/`` holding::

    codes.npy     (M, D) float32 codes of the readable images of that rank
    rows.npy      (M,)   int64 their positions in the input file list
    skipped.json  [[row, reason], ...] the files the rank could not read, and why

Each rank folder is written atomically (``encoder.atomic.atomic_dir``), plain ``.npy`` and
JSON only (no pickle). :func:`merge_shards` joins the shards in row order and drops the
duplicates that ``DistributedSampler`` adds to give every rank the same number of items.

Inference runs the loaded model it is handed, wrapped in :class:`PredictModule` (a few lines, no
training system), so the checkpoint is read once and the codes are those of :func:`load_encoder`.

Example (2 CPU processes; ``search.py index --method ae --devices 2 --strategy ddp`` does this)::

    >>> res = predict_codes(load_model("model.pt"), paths, "runs/shards",      # doctest: +SKIP
    ...                     devices=2, strategy="ddp", accelerator="cpu")
    >>> res.codes.shape, res.rows[:3], res.skipped                            # doctest: +SKIP
    ((41, 128), array([0, 1, 2]), [(17, 'cannot identify image file')])
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter

from encoder.ae.datamodule import PathDataset
from encoder.ae.inference import Encoder, load_model
from encoder.ae.model import ConvAutoencoder
from encoder.atomic import atomic_dir, save_npy


class PredictedCodes(NamedTuple):
    """Codes of the readable files, in input order, and the files that were skipped.

    ``codes`` (M, D) float32; ``rows`` (M,) int64 ascending positions in the input list;
    ``skipped`` ``[(row, reason)]`` ascending, one per file that could not be read.
    """

    codes: np.ndarray
    rows: np.ndarray
    skipped: list[tuple[int, str]]


class PredictModule(pl.LightningModule):
    """Lightning ``predict`` over a loaded :class:`ConvAutoencoder` (inference only: no losses, no optimiser).

    ``predict_step`` takes ``(images (B,1,S,S) uint8, rows (B,) int64, valid (B,) bool, reasons)`` as
    :class:`encoder.ae.datamodule.PathDataset` yields them and returns ``{"codes": (B,D) float32,
    "index", "valid", "skipped": [(row, reason)]}`` for :class:`CodeShardWriter`.
    """

    def __init__(self, model: ConvAutoencoder):
        super().__init__()
        # channels-last as Encoder runs it: the same convolution kernels, so the same codes
        self.model = model.eval().to(memory_format=torch.channels_last)

    def predict_step(self, batch, batch_idx, dataloader_idx: int = 0) -> dict[str, Any]:
        images, rows, valid, reasons = batch
        x = (images if images.ndim == 4 else images.unsqueeze(1)).float().div_(255.0)
        codes = self.model.encode(x.contiguous(memory_format=torch.channels_last))
        skipped = [(int(r), str(why)) for r, ok, why in zip(rows.tolist(), valid.tolist(), reasons) if not ok]
        return {
            "codes": codes.float().cpu(),
            "index": rows.long().cpu(),
            "valid": valid.bool().cpu(),
            "skipped": skipped,
        }


def _rank_dir(out: Path, rank: int) -> Path:
    return out / f"rank_{rank:05d}"


class CodeShardWriter(BasePredictionWriter):
    """Writes the codes each rank predicted (``predict_step`` dicts with codes/index/valid/skipped)."""

    def __init__(self, output_dir: str | os.PathLike):
        super().__init__(write_interval="epoch")
        self.output_dir = Path(output_dir)

    def write_on_epoch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        predictions: Sequence[Any],
        batch_indices: Sequence[Any] | None,
    ) -> None:
        write_shard(self.output_dir, trainer.global_rank, list(_flatten(predictions)))
        trainer.strategy.barrier("code-shards-written")  # rank 0 merges only once every shard exists


def _flatten(predictions):
    for p in predictions:
        if isinstance(p, dict):
            yield p
        else:  # several dataloaders: a list per loader
            yield from _flatten(p)


def write_shard(output_dir: str | os.PathLike, rank: int, batches: Sequence[dict[str, Any]]) -> Path:
    """Write one rank's batches atomically.

    Each batch is ``{"codes": (B,D) float, "index": (B,) int, "valid": (B,) bool,
    "skipped": [(row, reason)]}`` as :meth:`PredictModule.predict_step` returns it.
    """
    if batches:
        codes = torch.cat([b["codes"] for b in batches]).float().numpy()
        rows = torch.cat([b["index"] for b in batches]).long().numpy()
        valid = torch.cat([b["valid"] for b in batches]).bool().numpy()
    else:
        codes, rows, valid = np.zeros((0, 0), np.float32), np.zeros(0, np.int64), np.zeros(0, bool)
    skipped = [[int(r), str(why)] for b in batches for r, why in b["skipped"]]
    target = _rank_dir(Path(output_dir), rank)
    with atomic_dir(target) as tmp:
        save_npy(tmp / "codes.npy", codes[valid])
        save_npy(tmp / "rows.npy", rows[valid])
        (tmp / "skipped.json").write_text(json.dumps(skipped))  # the folder as a whole is atomic
    return target


def _read_shard(d: Path) -> tuple[np.ndarray, np.ndarray, list]:
    try:
        c = np.load(d / "codes.npy", allow_pickle=False)
        r = np.load(d / "rows.npy", allow_pickle=False)
        skipped = json.loads((d / "skipped.json").read_text())
    except (OSError, ValueError) as e:  # json.JSONDecodeError is a ValueError
        raise ValueError(f"code shard {d} is unreadable: {e}") from None
    if c.ndim != 2 or r.ndim != 1 or len(c) != len(r):
        raise ValueError(f"code shard {d}: {c.shape} codes but {r.shape} rows")
    if not isinstance(skipped, list) or not all(isinstance(s, list) and len(s) == 2 for s in skipped):
        raise ValueError(f"code shard {d}: skipped.json must list [row, reason] pairs")
    return c, r, skipped


def merge_shards(output_dir: str | os.PathLike) -> PredictedCodes:
    """Join all rank shards into one :class:`PredictedCodes` (rows ascending, each once).

    A row seen twice (sampler padding) is kept once. Raises ValueError naming a shard whose
    files disagree, FileNotFoundError when there is none.
    """
    out = Path(output_dir)
    dirs = sorted(out.glob("rank_*")) if out.is_dir() else []
    dirs = [d for d in dirs if d.is_dir() and not d.name.startswith(".")]
    if not dirs:
        raise FileNotFoundError(f"no code shards (rank_*/codes.npy) in {out}")
    codes, rows, skipped = [], [], {}
    for d in dirs:
        c, r, s = _read_shard(d)
        if len(c):
            codes.append(c.astype(np.float32, copy=False))
            rows.append(r.astype(np.int64, copy=False))
        skipped.update((int(row), str(why)) for row, why in s)
    dims = {c.shape[1] for c in codes}
    if len(dims) > 1:
        raise ValueError(f"code shards in {out} have different code widths {sorted(dims)}")
    all_rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    all_codes = np.concatenate(codes) if codes else np.zeros((0, 0), np.float32)
    uniq, first = np.unique(all_rows, return_index=True)  # sorted rows, one each
    return PredictedCodes(all_codes[first], uniq, sorted(skipped.items()))


def predict_codes(
    model: ConvAutoencoder | Encoder | str | os.PathLike,
    paths: Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    *,
    devices: int | str = 1,
    strategy: str = "auto",
    accelerator: str = "auto",
    num_nodes: int = 1,
    batch_size: int = 256,
    num_workers: int = 0,
) -> PredictedCodes | None:
    """Encode ``paths`` with Lightning ``predict`` + :class:`CodeShardWriter`, then merge the shards.

    ``model``: the loaded :class:`ConvAutoencoder` (or the :class:`Encoder` holding it), or a
    checkpoint path, read with :func:`load_model`. Returns :class:`PredictedCodes` ``(codes, rows,
    skipped)`` on global rank 0 and ``None`` on the other ranks (they only encode); ``skipped``
    holds ``(row in paths, reason)`` of every file that could not be read. With ``strategy="ddp"``
    Lightning starts the other processes by re-running the current command, so call this from a
    script's ``main``.
    """
    if isinstance(model, Encoder):
        model = model.model
    elif not isinstance(model, ConvAutoencoder):
        model = load_model(model)
    out = Path(output_dir)
    for stale in out.glob("rank_*") if out.is_dir() else []:  # every process clears before any writes
        shutil.rmtree(stale, ignore_errors=True)
    loader = torch.utils.data.DataLoader(
        PathDataset(list(paths), model.image_size), batch_size=batch_size, num_workers=num_workers, shuffle=False
    )
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=devices,
        strategy=strategy,
        num_nodes=num_nodes,
        callbacks=[CodeShardWriter(output_dir)],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=len(paths) > 1000,
        default_root_dir=str(output_dir),
    )
    home = next(model.parameters()).device
    try:
        trainer.predict(PredictModule(model), dataloaders=loader, return_predictions=False)
    finally:  # Lightning moved the model to its accelerator; the caller's Encoder still runs it where it was
        model.to(home)
    if trainer.global_rank != 0:
        return None
    res = merge_shards(output_dir)
    seen = len(set(res.rows.tolist()) | {row for row, _ in res.skipped})
    if seen != len(paths):
        raise ValueError(f"code shards in {out} cover {seen} of {len(paths)} files (a rank failed?)")
    return res

"""Encoding a huge folder at scale: Lightning ``predict`` + a writer of resumable code parts.

The input list is cut into groups of ``group_size`` consecutive rows; each process (one per
GPU/CPU device, any number of nodes with DDP) encodes whole groups, and :class:`CodeShardWriter`
writes each group as soon as it is encoded, as a folder named by the rows it covers,
``part-000000004096-000000008192/``::

    codes.npy     (M, D) float32 codes of the readable images of those rows
    rows.npy      (M,)   int64 their positions in the input file list
    part.json     {"model": fingerprint, "files": digest of the list, "rows": [start, stop],
                   "skipped": [[row, reason], ...]}

Each part is written atomically (``encoder.atomic.atomic_dir``), plain ``.npy`` and JSON only (no
pickle). ``manifest.json`` beside the parts names the model fingerprint, the digest of the file
list and the group size; a rerun with the same model and paths encodes only the groups without a
part (any device count: parts are named by rows, not by rank), and parts or a manifest of another
model or file list are refused by name. :func:`merge_shards` joins the parts in row order.

Inference runs the loaded model it is handed, wrapped in :class:`PredictModule` (a few lines, no
training system), so the checkpoint is read once and the codes are those of :func:`load_encoder`.

Example (2 CPU processes; ``search.py index --method ae --devices 2 --strategy ddp`` does this)::

    >>> res = predict_codes(load_model("model.pt"), paths, "runs/shards",      # doctest: +SKIP
    ...                     devices=2, strategy="ddp", accelerator="cpu")
    >>> res.codes.shape, res.rows[:3], res.skipped                            # doctest: +SKIP
    ((41, 128), array([0, 1, 2]), [(17, 'cannot identify image file')])
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter

from encoder.ae.datamodule import PathDataset
from encoder.ae.inference import Encoder, fingerprint, load_model
from encoder.ae.model import ConvAutoencoder
from encoder.atomic import atomic_dir, save_npy, write_text


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
    :class:`GroupDataset` yields them (encoded ``batch_size`` at a time) and returns ``{"codes": (B,D) float32,
    "index", "valid", "skipped": [(row, reason)]}`` for :class:`CodeShardWriter`.
    """

    def __init__(self, model: ConvAutoencoder, batch_size: int | None = None):
        super().__init__()
        # channels-last as Encoder runs it: the same convolution kernels, so the same codes
        self.model = model.eval().to(memory_format=torch.channels_last)
        self.batch_size = batch_size

    def predict_step(self, batch, batch_idx, dataloader_idx: int = 0) -> dict[str, Any]:
        images, rows, valid, reasons = batch
        x = (images if images.ndim == 4 else images.unsqueeze(1)).float().div_(255.0)
        step = self.batch_size or max(len(x), 1)  # a row group is encoded batch_size images at a time
        chunks = [x[i : i + step].contiguous(memory_format=torch.channels_last) for i in range(0, len(x), step)]
        codes = torch.cat([self.model.encode(c) for c in chunks])
        skipped = [(int(r), str(why)) for r, ok, why in zip(rows.tolist(), valid.tolist(), reasons) if not ok]
        return {
            "codes": codes.float().cpu(),
            "index": rows.long().cpu(),
            "valid": valid.bool().cpu(),
            "skipped": skipped,
        }


MANIFEST = "manifest.json"


class RunKey(NamedTuple):
    """What a folder of parts was written for: the model ``fingerprint``, a ``files`` digest of the
    input list, its length ``n`` and the ``group`` size (rows per part)."""

    model: str
    files: str
    n: int
    group: int


def files_digest(paths: Sequence[str | os.PathLike]) -> str:
    """16 hex digits of the ordered path list (rows are positions in it)."""
    h = hashlib.sha256()
    for p in paths:
        h.update(os.fsencode(str(p)) + b"\0")
    return h.hexdigest()[:16]


def part_name(start: int, stop: int) -> str:
    return f"part-{start:012d}-{stop:012d}"


def default_group_size(n: int) -> int:
    """Rows per part for an input list of ``n`` files: at most 1024, and at least 64 parts, so up to 64
    devices share a small list; it depends on ``n`` only, so a rerun on another device count reuses the parts."""
    return min(1024, max(1, -(-n // 64)))


def groups(n: int, group: int) -> list[tuple[int, int]]:
    """``[(start, stop)]`` row ranges of the parts of an input list of ``n`` files."""
    return [(s, min(s + group, n)) for s in range(0, n, group)]


class GroupDataset(torch.utils.data.Dataset):
    """One item per row group: ``(images (G,1,S,S) uint8, rows (G,) int64, valid (G,) bool, reasons)``,
    the batch :meth:`PredictModule.predict_step` takes (load it one item a batch)."""

    def __init__(self, paths: Sequence[str | os.PathLike], ranges: list[tuple[int, int]], image_size: int = 64):
        self.rows = PathDataset(list(paths), image_size)
        self.ranges = ranges

    def __len__(self) -> int:
        return len(self.ranges)

    def __getitem__(self, i: int):
        items = [self.rows[r] for r in range(*self.ranges[i])]
        images = torch.stack([im for im, _, _, _ in items])
        rows = torch.tensor([r for _, r, _, _ in items], dtype=torch.int64)
        valid = torch.tensor([ok for _, _, ok, _ in items], dtype=torch.bool)
        return images, rows, valid, [why for _, _, _, why in items]


def _only_item(items: list) -> Any:
    """``collate_fn`` of a loader of one group a batch (a batch sampler lets Lightning track the rows)."""
    return items[0]


class CodeShardWriter(BasePredictionWriter):
    """Writes each predicted group (``predict_step`` dict with codes/index/valid/skipped) as one part."""

    def __init__(self, output_dir: str | os.PathLike, key: RunKey):
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self.key = key

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        rows = prediction["index"]
        start = int(rows[0]) if len(rows) else 0
        if not (self.output_dir / part_name(start, start + len(rows))).is_dir():  # a sampler-padded repeat
            write_part(self.output_dir, self.key, [prediction])

    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        trainer.strategy.barrier("code-parts-written")  # rank 0 merges only once every part exists


def write_part(output_dir: str | os.PathLike, key: RunKey, batches: Sequence[dict[str, Any]]) -> Path:
    """Write the batches of one row group atomically as ``part-START-STOP/``.

    Each batch is ``{"codes": (B,D) float, "index": (B,) int, "valid": (B,) bool,
    "skipped": [(row, reason)]}`` as :meth:`PredictModule.predict_step` returns it; together
    they must cover consecutive rows.
    """
    codes = torch.cat([b["codes"] for b in batches]).float().numpy()
    rows = torch.cat([b["index"] for b in batches]).long().numpy()
    valid = torch.cat([b["valid"] for b in batches]).bool().numpy()
    if len(rows) == 0 or not np.array_equal(rows, np.arange(rows[0], rows[0] + len(rows))):
        raise ValueError(f"a code part must cover consecutive rows, got {rows[:8].tolist()}...")
    start, stop = int(rows[0]), int(rows[-1]) + 1
    skipped = [[int(r), str(why)] for b in batches for r, why in b["skipped"]]
    meta = {"model": key.model, "files": key.files, "rows": [start, stop], "skipped": skipped}
    target = Path(output_dir) / part_name(start, stop)
    with atomic_dir(target) as tmp:
        save_npy(tmp / "codes.npy", codes[valid])
        save_npy(tmp / "rows.npy", rows[valid])
        (tmp / "part.json").write_text(json.dumps(meta))  # the folder as a whole is atomic
    return target


def _part_meta(d: Path, key: RunKey | None) -> dict:
    try:
        meta = json.loads((d / "part.json").read_text())
    except (OSError, ValueError) as e:  # json.JSONDecodeError is a ValueError
        raise ValueError(f"code part {d} is unreadable: {e}") from None
    if not isinstance(meta, dict) or not all(k in meta for k in ("model", "files", "rows", "skipped")):
        raise ValueError(f"code part {d}: part.json must hold model, files, rows and skipped")
    skipped = meta["skipped"]
    if not isinstance(skipped, list) or not all(isinstance(s, list) and len(s) == 2 for s in skipped):
        raise ValueError(f"code part {d}: skipped must list [row, reason] pairs")
    if key is not None and (meta["model"], meta["files"]) != (key.model, key.files):
        raise ValueError(
            f"code part {d} was written by model {meta['model']} over file list {meta['files']}, "
            f"not model {key.model} over {key.files}: remove it or use another shard folder"
        )
    return meta


def _read_part(d: Path, key: RunKey | None) -> tuple[np.ndarray, np.ndarray, list]:
    meta = _part_meta(d, key)
    try:
        c = np.load(d / "codes.npy", allow_pickle=False)
        r = np.load(d / "rows.npy", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"code part {d} is unreadable: {e}") from None
    if c.ndim != 2 or r.ndim != 1 or len(c) != len(r):
        raise ValueError(f"code part {d}: {c.shape} codes but {r.shape} rows")
    return c, r, meta["skipped"]


def _part_dirs(out: Path) -> list[Path]:
    dirs = sorted(out.glob("part-*")) if out.is_dir() else []
    return [d for d in dirs if d.is_dir()]


def merge_shards(output_dir: str | os.PathLike, key: RunKey | None = None) -> PredictedCodes:
    """Join all parts into one :class:`PredictedCodes` (rows ascending, each once).

    With ``key``, a part of another model or file list is refused. Raises ValueError naming a part
    whose files disagree, FileNotFoundError when there is none.
    """
    out = Path(output_dir)
    dirs = _part_dirs(out)
    if not dirs:
        raise FileNotFoundError(f"no code parts (part-*/codes.npy) in {out}")
    codes, rows, skipped = [], [], {}
    for d in dirs:
        c, r, s = _read_part(d, key)
        if len(c):
            codes.append(c.astype(np.float32, copy=False))
            rows.append(r.astype(np.int64, copy=False))
        skipped.update((int(row), str(why)) for row, why in s)
    dims = {c.shape[1] for c in codes}
    if len(dims) > 1:
        raise ValueError(f"code parts in {out} have different code widths {sorted(dims)}")
    all_rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    all_codes = np.concatenate(codes) if codes else np.zeros((0, 0), np.float32)
    uniq, first = np.unique(all_rows, return_index=True)  # sorted rows, one each
    return PredictedCodes(all_codes[first], uniq, sorted(skipped.items()))


def pending_groups(output_dir: str | os.PathLike, key: RunKey) -> list[tuple[int, int]]:
    """Check or write ``manifest.json`` for ``key``; return the row groups that have no part yet.

    Raises ValueError naming the manifest when it was written for another model, file list or
    group size, or naming a part of another model or file list.
    """
    out = Path(output_dir)
    manifest = out / MANIFEST
    if manifest.is_file():
        try:
            old = RunKey(**json.loads(manifest.read_text()))
        except (OSError, ValueError, TypeError) as e:
            raise ValueError(f"code part manifest {manifest} is unreadable: {e}") from None
        if old != key:
            raise ValueError(
                f"code parts in {out} were written for {old._asdict()}, not {key._asdict()} "
                f"(another model, file list or group size): remove {out} or use another shard folder"
            )
    else:
        if _part_dirs(out):
            raise ValueError(f"code parts in {out} have no {MANIFEST}: remove them or use another shard folder")
        write_text(manifest, json.dumps(key._asdict()))  # every rank writes the same bytes
    done = {d.name for d in _part_dirs(out) if _part_meta(d, key)}
    return [g for g in groups(key.n, key.group) if part_name(*g) not in done]


def _encode_groups(model, paths, todo, out: Path, key: RunKey, trainer_kw: dict, batch_size, num_workers) -> int:
    """Run Lightning ``predict`` over the row groups ``todo``, writing their parts; returns the global rank."""
    trainer = pl.Trainer(
        **trainer_kw,
        callbacks=[CodeShardWriter(out, key)],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=len(paths) > 1000,
        default_root_dir=str(out),
    )
    # Lightning's predict sampler gives each rank its own groups without padding and needs one per rank
    todo = todo + todo * (-(-trainer.world_size // len(todo)) - 1)
    loader = torch.utils.data.DataLoader(
        GroupDataset(paths, todo, model.image_size),
        batch_size=1,
        collate_fn=_only_item,
        num_workers=num_workers,
        shuffle=False,
    )
    home = next(model.parameters()).device
    try:
        trainer.predict(PredictModule(model, batch_size), dataloaders=loader, return_predictions=False)
    finally:  # Lightning moved the model to its accelerator; the caller's Encoder still runs it where it was
        model.to(home)
    return trainer.global_rank


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
    group_size: int | None = None,
) -> PredictedCodes | None:
    """Encode ``paths`` with Lightning ``predict`` + :class:`CodeShardWriter`, then merge the parts.

    ``model``: the loaded :class:`ConvAutoencoder` (or the :class:`Encoder` holding it), or a
    checkpoint path, read with :func:`load_model`. Returns :class:`PredictedCodes` ``(codes, rows,
    skipped)`` on global rank 0 and ``None`` on the other ranks (they only encode); ``skipped``
    holds ``(row in paths, reason)`` of every file that could not be read. With ``strategy="ddp"``
    Lightning starts the other processes by re-running the current command, so call this from a
    script's ``main``.

    Parts of ``group_size`` rows (default :func:`default_group_size`) already in ``output_dir`` from
    a run of the same model over the same paths are kept and not encoded again; ValueError names a
    manifest or part of another run.
    """
    if isinstance(model, Encoder):
        model = model.model
    elif not isinstance(model, ConvAutoencoder):
        model = load_model(model)
    out = Path(output_dir)
    key = RunKey(fingerprint(model), files_digest(paths), len(paths), group_size or default_group_size(len(paths)))
    todo = pending_groups(out, key)  # every rank lists before any writes: none writes before the group forms
    if todo:
        trainer_kw = dict(accelerator=accelerator, devices=devices, strategy=strategy, num_nodes=num_nodes)
        if _encode_groups(model, paths, todo, out, key, trainer_kw, batch_size, num_workers) != 0:
            return None
    if not paths:
        return PredictedCodes(np.zeros((0, 0), np.float32), np.zeros(0, np.int64), [])
    res = merge_shards(out, key)
    seen = len(set(res.rows.tolist()) | {row for row, _ in res.skipped})
    if seen != len(paths):
        raise ValueError(f"code parts in {out} cover {seen} of {len(paths)} files (a rank failed?)")
    return res

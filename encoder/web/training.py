"""The Training page's data: loss/PSNR curves from Lightning's CSV logs and the per-epoch grids.

A run folder (``train.py fit``'s ``--trainer.default_root_dir``) holds, per version,
``metrics.csv`` (one row per logged step or epoch) and ``recon_epochNNN.png`` (originals over
reconstructions, written by :class:`encoder.ae.lit` 's grid callback). Both are re-read on each
request, so a run still training shows its latest epoch. Grids are served by their number in
the sorted list, never by a path the client chooses.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from encoder.atomic import finite

MAX_ROWS = 20_000  # rows read per metrics.csv (a long run logs every few steps)


def grids(run_dir: Path) -> list[Path]:
    """Every ``recon_epoch*.png`` under ``run_dir`` (symlinks out of it left out), sorted."""
    out = []
    for p in sorted(run_dir.rglob("recon_epoch*.png")):
        r = p.resolve()
        if r.is_relative_to(run_dir) and r.is_file():
            out.append(r)
    return out


def _number(v: str) -> float | None:
    try:
        return finite(float(v))
    except (TypeError, ValueError):
        return None


def read_metrics(file: Path) -> dict[str, list[list[float]]]:
    """``{column: [[epoch, value], ...]}`` of one metrics.csv: epoch-level values (a column logged
    per step keeps the last value of each epoch)."""
    series: dict[str, dict[float, float]] = {}
    with open(file, newline="") as f:
        for n, row in enumerate(csv.DictReader(f)):
            if n >= MAX_ROWS:
                break
            epoch = _number(row.get("epoch", ""))
            if epoch is None:
                continue
            for col, v in row.items():
                x = _number(v)
                if col in ("epoch", "step") or x is None or col is None:
                    continue
                series.setdefault(col, {})[epoch] = x
    return {c: sorted([e, x] for e, x in pts.items()) for c, pts in sorted(series.items())}


def training(run_dir: Path) -> dict:
    """Every logged run under ``run_dir``: its curves (loss and PSNR columns) and its grids."""
    runs = []
    for f in sorted(run_dir.rglob("metrics.csv")):
        if not f.resolve().is_relative_to(run_dir):
            continue
        curves = {c: s for c, s in read_metrics(f).items() if re.search(r"loss|psnr|ssim", c, re.I)}
        runs.append({"name": f.parent.relative_to(run_dir).as_posix() or ".", "curves": curves})
    shown = [
        {
            "n": n,
            "name": p.relative_to(run_dir).as_posix(),
            "url": f"/training/grids/{n}",
            "epoch": int(m.group(1)) if (m := re.search(r"epoch(\d+)", p.name)) else None,
        }
        for n, p in enumerate(grids(run_dir))
    ]
    return {"runs": runs, "grids": shown}


__all__ = ["training", "grids", "read_metrics"]

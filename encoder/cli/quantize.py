"""The command line of quantize.py: k-means colours -> indexed PNG, with stats and figures.

    python quantize.py photo.jpg -k 16 64 256                # table + PNGs in runs/quantize
    python quantize.py photos/ -k 32 --json --dither --lab   # a folder, JSON rows
    python quantize.py photo.jpg --auto --target-psnr 38 --segment --scatter

Images are read by encoder.data (alpha composited on white). Logic: encoder/palette/.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from encoder import data
from encoder.atomic import write_bytes, write_json
from encoder.palette import plots
from encoder.palette.api import check_n_colors, quantize
from encoder.palette.report import (auto_n_colors, encode_png, format_table, lossless_png_size, palette_stats,
                                    segmentation)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", help="image files and/or folders")
    p.add_argument("-k", "--n-colors", dest="n_colors", type=int, nargs="+", default=[16, 64, 256],
                   help="palette sizes in [2, 256]")
    p.add_argument("-o", "--out", default="runs/quantize", help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    p.add_argument("--baseline", choices=["random"], help="also run the random-palette baseline")
    p.add_argument("--dither", action="store_true", help="Floyd-Steinberg dithering with the fitted palette")
    p.add_argument("--lab", action="store_true", help="cluster and assign in CIE Lab")
    p.add_argument("--auto", action="store_true", help="pick the smallest K meeting --target-psnr / --max-bytes")
    p.add_argument("--target-psnr", type=float, default=None)
    p.add_argument("--max-bytes", type=int, default=None, help="byte budget for the palette PNG (with --auto)")
    p.add_argument("--segment", action="store_true", help="save label maps (grey mask for K=2)")
    p.add_argument("--scatter", action="store_true", help="save 2-D/3-D pixel scatter plots")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for the k-means searches (default: one per core)")
    a = p.parse_args(argv)
    if a.threads is not None and a.threads < 1:
        p.error(f"--threads must be >= 1, got {a.threads}")
    for n in a.n_colors:
        try:
            check_n_colors(n)
        except ValueError as e:
            p.error(f"argument -k/--n-colors: {e}")  # exits 2 with "... n_colors=300 must be an integer in [2, 256] ..."
    if a.auto and (a.target_psnr is None) == (a.max_bytes is None):
        p.error("--auto needs exactly one of --target-psnr or --max-bytes")
    return a


def process(path: Path, ident: str, out: Path, *, n_colors: Sequence[int], seed: int = 0, lab: bool = False,
            dither: bool = False, baseline: str | None = None, auto: bool = False,
            target_psnr: float | None = None, max_bytes: int | None = None, segment: bool = False,
            scatter: bool = False, threads: int | None = None) -> list[dict]:
    """Quantize one image file at each size in ``n_colors`` (or the one ``auto`` picks), write
    its PNGs and figures under ``out`` (named after ``ident``), return its :func:`palette_stats` rows."""
    img = data.load_rgb(path)
    stem = out / Path(ident).with_suffix("").as_posix().replace("/", "__")
    sizes, rows, results = list(n_colors), [], []
    before = lossless_png_size(img)  # the lossless reference, once per image
    if auto:
        n, curve = auto_n_colors(img, target_psnr=target_psnr, max_bytes=max_bytes, seed=seed, lab=lab,
                                 bytes_before=before, threads=threads)
        plots.error_vs_k(curve, f"{stem}_error_vs_k.png", target_psnr, n)
        if n is None:
            print(f"{ident}: no K in [2, 256] meets the target; using K=256", file=sys.stderr)
        sizes = [n or 256]
    runs = [("kmeans", n) for n in sizes] + ([("random", n) for n in sizes] if baseline else [])
    for method, n in runs:
        q = quantize(img, n, seed=seed, method=method, lab=lab, dither=dither, threads=threads)
        tag = f"{stem}_k{n}" + ("_random" if method == "random" else "")
        write_bytes(f"{tag}.png", q.png_bytes())
        row = {"file": ident, "method": method,
               **palette_stats(img, q, source_bytes=path.stat().st_size, bytes_before=before)}
        rows.append(row)
        results.append(q)
        if segment:
            write_bytes(f"{tag}_labels.png", encode_png(segmentation(q)))
            plots.segmentation_figure(img, q, f"{tag}_segment.png")
        if scatter:
            plots.scatter(img, q, f"{tag}_scatter2d.png", f"{tag}_scatter3d.png", seed=seed)
    plots.side_by_side(img, results, f"{stem}_side.png",
                       [f"{m} K={n}" if m != "kmeans" else f"K={n}" for m, n in runs])
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    a = parse(argv)
    try:
        scan = data.image_paths(a.inputs)
    except (FileNotFoundError, NotADirectoryError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out, rows, errors = Path(a.out), [], []
    options = dict(n_colors=a.n_colors, seed=a.seed, lab=a.lab, dither=a.dither, baseline=a.baseline, auto=a.auto,
                   target_psnr=a.target_psnr, max_bytes=a.max_bytes, segment=a.segment, scatter=a.scatter,
                   threads=a.threads)
    for _, r in data.load_each(scan.paths, lambda p: process(p, scan.relative(p), out, **options), errors):
        rows += r
    data.report_skipped(scan.skipped + errors)
    if not rows:
        print(f"error: no image could be processed from {' '.join(a.inputs)}", file=sys.stderr)
        return 1
    # strict JSON: a lossless result's infinite PSNR is written as null
    rows = [{**r, "psnr": None if r["psnr"] == float("inf") else r["psnr"]} for r in rows]
    write_json(out / "results.json", rows)
    if a.json:
        print(json.dumps(rows, indent=1))
    else:
        print(format_table(rows))
        print(f"wrote {out}/ (palette PNGs, figures, results.json)")
    return 0

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

from encoder import data
from encoder.palette import api as palette
from encoder.palette import plots as plots
from encoder.atomic import write_bytes, write_json


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", help="image files and/or folders")
    p.add_argument("-k", type=int, nargs="+", default=[16, 64, 256], help="palette sizes in [2, 256]")
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
    for k in a.k:
        try:
            palette.check_k(k)
        except ValueError as e:
            p.error(str(e))  # exits 2 with "k=300 must be an integer in [2, 256] ..."
    if a.auto and (a.target_psnr is None) == (a.max_bytes is None):
        p.error("--auto needs exactly one of --target-psnr or --max-bytes")
    return a


def process(path: Path, ident: str, a, out: Path) -> list[dict]:
    img = data.load_rgb(path)
    stem = out / Path(ident).with_suffix("").as_posix().replace("/", "__")
    ks, rows, results = list(a.k), [], []
    before = len(palette.png_bytes(img))  # the lossless reference, once per image
    if a.auto:
        k, curve = palette.auto_k(img, target_psnr=a.target_psnr, max_bytes=a.max_bytes, seed=a.seed, lab=a.lab,
                                  bytes_before=before)
        plots.error_vs_k(curve, f"{stem}_error_vs_k.png", a.target_psnr, k)
        if k is None:
            print(f"{ident}: no K in [2, 256] meets the target; using K=256", file=sys.stderr)
        ks = [k or 256]
    runs = [("kmeans", k) for k in ks] + ([("random", k) for k in ks] if a.baseline else [])
    for method, k in runs:
        q = palette.quantize(img, k, seed=a.seed, method=method, lab=a.lab, dither=a.dither)
        tag = f"{stem}_k{k}" + ("_random" if method == "random" else "")
        write_bytes(f"{tag}.png", q.png_bytes())
        row = {"file": ident, "method": method, **palette.evaluate(img, q, source_bytes=path.stat().st_size, bytes_before=before)}
        rows.append(row)
        results.append(q)
        if a.segment:
            write_bytes(f"{tag}_labels.png", palette.encode_png(palette.segmentation(q)))
            plots.segmentation_figure(img, q, f"{tag}_segment.png")
        if a.scatter:
            plots.scatter(img, q, f"{tag}_scatter2d.png", f"{tag}_scatter3d.png", seed=a.seed)
    plots.side_by_side(img, results, f"{stem}_side.png",
                       [f"{m} K={k}" if m != "kmeans" else f"K={k}" for m, k in runs])
    return rows


def main(argv=None) -> int:
    a = parse(argv)
    threads, palette.THREADS = palette.THREADS, a.threads
    try:
        return run(a)
    finally:
        palette.THREADS = threads  # main() is also called as a function (tests, the demo)


def run(a) -> int:
    try:
        scan = data.image_paths(a.inputs)
    except (FileNotFoundError, NotADirectoryError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out, rows, errors = Path(a.out), [], []
    for _, r in data.load_each(scan.paths, lambda p: process(p, scan.relative(p), a, out), errors):
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
        print(palette.format_table(rows))
        print(f"wrote {out}/ (palette PNGs, figures, results.json)")
    return 0


"""The command line of quantize.py: k-means colours -> indexed PNG, like pngquant but k-means.

    python quantize.py photo.jpg                             # -> runs/quantize/photo_k256.png + one line
    python quantize.py photo.jpg -k 16 64 256                # several sizes, side by side in one figure
    python quantize.py photo.jpg -k 16 64 256 --stats        # + lossless PNG "bytes before", exact CIEDE2000
    python quantize.py photos/ -k 32 --json --dither --lab   # a folder (one process per core), JSON rows
    python quantize.py photo.jpg --auto --target-psnr 38 --segment --scatter

The plain call does what pngquant does (one palette PNG per image, 256 colours) and prints one
line per result: PSNR, CIEDE2000 on a 65,536-pixel sample (its standard error shown), colours and
bytes against the source file. ``--stats`` adds what is slow on big photos: the lossless RGB PNG
as "bytes before" (the seeds' compression factor) and CIEDE2000 over every pixel. Figures:
the side-by-side one when several sizes are asked for (or ``--figure``), the others on request.
Images are read by encoder.data (EXIF, modes; alpha composited on white). Logic: encoder/palette/.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from encoder.cli import VersionAction

# Only argparse above: `--help` and bad arguments answer before numpy, faiss and Pillow load
# (0.5 s); matplotlib (0.8 s) loads only when a figure is drawn.


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="quantize.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--version", action=VersionAction)
    p.add_argument("inputs", nargs="+", help="image files and/or folders")
    p.add_argument(
        "-k",
        "--n-colors",
        dest="n_colors",
        type=int,
        nargs="+",
        default=[256],
        help="palette sizes in [2, 256] (default 256, as pngquant)",
    )
    p.add_argument("-o", "--out", default="runs/quantize", help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print JSON rows instead of lines")
    p.add_argument(
        "--stats",
        action="store_true",
        help="also the lossless RGB PNG size ('bytes before', slow on big photos) and CIEDE2000 "
        "over every pixel (default: a 65,536-pixel sample)",
    )
    p.add_argument(
        "--figure",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the side-by-side figure (default: when several sizes are given)",
    )
    p.add_argument("--baseline", choices=["random"], help="also run the random-palette baseline")
    p.add_argument("--dither", action="store_true", help="Floyd-Steinberg dithering with the fitted palette")
    p.add_argument("--lab", action="store_true", help="cluster and assign in CIE Lab")
    p.add_argument("--auto", action="store_true", help="pick the smallest K meeting --target-psnr / --max-bytes")
    p.add_argument("--target-psnr", type=float, default=None)
    p.add_argument("--max-bytes", type=int, default=None, help="byte budget for the palette PNG (with --auto)")
    p.add_argument("--segment", action="store_true", help="save label maps (grey mask for K=2)")
    p.add_argument("--scatter", action="store_true", help="save 2-D/3-D pixel scatter plots")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads for the k-means searches of one image (default: one per core)",
    )
    p.add_argument(
        "--workers", type=int, default=None, help="processes for a folder, one image each (default: one per core)"
    )
    a = p.parse_args(argv)
    for flag in ("threads", "workers"):
        if getattr(a, flag) is not None and getattr(a, flag) < 1:
            p.error(f"--{flag} must be >= 1, got {getattr(a, flag)}")
    from encoder.palette.limits import check_n_colors  # standard library only

    for n in a.n_colors:
        try:
            check_n_colors(n)
        except ValueError as e:
            p.error(f"argument -k/--n-colors: {e}")
    if a.auto and (a.target_psnr is None) == (a.max_bytes is None):
        p.error("--auto needs exactly one of --target-psnr or --max-bytes")
    return a


def process(
    path: Path,
    ident: str,
    out: Path,
    *,
    n_colors: Sequence[int],
    seed: int = 0,
    lab: bool = False,
    dither: bool = False,
    baseline: str | None = None,
    auto: bool = False,
    target_psnr: float | None = None,
    max_bytes: int | None = None,
    stats: bool = False,
    figure: bool | None = None,
    segment: bool = False,
    scatter: bool = False,
    threads: int | None = None,
) -> list[dict]:
    """Quantize one image file at each size in ``n_colors`` (or the one ``auto`` picks), write
    its PNGs and figures under ``out`` (named after ``ident``), return its :func:`palette_stats` rows."""
    from encoder.atomic import write_bytes
    from encoder.data import load_rgb
    from encoder.palette.api import quantize
    from encoder.palette.report import auto_n_colors, lossless_png_size, palette_stats

    img = load_rgb(path)
    stem = out / Path(ident).with_suffix("").as_posix().replace("/", "__")
    sizes, rows, results = list(n_colors), [], []
    before = lossless_png_size(img) if stats else None  # the lossless reference, once per image
    if auto:
        n, curve = auto_n_colors(
            img,
            target_psnr=target_psnr,
            max_bytes=max_bytes,
            seed=seed,
            lab=lab,
            bytes_before=before,
            threads=threads,
            full=stats,
        )
        _plots().error_vs_k(curve, f"{stem}_error_vs_k.png", target_psnr, n)
        if n is None:
            print(f"{ident}: no K in [2, 256] meets the target; using K=256", file=sys.stderr)
        sizes = [n or 256]
    runs = [("kmeans", n) for n in sizes] + ([("random", n) for n in sizes] if baseline else [])
    for method, n in runs:
        q = quantize(img, n, seed=seed, method=method, lab=lab, dither=dither, threads=threads)
        tag = f"{stem}_k{n}" + ("_random" if method == "random" else "")
        png = q.png_bytes()
        write_bytes(f"{tag}.png", png)
        rows.append(
            {
                "file": ident,
                "method": method,
                "output": f"{tag}.png",
                **palette_stats(
                    img, q, source_bytes=path.stat().st_size, bytes_before=before, png=png, full=stats, seed=seed
                ),
            }
        )
        results.append(q)
        _extras(img, q, tag, segment=segment, scatter=scatter, seed=seed)
    if figure or (figure is None and len(runs) > 1):
        _plots().side_by_side(
            img, results, f"{stem}_side.png", [f"{m} K={n}" if m != "kmeans" else f"K={n}" for m, n in runs]
        )
    return rows


def _plots():
    from encoder.palette import plots  # matplotlib: only when a figure is drawn

    return plots


def _extras(img, q, tag: str, *, segment: bool, scatter: bool, seed: int) -> None:
    """Label maps and scatter plots of one result, when asked for."""
    if segment:
        from encoder.atomic import write_bytes
        from encoder.palette.report import encode_png, segmentation

        write_bytes(f"{tag}_labels.png", encode_png(segmentation(q)))
        _plots().segmentation_figure(img, q, f"{tag}_segment.png")
    if scatter:
        _plots().scatter(img, q, f"{tag}_scatter2d.png", f"{tag}_scatter3d.png", seed=seed)


def _one(job: tuple[Path, str, Path, dict]) -> tuple[Path, list[dict] | None, str | None]:
    """One image in a worker process: (path, rows, None) or (path, None, the reason it failed)."""
    from encoder.data import load_each

    path, ident, out, options = job
    errors: list = []
    for _, rows in load_each([path], lambda p: process(p, ident, out, **options), errors):
        return path, rows, None
    return path, None, errors[0][1]


def _run_all(jobs: list, workers: int) -> list[tuple[Path, list[dict] | None, str | None]]:
    """Every job, in order: in this process for one image, else in a pool with a progress bar."""
    if workers <= 1 or len(jobs) <= 1:
        return [_one(j) for j in jobs]
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    from encoder.data import process_context

    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=process_context()) as pool:
        return list(tqdm(pool.map(_one, jobs), total=len(jobs), desc="quantize", unit="img", file=sys.stderr))


def main(argv: Sequence[str] | None = None) -> int:
    a = parse(argv)
    from encoder import data
    from encoder.atomic import finite, write_json
    from encoder.palette.report import format_line

    try:
        scan = data.image_paths(a.inputs)
    except (FileNotFoundError, NotADirectoryError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(a.out)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = a.workers or cores
    # processes fill the cores: each image's k-means then runs on one thread
    threads = a.threads if a.threads is not None else (1 if workers > 1 and len(scan.paths) > 1 else None)
    options = dict(
        n_colors=a.n_colors,
        seed=a.seed,
        lab=a.lab,
        dither=a.dither,
        baseline=a.baseline,
        auto=a.auto,
        target_psnr=a.target_psnr,
        max_bytes=a.max_bytes,
        stats=a.stats,
        figure=a.figure,
        segment=a.segment,
        scatter=a.scatter,
        threads=threads,
    )
    rows, errors = [], []
    for path, r, reason in _run_all([(p, scan.relative(p), out, options) for p in scan.paths], workers):
        if r is None:
            errors.append((path, reason))
        else:
            rows += r
    skipped = errors + scan.skipped  # files that failed to decode first, then other names
    data.summarise_skipped(skipped, data.write_skipped(out / "skipped.csv", skipped) if skipped else None)
    if not rows:
        print(f"error: no image could be processed from {' '.join(a.inputs)}", file=sys.stderr)
        return 1
    # strict JSON: a lossless result's infinite PSNR is written as null
    rows = finite(rows)
    write_json(out / "results.json", rows)
    if a.json:
        print(json.dumps(rows, indent=1))
    else:
        print("\n".join(format_line(r) for r in rows))
    return 0

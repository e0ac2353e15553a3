"""The main job end to end on the built-in default (``make demo``).

    python -m encoder.cli.demo --out runs/demo            # what `make demo` runs (641 s measured on one core)
    python -m encoder.cli.demo --quick --out runs/quick   # a 1-2 minute version on 2,000 images

Steps, each one of the toolkit's command lines (run as subprocesses, exactly as a user types them):

1. ``train.py prepare-fashion-mnist``: Fashion-MNIST as an image folder (class subfolders).
2. ``train.py fit --config configs/fashion_mnist.yaml``: a short real training run.
3. ``search.py index`` twice: learned codes (``--method ae``) and perceptual hashes (``phash``).
4. ``search.py query`` of a few test images against both indexes: top-5 grids
   (``query_ae_NNNN.png`` also shows each neighbour decoded from its stored code).
5. ``search.py evaluate``: P@1/P@5/mAP@5 of ae, phash, raw pixels and PCA-128 (test queries
   against the training folder).
6. ``train.py reconstruct`` of the test folder: originals over reconstructions, PSNR/SSIM.
7. ``quantize.py``: a sample photo palette-compressed at K = 16, 64, 256.

Everything lands in ``--out``: figures, the JSON of each step, and ``summary.json`` +
``summary.md`` with the key figures and how long each step took.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from encoder.atomic import write_json, write_text

ROOT = Path(__file__).resolve().parents[2]


def sample_photo() -> Path:
    """A real photo shipped inside the scikit-learn wheel (china.jpg), else scikit-image's."""
    for pkg, rel in (("sklearn", "datasets/images/china.jpg"), ("skimage", "data/astronaut.png")):
        spec = importlib.util.find_spec(pkg)
        if spec and spec.origin:
            p = Path(spec.origin).parent / rel
            if p.exists():
                return p
    raise FileNotFoundError("no sample photo found: install the dev requirements (scikit-learn or scikit-image)")


class Runner:
    def __init__(self, out: Path):
        self.out, self.times, self.log = out, {}, out / "demo.log"

    def __call__(self, step: str, *args, capture_json: bool = False):
        cmd = [sys.executable, *map(str, args)]
        shown = " ".join(str(a) for a in args)
        print(f"\n== {step}: python {shown}", flush=True)
        t = time.perf_counter()
        p = subprocess.run(
            cmd,
            cwd=ROOT,
            text=True,
            capture_output=True,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )
        self.times[step] = round(time.perf_counter() - t, 1)
        with open(self.log, "a") as f:
            f.write(f"$ python {shown}\n{p.stdout}\n{p.stderr}\n")
        if p.returncode != 0:
            sys.stderr.write(p.stderr[-4000:])
            raise SystemExit(f"demo step '{step}' failed (exit {p.returncode}); full log: {self.log}")
        if not capture_json:
            tail = [line for line in p.stdout.strip().splitlines() if line.strip()][-3:]
            print("\n".join(tail))
            return p.stdout
        return json.loads(p.stdout)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/demo")
    ap.add_argument(
        "--data",
        default=None,
        help="Fashion-MNIST image folder (default data/fashion-mnist, or data/fashion-mnist-quick with --quick)",
    )
    ap.add_argument(
        "--source",
        default=None,
        help="folder with the Fashion-MNIST IDX files (default: the Debian package dataset-fashion-mnist)",
    )
    ap.add_argument("--epochs", type=int, default=None, help="training epochs (default 3; 1 with --quick)")
    ap.add_argument("--quick", action="store_true", help="2,000 images per split, 1 epoch: a smoke run")
    ap.add_argument("--queries", type=int, default=4, help="test images to query for the top-5 grids")
    a = ap.parse_args(argv)
    out = (ROOT / a.out) if not Path(a.out).is_absolute() else Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo.log").write_text("")
    data = Path(a.data or ("data/fashion-mnist-quick" if a.quick else "data/fashion-mnist"))
    epochs = a.epochs or (1 if a.quick else 3)
    run = Runner(out)
    t0 = time.perf_counter()

    prep = ["train.py", "prepare-fashion-mnist", "--out", data]
    if a.source:
        prep += ["--source", a.source]
    if a.quick:
        prep += ["--limit", 2000]
    run("prepare data", *prep)
    train_dir, test_dir = data / "train", data / "test"

    fit = [
        "train.py",
        "fit",
        "--config",
        "configs/fashion_mnist.yaml",
        "--data.root",
        train_dir,
        "--trainer.max_epochs",
        epochs,
        "--trainer.default_root_dir",
        out / "train",
        "--trainer.logger.init_args.save_dir",
        out / "train",
        "--trainer.enable_progress_bar",
        "false",
    ]
    run("train", *fit)
    ckpts = sorted((out / "train").rglob("best.ckpt"), key=lambda p: p.stat().st_mtime)
    if not ckpts:
        raise SystemExit(f"training wrote no best.ckpt under {out / 'train'}")
    ckpt = ckpts[-1]

    run("index ae", "search.py", "index", train_dir, "--method", "ae", "--checkpoint", ckpt, "-o", out / "index_ae")
    run("index phash", "search.py", "index", train_dir, "--method", "phash", "-o", out / "index_phash")

    queries = [
        sorted((test_dir / c).glob("*.png"))[0]
        for c in sorted(os.listdir(test_dir))
        if (test_dir / c).is_dir() and any((test_dir / c).glob("*.png"))
    ][: a.queries]
    r_ae = run(
        "query ae",
        "search.py",
        "query",
        out / "index_ae",
        *queries,
        "-k",
        5,
        "--json",
        "--checkpoint",
        ckpt,
        "--show-recon",
        "--plot",
        out / "query_ae.png",
        capture_json=True,
    )
    r_ph = run(
        "query phash",
        "search.py",
        "query",
        out / "index_phash",
        *queries,
        "-k",
        5,
        "--json",
        "--plot",
        out / "query_phash.png",
        capture_json=True,
    )
    query_results = [
        {"query": str(q.relative_to(test_dir)), "ae": a_, "phash": p_} for q, a_, p_ in zip(queries, r_ae, r_ph)
    ]

    n_eval = 500 if a.quick else 2000
    ev = run(
        "evaluate",
        "search.py",
        "evaluate",
        train_dir,
        "--queries",
        test_dir,
        "--n-queries",
        n_eval,
        "--methods",
        "ae",
        "phash",
        "raw",
        "pca",
        "--checkpoint",
        ckpt,
        "--json",
        "-o",
        out / "evaluate.json",
        capture_json=True,
    )

    rec = run(
        "reconstruct",
        "train.py",
        "reconstruct",
        "--checkpoint",
        ckpt,
        test_dir,
        "-o",
        out / "recon",
        "--json",
        capture_json=True,
    )

    photo = sample_photo()
    qz = run(
        "quantize",
        "quantize.py",
        photo,
        "-k",
        16,
        64,
        256,
        "--stats",
        "-o",
        out / "quantize",
        "--json",
        capture_json=True,
    )

    summary = {
        "data": str(data),
        "epochs": epochs,
        "checkpoint": str(ckpt),
        "reconstruction": {k: rec[k] for k in ("count", "mean_psnr", "mean_ssim")},
        "retrieval": ev,
        "queries": query_results,
        "quantize": qz,
        "seconds": {**run.times, "total": round(time.perf_counter() - t0, 1)},
        "figures": sorted(
            str(p.relative_to(out)) for p in out.rglob("*.png") if "train" not in p.parts and "quantize" not in p.parts
        )[:40],
    }
    write_json(out / "summary.json", summary)
    write_text(out / "summary.md", render_summary(summary))
    print("\n" + render_summary(summary))
    print(f"\nall outputs in {out}")
    rel = lambda q: os.path.relpath(q, ROOT)  # noqa: E731
    print(
        f"browse them: python search.py serve {rel(out / 'index_phash')} {rel(out / 'index_ae')} "
        f"--run-dir {rel(out / 'train')}   (then open http://127.0.0.1:8000)"
    )
    return 0


def _methods(ev: dict) -> dict:
    """Per-method metrics from `search.py evaluate --json` (its "results" list)."""
    return {r["method"]: r for r in ev.get("results", [])}


def render_summary(s: dict) -> str:
    lines = [
        "# Demo summary",
        "",
        f"Fashion-MNIST image folder `{s['data']}`, {s['epochs']} training epoch(s), checkpoint `{s['checkpoint']}`.",
        "",
        "## Reconstruction (test images, 64x64 grey, 128-d codes)",
        f"- {s['reconstruction']['count']} images: mean PSNR {s['reconstruction']['mean_psnr']:.2f} dB, "
        f"mean SSIM {s['reconstruction']['mean_ssim']:.3f}",
        "",
        "## Retrieval (test queries against the training folder, same class in the top 5)",
        "",
        "| method | P@1 | P@5 | mAP@5 |",
        "|---|---|---|---|",
    ]
    for name, m in _methods(s["retrieval"]).items():
        cells = [m.get(k) for k in ("P@1", "P@5", "mAP@5")]
        lines.append(
            f"| {name} | " + " | ".join(f"{c:.3f}" if isinstance(c, (int, float)) else "-" for c in cells) + " |"
        )
    lines += [
        "",
        "## Palette compression of a sample photo",
        "",
        "| K | PSNR dB | bytes before | bytes after | ratio |",
        "|---|---|---|---|---|",
    ]
    for r in s["quantize"]:  # quantize.py --json: one row per file and number of colours
        lines.append(
            f"| {r.get('n_colors', r.get('k'))} | {_db(r.get('psnr'))} | {r.get('bytes_before')} | "
            f"{r.get('bytes_after')} | {r.get('ratio', float('nan')):.2f} |"
        )
    lines += ["", "## Time per step (seconds)", ""]
    lines += [f"- {k}: {v}" for k, v in s["seconds"].items()]
    return "\n".join(lines) + "\n"


def _db(psnr: float | None) -> str:
    """A PSNR cell: ``quantize.py --json`` writes a lossless result's infinite PSNR as null."""
    return "lossless" if psnr is None or psnr == float("inf") else f"{psnr:.2f}"


if __name__ == "__main__":
    sys.exit(main())

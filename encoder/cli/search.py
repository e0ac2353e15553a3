"""The commands behind search.py: index, add, remove, query, dedup, evaluate.

One interface whatever the method: ``--method phash|dhash|ahash`` hashes images into a binary
index; ``--method ae --checkpoint CKPT`` encodes them with a trained autoencoder into float
codes (see :mod:`encoder.search.ann` for the FAISS index choice). An index records the hash
definition or the model fingerprint; adding or querying with another one is refused. What
differs between methods lives in :mod:`encoder.search.methods`; an option that does not apply
to the method (or to the index's method) is refused, naming both.

Each command: parse, then library calls with keyword arguments. Writers of one index (index
over an existing folder, add, remove) take its writer lock (:func:`encoder.search.index.writer_lock`).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

from encoder.atomic import write_json, write_text
from encoder.cli import VersionAction
from encoder.data import image_paths, relative_id, report_skipped, skipped_report_path, summarise_skipped, write_skipped
from encoder.hashing.dedup import DEFAULT_THRESHOLD, find_groups
from encoder.hashing.hashes import ALPHA_MODES
from encoder.search import ann
from encoder.search.index import Index, IndexMismatchError
from encoder.search.lock import LOCK_TIMEOUT, writer_lock
from encoder.search.methods import EVALUATION_METHODS, INDEX_METHODS, OPTIONS, OptionError, get_method, method_for_index
from encoder.search.views import VIEWS


def _vectors(method, inputs, report_to: Path | None = None, **kw):
    """(scan, Vectors) of files/folders; unreadable files reported by name. Vectors None on a DDP worker rank.

    With ``report_to`` every skipped file goes there with its reason (CSV) and the console shows the
    count and the first few; without, each is printed."""
    scan = image_paths(inputs)
    errors: list = []
    got = method.vectors(scan.paths, errors=errors, progress=len(scan.paths) > 200, **kw)
    if got is not None:
        skipped = errors + list(scan.skipped)  # files that failed to decode first, then other names
        if report_to is None:
            report_skipped(skipped)
        else:
            summarise_skipped(skipped, write_skipped(report_to, skipped))
    return scan, got


# ----------------------------------------------------------------------------- commands


def _say_views(meta: dict[str, Any]) -> None:
    auto = meta.get("views_auto")
    if auto:  # the method chose the views from the pictures' size: say which, and how to choose
        print(
            f"views: {meta['view_set']} (median short side {auto['median_short_side']} px; "
            f"crops from {auto['crops_from']} px; --views full|crops to choose)",
            file=sys.stderr,
        )


def _index_job(a, opts: dict[str, Any]) -> int:
    """``index --engine local|ray``: shards, parts and the runner of :mod:`encoder.jobs` (imported only here)."""
    from encoder.jobs.index_job import index_source

    if len(a.images) != 1:
        raise ValueError(f"--engine takes one source (a folder, a list file or a URL), got {len(a.images)}")
    work = a.work or str(Path(a.output).with_name(Path(a.output).name + ".work"))
    workers = opts.pop("workers", None) or 0
    kw = dict(engine=a.engine, workers=workers, address=a.address, shard_size=a.shard_size)
    report = index_source(a.images[0], work, a.output, method=a.method, **kw, **opts)
    skipped = report["skipped"]  # as the one-process index: all of them beside the index, the first few here
    summarise_skipped(skipped, write_skipped(skipped_report_path(Path(a.output)), skipped))
    idx = report["index"]
    _say_views(idx.meta)
    print(
        f"indexed {len(idx)} images ({idx.describe()}) -> {a.output}; {report['shards']} shards "
        f"({report['ran']} run now, parts in {work}); {idx.flat_note()}{len(report['skipped'])} skipped"
    )
    return 0


def cmd_index(a, opts: dict[str, Any]) -> int:
    if a.engine:
        return _index_job(a, opts)
    method = get_method(a.method, **opts)
    out = Path(a.output)
    report = skipped_report_path(out)
    scan, got = _vectors(method, a.images, report_to=report, scratch_dir=out.with_name(out.name + ".shards"))
    if got is None:  # a DDP worker rank: rank 0 builds the index
        return 0
    if len(got.paths) == 0:  # an old index at the output stays as it was
        print(f"error: no image could be read from {' '.join(map(str, a.images))}; see {report}", file=sys.stderr)
        return 1
    _say_views(method.index_meta())
    ids = [scan.relative(p) for p in got.paths]
    idx = Index.create(
        method.name,
        method.version,
        got.vectors,
        ids,
        kind=method.kind,
        flat=got.flat,
        root=str(scan.root),
        extra=method.index_meta(),
        attachments=method.index_attachments(ids),
        **method.index_options(),
    )
    with writer_lock(out, timeout=a.lock_timeout):  # an add running on the old index must not win
        idx.save(out)
    print(
        f"indexed {len(idx)} images ({idx.describe()}) -> {a.output}; {idx.flat_note()}"
        f"{len(scan.paths) - len(idx)} unreadable (skipped files: {report})"
    )
    return 0


def cmd_add(a, opts: dict[str, Any]) -> int:
    with writer_lock(a.index, timeout=a.lock_timeout):
        idx = Index.load(a.index)
        method = method_for_index(idx.meta, idx.attachments, **opts)
        root = Path(idx.meta["root"])
        _, got = _vectors(method, a.images)
        ids = [relative_id(p, root) for p in got.paths]
        extra = method.index_attachments(ids, idx)  # before add: it reads the hashes the index has
        if extra:
            idx.attach(extra)
        idx.add(got.vectors, ids, flat=got.flat)
        idx.save(a.index)
    print(f"added {len(dict.fromkeys(ids))} images; index now holds {len(idx)}")
    return 0


def cmd_remove(a, opts: dict[str, Any]) -> int:
    with writer_lock(a.index, timeout=a.lock_timeout):
        idx = Index.load(a.index)
        root = Path(idx.meta["root"])
        ids = [p if p in idx.ids else relative_id(Path(p), root) for p in a.paths]
        missing = idx.remove(ids)
        for m in missing:
            print(f"not in index: {m}", file=sys.stderr)
        idx.save(a.index)
    print(f"removed {len(ids) - len(missing)} images; index now holds {len(idx)}")
    return 0


def _print_results(results: list[dict], as_json: bool) -> None:
    if as_json:
        print(json.dumps(results, indent=1))
        return
    for res in results:
        print(f"query {res['query']}")
        for n in res["neighbours"]:
            d = n["distance"]
            print(
                f"  {n['rank']:>3}  {d:>3}  {n['id']}"
                if isinstance(d, int)
                else f"  {n['rank']:>3}  {d:>9.4f}  {n['id']}"
            )


def _plot_results(results: list[dict], recons, plot: str) -> None:
    from encoder.search.plots import plot_query  # matplotlib: only when a picture is asked for

    for q, res in enumerate(results):
        out = Path(plot) if len(results) == 1 else Path(plot).with_name(f"{Path(plot).stem}_{q:04d}.png")
        failed = plot_query(
            res["query"],
            [n["path"] for n in res["neighbours"]],
            [n["distance"] for n in res["neighbours"]],
            out,
            labels=[n["id"] for n in res["neighbours"]],
            recons=list(recons[q]) if recons is not None else None,
        )
        for path, reason in failed:
            print(f"cannot draw {path}: {reason}", file=sys.stderr)


def cmd_query(a, opts: dict[str, Any]) -> int:
    idx = Index.load(a.index, mmap=True)
    method = method_for_index(idx.meta, idx.attachments, **opts)
    scan = image_paths(a.queries)
    errors = list(scan.skipped)
    got = method.query(idx, scan.paths, a.k, errors=errors, progress=len(scan.paths) > 200)
    report_skipped(errors)
    root = Path(idx.meta["root"])
    results = [
        {
            "query": str(p),
            "neighbours": [
                {"rank": r + 1, "distance": d, "id": i, "path": str(root / i)}
                for r, (d, i) in enumerate(zip(got.distances[q], got.ids[q]))
            ],
        }
        for q, p in enumerate(got.paths)
    ]
    _print_results(results, a.json)
    if a.plot and results:
        _plot_results(results, got.recons, a.plot)
    return 0 if results else 1


def cmd_dedup(a, opts: dict[str, Any]) -> int:
    idx = Index.load(a.index)
    if not idx.binary:
        raise IndexMismatchError(f"dedup needs a hash index, {a.index} holds {idx.meta['method']} codes")
    if a.engine:  # shards of range search on the engine (encoder.jobs, imported only here)
        from encoder.jobs.dedup_job import find_groups_job

        work = a.work or str(Path(a.index).with_name(Path(a.index).name + ".dedup"))
        kw = dict(engine=a.engine, workers=a.workers or 0, address=a.address, include_flat=a.include_flat)
        groups = find_groups_job(a.index, work, threshold=a.threshold, **kw)
    else:
        groups = find_groups(idx.vectors, idx.ids, a.threshold, idx.flat_mask(), a.include_flat)
    for g, grp in enumerate(groups, 1):
        print(f"group {g} ({len(grp['ids'])} images, max distance {grp['max_distance']}): " + ", ".join(grp["ids"]))
    print(f"{len(groups)} groups, {sum(len(g['ids']) for g in groups)} images, threshold {a.threshold}")
    if a.json:
        write_json(a.json, {"threshold": a.threshold, "groups": groups})
    if a.csv:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["group", "id", "max_distance"])
        for g, grp in enumerate(groups, 1):
            for i in grp["ids"]:
                w.writerow([g, i, grp["max_distance"]])
        write_text(a.csv, buf.getvalue())
    if a.plot:
        from encoder.search.plots import plot_groups  # matplotlib: only when a picture is asked for

        for path, reason in plot_groups(groups, idx.meta["root"], a.plot):
            print(f"cannot draw {path}: {reason}", file=sys.stderr)
    return 0


def cmd_evaluate(a, opts: dict[str, Any]) -> int:
    from encoder.search import evaluate
    from encoder.search.methods import evaluation_methods
    from encoder.search.neardup import ALBUM_EDITS

    methods = evaluation_methods(a.methods, checkpoint=a.checkpoint, views=a.views)
    run, fmt = (
        (evaluate.evaluate_neardup, evaluate.format_neardup)
        if a.neardup
        else (evaluate.evaluate_folder, evaluate.format_report)
    )
    extra = {"transforms": ALBUM_EDITS} if a.neardup and a.edits == "album" else {}
    report = run(
        a.folder, methods=methods, queries=a.queries, n_queries=a.n_queries, seed=a.seed, metric=a.metric, **extra
    )
    print(json.dumps(report, indent=1) if a.json else fmt(report))
    if a.output:
        write_json(a.output, report)
    return 0


COMMANDS = {
    "index": cmd_index,
    "add": cmd_add,
    "remove": cmd_remove,
    "query": cmd_query,
    "dedup": cmd_dedup,
    "evaluate": cmd_evaluate,
}


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    """The command line. Options that apply to one kind of method default to None, so that
    ``main`` can tell which were given (and refuse those that do not apply)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action=VersionAction)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("index", help="hash or encode a folder into a new index")
    s.add_argument("images", nargs="+")
    s.add_argument("--method", choices=INDEX_METHODS, default="phash")
    s.add_argument("-o", "--output", required=True)
    s.add_argument(
        "--draft", action="store_true", help="JPEG draft decoding for hashes (faster; a few bits may differ)"
    )
    s.add_argument(
        "--alpha",
        choices=ALPHA_MODES,
        default=None,
        help="hashes of transparent images: imagehash (drop alpha, as imagehash does; default) or "
        "white (composite on white, as indexes made before this option)",
    )
    s.add_argument(
        "--faiss-type",
        default="auto",
        help="hashes: auto|BinaryFlat|BinaryHNSW; codes: auto or a FAISS factory string (e.g. HNSW32)",
    )
    s.add_argument("--metric", choices=ann.METRICS, default=None, help="code distance (ae; default l2)")
    s.add_argument("--memory-budget", type=int, default=None, help="bytes the code index may take (picks PQ; ae)")
    s.add_argument(
        "--devices", type=int, default=None, help="processes/GPUs for encoding with Lightning predict (ae; default 1)"
    )
    s.add_argument("--strategy", default=None, help="Lightning strategy for encoding, e.g. ddp (ae; default auto)")
    s.add_argument("--accelerator", default=None, help="cpu|gpu|auto for distributed encoding (ae; default auto)")
    s.add_argument("--num-nodes", type=int, default=None, help="(ae; default 1)")
    s.add_argument(
        "--shard-dir",
        default=None,
        help="where the resumable code parts go (ae; default OUTPUT.shards; a rerun keeps the finished ones)",
    )
    s = sub.add_parser("add", help="add images to an index")
    s.add_argument("index")
    s.add_argument("images", nargs="+")
    s = sub.add_parser("remove", help="remove images (ids or paths) from an index")
    s.add_argument("index")
    s.add_argument("paths", nargs="+")
    s = sub.add_parser("query", help="top-k neighbours of query images or folders")
    s.add_argument("index")
    s.add_argument("queries", nargs="+")
    s.add_argument("-k", type=int, default=5)
    s.add_argument("--json", action="store_true")
    s.add_argument("--plot")
    s.add_argument(
        "--mirror",
        action="store_true",
        help="also match the horizontally flipped query, each result at its better distance",
    )
    s.add_argument("--show-recon", action="store_true", help="plot each neighbour decoded from its code (ae)")
    s = sub.add_parser("dedup", help="groups of near-duplicates")
    s.add_argument("index")
    s.add_argument("--threshold", type=int, default=DEFAULT_THRESHOLD)
    s.add_argument("--include-flat", action="store_true")
    s.add_argument("--csv")
    s.add_argument("--json")
    s.add_argument("--plot")
    s = sub.add_parser("evaluate", help="P@1/P@5/mAP@5 per method on a labelled folder, or near-duplicate recall")
    s.add_argument("folder", help="images in class subfolders (class = top-level subfolder)")
    s.add_argument("--methods", nargs="+", default=["ae", "phash", "raw", "pca"], choices=EVALUATION_METHODS)
    s.add_argument(
        "--queries",
        help="a folder of query images (default: a seeded split of FOLDER); with "
        "--neardup, the originals to transform (FOLDER then holds distractors)",
    )
    s.add_argument("--n-queries", type=int, default=500)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--metric", choices=ann.METRICS, default="l2")
    s.add_argument("--neardup", action="store_true", help="recall@1/@5 of transformed copies, per transform")
    s.add_argument(
        "--edits",
        choices=("transforms", "album"),
        default="transforms",
        help="with --neardup: the photo transforms, or the edits people make before sharing (screenshot, "
        "caption, phone crop, turn, ...)",
    )
    s.add_argument("--json", action="store_true")
    s.add_argument("-o", "--output", help="also write the JSON report here")
    sub.add_parser("serve", help="a local web page over indexes (search.py serve -h)", add_help=False)
    for name in ("index", "add", "query", "evaluate"):
        sub.choices[name].add_argument("--checkpoint", help="autoencoder checkpoint (.ckpt or exported .pt)")
        sub.choices[name].add_argument("--batch-size", type=int, default=None, help="(ae; default 256)")
    sub.choices["query"].add_argument("--search-params", default=None, help="override e.g. nprobe=64 (ae)")
    sub.choices["index"].add_argument(
        "--search-params", default=None, help="auto (tuned; default) or e.g. nprobe=64 (ae)"
    )
    for name in ("index", "add", "query", "evaluate"):
        sub.choices[name].add_argument(
            "--views",
            choices=VIEWS,
            default=None,
            help="ae: full (the whole picture) or crops (also crops and squares of each picture, so a cropped "
            "or re-framed copy is found; an index keeps its choice). index picks crops for pictures of "
            "256 px and more on their short side, else full; evaluate uses full unless told",
        )
    for name in ("index", "add", "remove"):
        sub.choices[name].add_argument(
            "--lock-timeout",
            type=float,
            default=LOCK_TIMEOUT,
            help="seconds to wait for another writer of the index (default %(default)g)",
        )
    for name, s in sub.choices.items():
        if name != "serve":
            s.add_argument("--workers", type=int, default=None)
    for name in ("index", "dedup"):
        s = sub.choices[name]
        s.add_argument(
            "--engine",
            choices=("local", "ray"),
            default=None,
            help="run as a resumable batch job: one task per shard on this machine's processes (local) or Ray "
            "(pip install '.[ray]'); a source may then be a folder, a list file of paths/URLs or an fsspec URL",
        )
        s.add_argument("--address", default=None, help="a running Ray cluster: auto or HOST:PORT (default: start one)")
        s.add_argument("--work", default=None, help="the job's folder of manifest and parts (default OUTPUT.work)")
    sub.choices["index"].add_argument("--shard-size", type=int, default=10_000, help="images per shard (--engine)")
    return p


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(act for act in parser._actions if isinstance(act, argparse._SubParsersAction)).choices


def method_options(parser: argparse.ArgumentParser, a: argparse.Namespace) -> dict[str, Any]:
    """The method options (:data:`encoder.search.methods.OPTIONS`) given on the command line: those
    that differ from the parser default."""
    values = vars(a)
    return {
        act.dest: values[act.dest]
        for act in _subparsers(parser)[a.cmd]._actions
        if act.dest in OPTIONS and act.dest in values and values[act.dest] != act.default
    }


def flag_of(parser: argparse.ArgumentParser, option: str) -> str:
    """The command line's spelling of a library option name (``faiss_type`` -> ``--faiss-type``)."""
    for sub in _subparsers(parser).values():
        for act in sub._actions:
            if act.dest == option and act.option_strings:
                return max(act.option_strings, key=len)
    return option


DESCRIPTION = """Similarity search over an image folder: perceptual hashes or autoencoder codes + a FAISS index.

    search.py index photos/ --method phash -o runs/idx
    search.py index photos/ --method ae --checkpoint CKPT -o runs/ae_idx
    search.py index photos/ --method ae --checkpoint CKPT --views crops -o runs/ae_crops   # finds crops too
    search.py query runs/ae_idx query.jpg -k 5 --plot runs/q.png --show-recon
    search.py add runs/idx more/ ; search.py remove runs/idx old.jpg
    search.py dedup runs/idx --threshold 10 --csv runs/dups.csv --plot runs/dups.png
    search.py evaluate data/fashion-mnist/train --queries data/fashion-mnist/test --checkpoint CKPT
    search.py serve runs/demo/index_phash runs/demo/index_ae      # a local web page: http://127.0.0.1:8000
"""


def main(argv: list[str] | None = None) -> int:
    """Parse and run one command; errors about inputs print ``error: ...`` and return 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["serve"]:  # its own parser; FastAPI and uvicorn are imported only there
        from encoder.cli.serve import main as serve_main

        return serve_main(argv[1:])
    p = build_parser(DESCRIPTION)
    a = p.parse_args(argv)
    if a.cmd == "query" and a.k <= 0:
        p.error(f"k={a.k} must be a positive integer")
    if a.cmd == "query" and a.show_recon and not a.plot:
        p.error("--show-recon draws into the --plot picture; give --plot OUT.png")
    if a.cmd in ("index", "dedup") and not a.engine and (a.address or a.work):
        p.error("--address and --work belong to --engine local|ray")
    try:
        return COMMANDS[a.cmd](a, method_options(p, a))
    except OptionError as e:  # the library names options; here they are flags
        print(f"error: {e.spelled(lambda name: flag_of(p, name))}", file=sys.stderr)
        return 2
    except (FileNotFoundError, NotADirectoryError, ValueError, ImportError) as e:  # incl. IndexMismatch..., no Ray
        print(f"error: {e}", file=sys.stderr)
        return 2


__all__ = ["build_parser", "main", "COMMANDS", "method_options"]

"""The commands behind search.py: index, add, remove, query, dedup, evaluate.

One interface whatever the method: ``--method phash|dhash|ahash`` hashes images into a binary
index; ``--method ae --checkpoint CKPT`` encodes them with a trained autoencoder into float
codes (see :mod:`encoder.search.ann` for the FAISS index choice). An index records the hash
definition or the model fingerprint; adding or querying with another one is refused.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from encoder.atomic import write_json, write_text
from encoder.data import GRAY_PREPROCESS_VERSION, ImageLoadError, image_paths, load_gray, report_skipped
from encoder.hashing.dedup import DEFAULT_THRESHOLD, find_groups
from encoder.search.index import Index, IndexMismatchError
from encoder.hashing.hashes import HASH_VERSION, METHODS, hash_paths

ALL_METHODS = (*METHODS, "ae")


def _id_for(path: Path, root: Path) -> str:
    try:
        return Path(path).absolute().relative_to(root).as_posix()
    except ValueError:
        return Path(path).absolute().as_posix()


def _hash_inputs(inputs, method, draft, workers, mirror=False):
    scan = image_paths(inputs)
    errors = list(scan.skipped)
    hashes, kept, flat = hash_paths(scan.paths, method, draft=draft, workers=workers, errors=errors,
                                    progress=len(scan.paths) > 200, mirror=mirror)
    report_skipped(errors)
    return scan, hashes, kept, flat


# ----------------------------------------------------------------------------- learned codes

def _encoder(checkpoint: str | None, idx: Index | None = None):
    """Load the checkpoint (default: the one recorded in the index) and check it fits the index."""
    from encoder.ae.inference import load_encoder

    if checkpoint is None:
        if idx is None or not idx.meta.get("checkpoint"):
            raise ValueError("--checkpoint is required for --method ae")
        checkpoint = idx.meta["checkpoint"]
        if not Path(checkpoint).is_file():
            raise FileNotFoundError(f"the index was built with checkpoint {checkpoint}, which is gone; "
                                    "pass --checkpoint with the same model")
    enc = load_encoder(checkpoint)
    if idx is not None and idx.meta.get("version") != enc.fingerprint:
        raise IndexMismatchError(
            f"checkpoint {checkpoint} has model fingerprint {enc.fingerprint} but the index was built with "
            f"model fingerprint {idx.meta.get('version')} ({idx.meta.get('checkpoint')}); codes of two models "
            "cannot be compared - build a new index with this checkpoint")
    return enc


def _encode_inputs(enc, inputs, a):
    """Encode files/folders: (scan, codes (M,D), kept paths); unreadable files reported by name."""
    from encoder.ae.inference import encode_paths

    scan = image_paths(inputs)
    errors = list(scan.skipped)
    if getattr(a, "devices", 1) != 1 or getattr(a, "strategy", "auto") != "auto":
        codes, kept = _encode_distributed(enc, scan.paths, a, errors)
        if codes is None:
            return None, None, None
    else:
        codes, kept = encode_paths(enc, scan.paths, batch_size=a.batch_size, errors=errors,
                                   progress=len(scan.paths) > 200, workers=a.workers or 0)
    report_skipped(errors)
    return scan, codes, kept


def _encode_distributed(enc, paths, a, errors):
    """Lightning predict over ``a.devices`` processes with the code-shard writer; None on ranks > 0."""
    from encoder.ae.shards import predict_codes

    shard_dir = Path(a.shard_dir) if a.shard_dir else Path(a.output).with_name(Path(a.output).name + ".shards")
    res = predict_codes(enc.path, paths, shard_dir, devices=a.devices, strategy=a.strategy,
                        accelerator=a.accelerator, num_nodes=a.num_nodes, batch_size=a.batch_size,
                        num_workers=a.workers or 0)
    if res is None:
        return None, None
    codes, rows, invalid = res
    if not a.shard_dir:  # the default shard folder is scratch once merged
        shutil.rmtree(shard_dir, ignore_errors=True)
    for r in np.setdiff1d(invalid, rows):  # the reason lives in the rank's worker: read it again
        try:
            load_gray(paths[r], enc.image_size)
            errors.append((paths[r], "unreadable during encoding"))
        except ImageLoadError as e:
            errors.append((paths[r], e.reason))
        except OSError as e:
            errors.append((paths[r], f"cannot read: {e}"))
    return codes, [paths[r] for r in rows]


def _index_ae(a) -> int:
    enc = _encoder(a.checkpoint)
    scan, codes, kept = _encode_inputs(enc, a.images, a)
    if scan is None:  # a DDP worker rank: rank 0 builds the index
        return 0
    idx = Index.create("ae", enc.fingerprint, codes, [scan.relative(p) for p in kept], root=str(scan.root),
                       extra={"checkpoint": str(Path(enc.path).absolute()), "code_dim": enc.code_dim,
                              "image_size": enc.image_size, "preprocess": GRAY_PREPROCESS_VERSION},
                       faiss_type=a.faiss_type, metric=a.metric, memory_budget=a.memory_budget,
                       search_params=a.search_params)
    idx.save(a.output)
    m = idx.meta
    recall = f", recall@5 vs exact {m['tuned_recall']:.3f}" if m.get("tuned_recall") is not None else ""
    print(f"indexed {len(idx)} images (ae {enc.fingerprint}, {m['faiss_type']}, {m['metric']}"
          f"{', ' + m['search_params'] if m['search_params'] else ''}{recall}) -> {a.output}; "
          f"{len(scan.paths) - len(kept)} unreadable")
    return 0


# ----------------------------------------------------------------------------- commands

def cmd_index(a) -> int:
    if a.method == "ae":
        return _index_ae(a)
    if a.checkpoint:
        raise ValueError(f"--checkpoint applies to --method ae, not {a.method}")
    scan, hashes, kept, flat = _hash_inputs(a.images, a.method, a.draft, a.workers)
    idx = Index.create(a.method, HASH_VERSION[a.method], hashes, [scan.relative(p) for p in kept],
                       root=str(scan.root), extra={"decode": "draft" if a.draft else "full",
                                                   "flat": [scan.relative(p) for p, f in zip(kept, flat) if f]},
                       faiss_type=a.faiss_type)
    idx.save(a.output)
    print(f"indexed {len(idx)} images ({a.method}, {idx.meta['faiss_type']}) -> {a.output}; "
          f"{sum(flat)} flat, {len(scan.paths) - len(kept)} unreadable")
    return 0


def cmd_add(a) -> int:
    idx = Index.load(a.index)
    root = Path(idx.meta["root"])
    if idx.meta["kind"] == "code":
        enc = _encoder(a.checkpoint, idx)
        _, codes, kept = _encode_inputs(enc, a.images, a)
        ids = [_id_for(p, root) for p in kept]
        idx.add(codes, ids)
    else:
        if a.checkpoint:
            raise IndexMismatchError(f"{a.index} is a {idx.meta['method']} hash index; --checkpoint applies to "
                                     "ae indexes")
        draft = idx.meta.get("decode") == "draft"
        scan, hashes, kept, flat = _hash_inputs(a.images, idx.meta["method"], draft, a.workers)
        idx.check_compatible(idx.meta["method"], HASH_VERSION[idx.meta["method"]])
        ids = [_id_for(p, root) for p in kept]
        idx.add(hashes, ids)
        idx.meta["flat"] = sorted(set(idx.meta.get("flat", [])) | {i for i, f in zip(ids, flat) if f})
    idx.save(a.index)
    print(f"added {len(ids)} images; index now holds {len(idx)}")
    return 0


def cmd_remove(a) -> int:
    idx = Index.load(a.index)
    root = Path(idx.meta["root"])
    ids = [p if p in idx.ids else _id_for(Path(p), root) for p in a.paths]
    missing = idx.remove(ids)
    for m in missing:
        print(f"not in index: {m}", file=sys.stderr)
    if idx.meta["kind"] == "hash":
        idx.meta["flat"] = [i for i in idx.meta.get("flat", []) if i in set(idx.ids)]
    idx.save(a.index)
    print(f"removed {len(ids) - len(missing)} images; index now holds {len(idx)}")
    return 0


def _query_hash(idx: Index, a):
    m = idx.meta["method"]
    if m not in METHODS:
        raise IndexMismatchError(f"index method {m!r} is not a hash method this command can query")
    idx.check_compatible(m, HASH_VERSION[m])
    draft = idx.meta.get("decode") == "draft"
    scan, hashes, kept, _ = _hash_inputs(a.queries, m, draft, a.workers)
    distances, ids = idx.search(hashes, a.k)
    if a.mirror and len(kept):  # also hash the flipped query; keep the better distance per id
        _, mh, _, _ = _hash_inputs([str(p) for p in kept], m, draft, a.workers, mirror=True)
        md, mi = idx.search(mh, a.k)
        merged_d, merged_i = [], []
        for q in range(len(kept)):
            best: dict[str, int] = {}
            for d, i in list(zip(distances[q], ids[q])) + list(zip(md[q], mi[q])):
                best[i] = min(int(d), best.get(i, 99))
            top = sorted(best.items(), key=lambda t: (t[1], t[0]))[:a.k]
            merged_i.append([t[0] for t in top])
            merged_d.append([t[1] for t in top])
        distances, ids = merged_d, merged_i
    return kept, [[int(d) for d in row] for row in distances], ids, None


def _query_codes(idx: Index, a):
    if a.mirror:
        raise ValueError("--mirror applies to hash indexes; this index holds ae codes")
    enc = _encoder(a.checkpoint, idx)
    _, codes, kept = _encode_inputs(enc, a.queries, a)
    distances, ids = idx.search(codes, a.k, params=a.search_params)
    recons = None
    if a.show_recon:  # each neighbour decoded from its stored code
        recons = [enc.decode(np.asarray(idx.vectors[idx.rows(row)])) if row else [] for row in ids]
    return kept, [[round(float(d), 6) for d in row] for row in distances], ids, recons


def cmd_query(a) -> int:
    idx = Index.load(a.index, mmap=True)
    if idx.meta["kind"] == "code":
        kept, distances, ids, recons = _query_codes(idx, a)
    else:
        if a.show_recon or a.checkpoint:
            raise ValueError("--show-recon and --checkpoint apply to ae indexes; this index holds hashes")
        kept, distances, ids, recons = _query_hash(idx, a)
    root = Path(idx.meta["root"])
    results = [{"query": str(p), "neighbours": [{"rank": r + 1, "distance": d, "id": i, "path": str(root / i)}
                                                for r, (d, i) in enumerate(zip(distances[q], ids[q]))]}
               for q, p in enumerate(kept)]
    if a.json:
        print(json.dumps(results, indent=1))
    else:
        for res in results:
            print(f"query {res['query']}")
            for n in res["neighbours"]:
                d = n["distance"]
                print(f"  {n['rank']:>3}  {d:>3}  {n['id']}" if isinstance(d, int)
                      else f"  {n['rank']:>3}  {d:>9.4f}  {n['id']}")
    if a.plot and results:
        from encoder.search.plots import plot_query
        for q, res in enumerate(results):
            out = Path(a.plot) if len(results) == 1 else Path(a.plot).with_name(f"{Path(a.plot).stem}_{q:04d}.png")
            plot_query(res["query"], [n["path"] for n in res["neighbours"]],
                       [n["distance"] for n in res["neighbours"]], out, labels=[n["id"] for n in res["neighbours"]],
                       recons=list(recons[q]) if recons is not None else None)
    return 0 if results else 1


def cmd_dedup(a) -> int:
    idx = Index.load(a.index)
    if idx.meta["kind"] != "hash":
        raise IndexMismatchError(f"dedup needs a hash index, {a.index} holds {idx.meta['method']} codes")
    flat_ids = set(idx.meta.get("flat", []))
    flat = np.array([i in flat_ids for i in idx.ids], bool)
    groups = find_groups(idx.vectors, idx.ids, a.threshold, flat, a.include_flat)
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
        from encoder.search.plots import plot_groups
        plot_groups(groups, idx.meta["root"], a.plot)
    return 0


def cmd_evaluate(a) -> int:
    from encoder.search import evaluate

    enc = _encoder(a.checkpoint) if {"ae", "hybrid"} & set(a.methods) else None
    if a.neardup:
        report = evaluate.evaluate_neardup(a.folder, enc, methods=a.methods, queries=a.queries, n_queries=a.n_queries,
                                           seed=a.seed, metric=a.metric, candidates=a.candidates)
        text = evaluate.format_neardup(report)
    else:
        report = evaluate.evaluate_folder(a.folder, enc, methods=a.methods, queries=a.queries, n_queries=a.n_queries,
                                          seed=a.seed, metric=a.metric, candidates=a.candidates)
        text = evaluate.format_report(report)
    if a.json:
        print(json.dumps(report, indent=1))
    else:
        print(text)
    if a.output:
        write_json(a.output, report)
    return 0


COMMANDS = {"index": cmd_index, "add": cmd_add, "remove": cmd_remove, "query": cmd_query, "dedup": cmd_dedup,
            "evaluate": cmd_evaluate}


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("index", help="hash or encode a folder into a new index")
    s.add_argument("images", nargs="+")
    s.add_argument("--method", choices=ALL_METHODS, default="phash")
    s.add_argument("-o", "--output", required=True)
    s.add_argument("--draft", action="store_true", help="JPEG draft decoding for hashes (faster; a few bits may differ)")
    s.add_argument("--faiss-type", default="auto",
                   help="hashes: auto|BinaryFlat|BinaryHNSW; codes: auto or a FAISS factory string (e.g. HNSW32)")
    s.add_argument("--metric", choices=("l2", "cosine"), default="l2", help="code distance (ae)")
    s.add_argument("--memory-budget", type=int, default=None, help="bytes the code index may take (picks PQ)")
    s.add_argument("--devices", type=int, default=1, help="processes/GPUs for encoding with Lightning predict (ae)")
    s.add_argument("--strategy", default="auto", help="Lightning strategy for encoding, e.g. ddp (ae)")
    s.add_argument("--accelerator", default="auto", help="cpu|gpu|auto for distributed encoding (ae)")
    s.add_argument("--num-nodes", type=int, default=1)
    s.add_argument("--shard-dir", default=None, help="where per-rank code shards go (default OUTPUT.shards)")
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
    s.add_argument("--mirror", action="store_true", help="also match the horizontally flipped query (hashes)")
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
    s.add_argument("--methods", nargs="+", default=["ae", "phash", "raw", "pca"],
                   choices=["ae", "phash", "dhash", "ahash", "raw", "pca", "hybrid"])
    s.add_argument("--queries", help="a folder of query images (default: a seeded split of FOLDER); with "
                   "--neardup, the originals to transform (FOLDER then holds distractors)")
    s.add_argument("--n-queries", type=int, default=500)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--metric", choices=("l2", "cosine"), default="l2")
    s.add_argument("--candidates", type=int, default=50, help="shortlist size for hybrid search")
    s.add_argument("--neardup", action="store_true", help="recall@1/@5 of transformed copies, per transform")
    s.add_argument("--json", action="store_true")
    s.add_argument("-o", "--output", help="also write the JSON report here")
    for name in ("index", "add", "query", "evaluate"):
        sub.choices[name].add_argument("--checkpoint", help="autoencoder checkpoint (.ckpt or exported .pt)")
        sub.choices[name].add_argument("--batch-size", type=int, default=256)
    for name in ("query",):
        sub.choices[name].add_argument("--search-params", default=None, help="override e.g. nprobe=64 (ae)")
    for name in ("index",):
        sub.choices[name].add_argument("--search-params", default="auto", help="auto (tuned) or e.g. nprobe=64")
    for s in sub.choices.values():
        s.add_argument("--workers", type=int, default=None)
    return p


DESCRIPTION = """Similarity search over an image folder: perceptual hashes or autoencoder codes + a FAISS index.

    search.py index photos/ --method phash -o runs/idx
    search.py index photos/ --method ae --checkpoint CKPT -o runs/ae_idx
    search.py query runs/ae_idx query.jpg -k 5 --plot runs/q.png --show-recon
    search.py add runs/idx more/ ; search.py remove runs/idx old.jpg
    search.py dedup runs/idx --threshold 10 --csv runs/dups.csv --plot runs/dups.png
    search.py evaluate data/fashion-mnist/train --queries data/fashion-mnist/test --checkpoint CKPT
"""


def main(argv: list[str] | None = None) -> int:
    """Parse and run one command; errors about inputs print ``error: ...`` and return 2."""
    p = build_parser(DESCRIPTION)
    a = p.parse_args(argv)
    if getattr(a, "k", 1) <= 0:
        p.error(f"k={a.k} must be a positive integer")
    if getattr(a, "show_recon", False) and not a.plot:
        p.error("--show-recon draws into the --plot picture; give --plot OUT.png")
    if a.cmd == "index" and a.method == "ae" and not a.checkpoint:
        p.error("--method ae needs --checkpoint CKPT")
    try:
        return COMMANDS[a.cmd](a)
    except (FileNotFoundError, NotADirectoryError, ValueError) as e:  # incl. IndexMismatch/Corrupt/Checkpoint
        print(f"error: {e}", file=sys.stderr)
        return 2


__all__ = ["build_parser", "main", "COMMANDS"]

"""Similarity search over an image folder with perceptual hashes and a FAISS index.

    python search.py index photos/ --method phash -o runs/idx
    python search.py query runs/idx query.jpg -k 5 --plot runs/q.png --mirror
    python search.py add runs/idx more/new.jpg ; python search.py remove runs/idx old.jpg
    python search.py dedup runs/idx --threshold 10 --csv runs/dups.csv --plot runs/dups.png
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from pathlib import Path

import numpy as np

from encoder.atomic import write_json, write_text
from encoder.data import image_paths, report_skipped
from encoder.dedup import DEFAULT_THRESHOLD, find_groups
from encoder.index import Index, IndexMismatchError
from encoder.phash import HASH_VERSION, METHODS, hash_paths


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


def cmd_index(a) -> int:
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
    draft = idx.meta.get("decode") == "draft"
    scan, hashes, kept, flat = _hash_inputs(a.images, idx.meta["method"], draft, a.workers)
    idx.check_compatible(idx.meta["method"], HASH_VERSION[idx.meta["method"]])
    root = Path(idx.meta["root"])
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
    idx.meta["flat"] = [i for i in idx.meta.get("flat", []) if i in set(idx.ids)]
    idx.save(a.index)
    print(f"removed {len(ids) - len(missing)} images; index now holds {len(idx)}")
    return 0


def cmd_query(a) -> int:
    idx = Index.load(a.index)
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
    root = Path(idx.meta["root"])
    results = [{"query": str(p), "neighbours": [{"rank": r + 1, "distance": int(d), "id": i,
                                                 "path": str(root / i)}
                                                for r, (d, i) in enumerate(zip(distances[q], ids[q]))]}
               for q, p in enumerate(kept)]
    if a.json:
        print(json.dumps(results, indent=1))
    else:
        for res in results:
            print(f"query {res['query']}")
            for n in res["neighbours"]:
                print(f"  {n['rank']:>3}  {n['distance']:>3}  {n['id']}")
    if a.plot and results:
        from encoder.plots import plot_query
        for q, res in enumerate(results):
            out = Path(a.plot) if len(results) == 1 else Path(a.plot).with_name(f"{Path(a.plot).stem}_{q:04d}.png")
            plot_query(res["query"], [n["path"] for n in res["neighbours"]],
                       [n["distance"] for n in res["neighbours"]], out, labels=[n["id"] for n in res["neighbours"]])
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
        from encoder.plots import plot_groups
        plot_groups(groups, idx.meta["root"], a.plot)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("index", help="hash a folder into a new index")
    s.add_argument("images", nargs="+")
    s.add_argument("--method", choices=METHODS, default="phash")
    s.add_argument("-o", "--output", required=True)
    s.add_argument("--draft", action="store_true", help="JPEG draft decoding (faster; a few bits may differ)")
    s.add_argument("--faiss-type", default="auto", choices=["auto", "BinaryFlat", "BinaryHNSW"])
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
    s.add_argument("--mirror", action="store_true", help="also match the horizontally flipped query")
    s = sub.add_parser("dedup", help="groups of near-duplicates")
    s.add_argument("index")
    s.add_argument("--threshold", type=int, default=DEFAULT_THRESHOLD)
    s.add_argument("--include-flat", action="store_true")
    s.add_argument("--csv")
    s.add_argument("--json")
    s.add_argument("--plot")
    for s in sub.choices.values():
        s.add_argument("--workers", type=int, default=None)
    a = p.parse_args(argv)
    if a.cmd == "query" and a.k <= 0:
        p.error(f"k={a.k} must be a positive integer")
    try:
        return {"index": cmd_index, "add": cmd_add, "remove": cmd_remove, "query": cmd_query,
                "dedup": cmd_dedup}[a.cmd](a)
    except (FileNotFoundError, NotADirectoryError, IndexMismatchError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

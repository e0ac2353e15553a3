"""An index's ids: ids.json (the anchor) against ids.parquet, for the choice of IDS_PARQUET_MIN.

    .venv/bin/python bench/ids_bench.py                      # 100k, 1M and 10M ids (about 2 min)
    .venv/bin/python bench/ids_bench.py --sizes 100000 1000000

Synthetic ids shaped like a photo library's relative paths (``photos/2013/IMG_0123456.jpg``), in the
sorted order of a folder scan. For each size, both formats through the index's own writer and
reader (:func:`encoder.search.index_files.write_ids` / :func:`~encoder.search.index_files.read_ids`,
the threshold forced to pick each): file size, save and load seconds (best of ``--repeat``), the
load in a fresh process (a one-shot query: pyarrow's import included), the memory the loaded ids
hold (a list of str: the list and its strings; a column: Arrow's buffers), and the microseconds a
query spends turning 5 found rows into str. Printed first: what importing pyarrow costs a fresh
process (a small index below the threshold never pays it). Last, the job merge's id work at
``--merge`` ids from ``--parts`` parts: a list of str (the former path) against the parts' columns
joined into an IdColumn.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from encoder.search import index_files  # noqa: E402
from encoder.search.index_files import IdColumn, ids_at, read_ids, write_ids  # noqa: E402


def make_ids(n: int) -> list[str]:
    """``n`` sorted photo-library paths, 25 year folders."""
    return [f"photos/{2000 + r * 25 // n}/IMG_{r:07d}.jpg" for r in range(n)]


def import_seconds(module: str, repeat: int) -> float:
    """Best wall time of ``python -c 'import module'`` minus that of ``python -c pass``."""

    def best(code: str) -> float:
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            times.append(time.perf_counter() - t)
        return min(times)

    return best(f"import {module}") - best("pass")


def cold_load(folder: Path, repeat: int) -> float:
    """Best seconds of read_ids in a fresh process: what a one-shot query pays (pyarrow's import included)."""
    code = (
        "import sys, time; from pathlib import Path; sys.path.insert(0, sys.argv[1])\n"
        "from encoder.search.index_files import read_ids\n"
        "t = time.perf_counter(); read_ids(Path(sys.argv[2])); print(time.perf_counter() - t)"
    )
    root = str(Path(__file__).resolve().parents[1])
    runs = [subprocess.run([sys.executable, "-c", code, root, str(folder)], check=True, capture_output=True, text=True)]
    runs += [subprocess.run(r.args, check=True, capture_output=True, text=True) for r in runs * (repeat - 1)]
    return min(float(r.stdout) for r in runs)


def held_bytes(ids) -> int:
    """Bytes the loaded ids hold: Arrow buffers of a column; a list's pointers and its str objects."""
    if isinstance(ids, IdColumn):
        return int(ids.arrow.nbytes)
    return sys.getsizeof(ids) + sum(sys.getsizeof(s) for s in ids)


def one_format(ids: list[str], folder: Path, parquet: bool, repeat: int) -> dict:
    index_files.IDS_PARQUET_MIN = 0 if parquet else len(ids) + 1
    name = "ids.parquet" if parquet else "ids.json"
    save, load = [], []
    for _ in range(repeat):
        (folder / name).unlink(missing_ok=True)
        t = time.perf_counter()
        assert write_ids(folder, ids) == name
        save.append(time.perf_counter() - t)
        t = time.perf_counter()
        back = read_ids(folder)
        load.append(time.perf_counter() - t)
    rows = np.random.default_rng(0).integers(0, len(ids), (200, 5))
    t = time.perf_counter()
    for r in rows:
        found = ids_at(back, r)
    per_query_us = (time.perf_counter() - t) / len(rows) * 1e6
    assert found == [ids[i] for i in rows[-1]] and len(back) == len(ids)
    out = {
        "bytes": (folder / name).stat().st_size,
        "save": min(save),
        "load": min(load),
        "held": held_bytes(back),
        "query_us": per_query_us,
        "cold": cold_load(folder, repeat),
    }
    (folder / name).unlink()
    return out


def merge_ids(ids: list[str], n_parts: int) -> tuple[dict, dict]:
    """The job merge's id work on ``n_parts`` parts' id columns, as a list (the former path: each
    part's column to str, joined, a set for the uniqueness check) and as the parts' columns joined
    into an IdColumn (Arrow's distinct count). -> (list figures, column figures): seconds, held bytes."""
    import pyarrow as pa

    step = -(-len(ids) // n_parts)
    cols = [pa.array(ids[a : a + step], pa.string()) for a in range(0, len(ids), step)]
    t = time.perf_counter()
    joined = [i for c in cols for i in c.to_pylist()]
    assert len(set(joined)) == len(joined)
    as_list = {"s": time.perf_counter() - t, "held": held_bytes(joined)}
    del joined
    t = time.perf_counter()
    col = IdColumn.concat(IdColumn(c) for c in cols)
    assert col.n_distinct() == len(col)
    return as_list, {"s": time.perf_counter() - t, "held": held_bytes(col)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    p.add_argument("--repeat", type=int, default=3, help="best of this many saves and loads (default 3)")
    p.add_argument("--merge", type=int, default=10_000_000, help="ids of the job-merge part (0: skip it)")
    p.add_argument("--parts", type=int, default=1000, help="parts of the job-merge part (default 1000)")
    a = p.parse_args(argv)
    print(f"import pyarrow.parquet in a fresh process: {import_seconds('pyarrow.parquet', a.repeat):.3f} s")
    print("| ids | format | file MB | save s | load s | load s, fresh process | held MB | 5 ids to str, us |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in a.sizes:
            ids = make_ids(n)
            for parquet in (False, True):
                r = one_format(ids, Path(tmp), parquet, a.repeat if n < 10_000_000 else 1)
                print(
                    f"| {n:,} | {'ids.parquet' if parquet else 'ids.json (anchor)'} | {r['bytes'] / 1e6:.1f} "
                    f"| {r['save']:.3f} | {r['load']:.3f} | {r['cold']:.3f} | {r['held'] / 1e6:.0f} "
                    f"| {r['query_us']:.1f} |",
                    flush=True,
                )
    if a.merge:
        as_list, as_column = merge_ids(make_ids(a.merge), a.parts)
        print(f"\njob merge, {a.merge:,} ids from {a.parts} parts (join + uniqueness check):")
        print("| ids as | s | held MB |\n|---|---|---|")
        print(f"| a list (anchor) | {as_list['s']:.2f} | {as_list['held'] / 1e6:.0f} |")
        print(f"| an IdColumn | {as_column['s']:.2f} | {as_column['held'] / 1e6:.0f} |")


if __name__ == "__main__":
    main()

"""Index and dedup jobs on the local engine: results equal the one-process commands; reruns resume."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

pytest.importorskip("pyarrow", reason="jobs need the [ray] extra (pyarrow, fsspec): pip install '.[ray]'")
fsspec = pytest.importorskip("fsspec", reason="jobs need the [ray] extra (pyarrow, fsspec): pip install '.[ray]'")

from encoder.cli.search import main  # noqa: E402
from encoder.hashing.dedup import find_groups  # noqa: E402
from encoder.jobs import parts  # noqa: E402
from encoder.jobs.dedup_job import find_groups_job  # noqa: E402
from encoder.jobs.index_job import index_source  # noqa: E402
from encoder.search.index import Index  # noqa: E402


def _same_index(a: Index, b: Index, atol: float = 0.0) -> None:
    assert a.ids == b.ids
    if atol:
        np.testing.assert_allclose(a.vectors, b.vectors, atol=atol, rtol=0)
    else:
        np.testing.assert_array_equal(a.vectors, b.vectors)
    assert a.meta == b.meta
    q = np.asarray(a.vectors[::5])
    assert a.search(q, 5)[1] == b.search(q, 5)[1]


@pytest.fixture(scope="module")
def one_process(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "idx"
    assert main(["index", str(folder), "--method", "phash", "-o", str(out)]) == 0
    return Index.load(out)


def test_local_job_hashes_equal_the_one_process_index_and_report_bad_files(folder, one_process, tmp_path, capsys):
    out = tmp_path / "idx"
    argv = ["index", str(folder), "--engine", "local", "--workers", "2", "--shard-size", "7", "-o", str(out)]
    assert main([*argv, "--work", str(tmp_path / "work")]) == 0
    err = capsys.readouterr().err
    assert f"skipped {folder / 'broken.jpg'}: not a recognised image format" in err
    assert f"skipped {folder / 'truncated.jpg'}: cannot decode" in err
    assert f"skipped {folder / 'notes.txt'}: not an image extension (.txt)" in err
    _same_index(one_process, Index.load(out))
    with open(tmp_path / "idx.skipped.csv", newline="") as f:  # every skipped file beside the index, as one process
        rows = set(map(tuple, csv.reader(f)))
    assert (str(folder / "notes.txt"), "not an image extension (.txt)") in rows and len(rows) == 4  # header + 3


def test_rerun_redoes_only_missing_parts(folder, one_process, tmp_path):
    work, out = tmp_path / "work", tmp_path / "idx"
    first = index_source(str(folder), work, out, engine="local", workers=2, shard_size=5, progress=False)
    assert (first["shards"], first["ran"]) == (7, 7)
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (work / "parts").iterdir()}
    parts.part_path(work, 4).unlink()
    again = index_source(str(folder), work, out, engine="local", workers=2, shard_size=5, progress=False)
    assert again["ran"] == 1
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (work / "parts").iterdir()}
    assert {k: v for k, v in after.items() if k != "part-00004.parquet"} == {
        k: v for k, v in before.items() if k != "part-00004.parquet"
    }
    _same_index(one_process, Index.load(out))
    with pytest.raises(ValueError, match="holds another job"):
        index_source(str(folder), work, out, method="dhash", workers=1, progress=False)


def test_the_progress_bar_counts_images_and_skipped_files(folder, tmp_path, capsys):
    got = index_source(str(folder), tmp_path / "w", tmp_path / "idx", workers=1, shard_size=10, progress=True)
    assert (got["shards"], got["ran"], got["images"]) == (4, 4, 32)  # 30 readable, 2 broken
    lines = capsys.readouterr().err.replace("\r", "\n").splitlines()
    last = [line for line in lines if "4/4" in line][-1]
    assert "images=32" in last and "skipped=2" in last and " img/s" in last
    again = index_source(str(folder), tmp_path / "w", tmp_path / "idx", workers=1, shard_size=10, progress=True)
    assert (again["ran"], again["images"]) == (0, 0) and len(again["skipped"]) == 3  # + notes.txt, from the listing


def test_memory_url_indexes_like_the_folder(folder, one_process, tmp_path):
    mem = fsspec.filesystem("memory")
    for f in folder.rglob("*"):
        if f.is_file():
            mem.pipe(f"/bucket/{f.relative_to(folder).as_posix()}", f.read_bytes())
    got = index_source("memory://bucket", tmp_path / "w", tmp_path / "idx", workers=1, progress=False)
    idx = Index.load(tmp_path / "idx")
    assert idx.ids == one_process.ids
    np.testing.assert_array_equal(idx.vectors, one_process.vectors)
    assert idx.meta["flat"] == one_process.meta["flat"] and idx.meta["root"] == "memory://bucket"
    reasons = dict(got["skipped"])
    assert reasons["memory://bucket/truncated.jpg"].startswith("cannot decode")
    assert ("memory://bucket/broken.jpg", "not a recognised image format") in got["skipped"]


def test_ae_codes_within_1e6_of_the_one_process_index(folder, checkpoint, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    common = ["--method", "ae", "--checkpoint", str(checkpoint), "--views", "full"]
    assert main(["index", str(folder), *common, "-o", str(one)]) == 0
    assert (
        main(
            ["index", str(folder), *common, "--engine", "local", "--workers", "2", "--shard-size", "9"]
            + ["-o", str(two)]
        )
        == 0
    )
    _same_index(Index.load(one), Index.load(two), atol=1e-6)


def test_ae_job_on_a_url_chooses_the_views_as_the_folder_index(photos, checkpoint, tmp_path):
    mem = fsspec.filesystem("memory")
    for f in photos.rglob("*"):
        if f.is_file():
            mem.pipe(f"/album/{f.relative_to(photos).as_posix()}", f.read_bytes())
    assert (
        main(["index", str(photos), "--method", "ae", "--checkpoint", str(checkpoint), "-o", str(tmp_path / "one")])
        == 0
    )

    def job():
        return index_source(
            "memory://album",
            tmp_path / "w",
            tmp_path / "idx",
            method="ae",
            checkpoint=str(checkpoint),
            workers=1,
            shard_size=4,
            progress=False,
        )

    got = job()
    one, idx = Index.load(tmp_path / "one"), got["index"]
    assert idx.meta["view_set"] == "crops" and idx.meta["views_auto"] == one.meta["views_auto"]
    assert idx.ids == one.ids
    np.testing.assert_allclose(idx.vectors, one.vectors, atol=1e-6, rtol=0)
    again = job()
    assert again["ran"] == 0 and again["index"].meta == idx.meta  # a rerun keeps the job's choice
    with pytest.raises(ValueError, match="holds another job"):
        index_source(
            "memory://album",
            tmp_path / "w",
            tmp_path / "idx",
            method="ae",
            checkpoint=str(checkpoint),
            views="full",
            workers=1,
            progress=False,
        )


def test_dedup_job_equals_find_groups(tmp_path, capsys):
    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, (400, 8), dtype=np.uint8)
    near = base[:120].copy()
    near[np.arange(120), rng.integers(0, 8, 120)] ^= np.uint8(1 << 3)  # one bit flipped in a random byte
    h = np.concatenate([base, near, base[:30]])  # edited copies and exact copies
    ids = [f"{i:04d}.jpg" for i in range(len(h))]
    flat = np.zeros(len(h), bool)
    flat[5] = True
    Index.create("phash", "v", h, ids, kind="hash", flat=flat).save(tmp_path / "idx")
    want = find_groups(h, ids, 10, flat)
    got = find_groups_job(tmp_path / "idx", tmp_path / "w", engine="local", workers=2, shard_rows=100, progress=False)
    assert got == want and len(want) >= 100 and {g["max_distance"] for g in want} == {1}
    assert main(["dedup", str(tmp_path / "idx"), "--engine", "local", "--json", str(tmp_path / "g.json")]) == 0
    assert json.loads((tmp_path / "g.json").read_text())["groups"] == want
    shutil.rmtree(tmp_path / "w")
    exact_ivf = find_groups_job(tmp_path / "idx", tmp_path / "w", nlist=4, nprobe=4, workers=1, progress=False)
    assert exact_ivf == want  # an IVF searched over all its lists finds every pair


def test_dedup_job_takes_the_binary_ivf_from_ivf_min_and_finds_the_edited_copies(tmp_path, monkeypatch):
    from encoder.jobs import dedup_job

    rng = np.random.default_rng(4)
    base = rng.integers(0, 256, (40_000, 8), dtype=np.uint8)
    bits = np.unpackbits(base[:2000], axis=1)
    for row, k in enumerate(rng.integers(1, 7, len(bits))):  # an edit moves 1-6 bits
        bits[row, rng.choice(64, k, replace=False)] ^= 1
    h = np.concatenate([base, np.packbits(bits, axis=1)])
    Index.create("phash", "v", h, [f"{i:05d}" for i in range(len(h))], kind="hash").save(tmp_path / "idx")
    exact = find_groups_job(tmp_path / "idx", tmp_path / "exact", nlist=0, workers=1, progress=False)
    monkeypatch.setattr(dedup_job, "IVF_MIN", len(h))
    threads = dedup_job.faiss.omp_get_max_threads()
    got = find_groups_job(tmp_path / "idx", tmp_path / "w", workers=1, progress=False)
    assert dedup_job.faiss.omp_get_max_threads() == threads  # the tasks ran here on one thread, then gave it back
    plan = json.loads((tmp_path / "w" / "dedup.json").read_text())
    assert (plan["nlist"], plan["nprobe"]) == (dedup_job.DEFAULT_NLIST, dedup_job.DEFAULT_NPROBE)
    want = {tuple(g["ids"]) for g in exact}
    distinct = np.load(tmp_path / "w" / "hashes.npy")
    pairs = np.concatenate([np.load(f) for f in sorted((tmp_path / "w" / "pairs").iterdir())])
    assert len(want) >= 2000 and np.unpackbits(distinct[pairs[:, 0]] ^ distinct[pairs[:, 1]], axis=1).sum(1).max() <= 10
    assert len({tuple(g["ids"]) for g in got} & want) >= 0.99 * len(want)


def test_without_ray_the_engine_is_refused_by_name_and_one_machine_paths_work(folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # as if the [ray] extra were not installed
    out = tmp_path / "idx"
    assert main(["index", str(folder), "--engine", "ray", "-o", str(out)]) == 2
    assert "--engine ray needs Ray: pip install '.[ray]'" in capsys.readouterr().err
    assert main(["index", str(folder), "--engine", "local", "--workers", "1", "-o", str(out)]) == 0
    assert main(["dedup", str(out)]) == 0


@pytest.mark.parametrize("method", ["phash", "ae"])
def test_a_file_that_fails_in_conversion_is_a_skipped_row_as_in_one_process(method, checkpoint, skimage_data, tmp_path):
    """A float image out of every known range decodes but cannot be turned grey: a reported row, never a failed job."""
    from PIL import Image

    root = tmp_path / "odd"
    root.mkdir()
    Image.open(skimage_data / "coffee.png").convert("RGB").save(root / "coffee.png")
    Image.fromarray(np.linspace(-3.1, 3.1, 64 * 64, dtype=np.float32).reshape(64, 64), "F").save(root / "angles.tif")
    common = ["--method", method, *(["--checkpoint", str(checkpoint), "--views", "full"] if method == "ae" else [])]
    assert main(["index", str(root), *common, "-o", str(tmp_path / "one")]) == 0
    got = index_source(
        str(root),
        tmp_path / "work",
        tmp_path / "two",
        method=method,
        workers=1,
        progress=False,
        **({"checkpoint": str(checkpoint), "views": "full"} if method == "ae" else {}),
    )
    with open(tmp_path / "one.skipped.csv", newline="") as f:
        one = [tuple(row) for row in csv.reader(f)][1:]
    assert len(one) == 1 and one[0][0] == str(root / "angles.tif") and "float pixels" in one[0][1]
    assert got["skipped"] == one  # the same file, the same reason
    _same_index(Index.load(tmp_path / "one"), got["index"], atol=1e-6 if method == "ae" else 0.0)

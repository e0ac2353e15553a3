"""Jobs on a local Ray cluster of 2 workers on 127.0.0.1: equal results, a killed worker, a killed driver.

The cluster is started once for the module (about 5 s) with 2 CPUs, never an actor pool.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="the Ray engine is the [ray] extra: pip install '.[ray]'")

import job_faults  # noqa: E402  (tests/jobs, put on the path by conftest.py)

from encoder.cli.search import main  # noqa: E402
from encoder.hashing.dedup import find_groups  # noqa: E402
from encoder.jobs import parts  # noqa: E402
from encoder.jobs.index_job import index_source  # noqa: E402
from encoder.search.index import Index  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PATH = os.pathsep.join([str(ROOT), str(Path(__file__).parent)])


@pytest.fixture(scope="module", autouse=True)
def cluster():
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": PATH}},
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def one_process(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "idx"
    assert main(["index", str(folder), "--method", "phash", "-o", str(out)]) == 0
    return Index.load(out)


def _same(a: Index, b: Index) -> None:
    assert a.ids == b.ids and a.meta == b.meta
    np.testing.assert_array_equal(a.vectors, b.vectors)
    q = a.vectors[::3]
    (da, ia), (db, ib) = a.search(q, 5), b.search(q, 5)
    assert ia == ib and np.array_equal(da, db)  # the merged index answers the same top-5


def test_ray_hashes_and_dedup_equal_the_one_process_commands(folder, one_process, tmp_path, capsys):
    out = tmp_path / "idx"
    argv = ["index", f"file://{folder}", "--engine", "ray", "--shard-size", "8", "-o", str(out)]
    assert main(argv) == 0
    assert f"skipped file://{folder / 'broken.jpg'}: not a recognised image format" in capsys.readouterr().err
    got = Index.load(out)
    assert got.meta["root"] == f"file://{folder}"
    got.meta["root"] = one_process.meta["root"]  # the one difference: where ids are relative to
    _same(one_process, got)
    assert main(["dedup", str(out), "--engine", "ray", "--threshold", "16", "--json", str(tmp_path / "g.json")]) == 0
    groups = find_groups(one_process.vectors, one_process.ids, 16, one_process.flat_mask())
    import json

    assert json.loads((tmp_path / "g.json").read_text())["groups"] == groups and groups


def test_a_killed_worker_is_retried_and_the_result_is_identical(folder, one_process, tmp_path):
    work = tmp_path / "work"
    got = index_source(str(folder), work, tmp_path / "idx", engine="ray", shard_size=5, task=job_faults.kill_once)
    assert (tmp_path / "killed-1").exists()  # shard 1's first worker died by SIGKILL
    assert got["images"] == 32  # the retried shard counted once on the progress bar
    assert sorted(job_faults.writes(work)) == list(range(got["shards"]))  # each part written once
    assert not [p for p in (work / "parts").iterdir() if p.suffix != ".parquet"]
    _same(one_process, got["index"])


def test_a_killed_driver_resumes_without_redoing_finished_parts(folder, one_process, tmp_path):
    work, out = tmp_path / "work", tmp_path / "idx"
    code = (
        "import job_faults\nfrom encoder.jobs.index_job import index_source\n"
        f"index_source({str(folder)!r}, {str(work)!r}, {str(out)!r}, engine='ray', workers=2, shard_size=3, "
        "progress=False, task=job_faults.slow)\n"
    )
    env = {**os.environ, "PYTHONPATH": PATH}
    driver = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while len(parts.done_shards(work, 11)) < 3 and time.monotonic() < deadline and driver.poll() is None:
            time.sleep(0.1)
        assert driver.poll() is None, "the driver finished before it could be killed"
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and the local Ray it started
    finally:
        driver.wait(30)
    time.sleep(0.5)
    done = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (work / "parts").glob("*.parquet")}
    assert 3 <= len(done) < 11 and not out.exists()
    got = index_source(str(folder), work, out, engine="ray", shard_size=3, progress=False, task=job_faults.slow)
    assert got["ran"] == 11 - len(done)
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (work / "parts").glob("*.parquet")}
    assert {k: after[k] for k in done} == done  # finished parts not redone
    assert sorted(job_faults.writes(work)) == list(range(11))  # nothing lost, no part written twice
    _same(one_process, Index.load(out))


def test_ray_tasks_fill_the_ivf_merged_on_disk_as_one_process_would(tmp_path, monkeypatch):
    from encoder.jobs import ivf_job
    from encoder.search import ann

    monkeypatch.setattr(ann, "FLAT_MAX", 1000)  # 2,400 codes take the IVF path, as millions do
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(16, 8)).astype(np.float32)
    codes = (centres[rng.integers(0, 16, 2400)] + 0.3 * rng.normal(size=(2400, 8))).astype(np.float32)
    ids = [f"{i:04d}.png" for i in range(len(codes))]
    for s, rows in enumerate(np.array_split(np.arange(len(codes)), 3)):
        chunk = slice(rows[0], rows[-1] + 1)
        parts.write_part(parts.part_path(tmp_path, s), ids[chunk], codes[chunk], np.zeros(len(rows), bool), {})
    factory = ivf_job.factory_for(*ivf_job.count(tmp_path, 3), {})
    mapped, got_ids, _, built = ivf_job.build(tmp_path, 3, factory, engine="ray", workers=2, progress=False)
    assert sorted(p.name for p in (tmp_path / "ivf").glob("part-*.index")) == [f"part-0000{s}.index" for s in range(3)]
    served = Index.create("ae", "v1", mapped, got_ids, kind="code", built=built)
    one = Index.create("ae", "v1", codes, ids, kind="code", faiss_type=factory)
    assert served.meta["search_params"] == one.meta["search_params"]
    (da, ia), (db, ib) = served.search(codes[::5], 5), one.search(codes[::5], 5)
    assert ia == ib
    np.testing.assert_allclose(da, db, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("views", [None, "full"])
def test_ray_ae_index_equals_the_one_process_index_with_the_same_views(photos, checkpoint, tmp_path, views, capsys):
    common = ["--method", "ae", "--checkpoint", str(checkpoint)] + (["--views", views] if views else [])
    assert main(["index", str(photos), *common, "-o", str(tmp_path / "one")]) == 0
    ray_argv = ["--engine", "ray", "--shard-size", "3", "--work", str(tmp_path / "work")]
    assert main(["index", str(photos), *common, *ray_argv, "-o", str(tmp_path / "ray")]) == 0
    one, got = Index.load(tmp_path / "one"), Index.load(tmp_path / "ray")
    want = views or "crops"  # auto: the photos' median short side is past AUTO_CROPS_MIN_SIDE
    assert got.meta["view_set"] == one.meta["view_set"] == want
    assert ("views_auto" in got.meta) == (views is None) and got.meta == one.meta
    assert got.ids == one.ids and len(one.ids) == len(one.vectors) == 10 * (19 if want == "crops" else 1)
    np.testing.assert_allclose(got.vectors, one.vectors, atol=1e-6, rtol=0)
    q = np.asarray(one.vectors[::7])
    assert got.search(q, 5)[1] == one.search(q, 5)[1]
    err = capsys.readouterr().err
    assert "skipped 1 files" in err and f"skipped {photos / 'broken.jpg'}: not a recognised" in err
    assert err.count("views: crops (median short side") == (2 if views is None else 0)

"""Codes past the in-memory threshold: one IVF trained on a sample, filled part by part, merged on disk."""

from __future__ import annotations

import json
import shutil

import faiss
import numpy as np
import pytest

pytest.importorskip("pyarrow", reason="jobs need the [ray] extra (pyarrow, fsspec): pip install '.[ray]'")

from encoder.cli.search import main  # noqa: E402
from encoder.jobs import ivf_job, parts  # noqa: E402
from encoder.search import ann, ondisk  # noqa: E402
from encoder.search.index import Index  # noqa: E402

BOUNDS = [(0, 700), (700, 1500), (1500, 2200), (2200, 3001)]  # 4 parts; row 1000 is a skipped file


def _codes(n: int = 3001, d: int = 16) -> np.ndarray:
    """Seeded clustered codes (20 clusters): (n, d) float32."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, d)).astype(np.float32)
    return (centres[rng.integers(0, 20, n)] + 0.3 * rng.normal(size=(n, d))).astype(np.float32)


def _job(tmp_path, monkeypatch, workers: int = 1):
    """Parts of 3,000 codes (one skipped file) built on disk -> (work, codes kept, ids kept, build result)."""
    monkeypatch.setattr(ann, "FLAT_MAX", 1000)  # 3,000 codes then take the IVF path, as millions do
    work, codes = tmp_path / "work", _codes()
    ids = [f"{i:05d}.jpg" for i in range(len(codes))]
    for s, (a, b) in enumerate(BOUNDS):
        skipped = {1000 - a: "cannot decode"} if a <= 1000 < b else {}
        good = [r for r in range(a, b) if r - a not in skipped]
        parts.write_part(parts.part_path(work, s), ids[a:b], codes[good], np.zeros(len(good), bool), skipped)
    keep = np.array([r != 1000 for r in range(len(codes))])
    factory = ivf_job.factory_for(*ivf_job.count(work, len(BOUNDS)), {})
    assert factory == f"IVF{ann.nlist_for(3000)},Flat"
    got = ivf_job.build(work, len(BOUNDS), factory, workers=workers, progress=False)
    return work, codes[keep], [i for i, k in zip(ids, keep) if k], got


def _same_answers(a: Index, b: Index, q: np.ndarray) -> None:
    da, ia = a.search(q, 5)
    db, ib = b.search(q, 5)
    assert ia == ib
    np.testing.assert_allclose(da, db, rtol=1e-5, atol=1e-5)


def test_parts_merged_on_disk_answer_as_the_one_process_index_and_the_folder_moves(tmp_path, monkeypatch):
    work, codes, ids, (mapped, got_ids, skipped, built) = _job(tmp_path, monkeypatch)
    assert got_ids == ids and skipped == [("01000.jpg", "cannot decode")]
    np.testing.assert_array_equal(mapped, codes)
    out = tmp_path / "idx"
    Index.create("ae", "v1", mapped, got_ids, kind="code", built=built).save(out)
    assert (out / "index.ivfdata").stat().st_size > 4 * (out / "index.faiss").stat().st_size  # lists are beside
    # the one-process index of the same codes, same FAISS type: the same training sample, so the same lists
    one = Index.create("ae", "v1", codes, ids, kind="code", faiss_type=built.factory)
    moved = tmp_path / "elsewhere" / "renamed"
    shutil.move(out, moved)
    shutil.rmtree(work)  # the index folder needs nothing from the job's work folder
    served = Index.load(moved, mmap=True)
    assert ondisk.ondisk_lists(served.faiss_index) is not None
    for key in ("faiss_type", "search_params", "tuned_recall", "count", "metric"):
        assert served.meta[key] == one.meta[key], key
    _same_answers(served, one, codes[::7])


def test_add_remove_and_save_of_an_on_disk_index_match_the_in_memory_one(tmp_path, monkeypatch):
    _, codes, ids, (mapped, got_ids, _, built) = _job(tmp_path, monkeypatch)
    Index.create("ae", "v1", mapped, got_ids, kind="code", built=built).save(tmp_path / "idx")
    lists = (tmp_path / "idx" / "index.ivfdata").read_bytes()
    one = Index.create("ae", "v1", codes, ids, kind="code", faiss_type=built.factory)
    # saved unchanged elsewhere: the new folder has its own list file and codes, the old one untouched
    Index.load(tmp_path / "idx", mmap=True).save(tmp_path / "copy")
    shutil.rmtree(tmp_path / "idx")
    copy = Index.load(tmp_path / "copy", mmap=True)
    assert (tmp_path / "copy" / "index.ivfdata").read_bytes() == lists
    _same_answers(copy, one, codes[::11])
    extra = _codes(3200)[3001:] + 0.05
    new_ids = [f"new{i:03d}.jpg" for i in range(len(extra))]
    for idx in (copy, one):
        idx.add(extra, new_ids)
    assert copy.meta["faiss_type"] == one.meta["faiss_type"] == built.factory  # the training is kept
    assert (tmp_path / "copy" / "index.ivfdata").read_bytes() == lists  # the served lists never change
    _same_answers(copy, one, np.concatenate([codes[::13], extra[::5]]))
    for idx in (copy, one):
        assert idx.remove(ids[::3] + ["not-there.jpg"]) == ["not-there.jpg"]
    _same_answers(copy, one, codes[1::9])
    copy.save(tmp_path / "copy")  # changed: its lists now live in RAM and are written into index.faiss
    again = Index.load(tmp_path / "copy", mmap=True)
    assert not (tmp_path / "copy" / "index.ivfdata").exists() and len(again) == len(one)
    _same_answers(again, one, codes[1::9])


def test_a_truncated_list_file_is_refused_by_name(tmp_path, monkeypatch):
    _, _, _, (mapped, got_ids, _, built) = _job(tmp_path, monkeypatch)
    Index.create("ae", "v1", mapped, got_ids, kind="code", built=built).save(tmp_path / "idx")
    lists = tmp_path / "idx" / "index.ivfdata"
    lists.write_bytes(lists.read_bytes()[:1000])
    with pytest.raises(Exception, match="index.ivfdata.*truncated"):
        Index.load(tmp_path / "idx", mmap=True)


def _stamps(work) -> dict[str, tuple[int, int]]:
    return {
        p.relative_to(work).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in (work / "ivf").rglob("*")
        if p.is_file()
    }


def test_a_killed_build_reruns_only_what_is_missing(tmp_path, monkeypatch):
    real_add, real_merge = ivf_job.add_part, ondisk.merge

    def dies_on_shard_2(work, shard):
        if shard == 2:
            raise RuntimeError("worker killed")
        return real_add(work, shard)

    def dies_after_merging(*args):
        real_merge(*args)
        raise RuntimeError("driver killed")

    with monkeypatch.context() as m:
        m.setattr(ivf_job, "add_part", dies_on_shard_2)
        with pytest.raises(RuntimeError, match="worker killed"):
            _job(tmp_path, m)
    work = tmp_path / "work"
    first = _stamps(work)
    assert {"ivf/codes.npy", "ivf/trained.index", "ivf/part-00000.index", "ivf/part-00001.index"} <= set(first)
    assert "ivf/part-00002.index" not in first
    with monkeypatch.context() as m:
        m.setattr(ondisk, "merge", dies_after_merging)
        with pytest.raises(RuntimeError, match="driver killed"):
            _job(tmp_path, m)
    second = _stamps(work)
    assert {k: second[k] for k in first} == first  # nothing finished was redone
    assert not (work / "ivf" / "merged").exists()
    _, codes, ids, (mapped, got_ids, _, built) = _job(tmp_path, monkeypatch)
    third = _stamps(work)
    finished = {k: v for k, v in second.items() if not k.startswith("ivf/merged.tmp/")}
    assert {k: third[k] for k in finished} == finished  # the half-done merge alone was redone
    assert not (work / "ivf" / "merged.tmp").exists() and (work / "ivf" / "merged" / "index.ivfdata").is_file()
    _job(tmp_path, monkeypatch)
    assert _stamps(work) == third  # a finished build: nothing written again
    one = Index.create("ae", "v1", codes, ids, kind="code", faiss_type=built.factory)
    _same_answers(Index.create("ae", "v1", mapped, got_ids, kind="code", built=built), one, codes[::7])


def test_ae_job_forced_on_disk_answers_as_the_same_lists_filled_in_one_process(folder, checkpoint, tmp_path, capsys):
    common = ["--method", "ae", "--checkpoint", str(checkpoint), "--views", "full"]
    assert main(["index", str(folder), *common, "-o", str(tmp_path / "one")]) == 0
    one = Index.load(tmp_path / "one")
    work, out = tmp_path / "work", tmp_path / "idx"
    with pytest.MonkeyPatch.context() as m:  # 30 codes onto the IVF path: 3 lists
        m.setattr(ann, "FLAT_MAX", 10)
        m.setattr(ann, "nlist_for", lambda n: 3)
        job = ["index", str(folder), *common, "--engine", "local", "--workers", "2", "--shard-size", "9"]
        assert main([*job, "--work", str(work), "-o", str(out)]) == 0
    assert (out / "index.ivfdata").is_file() and len(list((work / "ivf").glob("part-*.index"))) == 4
    served = Index.load(out, mmap=True)
    assert served.ids == one.ids and served.meta["faiss_type"] == "IVF3,Flat"
    np.testing.assert_allclose(served.vectors, one.vectors, atol=1e-6, rtol=0)
    # the same coarse quantizer, filled with the one-process codes in one process, probed alike
    same_lists = faiss.read_index(str(work / "ivf" / "trained.index"))
    same_lists.add(np.ascontiguousarray(one.vectors))
    params = served.meta["search_params"]
    _, rows = ann.search(same_lists, one.vectors, 5, "l2", params)
    assert served.search(one.vectors, 5)[1] == [[one.ids[r] for r in row] for row in rows]
    elsewhere = tmp_path / "moved" / "idx"
    shutil.move(out, elsewhere)
    capsys.readouterr()
    assert main(["query", str(elsewhere), str(folder / "photo_3.jpg"), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)  # stdout is the JSON alone
    assert got[0]["neighbours"][0]["id"] == "photo_3.jpg"

"""The job merge hands the index the parts' id columns: an ids.parquet index equal to the one-process one."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pyarrow", reason="jobs need the [ray] extra (pyarrow, fsspec): pip install '.[ray]'")
pytest.importorskip("fsspec", reason="jobs need the [ray] extra (pyarrow, fsspec): pip install '.[ray]'")

from encoder.cli.search import main  # noqa: E402
from encoder.hashing.dedup import find_groups  # noqa: E402
from encoder.jobs.dedup_job import find_groups_job  # noqa: E402
from encoder.jobs.index_job import index_source  # noqa: E402
from encoder.search import index_files  # noqa: E402
from encoder.search.index import Index  # noqa: E402
from encoder.search.index_files import IdColumn  # noqa: E402


def test_job_merge_keeps_the_parts_id_column_and_equals_the_one_process_index(folder, tmp_path, monkeypatch):
    assert main(["index", str(folder), "--method", "phash", "-o", str(tmp_path / "one")]) == 0
    one = Index.load(tmp_path / "one")
    assert type(one.ids) is list  # 30 ids: below the threshold, ids.json
    monkeypatch.setattr(index_files, "IDS_PARQUET_MIN", 10)
    out = tmp_path / "idx"
    got = index_source(str(folder), tmp_path / "work", out, workers=2, shard_size=7, progress=False)
    merged = got["index"].ids
    assert isinstance(merged, IdColumn) and merged.arrow.num_chunks == got["shards"] == 5  # one chunk per part
    assert sorted(f.name for f in out.iterdir()) == ["hashes.npy", "ids.parquet", "index.faiss", "meta.json"]
    back = Index.load(out)
    assert isinstance(back.ids, IdColumn) and back.ids == one.ids and back.meta == one.meta
    np.testing.assert_array_equal(back.vectors, one.vectors)
    np.testing.assert_array_equal(back.flat_mask(), one.flat_mask())
    q = np.asarray(one.vectors[::3])
    assert back.search(q, 5)[1] == one.search(q, 5)[1]
    # the dedup job and the one-process groups read the column index as they read the list one
    want = find_groups(one.vectors, one.ids, 16, one.flat_mask())
    assert want, "the folder holds copies: some group is expected"
    assert find_groups_job(out, tmp_path / "w", threshold=16, workers=1, progress=False) == want
    assert find_groups(back.vectors, back.ids, 16, back.flat_mask()) == want

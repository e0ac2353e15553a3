"""Ids as a Parquet column: IdColumn against a list, ids.parquet round trips, old ids.json indexes, refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow", reason="ids.parquet needs pyarrow (the [ray] extra): pip install '.[ray]'")
import pyarrow.parquet as pq  # noqa: E402

from encoder.search import index_files  # noqa: E402
from encoder.search.errors import CorruptIndexError  # noqa: E402
from encoder.search.index import Index  # noqa: E402
from encoder.search.index_files import IdColumn  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def _ids(n: int, start: int = 0) -> list[str]:
    return [f"photos/{2020 + r % 3}/IMG_{r:06d}.jpg" for r in range(start, start + n)]


def _hashes(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 8), dtype=np.uint8)


@pytest.fixture
def parquet_from_10(monkeypatch):
    """Indexes of 10 rows or more write ids.parquet."""
    monkeypatch.setattr(index_files, "IDS_PARQUET_MIN", 10)


def _column(ids: list[str], cuts=(3, 3, 7)) -> IdColumn:
    """``ids`` as an IdColumn of several chunks (one empty) cut at ``cuts``."""
    edges = [0, *cuts, len(ids)]
    return IdColumn(pa.chunked_array([pa.array(ids[a:b], pa.string()) for a, b in zip(edges, edges[1:])]))


def test_id_column_reads_like_the_list_across_chunks():
    ids = _ids(11)
    col = _column(ids)
    assert len(col) == 11 and col.arrow.num_chunks == 4
    assert [col[i] for i in range(-11, 11)] == [ids[i] for i in range(-11, 11)]
    assert col[np.int64(7)] == ids[7]
    for s in (slice(2, 9), slice(None, None, 3), slice(None, None, -1), slice(9, 1, -2), slice(5, 2), slice(-4, None)):
        assert list(col[s]) == ids[s] and isinstance(col[s], IdColumn)
    assert list(col) == ids and col == ids and ids == col and col == tuple(ids) and col == _column(ids, (5, 5, 5))
    assert col != ids[:-1] and col != ids[::-1] and col != "photos"
    assert ids[4] in col and "photos/none.jpg" not in col and 4 not in col
    assert col.index(ids[6]) == 6 and col.count(ids[6]) == 1
    rows = np.array([10, 0, 7, 3, 3, 2])
    assert col.take(rows) == [ids[r] for r in rows]
    many = np.random.default_rng(0).integers(0, 11, 500)  # past the one-by-one path: a take per chunk
    assert col.take(many) == [ids[r] for r in many] and col.take(np.array([], np.int64)) == []
    assert col.isin([ids[1], ids[8], "other"]).tolist() == [i in (1, 8) for i in range(11)]
    assert col.n_distinct() == 11 and _column(ids[:5] + ids[:6], (2, 2, 8)).n_distinct() == 6
    joined = IdColumn.concat([col, ["x.jpg"], IdColumn(pa.array([ids[0]], pa.large_string()))])
    assert joined == [*ids, "x.jpg", ids[0]] and joined.n_distinct() == 12 and joined.arrow.num_chunks == 6
    for bad in (11, -12):
        with pytest.raises(IndexError, match="out of range"):
            col[bad]
    with pytest.raises(IndexError, match=r"\[0, 11\)"):
        col.take(np.array([0, 11]))


def test_id_column_is_immutable_and_refuses_nulls_and_non_strings():
    col = _column(_ids(11))
    with pytest.raises(TypeError):
        col[0] = "x"  # type: ignore[index]
    with pytest.raises(TypeError):
        hash(col)
    with pytest.raises(ValueError, match="1 nulls"):
        IdColumn(pa.array(["a", None], pa.string()))
    with pytest.raises(TypeError, match="string"):
        IdColumn(pa.array([1, 2]))


def test_small_index_keeps_ids_json_and_never_imports_pyarrow(tmp_path):
    """Below IDS_PARQUET_MIN: ids.json, as every index before; a one-shot query does not pay pyarrow's import."""
    code = f"""
import sys, numpy as np
from encoder.search.index import Index
idx = Index.create("phash", "v1", np.arange(40, dtype=np.uint8).reshape(5, 8), list("abcde"), kind="hash")
idx.save({str(tmp_path / "idx")!r})
back = Index.load({str(tmp_path / "idx")!r})
print(type(back.ids).__name__, back.search(back.vectors[:1], k=2)[1], "pyarrow" in sys.modules)
"""
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split() == ["list", "[['a',", "'b']]", "False"]
    assert sorted(f.name for f in (tmp_path / "idx").iterdir()) == [
        "hashes.npy",
        "ids.json",
        "index.faiss",
        "meta.json",
    ]


def test_round_trip_through_ids_parquet_serves_the_same_answers(tmp_path, parquet_from_10):
    h, ids = _hashes(40), _ids(40)
    flat = np.zeros(40, bool)
    flat[[3, 17]] = True
    idx = Index.create("phash", "v1", h, ids, kind="hash", flat=flat, root="/lib")
    idx.save(tmp_path / "idx")
    names = sorted(f.name for f in (tmp_path / "idx").iterdir())
    assert names == ["hashes.npy", "ids.parquet", "index.faiss", "meta.json"]
    assert pq.read_table(tmp_path / "idx" / "ids.parquet").column("id").to_pylist() == ids
    back = Index.load(tmp_path / "idx")
    assert isinstance(back.ids, IdColumn) and back.ids == ids and back.meta == idx.meta
    q = _hashes(6, seed=1)
    d0, i0 = idx.search(q, k=5)
    d1, i1 = back.search(q, k=5)
    np.testing.assert_array_equal(d0, d1)
    assert i0 == i1 and all(isinstance(x, str) for row in i1 for x in row)
    assert back.rows([ids[30], ids[2]]).tolist() == [30, 2]
    with pytest.raises(KeyError, match="nope.jpg"):
        back.rows(["nope.jpg"])
    assert back.flat_mask().tolist() == flat.tolist() and back.flat_note() == "2 flat, "
    assert back.describe() == idx.describe() and len(back) == 40
    back.save(tmp_path / "again")  # the column written back as it was read
    assert pq.read_table(tmp_path / "again" / "ids.parquet").column("id").to_pylist() == ids


def test_add_and_remove_on_a_column_index_match_the_list_index(tmp_path, parquet_from_10):
    h, ids = _hashes(30), _ids(30)
    flat = np.arange(30) % 7 == 0
    on_list = Index.create("phash", "v1", h, ids, kind="hash", flat=flat)
    on_list.save(tmp_path / "idx")
    on_col = Index.load(tmp_path / "idx")
    assert isinstance(on_col.ids, IdColumn)
    new_h, new_ids = _hashes(5, seed=2), [ids[7], *_ids(4, start=100)]  # ids[7] is replaced (was flat)
    new_flat = np.array([False, True, False, False, False])
    for idx in (on_list, on_col):
        idx.add(new_h, new_ids, flat=new_flat)
        assert idx.remove([ids[14], ids[3], "gone.jpg"]) == ["gone.jpg"]
    assert list(on_col.ids) == list(on_list.ids) and ids[7] == on_col.ids[-5]
    np.testing.assert_array_equal(on_col.vectors, on_list.vectors)
    assert on_col.meta == on_list.meta and on_col.meta["flat"] == sorted([ids[0], ids[21], ids[28], new_ids[1]])
    q = _hashes(4, seed=3)
    assert on_col.search(q, k=5)[1] == on_list.search(q, k=5)[1]
    on_col.remove(list(on_col.ids)[3:])  # 3 left: below the threshold, ids.json again
    on_col.save(tmp_path / "idx")
    assert (tmp_path / "idx" / "ids.json").is_file() and not (tmp_path / "idx" / "ids.parquet").exists()
    assert Index.load(tmp_path / "idx").ids == [ids[0], ids[1], ids[2]]


def test_views_index_with_an_id_column(tmp_path, parquet_from_10):
    """A code index of 2 views per image: each id's rows consecutive in ids.parquet, one result per image."""
    codes = np.random.default_rng(0).normal(size=(24, 8)).astype(np.float32)
    ids = [x for x in _ids(12) for _ in range(2)]
    idx = Index.create("ae", "fp", codes, ids, kind="code", views=2)
    idx.save(tmp_path / "v")
    back = Index.load(tmp_path / "v")
    assert isinstance(back.ids, IdColumn) and len(back) == 12 and back.n_rows == 24
    d0, i0 = idx.search(codes[::5], k=4)
    d1, i1 = back.search(codes[::5], k=4)
    assert i0 == i1 and all(len(set(row)) == 4 for row in i1)
    np.testing.assert_allclose(d0, d1)
    assert back.rows([ids[6]]).tolist() == [6]
    mapped = Index.load(tmp_path / "v", mmap=True)  # codes and FAISS index memory-mapped, ids a column
    assert isinstance(mapped.ids, IdColumn) and mapped.search(codes[::5], k=4)[1] == i0
    back.add(codes[:2] + 1, ["extra.jpg", "extra.jpg"])
    assert back.n_rows == 26 and back.search(codes[:1] + 1, k=1)[1] == [["extra.jpg"]]
    swapped = ids[:1] + ids[2:3] + ids[1:2] + ids[3:]  # the rows of two images interleaved
    pq.write_table(pa.table({"id": pa.array(swapped, pa.string())}), tmp_path / "v" / "ids.parquet")
    with pytest.raises(CorruptIndexError, match=r"ids.parquet: each id must have 2 consecutive rows.*views=2"):
        Index.load(tmp_path / "v")


def test_old_ids_json_index_still_loads(tmp_path, parquet_from_10):
    """An index written before ids.parquet (ids.json, whatever its size) loads and answers as before."""
    h, ids = _hashes(25), _ids(25)
    index_files.IDS_PARQUET_MIN = 10**9
    Index.create("phash", "v1", h, ids, kind="hash").save(tmp_path / "old")
    index_files.IDS_PARQUET_MIN = 10
    assert (tmp_path / "old" / "ids.json").is_file()
    back = Index.load(tmp_path / "old")
    assert type(back.ids) is list and back.ids == ids
    assert back.search(h[4:5], k=1)[1] == [[ids[4]]]
    back.add(_hashes(1, seed=5), ["new.jpg"])
    back.save(tmp_path / "old")  # rewritten past the threshold: ids.parquet replaces ids.json
    assert sorted(f.name for f in (tmp_path / "old").iterdir()) == [
        "hashes.npy",
        "ids.parquet",
        "index.faiss",
        "meta.json",
    ]
    assert Index.load(tmp_path / "old").ids == [*ids, "new.jpg"]


def _flip_data_byte(d: Path) -> None:
    """Change one byte inside the compressed id page (not its header, not the footer)."""
    f = d / "ids.parquet"
    chunk = pq.ParquetFile(f).metadata.row_group(0).column(0)
    at = chunk.data_page_offset + chunk.total_compressed_size - 3
    data = bytearray(f.read_bytes())
    data[at] ^= 0x5A
    f.write_bytes(bytes(data))


def _rewrite(table_fn):
    def edit(d: Path) -> None:
        pq.write_table(table_fn(pq.read_table(d / "ids.parquet").column("id")), d / "ids.parquet")

    return edit


CORRUPT = [
    ("truncated", lambda d: (d / "ids.parquet").write_bytes((d / "ids.parquet").read_bytes()[:-40]), "Parquet"),
    ("a byte edited", _flip_data_byte, "checksum"),
    ("not Parquet at all", lambda d: (d / "ids.parquet").write_text('["a"]'), "Parquet"),
    ("a second column", _rewrite(lambda c: pa.table({"id": c, "x": pa.array(range(len(c)))})), "one string column"),
    ("ids of numbers", _rewrite(lambda c: pa.table({"id": pa.array(range(len(c)))})), "id: int64"),
    ("another column name", _rewrite(lambda c: pa.table({"path": c})), "path: string"),
    ("a null id", _rewrite(lambda c: pa.table({"id": pa.array([None, *c.to_pylist()[1:]], pa.string())})), "1 nulls"),
    ("one id too many", _rewrite(lambda c: pa.table({"id": pa.array([*c.to_pylist(), "x"], pa.string())})), "ids"),
    ("ids.json beside it", lambda d: (d / "ids.json").write_text("[]"), "both ids.json and ids.parquet"),
]


@pytest.mark.parametrize("name,corrupt,says", CORRUPT, ids=[c[0] for c in CORRUPT])
def test_a_corrupt_ids_parquet_is_refused_naming_the_file(tmp_path, parquet_from_10, name, corrupt, says):
    Index.create("phash", "v1", _hashes(30), _ids(30), kind="hash").save(tmp_path / "idx")
    corrupt(tmp_path / "idx")
    with pytest.raises(CorruptIndexError, match=says) as e:
        Index.load(tmp_path / "idx")
    assert str(tmp_path / "idx") in str(e.value)
    if name != "one id too many":
        assert "ids.parquet" in str(e.value)


def test_without_pyarrow_ids_stay_json_and_a_parquet_index_names_the_extra(tmp_path, parquet_from_10, monkeypatch):
    h, ids = _hashes(20), _ids(20)
    Index.create("phash", "v1", h, ids, kind="hash").save(tmp_path / "pq")
    monkeypatch.setattr(index_files, "pyarrow_installed", lambda: False)
    Index.create("phash", "v1", h, ids, kind="hash").save(tmp_path / "js")
    assert (tmp_path / "js" / "ids.json").is_file() and Index.load(tmp_path / "js").ids == ids
    with pytest.raises(ImportError, match=r"pq/ids.parquet: .*needs pyarrow: pip install '\.\[ray\]'"):
        Index.load(tmp_path / "pq")

"""Parts and sources without an engine: round trips, atomic writes, folder = file:// = memory:// = list file."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pyarrow", reason="jobs need the [ray] extra (pyarrow, fsspec): pip install '.[ray]'")
fsspec = pytest.importorskip("fsspec", reason="jobs need the [ray] extra (pyarrow, fsspec): pip install '.[ray]'")

from encoder.data import ImageLoadError, open_image  # noqa: E402
from encoder.jobs import parts, sources  # noqa: E402


@pytest.mark.parametrize("kind", ["hash", "code"])
def test_part_round_trip_keeps_rows_order_and_reasons(tmp_path, kind):
    rng = np.random.default_rng(1)
    ids = [f"{i}.jpg" for i in range(6)]
    skipped = {1: "not a recognised image format", 4: "empty file (0 bytes)"}
    v = rng.integers(0, 256, (4, 8), dtype=np.uint8) if kind == "hash" else rng.normal(size=(4, 16)).astype(np.float32)
    flat = np.array([False, True, False, False])
    path = parts.part_path(tmp_path, 3)
    parts.write_part(path, ids, v, flat, skipped)
    got = parts.read_part(path)
    assert got.ids == ["0.jpg", "2.jpg", "3.jpg", "5.jpg"]
    np.testing.assert_array_equal(got.vectors, v)
    assert got.vectors.dtype == v.dtype
    np.testing.assert_array_equal(got.flat, flat)
    assert got.skipped == [("1.jpg", skipped[1]), ("4.jpg", skipped[4])]
    assert sorted(p.name for p in path.parent.iterdir()) == ["part-00003.parquet"]  # no temporary left
    assert parts.done_shards(tmp_path, 5) == {3}
    first = path.read_bytes()
    parts.write_part(path, ids, v, flat, skipped)
    assert path.read_bytes() == first  # a retried task rewrites the same bytes


def test_part_refuses_rows_that_do_not_add_up(tmp_path):
    with pytest.raises(ValueError, match="3 ids, 1 skipped but 1 vectors"):
        parts.write_part(
            tmp_path / "p.parquet", ["a", "b", "c"], np.zeros((1, 8), np.uint8), np.zeros(1, bool), {0: "x"}
        )


def test_folder_file_url_memory_url_and_list_file_list_the_same(folder):
    root, ids, locations, skipped = sources.list_source(str(folder))
    assert len(ids) == 32 and ids == sorted(ids) and "sub/photo_0.png" in ids
    assert [s[1] for s in skipped] == ["not an image extension (.txt)"]
    _, file_ids, file_locs, _ = sources.list_source(f"file://{folder}")
    assert file_ids == ids and file_locs[0].startswith("file://")
    mem = fsspec.filesystem("memory")
    for i, loc in zip(ids, locations):
        mem.pipe(f"/src/{i}", open(loc, "rb").read())
    _, mem_ids, mem_locs, _ = sources.list_source("memory://src")
    assert mem_ids == ids
    listing = folder.parent / "list.txt"
    rows = [r for r, i in enumerate(ids) if "photo" in i][:4]
    listing.write_text("# photos\n" + "\n".join(f"imgs/{ids[r]}" for r in rows[:3]) + "\n\n" + mem_locs[rows[3]] + "\n")
    _, list_ids, list_locs, _ = sources.list_source(str(listing))
    assert list_ids == [f"imgs/{ids[r]}" for r in rows[:3]] + [mem_locs[rows[3]]]
    for a, b in zip(list_locs, [locations[r] for r in rows[:3]] + [mem_locs[rows[3]]]):
        assert np.array_equal(np.asarray(sources.open_item(a)), np.asarray(sources.open_item(b)))
    for loc, mloc in zip(locations, mem_locs):  # the bytes path decodes the same pixels with the same checks
        try:
            want = np.asarray(open_image(loc, draft_size=(64, 64), luma_only=True))
        except ImageLoadError as e:
            with pytest.raises(ImageLoadError, match="cannot decode|not a recognised") as got:
                sources.open_item(mloc, draft_size=(64, 64), luma_only=True)
            assert got.value.path == mloc and e.reason.split(":")[0] == got.value.reason.split(":")[0]
            continue
        assert np.array_equal(np.asarray(sources.open_item(mloc, draft_size=(64, 64), luma_only=True)), want)


def test_open_image_of_bytes_checks_like_a_path(folder):
    data = (folder / "photo_0.jpg").read_bytes()
    with pytest.raises(ImageLoadError, match="s3://b/x.jpg: empty file"):
        open_image(b"", name="s3://b/x.jpg")
    with pytest.raises(ImageLoadError, match="exceeds max_pixels=100"):
        open_image(data, name="s3://b/x.jpg", max_pixels=100)
    with pytest.raises(ImageLoadError, match="not a recognised image format"):
        open_image(b"GIF89a but not really", name="x.gif")
    with pytest.raises(ImageLoadError, match="no such file"):
        sources.open_item("memory://nowhere/x.jpg")


def test_missing_source_and_other_job_in_work_folder_are_refused(tmp_path, folder):
    with pytest.raises(FileNotFoundError, match="image source not found"):
        sources.list_source(str(tmp_path / "nope"))
    sources.make_manifest(str(folder), tmp_path / "w", {"method": "phash"}, 10)
    with pytest.raises(ValueError, match="holds another job"):
        sources.make_manifest(str(folder), tmp_path / "w", {"method": "dhash"}, 10)
    m = sources.make_manifest(str(folder), tmp_path / "w", {"method": "phash"}, 10)
    assert (m.n_shards, m.n_images) == (4, 32)
    ids, _ = sources.shard_rows(tmp_path / "w", 3)
    assert len(ids) == 2

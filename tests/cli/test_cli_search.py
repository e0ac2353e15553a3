"""search.py end to end: index, query (table/JSON/plot/mirror/folder), add, remove, dedup, errors."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import skimage
from PIL import Image

import search

DATA = Path(skimage.__file__).parent / "data"


@pytest.fixture()
def folder(tmp_path):
    root = tmp_path / "imgs"
    (root / "sub").mkdir(parents=True)
    for name in ["astronaut.png", "coffee.png", "chelsea.png", "camera.png"]:
        im = Image.open(DATA / name).convert("RGB")
        im.save(root / f"{Path(name).stem}.jpg", quality=90)
    Image.open(DATA / "coffee.png").convert("RGB").resize((200, 133)).save(
        root / "sub" / "coffee_small.jpg", quality=40
    )
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    return root


def test_index_query_json_plot(folder, tmp_path, capsys):
    idx = tmp_path / "idx"
    assert search.main(["index", str(folder), "--method", "phash", "-o", str(idx)]) == 0
    err = capsys.readouterr().err
    assert "broken.jpg" in err
    ids = json.loads((idx / "ids.json").read_text())
    assert ids == ["astronaut.jpg", "camera.jpg", "chelsea.jpg", "coffee.jpg", "sub/coffee_small.jpg"]
    assert np.load(idx / "hashes.npy").shape == (5, 8)
    out = tmp_path / "q.png"
    assert search.main(["query", str(idx), str(DATA / "coffee.png"), "-k", "2", "--json", "--plot", str(out)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert {n["id"] for n in res[0]["neighbours"]} == {"coffee.jpg", "sub/coffee_small.jpg"}
    assert out.stat().st_size > 1000
    assert search.main(["query", str(idx), str(DATA / "astronaut.png"), "-k", "50"]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[1].split()[-1] == "astronaut.jpg" and len(table.splitlines()) == 6


def test_mirror_query(folder, tmp_path, capsys):
    idx = tmp_path / "idx"
    search.main(["index", str(folder), "-o", str(idx)])
    flipped = tmp_path / "flip.png"
    Image.open(DATA / "chelsea.png").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(flipped)
    capsys.readouterr()
    search.main(["query", str(idx), str(flipped), "-k", "1", "--json", "--mirror"])
    res = json.loads(capsys.readouterr().out)
    assert res[0]["neighbours"][0]["id"] == "chelsea.jpg" and res[0]["neighbours"][0]["distance"] <= 6


def test_add_remove_and_query_folder(folder, tmp_path, capsys):
    idx = tmp_path / "idx"
    search.main(["index", str(folder / "astronaut.jpg"), str(folder / "camera.jpg"), "-o", str(idx)])
    before = np.load(idx / "hashes.npy")
    assert search.main(["add", str(idx), str(folder / "chelsea.jpg")]) == 0
    after = np.load(idx / "hashes.npy")
    np.testing.assert_array_equal(after[:2], before)
    assert json.loads((idx / "ids.json").read_text())[-1] == "chelsea.jpg"
    assert search.main(["remove", str(idx), "camera.jpg"]) == 0
    assert json.loads((idx / "ids.json").read_text()) == ["astronaut.jpg", "chelsea.jpg"]
    capsys.readouterr()
    assert search.main(["query", str(idx), str(folder), "-k", "1", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert len(res) == 5


def test_dedup_outputs(folder, tmp_path, capsys):
    idx = tmp_path / "idx"
    search.main(["index", str(folder), "-o", str(idx)])
    c, j, p = tmp_path / "d.csv", tmp_path / "d.json", tmp_path / "d.png"
    assert (
        search.main(["dedup", str(idx), "--threshold", "10", "--csv", str(c), "--json", str(j), "--plot", str(p)]) == 0
    )
    groups = json.loads(j.read_text())["groups"]
    assert groups[0]["ids"] == ["coffee.jpg", "sub/coffee_small.jpg"]
    rows = list(csv.DictReader(c.open()))
    assert [r["id"] for r in rows] == ["coffee.jpg", "sub/coffee_small.jpg"]
    assert p.stat().st_size > 1000


def test_errors(folder, tmp_path, capsys):
    assert search.main(["query", str(tmp_path / "none"), str(DATA / "coffee.png")]) == 2
    assert "no meta.json" in capsys.readouterr().err
    idx = tmp_path / "idx"
    search.main(["index", str(folder), "-o", str(idx)])
    with pytest.raises(SystemExit):
        search.main(["query", str(idx), str(DATA / "coffee.png"), "-k", "0"])
    meta = json.loads((idx / "meta.json").read_text())
    meta["version"] = "phash-v0"
    (idx / "meta.json").write_text(json.dumps(meta))
    capsys.readouterr()
    assert search.main(["query", str(idx), str(DATA / "coffee.png")]) == 2
    assert "phash-v0" in capsys.readouterr().err
    assert search.main(["add", str(idx), str(folder / "camera.jpg")]) == 2
    assert json.loads((idx / "meta.json").read_text())["version"] == "phash-v0"  # nothing written

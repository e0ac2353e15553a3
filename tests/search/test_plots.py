"""plots: pictures are written, and an image that cannot be drawn is named (not a silent grey tile)."""

import numpy as np
import pytest
from helpers import class_folder
from PIL import Image

import search
from encoder.search import plots


@pytest.fixture()
def titles(monkeypatch):
    """Every axis title of the figures saved, instead of writing them."""
    seen: list[str] = []
    real = plots._save

    def save(fig, out):
        seen.extend(ax.get_title() for ax in fig.axes)
        real(fig, out)

    monkeypatch.setattr(plots, "_save", save)
    return seen


def test_unreadable_neighbour_is_named_and_labelled(tmp_path, titles):
    good = tmp_path / "a.png"
    Image.fromarray(np.full((20, 20, 3), 90, np.uint8)).save(good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG not really")
    out = tmp_path / "q.png"
    failed = plots.plot_query(good, [good, bad, tmp_path / "gone.png"], [0, 3, 5], out)
    assert [p for p, _ in failed] == [str(bad), str(tmp_path / "gone.png")]
    assert "no such file" in failed[1][1] and failed[0][1]
    assert out.stat().st_size > 1000
    assert [t.endswith("unreadable") for t in titles[:4]] == [False, False, True, True]
    titles.clear()
    groups = [{"ids": ["a.png", "bad.png"], "max_distance": 2}]
    assert plots.plot_groups(groups, tmp_path, tmp_path / "g.png") == [(str(bad), failed[0][1])]
    assert titles[1].endswith("unreadable") and not titles[0].endswith("unreadable")


def test_query_plot_says_which_neighbour_it_cannot_draw(tmp_path, capsys):
    folder = class_folder(tmp_path / "imgs", per_class=2)
    idx = tmp_path / "idx"
    assert search.main(["index", str(folder), "-o", str(idx)]) == 0
    q = tmp_path / "q.png"
    Image.open(folder / "down" / "00.png").save(q)
    (folder / "down" / "00.png").unlink()  # indexed, then deleted
    capsys.readouterr()
    assert search.main(["query", str(idx), str(q), "-k", "6", "--plot", str(tmp_path / "p.png")]) == 0
    err = capsys.readouterr().err
    assert f"cannot draw {folder / 'down' / '00.png'}: no such file" in err
    assert err.count("cannot draw") == 1

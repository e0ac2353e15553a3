"""quantize.py end to end: outputs, JSON, auto-K, segmentation, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import quantize
from encoder.palette import kmeans
from encoder.palette.report import auto_n_colors, lossless_png_size
from tests.corpus import assert_reported, make_corpus


def photo(path: Path, seed: int = 0, size=(64, 48)) -> Path:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    Image.fromarray(small).resize(size, Image.Resampling.BICUBIC).save(path)
    return path


def test_json_rows_and_indexed_pngs(tmp_path, capsys):
    src = photo(tmp_path / "a.png")
    out = tmp_path / "out"
    assert quantize.main([str(src), "-k", "4", "16", "--json", "--stats", "-o", str(out)]) == 0
    rows = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    assert [r["k"] for r in rows] == [4, 16]
    img = np.asarray(Image.open(src).convert("RGB"))
    for r in rows:
        png = out / f"a_k{r['k']}.png"
        im = Image.open(png)
        assert im.mode == "P" and len(im.getpalette()) // 3 >= r["colors_after"]
        assert r["bytes_after"] == png.stat().st_size < r["bytes_before"] == lossless_png_size(img)
        assert r["ratio"] == r["bytes_before"] / r["bytes_after"] and r["ratio_basis"] == "lossless PNG"
        assert r["bytes_source"] == src.stat().st_size
        assert r["psnr"] > 12 and r["ciede2000"] > 0 and r["colors_before"] > r["colors_after"]
        assert r["ciede2000_se"] is None and r["ciede2000_pixels"] == img.shape[0] * img.shape[1]  # exact
    assert rows[1]["psnr"] > rows[0]["psnr"]
    assert (out / "a_side.png").stat().st_size > 0  # several sizes: the side-by-side figure
    assert json.loads((out / "results.json").read_text()) == rows


def test_plain_call_is_pngquant_like(tmp_path, capsys):
    """Default: 256 colours, one PNG, one line, no figure; bytes against the source file, CIEDE2000
    on a sample with its standard error; the same palette PNG as with --stats."""
    src = photo(tmp_path / "a.png", size=(400, 300))
    out = tmp_path / "out"
    assert quantize.main([str(src), "-o", str(out)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("a.png K=256: ") and "smaller than the source file" in line and "-pixel sample" in line
    assert sorted(f.name for f in out.iterdir()) == ["a_k256.png", "results.json"]
    (row,) = json.loads((out / "results.json").read_text())
    assert row["bytes_before"] is None and row["ratio_basis"] == "source file"
    assert row["ratio"] == row["bytes_source"] / row["bytes_after"]
    assert row["ciede2000_pixels"] == 65536 and 0 < row["ciede2000_se"] < 0.1
    assert quantize.main([str(src), "--stats", "--json", "-o", str(tmp_path / "full")]) == 0
    (full,) = json.loads(capsys.readouterr().out)
    assert (tmp_path / "full" / "a_k256.png").read_bytes() == (out / "a_k256.png").read_bytes()
    assert abs(full["ciede2000"] - row["ciede2000"]) < 5 * row["ciede2000_se"]  # the sample estimates the mean


def test_help_and_bad_arguments_answer_before_the_heavy_imports():
    import subprocess
    import sys

    code = (
        "import sys, encoder.cli.quantize as q\n"
        "try:\n    q.parse(['x.png', '-k', '300'])\nexcept SystemExit as e:\n    print(e.code)\n"
        "print(sorted(m for m in ('numpy', 'PIL', 'faiss', 'torch', 'matplotlib') if m in sys.modules))"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.stdout.split("\n")[:2] == ["2", "[]"], p.stdout + p.stderr
    assert "n_colors=300 must be an integer in [2, 256]" in p.stderr


def test_a_folder_in_processes_gives_the_same_rows(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    for i in range(3):
        photo(tmp_path / "in" / f"{i}.png", seed=i)
    assert quantize.main([str(tmp_path / "in"), "-k", "8", "--json", "--workers", "1", "-o", str(tmp_path / "a")]) == 0
    one = json.loads(capsys.readouterr().out)
    assert quantize.main([str(tmp_path / "in"), "-k", "8", "--json", "--workers", "2", "-o", str(tmp_path / "b")]) == 0
    two = json.loads(capsys.readouterr().out)
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("seconds", "output")} for r in rows]  # noqa: E731
    assert [r["file"] for r in two] == ["0.png", "1.png", "2.png"] and strip(one) == strip(two)


def test_long_form_n_colors_equals_k(tmp_path, capsys):
    src = photo(tmp_path / "a.png")
    assert quantize.main([str(src), "-k", "4", "8", "--json", "-o", str(tmp_path / "short")]) == 0
    short = json.loads(capsys.readouterr().out)
    assert quantize.main([str(src), "--n-colors", "4", "8", "--json", "-o", str(tmp_path / "long")]) == 0
    long = json.loads(capsys.readouterr().out)
    assert [r["k"] for r in long] == [4, 8]
    assert [(r["psnr"], r["bytes_after"]) for r in long] == [(r["psnr"], r["bytes_after"]) for r in short]


def test_table_baseline_dither_lab_segment_scatter(tmp_path, capsys):
    src = photo(tmp_path / "b.jpg", 1)
    out = tmp_path / "o"
    assert (
        quantize.main(
            [
                str(src),
                "-k",
                "2",
                "8",
                "--baseline",
                "random",
                "--dither",
                "--lab",
                "--segment",
                "--scatter",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "b.jpg K=2: " in text and "b.jpg random K=8: " in text and " dB, dE2000 " in text
    mask = np.asarray(Image.open(out / "b_k2_labels.png"))
    assert mask.ndim == 2 and set(np.unique(mask)) <= {0, 255} and len(np.unique(mask)) == 2
    labels8 = np.asarray(Image.open(out / "b_k8_labels.png"))
    assert (
        labels8.ndim == 3
        and len(np.unique(labels8.reshape(-1, 3), axis=0)) == Image.open(out / "b_k8.png").getextrema()[1] + 1
    )
    for name in ("b_k8_segment.png", "b_k8_scatter2d.png", "b_k8_scatter3d.png", "b_k8_random.png"):
        assert (out / name).stat().st_size > 0


def test_auto_target_psnr(tmp_path, capsys):
    src = photo(tmp_path / "c.png", 2, (96, 80))
    out = tmp_path / "o"
    assert quantize.main([str(src), "--auto", "--target-psnr", "32", "--json", "-o", str(out)]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    img = np.asarray(Image.open(src).convert("RGB"))
    k, curve = auto_n_colors(img, target_psnr=32)
    assert row["k"] == k and row["psnr"] >= 32
    assert all(r["psnr"] < 32 for r in curve if r["k"] < k)
    assert (out / "c_error_vs_k.png").stat().st_size > 0
    with pytest.raises(SystemExit):
        quantize.main([str(src), "--auto"])  # needs a target
    assert quantize.main([str(src), "--auto", "--max-bytes", "3000", "--json", "-o", str(out)]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["bytes_after"] <= 3000


def test_folder_reports_bad_files_and_writes_the_rest(tmp_path, capsys):
    corpus = make_corpus(tmp_path / "corpus", n_photos=2)
    out = tmp_path / "o"
    assert quantize.main([str(corpus.root), "-k", "8", "--json", "-o", str(out)]) == 0
    cap = capsys.readouterr()
    rows = json.loads(cap.out)
    assert sorted(r["file"] for r in rows) == sorted(corpus.good)
    assert_reported(cap.err, corpus)
    for g in corpus.good:
        stem = Path(g).with_suffix("").as_posix().replace("/", "__")
        assert Image.open(out / f"{stem}_k8.png").mode == "P"
    one = [r for r in rows if r["file"] == "odd/one_pixel.png"][0]
    assert one["colors_after"] == 1 and one["psnr"] is None  # lossless: infinite PSNR is null in JSON


@pytest.mark.parametrize("k", ["1", "257", "0"])
def test_bad_k_message_names_it(tmp_path, k, capsys):
    with pytest.raises(SystemExit) as e:
        quantize.main([str(photo(tmp_path / "a.png")), "-k", k, "-o", str(tmp_path)])
    assert e.value.code == 2 and f"argument -k/--n-colors: n_colors={k} must be" in capsys.readouterr().err


def test_nothing_processable_is_an_error(tmp_path, capsys):
    assert quantize.main([str(tmp_path / "missing.png"), "-o", str(tmp_path / "o")]) != 0
    assert "missing.png" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("hi")
    assert quantize.main([str(empty), "-o", str(tmp_path / "o")]) != 0
    assert "no image could be processed" in capsys.readouterr().err
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"<html>nope</html>")
    assert quantize.main([str(bad), "-o", str(tmp_path / "o")]) != 0
    assert "bad.jpg" in capsys.readouterr().err


def test_alpha_and_grey_inputs(tmp_path, capsys):
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:, :15, 3] = 255  # left half opaque red, right half transparent -> white
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    Image.fromarray(np.tile(np.arange(40, dtype=np.uint8) * 6, (10, 1)), "L").save(tmp_path / "grey.png")
    out = tmp_path / "o"
    assert quantize.main([str(tmp_path), "-k", "4", "--json", "-o", str(out)]) == 0
    rows = {r["file"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["alpha.png"]["colors_after"] == 2 and rows["alpha.png"]["psnr"] is None
    got = np.asarray(Image.open(out / "alpha_k4.png").convert("RGB"))
    assert (got[0, 0] == [255, 0, 0]).all() and (got[0, -1] == [255, 255, 255]).all()
    assert rows["grey.png"]["colors_after"] == 4


def test_threads_option(tmp_path, capsys):
    import faiss

    src = photo(tmp_path / "a.png", size=(120, 90))
    before = faiss.omp_get_max_threads()
    assert quantize.main([str(src), "-k", "8", "--json", "--threads", "1", "-o", str(tmp_path / "one")]) == 0
    one = json.loads(capsys.readouterr().out)
    assert faiss.omp_get_max_threads() == before  # faiss's own setting is left as it was
    assert quantize.main([str(src), "-k", "8", "--json", "-o", str(tmp_path / "all")]) == 0
    assert not hasattr(kmeans, "THREADS")  # the count travels as an argument: no module global to leave set
    default = json.loads(capsys.readouterr().out)
    assert [r["psnr"] for r in one] == [r["psnr"] for r in default]  # the thread count changes no result
    with pytest.raises(SystemExit) as e:
        quantize.main([str(src), "--threads", "0", "-o", str(tmp_path)])
    assert e.value.code == 2 and "--threads must be >= 1, got 0" in capsys.readouterr().err

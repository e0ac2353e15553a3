"""Odd, broken and hostile files: each is used or refused by name, by the library and by every command line.

The files are made by :mod:`tests.hostile` (Pillow writes LAB, CMYK, 16-bit and float TIFFs; the DDS,
ICNS, GIF and PNG bombs are written byte by byte). A command over them exits 0, prints no traceback, and
names every refused file with its reason in the skipped list it writes beside its output.
"""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from encoder.data import (
    ImageLoadError,
    decode_folder,
    decoding_pool,
    load_gray,
    load_rgb,
    open_image,
    to_gray,
    to_rgb,
)
from encoder.hashing import hash_paths
from tests.hostile import make_hostile

ROOT = Path(__file__).resolve().parents[1]
SCANNED = (".jpg", ".png", ".gif", ".tif")  # the hostile files a folder scan passes to the decoder


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> tuple[Path, dict[str, str | None]]:
    root = tmp_path_factory.mktemp("hostile") / "odd"
    return root, make_hostile(root)


def _run(*args, cwd=ROOT) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=600, env=env
    )


def _skipped_csv(path: Path) -> dict[str, str]:
    with open(path, newline="") as f:
        return {Path(r["path"]).name: r["reason"] for r in csv.DictReader(f)}


def test_each_file_is_read_or_refused_by_name(hostile):
    root, expected = hostile
    for name, reason in sorted(expected.items()):
        if reason is None:
            rgb, grey = load_rgb(root / name), load_gray(root / name)
            assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3, name
            assert grey.shape == (64, 64) and 0.0 <= grey.min() <= grey.max() <= 1.0, name
        else:
            for load in (load_rgb, load_gray):
                with pytest.raises(ImageLoadError, match=reason) as err:
                    load(root / name)
                assert str(root / name) in str(err.value)


def test_odd_modes_give_the_colour_of_the_picture(hostile):
    root, _ = hostile
    want = load_rgb(root / "photo.tga").astype(int)  # the same picture, stored as plain RGB
    for name, tolerance in (("lab.tif", 6), ("cmyk.tif", 6), ("pa.tif", 20)):
        got = load_rgb(root / name).astype(int)
        # LAB and CMYK round trips cost a few levels; PA holds the 216-colour web palette
        assert np.abs(got - want).mean() < tolerance, name
    assert load_rgb(root / "two_pages.tif").shape == want.shape  # first page; the 81 MP second is never decoded
    assert load_rgb(root / "icon.ico").shape == (27, 32, 3)


@pytest.mark.parametrize(
    "mode, pixel, rgb",
    [
        ("HSV", (0, 255, 255), (255, 0, 0)),
        ("YCbCr", (76, 85, 255), (254, 0, 0)),
        ("LAB", (255, 128, 128), (255, 255, 255)),  # L* 100 (stored x 2.55), a* = b* = 0 (stored + 128)
        ("LAB", (100, 128, 128), (93, 93, 93)),  # L* 39.2: sRGB 93
        ("CMYK", (0, 255, 255, 0), (255, 0, 0)),
        ("1", 1, (255, 255, 255)),
        # premultiplied, over white: c + 255 * (1 - alpha / 255)
        ("RGBa", (100, 0, 0, 128), (227, 127, 127)),
        ("La", (50, 100), (205, 205, 205)),
        ("LA", (0, 0), (255, 255, 255)),  # fully transparent: the background
        ("I;16", 65535, (255, 255, 255)),
        ("I", 32768, (128, 128, 128)),
        ("F", 0.5, (128, 128, 128)),
    ],
)
def test_every_mode_converts_to_rgb_and_l(mode, pixel, rgb):
    im = Image.new(mode, (2, 2), pixel)
    got = tuple(int(v) for v in np.asarray(to_rgb(im))[0, 0])
    assert np.abs(np.subtract(got, rgb)).max() <= 1, (mode, got)
    grey = np.asarray(to_gray(im))
    assert grey.dtype == np.uint8 and grey.shape == (2, 2)
    assert abs(int(grey[0, 0]) - round(0.299 * got[0] + 0.587 * got[1] + 0.114 * got[2])) <= 1


def test_palette_transparency_is_composited_on_the_background():
    im = Image.new("P", (2, 1))
    im.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    im.putpixel((1, 0), 1)
    im.info["transparency"] = 0
    assert np.asarray(to_rgb(im, (9, 9, 9))).tolist() == [[[9, 9, 9], [10, 20, 30]]]


def test_a_slow_decode_is_refused_by_name_and_the_timer_is_cleared(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (2000, 2000, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "slow.png", compress_level=1)
    before = signal.getsignal(signal.SIGALRM)
    with pytest.raises(ImageLoadError, match="longer than the 0.001 s limit") as err:
        open_image(tmp_path / "slow.png", timeout=0.001)
    assert str(tmp_path / "slow.png") in str(err.value)
    assert signal.getitimer(signal.ITIMER_REAL)[0] == 0 and signal.getsignal(signal.SIGALRM) is before
    assert open_image(tmp_path / "slow.png").size == (2000, 2000)  # the default limit lets it through


def test_bytes_and_file_objects_are_guarded_the_same(hostile):
    root, _ = hostile
    data = (root / "lab.tif").read_bytes()
    assert open_image(data).size == open_image(io.BytesIO(data)).size == (48, 40)
    assert load_rgb(data, name="upload.tif").shape == (40, 48, 3)
    assert np.array_equal(load_gray(io.BytesIO(data)), load_gray(root / "lab.tif"))
    for name in ("dds_fourcc.dds", "icns_bomb.icns", "zero.jpg"):
        with pytest.raises(ImageLoadError) as err:
            open_image((root / name).read_bytes(), name=f"upload/{name}")
        assert str(err.value).startswith(f"upload/{name}: ")


def test_plugin_order_does_not_depend_on_the_first_file_opened(hostile):
    root, _ = hostile
    code = (
        "import sys; from encoder.data import open_image; "
        "print(open_image(sys.argv[1]).format, open_image(sys.argv[2]).format)"
    )
    p = _run("-c", code, root / "photo.tga", root / "icon.ico")
    assert p.returncode == 0 and p.stdout.split() == ["TGA", "ICO"], p.stderr[-2000:]


def test_library_hash_paths_puts_every_refusal_in_errors(hostile):
    root, expected = hostile
    paths = [root / n for n in sorted(expected)]
    errors: list = []
    hashes, kept, _ = hash_paths(paths, "phash", workers=1, errors=errors)
    assert sorted(p.name for p in kept) == sorted(n for n, r in expected.items() if r is None)
    assert {p.name for p, _ in errors} == {n for n, r in expected.items() if r is not None}
    assert len(hashes) == len(kept)


def test_a_batch_gives_the_same_rows_and_skipped_list_every_run(hostile):
    root, expected = hostile
    # the .tga sorts before the .ico, and each worker gets files in chunks: the order that once broke it
    paths = [root / n for n in sorted(expected)] * 3
    runs = []
    for _ in range(3):
        errors: list = []
        hashes, kept, flat = hash_paths(paths, "dhash", workers=2, errors=errors)
        runs.append((hashes.tobytes(), [p.name for p in kept], flat.tolist(), sorted(map(str, errors))))
    assert runs[0] == runs[1] == runs[2]
    assert "icon.ico" in runs[0][1]
    with decoding_pool(2) as pool:
        decoded = [decode_folder(paths, 64, pool=pool, progress=False) for _ in range(2)]
    (a, rows_a, skip_a), (b, rows_b, skip_b) = decoded
    assert np.array_equal(a, b) and rows_a == rows_b and skip_a == skip_b
    assert len(rows_a) == 3 * sum(r is None for r in expected.values())


def _no_traceback(p: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in p.stderr + p.stdout, p.stderr[-3000:]


@pytest.mark.parametrize("method", ["phash", "dhash"])
def test_index_and_query_over_odd_files_exit_0_and_name_each(hostile, tmp_path, method):
    root, expected = hostile
    files = [root / n for n in sorted(expected)]
    idx = tmp_path / "idx"
    p = _run("search.py", "index", *files, "-o", idx, "--method", method)
    assert p.returncode == 0, p.stderr[-3000:]
    _no_traceback(p)
    skipped = _skipped_csv(tmp_path / "idx.skipped.csv")
    assert set(skipped) == {n for n, r in expected.items() if r is not None}
    for name, reason in skipped.items():
        assert expected[name] in reason
    assert f"skipped {len(skipped)} files" in p.stderr
    q = _run("search.py", "query", idx, root / "dds_dxgi.dds", root / "lab.tif", "-k", "2")
    assert q.returncode == 0 and "query " in q.stdout and "dds_dxgi.dds" in q.stderr
    _no_traceback(q)
    q = _run("search.py", "query", idx, root / "icns_bomb.icns")
    assert q.returncode == 1 and "icns_bomb.icns" in q.stderr and "decompression bomb" in q.stderr
    _no_traceback(q)


def test_quantize_folder_and_one_file_exit_cleanly_and_name_each(hostile, tmp_path):
    root, expected = hostile
    out = tmp_path / "q"
    p = _run("quantize.py", root, "-k", "4", "-o", out)
    assert p.returncode == 0, p.stderr[-3000:]
    _no_traceback(p)
    skipped = _skipped_csv(out / "skipped.csv")
    scanned = {n for n in expected if Path(n).suffix in SCANNED}
    assert {n for n in scanned if expected[n] is not None} <= set(skipped)
    assert not {n for n in scanned if expected[n] is None} & set(skipped)
    assert skipped["icns_bomb.icns"].startswith("not an image extension")  # named even when not decoded
    one = _run("quantize.py", root / "dds_fourcc.dds", "-k", "4", "-o", tmp_path / "q1")
    assert one.returncode == 1 and "dds_fourcc.dds" in one.stderr and "Unimplemented pixel format" in one.stderr
    _no_traceback(one)


def test_fit_lists_decode_failures_in_its_log_folder(hostile, tmp_path):
    root, expected = hostile
    data = tmp_path / "data"
    data.mkdir()
    for name in expected:
        (data / name).write_bytes((root / name).read_bytes())
    for i in range(8):  # enough good pictures for a train/validation split
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (32, 32), dtype=np.uint8)).save(data / f"{i}.png")
    p = _run(
        "train.py", "fit", "--config", "configs/smoke.yaml", "--data.root", data,
        "--trainer.default_root_dir", tmp_path / "run", "--trainer.logger.init_args.save_dir", tmp_path / "run",
        "--trainer.enable_progress_bar", "false",
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    _no_traceback(p)
    found = sorted((tmp_path / "run").rglob("skipped.csv"))
    assert found, "no skipped.csv under the run folder"
    skipped = _skipped_csv(found[-1])
    decoded_bad = {n for n, r in expected.items() if r is not None and Path(n).suffix in SCANNED}
    assert decoded_bad <= set(skipped)
    assert f"skipped {len(skipped)} files" in p.stderr


def test_index_of_only_unreadable_files_exits_1_and_writes_no_index(hostile, tmp_path, capsys):
    import search

    root, expected = hostile
    bad = [root / n for n, r in sorted(expected.items()) if r is not None]
    assert search.main(["index", *map(str, bad), "-o", str(tmp_path / "idx")]) == 1
    err = capsys.readouterr().err
    assert "no image could be read" in err and not (tmp_path / "idx").exists()
    assert set(_skipped_csv(tmp_path / "idx.skipped.csv")) == {p.name for p in bad}

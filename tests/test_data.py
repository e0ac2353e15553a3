"""The shared image loader: modes, orientation, bad files, folder scans, atomic writes."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from encoder import atomic
from encoder.data import (
    ImageLoadError,
    image_paths,
    load_each,
    load_gray,
    load_rgb,
    open_image,
    process_context,
    relative_id,
    scan_folder,
)


def _rng():
    return np.random.default_rng(0)


def test_rgb_roundtrip_png(tmp_path):
    arr = _rng().integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    np.testing.assert_array_equal(load_rgb(tmp_path / "a.png"), arr)


def test_exif_orientation_applied(tmp_path):
    # A 40x20 image stored with orientation 6 ("rotate 90 CW to display") is 20x40 upright.
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :10] = 255  # white band on the left of the stored image
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=95)
    out = load_rgb(tmp_path / "r.jpg")
    assert out.shape == (40, 20, 3)
    # rotated 90 degrees clockwise: the stored left band is now at the top
    assert out[:10].mean() > 200 and out[-10:].mean() < 50


def test_16bit_gray_is_scaled_not_clipped(tmp_path):
    vals = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    Image.fromarray(vals).save(tmp_path / "g16.png")
    im = open_image(tmp_path / "g16.png")
    assert im.mode.startswith("I")
    out = load_rgb(tmp_path / "g16.png")[..., 0]
    np.testing.assert_array_equal(out[0], [0, 1, 128, 255])


def test_alpha_composited_on_background(tmp_path):
    arr = np.zeros((4, 4, 4), np.uint8)
    arr[..., 0] = 255  # red
    arr[:2, :, 3] = 255  # top half opaque, bottom half fully transparent
    Image.fromarray(arr, "RGBA").save(tmp_path / "a.png")
    out = load_rgb(tmp_path / "a.png")
    np.testing.assert_array_equal(out[0, 0], [255, 0, 0])
    np.testing.assert_array_equal(out[3, 3], [255, 255, 255])
    black = load_rgb(tmp_path / "a.png", background=(0, 0, 0))
    np.testing.assert_array_equal(black[3, 3], [0, 0, 0])


def test_palette_with_transparency_and_cmyk_and_bilevel(tmp_path):
    p = Image.new("P", (8, 8), 0)
    p.putpalette([0, 0, 255] + [0, 255, 0] * 255)
    p.info["transparency"] = 0
    p.save(tmp_path / "p.png", transparency=0)
    assert (load_rgb(tmp_path / "p.png") == 255).all()  # fully transparent -> white

    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "c.jpg")  # pure red in CMYK
    c = load_rgb(tmp_path / "c.jpg").astype(int)
    assert c[..., 0].mean() > 200 and c[..., 1].mean() < 60

    Image.new("1", (8, 8), 1).save(tmp_path / "b.bmp")
    assert (load_rgb(tmp_path / "b.bmp") == 255).all()


def test_animated_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 0, 255)]]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    out = load_rgb(tmp_path / "a.gif")
    assert out[..., 0].mean() > 200 and out[..., 2].mean() < 50


def test_load_gray_shape_range_and_draft_close(tmp_path):
    x = np.linspace(0, 255, 800, dtype=np.float32)
    arr = np.tile(x, (600, 1)).astype(np.uint8)
    Image.fromarray(arr).convert("RGB").save(tmp_path / "big.jpg", quality=95)
    g = load_gray(tmp_path / "big.jpg")
    assert g.shape == (64, 64) and g.dtype == np.float32
    assert 0.0 <= g.min() and g.max() <= 1.0
    full = load_gray(tmp_path / "big.jpg", draft=False)
    assert np.abs(g - full).mean() < 1.0 / 255  # draft decoding: under one grey level


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("zero.jpg", b"", "empty file"),
        ("text.jpg", b"hello, I am not an image\n" * 10, "not a recognised image"),
        ("page.png", b"<html><body>404</body></html>", "not a recognised image"),
    ],
)
def test_bad_files_raise_named_error(tmp_path, name, content, reason):
    f = tmp_path / name
    f.write_bytes(content)
    with pytest.raises(ImageLoadError, match=reason) as err:
        load_rgb(f)
    assert str(f) in str(err.value)


def test_truncated_files(tmp_path):
    arr = _rng().integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for fmt in ("JPEG", "PNG"):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, fmt)
        f = tmp_path / f"t.{fmt.lower()}"
        f.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
        with pytest.raises(ImageLoadError, match="cannot decode"):
            load_rgb(f)


def test_decompression_bomb_refused_before_decoding(tmp_path):
    Image.new("L", (5000, 5000)).save(tmp_path / "bomb.png")  # tiny file, 25 MP
    with pytest.raises(ImageLoadError, match="exceeds max_pixels"):
        load_rgb(tmp_path / "bomb.png", max_pixels=10_000_000)


def test_missing_and_directory(tmp_path):
    with pytest.raises(ImageLoadError, match="no such file"):
        open_image(tmp_path / "nope.png")
    with pytest.raises(ImageLoadError, match="is a directory"):
        open_image(tmp_path)


def test_unreadable_permissions(tmp_path, monkeypatch):
    f = tmp_path / "x.png"
    Image.new("RGB", (4, 4)).save(f)
    if os.geteuid() == 0:  # root reads any file: make the open itself fail as it would for a user

        def denied(*a, **k):
            raise PermissionError(13, "Permission denied", str(f))

        monkeypatch.setattr(Image, "open", denied)
    else:
        f.chmod(0)
    with pytest.raises(ImageLoadError, match="permission denied"):
        open_image(f)


def test_scan_folder_recursive_sorted_reports_skips(tmp_path):
    (tmp_path / "b" / "c").mkdir(parents=True)
    for rel in ["z.png", "b/y.JPG", "b/c/x.webp"]:
        Image.new("RGB", (4, 4)).save(tmp_path / rel, format="PNG")
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "loop").symlink_to(tmp_path, target_is_directory=True)  # a symlink loop
    (tmp_path / "dangling.png").symlink_to(tmp_path / "missing.png")
    scan = scan_folder(tmp_path)
    assert scan.ids == ["b/c/x.webp", "b/y.JPG", "z.png"]
    reasons = {p.name: r for p, r in scan.skipped}
    assert "not an image extension" in reasons["notes.txt"]
    assert "symlink" in reasons["loop"]
    assert "broken link" in reasons["dangling.png"]


def test_relative_id_under_the_root_or_absolute(tmp_path, monkeypatch):
    (tmp_path / "photos" / "2024").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert relative_id("photos/2024/a.jpg", tmp_path / "photos") == "2024/a.jpg"  # relative paths taken absolute
    assert relative_id(tmp_path / "photos" / "a.jpg", "photos") == "a.jpg"
    assert relative_id(tmp_path / "other" / "b.png", "photos") == (tmp_path / "other" / "b.png").as_posix()
    assert scan_folder("photos").relative(tmp_path / "photos" / "2024" / "c.png") == "2024/c.png"


def test_one_process_context_for_every_pool():
    import sys

    assert process_context().get_start_method() == ("spawn" if sys.platform in ("win32", "darwin") else "fork")


def test_finite_makes_json_strict():
    import json

    row = {"psnr": float("inf"), "curve": [(2, float("nan")), (4, 31.5)], "n": 3, "name": "a"}
    assert atomic.finite(row) == {"psnr": None, "curve": [[2, None], [4, 31.5]], "n": 3, "name": "a"}
    json.dumps(atomic.finite(row), allow_nan=False)  # strict JSON accepts it
    assert atomic.finite(np.float64("-inf")) is None  # numpy floats are floats


def test_scan_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        scan_folder(tmp_path / "nope")
    f = tmp_path / "f.png"
    Image.new("RGB", (4, 4)).save(f)
    with pytest.raises(NotADirectoryError, match="f.png"):
        scan_folder(f)
    assert image_paths([f]).ids == ["f.png"]


def test_load_each_collects_failures_and_goes_on(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(b"junk")
    errors: list = []
    got = list(load_each(sorted(tmp_path.iterdir()), load_rgb, errors))
    assert [p.name for p, _ in got] == ["good.png"]
    assert [p.name for p, _ in errors] == ["bad.png"]


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "codes.npy"
    atomic.save_npy(target, np.arange(3, dtype=np.float32))
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    np.testing.assert_array_equal(np.load(target), [0, 1, 2])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["codes.npy"]
    with pytest.raises(TypeError, match="object array"):
        atomic.save_npy(target, np.array([{"a": 1}], dtype=object))


def test_atomic_dir_replaces_whole_folder(tmp_path):
    d = tmp_path / "idx"
    with atomic.atomic_dir(d) as t:
        (t / "a").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic.atomic_dir(d) as t:
            (t / "b").write_text("2")
            raise RuntimeError("crash")
    assert sorted(p.name for p in d.iterdir()) == ["a"]
    with atomic.atomic_dir(d) as t:
        (t / "b").write_text("2")
    assert sorted(p.name for p in d.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]


def test_loader_over_the_bad_input_corpus(tmp_path):
    from corpus import make_corpus

    c = make_corpus(tmp_path / "mixed")
    scan = scan_folder(c.root)
    assert sorted(scan.ids) == sorted(c.good + c.bad)
    assert sorted(scan.relative(p) for p, _ in scan.skipped) == sorted(c.other)
    errors: list = []
    got = {scan.relative(p): x for p, x in load_each(scan.paths, load_gray, errors)}
    assert sorted(got) == sorted(c.good)
    assert sorted(scan.relative(p) for p, _ in errors) == sorted(c.bad)
    for x in got.values():
        assert x.shape == (64, 64) and 0.0 <= x.min() <= x.max() <= 1.0
    # EXIF rotation applied: the stored 96x80 photo comes out 80x96
    assert load_rgb(c.root / "odd/exif_rotated.jpg").shape == (96, 80, 3)


def test_load_each_without_an_error_list_reports_on_stderr(tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (4, 4)).save(tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    got = [p.name for p, _ in load_each(sorted(tmp_path.iterdir()), load_rgb)]
    assert got == ["good.png"]
    err = capsys.readouterr().err
    assert f"skipped {tmp_path / 'bad.png'}: not a recognised image format" in err

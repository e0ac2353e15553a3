"""A folder mixing good images in every awkward form with broken and hostile files.

`make_corpus(root)` writes it and returns which files are good (each must produce
output) and which are bad (each must be reported by name, none may crash the run).
"""

from __future__ import annotations

import csv
import io
import os
import re
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass
class Corpus:
    root: Path
    good: list[str] = field(default_factory=list)  # ids (relative paths) that must be processed
    bad: list[str] = field(default_factory=list)  # ids that must be reported by name
    other: list[str] = field(default_factory=list)  # non-image names that a scan reports as skipped


def _photo(seed: int, size=(96, 80)) -> Image.Image:
    """A smooth random colour field with edges: photo-like, distinct per seed."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    im = Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)
    arr = np.asarray(im).copy()
    y0, x0 = rng.integers(0, size[1] // 2), rng.integers(0, size[0] // 2)
    arr[y0 : y0 + 15, x0 : x0 + 25] = rng.integers(0, 256, 3)
    return Image.fromarray(arr)


def _png_bomb(path: Path, width: int = 100_000, height: int = 100_000) -> None:
    """A tiny PNG whose header claims width x height pixels (10 gigapixels)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1000)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def _readable(path: Path) -> bool:
    """Whether this process can open the file despite its permission bits."""
    try:
        with open(path, "rb"):
            return True
    except PermissionError:
        return False


def make_corpus(root: Path, n_photos: int = 6) -> Corpus:
    root.mkdir(parents=True, exist_ok=True)
    c = Corpus(root=root)

    def good(rel: str) -> Path:
        c.good.append(rel)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        return root / rel

    def bad(rel: str, data: bytes) -> None:
        c.bad.append(rel)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)

    for i in range(n_photos):
        _photo(i).save(good(f"photos/p{i}.jpg"), quality=90)
    _photo(10).convert("CMYK").save(good("odd/cmyk.jpg"))
    Image.fromarray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16).save(good("odd/gray16.png"))
    rgba = np.dstack([np.asarray(_photo(11)), np.full((80, 96), 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(good("odd/alpha.png"))
    pal = _photo(12).convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
    pal.save(good("odd/palette_transparent.png"), transparency=0)
    frames = [_photo(13 + j) for j in range(3)]
    frames[0].save(good("odd/animated.gif"), save_all=True, append_images=frames[1:], duration=50)
    rot = _photo(16)
    exif = rot.getexif()
    exif[0x0112] = 6
    rot.save(good("odd/exif_rotated.jpg"), exif=exif.tobytes())
    Image.new("RGB", (1, 1), (200, 30, 30)).save(good("odd/one_pixel.png"))
    Image.fromarray(np.tile(np.arange(20000, dtype=np.uint32) % 256, (20, 1)).astype(np.uint8)).save(
        good("odd/strip_20000x20.png")
    )
    _photo(17).save(good("names/ünïcødé ƒoto.png"))
    _photo(18).save(good("names/with  spaces and (parens).webp"))
    _photo(19).save(good("odd/grey.bmp"))
    _photo(20).convert("1").save(good("odd/bilevel.tif"))

    jpg = io.BytesIO()
    _photo(30, (256, 256)).save(jpg, "JPEG", quality=90)
    bad("broken/truncated.jpg", jpg.getvalue()[: len(jpg.getvalue()) // 3])
    png = io.BytesIO()
    _photo(31, (256, 256)).save(png, "PNG")
    bad("broken/truncated.png", png.getvalue()[: len(png.getvalue()) // 2])
    bad("broken/zero.jpg", b"")
    bad("broken/text.jpg", b"this is a text file named like a photo\n" * 20)
    bad("broken/page.png", b"<!doctype html><html><body>Not Found</body></html>")
    c.bad.append("broken/bomb.png")
    _png_bomb(root / "broken/bomb.png")

    # No read permission. Root (CAP_DAC_OVERRIDE, as in many containers and CI runners)
    # reads it anyway, so there it must come out as a good image, not be skipped.
    locked = root / "perm/locked.png"
    locked.parent.mkdir(parents=True, exist_ok=True)
    _photo(21).save(locked)
    os.chmod(locked, 0)
    (c.good if _readable(locked) else c.bad).append("perm/locked.png")

    (root / "README.txt").write_text("not an image")
    c.other.append("README.txt")
    (root / "loop").symlink_to(root, target_is_directory=True)  # must not hang a scan
    c.other.append("loop")
    return c


def with_skipped_lists(output: str) -> str:
    """``output`` plus a ``skipped <path>: <reason>`` line per row of each skipped list it points to
    (the console names the first few skipped files and where the whole list was written)."""
    lines = [output]
    for m in re.finditer(r"all listed with reasons in (.+)$", output, re.M):
        with open(m.group(1), newline="") as f:
            lines += [f"skipped {r['path']}: {r['reason']}" for r in csv.DictReader(f)]
    return "\n".join(lines)


def assert_reported(output: str, corpus: Corpus) -> None:
    """Every bad file is named in the run's output or the skipped list it points to."""
    output = with_skipped_lists(output)
    missing = [b for b in corpus.bad if Path(b).name not in output]
    assert not missing, f"bad files not reported by name: {missing}\n--- output ---\n{output[-3000:]}"


__all__ = ["Corpus", "make_corpus", "assert_reported"]

if __name__ == "__main__":  # pragma: no cover - handy for eyeballing the corpus
    import sys

    print(make_corpus(Path(sys.argv[1])))
    os.system(f"ls -laR {sys.argv[1]}")

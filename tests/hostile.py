"""A folder of odd, broken and hostile image files, each class made here (nothing downloaded).

``make_hostile(root)`` writes it and returns ``{name: expected}``: ``expected`` is ``None`` for a
file every command must use, or a piece of the reason it must be refused with. DDS and ICNS
headers are written byte by byte, as Pillow's own tests craft theirs.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def _photo(seed: int, size=(48, 40)) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)


def png_bytes(width: int, height: int, mode_byte: int = 0) -> bytes:
    """A tiny PNG whose header claims ``width x height`` grey pixels (its data is far too short)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, mode_byte, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def dds_bytes(pfflags: int, fourcc: bytes = b"\0\0\0\0", dxgi: int | None = None, size=(16, 16)) -> bytes:
    """A DDS header (124 bytes after the magic) with the given pixel-format flags and FourCC; with
    ``dxgi`` a DX10 extension header naming that DXGI format follows; then 1 KB of pixels."""
    w, h = size
    header = struct.pack(
        "<I3I3I11I4I4I5I",
        124,
        0x1007,  # caps | height | width | pixelformat
        h,
        w,
        w * 4,
        0,
        1,
        *([0] * 11),
        32,
        pfflags,
        struct.unpack("<I", fourcc)[0],
        32,
        *([0] * 4),
        0x1000,
        *([0] * 4),
    )
    ext = struct.pack("<5I", dxgi, 3, 0, 1, 0) if dxgi is not None else b""
    return b"DDS " + header + ext + b"\x80" * 1024


def icns_bomb_bytes() -> bytes:
    """An ICNS whose one 256x256 slot ('ic08') holds a PNG declaring 500,000 x 500,000 pixels."""
    png = png_bytes(500_000, 500_000)
    entry = b"ic08" + struct.pack(">I", 8 + len(png)) + png
    return b"icns" + struct.pack(">I", 8 + len(entry)) + entry


def gif_screen_bomb(path: Path) -> None:
    """A 2-frame 8x8 animated GIF whose logical screen (the size Pillow reports) is 65535 x 65535."""
    frames = [Image.new("P", (8, 8), i) for i in (1, 2)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    data = bytearray(buf.getvalue())
    data[6:10] = struct.pack("<HH", 65535, 65535)
    path.write_bytes(bytes(data))


def make_hostile(root: Path) -> dict[str, str | None]:
    """Write every class of odd file under ``root``; ``{name: None (usable) | reason fragment}``."""
    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, str | None] = {}
    rng = np.random.default_rng(1)
    photo = _photo(0)
    for name, im in {
        "lab.tif": photo.convert("LAB"),
        "cmyk.tif": photo.convert("CMYK"),
        "grey16.tif": Image.fromarray((rng.integers(0, 65536, (40, 48))).astype(np.uint16)),
        "float.tif": Image.fromarray(rng.random((40, 48)).astype(np.float32), "F"),
        "palette_alpha.png": photo.convert("P"),
        "grey_alpha.png": photo.convert("LA"),
        "bilevel.tif": photo.convert("1"),
        "pa.tif": photo.convert("PA"),
    }.items():
        im.save(root / name, transparency=3) if name == "palette_alpha.png" else im.save(root / name)
        out[name] = None
    # a second page too large to decode: only the first page is read
    big = Image.new("L", (9000, 9000))
    photo.save(root / "two_pages.tif", save_all=True, append_images=[big], compression="tiff_adobe_deflate")
    out["two_pages.tif"] = None
    # an .ico and a .tga: a process that opened the .tga first once let TGA claim the .ico, whose
    # first entry's data size (bytes 14-17) reads as a valid TGA depth at byte 16 when it is 64-128 KB
    ico = io.BytesIO()
    photo.convert("RGBA").save(ico, "ICO", sizes=[(32, 32)])
    (root / "icon.ico").write_bytes(ico.getvalue()[:14] + struct.pack("<I", 0x11000) + ico.getvalue()[18:])
    photo.save(root / "photo.tga")
    out["icon.ico"] = out["photo.tga"] = None
    bad = {
        "nan.tif": (Image.fromarray(np.full((8, 8), np.nan, np.float32), "F"), "NaN"),
        "int32.tif": (Image.fromarray(np.full((8, 8), 1 << 20, np.int32), "I"), "expected 0..65535"),
    }
    for name, (im, reason) in bad.items():
        im.save(root / name)
        out[name] = reason
    jpeg = io.BytesIO()
    photo.save(jpeg, "JPEG")
    files = {
        "truncated.jpg": (jpeg.getvalue()[: len(jpeg.getvalue()) // 2], "cannot decode"),
        "zero.jpg": (b"", "empty file"),
        "text.jpg": (b"this is a text file, not a picture\n" * 20, "not a recognised image"),
        "png_bomb.png": (png_bytes(100_000, 100_000), "decompression bomb"),
        "png_64mp.png": (png_bytes(9000, 9000), "exceeds max_pixels"),
        "icns_bomb.icns": (icns_bomb_bytes(), "decompression bomb"),
        "dds_fourcc.dds": (dds_bytes(0x4, b"XXXX"), "Unimplemented pixel format"),
        "dds_pfflags.dds": (dds_bytes(0), "Unknown pixel format flags"),
        "dds_dxgi.dds": (dds_bytes(0x4, b"DX10", dxgi=93), "Unimplemented DXGI format"),
    }
    for name, (data, reason) in files.items():
        (root / name).write_bytes(data)
        out[name] = reason
    gif_screen_bomb(root / "gif_bomb.gif")
    out["gif_bomb.gif"] = "decompression bomb"
    return out

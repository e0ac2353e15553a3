"""Uploads decoded in a worker under a memory and a time limit: a bomb, an odd mode, an empty or cut
file each get a 4xx naming the reason, the server answers a good query after, and nothing of an
upload is left in the temp dir, even when the server is killed."""

from __future__ import annotations

import io
import json
import os
import signal
import struct
import threading
import time
import urllib.error
import urllib.request
import uuid
import zlib

import numpy as np
import pytest
from PIL import Image

from encoder.web import sandbox
from encoder.web.sandbox import Sandbox, remove_stale, upload_file


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_claiming(w: int, h: int) -> bytes:
    """A PNG whose IHDR claims w x h RGB pixels, with almost no data."""
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        + _chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + _chunk(b"IEND", b"")
    )


def icns_bomb(side: int = 500_000) -> bytes:
    """An ICNS file whose header says 256x256 (one ``ic08`` block) but whose block is a PNG of
    ``side`` x ``side`` pixels: the header passes every size check, the decode asks for it all."""
    sub = png_claiming(side, side)
    block = b"ic08" + struct.pack(">I", 8 + len(sub)) + sub
    return b"icns" + struct.pack(">I", 8 + len(block)) + block


def lab_tiff() -> bytes:
    rng = np.random.default_rng(0)
    lab = Image.frombytes("LAB", (40, 32), rng.integers(0, 256, 40 * 32 * 3, dtype=np.uint8).tobytes())
    out = io.BytesIO()
    lab.save(out, format="TIFF")
    return out.getvalue()


def big_png(side: int = 3000) -> bytes:
    """A noisy PNG whose decode takes far longer than a millisecond anywhere (27 MB of pixels)."""
    rng = np.random.default_rng(1)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


@pytest.fixture(scope="module")
def box():
    b = Sandbox(slots=1)
    yield b
    b.close()


def test_good_and_bad_uploads_get_an_answer(box, web_data):
    good = web_data["upload"].read_bytes()
    assert box.check(good) is None
    assert "decompression bomb" in box.check(icns_bomb())  # Pillow's check on the sub-image, in the worker
    assert box.check(good) is None
    assert "decompression bomb" in box.check(png_claiming(100_000, 100_000))
    assert "cannot decode" in box.check(good[: len(good) // 3])
    assert "empty file" in box.check(b"")
    assert "not a recognised image format" in box.check(b"%PDF-1.4 not an image")
    assert box.check(good) is None


def test_a_decode_past_the_memory_limit_is_refused_and_the_worker_replaced():
    buf = io.BytesIO()
    Image.new("RGBA", (7000, 7000), (10, 20, 30, 255)).save(buf, "PNG")  # 196 MB decoded, a small file
    b = Sandbox(slots=1, memory_mb=256)  # the interpreter and Pillow take about 110 MB of it
    try:
        reason = b.check(buf.getvalue())
        assert "memory" in reason and "--decode-memory-mb" in reason
        assert b.check(png_claiming(8, 8)) is not None  # a fresh worker answers the next one
        assert b.check(_small_png()) is None
    finally:
        b.close()


def _small_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (1, 2, 3)).save(buf, "PNG")
    return buf.getvalue()


def test_a_decode_past_the_time_limit_is_killed_and_refused():
    b = Sandbox(slots=1, seconds=0.001)
    try:
        reason = b.check(big_png())
        assert "longer than 0.001 s" in reason and "--decode-seconds" in reason
        b.seconds = 60.0
        assert b.check(png_claiming(8, 8)) is not None  # a fresh worker answers the next one
    finally:
        b.close()


def test_a_worker_that_dies_mid_decode_is_reported_and_replaced():
    b = Sandbox(slots=1, seconds=60.0)
    try:
        assert b.check(png_claiming(8, 8)) is not None  # the worker is up
        got: list = []
        t = threading.Thread(target=lambda: got.append(b.check(big_png(4000))))
        t.start()
        while not b._busy:
            time.sleep(0.001)
        os.kill(next(iter(b._busy)).proc.pid, signal.SIGKILL)
        t.join(60)
        assert "decoder died" in got[0] and "SIGKILL" in got[0]
        assert "empty file" in b.check(b"")
    finally:
        b.close()


def test_limits_are_checked_at_the_door():
    for bad in ({"slots": 0}, {"memory_mb": 100}, {"seconds": 0}):
        with pytest.raises(ValueError):
            Sandbox(**bad)


def test_an_upload_lives_in_memory_only(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    with upload_file(b"abc", ".jpg") as path:
        assert path.read_bytes() == b"abc"
        assert list(tmp_path.iterdir()) == [] or not hasattr(os, "memfd_create")
    assert not path.exists() or not hasattr(os, "memfd_create")
    assert list(tmp_path.iterdir()) == []


def test_stale_uploads_are_removed_and_live_ones_kept(tmp_path):
    old_scratch = tmp_path / "encoder-web-k2j4h1x9"  # an earlier version's scratch folder
    old_scratch.mkdir()
    (old_scratch / "tmpab12.jpg").write_bytes(b"someone's upload")
    dead = tmp_path / f"{sandbox.PREFIX}999999999-abc.jpg"  # no such process
    dead.write_bytes(b"x")
    live = tmp_path / f"{sandbox.PREFIX}{os.getpid()}-abc.jpg"
    live.write_bytes(b"x")
    other = tmp_path / "unrelated.txt"
    other.write_bytes(b"x")
    assert sorted(remove_stale(tmp_path)) == sorted([old_scratch, dead])
    assert sorted(tmp_path.iterdir()) == sorted([live, other])


# ----------------------------------------------------------------------------- the server


def _post(url: str, data: bytes, name: str, index: str = "phash", route: str = "/api/query") -> tuple[int, dict]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="index"\r\n\r\n{index}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    req = urllib.request.Request(
        url + route, data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _uploads_in(folder, upload: bytes) -> list:
    """Our scratch entries in ``folder``, and any file there holding ``upload`` (libraries the
    server loads may keep files of their own in the temp dir)."""
    return [
        p
        for p in folder.rglob("*")
        if p.name.startswith(sandbox.PREFIX) or (p.is_file() and upload[:4096] in p.read_bytes())
    ]


def test_the_server_refuses_bad_uploads_stays_up_and_leaves_nothing(web_data, start_server, tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    stale = tmp / "encoder-web-q8w7e6r5"  # what a killed earlier server left
    stale.mkdir()
    (stale / "tmp1234.jpg").write_bytes(b"a user's upload")
    env = {**os.environ, "TMPDIR": str(tmp)}
    proc, url = start_server([web_data["phash"], web_data["ae"], "--workers", "2"], env=env)
    good = web_data["upload"].read_bytes()
    try:
        assert not stale.exists()  # cleaned at start-up
        cut = good[: len(good) // 2]
        for name, data, route in [
            ("bomb.icns", icns_bomb(), "/api/query"),
            ("bomb.icns", icns_bomb(), "/api/quantize"),
            ("huge.png", png_claiming(100_000, 100_000), "/api/query"),
            ("empty.jpg", b"", "/api/query"),
            ("cut.jpg", cut, "/api/query"),
            ("cut.jpg", cut, "/api/quantize"),
        ]:
            status, body = _post(url, data, name, route=route)
            assert status == 422 and name in body["error"], (name, route, status, body)
        for index in ("phash", "ae"):  # an odd mode: read, or refused by name; never a 500
            status, body = _post(url, lab_tiff(), "lab.tif", index=index)
            assert status == 200 or (status == 422 and "lab.tif" in body["error"]), (index, status, body)
        status, body = _post(url, good, "q.jpg")
        assert status == 200 and body["neighbours"][0]["distance"] == 0
        assert proc.poll() is None
        assert _uploads_in(tmp, good) == []  # no upload on disk at any point
    finally:
        proc.send_signal(signal.SIGKILL)  # killed, as by the kernel: still nothing left behind
        proc.communicate(timeout=30)
    assert _uploads_in(tmp, good) == []

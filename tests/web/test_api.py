"""The web API through FastAPI's TestClient: every route, every bad input, the token, the limits.

Each bad input must get its 4xx with a JSON ``{"error": ...}`` naming the problem (never a 500,
never a trace), and the server must keep serving afterwards.
"""

from __future__ import annotations

import io
import json
import struct
import tempfile
import threading
import time
import warnings
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageOps

with warnings.catch_warnings():  # starlette's TestClient warns about httpx's future; nothing to act on
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from encoder.cli import serve
from encoder.cli.search import main as search_main
from encoder.web.app import create_app


def _snapshot(folder: Path) -> dict:
    return {
        p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))
    }


@pytest.fixture(scope="module")
def app_env(web_data, tmp_path_factory):
    before = {k: _snapshot(web_data[k]) for k in ("phash", "ae")}
    old_tmp, tempfile.tempdir = tempfile.tempdir, str(tmp_path_factory.mktemp("server_tmp"))  # its own temp dir
    try:
        app = create_app([web_data["phash"], web_data["ae"]], run_dir=web_data["run_dir"], max_upload=2_000_000)
        with TestClient(app, raise_server_exceptions=False) as client:
            yield client, app, web_data, before
    finally:
        tempfile.tempdir = old_tmp


@pytest.fixture
def client(app_env):
    return app_env[0]


def _post(client, data: bytes, name: str = "q.jpg", route: str = "/api/query", **form):
    return client.post(
        route, files={"image": (name, data, "application/octet-stream")}, data={k: str(v) for k, v in form.items()}
    )


def _error(r, status: int, *words: str) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    msg = r.json()["error"]
    assert "Traceback" not in r.text and 'File "' not in r.text
    for w in words:
        assert w in msg, (w, msg)
    return msg


def _png_header_bomb(w: int = 20_000, h: int = 20_000) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


# ----------------------------------------------------------------------------- pages and lookups


def test_pages_and_static_files_are_served(client):
    for route, marker in (
        ("/", 'data-page="search"'),
        ("/duplicates", 'data-page="duplicates"'),
        ("/palette", 'data-page="palette"'),
        ("/training", 'data-page="training"'),
    ):
        r = client.get(route)
        assert r.status_code == 200 and marker in r.text
        assert "http" not in r.text.split("<main>")[0].replace('name="viewport"', "")  # nothing from a CDN
        assert "default-src 'self'" in r.headers["content-security-policy"]
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/style.css").status_code == 200
    assert client.get("/static/../app.py").status_code == 404


def test_healthz_and_indexes(client):
    assert client.get("/healthz").json() == {"status": "ok", "indexes": ["phash", "ae"]}
    info = client.get("/api/indexes").json()
    assert [(x["name"], x["kind"], x["mirror"]) for x in info["indexes"]] == [
        ("phash", "hash", True),
        ("ae", "code", True),
    ]
    assert info["training"] is True and all(x["count"] == 24 for x in info["indexes"])


# ----------------------------------------------------------------------------- queries


@pytest.mark.parametrize("index", ["phash", "ae"])
def test_query_upload_matches_the_command_line_json(client, web_data, index, capsys):
    r = _post(client, web_data["upload"].read_bytes(), index=index, k=4)
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["query"] == "q.jpg" and res["index"] == index and len(res["neighbours"]) == 4
    assert res["neighbours"][0]["id"].startswith("photos/astronaut")
    capsys.readouterr()
    assert search_main(["query", str(web_data[index]), str(web_data["upload"]), "-k", "4", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)[0]["neighbours"]
    assert [{k: n[k] for k in ("rank", "distance", "id", "path")} for n in res["neighbours"]] == cli
    for n in res["neighbours"]:
        assert client.get(n["url"]).status_code == 200
    has_recon = ["recon" in n for n in res["neighbours"]]
    assert has_recon == [index == "ae"] * 4
    if index == "ae":
        png = res["neighbours"][0]["recon"].split(",", 1)[1]
        import base64

        assert Image.open(io.BytesIO(base64.b64decode(png))).size == (64, 64)


def test_mirror_finds_a_flipped_copy(client, web_data, skimage_data):
    buf = io.BytesIO()
    ImageOps.mirror(Image.open(skimage_data / "chelsea.png").convert("RGB")).save(buf, "PNG")
    plain = _post(client, buf.getvalue(), name="flip.png", index="phash", k=1).json()["neighbours"][0]
    mirrored = _post(client, buf.getvalue(), name="flip.png", index="phash", k=1, mirror="true").json()
    assert mirrored["mirror"] is True
    assert mirrored["neighbours"][0] == {**mirrored["neighbours"][0], "id": "photos/chelsea.png", "distance": 0}
    assert plain["distance"] > 0
    codes = _post(client, buf.getvalue(), name="flip.png", index="ae", k=1, mirror="true").json()
    assert codes["mirror"] is True and codes["neighbours"][0]["id"] == "photos/chelsea.png"  # issue 15
    assert codes["neighbours"][0]["distance"] < 1e-3


def test_similar_searches_from_a_stored_image(client):
    r = client.get("/api/similar", params={"index": "phash", "id": "photos/coffee.png", "k": 3})
    assert r.status_code == 200
    res = r.json()
    assert res["neighbours"][0] == {**res["neighbours"][0], "rank": 1, "id": "photos/coffee.png", "distance": 0}
    assert res["query_url"] == "/images/phash/photos/coffee.png"
    ae = client.get("/api/similar", params={"index": "ae", "id": "rings/01.png", "k": 2}).json()
    assert ae["neighbours"][0]["id"] == "rings/01.png" and "recon" in ae["neighbours"][0]
    _error(client.get("/api/similar", params={"index": "phash", "id": "nope.png"}), 404, "nope.png")
    _error(client.get("/api/similar", params={"index": "phash", "id": "../gallery/photos/coffee.png"}), 404)
    _error(client.get("/api/similar", params={"index": "phash", "id": "photos/coffee.png", "k": 0}), 422, "k")
    _error(client.get("/api/similar", params={"index": "phash"}), 422, "id")


def test_an_index_that_is_not_loaded_is_named(client, web_data):
    _error(_post(client, web_data["upload"].read_bytes(), index="clip"), 404, "'clip'", "phash, ae")
    _error(client.get("/api/similar", params={"index": "clip", "id": "x"}), 404, "phash, ae")
    _error(client.get("/api/duplicates", params={"index": "clip"}), 404, "phash, ae")
    _error(client.get("/images/clip/photos/coffee.png"), 404, "phash, ae")


# ----------------------------------------------------------------------------- duplicates


def test_duplicates_have_the_dedup_json_shape(client, capsys, web_data, tmp_path):
    res = client.get("/api/duplicates", params={"index": "phash", "threshold": 4}).json()
    out = tmp_path / "dups.json"
    assert search_main(["dedup", str(web_data["phash"]), "--threshold", "4", "--json", str(out)]) == 0
    cli = json.loads(out.read_text())
    assert res["threshold"] == cli["threshold"] == 4
    assert [{"ids": g["ids"], "max_distance": g["max_distance"]} for g in res["groups"]] == cli["groups"]
    assert ["photos/astronaut.png", "photos/astronaut_copy.jpg", "photos/astronaut_small.jpg"] in [
        g["ids"] for g in res["groups"]
    ]
    assert res["total_groups"] == len(cli["groups"])
    wide = client.get("/api/duplicates", params={"index": "phash", "threshold": 30, "limit": 1}).json()
    assert len(wide["groups"]) == 1 and wide["total_groups"] >= 1
    _error(client.get("/api/duplicates", params={"index": "phash", "threshold": 65}), 422, "threshold")
    _error(client.get("/api/duplicates", params={"index": "phash", "threshold": "ten"}), 422, "threshold")
    _error(client.get("/api/duplicates", params={"index": "ae"}), 422, "hash index", "phash")


# ----------------------------------------------------------------------------- palettes


def test_quantize_returns_stats_and_an_indexed_png(client, skimage_data):
    import base64

    data = (skimage_data / "coffee.png").read_bytes()
    r = _post(client, data, name="coffee.png", route="/api/quantize", n_colors=16)
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["n_colors"] == res["k"] == 16 and res["colors_after"] <= 16 and 15 < res["psnr"] < 40
    assert res["bytes_source"] == len(data)
    png = base64.b64decode(res["png"].split(",", 1)[1])
    assert len(png) == res["bytes_after"]
    im = Image.open(io.BytesIO(png))
    assert im.mode == "P" and im.size == (res["width"], res["height"]) == (600, 400)
    auto = _post(client, data, name="coffee.png", route="/api/quantize", n_colors="auto", target_psnr=30).json()
    assert auto["auto"] is True and auto["psnr"] >= 30 and auto["curve"][-1]["n_colors"] == auto["n_colors"]
    # `k`, the form's earlier name, is still read as n_colors; the two disagreeing are refused
    alias = _post(client, data, name="coffee.png", route="/api/quantize", k=8).json()
    assert alias["n_colors"] == alias["k"] == 8 and alias["colors_after"] <= 8
    _error(_post(client, data, route="/api/quantize", n_colors=8, k=16), 422, "n_colors='8'", "k='16'")
    flat = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(flat, "PNG")
    lossless = _post(client, flat.getvalue(), name="flat.png", route="/api/quantize", k=4).json()
    assert lossless["psnr"] is None  # inf in the library; JSON has no inf
    for k in ("1", "257", "many"):
        _error(_post(client, data, route="/api/quantize", n_colors=k), 422, "n_colors=")
    _error(_post(client, data, route="/api/quantize", k="auto", target_psnr=99), 422, "target_psnr")


# ----------------------------------------------------------------------------- stored images


def test_images_are_served_by_id_only(client, web_data):
    r = client.get("/images/phash/photos/coffee.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content == (web_data["gallery"] / "photos" / "coffee.png").read_bytes()
    assert client.get("/images/ae/photos/astronaut_copy.jpg").headers["content-type"] == "image/jpeg"
    for bad in (
        "../conftest.py",
        "photos/../../tiny.pt",
        "%2e%2e/tiny.pt",
        "..%2Ftiny.pt",
        "%2e%2e%2ftiny.pt",
        "photos%2F..%2F..%2Ftiny.pt",
        "/etc/passwd",
        "%2Fetc%2Fpasswd",
        "photos/missing.png",
        "photos",
        "photos/",
        "..",
        "C:%5Cwindows",
    ):
        _error(client.get(f"/images/phash/{bad}"), 404)


def test_a_symlink_out_of_the_indexed_root_is_refused(web_data, tmp_path, skimage_data):
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "secret.png"
    Image.open(skimage_data / "coffee.png").save(outside)
    Image.open(skimage_data / "coffee.png").save(root / "inside.png")
    (root / "escape.png").symlink_to(outside)
    assert search_main(["index", str(root), "--method", "phash", "-o", str(tmp_path / "idx")]) == 0
    client = TestClient(create_app([tmp_path / "idx"]), raise_server_exceptions=False)
    assert client.get("/images/idx/inside.png").status_code == 200
    ids = client.get("/api/similar", params={"id": "inside.png", "k": 2}).json()["neighbours"]
    assert sorted(n["id"] for n in ids) == ["escape.png", "inside.png"]  # the index holds it ...
    _error(client.get("/images/idx/escape.png"), 404, "escape.png")  # ... but it is not served
    _error(client.get("/api/similar", params={"id": "escape.png"}), 404)


def test_an_index_with_parquet_ids_serves_its_images_and_no_others(web_data, tmp_path, skimage_data, monkeypatch):
    """A big index keeps its ids as an Arrow column (ids.parquet): the page asks it per request."""
    pytest.importorskip("pyarrow", reason="ids.parquet needs pyarrow (the [ray] extra)")
    from encoder.search import index_files

    monkeypatch.setattr(index_files, "IDS_PARQUET_MIN", 1)
    root = tmp_path / "root"
    root.mkdir()
    for name in ("coffee.png", "astronaut.png"):
        Image.open(skimage_data / name).save(root / name)
    assert search_main(["index", str(root), "--method", "phash", "-o", str(tmp_path / "idx")]) == 0
    assert (tmp_path / "idx" / "ids.parquet").is_file() and not (tmp_path / "idx" / "ids.json").exists()
    client = TestClient(create_app([tmp_path / "idx"]), raise_server_exceptions=False)
    assert client.get("/images/idx/coffee.png").content == (root / "coffee.png").read_bytes()
    _error(client.get("/images/idx/camera.png"), 404, "camera.png")
    ids = client.get("/api/similar", params={"id": "astronaut.png", "k": 2}).json()["neighbours"]
    assert sorted(n["id"] for n in ids) == ["astronaut.png", "coffee.png"]


# ----------------------------------------------------------------------------- bad uploads


@pytest.mark.parametrize("route", ["/api/query", "/api/quantize"])
def test_bad_uploads_get_a_4xx_naming_the_problem(client, web_data, route):
    jpeg = web_data["upload"].read_bytes()
    _error(
        _post(client, b"%PDF-1.4 not an image at all", name="doc.pdf", route=route),
        422,
        "doc.pdf",
        "not a recognised image format",
    )
    _error(_post(client, jpeg[: len(jpeg) // 3], name="cut.jpg", route=route), 422, "cut.jpg", "cannot decode")
    _error(_post(client, b"", name="empty.jpg", route=route), 422, "empty")
    _error(_post(client, _png_header_bomb(), name="bomb.png", route=route), 422, "decompression bomb")
    _error(client.post(route, data={"index": "phash"}), 422, "image")
    _error(client.post(route, data={"image": "not a file"}), 422, "image")
    _error(client.post(route, content=b"{}", headers={"content-type": "application/json"}), 422)
    _error(
        client.post(route, content=b"--x\r\nbroken", headers={"content-type": "multipart/form-data; boundary=x"}),
        422,
        "image",
    )
    _error(_post(client, b"\0" * 2_100_000, name="big.jpg", route=route), 413, "2 MB")
    field = "k" if route == "/api/query" else "n_colors"  # neighbours, or palette size
    _error(_post(client, jpeg, route=route, **{field: "-3"}), 422, field)
    assert client.get("/healthz").status_code == 200
    assert _post(client, jpeg, index="phash").status_code == 200  # and it keeps serving


def test_a_chunked_upload_is_cut_off_while_it_is_read(client, web_data):
    sent = []

    def body():
        head = (
            b'--b\r\nContent-Disposition: form-data; name="image"; filename="x.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
        )
        yield head
        for _ in range(1000):  # up to 64 MB if nobody stops it
            sent.append(1)
            yield b"\xff" * 65536

    r = client.post("/api/query", content=body(), headers={"content-type": "multipart/form-data; boundary=b"})
    _error(r, 413, "limit")
    assert _post(client, web_data["upload"].read_bytes(), index="phash").status_code == 200


def test_unexpected_errors_are_a_500_without_a_trace(app_env, monkeypatch):
    client, app, *_ = app_env

    def boom(*a, **k):
        raise RuntimeError("secret internals at /home/x/encoder/web/service.py line 42")

    monkeypatch.setattr(app.app.state.service, "similar", boom)
    r = client.get("/api/similar", params={"id": "photos/coffee.png"})
    msg = _error(r, 500, "internal error")
    assert "secret" not in r.text and "service.py" not in msg
    assert client.get("/healthz").status_code == 200


def test_cpu_work_does_not_block_the_event_loop(app_env, monkeypatch, web_data):
    client, app, *_ = app_env
    service = app.app.state.service
    slow = service.similar

    def slow_similar(*a, **k):
        time.sleep(1.0)
        return slow(*a, **k)

    monkeypatch.setattr(service, "similar", slow_similar)
    done = []
    t = threading.Thread(target=lambda: done.append(client.get("/api/similar", params={"id": "photos/coffee.png"})))
    t.start()
    time.sleep(0.2)
    t0 = time.perf_counter()
    assert client.get("/healthz").status_code == 200
    assert time.perf_counter() - t0 < 0.5 and not done  # answered while the slow query still runs
    t.join()
    assert done[0].status_code == 200


# ----------------------------------------------------------------------------- training


def test_training_curves_and_grids(client, web_data):
    t = client.get("/api/training").json()
    curves = t["runs"][0]["curves"]
    assert curves["val/psnr"] == [[0.0, 14.0], [1.0, 16.0], [2.0, 18.0], [3.0, 20.0]]
    assert set(curves) == {"train/loss", "val/loss", "val/psnr"}
    assert [g["epoch"] for g in t["grids"]] == [0, 1]
    assert client.get(t["grids"][1]["url"]).headers["content-type"] == "image/png"
    _error(client.get("/training/grids/2"), 404, "2")
    _error(client.get("/training/grids/-1"), 404)
    no_run = TestClient(create_app([web_data["phash"]]), raise_server_exceptions=False)
    _error(no_run.get("/api/training"), 404, "--run-dir")
    _error(no_run.get("/training"), 404, "--run-dir")
    assert no_run.get("/api/indexes").json()["training"] is False


# ----------------------------------------------------------------------------- token


def test_the_token_guards_every_route(web_data):
    app = create_app([web_data["phash"]], token="s3cret")
    c = TestClient(app, raise_server_exceptions=False)
    for route in ("/", "/healthz", "/api/indexes", "/images/phash/photos/coffee.png", "/static/app.js"):
        _error(c.get(route), 401, "token")
        _error(c.get(route, headers={"X-Token": "s3cret-not"}), 401)
        assert c.get(route, headers={"X-Token": "s3cret"}).status_code == 200
        assert c.get(route, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    _error(c.post("/api/query", files={"image": ("a.jpg", b"x")}), 401)
    r = c.get("/?token=s3cret&x=1", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/?x=1"
    assert "HttpOnly" in r.headers["set-cookie"] and "SameSite=Strict" in r.headers["set-cookie"]
    assert c.get("/api/indexes").status_code == 200  # the cookie now carries it
    c.cookies.clear()
    _error(c.get("/?token=wrong", follow_redirects=False), 401)
    import inspect

    from encoder.web import guard

    assert "hmac.compare_digest" in inspect.getsource(guard.Guard._ok)


# ----------------------------------------------------------------------------- the command line


def test_serve_command_line(web_data, monkeypatch, capsys):
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    assert serve.main([str(web_data["phash"]), str(web_data["ae"])]) == 0
    assert calls[-1]["host"] == "127.0.0.1" and calls[-1]["port"] == 8000
    out = capsys.readouterr()
    assert "http://127.0.0.1:8000/" in out.out and "warning" not in out.err
    assert serve.main([str(web_data["phash"]), "--host", "0.0.0.0", "--port", "9001"]) == 0
    assert "warning: --host 0.0.0.0" in capsys.readouterr().err
    assert serve.main([str(web_data["phash"]), "--host", "0.0.0.0", "--token", "t"]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "--token" not in err
    assert serve.main([str(web_data["base"] / "nothing")]) == 2
    assert "not an index directory" in capsys.readouterr().err
    assert serve.main([str(web_data["ae"]), "--checkpoint", str(web_data["base"] / "missing.pt")]) == 2
    assert "error:" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        serve.main([str(web_data["phash"]), "--max-upload-mb", "0"])
    assert len(calls) == 3
    assert serve.is_loopback("::1") and serve.is_loopback("localhost") and not serve.is_loopback("0.0.0.0")


def test_serve_help_does_not_import_fastapi():
    import subprocess
    import sys

    code = (
        "import sys; from encoder.cli import serve; serve.build_parser().format_help(); "
        "print(sorted(m for m in ('fastapi', 'uvicorn', 'starlette', 'torch') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    ).stdout
    assert out.strip() == "[]"


def test_nothing_was_written_into_the_index_folders(app_env):
    *_, web_data, before = app_env
    assert {k: _snapshot(web_data[k]) for k in ("phash", "ae")} == before
    assert [p for p in Path(tempfile.gettempdir()).iterdir() if p.name.startswith("encoder-web-")] == []  # in memory

"""The FastAPI app: four pages (Search, Duplicates, Palette, Training) and the JSON API behind them.

    from encoder.web.app import create_app
    app = create_app(["runs/demo/index_phash", "runs/demo/index_ae"], run_dir="runs/demo/train")
    # uvicorn.run(app, host="127.0.0.1", port=8000)   - what `search.py serve` does

Routes (JSON shapes as the command line's ``--json``; see :mod:`encoder.web.service`):

====================================  ==========================================================
``GET /``, ``/duplicates``,           the pages (plain HTML + ``/static/app.js`` + ``style.css``)
``/palette``, ``/training``
``GET /healthz``                      ``{"status": "ok", "indexes": [...]}``
``GET /api/indexes``                  the loaded indexes (name, method, kind, count)
``POST /api/query``                   multipart ``image``, form ``index``, ``k``, ``mirror``
``GET /api/similar``                  ``?index=&id=&k=&mirror=``: top-k of a stored image
``GET /api/duplicates``               ``?index=&threshold=&include_flat=&limit=``
``POST /api/quantize``                multipart ``image``, form ``n_colors`` (2..256 or ``auto``; ``k``
                                      is accepted for it), ``target_psnr``
``GET /images/{index}/{id}``          a stored image, by id only
``GET /api/training``                 curves and grids of ``run_dir``; ``/training/grids/{n}``
====================================  ==========================================================

Every error is JSON ``{"error": "..."}`` with its 4xx status; an unexpected failure is a 500
with no trace in the response (the server log has it). CPU work runs in a bounded thread pool
(``workers`` threads, default: the number of cores), never on the event loop.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import anyio
from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from encoder.hashing.dedup import DEFAULT_THRESHOLD
from encoder.hashing.hashes import HASH_BITS
from encoder.web import training
from encoder.web.guard import Guard
from encoder.web.sandbox import DEFAULT_MEMORY_MB, DEFAULT_SECONDS
from encoder.web.service import MAX_GROUPS, MAX_K, BadInput, NotFound, Service

STATIC = Path(__file__).parent / "static"
# route -> (page, title): static/pages/<page>.html is the page's <main>, static/layout.html the rest
PAGES = {
    "/": ("search", "Search"),
    "/duplicates": ("duplicates", "Duplicates"),
    "/palette": ("palette", "Palette"),
    "/training": ("training", "Training"),
}


def page_html(page: str, title: str) -> str:
    """A whole page: the shared layout (head, navigation) around static/pages/<page>.html."""
    layout = (STATIC / "layout.html").read_text(encoding="utf-8")
    main = (STATIC / "pages" / f"{page}.html").read_text(encoding="utf-8")
    return layout.replace("<!--TITLE-->", title).replace("<!--PAGE-->", page).replace("<!--MAIN-->", main.rstrip("\n"))


DEFAULT_MAX_UPLOAD = 20_000_000
log = logging.getLogger("encoder.web")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _validation_message(e: RequestValidationError) -> str:
    parts = []
    for err in e.errors():
        loc = [str(x) for x in err.get("loc", ()) if x not in ("body", "query", "path")]
        parts.append(f"{'.'.join(loc) or 'request'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(BadInput)
    async def bad_input(request: Request, e: BadInput):
        return _error(e.status, str(e))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException):
        return _error(e.status_code, str(e.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError):
        return _error(422, _validation_message(e))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, e: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, "internal error (the server log has the details)")


def _pages(app: FastAPI, service: Service) -> None:
    for route, (page, title) in PAGES.items():

        def serve(page: str = page, html: str = page_html(page, title)):
            if page == "training" and service.run_dir is None:
                raise NotFound("no training run: start the server with --run-dir RUN")
            return HTMLResponse(html)

        app.add_api_route(route, serve, methods=["GET"], include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")


def _api(app: FastAPI, service: Service, run) -> None:
    first = next(iter(service.indexes))

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "indexes": list(service.indexes)}

    @app.get("/api/indexes")
    async def indexes():
        return service.describe()

    @app.post("/api/query")
    async def query(
        image: UploadFile = File(...),
        index: str = Form(first),
        k: int = Form(5, ge=1, le=MAX_K),
        mirror: bool = Form(False),
    ):
        data = await image.read()
        return await run(service.query_bytes, index, data, image.filename, k, mirror)

    @app.get("/api/similar")
    async def similar(id: str, index: str = first, k: int = Query(5, ge=1, le=MAX_K), mirror: bool = False):
        return await run(service.similar, index, id, k, mirror)

    @app.get("/api/duplicates")
    async def duplicates(
        index: str = first,
        threshold: int = Query(DEFAULT_THRESHOLD, ge=0, le=HASH_BITS),
        include_flat: bool = False,
        limit: int = Query(MAX_GROUPS, ge=0, le=10_000),
    ):
        return await run(service.duplicates, index, threshold, include_flat, limit)

    @app.post("/api/quantize")
    async def quantize(
        image: UploadFile = File(...),
        n_colors: str | None = Form(None),
        k: str | None = Form(None),  # the form's earlier name for n_colors
        target_psnr: float = Form(38.0),
    ):
        if n_colors is not None and k is not None and n_colors != k:
            raise BadInput(f"n_colors={n_colors!r} and its alias k={k!r} disagree; send n_colors only")
        data = await image.read()
        size = n_colors if n_colors is not None else k if k is not None else "16"
        return await run(service.quantize_bytes, data, image.filename, size, target_psnr)

    @app.get("/images/{index}/{ident:path}")
    async def stored(index: str, ident: str):
        path, data, kind = await run(service.image, index, ident)
        headers = {"Cache-Control": "private, max-age=3600"}
        if path is not None:
            return FileResponse(path, media_type=kind, headers=headers)
        return Response(data, media_type=kind, headers=headers)


def _training(app: FastAPI, service: Service, run) -> None:
    def run_dir() -> Path:
        if service.run_dir is None:
            raise NotFound("no training run: start the server with --run-dir RUN")
        return service.run_dir

    @app.get("/api/training")
    async def curves():
        return await run(training.training, run_dir())

    @app.get("/training/grids/{n}")
    async def grid(n: int):
        files = await run(training.grids, run_dir())
        if not 0 <= n < len(files):
            raise NotFound(f"no grid {n}; the run has {len(files)}")
        return FileResponse(files[n], media_type="image/png")


def create_app(
    index_dirs: Sequence[str | os.PathLike],
    checkpoint: str | None = None,
    run_dir: str | os.PathLike | None = None,
    token: str | None = None,
    max_upload: int = DEFAULT_MAX_UPLOAD,
    workers: int | None = None,
    decode_memory_mb: float | None = DEFAULT_MEMORY_MB,
    decode_seconds: float = DEFAULT_SECONDS,
) -> Guard:
    """The app over ``index_dirs`` (loaded now, once; errors raise here, before serving).

    ``checkpoint``: the autoencoder for ae indexes (default: the one each index records);
    ``run_dir``: a training run for the Training page; ``token``: required on every request;
    ``max_upload``: bytes an uploaded image may have; ``workers``: threads for CPU work (and
    uploads decoded at once); ``decode_memory_mb``, ``decode_seconds``: the limits each upload is
    first decoded under, in a worker process (:mod:`encoder.web.sandbox`; None: no memory limit).
    Returns an ASGI app (the FastAPI app inside :class:`encoder.web.guard.Guard`, at ``.app``).
    """
    threads = workers or os.cpu_count() or 1
    sandbox = {"slots": threads, "memory_mb": decode_memory_mb, "seconds": decode_seconds}
    service = Service(index_dirs, checkpoint=checkpoint, run_dir=run_dir, sandbox=sandbox)
    limiter = anyio.CapacityLimiter(threads)

    async def run(fn, *args):
        return await anyio.to_thread.run_sync(partial(fn, *args), limiter=limiter)

    @asynccontextmanager
    async def lifespan(app):
        try:
            yield
        finally:
            service.close()

    app = FastAPI(title="encoder", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.service = service
    _handlers(app)
    _pages(app, service)
    _api(app, service, run)
    _training(app, service, run)
    return Guard(app, token=token, max_upload=max_upload)


CONFIG_ENV = "ENCODER_SERVE_CONFIG"


def app_from_env() -> Guard:
    """:func:`create_app` with the keyword arguments in the JSON of ``$ENCODER_SERVE_CONFIG``: the
    factory each process of ``search.py serve --processes N`` calls (uvicorn starts them)."""
    return create_app(**json.loads(os.environ[CONFIG_ENV]))


__all__ = ["create_app", "app_from_env", "CONFIG_ENV", "DEFAULT_MAX_UPLOAD"]

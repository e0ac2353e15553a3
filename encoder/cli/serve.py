"""``search.py serve``: a local web page over one or more indexes (FastAPI + uvicorn).

    search.py serve runs/demo/index_phash runs/demo/index_ae
    search.py serve runs/idx --checkpoint CKPT --run-dir runs/demo/train --port 8080
    search.py serve runs/idx --host 0.0.0.0 --token "$(openssl rand -hex 16)"   # reachable by others

Pages: Search (drop an image, see its top-k; click a result to search from it), Duplicates
(groups of a hash index at a threshold you move), Palette (k-means palette of a photo) and,
with ``--run-dir``, Training (loss/PSNR curves and per-epoch reconstruction grids). The JSON
API behind them is listed in :mod:`encoder.web.app`. Indexes and models load once, before
the server starts; nothing is written into the index folders.

Uploads: each is first decoded in a worker process whose address space is capped at
``--decode-memory-mb`` (RLIMIT_AS, default 1536 MB) and killed after ``--decode-seconds``
(default 10 s); an upload that fails either, or that the decoder refuses, gets a 422 naming the
reason and the server goes on. Uploads live in memory for their request only.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Sequence

from encoder.web.sandbox import DEFAULT_MEMORY_MB, DEFAULT_SECONDS  # standard library only

LOOPBACK = ("localhost",)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="search.py serve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("indexes", nargs="+", metavar="IDX", help="index folders (search.py index -o ...)")
    p.add_argument("--checkpoint", help="autoencoder for ae indexes (default: the one each index records)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--token", help="a secret every request must carry (open the page once with ?token=T)")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest upload accepted (default %(default)g)")
    p.add_argument("--run-dir", help="a training run folder (train.py fit's default_root_dir) for the Training page")
    p.add_argument(
        "--workers", type=int, default=None, help="threads for CPU work per process (default: the number of cores)"
    )
    p.add_argument(
        "--processes",
        type=int,
        default=1,
        help="server processes, each with the indexes loaded (more throughput under many clients, "
        "N times the memory; default %(default)s)",
    )
    p.add_argument(
        "--decode-memory-mb",
        type=float,
        default=float(DEFAULT_MEMORY_MB),
        help="address space of the worker process each upload is first decoded in (RLIMIT_AS; "
        "an upload needing more is refused with a 422; default %(default)g)",
    )
    p.add_argument(
        "--decode-seconds",
        type=float,
        default=DEFAULT_SECONDS,
        help="longest an upload's decode may take before it is killed and refused (default %(default)g)",
    )
    p.add_argument("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"))
    return p


def is_loopback(host: str) -> bool:
    if host in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    """Load the indexes, then serve until Ctrl-C; errors about the inputs print ``error: ...`` and return 2."""
    p = build_parser()
    a = p.parse_args(argv)
    if not 0 < a.port < 65536:
        p.error(f"--port {a.port} must be in [1, 65535]")
    if a.max_upload_mb <= 0:
        p.error(f"--max-upload-mb {a.max_upload_mb:g} must be > 0")
    if a.decode_memory_mb < 256:
        p.error(f"--decode-memory-mb {a.decode_memory_mb:g} must be >= 256 (the decoder itself needs about 110 MB)")
    if not a.decode_seconds > 0:
        p.error(f"--decode-seconds {a.decode_seconds:g} must be > 0")
    for flag in ("workers", "processes"):
        if getattr(a, flag) is not None and getattr(a, flag) < 1:
            p.error(f"--{flag} {getattr(a, flag)} must be >= 1")
    try:
        import uvicorn

        from encoder.web.app import create_app
    except ImportError as e:  # the [web] extra; say so rather than trace
        print(f"error: serving needs FastAPI and uvicorn ({e}): pip install 'encoder[web]'", file=sys.stderr)
        return 2
    if not is_loopback(a.host):
        print(
            f"warning: --host {a.host} makes the page reachable from other machines"
            + ("" if a.token else "; anyone who can reach it can query the indexes (consider --token)"),
            file=sys.stderr,
        )
    config = dict(
        index_dirs=[str(i) for i in a.indexes],
        checkpoint=a.checkpoint,
        run_dir=a.run_dir,
        token=a.token,
        max_upload=int(a.max_upload_mb * 1e6),
        workers=a.workers,
        decode_memory_mb=a.decode_memory_mb,
        decode_seconds=a.decode_seconds,
    )
    try:  # loaded here once even with --processes: bad inputs stop now, with the message, not in a worker
        app = create_app(**config)
    except (FileNotFoundError, NotADirectoryError, ValueError) as e:  # incl. IndexMismatch/Corrupt/Checkpoint
        print(f"error: {e}", file=sys.stderr)
        return 2
    names = ", ".join(app.app.state.service.indexes)
    host = f"[{a.host}]" if ":" in a.host else a.host
    print(
        f"serving {names} on http://{host}:{a.port}/"
        + ("?token=..." if a.token else "")
        + (f" with {a.processes} processes" if a.processes > 1 else "")
        + "  (Ctrl-C stops)",
        flush=True,
    )
    if a.processes == 1:
        uvicorn.run(app, host=a.host, port=a.port, log_level=a.log_level, access_log=False)
        return 0
    _serve_processes(app, config, a.processes, a.host, a.port, a.log_level)
    return 0


def _serve_processes(app, config: dict, processes: int, host: str, port: int, log_level: str) -> None:
    """uvicorn's multiprocess supervisor, each process building its app from ``config``.

    The listening socket is made here with its protocol set (IPPROTO_TCP): uvicorn's own leaves it
    0, and asyncio then skips TCP_NODELAY on every connection, so each response waited for the
    client's delayed ACK (measured: 56 ms per keep-alive request instead of 4 ms).
    """
    import json
    import os
    import socket

    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from encoder.web.app import CONFIG_ENV

    app.app.state.service.close()
    os.environ[CONFIG_ENV] = json.dumps(config)  # each process builds its own app from it
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    cfg = uvicorn.Config(
        "encoder.web.app:app_from_env",
        factory=True,
        workers=processes,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
    )
    Multiprocess(cfg, sockets=[sock]).run()


if __name__ == "__main__":
    sys.exit(main())

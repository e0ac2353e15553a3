"""Uploads decoded where a bad one cannot take the server down, and kept in memory, never on disk.

Each upload is first decoded by a worker process (full decode, EXIF orientation, the grey and RGB
conversions of :mod:`encoder.data`) under two limits, as thumbnailers and ImageMagick's resource
policy do:

* memory: the worker's address space is capped (``RLIMIT_AS``, default
  :data:`DEFAULT_MEMORY_MB` MB, the interpreter and its libraries included); a decoder that asks
  for more gets a ``MemoryError`` (or dies), the worker is replaced, the upload is refused;
* time: a decode that has not answered after :data:`DEFAULT_SECONDS` s is killed (``SIGKILL``)
  and refused.

Only an upload the worker read within both limits goes on to the query, decoded again in the
server process: the same decoder on the same bytes needs the same memory and time, so what reaches
the server is bounded. A refusal is a reason string (the upload then gets a 4xx naming it); a
worker that died or was killed is replaced on the next request. At most ``slots`` uploads are
checked at once (one worker each), so the limits also bound the server's total.

Uploads live in anonymous in-memory files (``memfd_create``, read by path as
``/proc/self/fd/N``): nothing is written to disk and nothing outlives the process, even when it is
killed. Where ``memfd_create`` is missing (not Linux) an upload is a temporary file named
``encoder-web-<pid>-*``, removed after its request; :func:`remove_stale` removes those of dead
processes (and the scratch folders of earlier versions) at start-up. ``RLIMIT_AS`` is a Linux and
BSD limit: elsewhere only the time limit applies.

Example::

    >>> box = Sandbox(slots=2)
    >>> box.check(open("photo.jpg", "rb").read())        # None: readable within the limits
    >>> box.check(b"GIF89a...")                             # "cannot decode: ..." (a reason)
    >>> with upload_file(data, ".jpg") as path: ...         # /proc/self/fd/N while the block runs
    >>> box.close()
"""

from __future__ import annotations

import math
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from pathlib import Path

DEFAULT_MEMORY_MB = 1536  # a 64 MP RGBA PNG (data.DEFAULT_MAX_PIXELS) converts in about 1.2 GB
DEFAULT_SECONDS = 10.0
START_SECONDS = 60.0  # a fresh worker imports numpy and Pillow before its first upload
PREFIX = "encoder-web-"
# modes whose conversions to grey and RGB always work, in memory bounded by the size already
# decoded: the worker skips them
PLAIN_MODES = frozenset({"1", "L", "P", "RGB", "RGBA", "LA", "PA"})
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_ROOT = Path(__file__).resolve().parents[2]  # the folder holding the encoder package, for the worker's imports


@contextmanager
def upload_file(data: bytes, suffix: str = ".img") -> Iterator[Path]:
    """A path holding ``data`` while the block runs: an in-memory file where the system has them."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("encoder-upload", os.MFD_CLOEXEC)
        try:
            with open(fd, "wb", closefd=False) as f:
                f.write(data)
            yield Path(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return
    fd, name = tempfile.mkstemp(prefix=f"{PREFIX}{os.getpid()}-", suffix=suffix)
    try:
        with open(fd, "wb") as f:
            f.write(data)
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale(folder: str | os.PathLike | None = None) -> list[Path]:
    """Remove ``encoder-web-*`` uploads and folders in ``folder`` (default: the temp dir) that no live
    process owns: files named with a dead process's id, and the per-process scratch folders that
    earlier versions kept uploads in (a killed server left them behind, uploads inside).
    Returns what was removed."""
    removed = []
    for p in Path(folder or tempfile.gettempdir()).glob(f"{PREFIX}*"):
        m = re.match(rf"{PREFIX}(\d+)-", p.name)
        if m and _alive(int(m.group(1))):
            continue
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
        except OSError:  # another user's, or gone already
            pass
    return removed


_OUT_OF_MEMORY = "needs more memory to decode than the server allows (its --decode-memory-mb)"


def _decode(data, path: Path) -> tuple[str | None, bool]:
    """(the reason ``path`` cannot be read, or None; whether this worker is still sound)."""
    try:
        im = data.open_image(path)
        if im.mode not in PLAIN_MODES:  # by way of to_rgb for every mode but grey ones: the query's conversions
            data.to_gray(im)
    except data.ImageLoadError as e:
        if isinstance(e.__cause__, MemoryError):  # the guarded decode names it; the worker is retired
            return _OUT_OF_MEMORY, False
        return e.reason, True
    except MemoryError:
        return _OUT_OF_MEMORY, False
    except Exception as e:  # any decoder's own error (ValueError, struct.error, ...) is the file's reason
        return f"cannot decode: {type(e).__name__}: {e}", True
    return None, True


def _worker(conn, max_bytes: int | None, seconds: float) -> None:
    """A worker's life (``python -m encoder.web.sandbox FD MAX_BYTES SECONDS``): limit itself, load
    the decoder, then answer one upload per message until the server closes the connection."""
    if max_bytes:
        try:
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (max_bytes, max_bytes))
        except (ImportError, ValueError, OSError):  # no RLIMIT_AS here: the time limit still holds
            pass
    from encoder import data

    conn.send("ready")
    while True:
        try:
            payload = conn.recv_bytes()
        except (EOFError, OSError):
            return
        # its own alarm too (default action: exit), should the server die and leave it decoding
        signal.alarm(math.ceil(2 * seconds))
        with upload_file(payload) as path:
            reason, sound = _decode(data, path)
        signal.alarm(0)
        conn.send((reason.replace(str(path), "the upload") if reason else None, sound))
        if not sound:
            return


class _Worker:
    """One worker process (a fresh interpreter: nothing of the server's threads or imports) and
    its connection, a socket pair."""

    def __init__(self, max_bytes: int | None, seconds: float):
        parent, child = socket.socketpair()
        env = dict(os.environ)
        env.update({var: "1" for var in _THREAD_VARS})  # one thread: no per-thread buffers in the address space
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_ROOT), env.get("PYTHONPATH", "")) if p)
        cmd = [sys.executable, "-m", "encoder.web.sandbox", str(child.fileno()), str(max_bytes or 0), repr(seconds)]
        try:
            self.proc = subprocess.Popen(cmd, pass_fds=[child.fileno()], env=env, stdin=subprocess.DEVNULL)
        finally:
            child.close()
        self.conn = Connection(parent.detach())
        if not self.conn.poll(START_SECONDS) or self.conn.recv() != "ready":
            self.stop()
            raise RuntimeError(f"the decode worker did not start within {START_SECONDS:g} s")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int | None:
        """Kill the process (if running) and return its exit code (negative: the signal)."""
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self.conn.close()
        return self.proc.returncode


def _death(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class Sandbox:
    """Worker processes that decode uploads under a memory and a time limit; see the module docstring.

    ``slots``: uploads checked at once (a worker each, started when first needed);
    ``memory_mb``: each worker's address space, MB (None: no memory limit);
    ``seconds``: the longest a decode may take.
    """

    def __init__(self, slots: int = 1, memory_mb: float | None = DEFAULT_MEMORY_MB, seconds: float = DEFAULT_SECONDS):
        if slots < 1:
            raise ValueError(f"slots={slots} must be >= 1")
        if memory_mb is not None and memory_mb < 256:
            raise ValueError(f"memory_mb={memory_mb:g} must be >= 256 (the decoder itself needs about 110 MB)")
        if not seconds > 0:
            raise ValueError(f"seconds={seconds} must be > 0")
        self.memory_mb, self.seconds = memory_mb, seconds
        self._max_bytes = None if memory_mb is None else int(memory_mb * 2**20)
        self._idle: queue.LifoQueue[_Worker | None] = queue.LifoQueue()
        for _ in range(slots):
            self._idle.put(None)
        self._busy: set[_Worker] = set()
        self._lock = threading.Lock()
        self._closed = False

    def check(self, payload: bytes) -> str | None:
        """None if ``payload`` decodes within the limits, else the reason it cannot be read."""
        if self._closed:
            raise RuntimeError("the decode sandbox is closed")
        worker = self._idle.get()  # waits while every slot is checking an upload
        try:
            if worker is None or not worker.alive():
                worker = _Worker(self._max_bytes, self.seconds)
            with self._lock:
                self._busy.add(worker)
            reason, worker = self._ask(worker, payload)
            return reason
        finally:
            if worker is not None:
                with self._lock:
                    self._busy.discard(worker)
            self._idle.put(None if self._closed else worker)

    def _ask(self, worker: _Worker, payload: bytes) -> tuple[str | None, _Worker | None]:
        """(reason or None, the worker if it may take the next upload)."""
        try:
            worker.conn.send_bytes(payload)
            if not worker.conn.poll(self.seconds):
                self._drop(worker)
                return f"took longer than {self.seconds:g} s to decode (the server's --decode-seconds)", None
            reason, sound = worker.conn.recv()
        except (EOFError, OSError):  # it died: the limit's MemoryError came too late, or a crash
            code = self._drop(worker)
            return f"the decoder died on it ({_death(code)}; the server's --decode-memory-mb is a limit)", None
        if not sound:
            self._drop(worker)
            return reason, None
        return reason, worker

    def _drop(self, worker: _Worker) -> int | None:
        with self._lock:
            self._busy.discard(worker)
        return worker.stop()

    def close(self) -> None:
        """Stop every worker (idle or busy); the sandbox takes no more uploads after this."""
        self._closed = True
        while True:
            try:
                worker = self._idle.get_nowait()
            except queue.Empty:
                break
            if worker is not None:
                worker.stop()
        with self._lock:
            busy, self._busy = list(self._busy), set()
        for worker in busy:
            worker.stop()


if __name__ == "__main__":
    _worker(Connection(int(sys.argv[1])), int(sys.argv[2]) or None, float(sys.argv[3]))

__all__ = ["Sandbox", "upload_file", "remove_stale", "DEFAULT_MEMORY_MB", "DEFAULT_SECONDS"]

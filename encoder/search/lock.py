"""One writer at a time per index folder: a lock held from load to save (add, remove, index over it).

Readers need no lock: an index folder is replaced as a whole (encoder.atomic.atomic_dir), so a
reader sees the old folder or the new one, never a mix.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from encoder.search.errors import IndexBusyError

LOCK_TIMEOUT = 600.0  # seconds a writer waits for another writer of the same index


@contextmanager
def writer_lock(path: str | os.PathLike, *, timeout: float = LOCK_TIMEOUT, poll: float = 0.1) -> Iterator[None]:
    """Hold the writer lock of the index folder ``path`` (add, remove, index over it): load, change, save.

    Waits for another writer (saying so once on stderr) up to ``timeout`` seconds, then raises
    :class:`IndexBusyError`. The lock is ``fcntl.flock`` on ``.NAME.lock`` *beside* the folder,
    not a file inside it: every save swaps the whole folder for a new one (atomic_dir), which
    would take a lock file inside away with the old folder, and the next writer would lock
    another file. Locking the parent folder would serialise unrelated indexes. The lock file is
    deleted when released, so nothing is left beside the index; a writer that was waiting on
    the deleted file sees that the name now means another (or no) file and locks again.

    Example:
        >>> from encoder.search.index import Index
        >>> with writer_lock("runs/idx"):                       # doctest: +SKIP
        ...     idx = Index.load("runs/idx"); idx.add(v, ids); idx.save("runs/idx")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.parent / f".{path.name}.lock"
    deadline, told = time.monotonic() + timeout, False
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not told:
                        print(f"waiting for another writer of {path} ...", file=sys.stderr, flush=True)
                        told = True
                    if time.monotonic() >= deadline:
                        raise IndexBusyError(
                            f"{path}: another process kept writing it (lock {lock}) for more "
                            f"than {timeout:g} s; try again when it has finished"
                        ) from None
                    time.sleep(poll)
            try:
                current = os.stat(lock).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
        except BaseException:
            os.close(fd)
            raise
        if current:
            break
        os.close(fd)  # the holder deleted this file as it finished: lock the new one
    try:
        yield
    finally:
        try:
            os.unlink(lock)  # before unlocking, so a waiter on this file knows to start again
        except FileNotFoundError:
            pass
        os.close(fd)

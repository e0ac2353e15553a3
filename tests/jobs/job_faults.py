"""Task wrappers for the fault tests, importable by name in Ray workers (tests/jobs is on their path).

Each wraps the real shard task: :func:`kill_once` SIGKILLs its own worker the first time it meets
shard 1 (a marker file remembers), :func:`slow` sleeps first (so a driver can be killed mid-run),
and both log every part actually written (``writes.log`` beside the work folder).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from encoder.jobs.index_job import hash_shard


def _logged(work: str, shard: int) -> dict[str, int]:
    result = hash_shard(work, shard)
    if result["images"]:  # 0: the part was there already, nothing written
        with open(Path(work).parent / "writes.log", "a") as f:
            f.write(f"{shard}\n")
    return result


def kill_once(work: str, shard: int) -> dict[str, int]:
    marker = Path(work).parent / f"killed-{shard}"
    if shard == 1 and not marker.exists():
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return _logged(work, shard)


def slow(work: str, shard: int) -> dict[str, int]:
    time.sleep(0.7)
    return _logged(work, shard)


def writes(work: Path) -> list[int]:
    log = Path(work).parent / "writes.log"
    return [int(x) for x in log.read_text().split()] if log.exists() else []

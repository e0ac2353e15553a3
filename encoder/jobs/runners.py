"""The seam between a job and the engine that runs it: ``run(task, shards, engine=...)``.

A task is a picklable function ``task(work, shard) -> {"images": int, "skipped": int}`` that writes
its shard's part itself; the runner only calls it once per shard and draws the driver's progress
bar (shards and images done, rate, skipped). Nothing else knows which engine runs.

* ``"local"`` (the default): a process pool of this machine (``workers`` processes, started fresh, so a
  script calling :func:`run` guards its top level with ``if __name__ == "__main__"``; ``workers=1`` runs
  the tasks in this process). A task whose
  process dies fails the run; rerunning the command redoes only the shards without a part.
* ``"ray"``: one Ray task per shard (``max_retries``: Ray reruns a task whose worker or node died);
  ``address`` joins a running cluster (``"auto"`` or ``HOST:PORT``), None starts a local Ray of
  ``workers`` CPUs on 127.0.0.1 and stops it after. There is no queue, scheduler or retry loop here.

Example::

    >>> run(hash_shard, "runs/job", [0, 1, 2], engine="ray", workers=2)   # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from encoder.data import process_context

ENGINES = ("local", "ray")
MAX_RETRIES = 3  # Ray's default for tasks, written down: a shard survives three dead workers


def _bar(total: int, progress: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="shards", unit="shard", disable=not progress, file=sys.stderr)


def _tick(bar, totals: dict[str, int], result: dict[str, int]) -> None:
    for key in totals:
        totals[key] += int(result.get(key, 0))
    rate = totals["images"] / max(bar.format_dict["elapsed"], 1e-9)
    shown = f"{rate:.0f}" if rate >= 10 else f"{rate:.2g}"  # a slow start reads 0.5, not 0
    bar.set_postfix(images=totals["images"], skipped=totals["skipped"], rate=f"{shown} img/s", refresh=False)
    bar.update(1)


def _run_local(task: Callable, work: str, shards: list[int], workers: int, bar, totals) -> None:
    if workers == 1:  # no pool to start; also lets a memory:// source (this process's) be read
        for s in shards:
            _tick(bar, totals, task(work, s))
        return
    with ProcessPoolExecutor(workers, mp_context=process_context(fresh=True)) as pool:
        futures = [pool.submit(task, work, s) for s in shards]
        for f in as_completed(futures):
            _tick(bar, totals, f.result())


def ray_module():
    """``ray``, or ImportError saying how to install it."""
    try:
        return importlib.import_module("ray")
    except ImportError as e:
        raise ImportError("--engine ray needs Ray: pip install '.[ray]' (or -r requirements-ray.txt)") from e


def _start_ray(ray, address: str | None, workers: int) -> bool:
    """Connect to ``address`` or start a local Ray; True when this call started it (and must stop it)."""
    if ray.is_initialized():
        return False
    if address is not None:
        ray.init(address=address, log_to_driver=False)
        return False
    # workers import this package: a local Ray sees it where this process does (a cluster installs it)
    here = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
    ray.init(
        num_cpus=workers,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",  # a local run listens on loopback only
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )
    return True


def _run_ray(task: Callable, work: str, shards: list[int], workers: int, address: str | None, bar, totals) -> None:
    ray = ray_module()
    started = _start_ray(ray, address, workers)
    try:
        remote = ray.remote(num_cpus=1, max_retries=MAX_RETRIES)(task)
        pending = [remote.remote(work, s) for s in shards]
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            _tick(bar, totals, ray.get(ready[0]))
    finally:
        if started:
            ray.shutdown()


def run(
    task: Callable,
    work: str | os.PathLike,
    shards: Iterable[int],
    *,
    engine: str = "local",
    workers: int = 0,
    address: str | None = None,
    progress: bool = True,
) -> dict[str, int]:
    """Run ``task(work, shard)`` once per shard on ``engine``; totals ``{"images", "skipped"}`` of their results.

    ``workers``: processes (local) or CPUs of a local Ray (0: this machine's cores); ``address``: a
    running Ray cluster (engine ``"ray"`` only).
    """
    if engine not in ENGINES:
        raise ValueError(f"engine={engine!r} must be one of {ENGINES}")
    if address is not None and engine != "ray":
        raise ValueError(f"address={address!r} applies to engine 'ray', not {engine!r}")
    if workers < 0:
        raise ValueError(f"workers={workers} must be >= 0")
    shards = list(shards)
    workers = workers or os.cpu_count() or 1
    totals = {"images": 0, "skipped": 0}
    if not shards:
        return totals
    with _bar(len(shards), progress) as bar:
        if engine == "ray":
            _run_ray(task, str(work), shards, workers, address, bar, totals)
        else:
            _run_local(task, str(work), shards, min(workers, len(shards)), bar, totals)
    return totals

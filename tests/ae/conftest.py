"""Fixtures of the autoencoder tests: a small labelled folder, one real tiny training run,
and helpers to run ``train.py`` in a subprocess (handed out as fixtures, since test files
here are not importable modules)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def _run(*args, cwd=ROOT, timeout=300, check=True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    p = subprocess.run(
        [sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )
    if check and p.returncode != 0:
        raise AssertionError(f"{args} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def _make_folder(root: Path, n_per_class: int = 12, classes=("circle", "square", "stripe"), size=40) -> Path:
    """Small synthetic labelled folder: distinct shapes per class, random position/size."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            cx, cy, r = rng.integers(10, size - 10, 2).tolist() + [int(rng.integers(5, 10))]
            if c == "circle":
                im = ((xx - cx) ** 2 + (yy - cy) ** 2 < r * r) * 230
            elif c == "square":
                im = ((abs(xx - cx) < r) & (abs(yy - cy) < r)) * 230
            else:
                im = ((xx // max(2, r // 2)) % 2) * 200
            im = np.clip(im + rng.normal(0, 8, im.shape), 0, 255).astype(np.uint8)
            Image.fromarray(im, "L").save(root / c / f"{i:03d}.png")
    return root


def _ckpt_of(run_dir: Path, name: str = "last.ckpt") -> Path:
    found = sorted(run_dir.rglob(name))
    assert found, f"no {name} under {run_dir}"
    return found[-1]


@pytest.fixture(scope="session")
def run() -> Callable[..., subprocess.CompletedProcess]:
    """``run("train.py", "fit", ...)``: a Python subprocess in the repository root; raises on failure
    unless ``check=False``."""
    return _run


@pytest.fixture(scope="session")
def make_folder() -> Callable[..., Path]:
    """``make_folder(root, n_per_class=12)``: 3 classes of synthetic 40x40 grey shapes."""
    return _make_folder


@pytest.fixture(scope="session")
def ckpt_of() -> Callable[..., Path]:
    """``ckpt_of(run_dir, "last.ckpt")``: the newest checkpoint of that name under a run folder."""
    return _ckpt_of


@pytest.fixture(scope="session")
def folder(tmp_path_factory) -> Path:
    return _make_folder(tmp_path_factory.mktemp("imgs") / "data")


@pytest.fixture(scope="session")
def trained(folder, tmp_path_factory) -> Path:
    """A real (tiny) run of `train.py fit` with the smoke config; returns its run folder."""
    out = tmp_path_factory.mktemp("run")
    _run(
        "train.py",
        "fit",
        "--config",
        "configs/smoke.yaml",
        "--data.root",
        folder,
        "--trainer.default_root_dir",
        out,
        "--trainer.logger.init_args.save_dir",
        out,
        "--trainer.max_epochs",
        2,
        "--data.limit",
        "null",
        "--trainer.enable_progress_bar",
        "false",
    )
    return out

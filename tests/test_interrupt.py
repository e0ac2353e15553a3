"""Killing a write half way leaves the previous index / codes / checkpoint intact and loadable.

A real ``search.py`` process is killed with SIGKILL (no cleanup handlers run, as with a power
cut or the OOM killer) at a chosen point of its write: half way through a file of the new
index, or with every new file written but not yet swapped in. Single-file writers
(``save_npy``, ``save_torch``) are killed half way through their file the same way.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from encoder import atomic
from encoder.search.index import Index

REPO = Path(__file__).resolve().parents[1]


def photos(folder: Path, seeds, size=(64, 48)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for s in seeds:
        rng = np.random.default_rng(s)
        im = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize(size, Image.Resampling.BICUBIC)
        im.save(folder / f"img{s}.png")
        out.append(folder / f"img{s}.png")
    return out


def python(code: str, *args: str, wait: bool = True):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-c", textwrap.dedent(code), *args]
    if not wait:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def search(*args: str) -> subprocess.CompletedProcess:
    return python("import sys, search; sys.exit(search.main(sys.argv[1:]))", *args)


# search.py with one write hook that blocks (so the test can SIGKILL it there):
#   partial: the new index.faiss is half written
#   unswapped: every file of the new index is written; the folder swap has not happened
BLOCKING_SEARCH = """
import os, sys, time, faiss
stage = sys.argv[1]
if stage == "partial":
    real_write = faiss.write_index_binary
    def write_index_binary(index, path):
        real_write(index, path)
        os.truncate(path, os.path.getsize(path) // 2)
        time.sleep(120)
    faiss.write_index_binary = write_index_binary
else:
    real_fsync = os.fsync
    def fsync(fd):
        # index.faiss is the last file written; atomic_dir then fsyncs each new file, then swaps
        real_fsync(fd)
        if os.path.exists(os.path.join(os.path.dirname(os.readlink(f"/proc/self/fd/{fd}")), "index.faiss")):
            time.sleep(120)
    os.fsync = fsync
import search
sys.exit(search.main(sys.argv[2:]))
"""


def kill_when(proc: subprocess.Popen, ready, timeout: float = 60.0) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` is true (fails if it exits first)."""
    t0 = time.monotonic()
    try:
        while not ready():
            assert proc.poll() is None, f"exited before the kill point:\n{proc.communicate()}"
            assert time.monotonic() - t0 < timeout, "kill point never reached"
            time.sleep(0.02)
        time.sleep(0.1)  # let it settle inside the blocking hook
    finally:
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
    assert "Traceback" not in err, err
    assert proc.returncode == -signal.SIGKILL


def stray(parent: Path, name: str) -> list[Path]:
    return sorted(parent.glob(f".{name}.*"))


def assert_index_is(idx_dir: Path, ids: list[str], hashes: np.ndarray, query: Path) -> None:
    idx = Index.load(idx_dir)
    assert idx.ids == ids
    np.testing.assert_array_equal(idx.vectors, hashes)
    p = search("query", str(idx_dir), str(query), "-k", "1", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)[0]["neighbours"][0]["id"] == Path(query).name


@pytest.fixture()
def old_index(tmp_path):
    imgs = photos(tmp_path / "imgs", [1, 2, 3])
    idx = tmp_path / "idx"
    p = search("index", str(tmp_path / "imgs"), "-o", str(idx))
    assert p.returncode == 0, p.stderr
    old = Index.load(idx)
    return idx, list(old.ids), old.vectors.copy(), imgs


@pytest.mark.parametrize("stage", ["partial", "unswapped"])
@pytest.mark.parametrize("cmd", ["index", "add"])
def test_sigkill_mid_write_keeps_previous_index(tmp_path, old_index, cmd, stage):
    idx, ids, hashes, imgs = old_index
    photos(tmp_path / "imgs", [4, 5])  # more images: the new index would differ
    args = (
        ["index", str(tmp_path / "imgs"), "-o", str(idx)]
        if cmd == "index"
        else ["add", str(idx), str(tmp_path / "imgs" / "img4.png"), str(tmp_path / "imgs" / "img5.png")]
    )
    proc = python(BLOCKING_SEARCH, stage, *args, wait=False)

    def ready() -> bool:
        tmps = [d for d in stray(tmp_path, "idx") if d.suffix == ".tmp"]
        want = {
            "partial": ["index.faiss"],
            "unswapped": ["codes.npy", "hashes.npy", "ids.json", "index.faiss", "meta.json"],
        }[stage]
        return any(sum((d / f).exists() for f in want) >= (1 if stage == "partial" else 4) for d in tmps)

    kill_when(proc, ready)
    assert stray(tmp_path, "idx"), "the kill should have left the unfinished temp folder behind"
    assert_index_is(idx, ids, hashes, imgs[0])
    # the next run is not confused by the leftover temp folder, and replaces the index
    p = search(*args)
    assert p.returncode == 0, p.stderr
    assert len(Index.load(idx)) == 5


def test_exception_mid_write_keeps_previous_index(tmp_path, old_index, monkeypatch):
    """In-process: a failure after some files of the new index are written (disk full, bug)."""
    idx, ids, hashes, imgs = old_index
    new = Index.load(idx)
    new.add(np.zeros((1, 8), np.uint8), ["zeros.png"])

    def fail(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("faiss.write_index_binary", fail)
    with pytest.raises(OSError, match="No space"):
        new.save(idx)
    assert_index_is(idx, ids, hashes, imgs[0])
    assert stray(tmp_path, "idx") == []  # an exception (unlike SIGKILL) cleans up its temp folder


def test_atomic_dir_swap_is_complete_at_every_instant(tmp_path):
    """SIGKILL just before the swap, at any rename during it, or just after: ``path`` is whole."""
    code = """
    import os, signal, sys
    from pathlib import Path
    from encoder import atomic
    target, when = Path(sys.argv[1]), sys.argv[2]
    die = lambda: os.kill(os.getpid(), signal.SIGKILL)
    real_fsync_dir, real_replace = atomic._fsync_dir, os.replace
    def fsync_dir(d):  # called right after the swap
        real_fsync_dir(d)
        if when == "after":
            die()
    def replace(a, b):  # a two-step swap (old aside, new in) would leave no folder at target here
        real_replace(a, b)
        if when == "rename":
            die()
    atomic._fsync_dir, os.replace = fsync_dir, replace
    with atomic.atomic_dir(target) as tmp:
        for i in range(50):
            (tmp / f"f{i}").write_text("new")
        if when == "before":
            die()
    """
    for when, want in [("before", ["old"]), ("rename", ["old", "new"]), ("after", ["new"])]:
        d = tmp_path / when
        d.mkdir()
        for i in range(50):
            (d / f"f{i}").write_text("old")
        p = python(code, str(d), when)
        assert p.returncode in (0, -signal.SIGKILL), p.stderr
        contents = sorted(f.read_text() for f in d.iterdir()) if d.is_dir() else []
        assert any(contents == [w] * 50 for w in want), f"{when}: {contents[:3]}... ({len(contents)} files)"


def test_atomic_dir_without_rename_exchange(tmp_path, monkeypatch):
    """Where renameat2 is missing (non-Linux, old kernels, some file systems): two renames, same result."""
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    d = tmp_path / "idx"
    for text in ("old", "new"):
        with atomic.atomic_dir(d) as t:
            (t / "f").write_text(text)
    assert (d / "f").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["idx"]


KILL_HALF_WAY = """
import os, signal, sys
import numpy as np
from encoder import atomic
kind, target = sys.argv[1], sys.argv[2]

def half_then_die(path_or_file):
    # what a kill half way through a long write leaves: the temp file holds part of the data
    f = path_or_file if hasattr(path_or_file, "write") else open(path_or_file, "wb")
    f.write(DATA[: len(DATA) // 2]); f.flush(); os.fsync(f.fileno())
    os.kill(os.getpid(), signal.SIGKILL)

if kind == "npy":
    import io
    buf = io.BytesIO(); np.save(buf, np.full((1000, 128), 7, np.float32)); DATA = buf.getvalue()
    atomic.np.save = lambda f, arr, allow_pickle=False: half_then_die(f)
    atomic.save_npy(target, np.full((1000, 128), 7, np.float32))
else:
    import io, torch
    buf = io.BytesIO(); torch.save({"w": torch.full((1000, 128), 7.0)}, buf); DATA = buf.getvalue()
    torch.save = lambda obj, f: half_then_die(f)
    atomic.save_torch(target, {"w": torch.full((1000, 128), 7.0)})
"""


def test_sigkill_half_way_through_codes_npy_keeps_previous(tmp_path):
    target = tmp_path / "codes.npy"
    old = np.arange(256, dtype=np.float32).reshape(2, 128)
    atomic.save_npy(target, old)
    p = python(KILL_HALF_WAY, "npy", str(target))
    assert p.returncode == -signal.SIGKILL, p.stderr
    np.testing.assert_array_equal(np.load(target, allow_pickle=False), old)
    (left,) = stray(tmp_path, "codes.npy")  # the half-written temp file, never under the real name
    with pytest.raises(ValueError):
        np.load(left, allow_pickle=False)


def test_sigkill_half_way_through_checkpoint_keeps_previous(tmp_path):
    import torch

    target = tmp_path / "encoder.pt"
    atomic.save_torch(target, {"w": torch.ones(2, 128)})
    p = python(KILL_HALF_WAY, "torch", str(target))
    assert p.returncode == -signal.SIGKILL, p.stderr
    got = torch.load(target, weights_only=True)
    assert torch.equal(got["w"], torch.ones(2, 128))
    (left,) = stray(tmp_path, "encoder.pt")
    with pytest.raises(RuntimeError, match="zip archive"):
        torch.load(left, weights_only=True)


def test_atomic_writes_get_ordinary_permissions(tmp_path):
    """The temp names come from mkstemp/mkdtemp (0600/0700); the results must not stay private."""
    old = os.umask(0o022)
    try:
        atomic.write_text(tmp_path / "a.json", "{}")
        with atomic.atomic_dir(tmp_path / "idx") as d:
            (d / "f").write_text("x")
            atomic.save_npy(d / "codes.npy", np.zeros(2, np.float32))
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "idx").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "idx" / "codes.npy").stat().st_mode & 0o777 == 0o644


# A training run whose checkpoint write for epoch 1 is killed half way (SIGKILL).
TRAIN_KILLED_SAVING_EPOCH_1 = """
import os, signal, sys, torch
real_save = torch.save
def save(obj, f, *args, **kwargs):
    real_save(obj, f, *args, **kwargs)
    if isinstance(obj, dict) and obj.get("epoch") == 1:
        os.truncate(f, os.path.getsize(f) // 2)
        os.kill(os.getpid(), signal.SIGKILL)
torch.save = save
sys.argv = ["train.py", *sys.argv[1:]]
from encoder.cli.train import main
main()
"""


def test_sigkill_while_saving_a_training_checkpoint_keeps_the_previous_one(tmp_path):
    import torch

    from encoder.ae.inference import load_encoder

    photos(tmp_path / "imgs", range(12))
    run_dir = tmp_path / "run"
    args = [
        "fit",
        "--config",
        "configs/smoke.yaml",
        "--data.root",
        str(tmp_path / "imgs"),
        "--trainer.default_root_dir",
        str(run_dir),
        "--trainer.logger.init_args.save_dir",
        str(run_dir),
        "--trainer.max_epochs",
        "2",
        "--early_stopping.patience",
        "5",
        "--trainer.enable_progress_bar",
        "false",
    ]
    p = python(TRAIN_KILLED_SAVING_EPOCH_1, *args)
    assert p.returncode == -signal.SIGKILL, p.stderr[-3000:]
    (last,) = run_dir.rglob("last.ckpt")
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == 0  # epoch 0's, whole
    assert load_encoder(last, device="cpu").code_dim == 128
    left = [f for f in last.parent.iterdir() if f.name.endswith(".tmp")]
    assert left, "the kill should have left the half-written temp file"
    # and training resumes from it
    p = python(
        "import sys; sys.argv = ['train.py', *sys.argv[1:]]\nfrom encoder.cli.train import main\nmain()",
        *args,
        "--ckpt_path",
        str(last),
    )
    assert p.returncode == 0, p.stderr[-3000:]
    newest = max(run_dir.rglob("last.ckpt"), key=lambda f: f.stat().st_mtime)
    assert torch.load(newest, map_location="cpu", weights_only=True)["epoch"] == 1

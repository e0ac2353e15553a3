"""Code shards: per-rank writer, merge (order, sampler padding), and 2-process DDP encoding end to end."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import search
from encoder.ae.shards import merge_shards, write_shard
from helpers import class_folder, tiny_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def _batch(rows, valid=None, d=4):
    rows = torch.tensor(rows)
    return {"codes": rows[:, None].float().repeat(1, d) / 10, "index": rows,
            "valid": torch.ones(len(rows), dtype=torch.bool) if valid is None else torch.tensor(valid)}


def test_merge_sorts_rows_and_drops_padding_duplicates(tmp_path):
    # DistributedSampler, 2 ranks, 7 items: rank 0 gets 0,2,4,6; rank 1 gets 1,3,5 + 0 again (padding)
    write_shard(tmp_path, 0, [_batch([0, 2]), _batch([4, 6], valid=[True, False])])
    write_shard(tmp_path, 1, [_batch([1, 3, 5, 0])])
    assert sorted(p.name for p in (tmp_path / "rank_00000").iterdir()) == ["codes.npy", "invalid.npy", "rows.npy"]
    codes, rows, invalid = merge_shards(tmp_path)
    assert rows.tolist() == [0, 1, 2, 3, 4, 5] and invalid.tolist() == [6]
    np.testing.assert_allclose(codes[:, 0], rows / 10)
    assert codes.dtype == np.float32 and codes.shape == (6, 4)


def test_merge_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no code shards"):
        merge_shards(tmp_path)
    write_shard(tmp_path, 0, [_batch([0, 1])])
    np.save(tmp_path / "rank_00000" / "rows.npy", np.arange(3))
    with pytest.raises(ValueError, match="rank_00000"):
        merge_shards(tmp_path)
    (tmp_path / "rank_00000" / "codes.npy").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="unreadable"):
        merge_shards(tmp_path)


def test_ddp_two_cpu_processes_equal_single_process(tmp_path):
    folder = class_folder(tmp_path / "imgs", per_class=14)  # 42 images: odd split, padded by the sampler
    (folder / "rings" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    ckpt = tiny_checkpoint(tmp_path / "model.pt")
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    assert search.main(["index", str(folder), "--method", "ae", "--checkpoint", str(ckpt), "-o", str(single)]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, str(ROOT / "search.py"), "index", str(folder), "--method", "ae",
                        "--checkpoint", str(ckpt), "-o", str(ddp), "--devices", "2", "--strategy", "ddp",
                        "--accelerator", "cpu", "--batch-size", "8", "--shard-dir", str(tmp_path / "shards")],
                       capture_output=True, text=True, env=env, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Starting with 2 processes" in r.stderr + r.stdout and "broken.png" in r.stderr
    shards = sorted(p.name for p in (tmp_path / "shards").iterdir())
    assert shards == ["rank_00000", "rank_00001"]
    assert json.loads((ddp / "ids.json").read_text()) == json.loads((single / "ids.json").read_text())
    np.testing.assert_allclose(np.load(ddp / "codes.npy"), np.load(single / "codes.npy"), rtol=1e-4, atol=1e-5)
    assert json.loads((ddp / "meta.json").read_text())["version"] == json.loads((single / "meta.json").read_text())["version"]

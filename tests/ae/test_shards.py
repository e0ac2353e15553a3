"""Code shards: per-rank writer, merge (order, sampler padding), and 2-process DDP encoding end to end."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import class_folder, tiny_checkpoint

import search
from encoder.ae.inference import encode_paths, load_encoder
from encoder.ae.shards import PredictedCodes, merge_shards, predict_codes, write_shard
from encoder.data import decode_gray_u8

ROOT = Path(__file__).resolve().parents[2]


def _batch(rows, valid=None, d=4):
    valid = [True] * len(rows) if valid is None else valid
    skipped = [(r, f"reason {r}") for r, ok in zip(rows, valid) if not ok]
    rows = torch.tensor(rows)
    return {
        "codes": rows[:, None].float().repeat(1, d) / 10,
        "index": rows,
        "valid": torch.tensor(valid),
        "skipped": skipped,
    }


def test_merge_sorts_rows_and_drops_padding_duplicates(tmp_path):
    # DistributedSampler, 2 ranks, 7 items: rank 0 gets 0,2,4,6; rank 1 gets 1,3,5 + 0 again (padding)
    write_shard(tmp_path, 0, [_batch([0, 2]), _batch([4, 6], valid=[True, False])])
    write_shard(tmp_path, 1, [_batch([1, 3, 5, 6], valid=[True, True, True, False])])  # 6 padded, unreadable
    assert sorted(p.name for p in (tmp_path / "rank_00000").iterdir()) == ["codes.npy", "rows.npy", "skipped.json"]
    assert json.loads((tmp_path / "rank_00000" / "skipped.json").read_text()) == [[6, "reason 6"]]  # plain JSON
    codes, rows, skipped = merge_shards(tmp_path)
    assert rows.tolist() == [0, 1, 2, 3, 4, 5] and skipped == [(6, "reason 6")]
    np.testing.assert_allclose(codes[:, 0], rows / 10)
    assert codes.dtype == np.float32 and codes.shape == (6, 4)
    write_shard(tmp_path, 1, [_batch([1, 3, 5, 0])])  # padding with a readable row
    assert merge_shards(tmp_path).rows.tolist() == [0, 1, 2, 3, 4, 5]


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
    write_shard(tmp_path, 0, [_batch([0, 1])])
    (tmp_path / "rank_00000" / "skipped.json").write_text('{"row": 1}')
    with pytest.raises(ValueError, match=r"rank_00000.*\[row, reason\]"):
        merge_shards(tmp_path)


def test_predict_codes_returns_unreadable_rows_with_their_reasons(tmp_path):
    # the reason is read in the DataLoader worker and comes back through the shards
    folder = class_folder(tmp_path / "imgs", per_class=3)
    paths = sorted(folder.rglob("*.png"))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    paths.insert(4, tmp_path / "broken.png")
    paths.append(tmp_path / "missing.png")
    ckpt = tiny_checkpoint(tmp_path / "model.pt")
    res = predict_codes(ckpt, paths, tmp_path / "shards", accelerator="cpu", batch_size=4, num_workers=1)
    assert isinstance(res, PredictedCodes)
    assert res.codes.shape == (9, 128) and res.codes.dtype == np.float32
    assert res.rows.tolist() == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    assert [row for row, _ in res.skipped] == [4, 10]
    reasons = dict(res.skipped)
    assert reasons[4] == decode_gray_u8((str(paths[4]), 64))[1] and reasons[4]
    assert reasons[10] == decode_gray_u8((str(paths[10]), 64))[1] and reasons[10]
    enc = load_encoder(ckpt, "cpu")
    want, _ = encode_paths(enc, [paths[i] for i in res.rows])
    np.testing.assert_allclose(res.codes, want, rtol=1e-4, atol=1e-5)


def test_ddp_two_cpu_processes_equal_single_process(tmp_path):
    folder = class_folder(tmp_path / "imgs", per_class=14)  # 42 images: odd split, padded by the sampler
    (folder / "rings" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    ckpt = tiny_checkpoint(tmp_path / "model.pt")
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    assert search.main(["index", str(folder), "--method", "ae", "--checkpoint", str(ckpt), "-o", str(single)]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "search.py"),
            "index",
            str(folder),
            "--method",
            "ae",
            "--checkpoint",
            str(ckpt),
            "-o",
            str(ddp),
            "--devices",
            "2",
            "--strategy",
            "ddp",
            "--accelerator",
            "cpu",
            "--batch-size",
            "8",
            "--shard-dir",
            str(tmp_path / "shards"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Starting with 2 processes" in r.stderr + r.stdout and "broken.png" in r.stderr
    shards = sorted(p.name for p in (tmp_path / "shards").iterdir())
    assert shards == ["rank_00000", "rank_00001"]
    assert json.loads((ddp / "ids.json").read_text()) == json.loads((single / "ids.json").read_text())
    np.testing.assert_allclose(np.load(ddp / "codes.npy"), np.load(single / "codes.npy"), rtol=1e-4, atol=1e-5)
    assert (
        json.loads((ddp / "meta.json").read_text())["version"]
        == json.loads((single / "meta.json").read_text())["version"]
    )

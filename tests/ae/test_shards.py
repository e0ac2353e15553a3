"""Code parts: writer named by rows, merge, resume after an interruption, refusal of another run's parts,
and 2-process DDP encoding end to end."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import class_folder, tiny_checkpoint

import search
from encoder.ae import shards
from encoder.ae.inference import encode_paths, encoder_from_model, fingerprint, load_encoder
from encoder.ae.model import ConvAutoencoder
from encoder.ae.shards import (
    PredictedCodes,
    PredictModule,
    RunKey,
    default_group_size,
    merge_shards,
    part_name,
    predict_codes,
    write_part,
)
from encoder.data import decode_gray_u8, image_paths

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


KEY = RunKey("0123456789abcdef", "fedcba9876543210", 8, 4)


def test_parts_are_named_by_rows_and_merge_in_row_order(tmp_path):
    write_part(tmp_path, KEY, [_batch([4, 5]), _batch([6, 7], valid=[True, False])])
    write_part(tmp_path, KEY, [_batch([0, 1, 2, 3])])
    write_part(tmp_path, KEY, [_batch([0, 1, 2, 3])])  # a sampler-padded repeat rewrites the same part
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "part-000000000000-000000000004",
        "part-000000000004-000000000008",
    ]
    part = tmp_path / "part-000000000004-000000000008"
    assert sorted(p.name for p in part.iterdir()) == ["codes.npy", "part.json", "rows.npy"]
    meta = json.loads((part / "part.json").read_text())  # plain JSON
    assert meta == {"model": KEY.model, "files": KEY.files, "rows": [4, 8], "skipped": [[7, "reason 7"]]}
    codes, rows, skipped = merge_shards(tmp_path, KEY)
    assert rows.tolist() == [0, 1, 2, 3, 4, 5, 6] and skipped == [(7, "reason 7")]
    np.testing.assert_allclose(codes[:, 0], rows / 10)
    assert codes.dtype == np.float32 and codes.shape == (7, 4)
    with pytest.raises(ValueError, match="consecutive rows"):
        write_part(tmp_path, KEY, [_batch([0, 2])])


def test_merge_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no code parts"):
        merge_shards(tmp_path)
    part = write_part(tmp_path, KEY, [_batch([0, 1])])
    np.save(part / "rows.npy", np.arange(3))
    with pytest.raises(ValueError, match=part.name):
        merge_shards(tmp_path)
    (part / "codes.npy").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="unreadable"):
        merge_shards(tmp_path)
    part = write_part(tmp_path, KEY, [_batch([0, 1])])
    meta = json.loads((part / "part.json").read_text())
    (part / "part.json").write_text(json.dumps({**meta, "skipped": {"row": 1}}))
    with pytest.raises(ValueError, match=rf"{part.name}.*\[row, reason\]"):
        merge_shards(tmp_path)
    write_part(tmp_path, KEY._replace(model="another0model000"), [_batch([0, 1])])
    with pytest.raises(ValueError, match=rf"{part.name} was written by model another0model000"):
        merge_shards(tmp_path, KEY)


def _stamps(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.glob("part-*/*")}


def test_interrupted_run_resumes_without_redoing_finished_rows(tmp_path, monkeypatch):
    folder = class_folder(tmp_path / "imgs", per_class=4)
    paths = sorted(folder.rglob("*.png"))  # 12 images: 4 parts of 3 rows
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    paths.insert(5, tmp_path / "broken.png")  # 13 rows: parts 0-3, 3-6, 6-9, 9-12, 12-13
    ckpt = tiny_checkpoint(tmp_path / "model.pt")
    kw = dict(accelerator="cpu", batch_size=2, group_size=3)
    whole = predict_codes(ckpt, paths, tmp_path / "whole", **kw)
    real_write, calls = shards.write_part, []

    def dies_after_two(out, key, batches):
        if len(calls) == 2:
            raise RuntimeError("killed mid-run")
        calls.append(real_write(out, key, batches))
        return calls[-1]

    monkeypatch.setattr(shards, "write_part", dies_after_two)
    with pytest.raises(RuntimeError, match="killed mid-run"):
        predict_codes(ckpt, paths, tmp_path / "resumed", **kw)
    monkeypatch.setattr(shards, "write_part", real_write)
    parts = tmp_path / "resumed"
    assert sorted(p.name for p in parts.glob("part-*")) == [part_name(0, 3), part_name(3, 6)]
    before = _stamps(parts)
    decoded = []
    real_item = shards.GroupDataset.__getitem__
    monkeypatch.setattr(
        shards.GroupDataset, "__getitem__", lambda ds, i: decoded.append(ds.ranges[i]) or real_item(ds, i)
    )
    res = predict_codes(ckpt, paths, parts, **kw)
    assert decoded == [(6, 9), (9, 12), (12, 13)]  # the finished rows were not decoded again
    after = _stamps(parts)
    assert {k: after[k] for k in before} == before  # nor rewritten: same inodes, same mtimes
    assert res.rows.tolist() == whole.rows.tolist() and res.skipped == whole.skipped and res.skipped[0][0] == 5
    np.testing.assert_array_equal(res.codes, whole.codes)
    decoded.clear()
    again = predict_codes(ckpt, paths, parts, **kw)  # all done: nothing decoded, the same result
    assert decoded == [] and _stamps(parts) == after
    np.testing.assert_array_equal(again.codes, whole.codes)


def test_parts_of_another_model_or_file_list_are_refused(tmp_path):
    folder = class_folder(tmp_path / "imgs", per_class=2)
    paths = sorted(folder.rglob("*.png"))
    ckpt = tiny_checkpoint(tmp_path / "model.pt")
    torch.manual_seed(1)
    other = ConvAutoencoder(code_dim=128, width=4)
    kw = dict(accelerator="cpu", batch_size=2, group_size=2)
    predict_codes(ckpt, paths, tmp_path / "parts", **kw)
    manifest = tmp_path / "parts" / "manifest.json"
    with pytest.raises(ValueError, match=rf"code parts in {tmp_path / 'parts'} were written for .*another model"):
        predict_codes(other, paths, tmp_path / "parts", **kw)
    with pytest.raises(ValueError, match="another model, file list"):
        predict_codes(ckpt, paths[::-1], tmp_path / "parts", **kw)
    # a part of the other model dropped among this run's parts is named and refused
    predict_codes(other, paths, tmp_path / "other", **kw)
    foreign = tmp_path / "other" / part_name(2, 4)
    shutil.rmtree(tmp_path / "parts" / part_name(2, 4))
    shutil.copytree(foreign, tmp_path / "parts" / part_name(2, 4))
    with pytest.raises(ValueError, match=rf"code part .*{part_name(2, 4)} was written by model {fingerprint(other)}"):
        predict_codes(ckpt, paths, tmp_path / "parts", **kw)
    manifest.unlink()
    with pytest.raises(ValueError, match="have no manifest.json"):
        predict_codes(ckpt, paths, tmp_path / "parts", **kw)


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
    names = sorted(p.name for p in (tmp_path / "shards").iterdir())
    n = len(list(folder.rglob("*.png")))
    assert n == 43 and default_group_size(n) == 1  # 43 parts of one row: named by rows, not by rank
    assert names == sorted([part_name(i, i + 1) for i in range(n)] + ["manifest.json"])
    stamps = _stamps(tmp_path / "shards")
    one = predict_codes(ckpt, image_paths([folder]).paths, tmp_path / "shards", accelerator="cpu", devices=1)
    assert _stamps(tmp_path / "shards") == stamps  # one device reuses the parts that two wrote
    np.testing.assert_array_equal(one.codes, np.load(ddp / "codes.npy"))
    assert json.loads((ddp / "ids.json").read_text()) == json.loads((single / "ids.json").read_text())
    np.testing.assert_allclose(np.load(ddp / "codes.npy"), np.load(single / "codes.npy"), rtol=1e-4, atol=1e-5)
    assert (
        json.loads((ddp / "meta.json").read_text())["version"]
        == json.loads((single / "meta.json").read_text())["version"]
    )


def _search(*args, ddp: bool = True, timeout=300) -> subprocess.CompletedProcess:
    """``search.py ARGS`` in a subprocess of one thread, with ``--devices 2 --strategy ddp --accelerator cpu``
    when ``ddp`` (Lightning re-runs the command per rank)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(ROOT / "search.py"), *map(str, args)]
    cmd += ["--devices", "2", "--strategy", "ddp", "--accelerator", "cpu"] if ddp else []
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)


@pytest.mark.parametrize("config", ["configs/default.yaml", "configs/fashion_mnist.yaml"])
def test_ddp_codes_of_a_model_trained_with_each_shipped_config(config, tmp_path, run, make_folder, ckpt_of):
    # the shipped configs train with tone (two more code entries) and whitening: the whole model must travel
    folder = make_folder(tmp_path / "imgs", n_per_class=6)
    (folder / "circle" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = tmp_path / "run"
    tiny = ["--model.width", 4, "--data.batch_size", 6, "--trainer.max_epochs", 1, "--trainer.accelerator", "cpu"]
    tiny += ["--trainer.devices", 1, "--trainer.limit_train_batches", 2, "--trainer.limit_val_batches", 1]
    tiny += ["--trainer.default_root_dir", out, "--trainer.logger.init_args.save_dir", out]
    run("train.py", "fit", "--config", config, "--data.root", folder, *tiny, "--trainer.enable_progress_bar", "false")
    ckpt = ckpt_of(out)
    hp = torch.load(ckpt, map_location="cpu", weights_only=True)["hyper_parameters"]
    assert hp["tone"] is True and hp["width"] == 4  # as shipped, at tiny width
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    # one thread and one image a batch in both runs: the same float kernels on the same shapes (a rank's
    # last batch is shorter than the single process's), so codes of ~40 (whitened on 18 images) agree to 1e-6
    args = ("index", folder, "--method", "ae", "--checkpoint", ckpt, "--batch-size", 1)
    assert _search(*args, "-o", single, ddp=False).returncode == 0
    r = _search(*args, "-o", ddp)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Starting with 2 processes" in r.stderr + r.stdout and "broken.png" in r.stderr
    assert json.loads((ddp / "ids.json").read_text()) == json.loads((single / "ids.json").read_text())
    want = np.load(single / "codes.npy")
    assert want.shape == (18, 128)
    np.testing.assert_allclose(np.load(ddp / "codes.npy"), want, rtol=0, atol=1e-6)
    meta = [json.loads((d / "meta.json").read_text()) for d in (ddp, single)]
    assert meta[0]["version"] == meta[1]["version"]


def test_ddp_bad_checkpoint_is_one_line_without_traceback(tmp_path):
    folder = class_folder(tmp_path / "imgs", per_class=2)
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint at all")
    misfit = tmp_path / "misfit.pt"  # a tone model's weights under a config without tone: sizes disagree
    torch.manual_seed(0)
    model = ConvAutoencoder(code_dim=128, width=4, tone=True)
    torch.save({"config": {**model.config, "tone": False}, "state_dict": model.state_dict()}, misfit)
    for ckpt, why in ((garbage, "not a torch checkpoint"), (misfit, "weights do not fit")):
        r = _search("index", folder, "--method", "ae", "--checkpoint", ckpt, "-o", tmp_path / "idx", timeout=120)
        assert r.returncode == 2, r.stderr[-3000:]
        assert "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr[-3000:]
        assert r.stderr.startswith(f"error: checkpoint {ckpt}") or r.stderr.startswith("error: cannot load"), r.stderr
        assert str(ckpt) in r.stderr and why in r.stderr
    assert not (tmp_path / "idx").exists()


def test_predict_step_codes_are_the_encoders_and_reasons_come_back():
    torch.manual_seed(0)
    enc = encoder_from_model(ConvAutoencoder(code_dim=16, width=4, tone=True), device="cpu")
    images = torch.randint(0, 256, (3, 1, 64, 64), dtype=torch.uint8)
    batch = (images, torch.tensor([4, 5, 6]), torch.tensor([True, False, True]), ["", "cannot identify image file", ""])
    with torch.inference_mode():
        out = PredictModule(enc.model).predict_step(batch, 0)
    assert out["index"].tolist() == [4, 5, 6] and out["valid"].tolist() == [True, False, True]
    assert out["skipped"] == [(5, "cannot identify image file")]
    np.testing.assert_array_equal(out["codes"].numpy(), enc.encode(images[:, 0].numpy()))

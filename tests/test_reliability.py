"""Every CLI over one folder mixing good images with broken and hostile files (tests/corpus.py).

Each run is a real subprocess (what a user types), so a crash is a traceback on stderr and a
non-zero exit, not a caught exception. For each CLI the test counts the files it tried, the
good ones it produced correct output for, the bad ones it reported by name, and the crashes,
and asserts on those counts. ``pytest -s tests/test_reliability.py`` prints the table.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from corpus import Corpus, make_corpus, with_skipped_lists
from PIL import Image

from encoder.search.index import Index

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Row:
    cli: str
    tried: int  # files the command was pointed at (good + bad)
    produced: int  # good files with correct output
    reported: int  # bad files named on stderr
    crashed: int  # runs that ended in a traceback or a non-zero exit


ROWS: list[Row] = []


@pytest.fixture(scope="module", autouse=True)
def table():
    yield
    print("\n\nreliability over the bad-input corpus")
    print(f"{'cli':<28}{'tried':>7}{'produced':>10}{'reported':>10}{'crashed':>9}")
    for r in ROWS:
        print(f"{r.cli:<28}{r.tried:>7}{r.produced:>10}{r.reported:>10}{r.crashed:>9}")


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def crashed(p: subprocess.CompletedProcess) -> int:
    return int(p.returncode != 0 or "Traceback" in p.stderr)


def reported(p: subprocess.CompletedProcess, corpus: Corpus) -> list[str]:
    """Bad files named on a ``skipped <path>: <reason>`` line of stderr or of the skipped list it points to."""
    lines = [ln for ln in with_skipped_lists(p.stderr).splitlines() if ln.startswith("skipped ")]
    return [b for b in corpus.bad if any(str(corpus.root / b) in ln for ln in lines)]


def record(cli: str, p: subprocess.CompletedProcess, corpus: Corpus, produced: int, tried: int | None = None) -> Row:
    row = Row(
        cli,
        len(corpus.good) + len(corpus.bad) if tried is None else tried,
        produced,
        len(reported(p, corpus)),
        crashed(p),
    )
    ROWS.append(row)
    return row


def expect_all(row: Row, corpus: Corpus, p: subprocess.CompletedProcess, scanned: bool = True) -> None:
    """No crash, every bad file reported, every good one done; a folder scan also names what it passed over."""
    detail = f"\n--- stdout ---\n{p.stdout[-2000:]}\n--- stderr ---\n{p.stderr[-3000:]}"
    assert row.crashed == 0, detail
    assert row.reported == len(corpus.bad), detail
    assert row.produced == len(corpus.good), detail
    if scanned:  # README.txt and the symlink loop are not images: skipped, but by name
        named = with_skipped_lists(p.stderr)
        assert all(f"skipped {corpus.root / o}:" in named for o in corpus.other), detail


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Corpus:
    c = make_corpus(tmp_path_factory.mktemp("mixed") / "corpus", n_photos=4)
    # a near-duplicate, so dedup has one group it must find
    (c.root / "dup").mkdir()
    Image.open(c.root / "photos/p0.jpg").resize((48, 40)).save(c.root / "dup/p0_small.png")
    c.good.append("dup/p0_small.png")
    if os.geteuid() == 0:
        # root reads a mode-000 file: it must be processed like any good image, not skipped
        assert (c.root / "perm/locked.png").stat().st_mode & 0o777 == 0
        assert "perm/locked.png" in c.good
    else:
        assert "perm/locked.png" in c.bad
    return c


@pytest.fixture(scope="module")
def phash_index(corpus, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    idx = tmp_path_factory.mktemp("idx") / "idx"
    return idx, run("search.py", "index", str(corpus.root), "--method", "phash", "-o", str(idx))


def test_quantize_folder(corpus, tmp_path):
    out = tmp_path / "q"
    p = run("quantize.py", str(corpus.root), "-k", "8", "--json", "-o", str(out))
    rows = json.loads(p.stdout) if p.returncode == 0 else []
    ok = 0
    for g in corpus.good:
        png = out / (Path(g).with_suffix("").as_posix().replace("/", "__") + "_k8.png")
        mine = [r for r in rows if r["file"] == g]
        if png.is_file() and len(mine) == 1:
            im, src = Image.open(png), Image.open(corpus.root / g)
            # an indexed PNG of the good image's size (EXIF rotation may swap sides), <= 8 colours
            ok += im.mode == "P" and sorted(im.size) == sorted(src.size) and mine[0]["colors_after"] <= 8
    assert not [r for r in rows if r["file"] in corpus.bad]
    expect_all(record("quantize.py <folder>", p, corpus, ok), corpus, p)


def test_index(corpus, phash_index):
    idx, p = phash_index
    ids = json.loads((idx / "ids.json").read_text()) if p.returncode == 0 else []
    assert sorted(ids) == sorted(corpus.good)
    hashes = np.load(idx / "hashes.npy", allow_pickle=False)
    assert hashes.shape == (len(corpus.good), 8)
    expect_all(record("search.py index", p, corpus, len(set(ids) & set(corpus.good))), corpus, p)


def test_query_folder_finds_each_good_image_itself(corpus, phash_index):
    idx, _ = phash_index
    k = 3
    p = run("search.py", "query", str(idx), str(corpus.root), "-k", str(k), "--json")
    results = json.loads(p.stdout) if p.returncode == 0 else []
    ok = 0
    for res in results:
        me = Path(res["query"]).relative_to(corpus.root).as_posix()
        nb = res["neighbours"]
        # itself at distance 0, at rank 1 or tied with rank 1 (flat images share a hash)
        ok += len(nb) == k and nb[0]["distance"] == 0 and any(n["id"] == me and n["distance"] == 0 for n in nb)
    assert sorted(Path(r["query"]).relative_to(corpus.root).as_posix() for r in results) == sorted(corpus.good)
    expect_all(record("search.py query <folder>", p, corpus, ok), corpus, p)


def test_query_mirror_of_each_bad_file_is_reported(corpus, phash_index):
    """Bad files given one by one as queries (with --mirror) are reported, good ones answered."""
    idx, _ = phash_index
    files = [str(corpus.root / f) for f in corpus.bad + corpus.good]
    p = run("search.py", "query", str(idx), *files, "-k", "1", "--json", "--mirror")
    results = json.loads(p.stdout) if p.returncode == 0 else []
    ok = sum(r["neighbours"][0]["distance"] == 0 for r in results)
    assert len(results) == len(corpus.good)
    expect_all(record("search.py query --mirror", p, corpus, ok), corpus, p, scanned=False)


def test_add_folder_to_small_index(corpus, tmp_path):
    idx = tmp_path / "idx"
    first = [str(corpus.root / g) for g in ("photos/p1.jpg", "odd/cmyk.jpg", "odd/alpha.png")]
    p0 = run("search.py", "index", *first, "-o", str(idx))
    assert p0.returncode == 0, p0.stderr
    assert Path(json.loads((idx / "meta.json").read_text())["root"]) == corpus.root
    before = dict(zip(json.loads((idx / "ids.json").read_text()), np.load(idx / "hashes.npy")))
    p = run("search.py", "add", str(idx), str(corpus.root))
    ids = json.loads((idx / "ids.json").read_text())
    after = np.load(idx / "hashes.npy")
    # the 3 first ids are re-added (replaced) with identical hashes; nothing else is lost or duplicated
    assert sorted(ids) == sorted(corpus.good) and len(after) == len(ids)
    assert len(before) == 3
    for i, h in before.items():
        np.testing.assert_array_equal(after[ids.index(i)], h)
    expect_all(record("search.py add <folder>", p, corpus, len(set(ids) & set(corpus.good))), corpus, p)


def test_dedup_and_remove(corpus, phash_index, tmp_path):
    idx = tmp_path / "idx"
    shutil.copytree(phash_index[0], idx)
    out = tmp_path / "dups.json"
    p = run("search.py", "dedup", str(idx), "--threshold", "10", "--json", str(out))
    groups = json.loads(out.read_text())["groups"] if p.returncode == 0 else []
    members = [i for g in groups for i in g["ids"]]
    assert ["dup/p0_small.png", "photos/p0.jpg"] in [g["ids"] for g in groups]
    assert not set(members) & set(corpus.bad) and len(members) == len(set(members))
    assert crashed(p) == 0, p.stderr
    # dedup reads the index, not the folder: it "tried" every indexed image
    ROWS.append(Row("search.py dedup", len(corpus.good), len(corpus.good), 0, crashed(p)))

    # remove a good id and a bad file's path: the bad one is reported as not in the index
    p = run("search.py", "remove", str(idx), "dup/p0_small.png", str(corpus.root / corpus.bad[0]))
    ids = json.loads((idx / "ids.json").read_text())
    assert crashed(p) == 0 and f"not in index: {corpus.bad[0]}" in p.stderr, p.stderr
    assert sorted(ids) == sorted(set(corpus.good) - {"dup/p0_small.png"})
    ROWS.append(Row("search.py remove", 2, 1, 1, crashed(p)))


# ----------------------------------------------------------------------------- autoencoder


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A smoke-sized fit on the mixed folder, one image per batch (and no repeats of a small folder)
    so the step counts are image counts."""
    run_dir = tmp_path_factory.mktemp("train")
    p = run(
        "train.py",
        "fit",
        "--config",
        "configs/smoke.yaml",
        "--data.root",
        str(corpus.root),
        "--data.batch_size",
        "1",
        "--data.min_steps_per_epoch",
        "1",
        "--trainer.default_root_dir",
        str(run_dir),
        "--trainer.logger.init_args.save_dir",
        str(run_dir),
        "--trainer.enable_progress_bar",
        "false",
    )
    return run_dir, p


def test_train_fit_folder(corpus, trained):
    import torch

    run_dir, p = trained
    ckpts = sorted(run_dir.rglob("last.ckpt"))
    used = 0
    if ckpts:
        loops = torch.load(ckpts[0], map_location="cpu", weights_only=True)["loops"]["fit_loop"]
        # every good image went to the training or the validation split: one batch each
        used = sum(loops[f"epoch_loop.{k}batch_progress"]["total"]["completed"] for k in ("", "val_loop."))
    expect_all(record("train.py fit <folder>", p, corpus, used), corpus, p)


def test_reconstruct_folder_with_trained_model(corpus, trained, tmp_path):
    run_dir, _ = trained
    (ckpt,) = sorted(run_dir.rglob("last.ckpt"))
    out = tmp_path / "recon"
    p = run("train.py", "reconstruct", "--checkpoint", str(ckpt), str(corpus.root), "-o", str(out), "--json")
    summary = json.loads(p.stdout) if p.returncode == 0 else {}
    rows = list(csv.DictReader((out / "metrics.csv").open())) if p.returncode == 0 else []
    done = {r["id"] for r in rows if float(r["psnr_db"]) > 5}
    assert summary.get("count") == len(corpus.good) and summary.get("skipped", 0) >= len(corpus.bad)
    assert np.load(out / "codes.npy", allow_pickle=False).shape[0] == len(corpus.good)
    expect_all(record("train.py reconstruct <folder>", p, corpus, len(done & set(corpus.good))), corpus, p)


@pytest.fixture(scope="module")
def ae_index(corpus, trained, tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    (ckpt,) = sorted(trained[0].rglob("last.ckpt"))
    idx = tmp_path_factory.mktemp("ae") / "idx"
    return (
        idx,
        ckpt,
        run("search.py", "index", str(corpus.root), "--method", "ae", "--checkpoint", str(ckpt), "-o", str(idx)),
    )


def test_ae_index_folder(corpus, ae_index):
    idx, _, p = ae_index
    ids = json.loads((idx / "ids.json").read_text()) if p.returncode == 0 else []
    assert sorted(ids) == sorted(corpus.good)
    codes = np.load(idx / "codes.npy", allow_pickle=False)
    assert codes.shape[0] == len(corpus.good) and np.isfinite(codes).all()
    expect_all(record("search.py index --method ae", p, corpus, len(set(ids) & set(corpus.good))), corpus, p)


def test_ae_query_folder_finds_each_good_image_itself(corpus, ae_index):
    idx, ckpt, _ = ae_index
    p = run("search.py", "query", str(idx), str(corpus.root), "-k", "3", "--json", "--checkpoint", str(ckpt))
    results = json.loads(p.stdout) if p.returncode == 0 else []
    ok = 0
    for res in results:
        me = Path(res["query"]).relative_to(corpus.root).as_posix()
        nb = res["neighbours"]
        mine = [n["distance"] for n in nb if n["id"] == me]
        # its own stored code comes back at (near) zero distance, with nothing closer
        ok += len(nb) == 3 and len(mine) == 1 and mine[0] < 1e-3 and mine[0] <= nb[0]["distance"] + 1e-6
    assert len(results) == len(corpus.good)
    expect_all(record("search.py query --method ae", p, corpus, ok), corpus, p)


def test_ae_add_folder(corpus, ae_index, tmp_path):
    full, ckpt, _ = ae_index
    idx = tmp_path / "idx"
    small = Index.load(full)  # the starting index: three of its rows (no model run needed)
    small.remove([i for i in small.ids if i not in ("photos/p1.jpg", "odd/cmyk.jpg", "odd/alpha.png")])
    small.save(idx)
    before = dict(zip(small.ids, np.array(small.vectors)))
    p = run("search.py", "add", str(idx), str(corpus.root))
    ids = json.loads((idx / "ids.json").read_text())
    codes = np.load(idx / "codes.npy", allow_pickle=False)
    assert sorted(ids) == sorted(corpus.good) and len(codes) == len(ids)
    for i, code in before.items():  # re-added rows: the same model gives the same codes
        np.testing.assert_allclose(codes[ids.index(i)], code, atol=1e-4)
    expect_all(record("search.py add --method ae", p, corpus, len(set(ids) & set(corpus.good))), corpus, p)

"""The README's promises: its two commands, and its quick start run on small data (so it cannot rot)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import tiny_fashion

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_two_commands_and_ci():
    block = README.split("## Two commands", 1)[1].split("```", 2)[1]
    cmds = [line.split("#")[0].strip() for line in block.splitlines()[1:] if line.split("#")[0].strip()]
    assert cmds == ["make demo", "make test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M)
    mk = (ROOT / "Makefile").read_text()
    assert "encoder.cli.demo" in mk and "-m pytest" in mk


def _files_section() -> str:
    return README.split("## Files", 1)[1].split("\n## ", 1)[0]


def test_readme_lists_every_module():
    """Each module once under its package's heading (``### `encoder/ae/`...``), top-level ones anywhere."""
    files = _files_section()
    for p in sorted((ROOT / "encoder").glob("*.py")):
        if not p.name.startswith("_") or p.name == "__init__.py":
            assert f"`encoder/{p.name}`" in files, f"README's file list misses encoder/{p.name}"
    for pkg in sorted(d for d in (ROOT / "encoder").iterdir() if (d / "__init__.py").exists()):
        heading = f"### `encoder/{pkg.name}/`"
        assert heading in files, f"README's file list has no heading for encoder/{pkg.name}/"
        section = files.split(heading, 1)[1].split("\n### ", 1)[0]
        for p in sorted(pkg.glob("*.py")):
            if not p.name.startswith("_"):
                assert f"`{p.name}`" in section, f"README's section for encoder/{pkg.name}/ misses {p.name}"


PATH = re.compile(r"(?<![\w/.-])((?:encoder|bench|configs|docs|tests)/[\w./-]*)")
# encoder.x.y; not a file named encoder.onnx or encoder.pt
MODULE = re.compile(r"(?<![\w/.])(encoder(?:\.\w+)+)(?<!\.onnx)(?<!\.pt)\b")


def _named_paths(text: str) -> set[str]:
    return {m.rstrip(".") for m in PATH.findall(text)}


@pytest.mark.parametrize("doc", ["README.md", "docs/measured.md", "CHANGELOG.md"])
def test_every_path_the_docs_name_exists(doc):
    text = (ROOT / doc).read_text()
    paths = _named_paths(text)
    assert any(p.startswith("encoder/") for p in paths) or doc == "CHANGELOG.md"
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, f"{doc} names paths that do not exist: {missing}"
    for dotted in set(MODULE.findall(text)):  # encoder.x.y[.attr]: a module, or an attribute its source defines
        parts = dotted.split(".")
        n = max(i for i in range(1, len(parts) + 1) if _module_file(parts[:i]) is not None)
        rest = parts[n:]
        assert len(rest) <= 1, f"{doc} names {dotted}: no module {'.'.join(parts[: n + 1])}"
        if rest:
            source = _module_file(parts[:n]).read_text()
            # defined there, or re-exported by name (a line of its own in a from-import list)
            pattern = rf"^\s*(def|class)\s+{rest[0]}\b|^{rest[0]}\s*[:=]|\"{rest[0]}\"|^\s+{rest[0]},$"
            assert re.search(pattern, source, re.M), (
                f"{doc} names {dotted}, which {'.'.join(parts[:n])} does not define"
            )


def _module_file(parts: list[str]) -> Path | None:
    base = ROOT.joinpath(*parts)
    for f in (base.with_suffix(".py"), base / "__init__.py"):
        if f.exists():
            return f
    return None


def test_path_check_sees_paths_and_modules():
    text = "see `encoder/ae/shards.py`, bench/phash_bench.py and (encoder/search/); encoder.ae.inference, encoder.pt"
    assert _named_paths(text) == {"encoder/ae/shards.py", "bench/phash_bench.py", "encoder/search/"}
    assert MODULE.findall(text) == ["encoder.ae.inference"]
    assert not (ROOT / "encoder/shards.py").exists()  # the stale path the README once named


def test_readme_stays_a_map():
    assert len(README.encode()) <= 15_000, f"README.md is {len(README.encode())} bytes; figures go to docs/measured.md"
    assert "](docs/measured.md)" in README.split("## Measured", 1)[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("demo")
    src = tiny_fashion(tmp / "idx")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "encoder.cli.demo",
            "--quick",
            "--source",
            str(src),
            "--data",
            str(tmp / "fm"),
            "--out",
            str(tmp / "out"),
            "--queries",
            "2",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return tmp / "out"


def test_quick_start_main_job(demo):
    s = json.loads((demo / "summary.json").read_text())
    assert s["reconstruction"]["count"] == 60 and s["reconstruction"]["mean_psnr"] > 10
    methods = {r["method"]: r for r in s["retrieval"]["results"]}
    assert {"ae", "phash", "raw", "pca"} <= set(methods)
    assert all(0 <= m["P@5"] <= 1 for m in methods.values())
    assert methods["raw"]["P@5"] > 0.5  # the classes are easy: a sanity check of the labels
    assert [r["k"] for r in s["quantize"]] == [16, 64, 256]
    assert all(r["bytes_after"] < r["bytes_before"] for r in s["quantize"])
    for f in ("query_ae_0000.png", "query_phash_0001.png", "recon/grid.png", "summary.md", "evaluate.json"):
        assert (demo / f).exists(), f
    assert list((demo / "quantize").glob("*.png"))
    assert "| ae |" in (demo / "summary.md").read_text()
    top5 = s["queries"][0]["ae"]["neighbours"]
    assert len(top5) == 5


def test_readme_python_api(demo, tmp_path, monkeypatch):
    """Run the README's Python block against the demo's outputs."""
    code = README.split("```python", 1)[1].split("```", 1)[0]
    ckpt = next(demo.rglob("best.ckpt"))
    imgs = sorted((demo.parent / "fm" / "test").rglob("*.png"))[:2]
    from PIL import Image

    Image.open(imgs[0]).convert("RGB").save(tmp_path / "photo.jpg")
    code = (
        code.replace("runs/demo/train/fashion_mnist/version_0/checkpoints/best.ckpt", str(ckpt))
        .replace("runs/demo/index_ae", str(demo / "index_ae"))
        .replace('"a.png", "b.jpg"', f'"{imgs[0]}", "{imgs[1]}"')
    )
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(code, "README.md", "exec"), ns)
    assert ns["codes"].shape == (2, 128) and ns["images"].shape == (2, 64, 64)
    assert len(ns["ids"][0]) == 5
    assert (tmp_path / "photo_k64.png").stat().st_size > 0

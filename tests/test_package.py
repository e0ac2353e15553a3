"""The package as pip installs it: metadata, version, licence, and the three console commands.

``test_installed_wheel_*`` build a wheel from a copy of this tree and install it into a fresh
virtual environment whose dependencies resolve against the ones already installed here (a
``.pth`` file puts this environment's site-packages on its path; ``pip install --no-index`` so
nothing is downloaded). That proves the wheel holds every module and data file the commands
need, that the declared dependencies and extras are met by the tested set, and that the entry
points run from outside the source tree. It does not prove that a fresh download of those
dependencies resolves (``pip install --dry-run .`` checks that against the registry).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from helpers import class_folder, tiny_checkpoint
from packaging.requirements import Requirement
from PIL import Image

import encoder

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = (ROOT / "pyproject.toml").read_text()
VERSION = re.search(r'^version = "([^"]+)"', PYPROJECT, re.M).group(1)
COMMANDS = ("encoder-train", "encoder-search", "encoder-quantize")


def _pins(path: Path) -> dict[str, Requirement]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-r"):
            req = Requirement(line)
            out[req.name.lower()] = req
    return out


def _declared() -> list[Requirement]:
    import tomllib

    project = tomllib.loads(PYPROJECT)["project"]
    extras = project["optional-dependencies"]
    reqs = [*project["dependencies"], *extras["web"], *extras["dev"]]
    return [Requirement(r) for r in reqs if not r.startswith("encoder[")]


def test_pinned_requirements_satisfy_the_declared_dependencies():
    pins = _pins(ROOT / "requirements.txt") | _pins(ROOT / "requirements-dev.txt")
    for req in _declared():
        pin = pins.get(req.name.lower())
        assert pin is not None, f"{req} is declared in pyproject.toml but not pinned in requirements*.txt"
        exact = [s.version for s in pin.specifier if s.operator == "=="]
        if exact:  # a pinned version must lie inside the declared range
            assert req.specifier.contains(exact[0], prereleases=True), f"pin {pin} is outside {req}"
    names = {r.name.lower() for r in _declared()}
    assert set(pins) - names == set(), f"pinned but not declared: {sorted(set(pins) - names)}"


def test_version_from_a_source_checkout():
    assert encoder.__version__ == VERSION
    for script in ("train.py", "search.py", "quantize.py"):
        p = subprocess.run([sys.executable, script, "--version"], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert (p.returncode, p.stdout.strip()) == (0, f"encoder {VERSION}"), p.stderr


def test_version_ignores_another_installed_copy(monkeypatch):
    """A distribution named encoder installed elsewhere (an older copy, another project) does not speak for this one."""
    from encoder import _version

    class Elsewhere:
        version = "9.9.9"

        def locate_file(self, path):
            return Path("/elsewhere/site-packages") / path

    monkeypatch.setattr(_version.metadata, "distribution", lambda name: Elsewhere())
    assert _version.package_version() == VERSION


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(the fresh venv's bin folder, a working folder outside the source tree)."""
    tmp = tmp_path_factory.mktemp("pkg")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "encoder", src / "encoder", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    pip = [sys.executable, "-m", "pip"]
    run = dict(capture_output=True, text=True, timeout=600)
    p = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp / "dist"), str(src)], **run
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    (wheel,) = (tmp / "dist").glob("encoder-*.whl")
    assert wheel.name == f"encoder-{VERSION}-py3-none-any.whl"

    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    vpy = venv / "bin" / "python"
    purelib = subprocess.run(
        [vpy, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], **run
    ).stdout.strip()
    here = {*site.getsitepackages(), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(purelib) / "tested_dependencies.pth").write_text("\n".join(sorted(here)) + "\n")
    p = subprocess.run(
        [*pip, "--python", str(vpy), "install", "--no-index", "--no-build-isolation", f"{wheel}[web,dev]"], **run
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert not re.search(r"^Collecting (?!encoder)", p.stdout, re.M), "a dependency was missing here:\n" + p.stdout

    work = tmp / "work"
    class_folder(work / "photos", per_class=4)
    tiny_checkpoint(work / "m.pt")
    return venv / "bin", work


def _call(installed, *args: str) -> subprocess.CompletedProcess:
    bin_dir, work = installed
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}
    cmd = [str(bin_dir / args[0]), *args[1:]]
    return subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=300)


def test_installed_wheel_imports_from_site_packages_with_its_metadata(installed):
    bin_dir, _ = installed
    code = (
        "import encoder, json, importlib.metadata as m; d = m.metadata('encoder'); "
        "print(json.dumps([encoder.__file__, encoder.__version__, d['Version'], d['License-Expression']]))"
    )
    p = _call(installed, "python", "-c", code)
    assert p.returncode == 0, p.stderr
    file, version, meta_version, licence = json.loads(p.stdout)
    assert Path(file).is_relative_to(bin_dir.parent) and not Path(file).is_relative_to(ROOT)
    assert version == meta_version == VERSION and licence == "BSD-3-Clause"
    static = Path(file).parent / "web" / "static"
    assert (static / "layout.html").exists() and list((static / "pages").glob("*.html"))
    show = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(bin_dir / "python"), "show", "encoder"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert f"Version: {VERSION}" in show.stdout and "BSD-3-Clause" in show.stdout, show.stdout + show.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_installed_commands_answer_help_and_version(installed, command):
    p = _call(installed, command, "--help")
    assert p.returncode == 0 and len(p.stdout) > 200, p.stderr
    p = _call(installed, command, "--version")
    assert (p.returncode, p.stdout.strip()) == (0, f"encoder {VERSION}"), p.stderr


def test_installed_quantize_writes_an_indexed_png(installed):
    _, work = installed
    p = _call(installed, "encoder-quantize", "photos/across/00.png", "-k", "16", "-o", "quant")
    assert p.returncode == 0, p.stderr
    (png,) = (work / "quant").glob("*.png")
    with Image.open(png) as im:
        assert im.mode == "P" and len(im.getcolors()) <= 16


def test_installed_search_indexes_and_queries_with_phash(installed):
    p = _call(installed, "encoder-search", "index", "photos", "--method", "phash", "-o", "idx")
    assert p.returncode == 0, p.stderr
    p = _call(installed, "encoder-search", "query", "idx", "photos/rings/01.png", "-k", "3", "--json")
    assert p.returncode == 0, p.stderr
    top = json.loads(p.stdout)
    top = top[0] if isinstance(top, list) else top
    assert top["neighbours"][0]["id"] == "rings/01.png" and top["neighbours"][0]["distance"] == 0


def test_installed_train_reconstructs_with_a_saved_encoder(installed):
    _, work = installed
    p = _call(installed, "encoder-train", "reconstruct", "--checkpoint", "m.pt", "photos", "-o", "recon")
    assert p.returncode == 0, p.stderr
    codes = np.load(work / "recon" / "codes.npy")
    assert codes.shape == (12, 128) and (work / "recon" / "grid.png").exists()


def test_serve_without_the_web_extra_says_how_to_install_it(tmp_path):
    code = (
        "import sys\nsys.modules['uvicorn'] = None  # as if the [web] extra were not installed\n"
        f"from encoder.cli.search import main\nsys.exit(main(['serve', {str(tmp_path)!r}]))"
    )
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "pip install 'encoder[web]'" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr

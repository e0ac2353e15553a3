"""Every command answers --help at once: nothing heavy is imported before the arguments are read."""

import subprocess
import sys

import pytest

HEAVY = ("torch", "pytorch_lightning", "matplotlib", "faiss", "onnxruntime", "fastapi")


@pytest.mark.parametrize(
    "module,allowed", [("encoder.cli.train", ()), ("encoder.cli.quantize", ()), ("encoder.cli.search", ("faiss",))]
)  # every search command needs it
def test_help_imports_nothing_heavy(module, allowed):
    heavy = tuple(h for h in HEAVY if h not in allowed)
    code = (
        f"import sys, contextlib, io\nimport {module} as m\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    try:\n        rc = m.main(['--help'])\n    except SystemExit as e:\n        rc = e.code\n"
        f"print(rc, len(out.getvalue()) > 200, sorted(h for h in {heavy!r} if h in sys.modules))"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.stdout.split() == ["0", "True", "[]"], p.stdout + p.stderr


def test_train_without_a_subcommand_says_what_it_takes():
    p = subprocess.run([sys.executable, "train.py"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "fit" in p.stderr and "prepare-fashion-mnist" in p.stderr

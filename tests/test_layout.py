"""The shape of the package: data flows one way, no circles, inference without Lightning.

    command lines (encoder.cli) -> products (ae, hashing, search, palette) -> base (data, atomic, metrics)

Every import statement of every module is read with ``ast`` (function-level ones too, so a late
import cannot hide an edge).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "encoder"
PRODUCTS = ("ae", "hashing", "search", "palette")
BASE = ("encoder.data", "encoder.atomic", "encoder.metrics", "encoder._lazy")
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, Path]:
    out = {}
    for f in sorted(PKG.rglob("*.py")):
        parts = f.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = f
    return out


MODULES = _modules()


def _target(name: str) -> str | None:
    """The encoder module an imported dotted name resolves to (longest known prefix)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(name: str, path: Path) -> set[str]:
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            found |= {f"{base}.{a.name}" for a in node.names} | {base}
    return {t for t in map(_target, (f for f in found if f.startswith("encoder"))) if t and t != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in (*PRODUCTS, "cli")) else "base"


def test_no_import_circles():
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(GRAPH[m]):
            if state.get(n) == 1:
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(n) :] + [n]))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)


def test_nothing_below_the_command_lines_imports_them():
    bad = [(m, n) for m, deps in GRAPH.items() if _room(m) != "cli" for n in deps if _room(n) == "cli"]
    assert not bad, f"library modules import the command lines: {bad}"


def test_products_import_only_the_base_and_search_methods_the_others():
    bad = []
    for m, deps in GRAPH.items():
        room = _room(m)
        for n in deps:
            other = _room(n)
            if room == "base" and other != "base":
                bad.append((m, n))
            elif room in PRODUCTS and other in PRODUCTS and other != room and m != "encoder.search.methods":
                bad.append((m, n))
    assert not bad, f"imports against the flow (cli -> products -> base): {bad}"


def _code_lines(text: str) -> int:
    """Lines that say something: not blank, not only the closing brackets a formatter puts alone."""
    return sum(1 for line in text.splitlines() if line.strip().strip(")]},:"))


def test_modules_and_functions_stay_small():
    long_modules, long_functions = [], []
    for name, path in MODULES.items():
        text = path.read_text()
        if _code_lines(text) > MAX_MODULE_LINES:
            long_modules.append((name, _code_lines(text)))
        if _room(name) == "cli":
            continue  # command-line parsers are long lists of options by nature
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = _code_lines("\n".join(text.splitlines()[node.lineno - 1 : node.end_lineno]))
                if n > MAX_FUNCTION_LINES:
                    long_functions.append((f"{name}.{node.name}", n))
    assert not long_modules, f"modules over {MAX_MODULE_LINES} lines: {long_modules}"
    assert not long_functions, f"functions over {MAX_FUNCTION_LINES} lines: {long_functions}"


def _fresh(code: str) -> str:
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout


def test_inference_does_not_import_lightning(tmp_path):
    from PIL import Image

    Image.new("L", (40, 30), 128).save(tmp_path / "a.png")
    out = _fresh(f"""
import sys, torch
from encoder.ae.model import ConvAutoencoder
from encoder.ae.inference import save_encoder, load_encoder, encode_paths
save_encoder(ConvAutoencoder(code_dim=16, width=8, image_size=64), {str(tmp_path / "m.pt")!r})
enc = load_encoder({str(tmp_path / "m.pt")!r})
codes, kept = encode_paths(enc, [{str(tmp_path / "a.png")!r}])
images = enc.decode(codes)
import encoder
encoder.load_encoder, encoder.encode_paths, encoder.Index
print(codes.shape, images.shape, "pytorch_lightning" in sys.modules, "lightning" in sys.modules)
""")
    assert out.split() == ["(1,", "16)", "(1,", "64,", "64)", "False", "False"]


def test_hash_work_and_command_line_imports_stay_light(tmp_path):
    from PIL import Image

    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "a.png")
    out = _fresh(f"""
import sys
from encoder.hashing import hash_paths
hashes, kept, flat = hash_paths([{str(tmp_path / "a.png")!r}], "phash")
import encoder.cli.search, encoder.cli.quantize, encoder.search.plots, encoder.palette.plots
print(hashes.shape, "torch" in sys.modules, "pytorch_lightning" in sys.modules, "matplotlib" in sys.modules)
""")
    assert out.split() == ["(1,", "8)", "False", "False", "False"]


# A method-name or vector-kind switch: `== "ae"`, `!= "hash"`, `kind == ...`
SWITCH = re.compile(r"""[!=]=\s*["'](ae|hash)["']|\bkind\s*[!=]=""")


def test_method_and_kind_switches_live_only_in_search_methods():
    # a second learned method or storage kind must touch one file: methods.py (policy) or index.py's
    # storage kinds (which need no switch: each kind is a class)
    bad = [
        f"{name}:{n}: {line.strip()}"
        for name, path in MODULES.items()
        if name != "encoder.search.methods"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if SWITCH.search(line)
    ]
    assert not bad, "method or kind switches outside encoder/search/methods.py:\n" + "\n".join(bad)
    assert SWITCH.search('if a.method == "ae":') and SWITCH.search("if idx.kind != 'code':")

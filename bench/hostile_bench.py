"""Every command over a folder of odd, broken and hostile files: exit code, tracebacks, peak memory, time.

    python bench/hostile_bench.py /work/data/pillow/Tests/images          # Pillow's own test images
    python bench/hostile_bench.py DIR --single 20 --skip fit serve          # a shorter run

Each command runs in its own subprocess (through a small wrapper that reads the peak resident
memory of the command and all its worker processes, ``RUSAGE_CHILDREN``), with a wall-clock
limit: ``search.py index`` with each method, ``query``, ``dedup``, ``quantize.py`` on the folder
and on ``--single`` files one at a time, ``train.py fit --config configs/smoke.yaml`` (every
image, ``--data.limit null``), ``index --method ae`` with the checkpoint fit wrote, and the web
page's ``POST /api/query`` of every file in the folder, one at a time, to ``search.py serve``
(run as it is on this branch; its peak is the server's own ``VmHWM``). The anchor, in the same
run: Pillow alone (``Image.open``, ``load``, ``convert('RGB')``, its defaults) over every file.

Printed: command, files used, files refused (each named in the command's skipped list), exit
code, tracebacks in its output, peak MB, wall seconds and the slowest file (where files are run
one at a time). Peak MB is the largest resident size of any one process of the command (the
command itself or one of its workers, ``ru_maxrss``), not the sum of workers running at once.
Outputs and logs go under --out (default runs/hostile_bench).
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
# Reads the peak memory of a command and every process it waited for, then exits with its code.
WRAP = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.call(sys.argv[2:])\n"
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
    "sys.exit(rc)\n"
)
# Files quantized one at a time, most hostile first: memory and time bombs, then odd modes and
# formats, then fuzzing crashes, then the largest of the rest.
ODD = (
    re.compile(r"oom|bomb|timeout|unimplemented|\.icns$", re.I),
    re.compile(r"lab|\.(dds|ico|tga|blp)$", re.I),
    re.compile(r"crash|fuzz|broken|trunc", re.I),
)
ANCHOR = """
import os, sys, time, resource, warnings
from PIL import Image
warnings.simplefilter("ignore")
used = refused = 0; slowest = (0.0, "")
for name in sys.argv[2:]:
    t = time.perf_counter()
    try:
        with Image.open(name) as im:
            im.load(); im.convert("RGB")
        used += 1
    except Exception:
        refused += 1
    slowest = max(slowest, (time.perf_counter() - t, os.path.basename(name)))
print(used, refused, f"{slowest[0]:.2f}", slowest[1])
"""


def all_files(folder: Path) -> list[Path]:
    """Every file under ``folder``, recursively, sorted (what the folder commands scan)."""
    return sorted(p for p in folder.rglob("*") if p.is_file())


@dataclass
class Row:
    command: str
    used: int | str = "-"
    refused: int | str = "-"
    exit: str = "-"
    tracebacks: int = 0
    peak_mb: float = 0.0
    seconds: float = 0.0
    slowest: str = "-"
    notes: list[str] = field(default_factory=list)


@dataclass
class Ran:
    rc: int
    out: str
    err: str
    peak_mb: float
    seconds: float


def run(cmd: list, log: Path, timeout: float) -> Ran:
    """Run ``cmd`` through the wrapper in its own process group; on timeout the group is killed (rc 124)."""
    peak_file = log.with_suffix(".peak")
    t0 = time.perf_counter()
    with open(log.with_suffix(".out"), "w") as o, open(log.with_suffix(".err"), "w") as e:
        p = subprocess.Popen(
            [PY, "-c", WRAP, str(peak_file), *map(str, cmd)],
            cwd=ROOT,
            stdout=o,
            stderr=e,
            start_new_session=True,
            env=dict(os.environ, PYTHONPATH=str(ROOT), PYTHONWARNINGS="ignore"),
        )
        try:
            rc = p.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            rc = 124
    peak = int(peak_file.read_text()) / 1024 if peak_file.exists() else float("nan")
    return Ran(
        rc, log.with_suffix(".out").read_text(), log.with_suffix(".err").read_text(), peak, time.perf_counter() - t0
    )


def tracebacks(r: Ran) -> int:
    return (r.out + r.err).count("Traceback (most recent call last)")


def csv_rows(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path, newline="") as f:
        return sum(1 for _ in csv.DictReader(f))


def row_of(name: str, r: Ran, used, refused) -> Row:
    return Row(name, used, refused, str(r.rc), tracebacks(r), round(r.peak_mb), round(r.seconds, 1))


def bench_index(folder: Path, out: Path, method: str, n_files: int, timeout: float, extra=()) -> Row:
    idx = out / f"idx_{method}"
    r = run([PY, "search.py", "index", folder, "-o", idx, "--method", method, *extra], out / f"index_{method}", timeout)
    refused = csv_rows(idx.with_name(idx.name + ".skipped.csv"))
    m = re.search(r"indexed (\d+) images", r.out)
    return row_of(f"index --method {method}", r, int(m.group(1)) if m else 0, refused)


def bench_query_dedup(folder: Path, out: Path, timeout: float) -> list[Row]:
    idx = out / "idx_phash"
    q = run([PY, "search.py", "query", idx, folder, "-k", "3"], out / "query", timeout)
    used = sum(1 for line in q.out.splitlines() if line.startswith("query "))
    refused = sum(1 for line in q.err.splitlines() if line.startswith("skipped "))
    d = run([PY, "search.py", "dedup", idx], out / "dedup", timeout)
    return [row_of("query IDX DIR", q, used, refused), row_of("dedup IDX", d, "-", "-")]


def bench_quantize_folder(folder: Path, out: Path, timeout: float) -> Row:
    q = out / "quantize"
    r = run([PY, "quantize.py", folder, "-k", "16", "-o", q], out / "quantize_folder", timeout)
    rows = json.loads((q / "results.json").read_text()) if (q / "results.json").exists() else []
    return row_of("quantize.py DIR -k 16", r, len({x["file"] for x in rows}), csv_rows(q / "skipped.csv"))


def pick_single(folder: Path, n: int) -> list[Path]:
    """The ``n`` oddest files (:data:`ODD`), then the largest."""

    def tier(p: Path) -> int:
        return next((t for t, pattern in enumerate(ODD) if pattern.search(p.name)), len(ODD))

    return sorted(all_files(folder), key=lambda p: (tier(p), -p.stat().st_size if tier(p) == len(ODD) else 0, p))[:n]


def bench_quantize_single(folder: Path, out: Path, n: int, timeout: float) -> Row:
    row = Row(f"quantize.py FILE -k 16, {n} odd files one by one")
    used = refused = 0
    codes: set[str] = set()
    slow = (0.0, "")
    for i, f in enumerate(pick_single(folder, n)):
        r = run([PY, "quantize.py", f, "-k", "16", "-o", out / "quantize_one"], out / f"quantize_one_{i:03d}", timeout)
        used, refused = used + (r.rc == 0), refused + (r.rc == 1 and f.name in r.err)
        codes.add(str(r.rc))
        row.tracebacks += tracebacks(r)
        row.peak_mb = max(row.peak_mb, round(r.peak_mb))
        row.seconds += r.seconds
        slow = max(slow, (r.seconds, f.name))
        if re.search(r"oom|timeout", f.name):
            row.notes.append(f"{f.name[:24]}.. {'used' if r.rc == 0 else 'refused'} in {r.seconds:.1f}s")
    row.used, row.refused, row.exit = used, refused, ",".join(sorted(codes))
    row.seconds = round(row.seconds, 1)
    row.slowest = f"{slow[1]} {slow[0]:.1f}s"
    return row


def bench_fit_and_ae(folder: Path, out: Path, n_files: int, timeout: float) -> list[Row]:
    run_dir = out / "fit"
    shutil.rmtree(run_dir, ignore_errors=True)
    args = ["--config", "configs/smoke.yaml", "--data.root", folder, "--data.limit", "null"]
    args += ["--trainer.default_root_dir", run_dir, "--trainer.logger.init_args.save_dir", run_dir]
    r = run([PY, "train.py", "fit", *args, "--trainer.enable_progress_bar", "false"], out / "fit", timeout)
    found = sorted(run_dir.rglob("skipped.csv"))
    refused = csv_rows(found[-1]) if found else 0
    rows = [row_of("train.py fit (smoke.yaml, every image)", r, n_files - refused if r.rc == 0 else 0, refused)]
    ckpt = sorted(run_dir.rglob("best.ckpt"))
    if ckpt:
        rows.append(bench_index(folder, out, "ae", n_files, timeout, extra=("--checkpoint", ckpt[-1])))
    return rows


def multipart(data: bytes, filename: str) -> tuple[bytes, str]:
    b = uuid.uuid4().hex
    head = f'--{b}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
    body = head.encode() + b"Content-Type: application/octet-stream\r\n\r\n" + data + f"\r\n--{b}--\r\n".encode()
    return body, f"multipart/form-data; boundary={b}"


def vm_hwm_mb(pid: int) -> float:
    """Peak resident memory of a live process and its live children (``VmHWM``), MB."""
    total = 0.0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1]) / 1024
        for task in Path(f"/proc/{pid}/task").iterdir():
            total += sum(vm_hwm_mb(int(c)) for c in (task / "children").read_text().split())
    except (FileNotFoundError, ProcessLookupError):
        pass
    return total


def _post(port: int, path: Path) -> tuple[int | str, float]:
    body, ctype = multipart(path.read_bytes(), path.name)
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", "/api/query", body=body, headers={"Content-Type": ctype})
        resp = conn.getresponse()
        resp.read()
        status: int | str = resp.status
    except (OSError, http.client.HTTPException) as e:
        status = type(e).__name__
    finally:
        conn.close()
    return status, time.perf_counter() - t0


def _start_server(out: Path, tmp: Path) -> tuple[subprocess.Popen, int, Path]:
    """The server on a free port, its temporary files in ``tmp`` (its own: another job cleaning
    the shared temp folder cannot pull its scratch folder away, and what it leaves is countable)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = out / "serve.log"
    cmd = [PY, "search.py", "serve", out / "idx_phash", "--port", str(port)]
    env = dict(os.environ, TMPDIR=str(tmp))
    out_log = open(log, "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out_log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    return proc, port, log


def bench_serve(folder: Path, out: Path) -> Row:
    tmp = out / "serve_tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    proc, port, log = _start_server(out, tmp)
    counts: dict[str, int] = {}
    slow, peak, t0 = (0.0, ""), 0.0, time.perf_counter()
    for f in all_files(folder):
        status, sec = _post(port, f)
        key = f"{status // 100}xx" if isinstance(status, int) else "no answer"
        counts[key] = counts.get(key, 0) + 1
        slow = max(slow, (sec, f.name))
        peak = max(peak, vm_hwm_mb(proc.pid))
    alive = proc.poll() is None
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(30)
    text = log.read_text()
    row = Row("serve + POST /api/query, each file", counts.get("2xx", 0), counts.get("4xx", 0))
    row.exit = "alive" if alive else f"dead ({proc.returncode})"
    row.tracebacks, row.peak_mb = text.count("Traceback (most recent call last)"), round(peak)
    row.seconds, row.slowest = round(time.perf_counter() - t0, 1), f"{slow[1]} {slow[0]:.1f}s"
    row.notes.append("answers " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    row.notes.append(f"files left in its temp folder after it stopped: {sum(1 for f in tmp.rglob('*') if f.is_file())}")
    return row


def bench_anchor(folder: Path, out: Path, timeout: float) -> Row:
    r = run([PY, "-c", ANCHOR, folder, *all_files(folder)], out / "anchor_pillow", timeout)
    used, refused, sec, name = (r.out.split() + ["-"] * 4)[:4] if r.rc == 0 else ("-", "-", "-", "-")
    row = row_of("anchor: Pillow alone, open+load+convert", r, used, refused)
    row.slowest = f"{name} {sec}s"
    return row


def bench_ours(folder: Path, out: Path, timeout: float) -> Row:
    code = (
        "import sys, time; from pathlib import Path; from encoder.data import load_rgb, ImageLoadError\n"
        "u = r = 0; slow = (0.0, '')\n"
        "for p in map(Path, sys.argv[2:]):\n"
        "    t = time.perf_counter()\n"
        "    try: load_rgb(p); u += 1\n"
        "    except ImageLoadError: r += 1\n"
        "    slow = max(slow, (time.perf_counter() - t, p.name))\n"
        "print(u, r, f'{slow[0]:.2f}', slow[1])\n"
    )
    r = run([PY, "-c", code, folder, *all_files(folder)], out / "ours_load_rgb", timeout)
    used, refused, sec, name = (r.out.split() + ["-"] * 4)[:4]
    row = row_of("ours: encoder.data.load_rgb", r, used, refused)
    row.slowest = f"{name} {sec}s"
    return row


def print_table(rows: list[Row], folder: Path, n_files: int) -> None:
    print(f"\n{folder}: {n_files} files (cores shared with other jobs while this ran)")
    print("peak MB: the largest single process of each command (workers included, each on its own)\n")
    head = ("command", "used", "refused", "exit", "tracebacks", "peak MB", "seconds", "slowest file")
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        cells = (r.command, r.used, r.refused, r.exit, r.tracebacks, r.peak_mb, r.seconds, r.slowest)
        print("| " + " | ".join(map(str, cells)) + " |" + (f" {'; '.join(r.notes)}" if r.notes else ""))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "hostile_bench")
    p.add_argument("--single", type=int, default=90, help="files quantized one at a time (default %(default)s)")
    p.add_argument("--timeout", type=float, default=900, help="seconds per command (default %(default)s)")
    p.add_argument("--skip", nargs="*", default=[], choices=["single", "quantize", "fit", "serve"])
    a = p.parse_args(argv)
    folder, out = a.folder.absolute(), a.out.absolute()
    out.mkdir(parents=True, exist_ok=True)
    n_files = len(all_files(folder))
    rows = [bench_anchor(folder, out, a.timeout), bench_ours(folder, out, a.timeout)]
    rows += [bench_index(folder, out, m, n_files, a.timeout) for m in ("phash", "dhash", "ahash")]
    rows += bench_query_dedup(folder, out, a.timeout)
    if "quantize" not in a.skip:
        rows.append(bench_quantize_folder(folder, out, a.timeout))
    if "single" not in a.skip:
        rows.append(bench_quantize_single(folder, out, a.single, a.timeout))
    if "fit" not in a.skip:
        rows += bench_fit_and_ae(folder, out, n_files, a.timeout)
    if "serve" not in a.skip:
        rows.append(bench_serve(folder, out))
    print_table(rows, folder, n_files)
    return 0


if __name__ == "__main__":
    sys.exit(main())

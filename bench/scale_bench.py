"""Past one machine: what the Ray engine costs and what the parts-built indexes and dedup give.

    .venv/bin/python bench/scale_bench.py                       # 5,000 photos, 1M codes, 1M hashes
    .venv/bin/python bench/scale_bench.py --n-photos 2000 --codes 200000 --hashes 100000   # quicker
    .venv/bin/python bench/scale_bench.py --parts 3 --hashes 1000000 --ivf 1024:128,512:128  # dedup at 1M
    .venv/bin/python bench/scale_bench.py --parts 2 --codes 10000000 --nlist 4096          # 10M codes, ~25 GB disk

1. images/s of pHash and ae codes (128-d, 64x64 grey): the one-machine path (hash_paths /
   encode_paths) against the job's shard tasks on Ray with 1 and 2 workers (Ray started before the
   clock; its start is printed apart). The photos: ``--n-photos`` edited copies (crops, 640x480,
   JPEG q90) of the real photos in data/photos200 (``make bench-data``), made once into runs/.
2. ``--codes`` synthetic 128-d codes (a seeded mixture of 4,096 Gaussian clusters) in 10 job parts:
   the one build (ann.build, every code in RAM) against the job's path (encoder.jobs.ivf_job: IVF
   trained on a sample, one task per part on the local engine, merged on disk, saved and loaded
   memory-mapped), each in its own process: build s, peak RSS, top-5 recall vs exact brute force
   on 200 new queries, ms/query. ``--nlist`` overrides the automatic list count for both.
3. ``--hashes`` real-shaped 64-bit hashes: real pHashes (the photos of ``--source`` and 22 real
   edited copies of each, made by encoder.search.neardup's TRANSFORMS and ALBUM_EDITS, plus the
   5,000 crops of part 1), then uniform random hashes up to the count:
   :func:`encoder.jobs.dedup_job.find_groups_job` with IndexBinaryIVF at ``--ivf`` on the
   ``--dedup-engine`` runners against the exact
   flat range search: time, pair recall (all pairs, and pairs between real hashes) and precision,
   groups; ``--tune`` adds a table of IndexBinaryIVF settings against the same exact pairs (3b:
   recall, and core-seconds of the range search on 1 thread). The exact run is kept in the scratch
   folder with its time (a rerun on the same hashes reuses its pairs: about 10 core-minutes at 1M).
4. A projection for 100 million images on N machines of C cores from the measured per-core rates.
5. ``--hash-index`` random and near-duplicate-shaped 64-bit hashes (``--parts 5`` alone needs no
   photos): IndexBinaryIVF at ``--hash-ivf`` settings (1024:256 is the search index's choice from
   2M hashes; BinaryHNSW, the former one, up to ``--hnsw-max``) against exact BinaryFlat: ms/query on
   one thread, recall@5.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def make_photos(src: Path, out: Path, n: int) -> list[Path]:
    """``n`` edited copies of the photos in ``src``: seeded crops (50-100% of each side), 640x480, JPEG q90."""
    from PIL import Image

    from encoder.data import open_image, scan_folder, to_rgb

    if out.is_dir() and len(list(out.glob("*.jpg"))) == n:
        return sorted(out.glob("*.jpg"))
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    photos = scan_folder(src).paths
    rng = np.random.default_rng(0)
    per = -(-n // len(photos))
    k = 0
    for p in photos:
        im = to_rgb(open_image(p, draft_size=(1280, 960)))
        for _ in range(per):
            if k == n:
                break
            w, h = im.size
            cw, ch = int(w * rng.uniform(0.5, 1)), int(h * rng.uniform(0.5, 1))
            x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            im.crop((x, y, x + cw, y + ch)).resize((640, 480), Image.Resampling.BILINEAR).save(
                out / f"{k:05d}.jpg", quality=90
            )
            k += 1
    return sorted(out.glob("*.jpg"))


def _ray_start(workers: int):
    import ray

    from encoder.jobs.runners import ray_module  # noqa: F401  (the same import path the job uses)

    t = time.perf_counter()
    ray.init(
        num_cpus=workers,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
    )
    return ray, time.perf_counter() - t


def _warm() -> int:
    import torch  # noqa: F401

    time.sleep(1.0)  # so that each warm-up task lands on its own worker
    return 0


def _job_rate(folder: Path, work: Path, task, spec: dict, workers: int, shard_size: int) -> float:
    """Images/s of the shard tasks alone (manifest written before the clock) on the running Ray."""
    from encoder.jobs import runners, sources

    shutil.rmtree(work, ignore_errors=True)
    m = sources.make_manifest(str(folder), work, spec, shard_size)
    t = time.perf_counter()
    runners.run(task, work, range(m.n_shards), engine="ray", workers=workers, progress=False)
    return m.n_images / (time.perf_counter() - t)


def part1(folder: Path, scratch: Path, repeat: int) -> dict:
    """Best of ``repeat`` runs, one machine and Ray interleaved (the shared cores' load changes by the minute)."""
    import torch

    from encoder.ae.inference import load_encoder, save_encoder
    from encoder.ae.model import ConvAutoencoder
    from encoder.ae.runtime import encode_paths
    from encoder.hashing.hashes import hash_paths
    from encoder.jobs.index_job import encode_shard, hash_shard

    paths = sorted(folder.glob("*.jpg"))
    n = len(paths)
    torch.manual_seed(0)
    ckpt = scratch / "model.pt"
    save_encoder(ConvAutoencoder(code_dim=128, image_size=64), str(ckpt))
    enc = load_encoder(str(ckpt))
    rates: dict = {}
    shard = -(-n // 4)  # 4 shards: 2 workers stay busy to the end
    specs = {
        "phash": (hash_shard, {"method": "phash", "draft": False, "alpha": "imagehash"}),
        "ae": (encode_shard, {"method": "ae", "checkpoint": str(ckpt), "batch_size": 256}),
    }
    starts = []
    for workers in (1, 2):
        torch.set_num_threads(workers)
        ray, start = _ray_start(workers)
        starts.append(start)
        try:
            # workers up, torch imported (as in this process) before the clock
            ray.get([ray.remote(_warm).remote() for _ in range(workers)])
            for _ in range(repeat):
                for method, (task, spec) in specs.items():
                    t = time.perf_counter()
                    if method == "phash":
                        hash_paths(paths, "phash", workers=workers, errors=[])
                    else:
                        encode_paths(enc, paths, 256, [], False, workers)
                    one = n / (time.perf_counter() - t)
                    job = _job_rate(folder, scratch / f"w{method}", task, spec, workers, shard)
                    for key, rate in (((method, "one machine", workers), one), ((method, "Ray", workers), job)):
                        rates[key] = max(rates.get(key, 0.0), rate)
        finally:
            ray.shutdown()
    print(
        f"\n1. images/s on {n} photos (640x480 JPEG), best of {repeat}; Ray start {min(starts):.1f}-{max(starts):.1f} s"
    )
    print(f"   {'method':<7}{'workers':>8}{'one machine':>13}{'Ray tasks':>11}{'overhead':>10}")
    for method in ("phash", "ae"):
        for workers in (1, 2):
            one, job = rates[(method, "one machine", workers)], rates[(method, "Ray", workers)]
            print(f"   {method:<7}{workers:>8}{one:>13.0f}{job:>11.0f}{1 - job / one:>10.1%}")
    return rates


def _mixture(n: int, d: int = 128, centres: int = 4096, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, d)).astype(np.float32)
    out = np.empty((n, d), np.float32)
    for s in range(0, n, 1 << 18):
        m = min(1 << 18, n - s)
        out[s : s + m] = c[rng.integers(0, centres, m)] + 0.35 * rng.normal(size=(m, d)).astype(np.float32)
    return out


def _status_gb(pid: str, field: str) -> float:
    """A field of /proc/PID/status (``VmRSS``, ``RssAnon``, ``VmHWM``) in GB; 0 for a process gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0.0
    return next((int(x.split()[1]) / 2**20 for x in lines if x.startswith(field + ":")), 0.0)


class _Peaks:
    """Peaks sampled every 0.2 s, in GB: this process's anonymous RSS (heap, not mapped files) and the
    largest RSS of any of its child processes (the local engine's workers). Sampled, because a child's
    own ru_maxrss starts from its parent's RSS at the fork that precedes its exec."""

    def __init__(self) -> None:
        import threading

        self.anon, self.worker, self._stop = 0.0, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            self.anon = max(self.anon, _status_gb("self", "RssAnon"))
            kids = [c for t in Path("/proc/self/task").iterdir() for c in _children(t)]
            self.worker = max([self.worker] + [_status_gb(pid, "VmRSS") for pid in kids])

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        return {"driver": _status_gb("self", "VmHWM"), "anon": self.anon, "workers": self.worker}


def _children(task: Path) -> list[str]:
    try:
        return (task / "children").read_text().split()
    except OSError:
        return []


def _timed_rows(index, queries: np.ndarray, params: str) -> tuple[list, float]:
    """Top-5 rows of the queries (one warm-up pass first) and ms per query, batched."""
    from encoder.search import ann

    ann.search(index, queries, 5, "l2", params)
    t = time.perf_counter()
    rows = ann.search(index, queries, 5, "l2", params)[1]
    return rows.tolist(), (time.perf_counter() - t) * 1000 / len(queries)


def _part2_child(which: str, scratch: Path, n: int, n_queries: int, also: str, nlist: int) -> None:
    """One build of part 2 in its own process (so peak RSS is its own); results to scratch/part2-WHICH.json."""
    import json

    from encoder.jobs import ivf_job
    from encoder.search import ann
    from encoder.search.index import Index

    watch = _Peaks()
    factory = f"IVF{nlist or ann.nlist_for(n)},Flat"
    if which == "one":
        codes = _mixture(n + n_queries)
        queries = codes[n:].copy()
        t = time.perf_counter()
        built = ann.build(codes[:n], "l2", factory)
        index, params = built.index, built.search_params
    else:
        queries = np.load(scratch / "part2-queries.npy")
        t = time.perf_counter()
        codes, ids, _, built = ivf_job.build(scratch / "p2work", n_parts(scratch), factory, engine="local", workers=2)
        Index.create("ae", "bench", codes, ids, kind="code", built=built).save(scratch / "p2idx")
        secs = time.perf_counter() - t
        del codes, ids, built
        loaded = Index.load(scratch / "p2idx", mmap=True)  # as search.py query and the web page read it
        index, params = loaded.faiss_index, loaded.meta["search_params"]
    secs = time.perf_counter() - t if which == "one" else secs
    rows, ms = _timed_rows(index, queries, params)
    extra = _timed_rows(index, queries, also)[0] if also and also != params else rows
    out = {"secs": secs, "params": params, "rows": rows, "ms": ms, "also_rows": extra, **watch.stop()}
    (scratch / f"part2-{which}.json").write_text(json.dumps(out))


def n_parts(scratch: Path) -> int:
    return len(list((scratch / "p2work" / "parts").glob("part-*.parquet")))


def _write_parts2(scratch: Path, n: int, n_parts: int, n_queries: int) -> np.ndarray:
    """The codes as ``n_parts`` job parts (ids ``00000042``) and the exact top-5 of the queries: (Q,5) rows."""
    from encoder.jobs import parts
    from encoder.search import ann

    work = scratch / "p2work"
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(scratch / "p2idx", ignore_errors=True)
    both = _mixture(n + n_queries)  # queries from the same clusters, not in the index
    codes, queries = both[:n], both[n:]
    np.save(scratch / "part2-queries.npy", queries)
    truth = ann.exact_knn(queries, codes, 5, "l2")[1]
    for s, rows in enumerate(np.array_split(np.arange(n), n_parts)):
        ids = [f"{i:08d}" for i in rows]
        parts.write_part(parts.part_path(work, s), ids, codes[rows[0] : rows[-1] + 1], np.zeros(len(rows), bool), {})
    return truth


def part2(n: int, scratch: Path, nlist: int = 0, n_parts: int = 10, n_queries: int = 200) -> None:
    """The one-build IVF (ann.build, codes in RAM) against the job's path (parts -> IVF merged on disk)."""
    import json
    import subprocess

    from encoder.search import ann

    truth = _write_parts2(scratch, n, n_parts, n_queries)
    results = {}
    also = ""
    for which in ("one", "parts"):  # the one build first: the parts' index is also probed at its nprobe
        cmd = [sys.executable, __file__, "--part2-child", which, "--codes", str(n), "--scratch", str(scratch)]
        cmd += ["--part2-also", also, "--part2-queries", str(n_queries), "--nlist", str(nlist)]
        subprocess.run(cmd, check=True)
        results[which] = json.loads((scratch / f"part2-{which}.json").read_text())
        also = results["one"]["params"]

    def recall(rows) -> float:
        return float(np.mean([len(set(a) & set(b)) / 5 for a, b in zip(rows, truth.tolist())]))

    lists = f"IVF{nlist or ann.nlist_for(n)},Flat" + (f" (automatic: IVF{ann.nlist_for(n)})" if nlist else "")
    print(f"\n2. {n:,} x 128 float codes (4,096 clusters), {lists}, nprobe tuned by each build")
    print(f"   (ann.tune, recall@5 >= 0.95 on stored rows); {n_queries} new queries, recall@5 vs exact brute force;")
    print(f"   the job path: {n_parts} parts, local engine, 2 workers, the index saved and loaded memory-mapped")
    print("   peak RSS: the build's process (mapped files included), its heap (anon), its largest worker")
    print(f"   {'build':<30}{'build s':>8}{'RSS GB':>8}{'anon GB':>8}{'worker GB':>10}{'params':>11}{'recall@5':>9}")
    head = f"{'':<30}{'':>8}{'':>8}{'':>8}{'':>10}"
    one, job = results["one"], results["parts"]
    for name, r in (("one build (ann.build, in RAM)", one), (f"{n_parts} parts merged on disk", job)):
        workers = f"{r['workers']:.2f}" if r is job else "-"  # the one build runs in one process
        print(
            f"   {name:<30}{r['secs']:>8.0f}{r['driver']:>8.2f}{r['anon']:>8.2f}{workers:>10}"
            f"{r['params']:>11}{recall(r['rows']):>9.3f}   {r['ms']:.3f} ms/query"
        )
    print(f"   {head}{one['params']:>11}{recall(job['also_rows']):>9.3f}   (parts' index at the one build's nprobe)")
    gap = recall(one["rows"]) - recall(job["rows"])
    print(f"   recall gap (one build - parts, each at its own nprobe): {gap:+.3f}; target: within 0.01")


def _links(work: Path) -> set:
    """The pairs the dedup tasks wrote (rows of the distinct hashes)."""
    return {tuple(p) for f in sorted((work / "pairs").glob("*.npy")) for p in np.load(f).tolist()}


def edited_hashes(src: Path, cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """pHashes of the photos in ``src`` (1280 px long side) and of their real edited copies (every
    transform of encoder.search.neardup's TRANSFORMS and ALBUM_EDITS): ((N,8) uint8, (N,) photo number).

    Cached in ``cache`` (an .npz keyed by the folder's file list): the edits take minutes.
    """
    import hashlib

    from encoder.data import open_image, scan_folder, to_rgb
    from encoder.hashing.hashes import hash_images
    from encoder.search.neardup import ALBUM_EDITS, TRANSFORMS

    photos = scan_folder(src).paths
    edits = {**TRANSFORMS, **ALBUM_EDITS}
    key = hashlib.sha256("\n".join([*map(str, photos), *edits]).encode()).hexdigest()[:12]
    path = cache / f"edited-phash-{key}.npz"
    if path.is_file():
        got = np.load(path)
        return got["hashes"], got["photo"]
    hashes, photo = [], []
    for k, p in enumerate(photos):
        im = to_rgb(open_image(p, draft_size=(1280, 1280)))
        im.thumbnail((1280, 1280))
        copies = [im] + [edit(im) for edit in edits.values()]
        hashes.append(hash_images(copies, "phash"))
        photo += [k] * len(copies)
    out = np.concatenate(hashes), np.array(photo, np.int32)
    np.savez(path, hashes=out[0], photo=out[1])
    return out


def _exact_run(dedup_job, scratch: Path, distinct_key: str, workers: int) -> tuple[float, list, Path, bool]:
    """The exact flat run, kept in ``scratch`` with its time: a rerun on the same hashes reuses it."""
    import json

    work = scratch / f"dexact-{distinct_key}"
    record = work / "bench_time.json"
    cached = record.is_file()
    t = time.perf_counter()
    groups = dedup_job.find_groups_job(scratch / "didx", work, nlist=0, workers=workers, progress=False)
    secs = json.loads(record.read_text())["seconds"] if cached else time.perf_counter() - t
    if not cached:
        record.write_text(json.dumps({"seconds": secs, "workers": workers}))
    return secs, groups, work, cached


def part3(
    real: np.ndarray,
    n: int,
    scratch: Path,
    ivf: list[tuple[int, int]],
    settings: list[tuple[int, int]],
    engines: list[str],
    workers: int = 2,
) -> None:
    import hashlib

    from encoder.hashing.hashes import hamming
    from encoder.jobs import dedup_job
    from encoder.search.index import Index

    rng = np.random.default_rng(2)
    h = np.concatenate([real, rng.integers(0, 256, (max(0, n - len(real)), 8), dtype=np.uint8)])
    ids = [f"{i:07d}" for i in range(len(h))]
    Index.create("phash", "bench", h, ids, kind="hash", flat=np.zeros(len(h), bool)).save(scratch / "didx")
    distinct = np.unique(h, axis=0)
    key = hashlib.sha256(distinct.tobytes()).hexdigest()[:12] + f"-t{dedup_job.DEFAULT_THRESHOLD}"
    secs, exact_groups, exact_work, cached = _exact_run(dedup_job, scratch, key, workers)
    runs = {"exact (BinaryFlat)": (secs, exact_groups, _links(exact_work))}
    most = len(distinct) // 39  # training hashes per list, as FAISS wants
    for engine, nlist, nprobe in ((e, min(nl, most), npr) for e in engines for nl, npr in ivf):
        work = scratch / f"dwork{nlist}-{nprobe}"
        shutil.rmtree(work, ignore_errors=True)
        t = time.perf_counter()  # a local Ray's start (about 2 s) inside the clock
        kw = dict(nlist=nlist, nprobe=nprobe, engine=engine, workers=workers, progress=False)
        groups = dedup_job.find_groups_job(scratch / "didx", work, **kw)
        runs[f"IVF{nlist} nprobe {nprobe} {engine}"] = (time.perf_counter() - t, groups, _links(work))
        shutil.rmtree(work, ignore_errors=True)
    is_real = np.zeros(len(distinct), bool)
    is_real[np.unique(np.searchsorted(distinct.view(">u8").ravel(), real.view(">u8").ravel()))] = True
    exact_links = runs["exact (BinaryFlat)"][2]
    real_links = {p for p in exact_links if is_real[p[0]] and is_real[p[1]]}
    print(f"\n3. dedup of {len(h):,} hashes ({len(distinct):,} distinct): {len(real):,} real pHashes (photos and")
    print(
        "   their edited copies), the rest uniform random; exact pairs: "
        f"{len(exact_links):,}, {len(real_links):,} of them between real hashes"
    )
    print(
        f"   threshold {dedup_job.DEFAULT_THRESHOLD}, {workers} workers (exact: local engine); defaults: nlist "
        f"{dedup_job.DEFAULT_NLIST}, nprobe {dedup_job.DEFAULT_NPROBE} from {dedup_job.IVF_MIN:,} hashes"
        + ("; exact time from an earlier run (cached pairs)" if cached else "")
    )
    print(
        f"   {'search':<26}{'s':>8}{'pairs':>9}{'pair recall':>12}{'real recall':>12}{'precision':>10}"
        f"{'groups':>8}{'= exact':>8}"
    )
    for name, (secs, groups, links) in runs.items():
        a, b = (np.array([p[i] for p in links], np.int64) for i in (0, 1)) if links else (np.zeros(0, int),) * 2
        true = int((hamming(distinct[a], distinct[b]) <= dedup_job.DEFAULT_THRESHOLD).sum())
        same = len({tuple(g["ids"]) for g in groups} & {tuple(g["ids"]) for g in exact_groups})
        recall = len(links & exact_links) / max(1, len(exact_links))
        real_recall = len(links & real_links) / max(1, len(real_links))
        print(
            f"   {name:<26}{secs:>8.1f}{len(links):>9}{recall:>12.4f}{real_recall:>12.4f}"
            f"{true / max(1, len(links)):>10.3f}{len(groups):>8}{same:>8}"
        )
    if settings:
        tune(distinct, exact_links, settings)


def tune(distinct: np.ndarray, exact_links: set, settings: list[tuple[int, int]], n_time: int = 20_000) -> None:
    """IndexBinaryIVF settings against the exact pairs of part 3: pair recall (the two hashes of each
    exact pair queried; the job queries every hash, so it finds the same) and the range search's
    core-seconds for all hashes (``n_time`` random queries on 1 thread, scaled; training apart)."""
    import faiss

    from encoder.jobs.dedup_job import DEFAULT_THRESHOLD, binary_index

    faiss.omp_set_num_threads(1)
    n, radius = len(distinct), DEFAULT_THRESHOLD + 1
    nodes = np.unique(np.array(sorted(exact_links), np.int64))
    timed = distinct[np.sort(np.random.default_rng(0).choice(n, min(n, n_time), replace=False))]

    def core_s(index) -> float:
        t = time.perf_counter()
        index.range_search(timed, radius)
        return (time.perf_counter() - t) * n / len(timed)

    print(f"\n3b. IndexBinaryIVF settings on these {n:,} distinct hashes ({len(exact_links):,} exact pairs):")
    print(f"   exact BinaryFlat: {core_s(binary_index(distinct, 0)):.0f} core-s")
    print(f"   {'nlist':>6}{'nprobe':>7}{'train+add s':>12}{'core-s':>8}{'pair recall':>12}{'precision':>10}")
    built: dict[int, tuple] = {}
    for nlist, nprobe in settings:
        if nlist not in built:
            t = time.perf_counter()
            built[nlist] = (binary_index(distinct, nlist), time.perf_counter() - t)
        index, build = built[nlist]
        index.nprobe = nprobe
        lims, _, found = index.range_search(distinct[nodes], radius)
        rows = np.repeat(nodes, np.diff(lims).astype(np.int64))
        got = {(min(a, b), max(a, b)) for a, b in zip(rows.tolist(), found.tolist()) if a != b}
        a, b = (np.array([p[i] for p in got], np.int64) for i in (0, 1)) if got else (np.zeros(0, int),) * 2
        close = np.unpackbits(distinct[a] ^ distinct[b], axis=1).sum(1) <= DEFAULT_THRESHOLD
        print(
            f"   {nlist:>6}{nprobe:>7}{build:>12.1f}{core_s(index):>8.0f}"
            f"{len(got & exact_links) / max(1, len(exact_links)):>12.4f}{close.mean() if len(got) else 1:>10.3f}"
        )


def part4(rates: dict) -> None:
    images = 100_000_000
    print("\n4. projection for 100M images (per-core rates measured above on 640x480 JPEGs, 2 shared cores)")
    print("   assumes: rates scale linearly with cores (one task per core, Ray overhead as measured),")
    print("   reads keep up (object store or shared disk >= rate x 100 KB/s per core), 0.3 MP photos;")
    print("   larger photos decode slower (1.9 MP: about 5x slower per image for pHash)")
    print(
        f"   {'method':<7}{'img/s/core':>11}{'core-hours':>11}"
        + "".join(f"{f'{m}x{c}':>10}" for m, c in ((1, 16), (10, 16), (100, 16)))
    )
    for method in ("phash", "ae"):
        per_core = max(rates[(method, "Ray", 1)], rates[(method, "Ray", 2)] / 2)
        core_h = images / per_core / 3600
        cells = "".join(f"{core_h / (m * c) * 60:>8.0f}min" for m, c in ((1, 16), (10, 16), (100, 16)))
        print(f"   {method:<7}{per_core:>11.0f}{core_h:>11.0f}{cells}")


def _hashes(n: int, shape: str, rng) -> np.ndarray:
    """``n`` 64-bit hashes: uniform random, or near-duplicate-shaped (a quarter originals, each with
    three copies 0-8 bits away, as edits move a pHash)."""
    if shape == "random":
        return rng.integers(0, 256, (n, 8), dtype=np.uint8)
    base = rng.integers(0, 256, (n // 4, 8), dtype=np.uint8)
    bits = np.unpackbits(np.repeat(base, 3, axis=0), axis=1)
    for row, k in enumerate(rng.integers(0, 9, len(bits))):
        bits[row, rng.choice(64, k, replace=False)] ^= 1
    return np.concatenate([base, np.packbits(bits, axis=1)])


def _timed_search(index, q: np.ndarray, k: int = 5) -> tuple[np.ndarray, float]:
    t = time.perf_counter()
    dist, _ = index.search(q, k)
    return dist, (time.perf_counter() - t) / len(q) * 1e3


def _binary_ivf(xb: np.ndarray, nlist: int):
    import faiss

    index = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(64), 64, nlist)
    index.train(xb[np.random.default_rng(0).choice(len(xb), min(len(xb), nlist * 64), replace=False)])
    index.add(xb)
    return index


def part5(sizes: list[int], ivf: list[tuple[int, int]], hnsw_max: int, n_queries: int = 500) -> None:
    import faiss

    from encoder.search.index import HNSW_MIN, IVF_LISTS, IVF_PROBE_SHARE, _binary_index

    faiss.omp_set_num_threads(1)  # ms per query per core
    print(f"\n5. hash index top-5 vs exact BinaryFlat (the search index's choice below {HNSW_MIN:,}; from there")
    print(
        f"   BinaryIVF{IVF_LISTS} nprobe {IVF_LISTS // IVF_PROBE_SHARE}; BinaryHNSW, the former choice, on the random"
    )
    print(
        f"   hashes up to {hnsw_max:,}), {n_queries} queries (stored hashes with 0-4 bits flipped) batched, 1 thread;"
    )
    print("   recall@5 counts a returned hash at a distance <= the exact 5th (random hashes tie often);")
    print("   build s 0.0: the index of the row above, probed differently")
    print(f"   {'hashes':>10} {'shape':<9}{'index':<28}{'build s':>8}{'ms/query':>9}{'recall@5':>9}")
    for n in sizes:
        for shape in ("random", "near-dup"):
            rng = np.random.default_rng(5)
            xb = _hashes(n, shape, rng)
            bits = np.unpackbits(xb[rng.choice(len(xb), n_queries, replace=False)], axis=1)
            for row, k in enumerate(rng.integers(0, 5, n_queries)):
                bits[row, rng.choice(64, k, replace=False)] ^= 1
            xq = np.packbits(bits, axis=1)
            exact, ms = _timed_search(_binary_index(xb, "BinaryFlat")[0], xq)
            print(f"   {n:>10,} {shape:<9}{'BinaryFlat (exact)':<28}{0:>8.1f}{ms:>9.3f}{1:>9.3f}")
            builds = [(f"BinaryIVF{nl} nprobe {npr}", nl, npr) for nl, npr in ivf]
            builds += [("BinaryHNSW32 ef128", 0, 0)] if shape == "random" and n <= hnsw_max else []
            built: dict[int, tuple] = {}
            for name, nlist, nprobe in builds:
                t = time.perf_counter()
                if nlist not in built:
                    built[nlist] = (_binary_ivf(xb, nlist) if nlist else _binary_index(xb, "BinaryHNSW")[0],)
                index, build = built[nlist][0], time.perf_counter() - t
                if nlist:
                    index.nprobe = nprobe
                got, ms = _timed_search(index, xq)
                recall = float(np.mean((np.sort(got, 1) <= exact[:, 4:5]).sum(1) / 5))
                print(f"   {n:>10,} {shape:<9}{name:<28}{build:>8.1f}{ms:>9.3f}{recall:>9.3f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default=str(ROOT / "data" / "photos200"))
    p.add_argument("--n-photos", type=int, default=5000)
    p.add_argument("--codes", type=int, default=1_000_000)
    p.add_argument("--hashes", type=int, default=1_000_000)
    p.add_argument("--nlist", type=int, default=0, help="part 2's IVF lists (0: the automatic choice for --codes)")
    p.add_argument("--scratch", default=str(ROOT / "runs" / "scale_bench"))
    p.add_argument("--ivf", default="1024:128", help="part 3's IndexBinaryIVF settings, NLIST:NPROBE,...")
    p.add_argument("--tune", default="", help="part 3b: IndexBinaryIVF NLIST:NPROBE,... against part 3's exact pairs")
    p.add_argument("--dedup-engine", default="local", help="part 3's engines for the IVF runs: local, ray or both")
    p.add_argument("--repeat", type=int, default=2, help="runs of part 1, the best kept")
    p.add_argument("--parts", default="1234", help="which parts to run (4 needs 1; 5 needs no photos)")
    p.add_argument("--hash-index", default="1000000,4000000", help="part 5's hash counts, N,N,...")
    p.add_argument("--hash-ivf", default="1024:256,1024:512,4096:1024", help="part 5's NLIST:NPROBE,...")
    p.add_argument("--part2-child", default="", help=argparse.SUPPRESS)  # one build of part 2 in its own process
    p.add_argument("--part2-also", default="", help=argparse.SUPPRESS)
    p.add_argument("--part2-queries", type=int, default=200, help=argparse.SUPPRESS)
    p.add_argument("--hnsw-max", type=int, default=1_000_000, help="part 5 builds BinaryHNSW up to this count")
    a = p.parse_args(argv)
    scratch = Path(a.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    folder = scratch / f"photos{a.n_photos}"
    if set(a.parts) - {"2", "5"} and not a.part2_child:  # parts 2 and 5 need no photos
        make_photos(Path(a.source), folder, a.n_photos)
    if a.part2_child:
        _part2_child(a.part2_child, scratch, a.codes, a.part2_queries, a.part2_also, a.nlist)
        return 0
    rates = part1(folder, scratch, a.repeat) if "1" in a.parts else None
    if "2" in a.parts:
        part2(a.codes, scratch, a.nlist)
    if "3" in a.parts:
        from encoder.hashing.hashes import hash_paths

        ivf = [tuple(int(x) for x in pair.split(":")) for pair in a.ivf.split(",") if pair]
        crops = hash_paths(sorted(folder.glob("*.jpg")), "phash", errors=[])[0]
        real = np.concatenate([edited_hashes(Path(a.source), scratch)[0], crops])
        tune = [tuple(int(x) for x in pair.split(":")) for pair in a.tune.split(",") if pair]
        part3(real, a.hashes, scratch, ivf, tune, a.dedup_engine.split(","))
    if "4" in a.parts and rates:
        part4(rates)
    if "5" in a.parts:
        hash_ivf = [tuple(int(x) for x in pair.split(":")) for pair in a.hash_ivf.split(",")]
        part5([int(x) for x in a.hash_index.split(",")], hash_ivf, a.hnsw_max)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where the images are, split into shards: a folder, a list file of paths/URLs, or an fsspec URL.

A source is listed once into a manifest in the job's work folder (``manifest.json``: what the job
is; ``manifest.parquet``: columns ``shard`` int32, ``id``, ``location`` with one Parquet row group per
shard, so a task reads only its own rows). A rerun reads the manifest instead of listing again, so
shard numbers never move under finished parts.

* folder: :func:`encoder.data.scan_folder` (ids are paths relative to the folder, sorted);
* list file (any other file): one path or URL per line (``#`` comments, blank lines ignored);
  the id is the line as written, relative paths are read from the list file's folder;
* URL (``s3://``, ``gs://``, ``http(s)://``, ``file://``, ``memory://``, ...): every image under it
  through ``fsspec``; ids are relative to the URL, as for a folder.

Example::

    >>> m = make_manifest("photos/", "runs/job", shard_size=10_000)   # doctest: +SKIP
    >>> m.n_shards, shard_rows("runs/job", 0)[0][:2]                   # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from encoder.atomic import atomic_path, write_json
from encoder.data import IMAGE_EXTENSIONS, ImageLoadError, open_image, scan_folder

DEFAULT_SHARD_SIZE = 10_000
MANIFEST = "manifest.json"
MANIFEST_ROWS = "manifest.parquet"


@dataclass
class Manifest:
    """A listed source: ``spec`` (what the job is; a rerun must match it), ``root`` (where ids are
    relative to), ``n_shards``, ``n_images`` and ``skipped`` ``[(location, reason)]`` found while listing."""

    spec: dict[str, Any]
    root: str
    n_shards: int
    n_images: int
    skipped: list[tuple[str, str]]


def is_url(location: str) -> bool:
    return "://" in location


def _list_url(url: str) -> tuple[str, list[str], list[str], list[tuple[str, str]]]:
    import fsspec  # the [ray] extra: only a URL source needs it

    fs, base = fsspec.core.url_to_fs(url)
    if not fs.exists(base):
        raise FileNotFoundError(f"image source not found: {url}")
    if not fs.isdir(base):
        raise NotADirectoryError(f"expected a folder of images at {url}, got a file (a list file must be local)")
    base = base.rstrip("/")
    ids, locations, skipped = [], [], []
    for f in sorted(fs.find(base)):
        rel = f[len(base) :].lstrip("/")
        if any(part.startswith(".") for part in rel.split("/")):
            continue  # hidden, as scan_folder
        if Path(rel).suffix.lower() not in IMAGE_EXTENSIONS:
            skipped.append((fs.unstrip_protocol(f), f"not an image extension ({Path(rel).suffix or 'none'})"))
            continue
        ids.append(rel)
        locations.append(fs.unstrip_protocol(f))
    return url, ids, locations, skipped


def _list_file(path: Path) -> tuple[str, list[str], list[str], list[tuple[str, str]]]:
    lines = [s.strip() for s in path.read_text().splitlines()]
    ids = [s for s in lines if s and not s.startswith("#")]
    locations = [s if is_url(s) or os.path.isabs(s) else str(path.parent.absolute() / s) for s in ids]
    return str(path.parent.absolute()), ids, locations, []


def list_source(source: str) -> tuple[str, list[str], list[str], list[tuple[str, str]]]:
    """``(root, ids, locations, skipped)`` of a folder, list file or URL (module docstring).

    Raises:
        FileNotFoundError: the source does not exist (named).
    """
    if is_url(source):
        return _list_url(source)
    p = Path(source)
    if p.is_dir():
        scan = scan_folder(p)
        return str(scan.root), scan.ids, [str(q) for q in scan.paths], [(str(q), r) for q, r in scan.skipped]
    if p.is_file():
        return _list_file(p)
    raise FileNotFoundError(f"image source not found: {source} (expected a folder, a list file or a URL)")


def make_manifest(source: str, work: str | os.PathLike, spec: dict[str, Any], shard_size: int) -> Manifest:
    """List ``source`` into ``work``'s manifest, or read the one a previous run of the same job wrote.

    Raises:
        ValueError: ``work`` holds the manifest of another job (another source, method or options).
    """
    if shard_size < 1:
        raise ValueError(f"shard_size={shard_size} must be >= 1")
    work = Path(work)
    spec = {**spec, "source": source, "shard_size": shard_size}
    if (work / MANIFEST).is_file():
        head = json.loads((work / MANIFEST).read_text())
        if head["spec"] != spec:
            raise ValueError(
                f"work folder {work} holds another job ({head['spec']}); this one is {spec}: "
                "give another --work folder or delete it"
            )
        return Manifest(head["spec"], head["root"], head["n_shards"], head["n_images"], head["skipped"])
    import pyarrow as pa
    import pyarrow.parquet as pq

    root, ids, locations, skipped = list_source(source)
    n_shards = (len(ids) + shard_size - 1) // shard_size
    shard = [i // shard_size for i in range(len(ids))]
    table = pa.table({"shard": pa.array(shard, pa.int32()), "id": ids, "location": locations})
    with atomic_path(work / MANIFEST_ROWS) as tmp:
        pq.write_table(table, tmp, row_group_size=shard_size)
    m = Manifest(spec, root, n_shards, len(ids), [list(s) for s in skipped])
    # the header last: its presence says the rows are complete
    head = {"spec": spec, "root": root, "n_shards": n_shards, "n_images": len(ids), "skipped": m.skipped}
    write_json(work / MANIFEST, head)
    return m


def read_spec(work: str | os.PathLike) -> dict[str, Any]:
    """The job's spec from its manifest header."""
    return json.loads((Path(work) / MANIFEST).read_text())["spec"]


def shard_rows(work: str | os.PathLike, shard: int) -> tuple[list[str], list[str]]:
    """``(ids, locations)`` of one shard (one Parquet row group of the manifest)."""
    import pyarrow.parquet as pq

    t = pq.ParquetFile(Path(work) / MANIFEST_ROWS).read_row_group(shard, columns=["shard", "id", "location"])
    if len(t) and t.column("shard")[0].as_py() != shard:
        raise ValueError(f"{Path(work) / MANIFEST_ROWS}: row group {shard} holds shard {t.column('shard')[0]}")
    return t.column("id").to_pylist(), t.column("location").to_pylist()


def open_item(location: str, **options: Any) -> Image.Image:
    """Decode one image of a source: a local path through :func:`encoder.data.open_image`, a URL's
    bytes (never a temp copy) through the same :func:`encoder.data.open_image`; same checks, same
    ``options`` (``max_pixels``, ``draft_size``, ``luma_only``).

    Raises:
        ImageLoadError: unreadable, missing, or not an image; the message names the location.
    """
    if not is_url(location):
        return open_image(location, **options)
    import fsspec

    try:
        with fsspec.open(location, "rb") as f:
            data = f.read()
    except FileNotFoundError as e:
        raise ImageLoadError(location, "no such file") from e
    except OSError as e:
        raise ImageLoadError(location, f"cannot read: {e}") from e
    return open_image(data, name=location, **options)

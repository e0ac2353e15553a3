"""What the web page does, without the web: loaded indexes, queries of uploaded bytes, duplicate
groups, palettes and training logs. :mod:`encoder.web.app` puts HTTP around it.

Everything is loaded once by :class:`Service` (indexes memory-mapped, one method per index and
mirror setting, built by :func:`encoder.search.methods.method_for_index` from the index's meta,
so the model an index records is the one that answers). Nothing is ever written into an index
folder. Uploads are read first by :class:`encoder.web.sandbox.Sandbox` (a worker process under a
memory and a time limit: an upload it cannot read is refused with the reason, and never reaches
this process's decoder) and live in memory for their request only.

Results have the shapes of the command line's ``--json`` (``search.py query --json``,
``search.py dedup --json``, ``quantize.py --json``) plus what a page needs to show them
(``url`` of each stored image, ``recon`` PNG data URLs of decoded ae neighbours).

Every method here is blocking CPU work: the app runs it in a bounded thread pool.
"""

from __future__ import annotations

import base64
import io
import os
import struct
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import numpy as np
from PIL import Image

from encoder.atomic import finite
from encoder.data import IMAGE_EXTENSIONS, ImageLoadError, load_rgb
from encoder.hashing.dedup import find_groups
from encoder.hashing.hashes import HASH_BITS
from encoder.palette.limits import check_n_colors
from encoder.search.index import Index
from encoder.search.methods import applicable_options, method_for_index
from encoder.web.sandbox import Sandbox, remove_stale, upload_file

MAX_K = 100
MAX_GROUPS = 200  # duplicate groups returned at most (the counts cover them all)
BROWSER_FORMATS = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".jpe": "image/jpeg",
    ".png": "image/png",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
}


class BadInput(ValueError):
    """A request the service refuses; ``status`` is the HTTP status it maps to."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


class NotFound(BadInput):
    def __init__(self, message: str):
        super().__init__(message, 404)


def png_data_url(gray: np.ndarray) -> str:
    """(S,S) float in [0,1] or uint8 -> ``data:image/png;base64,...``."""
    a = np.asarray(gray)
    if a.dtype != np.uint8:
        a = np.clip(np.rint(a * 255), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


class Loaded:
    """One index served under ``name``: the index, its root, its methods (plain and mirrored)."""

    def __init__(self, name: str, path: Path, checkpoint: str | None):
        self.name, self.path = name, path
        self.index = Index.load(path, mmap=True)
        meta = self.index.meta
        self.method_name = meta.get("method")
        self.kind = self.index.kind
        self.root = Path(meta.get("root") or ".").resolve()
        # a list's ids as a set; a Parquet column (1M+ ids) is asked per request, never turned into a set
        self.ids: Collection[str] = set(self.index.ids) if isinstance(self.index.ids, list) else self.index.ids
        # every index is offered the same settings; each method keeps those it takes
        offered = {"show_recon": True, **({"checkpoint": checkpoint} if checkpoint is not None else {})}
        opts = applicable_options(self.method_name, offered)
        self.methods = {
            mirror: method_for_index(meta, self.index.attachments, mirror=mirror, **opts) for mirror in (False, True)
        }
        self._groups: dict[tuple[int, bool], list[dict]] = {}

    def describe(self) -> dict:
        return {
            "name": self.name,
            "method": self.method_name,
            "kind": self.kind,
            "count": len(self.index),
            "mirror": True,
            "dedup": self.index.binary,
        }

    def url(self, ident: str) -> str:
        return f"/images/{quote(self.name, safe='')}/{quote(ident, safe='/')}"

    def file(self, ident: str) -> Path:
        """The stored file of id ``ident``: only ids the index holds, only inside its root (symlinks resolved)."""
        if ident not in self.ids:
            raise NotFound(f"index {self.name!r} holds no image with id {ident!r}")
        p = (self.root / ident).resolve()
        if not p.is_relative_to(self.root) or not p.is_file():
            raise NotFound(f"index {self.name!r}: image {ident!r} is not a file inside {self.name}'s folder")
        return p


class Service:
    """The loaded indexes and the operations of the page; see the module docstring."""

    def __init__(
        self,
        index_dirs: Sequence[str | os.PathLike],
        checkpoint: str | None = None,
        run_dir: str | os.PathLike | None = None,
        sandbox: dict | None = None,
    ):
        if not index_dirs:
            raise ValueError("give at least one index folder")
        self.indexes: dict[str, Loaded] = {}
        for d in index_dirs:
            path = Path(d)
            name = path.resolve().name or "index"
            base, n = name, 2
            while name in self.indexes:
                name, n = f"{base}-{n}", n + 1
            self.indexes[name] = Loaded(name, path, checkpoint)
        self.run_dir = Path(run_dir).resolve() if run_dir is not None else None
        if self.run_dir is not None and not self.run_dir.is_dir():
            raise NotADirectoryError(f"--run-dir {run_dir} is not a folder")
        remove_stale()  # uploads a killed server left behind
        self.sandbox = Sandbox(**(sandbox or {}))

    def close(self) -> None:
        self.sandbox.close()

    # -- lookups
    def get(self, name: str) -> Loaded:
        try:
            return self.indexes[name]
        except KeyError:
            raise NotFound(f"index {name!r} is not loaded; loaded: {', '.join(self.indexes)}") from None

    def describe(self) -> dict:
        return {"indexes": [x.describe() for x in self.indexes.values()], "training": self.run_dir is not None}

    # -- uploads
    @contextmanager
    def _upload(self, data: bytes, filename: str | None) -> Iterator[tuple[Path, str]]:
        """(a path holding ``data``, the name to show) for the request, once the sandbox read it."""
        shown = Path(filename or "upload").name or "upload"
        if not data:
            raise BadInput(f"{shown}: empty file (0 bytes)")
        reason = self.sandbox.check(data)
        if reason is not None:
            raise BadInput(f"{shown}: {reason}")
        suffix = Path(shown).suffix.lower()
        with upload_file(data, suffix if suffix in IMAGE_EXTENSIONS else ".img") as path:
            yield path, shown

    def _results(self, x: Loaded, path: Path, k: int, mirror: bool, shown: str) -> dict:
        if not 1 <= k <= MAX_K:
            raise BadInput(f"k={k} must be in [1, {MAX_K}]")
        errors: list = []
        got = x.methods[mirror].query(x.index, [path], k, errors=errors)
        if got is None or not got.paths:
            reason = str(errors[0][1]) if errors else "cannot be read"
            raise BadInput(f"{shown}: {reason.replace(str(path), shown)}")
        recons = got.recons[0] if got.recons is not None else None
        neighbours = []
        for r, (d, i) in enumerate(zip(got.distances[0], got.ids[0])):
            n = {"rank": r + 1, "distance": d, "id": i, "path": str(x.root / i), "url": x.url(i)}
            if recons is not None and len(recons) > r:
                n["recon"] = png_data_url(recons[r])
            neighbours.append(n)
        return finite(
            {
                "query": shown,
                "index": x.name,
                "method": x.method_name,
                "k": k,
                "mirror": mirror,
                "neighbours": neighbours,
            }
        )

    def query_bytes(self, name: str, data: bytes, filename: str | None, k: int = 5, mirror: bool = False) -> dict:
        """Top-``k`` of an uploaded image in index ``name`` (``search.py query --json``'s row)."""
        x = self.get(name)
        with self._upload(data, filename) as (path, shown):
            try:
                return self._results(x, path, k, mirror, shown)
            except (ValueError, NotImplementedError, OSError, EOFError, struct.error) as e:
                if isinstance(e, BadInput):
                    raise
                # decoded within the limits, but a conversion a method makes refused it
                raise BadInput(f"{shown}: cannot be read: {str(e).replace(str(path), shown)}") from None

    def similar(self, name: str, ident: str, k: int = 5, mirror: bool = False) -> dict:
        """Top-``k`` of a stored image (by id) in index ``name``."""
        x = self.get(name)
        res = self._results(x, x.file(ident), k, mirror, ident)
        res["query_url"] = x.url(ident)
        return res

    def duplicates(self, name: str, threshold: int, include_flat: bool = False, limit: int = MAX_GROUPS) -> dict:
        """Groups of near-duplicates (``search.py dedup --json``), largest first, at most ``limit``."""
        x = self.get(name)
        if not x.index.binary:
            hashes = [n for n, o in self.indexes.items() if o.index.binary]
            raise BadInput(
                f"duplicates need a hash index; {name} holds {x.method_name} codes "
                f"(hash indexes loaded: {', '.join(hashes) or 'none'})"
            )
        if not 0 <= threshold <= HASH_BITS:
            raise BadInput(f"threshold={threshold} must be in [0, {HASH_BITS}]")
        key = (threshold, include_flat)
        if key not in x._groups:
            x._groups[key] = find_groups(x.index.vectors, x.index.ids, threshold, x.index.flat_mask(), include_flat)
        groups = x._groups[key]
        shown = [{**g, "urls": [x.url(i) for i in g["ids"]]} for g in groups[: max(0, limit)]]
        return {
            "index": name,
            "threshold": threshold,
            "total_groups": len(groups),
            "total_images": sum(len(g["ids"]) for g in groups),
            "groups": shown,
        }

    def image(self, name: str, ident: str) -> tuple[Path | None, bytes | None, str]:
        """A stored image as (file, None, type) when a browser shows its format, else (None, PNG bytes, type)."""
        p = self.get(name).file(ident)
        kind = BROWSER_FORMATS.get(p.suffix.lower())
        if kind:
            return p, None, kind
        buf = io.BytesIO()
        Image.fromarray(load_rgb(p)).save(buf, format="PNG")
        return None, buf.getvalue(), "image/png"

    # -- palettes
    def quantize_bytes(
        self, data: bytes, filename: str | None, n_colors: str = "16", target_psnr: float = 38.0
    ) -> dict:
        """A palette of ``n_colors`` (2..256 or ``"auto"``) of an uploaded photo (``quantize.py --json``'s
        row) and its indexed PNG as a data URL."""
        from encoder.palette.api import quantize
        from encoder.palette.report import auto_n_colors, palette_stats

        n = _palette_size(n_colors)
        with self._upload(data, filename) as (path, shown):
            img = _load_rgb(path, shown)
        curve = None
        if n is None:
            if not 10 <= target_psnr <= 60:
                raise BadInput(f"target_psnr={target_psnr} must be in [10, 60] dB")
            n, curve = auto_n_colors(img, target_psnr=target_psnr, full=False)
            n = n or 256
        q = quantize(img, n)
        png = q.png_bytes()
        row = {
            "file": shown,
            "method": "kmeans",
            "auto": curve is not None,
            **palette_stats(img, q, source_bytes=len(data), png=png, full=False),
            "width": int(img.shape[1]),
            "height": int(img.shape[0]),
            "palette": [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in q.palette.tolist()],
            "png": "data:image/png;base64," + base64.b64encode(png).decode(),
        }
        if curve is not None:
            row["curve"] = [{key: c[key] for key in ("n_colors", "k", "psnr", "bytes_after")} for c in curve]
        return finite(row)


def _palette_size(n_colors: str) -> int | None:
    """``"auto"`` -> None, else the palette size as an int in [2, 256] (BadInput otherwise)."""
    if str(n_colors).strip().lower() == "auto":
        return None
    try:
        n = int(n_colors)
    except (TypeError, ValueError):
        raise BadInput(f"n_colors={n_colors!r} must be an integer in [2, 256] or 'auto'") from None
    try:
        check_n_colors(n)
    except ValueError as e:
        raise BadInput(str(e)) from None
    return n


def _load_rgb(path: Path, shown: str) -> np.ndarray:
    try:
        return load_rgb(path)
    except ImageLoadError as e:
        raise BadInput(f"{shown}: {e.reason}") from None


__all__ = ["Service", "Loaded", "BadInput", "NotFound", "MAX_K", "finite", "png_data_url"]

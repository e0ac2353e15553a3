"""Reading an index directory's files (:mod:`encoder.search.index`): each refused with a message
naming the file when it is missing, truncated, edited or not what it should be; nothing is unpickled."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np

from encoder.search.errors import CorruptIndexError


def read_json(file: Path, want: type):
    if not file.is_file():
        raise FileNotFoundError(f"index file missing: {file}")
    try:
        obj = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise CorruptIndexError(f"{file}: not valid JSON ({e})") from None
    if not isinstance(obj, want):
        raise CorruptIndexError(f"{file}: expected a JSON {want.__name__}, got {type(obj).__name__}")
    return obj


def read_vectors(file: Path, dtype, mmap: bool = False) -> np.ndarray:
    """A 2-D .npy of ``dtype``; pickled or object data is refused, never loaded."""
    if not file.is_file():
        raise FileNotFoundError(f"index file missing: {file}")
    try:
        v = np.load(file, allow_pickle=False, mmap_mode="r" if mmap else None)
    except (ValueError, OSError, EOFError) as e:
        raise CorruptIndexError(f"{file}: not a plain .npy array ({e})") from None
    if not isinstance(v, np.ndarray) or v.ndim != 2 or v.dtype != dtype:
        raise CorruptIndexError(
            f"{file}: expected a 2-D {np.dtype(dtype).name} array, "
            f"got {getattr(v, 'shape', '?')} {getattr(v, 'dtype', type(v).__name__)}"
        )
    return v


def faiss_reason(e: RuntimeError) -> str:
    """FAISS's C++ error without its source location."""
    msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
    if "read error" in msg:
        return "file ends early (truncated?)"
    return re.sub(r"^.* at \S+:\d+: (Error: )?", "", msg)[:200]


INDEX_FILES = frozenset({"meta.json", "ids.json", "hashes.npy", "codes.npy", "index.faiss", "index.ivfdata"})
ATTACHMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def read_attachments(path: Path, meta: dict) -> dict[str, bytes]:
    """The attachment files meta.json lists, checked against their recorded size and SHA-256."""
    listed = meta.get("attachments", {})
    if not isinstance(listed, dict):
        raise CorruptIndexError(f"{path / 'meta.json'}: 'attachments' must be an object")
    out = {}
    for name, want in listed.items():
        file = path / name
        if not ATTACHMENT_NAME.fullmatch(name) or name in INDEX_FILES or not file.is_file():
            raise CorruptIndexError(f"{path}: attachment {name!r} listed in meta.json is missing or not a plain name")
        data = file.read_bytes()
        if not isinstance(want, dict) or hashlib.sha256(data).hexdigest() != want.get("sha256"):
            raise CorruptIndexError(f"{file}: contents differ from meta.json's SHA-256 (edited or truncated)")
        out[name] = data
    return out

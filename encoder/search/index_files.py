"""Reading an index directory's files (:mod:`encoder.search.index`): each refused with a message
naming the file when it is missing, truncated, edited or not what it should be; nothing is unpickled.

Ids are ``ids.json`` (a list of str) or, from ``IDS_PARQUET_MIN`` rows when pyarrow is installed,
``ids.parquet`` (one string column ``id``, row r = vector row r), read into an :class:`IdColumn`:
the Arrow strings stay as they are and only the rows asked for become ``str``. :func:`ids_at`,
:func:`ids_in` and :func:`n_distinct` answer for either form, a list with Python, a column in Arrow.

Example:
    >>> ids = ["a.jpg", "b.jpg", "a.jpg"]
    >>> ids_at(ids, np.array([2, 1])), ids_in(ids, ["a.jpg"]).tolist(), n_distinct(ids)
    (['a.jpg', 'b.jpg'], [True, False, True], 2)
"""

from __future__ import annotations

import bisect
import hashlib
import importlib.util
import json
import operator
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from encoder.atomic import write_json
from encoder.search.errors import CorruptIndexError

# Below this many rows ids stay JSON and pyarrow is never imported, so a small query does not pay its
# import; from here Parquet loads faster even counting that import, and saves faster (bench/ids_bench.py).
IDS_PARQUET_MIN = 1_000_000
_ITER_ROWS = 65_536  # rows turned into str at a time when a column is iterated
_FEW_ROWS = 64  # up to this many rows (a query's hits) are read one by one, past it a take per chunk


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


INDEX_FILES = frozenset(
    {"meta.json", "ids.json", "ids.parquet", "hashes.npy", "codes.npy", "index.faiss", "index.ivfdata"}
)
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


class IdColumn(Sequence[str]):
    """Immutable ids over a pyarrow string column (an ``Array`` or ``ChunkedArray`` without nulls).

    ``len``; ``col[i]`` -> str; ``col[a:b:s]`` -> IdColumn (a plain slice shares the buffers);
    iteration yields str chunk by chunk; ``x in col`` and ``==`` a sequence of str are answered
    without a Python list of every id. :meth:`take`, :meth:`isin` and :meth:`n_distinct` serve
    :func:`ids_at`, :func:`ids_in` and :func:`n_distinct`.
    """

    __slots__ = ("_col", "_chunks", "_starts", "_start_list")
    __hash__ = None  # type: ignore[assignment]  # equal to lists, so unhashable like them

    def __init__(self, column: Any) -> None:
        import pyarrow as pa

        if isinstance(column, pa.Array):
            column = pa.chunked_array([column], column.type)
        if not isinstance(column, pa.ChunkedArray) or not (
            pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
        ):
            raise TypeError(f"IdColumn needs a pyarrow string array, got {type(column).__name__}")
        if column.null_count:
            raise ValueError(f"ids must not be null: {column.null_count} nulls in the column")
        self._col = column
        self._chunks = column.chunks  # held once: ChunkedArray.chunk(i) builds a new wrapper per call
        self._starts = np.cumsum([0] + [len(c) for c in self._chunks], dtype=np.int64)
        self._start_list = self._starts.tolist()

    @classmethod
    def concat(cls, columns: Iterable[Sequence[str]]) -> IdColumn:
        """One column of the rows of ``columns`` (IdColumns, whose chunks are shared, or lists) in order."""
        import pyarrow as pa

        arrow = [
            col.arrow if isinstance(col, IdColumn) else pa.chunked_array([pa.array(col, pa.string())])
            for col in columns
        ]
        chunks = [c for col in arrow for c in col.chunks]
        kind = pa.string() if all(c.type == pa.string() for c in chunks) else pa.large_string()
        return cls(pa.chunked_array([c.cast(kind) for c in chunks], kind))

    @property
    def arrow(self):
        """The ``pyarrow.ChunkedArray`` of strings."""
        return self._col

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, i):
        if isinstance(i, slice):
            start, stop, step = i.indices(len(self))
            if step == 1:
                return IdColumn(self._col.slice(start, max(0, stop - start)))
            rows = np.arange(start, stop, step, dtype=np.int64)
            if step < 0:
                return IdColumn.concat([self.take(rows)])
            return IdColumn(self._taken(rows))
        n, i = len(self), operator.index(i)
        if not -n <= i < n:
            raise IndexError(f"id row {i} out of range for {n} ids")
        return self._one(i % n)

    def _one(self, i: int) -> str:
        c = bisect.bisect_right(self._start_list, i) - 1
        return self._chunks[c][i - self._start_list[c]].as_py()

    def _by_chunk(self, rows: np.ndarray):
        """``(chunk, positions in rows, rows within the chunk)`` for each chunk that ``rows`` touch, in
        chunk order; Arrow's take on a chunked column joins every chunk first, a copy of all ids."""
        rows = np.asarray(rows, np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"id rows must lie in [0, {len(self)}), got {rows.min()}..{rows.max()}")
        chunk = np.searchsorted(self._starts, rows, side="right") - 1
        order = np.argsort(chunk, kind="stable")
        for pos in np.split(order, np.flatnonzero(np.diff(chunk[order])) + 1) if len(rows) else []:
            c = int(chunk[pos[0]])
            yield self._chunks[c], pos, rows[pos] - self._starts[c]

    def _taken(self, rows: np.ndarray):
        """The ChunkedArray of ascending ``rows``."""
        import pyarrow as pa

        return pa.chunked_array([chunk.take(local) for chunk, _, local in self._by_chunk(rows)], self._col.type)

    def __iter__(self) -> Iterator[str]:
        for chunk in self._col.chunks:
            for s in range(0, len(chunk), _ITER_ROWS):
                yield from chunk.slice(s, _ITER_ROWS).to_pylist()

    def __contains__(self, x: object) -> bool:
        import pyarrow.compute as pc

        return isinstance(x, str) and len(self) > 0 and pc.index(self._col, x).as_py() >= 0

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        if len(other) != len(self):
            return False
        if isinstance(other, IdColumn) and other.arrow.type == self._col.type:
            return bool(self._col.equals(other.arrow))
        return all(a == b for a, b in zip(self, other))

    def __repr__(self) -> str:
        head = ", ".join(repr(x) for x in self[:3])
        return f"IdColumn({len(self)} ids: {head}{', ...' if len(self) > 3 else ''})"

    def take(self, rows: np.ndarray) -> list[str]:
        """The ids of ``rows`` ((M,) int in [0, N), any order), as str."""
        rows = np.asarray(rows, np.int64)
        if len(rows) <= _FEW_ROWS and (not len(rows) or 0 <= rows.min() and rows.max() < len(self)):
            return [self._one(r) for r in rows.tolist()]
        out = np.empty(len(rows), object)
        for chunk, pos, local in self._by_chunk(rows):
            out[pos] = chunk.take(local).to_pylist()
        return out.tolist()

    def isin(self, values: Iterable[str]) -> np.ndarray:
        """(N,) bool: which rows hold one of ``values``."""
        import pyarrow as pa
        import pyarrow.compute as pc

        want = pa.array(list(dict.fromkeys(values)), pa.string())
        if not len(want) or not len(self):
            return np.zeros(len(self), bool)
        return pc.is_in(self._col, value_set=want).to_numpy(zero_copy_only=False).astype(bool, copy=False)

    def n_distinct(self) -> int:
        """How many different ids (Arrow's hash table, not a Python set)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        # unique() is faster than count_distinct() on path-like ids; 64-bit offsets (the text is shared,
        # not copied) because the distinct ids of a big column outgrow a string array's 2 GB
        return len(pc.unique(self._col.cast(pa.large_string()))) if len(self) else 0


def ids_at(ids: Sequence[str], rows: np.ndarray) -> list[str]:
    """The ids (a list or an :class:`IdColumn`) of ``rows`` ((M,) int), as a list of str."""
    if isinstance(ids, IdColumn):
        return ids.take(rows)
    return [ids[r] for r in np.asarray(rows, np.int64).tolist()]


def ids_in(ids: Sequence[str], values: Iterable[str]) -> np.ndarray:
    """(N,) bool: which of the N ids (a list or an :class:`IdColumn`) are among ``values``."""
    if isinstance(ids, IdColumn):
        return ids.isin(values)
    want = set(values)
    return np.fromiter((x in want for x in ids), bool, len(ids))


def n_distinct(ids: Sequence[str]) -> int:
    """How many different ids (a list or an :class:`IdColumn`)."""
    return ids.n_distinct() if isinstance(ids, IdColumn) else len(set(ids))


def first_rows(ids: Sequence[str], want: Iterable[str]) -> np.ndarray:
    """(M,) int64: the first row of each wanted id among ``ids`` (a list or an :class:`IdColumn`);
    KeyError names one that is missing. Only the rows holding a wanted id become str."""
    want = list(want)
    hits = np.flatnonzero(ids_in(ids, want))
    pos: dict[str, int] = {}
    for r, x in zip(hits.tolist(), ids_at(ids, hits)):
        pos.setdefault(x, r)
    return np.array([pos[x] for x in want], dtype=np.int64)


def pyarrow_installed() -> bool:
    """Whether pyarrow (the ``[ray]`` extra) can be imported; asked without importing it."""
    return importlib.util.find_spec("pyarrow") is not None


def write_ids(folder: Path, ids: Sequence[str]) -> str:
    """Write ``ids.parquet`` (from ``IDS_PARQUET_MIN`` rows, pyarrow installed) or ``ids.json`` into
    ``folder`` (a fresh directory of :func:`encoder.atomic.atomic_dir`); returns the file name."""
    if len(ids) < IDS_PARQUET_MIN or not pyarrow_installed():
        write_json(folder / "ids.json", list(ids))
        return "ids.json"
    import pyarrow as pa
    import pyarrow.parquet as pq

    column = ids.arrow if isinstance(ids, IdColumn) else pa.array(ids, pa.string())
    # page checksums: an edited byte is refused on load instead of read as another id; unique ids
    # gain nothing from a dictionary, and zstd gives a smaller file than snappy at the same read time
    pq.write_table(
        pa.table({"id": column}),
        folder / "ids.parquet",
        compression="zstd",
        use_dictionary=False,
        write_page_checksum=True,
    )
    return "ids.parquet"


def read_ids(path: Path) -> Sequence[str]:
    """The ids of index directory ``path``: ``ids.parquet`` as an :class:`IdColumn`, else ``ids.json``
    as a list. Refused (CorruptIndexError naming the file) when unreadable or not one string column."""
    pq_file, json_file = path / "ids.parquet", path / "ids.json"
    if not pq_file.is_file():
        ids = read_json(json_file, list)
        if not all(isinstance(i, str) for i in ids):
            raise CorruptIndexError(f"{json_file}: expected a list of path strings")
        return ids
    if json_file.exists():
        raise CorruptIndexError(f"{path}: holds both ids.json and ids.parquet; an index has one of them")
    if not pyarrow_installed():
        raise ImportError(f"{pq_file}: reading a Parquet id column needs pyarrow: pip install '.[ray]'")
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pq_file, page_checksum_verification=True)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise CorruptIndexError(f"{pq_file}: not a readable Parquet file ({str(e)[:200]})") from None
    col = table.column(0) if table.num_columns == 1 and table.column_names == ["id"] else None
    if col is None or not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)) or col.null_count:
        got = ", ".join(f"{f.name}: {f.type}" for f in table.schema) + (
            f", {col.null_count} nulls" if col is not None and col.null_count else ""
        )
        raise CorruptIndexError(f"{pq_file}: expected one string column 'id' without nulls, got {got}")
    return IdColumn(col)

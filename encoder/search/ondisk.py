"""IVF indexes whose inverted lists live in a file beside ``index.faiss`` (``index.ivfdata``), memory-mapped.

:func:`merge` writes one from part indexes (``faiss.contrib.ondisk.merge_ondisk``: parts filled apart
from one trained empty IVF, their lists concatenated into one file, never all in RAM); :func:`read`
maps it again, read-only, from wherever its folder now is; :func:`write` gives a new folder its own
link (or copy) of the list file; :func:`in_memory` reads the lists into RAM before anything changes
them (an add to mapped lists would write into the file being served, and FAISS aborts the whole
process on a read-only one).

index.faiss keeps the list file's path as FAISS wrote it (a temporary folder's) but it is never
used: the lists are opened beside the index file read, which is what ``IO_FLAG_ONDISK_SAME_DIR``
does, without the line that flag prints on stdout (it would corrupt ``search.py query --json``).
So a moved or renamed index folder still loads.

Example::

    >>> merge("work/ivf/trained.index", ["work/ivf/part-00000.index", ...], Path("idx"))  # doctest: +SKIP
    >>> index = read("idx/index.faiss")       # lists mapped from idx/index.ivfdata   # doctest: +SKIP
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from encoder.search.errors import CorruptIndexError

LISTS_SUFFIX = ".ivfdata"
ALL_IDS = (0, 2**62)  # an id range holding every row number


def lists_file(index_file: str | os.PathLike) -> Path:
    """Where an index file's on-disk lists are: ``index.faiss`` -> ``index.ivfdata`` beside it."""
    return Path(index_file).with_suffix(LISTS_SUFFIX)


def ondisk_lists(index) -> Any:
    """The index's ``OnDiskInvertedLists``, or None when it has none (not an IVF, or lists in RAM)."""
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        return None
    lists = faiss.downcast_InvertedLists(ivf.invlists) if ivf.invlists is not None else None
    return lists if isinstance(lists, faiss.OnDiskInvertedLists) else None


def read(index_file: str | os.PathLike) -> Any:
    """The index in ``index_file`` with its lists mapped read-only from the list file beside it;
    None when there is no list file there (an ordinary index, read the ordinary way).

    Raises:
        CorruptIndexError: the list file is shorter than index.faiss says (truncated), naming it.
    """
    path = lists_file(index_file)
    if not path.is_file():
        return None
    index = faiss.read_index(str(index_file), faiss.IO_FLAG_SKIP_IVF_DATA | faiss.IO_FLAG_READ_ONLY)
    lists = ondisk_lists(index)
    if lists is None:  # a stray list file beside an index that keeps its own lists
        return None
    size = path.stat().st_size
    if size < lists.totsize:
        raise CorruptIndexError(f"{path}: {size} bytes but index.faiss needs {lists.totsize} (truncated)")
    lists.filename = str(path)
    lists.read_only = True
    lists.do_mmap()
    return index


def link_or_copy(src: Path, dst: Path) -> None:
    """``dst`` as a hard link to ``src`` (no bytes copied), or a copy where the file system cannot link."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def write(index, index_file: str | os.PathLike) -> None:
    """Write ``index``; one with on-disk lists also gets its list file beside ``index_file``."""
    faiss.write_index(index, str(index_file))
    lists = ondisk_lists(index)
    if lists is not None:
        link_or_copy(Path(lists.filename), lists_file(index_file))


def in_memory(index) -> Any:
    """The index with its on-disk lists copied into RAM (in place; the list file is left as it is)."""
    lists = ondisk_lists(index)
    if lists is None:
        return index
    ivf = faiss.extract_index_ivf(index)
    ram = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)
    lists.copy_subset_to(ram, faiss.InvertedLists.SUBSET_TYPE_ID_RANGE, *ALL_IDS)
    ivf.replace_invlists(ram, True)
    ram.this.disown()  # the index owns the lists now
    return index


def merge(trained_file: str | os.PathLike, part_files: Sequence[str | os.PathLike], folder: Path) -> None:
    """``folder/index.faiss`` + ``folder/index.ivfdata``: the trained empty IVF in ``trained_file`` holding
    the lists of every part index (each filled from that same trained index, ids as the parts gave them)."""
    from faiss.contrib.ondisk import merge_ondisk

    index = faiss.read_index(str(trained_file))
    merge_ondisk(index, [str(p) for p in part_files], str(folder / f"index{LISTS_SUFFIX}"))
    faiss.write_index(index, str(folder / "index.faiss"))


def npy_file(array: np.ndarray) -> Path | None:
    """The .npy file that ``array`` maps whole (``np.load(mmap_mode=...)``, ``open_memmap``), else None."""
    root = array
    while isinstance(root.base, np.ndarray):
        root = root.base
    if not isinstance(root, np.memmap) or root.filename is None:
        return None
    ptr = array.__array_interface__["data"][0]
    if (array.shape, array.dtype) != (root.shape, root.dtype) or ptr != root.__array_interface__["data"][0]:
        return None
    if not array.flags.c_contiguous:
        return None
    with open(root.filename, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        whole = (shape, dtype, fortran, f.tell()) == (root.shape, root.dtype, False, root.offset)
    return Path(root.filename) if whole else None

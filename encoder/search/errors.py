"""The errors of an index, in a leaf module: the index's file readers (index_files.py) and lock
(lock.py), which index.py imports, raise them too, so they cannot live in index.py without a circle;
methods.py and views.py raise them when an index and a method disagree."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class IndexMismatchError(ValueError):
    """An index and the hashes/codes offered to it come from different methods or versions."""


class CorruptIndexError(ValueError):
    """A file of an index directory is unreadable or inconsistent; the message names it."""


class IndexBusyError(ValueError):
    """Another process kept an index's writer lock longer than we were willing to wait."""


def check_meta(meta: Mapping[str, Any], **want: Any) -> None:
    """Raise IndexMismatchError naming both values unless every ``meta[key] == want[key]``.

    Example:
        >>> check_meta({"method": "phash", "version": "v1"}, method="phash", version="v1")
    """
    for key, value in want.items():
        have = meta.get(key)
        if have != value:
            raise IndexMismatchError(
                f"index {key} is {have!r} but the new data has {key} {value!r}; "
                "hashes/codes of different definitions cannot be compared - build a new index"
            )

"""The Method interface: how images become vectors an index stores and a query compares.

Subclasses and the registry are in :mod:`encoder.search.methods` (hashes, autoencoder codes) and
:mod:`encoder.search.baselines` (raw pixels, PCA: evaluation only); see methods' docstring.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np

from encoder.search import ann
from encoder.search.errors import IndexMismatchError

_OPTION = re.compile(r"`(\w+)`")


class OptionError(ValueError):
    """A method option that is missing, does not apply or is refused. The message marks each option
    name with backquotes; ``str(e)`` gives the bare names (``metric``) and :meth:`spelled` another
    spelling of them, such as the command line's flags (``--metric``).

    Example:
        >>> e = OptionError("`metric` applies to `method` ae, not phash")
        >>> str(e), e.spelled(lambda name: "--" + name)
        ('metric applies to method ae, not phash', '--metric applies to --method ae, not phash')
    """

    def __init__(self, message: str):
        self.message = message
        super().__init__(self.spelled(str))

    def spelled(self, spell: Callable[[str], str]) -> str:
        """The message with each marked option name ``n`` written as ``spell(n)``."""
        return _OPTION.sub(lambda m: spell(m.group(1)), self.message)


class CheckpointGone(FileNotFoundError, OptionError):
    """The checkpoint an index records is gone (the message names the option that replaces it)."""

    def __init__(self, message: str):
        OptionError.__init__(self, message)


class Vectors(NamedTuple):
    """Vectors of the readable files: ``vectors`` (N,8) uint8 or (N,D) float32, ``paths`` the N
    files in input order, ``flat`` (N,) bool for hashes (low-information images), else None."""

    vectors: np.ndarray
    paths: list[Path]
    flat: np.ndarray | None


class Neighbours(NamedTuple):
    """Query results: per readable query file its neighbours' ``distances`` and ``ids`` (best
    first; int Hamming bits or float code distances) and, when asked, their decoded ``recons``."""

    paths: list[Path]
    distances: list[list]
    ids: list[list[str]]
    recons: list | None = None


class Method:
    """How images become vectors; see the module docstring. Subclasses set the class attributes."""

    name: str = ""
    kind: ClassVar[str] = "code"
    options: ClassVar[frozenset[str]] = frozenset()  # the keyword options it takes (each refused by the others)
    indexable: ClassVar[bool] = False  # may build a search index (else evaluation only)
    image_size: int | None = None  # the decoded grey size it needs (None: any)
    encoder: Any = None  # the loaded autoencoder, if any

    @classmethod
    def create(cls, name: str, **options: Any) -> Method:
        return cls(**options)

    @property
    def version(self) -> str:
        return self.name

    @property
    def label(self) -> str:
        """The method's name in an evaluation report (a variant such as a mirror-aware hash adds to it)."""
        return self.name

    def index_meta(self) -> dict[str, Any]:
        """Meta keys an index made by this method records (checked again by :meth:`from_index`)."""
        return {}

    def index_options(self) -> dict[str, Any]:
        """Keyword arguments of :meth:`encoder.search.index.Index.create` this method sets."""
        return {}

    def index_attachments(self, ids: Sequence[str] | None = None, index=None) -> dict[str, bytes]:
        """Files an index made by this method keeps beside its vectors (:meth:`Index.attach`); ``ids``: those
        of the rows of the last :meth:`vectors`, ``index``: the index they are added to (None: a new one)."""
        return {}

    @classmethod
    def from_index(cls, meta: Mapping[str, Any], **options: Any) -> Method:
        raise IndexMismatchError(f"index method {meta.get('method')!r} is not a method this command can query")

    def vectors(
        self,
        paths: Sequence[str | Path],
        *,
        errors: list | None = None,
        progress: bool = False,
        scratch_dir: str | Path | None = None,
    ) -> Vectors | None:
        """Vectors of the readable files of ``paths``; ``(path, reason)`` of the others appended to ``errors``.

        ``scratch_dir``: a folder the method may use for temporary files (removed after).
        """
        raise ValueError(f"method {self.name!r} is for evaluation only; it cannot index files")

    def query(
        self, index, paths: Sequence[str | Path], k: int, *, errors: list | None = None, progress: bool = False
    ) -> Neighbours | None:
        """Top-``k`` neighbours in ``index`` of each readable file of ``paths``."""
        got = self.vectors(paths, errors=errors, progress=progress)
        if got is None:
            return None
        distances, ids = index.search(got.vectors, k)
        return Neighbours(got.paths, [[round(float(d), 6) for d in row] for row in distances], ids)

    # -- evaluation
    def fit(self, images: np.ndarray, sources: Sequence) -> Method:
        """Learn from the gallery ((N,S,S) uint8 grey images and their files); most methods need nothing."""
        return self

    def features(self, images: np.ndarray, sources: Sequence) -> np.ndarray:
        """(N,S,S) uint8 grey images, and the files or PIL images they came from -> (N,...) vectors."""
        raise NotImplementedError

    def gallery_features(self, images: np.ndarray, sources: Sequence) -> np.ndarray:
        """The gallery's vectors: :meth:`features`, unless the queries need more (a mirror-aware hash)."""
        return self.features(images, sources)

    def knn(self, gallery: np.ndarray, queries: np.ndarray, k: int, metric: str = "l2", *, distances: bool = False):
        """Exact top-k gallery rows (Q,k) of each query, by ``metric`` (codes) or Hamming (hashes);
        ``distances``: ``(distances (Q,k), rows)``, smaller nearer (cosine as 1 - cosine)."""
        d, rows = ann.exact_knn(queries, gallery, k, metric)
        return ((1 - d if metric == "cosine" else d), rows) if distances else rows

    @classmethod
    def for_evaluation(cls, name: str, *, checkpoint: str | None = None, encoder: Any = None) -> Method:
        return cls.create(name)

"""Public names of a package, imported on first use (PEP 562), and matplotlib on first use.

``import encoder.hashing`` must not pay for torch, and ``import encoder`` must not pay for
Lightning: a package's ``__init__`` therefore names its public API here and each name is
imported from its module only when it is first read. Likewise a plotting module asks
:func:`pyplot` for matplotlib when it first draws.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def exports(package: str, table: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` given ``{public name: "module[:attr]"}``.

    ``"encoder.search.index:Index"`` reads ``Index`` from that module; a bare module path
    gives the module itself.
    """

    def __getattr__(name: str) -> Any:
        try:
            target = table[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        module, _, attr = target.partition(":")
        value = importlib.import_module(module)
        return getattr(value, attr) if attr else value

    def __dir__() -> list[str]:
        return sorted(table)

    return __getattr__, __dir__


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only, no display), imported when a figure is first
    drawn: the import (0.25 s) is not paid by code that only imports a plotting module's names, and
    the backend is chosen by the toolkit's own plotting, not by importing it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt

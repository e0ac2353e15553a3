"""The package's version: ``pyproject.toml`` is the one place it is written.

An installed package reads it from its metadata; a source checkout that is not installed (the
tests, ``python search.py`` from a clone) reads ``pyproject.toml`` beside the package.

    >>> import encoder
    >>> encoder.__version__  # doctest: +SKIP
    '0.1.0'
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

UNKNOWN = "0+unknown"


def _from_pyproject(path: Path) -> str | None:
    """The ``version`` of the ``[project]`` table of ``path``, or None."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    project = re.search(r"^\[project\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    found = project and re.search(r'^version\s*=\s*"([^"]+)"', project.group(1), re.M)
    return found.group(1) if found else None


def package_version() -> str:
    """This copy's version string, e.g. ``"0.1.0"``."""
    here = Path(__file__).resolve().parent
    try:
        dist = metadata.distribution("encoder")
    except metadata.PackageNotFoundError:
        dist = None
    # an installed copy elsewhere (or another project named "encoder") must not speak for this one
    if dist is not None and Path(str(dist.locate_file("encoder"))).resolve() == here:
        return dist.version
    return _from_pyproject(here.parent / "pyproject.toml") or UNKNOWN


__version__ = package_version()

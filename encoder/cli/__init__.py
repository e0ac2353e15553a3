"""The command lines: parse, call the library with keyword arguments, print."""

from __future__ import annotations

import argparse


class VersionAction(argparse.Action):
    """``--version``: prints ``encoder X.Y.Z`` and exits; the version (package metadata) is read only
    when asked for, so that no other command pays for importlib.metadata at start-up."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help or "show the version and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        from encoder._version import __version__

        print(f"encoder {__version__}")  # to stdout, as argparse's own version action
        parser.exit()

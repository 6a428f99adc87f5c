"""The ``netwarden`` command line: argument parsing only; :mod:`netwarden.commands` does the work."""

from netwarden.cli.main import main

__all__ = ["main"]

"""The ``netwarden`` command line: the entry point, its error handling and the table of commands.

argparse rather than typer: ``--flows PATH [PATH ...]`` takes several values after one flag,
which other tools script against, and argparse expresses that directly (``nargs="+"``).
Each group of commands declares its options in its own module (:mod:`.traffic`,
:mod:`.detection`, :mod:`.remediation`, :mod:`.serving`; shared options in :mod:`.options`).
A user mistake (missing file, bad option value, unwritable output, an input without one valid
flow) prints one clear line and exits with status 2; bad lines inside flow files are skipped,
counted and reported with their file and line number.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, Final, NoReturn

from rich.text import Text

from netwarden import __version__
from netwarden.cli import db, detection, lifecycle, remediation, serving, traffic
from netwarden.cli.consoles import stderr

__all__ = ["main"]

#: Every command with the module that declares it, in the order ``netwarden --help`` lists them.
_COMMANDS: Final[tuple[tuple[str, ModuleType], ...]] = (
    ("run", traffic),
    ("generate", traffic),
    ("windows", traffic),
    ("train", detection),
    ("score", detection),
    ("retrain", lifecycle),
    ("models", lifecycle),
    ("history", lifecycle),
    ("serve", serving),
    ("observer", serving),
    ("agent", serving),
    ("token", serving),
    ("propose", remediation),
    ("simulate", remediation),
    ("features", traffic),
    ("db", db),
)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netwarden",
        description="Network anomaly detection for Kubernetes: Hubble/eBPF flows in, per-identity "
        "feature windows, explained anomalies and CiliumNetworkPolicy proposals out.",
    )
    parser.add_argument("--version", action="version", version=f"netwarden {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command, group in _COMMANDS:
        group.add_parser(sub, command)
    return parser


def _fail(message: str) -> NoReturn:
    """Print ``message`` exactly as it is (a ``[...]`` in it is text, not markup); exit 2."""
    stderr.print(Text.assemble(("netwarden: error:", "bold red"), " ", message), highlight=False)
    raise SystemExit(2)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``netwarden`` command."""
    from netwarden.errors import UserError
    from netwarden.ingest.inputfiles import InputError

    parser = _build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], Any] = args.handler
    try:
        code = handler(args)
    except (UserError, InputError) as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        stderr.print("interrupted")
        raise SystemExit(130) from None
    except BrokenPipeError:
        raise SystemExit(0) from None
    sys.exit(code)

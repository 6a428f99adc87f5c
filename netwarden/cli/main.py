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
from netwarden.cli import cluster, db, detection, lifecycle, remediation, serving, traffic
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
    ("partials", cluster),
    ("shard", cluster),
    ("propose", remediation),
    ("simulate", remediation),
    ("features", traffic),
    ("db", db),
)

_NAMES: Final = frozenset(command for command, _ in _COMMANDS)


def _build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or with ``only`` (a command's name) of that command alone:
    a command's options may import what its choice lists and defaults come from (``generate``
    the generator, the window options the window builder), so a run builds only its own."""
    parser = argparse.ArgumentParser(
        prog="netwarden",
        description="Network anomaly detection for Kubernetes: Hubble/eBPF flows in, per-identity "
        "feature windows, explained anomalies and CiliumNetworkPolicy proposals out.",
    )
    parser.add_argument("--version", action="version", version=f"netwarden {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command, group in _COMMANDS:
        if only is None or command == only:
            group.add_parser(sub, command)
    return parser


def _invoked(argv: Sequence[str]) -> str | None:
    """The command ``argv`` runs when it starts with one (the top level has only ``--version``
    and ``--help``, so anything else before a command is handled by the full parser)."""
    if argv and argv[0] in _NAMES:
        return argv[0]
    return None


def _fail(message: str) -> NoReturn:
    """Print ``message`` exactly as it is (a ``[...]`` in it is text, not markup); exit 2."""
    stderr.print(Text.assemble(("netwarden: error:", "bold red"), " ", message), highlight=False)
    raise SystemExit(2)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``netwarden`` command."""
    from netwarden.errors import UserError
    from netwarden.ingest.inputfiles import InputError

    if argv is None:
        argv = sys.argv[1:]
    parser = _build_parser(_invoked(argv))
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

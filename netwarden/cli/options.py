"""Options several commands share, and the one place their window options become a
:class:`~netwarden.ingest.windows.WindowConfig`.

``--window`` and ``--lateness`` take their defaults from ``WindowConfig`` and are checked by it
(:func:`window_config`), so the command line declares no window range or default of its own;
the number parsers only refuse what is not a number or has the wrong sign, so that argparse can
name the option.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from netwarden.errors import UserError

if TYPE_CHECKING:
    from netwarden.ingest.windows import WindowConfig

__all__ = [
    "add_flows_option",
    "add_window_options",
    "non_negative_float",
    "positive_float",
    "window_config",
]


def _number(text: str, *, allow_zero: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value < 0 or (value == 0 and not allow_zero) or value != value:
        raise argparse.ArgumentTypeError(
            f"must be {'0 or more' if allow_zero else 'greater than 0'}, got {text}"
        )
    return value


def positive_float(text: str) -> float:
    return _number(text, allow_zero=False)


def non_negative_float(text: str) -> float:
    return _number(text, allow_zero=True)


def positive_int(text: str) -> int:
    """A whole number of at least 1 (counts: partitions, replicas, versions, days)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_flows_option(parser: argparse.ArgumentParser) -> None:
    """``--flows PATH [PATH ...]``: several files after one flag, which scripts rely on."""
    parser.add_argument(
        "--flows",
        nargs="+",
        required=True,
        metavar="PATH",
        help="flow files, read in the order given ('-' for stdin)",
    )


def add_window_options(
    parser: argparse.ArgumentParser, *, note: str = "", lateness: bool = False
) -> None:
    """``--window`` (its help ending in ``note``) and, with ``lateness``, ``--lateness``.

    The window builder is imported here, when a command that has these options is built, not
    when the command line starts (other commands do not need it)."""
    from netwarden.ingest.windows import WindowConfig

    defaults = WindowConfig()
    parser.add_argument(
        "--window",
        type=positive_float,
        default=defaults.window_seconds,
        metavar="SECONDS",
        help=f"window length in seconds (default: %(default)s){note}",
    )
    if lateness:
        parser.add_argument(
            "--lateness",
            type=non_negative_float,
            default=defaults.allowed_lateness,
            metavar="SECONDS",
            help="allowed lateness of flows behind the newest event time (default: %(default)s)",
        )


def window_config(args: argparse.Namespace) -> WindowConfig:
    """The WindowConfig of a command's window options (``WindowConfig``'s defaults for those it
    lacks); a value out of range is a UserError naming the parameter and its range."""
    from netwarden.ingest.windows import WindowConfig

    values = {"window_seconds": args.window}
    if hasattr(args, "lateness"):
        values["allowed_lateness"] = args.lateness
    try:
        return WindowConfig(**values)
    except ValueError as exc:
        raise UserError(str(exc)) from None

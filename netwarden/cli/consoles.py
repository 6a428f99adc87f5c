"""Where the command line writes: messages and progress on stderr, results on stdout."""

from __future__ import annotations

from rich.console import Console

__all__ = ["stderr", "stdout"]

stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def stdout() -> Console:
    """Tables stay readable when piped: a wide fixed width instead of 80 columns."""
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=140)
    return console

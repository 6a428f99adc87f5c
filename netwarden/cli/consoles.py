"""Where the command line writes: messages and progress on stderr, results on stdout.

Both consoles print text as it is (``markup=False``): messages carry user data (file names,
option values, DNS names, parse errors such as ``expected `[`, got ...``) that rich would
otherwise read as markup and drop. Styled output builds :class:`rich.text.Text` instead.
"""

from __future__ import annotations

from typing import Final

from rich.console import Console

__all__ = ["PIPE_WIDTH", "stderr", "stdout"]

#: Width of stdout when it is not a terminal: wide enough that no table is ever cut or wrapped
#: (a file or a pipe has no width; rich would otherwise assume 80 columns).
PIPE_WIDTH: Final = 10_000

stderr = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)


def stdout() -> Console:
    """The terminal's width on a terminal; unlimited in a file or pipe, so tables are not cut."""
    console = Console(highlight=False, markup=False)
    if not console.is_terminal:
        console = Console(highlight=False, markup=False, width=PIPE_WIDTH)
    return console

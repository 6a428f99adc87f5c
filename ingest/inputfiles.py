"""Opening flow inputs: plain files, gzip files and stdin, always as binary streams.

Compression is detected from the gzip magic bytes, not the file name, so a rotated
``events.log.1.gz`` and a ``.json`` file that happens to be gzipped both work.
"""

from __future__ import annotations

import gzip
import io
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

__all__ = ["STDIN", "InputError", "open_input"]

#: The path that means standard input.
STDIN = "-"
_GZIP_MAGIC = b"\x1f\x8b"


class InputError(Exception):
    """An input cannot be opened; the message names the input and the reason."""


@contextmanager
def open_input(path: str | Path) -> Iterator[tuple[BinaryIO, Callable[[], int]]]:
    """Open ``path`` (or ``-`` for stdin) for binary reading, decompressing gzip transparently.

    Yields the stream and a function telling how many bytes of the underlying file were consumed
    (compressed bytes for gzip; 0 for stdin), for progress reporting.
    """
    name = str(path)
    if name == STDIN:
        raw: BinaryIO = sys.stdin.buffer
        owned = False
    else:
        try:
            raw = open(name, "rb")
        except FileNotFoundError:
            raise InputError(f"{name}: no such file") from None
        except IsADirectoryError:
            raise InputError(f"{name}: is a directory, expected a flow file") from None
        except PermissionError:
            raise InputError(f"{name}: permission denied") from None
        owned = True
    try:
        buffered = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)  # type: ignore[arg-type]
        position = _position_of(raw) if owned else (lambda: 0)
        if buffered.peek(2)[:2] == _GZIP_MAGIC:
            yield gzip.GzipFile(fileobj=buffered, mode="rb"), position  # type: ignore[misc]
        else:
            yield buffered, position
    finally:
        if owned:
            raw.close()


def _position_of(raw: BinaryIO) -> Callable[[], int]:
    def position() -> int:
        try:
            return raw.tell()
        except (OSError, ValueError):
            return 0

    return position

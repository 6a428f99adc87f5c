"""Flows from lines on disk or a pipe: a followed file (``tail -F``) and stdin.

* :class:`FollowFile`: a growing Hubble JSON file followed like ``tail -F`` (waits for it to
  appear, survives rotation and truncation);
* :class:`StreamSource`: a pipe or stdin, read until end of input.
"""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from netwarden.ingest.reader import ErrorReason
from netwarden.ingest.sources.base import Clock, LineSource, LineSplitter, utcnow

__all__ = ["FollowFile", "StreamSource"]

_BLOCK_BYTES = 1 << 16


# -- a followed file ----------------------------------------------------------------------------
class FollowFile(LineSource):
    """A Hubble JSON lines file followed like ``tail -F``.

    Waits for the file to appear (status down with "waiting for PATH to appear"), reads what is
    there (from the start, or from the end with ``from_start=False``: only lines written after
    that are read, numbered as in the file, which costs one read of what is there to count its
    lines; a file that appears later is read from its start), then polls for appended data
    every ``poll_interval`` seconds. A partial last line waits for its newline. Rotation (``PATH`` now
    names another file) finishes the old file, then reads the new one from its start
    (``rotations``); truncation (the size drops below what was read) restarts from offset 0
    (``truncations``); in both cases a partial line left over is decoded as the file's last
    line, as for a file that ends without a newline. A file truncated and refilled past the
    read offset between two polls cannot be told from appended data (as for ``tail``).

    Plain text only: gzip is for finished files (``netwarden ingest`` reads them); a followed
    file is by nature still being written, which a compressed stream cannot be read during.
    """

    kind = "file"

    def __init__(
        self,
        path: str | Path,
        *,
        from_start: bool = True,
        poll_interval: float = 0.25,
        batch_lines: int = 64,
        clock: Clock = utcnow,
        max_examples: int = 5,
    ) -> None:
        super().__init__(str(path), batch_lines=batch_lines, clock=clock, max_examples=max_examples)
        if not poll_interval > 0:
            raise ValueError(f"poll_interval must be > 0 seconds, got {poll_interval!r}")
        self.path = Path(path)
        self.from_start = from_start
        self.poll_interval = poll_interval
        self.rotations = 0
        self.truncations = 0
        self.offset = 0  # bytes of the current file read so far
        self._file: BinaryIO | None = None
        self._ident: tuple[int, int] | None = None
        self._lines: LineSplitter | None = None

    def run(self, emit: Callable[[list[Any]], None], stop: threading.Event) -> None:
        at_end = not self.from_start  # only for a file already there at startup
        try:
            while not stop.is_set():
                if self._file is None:
                    opened = self._open(at_end=at_end)
                    at_end = False  # a file that appears or replaces it is read from its start
                    if not opened:
                        stop.wait(self.poll_interval)
                        continue
                if self._read_some(emit):
                    continue
                if self._rotated():  # finish the old file; the new one opens on the next pass
                    while self._read_some(emit):
                        pass
                    self._finish(emit)
                    self._close()
                    self.rotations += 1
                    continue
                if self._truncated():
                    self._finish(emit)
                    assert self._file is not None
                    self._file.seek(0)
                    self.offset = 0
                    self._lines = LineSplitter(self.stats, self.name)
                    self.truncations += 1
                    continue
                stop.wait(self.poll_interval)
        finally:
            self._close()
            self._set_state(False, "stopped")

    # -- steps ----------------------------------------------------------------------------------
    def _open(self, *, at_end: bool) -> bool:
        try:
            f: BinaryIO = open(self.path, "rb", buffering=0)
        except FileNotFoundError:
            self._set_state(False, f"waiting for {self.path} to appear")
            return False
        except IsADirectoryError:
            self._set_state(False, f"{self.path} is a directory, expected a flow file")
            return False
        except OSError as exc:
            self._set_state(False, f"cannot open {self.path}: {exc.strerror or exc}")
            return False
        st = os.fstat(f.fileno())
        self._file, self._ident = f, (st.st_dev, st.st_ino)
        self.offset = 0
        first_line, partial = 1, False
        if at_end and st.st_size:
            first_line, partial = self._skip_to(f, st.st_size)
        self._lines = LineSplitter(self.stats, self.name, first_line, skip_first=partial)
        self._set_state(True)
        return True

    def _skip_to(self, f: BinaryIO, size: int) -> tuple[int, bool]:
        """Position at ``size`` and count the lines before it, so line numbers stay those of the
        file; True when ``size`` falls inside a line (its rest is skipped, not misread)."""
        newlines = 0
        last = b"\n"
        while self.offset < size:
            block = f.read(min(_BLOCK_BYTES, size - self.offset))
            if not block:
                break
            newlines += block.count(b"\n")
            last = block[-1:]
            self.offset += len(block)
        return newlines + 1, last != b"\n"

    def _read_some(self, emit: Callable[[list[Any]], None]) -> bool:
        """Read and deliver what has been appended; False at the end of the data.

        A read error is counted once per episode and retried at the next poll (the descriptor
        and offset are kept, so nothing is read twice).
        """
        assert self._file is not None and self._lines is not None
        try:
            data = self._file.read(_BLOCK_BYTES)
        except OSError as exc:
            if self._up:
                self.stats.record_error(
                    self.name,
                    self._lines.line_no,
                    ErrorReason.UNREADABLE,
                    f"cannot read further: {exc}",
                )
            self._set_state(False, f"cannot read {self.path}: {exc.strerror or exc}")
            return False
        if not self._up:
            self._set_state(True)
        if not data:
            return False
        self.offset += len(data)
        self._deliver(self._decode(*self._lines.feed(data)), emit)
        return True

    def _finish(self, emit: Callable[[list[Any]], None]) -> None:
        if self._lines is not None:
            self._deliver(self._decode(*self._lines.finish()), emit)

    def _rotated(self) -> bool:
        """PATH names another file now (a missing PATH is not yet a rotation: keep reading)."""
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) != self._ident

    def _truncated(self) -> bool:
        assert self._file is not None
        try:
            return os.fstat(self._file.fileno()).st_size < self.offset
        except OSError:
            return False

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file = None


# -- a pipe or stdin ----------------------------------------------------------------------------
class StreamSource(LineSource):
    """Hubble JSON lines from a pipe, socket or stdin, read until end of input.

    Reads the stream's file descriptor directly (``os.read`` after ``poll``), so every chunk a
    writer sends is decoded and emitted at once instead of waiting for a 64 KiB block, and
    ``stop`` is noticed within ``poll_interval`` even while no data comes. Pass a stream nothing
    has read from yet: bytes already buffered in the Python object are not seen. Objects without
    a descriptor (``io.BytesIO``) are read with ``read1``. Plain text only (pipe gzip through
    ``zcat``). At the end of input, a last line without its newline is still decoded.
    """

    kind = "stdin"

    def __init__(
        self,
        stream: BinaryIO,
        name: str = "-",
        *,
        batch_lines: int = 64,
        poll_interval: float = 0.25,
        clock: Clock = utcnow,
        max_examples: int = 5,
    ) -> None:
        super().__init__(name, batch_lines=batch_lines, clock=clock, max_examples=max_examples)
        if not poll_interval > 0:
            raise ValueError(f"poll_interval must be > 0 seconds, got {poll_interval!r}")
        self.stream = stream
        self.poll_interval = poll_interval

    def run(self, emit: Callable[[list[Any]], None], stop: threading.Event) -> None:
        lines = LineSplitter(self.stats, self.name)
        read = self._reader_fn()
        self._set_state(True)
        ended = "stopped"
        try:
            while not stop.is_set():
                try:
                    data = read()
                except OSError as exc:
                    self.stats.record_error(
                        self.name,
                        lines.line_no,
                        ErrorReason.UNREADABLE,
                        f"cannot read further: {exc}",
                    )
                    ended = f"cannot read {self.name}: {exc.strerror or exc}"
                    break
                if data is None:  # nothing yet
                    continue
                if not data:
                    ended = "end of input"
                    break
                self._deliver(self._decode(*lines.feed(data)), emit)
            if ended == "end of input":  # no newline will come for a last partial line
                self._deliver(self._decode(*lines.finish()), emit)
        finally:
            self._set_state(False, ended)

    def _reader_fn(self) -> Callable[[], bytes | None]:
        """A read of what is available now: bytes, b"" at the end, None after a quiet poll."""
        try:
            fd = self.stream.fileno()
        except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
            read1 = getattr(self.stream, "read1", self.stream.read)
            return lambda: read1(_BLOCK_BYTES)
        timeout_ms = int(self.poll_interval * 1000)
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(fd, select.POLLIN | select.POLLPRI)

            def read_fd() -> bytes | None:
                if not poller.poll(timeout_ms):
                    return None
                return os.read(fd, _BLOCK_BYTES)
        else:  # pragma: no cover - platforms without poll()

            def read_fd() -> bytes | None:
                ready, _, _ = select.select([fd], [], [], self.poll_interval)
                return os.read(fd, _BLOCK_BYTES) if ready else None

        return read_fd

"""What every live source is: the :class:`Source` protocol, its status, and the shared reading.

A :class:`Source` blocks in ``run``, handing batches of decoded flows to ``emit`` as they
arrive, until ``stop`` is set or the input ends. Every source decodes through
:meth:`FlowReader.decode_lines`, so its flows are exactly what reading the same lines from a file
gives, and a bad line is counted in ``stats`` by reason with its ``name:line``, never raised.
:class:`LineSource` is that shared part (reader, batches, status fields) for sources made of
lines: files and stdin (:mod:`.files`), the eBPF agent (:mod:`.ebpf`), the traffic generator
(:mod:`netwarden.generator.source`). The Hubble gRPC source (:mod:`.hubble`) implements the
protocol on its own, since it reads protobuf messages.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from netwarden.ingest.compact import CompactFlow
from netwarden.ingest.reader import MAX_LINE_BYTES, ErrorReason, FlowReader, ReadStats

__all__ = ["Clock", "LineSource", "LineSplitter", "Source", "SourceStatus", "utcnow"]

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """A live source as the service sees it now."""

    kind: str  # "file", "stdin", "generator", "hubble", "ebpf"
    name: str  # what it reads, e.g. the file path
    up: bool  # connected / readable and not failed
    error: str | None = None  # why it is down, in words
    flows: int = 0  # flows delivered since start
    last_flow_at: datetime | None = None  # wall-clock time of the last delivered batch (UTC)


class Source(Protocol):
    """A stream of decoded flows. ``run`` blocks, calling ``emit`` with batches of flows in
    arrival order until ``stop`` is set or the source ends; ``emit`` may block, which is how a
    slow consumer pushes back. Bad input never raises: it is counted in ``stats``."""

    kind: str
    name: str
    stats: ReadStats

    def status(self) -> SourceStatus: ...

    def run(self, emit: Callable[[list[Any]], None], stop: threading.Event) -> None: ...


# -- shared pieces ------------------------------------------------------------------------------
class LineSplitter:
    """Cuts bytes as they arrive into complete, numbered lines.

    A partial last line is kept until its newline arrives (or :meth:`finish` says no more will);
    a line longer than ``MAX_LINE_BYTES`` is counted as ``line_too_long`` and skipped, bounding
    memory as the file reader does.
    """

    def __init__(
        self, stats: ReadStats, name: str, first_line: int = 1, *, skip_first: bool = False
    ) -> None:
        self.stats = stats
        self.name = name
        self.line_no = first_line  # number of the next complete line
        self._carry = b""
        self._skipping = skip_first  # discarding up to the next newline
        self._skip_counts = False  # the skipped line was too long (it was counted already)

    def feed(self, data: bytes) -> tuple[int, list[bytes]]:
        """(number of the first line, the complete lines that ``data`` finishes)."""
        if self._skipping:
            cut = data.find(b"\n")
            if cut < 0:
                return self.line_no, []
            data = data[cut + 1 :]
            self._skipping = False
            self.line_no += 1
        buf = self._carry + data if self._carry else data
        cut = buf.rfind(b"\n")
        if cut < 0:
            self._carry = buf
            if len(buf) > MAX_LINE_BYTES:
                self.stats.lines += 1
                self.stats.record_error(
                    self.name,
                    self.line_no,
                    ErrorReason.LINE_TOO_LONG,
                    f"line longer than {MAX_LINE_BYTES:,} bytes",
                )
                self._carry = b""
                self._skipping = True
            return self.line_no, []
        lines = buf[:cut].split(b"\n")
        self._carry = buf[cut + 1 :]
        first = self.line_no
        self.line_no += len(lines)
        return first, lines

    def finish(self) -> tuple[int, list[bytes]]:
        """The unterminated last line as a final line (its input has ended), if there is one."""
        carry, self._carry = self._carry, b""
        first = self.line_no
        if not carry or self._skipping:
            self._skipping = False
            return first, []
        self.line_no += 1
        return first, [carry]

    @property
    def partial_bytes(self) -> int:
        return len(self._carry)


class LineSource:
    """What every source shares: the reader, delivery in batches, and the status fields."""

    kind = "source"

    def __init__(
        self,
        name: str,
        *,
        batch_lines: int,
        clock: Clock,
        max_examples: int,
        flow_type: type[Any] = CompactFlow,
    ) -> None:
        if batch_lines < 1:
            raise ValueError(f"batch_lines must be >= 1, got {batch_lines}")
        self.name = name
        self.batch_lines = batch_lines
        self.reader: FlowReader[Any] = FlowReader(
            flow_type=flow_type, batch_lines=batch_lines, max_examples=max_examples
        )
        self.stats = self.reader.stats
        self._clock = clock
        self._up = False
        self._error: str | None = "not started"
        self._flows = 0
        self._last_flow_at: datetime | None = None

    def status(self) -> SourceStatus:
        return SourceStatus(
            self.kind, self.name, self._up, self._error, self._flows, self._last_flow_at
        )

    def _set_state(self, up: bool, error: str | None = None) -> None:
        self._up, self._error = up, error

    def _decode(self, first_line: int, lines: list[bytes]) -> list[Any]:
        return self.reader.decode_lines(lines, first_line, self.name) if lines else []

    def _deliver(self, flows: list[Any], emit: Callable[[list[Any]], None]) -> None:
        """Hand ``flows`` over in batches of at most ``batch_lines``; all of them, even when
        stopping, since they have been consumed from the input."""
        size = self.batch_lines
        for i in range(0, len(flows), size):
            batch = flows[i : i + size]
            emit(batch)
            self._flows += len(batch)
            self._last_flow_at = self._clock()

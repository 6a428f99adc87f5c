"""One streaming reader for every Hubble JSON line shape.

Shapes (``shared/data/INTERFACES.md`` §2.2), told apart per line:

* ``{"flow": {...}, "node_name": ..., "time": ...}``: ``hubble observe -o json`` (CLI >= 0.11)
  and the Hubble exporter (``GetFlowsResponse`` / ``ExportEvent``);
* ``{"lost_events": ...}``, ``{"node_status": ...}``, ``{"agent_event": ...}``,
  ``{"debug_event": ...}``: exporter / observe lines that are not flows. They are counted (lost
  events also by number lost and source), never treated as flows. Only ``lost_events``' two
  numbers are decoded: the other bodies are checked to be JSON and skipped without building
  objects, so a 16 MB agent event costs its bytes, not a tree of Python objects 50 times larger;
* a bare Flow object (legacy ``-o json`` output, ``HUBBLE_COMPAT=legacy-json-output``).

The reader works in one pass with constant memory: it reads fixed-size blocks and decodes their
lines in a tight loop that assumes they are good; only when one fails does it go over the block
again line by line to locate and count the bad ones. A bad line (not JSON, not a flow, wrong
types, a number outside its protobuf range, an event time outside what windows can represent,
too long) is skipped, counted by reason and remembered with its file and line number (the first
few), and the stream goes on. No exception
escapes the reader for bad content; an unreadable file (corrupt gzip, I/O error) ends that file
with a counted error.
"""

from __future__ import annotations

import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Generic, TypeVar

import msgspec

from netwarden.ingest.flow import (
    EARLIEST_EVENT_TIME,
    LATEST_EVENT_TIME,
    LOST_EVENT_SOURCES,
    Flow,
    LostEvent,
)
from netwarden.ingest.inputfiles import open_input

__all__ = [
    "EARLIEST_EVENT_TIME",
    "LATEST_EVENT_TIME",
    "BadLine",
    "ErrorReason",
    "FlowReader",
    "ReadStats",
    "event_time_in_range",
    "read_flows",
]

F = TypeVar("F", bound=msgspec.Struct)

_BLOCK_BYTES = 1 << 16
#: Lines longer than this are skipped (reason ``line_too_long``), bounding memory per line.
MAX_LINE_BYTES = 16 << 20
_EARLIEST_NAIVE = EARLIEST_EVENT_TIME.replace(tzinfo=None)
_LATEST_NAIVE = LATEST_EVENT_TIME.replace(tzinfo=None)
#: msgspec's message for a number outside its ``Meta(ge=, le=)`` bounds.
_OUT_OF_RANGE = re.compile(r"^Expected `\w+` [<>]=? ")
_NULL = msgspec.Raw(b"null")


def event_time_in_range(t: datetime) -> bool:
    """Whether ``t`` lies in [EARLIEST_EVENT_TIME, LATEST_EVENT_TIME) (naive times as UTC).
    Times outside are rejected as ``time_out_of_range``: see ``flow.LATEST_EVENT_TIME``."""
    if t.tzinfo is None:
        return _EARLIEST_NAIVE <= t < _LATEST_NAIVE
    return EARLIEST_EVENT_TIME <= t < LATEST_EVENT_TIME


class ErrorReason:
    """Why a line was skipped. Stable strings: they are metric label values."""

    NOT_JSON = "not_json"
    NOT_A_FLOW = "not_a_flow"
    WRONG_TYPE = "wrong_type"
    MISSING_TIME = "missing_time"
    LINE_TOO_LONG = "line_too_long"
    OUT_OF_RANGE = "out_of_range"  # a number outside its protobuf type (port 70000, -1 bytes)
    TIME_OUT_OF_RANGE = "time_out_of_range"  # before 1970 or past LATEST_EVENT_TIME
    UNREADABLE = "unreadable_input"
    BAD_MESSAGE = "bad_message"  # a gRPC message that is not a valid GetFlowsResponse


@dataclass(frozen=True, slots=True)
class BadLine:
    """A skipped line: where it is and why."""

    source: str
    line: int
    reason: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.reason}: {self.message}"


@dataclass
class ReadStats:
    """What the reader saw, over every input it read. Mergeable with ``+=``."""

    lines: int = 0
    flows: int = 0
    blank_lines: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    examples: list[BadLine] = field(default_factory=list)
    max_examples: int = 5
    lost_event_lines: int = 0
    events_lost: Counter[str] = field(default_factory=Counter)
    node_status_lines: int = 0
    agent_event_lines: int = 0
    debug_event_lines: int = 0

    @property
    def error_lines(self) -> int:
        return sum(self.errors.values())

    def record_error(self, source: str, line: int, reason: str, message: str) -> None:
        self.errors[reason] += 1
        if len(self.examples) < self.max_examples:
            self.examples.append(BadLine(source, line, reason, message))

    def __iadd__(self, other: ReadStats) -> ReadStats:
        self.lines += other.lines
        self.flows += other.flows
        self.blank_lines += other.blank_lines
        self.errors.update(other.errors)
        room = self.max_examples - len(self.examples)
        self.examples.extend(other.examples[: max(room, 0)])
        self.lost_event_lines += other.lost_event_lines
        self.events_lost.update(other.events_lost)
        self.node_status_lines += other.node_status_lines
        self.agent_event_lines += other.agent_event_lines
        self.debug_event_lines += other.debug_event_lines
        return self

    def summary_lines(self) -> list[str]:
        """Human summary: totals, errors by reason, the first bad lines."""
        out = [
            f"{self.lines:,} lines: {self.flows:,} flows, {self.error_lines:,} skipped as bad, "
            f"{self.lost_event_lines + self.node_status_lines + self.agent_event_lines + self.debug_event_lines:,}"
            " non-flow events"
        ]
        if self.events_lost:
            lost = ", ".join(f"{n:,} ({src})" for src, n in sorted(self.events_lost.items()))
            out.append(f"producer reported lost events: {lost}")
        if self.errors:
            out.append(
                "bad lines by reason: "
                + ", ".join(f"{reason} {n:,}" for reason, n in self.errors.most_common())
            )
            out.extend(f"  {bad}" for bad in self.examples)
            if self.error_lines > len(self.examples):
                out.append(f"  ... and {self.error_lines - len(self.examples):,} more")
        return out


_ABSENT = msgspec.Raw()


def _given(raw: msgspec.Raw) -> bool:
    """Whether a raw event body was present (and not ``null``) in the line."""
    return bool(raw) and raw != _NULL


def _line_type(flow_type: type[F]) -> type[Any]:
    """The envelope of a line: ``flow`` or one of the non-flow events, plus node and time.

    A legacy bare flow has none of these keys; the reader then decodes the line again as a flow
    (rare: only old CLIs write that shape), so envelope lines pay for one decode only. The
    bodies of node, agent and debug events are only counted: they stay raw (validated JSON, no
    objects built), whatever their size.
    """
    return msgspec.defstruct(
        f"{flow_type.__name__}Line",
        [
            ("flow", flow_type | None, None),  # type: ignore[operator]
            ("lost_events", LostEvent | None, None),
            ("node_status", msgspec.Raw, _ABSENT),
            ("agent_event", msgspec.Raw, _ABSENT),
            ("debug_event", msgspec.Raw, _ABSENT),
            ("node_name", str, ""),
            ("time", datetime | None, None),
        ],
        gc=False,
    )


_BARE_FLOW_KEYS = ("IP", "l4", "source", "destination", "l7", "event_type")


class _NotPlain(Exception):
    """A line the fast path does not handle (non-flow event, legacy shape, missing time)."""


class FlowReader(Generic[F]):
    """Reads Hubble JSON lines into ``flow_type`` records, counting what it cannot use.

    Parameters
    ----------
    flow_type:
        The msgspec struct to decode flows into: :class:`~netwarden.ingest.flow.Flow`, or a
        leaner struct with the same field names for hot paths.
    batch_lines:
        Flows per yielded batch. Small batches (default 64) are faster end to end: the
        consumer works on flows that are still in the CPU cache (measured: 64 flows per batch
        is about 1.7x faster than 4,096 through the window builder).
    max_examples:
        How many bad lines are kept with their location; all are counted.
    """

    def __init__(
        self,
        *,
        flow_type: type[F] = Flow,
        batch_lines: int = 64,  # type: ignore[assignment]
        max_examples: int = 5,
    ) -> None:
        if batch_lines < 1:
            raise ValueError(f"batch_lines must be >= 1, got {batch_lines}")
        self.flow_type = flow_type
        self.batch_lines = batch_lines
        self.stats = ReadStats(max_examples=max_examples)
        self._line_type = _line_type(flow_type)
        self._decoder = msgspec.json.Decoder(self._line_type, strict=False)
        self._bare_decoder = msgspec.json.Decoder(flow_type, strict=False)
        self._last_error = ""
        self._required_time = "time" in flow_type.__struct_fields__
        self._has_node_name = "node_name" in flow_type.__struct_fields__

    # -- public ---------------------------------------------------------------------------

    def read(
        self, path: str | Path, *, on_position: Callable[[int], Any] | None = None
    ) -> Iterator[list[F]]:
        """Yield batches of flows from a file (plain or gzip) or ``-`` for stdin.

        ``on_position`` is called after each block with the bytes of the file consumed so far.
        """
        name = str(path)
        with open_input(path) as (stream, position):
            report = None
            if on_position is not None:
                report = lambda: on_position(position())  # noqa: E731
            yield from self.read_stream(stream, name, on_block=report)

    def read_stream(
        self, stream: BinaryIO, name: str = "<stream>", *, on_block: Callable[[], Any] | None = None
    ) -> Iterator[list[F]]:
        """Yield batches of flows from an open binary stream."""
        out: list[F] = []
        for first_line, lines in self._blocks(stream, name):
            if on_block is not None:
                on_block()
            self._decode_block(lines, first_line, name, out)
            if len(out) >= self.batch_lines:
                yield out
                out = []
        if out:
            yield out

    def decode_lines(
        self, lines: list[bytes], first_line: int = 1, name: str = "<stream>"
    ) -> list[F]:
        """Decode complete lines (newlines removed) numbered from ``first_line``.

        For sources that cut their own input into lines (followed files, pipes, generators):
        the same fast and slow paths and the same counting in ``stats`` as :meth:`read_stream`,
        so a bad line is reported as ``name:line`` exactly as it would be for a file.
        """
        out: list[F] = []
        if lines:
            self._decode_block(lines, first_line, name, out)
        return out

    # -- blocks ---------------------------------------------------------------------------

    def _blocks(self, stream: BinaryIO, name: str) -> Iterator[tuple[int, list[bytes]]]:
        """Split the stream into lists of complete lines, with the number of the first line.

        A line that spans blocks is collected as a list of pieces and joined once, when its end
        arrives: a long line costs its size a couple of times over, never size squared.
        """
        line_no = 1
        pieces: list[bytes] = []  # the unfinished last line, in pieces
        pending = 0  # its length
        skipping_long = False
        failure: BaseException | None = None
        read = getattr(stream, "read1", stream.read)
        while failure is None:
            parts: list[bytes] = []
            size = 0
            try:  # read1: a truncated gzip still yields everything before the damage
                while size < _BLOCK_BYTES:
                    part = read(_BLOCK_BYTES - size)
                    if not part:
                        break
                    parts.append(part)
                    size += len(part)
            except (OSError, EOFError, zlib.error) as exc:
                failure = exc
            block = b"".join(parts)
            if not block:
                break
            if skipping_long:
                cut = block.find(b"\n")
                if cut < 0:
                    continue
                block = block[cut + 1 :]
                skipping_long = False
                line_no += 1
            if block.find(b"\n") < 0:
                if block:
                    pieces.append(block)
                    pending += len(block)
                if pending > MAX_LINE_BYTES:
                    self.stats.lines += 1
                    self.stats.record_error(
                        name,
                        line_no,
                        ErrorReason.LINE_TOO_LONG,
                        f"line longer than {MAX_LINE_BYTES:,} bytes",
                    )
                    pieces, pending = [], 0
                    skipping_long = True
                continue
            if pieces:
                pieces.append(block)
                block = b"".join(pieces)
                pieces, pending = [], 0
            lines = block.split(b"\n")
            del block
            carry = lines.pop()
            if carry:
                pieces, pending = [carry], len(carry)
            yield line_no, lines
            line_no += len(lines)
        if pieces and not skipping_long and failure is None:
            yield line_no, [b"".join(pieces)]
        if failure is not None:
            self.stats.record_error(
                name, line_no, ErrorReason.UNREADABLE, f"cannot read further: {failure}"
            )

    # -- decoding -------------------------------------------------------------------------

    def _decode_block(self, lines: list[bytes], first_line: int, name: str, out: list[F]) -> None:
        stats = self.stats
        stats.lines += len(lines)
        decode = self._decoder.decode
        has_node = self._has_node_name
        append = out.append
        start = len(out)
        earliest, latest = EARLIEST_EVENT_TIME, LATEST_EVENT_TIME
        try:  # the common case: every line is an envelope with a timed flow
            for line in lines:
                item = decode(line)
                flow = item.flow
                if flow is None or (t := flow.time) is None or not earliest <= t < latest:
                    raise _NotPlain  # (a naive time raises TypeError: also the slow path)
                if has_node and not flow.node_name:
                    flow.node_name = item.node_name
                append(flow)
        except Exception:
            del out[start:]
            self._decode_lines_one_by_one(lines, first_line, name, out)
            return
        stats.flows += len(out) - start

    def _decode_lines_one_by_one(
        self, lines: list[bytes], first_line: int, name: str, out: list[F]
    ) -> None:
        decode = self._decoder.decode
        for offset, raw in enumerate(lines):
            if not raw.strip():
                self.stats.blank_lines += 1
                continue
            line_no = first_line + offset
            try:
                item = decode(raw)
            except msgspec.ValidationError as exc:
                msg = str(exc)
                if " - at `$" in msg:
                    self.stats.record_error(name, line_no, _validation_reason(msg), msg)
                else:
                    self.stats.record_error(
                        name,
                        line_no,
                        ErrorReason.NOT_A_FLOW,
                        f"expected a JSON object per line: {msg}",
                    )
                continue
            except Exception as exc:
                self.stats.record_error(name, line_no, ErrorReason.NOT_JSON, _short(exc))
                continue
            result = self._classify(item, lines, offset)
            if isinstance(result, str):
                self._record(result, name, line_no)
            elif result is not None:
                out.append(result)

    def _record(self, reason: str, name: str, line_no: int) -> None:
        message = _MESSAGES.get(reason) or self._last_error
        self.stats.record_error(name, line_no, reason, message)

    def _classify(self, item: Any, lines: list[bytes], index: int) -> F | str | None:
        """The flow a decoded line holds; else count the non-flow event (None) or name the error."""
        flow = item.flow
        if flow is not None:
            if flow.time is None:
                if item.time is None and self._required_time:
                    return ErrorReason.MISSING_TIME
                flow.time = item.time
            if flow.time is not None and not event_time_in_range(flow.time):
                self._last_error = _time_message(flow.time)
                return ErrorReason.TIME_OUT_OF_RANGE
            if self._has_node_name and not flow.node_name and item.node_name:
                flow.node_name = item.node_name
            self.stats.flows += 1
            return flow  # type: ignore[no-any-return]
        stats = self.stats
        if item.lost_events is not None:
            stats.lost_event_lines += 1
            lost: LostEvent = item.lost_events
            source = lost.source if isinstance(lost.source, str) else _lost_source_name(lost.source)
            stats.events_lost[source or "UNKNOWN_LOST_EVENT_SOURCE"] += lost.num_events_lost
            return None
        if _given(item.node_status):
            stats.node_status_lines += 1
            return None
        if _given(item.agent_event):
            stats.agent_event_lines += 1
            return None
        if _given(item.debug_event):
            stats.debug_event_lines += 1
            return None
        return self._bare_flow(lines[index])

    def _bare_flow(self, line: bytes) -> F | str:
        """A line without envelope keys: a legacy bare Flow object, or not a flow at all."""
        try:
            flow = self._bare_decoder.decode(line)
        except msgspec.ValidationError as exc:
            self._last_error = str(exc)
            return _validation_reason(self._last_error)
        if not (
            flow.verdict or any(getattr(flow, key, None) is not None for key in _BARE_FLOW_KEYS)
        ):
            return ErrorReason.NOT_A_FLOW
        if self._required_time and flow.time is None:
            return ErrorReason.MISSING_TIME
        if flow.time is not None and not event_time_in_range(flow.time):
            self._last_error = _time_message(flow.time)
            return ErrorReason.TIME_OUT_OF_RANGE
        self.stats.flows += 1
        return flow


_MESSAGES = {
    ErrorReason.NOT_A_FLOW: "JSON object without flow, lost_events, node_status, agent_event,"
    " debug_event or any flow field",
    ErrorReason.MISSING_TIME: "flow has no event time (neither flow.time nor the envelope's time)",
}


def _validation_reason(message: str) -> str:
    """``out_of_range`` for a number outside its bounds, else ``wrong_type``."""
    return ErrorReason.OUT_OF_RANGE if _OUT_OF_RANGE.match(message) else ErrorReason.WRONG_TYPE


def _time_message(t: datetime) -> str:
    return (
        f"event time {t.isoformat()} is outside {EARLIEST_EVENT_TIME:%Y-%m-%d} .. "
        f"{LATEST_EVENT_TIME:%Y-%m-%d}"
    )


def _lost_source_name(code: int) -> str:
    for name, number in LOST_EVENT_SOURCES.items():
        if number == code:
            return name
    return f"LOST_EVENT_SOURCE_{code}"


def _short(exc: BaseException, limit: int = 200) -> str:
    text = f"{type(exc).__name__}: {exc}" if not isinstance(exc, msgspec.DecodeError) else str(exc)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_flows(paths: Iterable[str | Path], reader: FlowReader[F] | None = None) -> Iterator[F]:
    """Yield every flow of ``paths`` in order; ``reader.stats`` holds the counts afterwards."""
    rd: FlowReader[Any] = reader if reader is not None else FlowReader()
    for path in paths:
        for batch in rd.read(path):
            yield from batch

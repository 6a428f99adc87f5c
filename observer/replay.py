"""Hubble JSON lines replayed into a :class:`FlowRing`, for the observer server to serve.

Each line becomes an ``observer.GetFlowsResponse`` through protobuf's own JSON parser
(``json_format``, unknown fields ignored): protojson's field names are those of netwarden's
``flow.proto``, so nothing is translated by hand. Line shapes (``INTERFACES.md`` §2.2):

* ``{"flow": {...}, "node_name": ..., "time": ...}`` (``hubble observe -o json``, exporter);
* ``{"lost_events": ...}`` and ``{"node_status": ...}``: written to the ring as they are, since
  GetFlows serves them too;
* ``{"agent_event": ...}`` / ``{"debug_event": ...}``: counted, not served (GetFlows does not
  carry them);
* a bare legacy Flow object (no envelope).

Bad lines are counted by reason with their ``file:line`` in a
:class:`~netwarden.ingest.reader.ReadStats` (same reason names as the flow reader) and never stop
the replay. A flow needs a time (its own or the envelope's): since/until and ordering depend on
it, so a flow without one is a ``missing_time`` bad line.
"""

from __future__ import annotations

import os
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import orjson
from google.protobuf import json_format

from netwarden.hubble import flow_pb2, observer_pb2
from netwarden.ingest.inputfiles import STDIN, InputError, open_input
from netwarden.ingest.reader import MAX_LINE_BYTES, ErrorReason, ReadStats
from netwarden.observer.ring import FlowRing

if TYPE_CHECKING:
    from netwarden.observer.server import TLSFiles

__all__ = ["Decoded", "Replay", "decode_line", "serve_replay"]

Response = observer_pb2.GetFlowsResponse

_BARE_FLOW_KEYS = (
    "verdict",
    "IP",
    "l4",
    "source",
    "destination",
    "l7",
    "event_type",
    "Type",
    "time",
)
_SERVED_EVENTS = ("lost_events", "node_status")
_SKIPPED_EVENTS = ("agent_event", "debug_event")
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True, slots=True)
class Decoded:
    """One line: a response to serve, or a non-served event kind, or an error reason."""

    response: Response | None = None
    skipped: str | None = None  # "agent_event" / "debug_event" / "blank"
    error: str | None = None  # an ErrorReason
    message: str = ""


def decode_line(line: bytes | str) -> Decoded:
    """Decode one Hubble JSON line into a GetFlowsResponse (or say why it is not one)."""
    if not line.strip():
        return Decoded(skipped="blank")
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return Decoded(error=ErrorReason.NOT_JSON, message=_short(str(exc)))
    if not isinstance(obj, dict):
        return Decoded(
            error=ErrorReason.NOT_A_FLOW,
            message=f"expected a JSON object per line, got {type(obj).__name__}",
        )
    try:
        if "flow" in obj:
            response = _parse(obj, Response())
        elif any(key in obj for key in _SERVED_EVENTS):
            response = _parse(obj, Response())
            if response.WhichOneof("response_types") is None:
                return Decoded(error=ErrorReason.NOT_A_FLOW, message="empty event")
            return Decoded(response=response)
        elif any(key in obj for key in _SKIPPED_EVENTS):
            return Decoded(skipped=next(k for k in _SKIPPED_EVENTS if k in obj))
        elif any(key in obj for key in _BARE_FLOW_KEYS):
            response = Response()
            _parse(obj, response.flow)
        else:
            return Decoded(
                error=ErrorReason.NOT_A_FLOW,
                message="JSON object without flow, lost_events, node_status, "
                "agent_event, debug_event or any flow field",
            )
    except _WrongType as exc:
        return Decoded(error=ErrorReason.WRONG_TYPE, message=str(exc))
    if response.WhichOneof("response_types") != "flow":
        return Decoded(error=ErrorReason.NOT_A_FLOW, message="flow is null")
    flow = response.flow
    if not flow.HasField("time"):
        if not response.HasField("time"):
            return Decoded(
                error=ErrorReason.MISSING_TIME,
                message="flow has no event time (neither flow.time nor the envelope's time)",
            )
        flow.time.CopyFrom(response.time)
    if not response.HasField("time"):
        response.time.CopyFrom(flow.time)
    if not flow.node_name and response.node_name:
        flow.node_name = response.node_name
    return Decoded(response=response)


class _WrongType(Exception):
    pass


def _parse(obj: dict[str, Any], message: Any) -> Any:
    try:
        return json_format.ParseDict(obj, message, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise _WrongType(_short(str(exc))) from None
    except (TypeError, ValueError, AttributeError, RecursionError) as exc:
        raise _WrongType(_short(f"{type(exc).__name__}: {exc}")) from None


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Replay:
    """Feeds one Hubble JSON file (plain, gzip, or ``-`` for stdin) into a ring.

    Parameters
    ----------
    ring:
        Where responses go.
    path:
        The file; gzip is detected from its first bytes.
    rate:
        Flows per second (0: as fast as possible). Events are not paced.
    follow:
        After the end, keep reading what is appended (like ``tail -F``: a partial last line
        waits for its newline; a truncated file is read again from its start; a rotated one is
        reopened). Plain files only.
    poll_interval:
        Seconds between checks for appended data when following.
    max_examples:
        Bad lines kept with their location (all are counted).

    ``stats`` (a :class:`ReadStats`) and ``written`` can be read while it runs.
    """

    def __init__(
        self,
        ring: FlowRing,
        path: str | Path,
        *,
        rate: float = 0.0,
        follow: bool = False,
        poll_interval: float = 0.25,
        max_examples: int = 5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not rate >= 0:  # also refuses NaN
            raise ValueError(f"rate must be 0 (unpaced) or more flows per second, got {rate}")
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be > 0 seconds, got {poll_interval}")
        self.ring = ring
        self.path = str(path)
        self.rate = rate
        self.follow = follow
        self.poll_interval = poll_interval
        self.stats = ReadStats(max_examples=max_examples)
        self.written = 0  # responses written to the ring
        self.finished = False  # run() returned: the input ended, or the replay was stopped
        self._clock = clock
        self._paced_start: float | None = None
        self._paced_flows = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._active_stop = self._stop
        self.error: BaseException | None = None

    # -- running --------------------------------------------------------------------------------
    def check(self) -> None:
        """Fail early (InputError) when the input cannot be replayed as asked."""
        if self.path == STDIN:
            return
        path = Path(self.path)
        if not path.exists():
            raise InputError(f"{self.path}: no such file")
        if path.is_dir():
            raise InputError(f"{self.path}: is a directory, expected a flow file")
        if self.follow:
            try:
                with open(path, "rb") as f:
                    gzipped = f.read(2) == _GZIP_MAGIC
            except OSError as exc:
                raise InputError(f"{self.path}: cannot read: {exc.strerror or exc}") from None
            if gzipped:
                raise InputError(
                    f"{self.path}: a gzip file cannot be followed (it is finished "
                    "once compressed); replay it without --follow"
                )

    def run(self, stop: threading.Event | None = None) -> ReadStats:
        """Replay until the input ends (or, following, until ``stop`` is set); return the stats.

        Bad content never raises; an input that cannot be opened raises InputError.
        """
        stop = stop or self._stop
        self._active_stop = stop
        try:
            if self.follow and self.path != STDIN:
                self._follow(Path(self.path), stop)
            else:
                with open_input(self.path) as (stream, _position):
                    self._read_stream(stream, stop)
        finally:
            self.finished = True
        return self.stats

    def start(self) -> threading.Thread:
        """Run in a daemon thread; an error is kept in ``error``."""
        self.check()

        def target() -> None:
            try:
                self.run(self._stop)
            except BaseException as exc:
                self.error = exc

        self._thread = threading.Thread(target=target, name="observer-replay", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, timeout: float | None = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- reading ----------------------------------------------------------------------------------
    def _read_stream(self, stream: BinaryIO, stop: threading.Event) -> None:
        name = self.path
        line_no = 0
        try:
            for line_no, line in _lines(stream, self.stats, name):
                if stop.is_set():
                    return
                self._handle(line, name, line_no)
        except (OSError, EOFError, zlib.error) as exc:  # corrupt gzip, I/O error
            self.stats.record_error(
                name,
                line_no + 1,
                ErrorReason.UNREADABLE,
                f"cannot read further: {_short(str(exc))}",
            )

    def _follow(self, path: Path, stop: threading.Event) -> None:
        name = str(path)
        f: BinaryIO | None = None
        ident: tuple[int, int] | None = None
        carry, line_no, offset, skipping = b"", 0, 0, False
        try:
            while not stop.is_set():
                if f is None:
                    try:
                        f = open(path, "rb")
                    except OSError:
                        stop.wait(self.poll_interval)
                        continue
                    st = os.fstat(f.fileno())
                    ident, carry, line_no, offset, skipping = (
                        (st.st_dev, st.st_ino),
                        b"",
                        0,
                        0,
                        False,
                    )
                chunk = f.readline(MAX_LINE_BYTES + 1)
                if chunk:
                    offset += len(chunk)
                    if skipping:  # the rest of a line already counted as too long
                        skipping = not chunk.endswith(b"\n")
                        continue
                    carry += chunk
                    if carry.endswith(b"\n"):
                        line_no += 1
                        self.stats.lines += 1
                        self._handle(carry, name, line_no)
                        carry = b""
                    elif len(carry) > MAX_LINE_BYTES:
                        line_no += 1
                        self.stats.lines += 1
                        self.stats.record_error(
                            name,
                            line_no,
                            ErrorReason.LINE_TOO_LONG,
                            f"line longer than {MAX_LINE_BYTES:,} bytes",
                        )
                        carry, skipping = b"", True
                    continue
                # at the end of what is written: rotated, truncated, or just wait
                try:
                    st = os.stat(path)
                    rotated = (st.st_dev, st.st_ino) != ident
                    truncated = not rotated and st.st_size < offset
                except OSError:
                    rotated = truncated = False
                if rotated or truncated:
                    if carry:  # the old file ended without a newline: its last line is complete
                        line_no += 1
                        self.stats.lines += 1
                        self._handle(carry, name, line_no)
                    if rotated:
                        f.close()
                        f = None
                    else:
                        f.seek(0)
                        carry, line_no, offset, skipping = b"", 0, 0, False
                    continue
                stop.wait(self.poll_interval)
        finally:
            if f is not None:
                f.close()

    def _handle(self, line: bytes, name: str, line_no: int) -> None:
        decoded = decode_line(line)
        stats = self.stats
        if decoded.error is not None:
            stats.record_error(name, line_no, decoded.error, decoded.message)
            return
        if decoded.skipped == "blank":
            stats.blank_lines += 1
            return
        if decoded.skipped == "agent_event":
            stats.agent_event_lines += 1
            return
        if decoded.skipped == "debug_event":
            stats.debug_event_lines += 1
            return
        response = decoded.response
        assert response is not None
        kind = response.WhichOneof("response_types")
        if kind == "flow":
            stats.flows += 1
            self._pace()
        elif kind == "lost_events":
            stats.lost_event_lines += 1
            lost = response.lost_events
            stats.events_lost[
                flow_pb2.LostEventSource.Name(lost.source)
                if lost.source in flow_pb2.LostEventSource.values()
                else f"LOST_EVENT_SOURCE_{lost.source}"
            ] += lost.num_events_lost
        elif kind == "node_status":
            stats.node_status_lines += 1
        self.ring.write(response)
        self.written += 1

    def _pace(self) -> None:
        """Wait until this flow's turn at ``rate`` flows per second (interruptible by stop)."""
        if not self.rate:
            return
        now = self._clock()
        if self._paced_start is None:
            self._paced_start = now
        due = self._paced_start + self._paced_flows / self.rate
        self._paced_flows += 1
        if due > now:
            self._active_stop.wait(due - now)


def _lines(stream: BinaryIO, stats: ReadStats, name: str) -> Iterator[tuple[int, bytes]]:
    """Numbered lines of a finished stream, memory bounded by ``MAX_LINE_BYTES`` per line."""
    line_no = 0
    while True:
        line = stream.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        line_no += 1
        stats.lines += 1
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            stats.record_error(
                name,
                line_no,
                ErrorReason.LINE_TOO_LONG,
                f"line longer than {MAX_LINE_BYTES:,} bytes",
            )
            while line and not line.endswith(b"\n"):  # skip the rest of it
                line = stream.readline(MAX_LINE_BYTES + 1)
            continue
        yield line_no, line


# -- the `netwarden observer` command ---------------------------------------------------------------
def serve_replay(
    path: str | Path,
    *,
    listen: str,
    rate: float = 0.0,
    follow: bool = False,
    max_flows: int,
    node_name: str,
    tls: TLSFiles | None = None,
    max_streams: int = 16,
    console: Any,
    stop: threading.Event,
    progress_interval: float = 5.0,
) -> ReadStats:
    """Replay ``path`` into a ring served on ``listen`` until ``stop`` is set.

    Prints where it listens (with the bound port) and then progress on ``console`` (a rich
    Console on stderr); a finished replay keeps being served. Raises InputError /
    ObserverServerError for inputs and addresses that cannot be used.
    """
    from netwarden.observer.server import ObserverServer

    ring = FlowRing(max_flows, node_name=node_name)
    replay = Replay(ring, path, rate=rate, follow=follow)
    replay.check()
    server = ObserverServer(ring, listen, tls=tls, max_streams=max_streams)
    address = server.start()
    try:
        scheme = "TLS" if tls is None or tls.client_ca is None else "mutual TLS"
        security = "plaintext" if tls is None else scheme
        console.print(
            f"netwarden observer: listening on {address} ({security}), node "
            f"{node_name!r}, ring of {max_flows:,} flows",
            markup=False,
        )
        client = address
        for wildcard in ("0.0.0.0:", "[::]:"):
            client = client.replace(wildcard, "localhost:")
        tls_flags = "" if tls is None else " --tls --tls-ca-cert-files CA.pem"
        console.print(f"  try: hubble observe --server {client}{tls_flags} --last 20", markup=False)
        replay.start()
        reported = _progress_state(replay, server)
        printed_at = time.monotonic()
        announced_end = False
        while not stop.wait(0.25):
            if replay.finished and not announced_end:
                announced_end = True
                if replay.error is not None:
                    console.print(f"replay stopped: {replay.error}", markup=False)
                for line in replay.stats.summary_lines():
                    console.print(line, markup=False)
                console.print(
                    "replay finished; still serving what the ring holds (Ctrl-C to stop)",
                    markup=False,
                )
            state = _progress_state(replay, server)
            if state != reported and time.monotonic() - printed_at >= progress_interval:
                console.print(_progress_line(replay, server), markup=False)
                reported, printed_at = state, time.monotonic()
    finally:
        replay.stop(timeout=2.0)
        server.stop(grace=1.0)
    console.print("stopped: " + _progress_line(replay, server), markup=False)
    if not announced_end and replay.stats.error_lines:
        for line in replay.stats.summary_lines()[1:]:
            console.print(line, markup=False)
    return replay.stats


def _progress_state(replay: Replay, server: Any) -> tuple[int, ...]:
    s = server.servicer.stats
    return (
        replay.stats.flows,
        replay.stats.error_lines,
        s.flows_sent,
        s.streams_active,
        s.streams_total,
    )


def _progress_line(replay: Replay, server: Any) -> str:
    s = server.servicer.stats
    lost = f", {s.events_lost:,} lost by slow readers" if s.events_lost else ""
    return (
        f"replayed {replay.stats.flows:,} flows ({replay.stats.error_lines:,} bad lines); "
        f"served {s.flows_sent:,} flows on {s.streams_total:,} GetFlows calls "
        f"({s.streams_active:,} open){lost}"
    )

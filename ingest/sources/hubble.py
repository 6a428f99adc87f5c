"""The live Hubble source: flows from Hubble's gRPC Observer API (a node's socket, or Relay).

:class:`HubbleSource` calls ``observer.Observer/GetFlows`` with ``follow`` and the configured
filters (namespaces, verdicts, since) on a Cilium agent's unix socket
(``/var/run/cilium/hubble.sock``) or on Hubble Relay over TCP (port 4245), in plain text, TLS
or mutual TLS, and hands the flows to the pipeline as the same records the JSON reader makes
(:mod:`netwarden.ingest.protoflow`).

* **Start.** ``ServerStatus`` first: the server's version, flows in its buffer and flow rate are
  logged; a server whose uptime is shorter than our absence has restarted, which is logged and
  counted (``server_restarts``).
* **Gaps.** A restart or a full ring only *may* have cost flows: a Relay that restarted still
  reads its nodes' rings, a replaying server holds old flows again. The first flow of the
  resumed stream tells: the server sends everything it holds since the resume point, so a
  buffer that reaches back re-sends our newest flow first or before it. Only when that first
  flow is later than the newest we had, and the server restarted or its ring was full (had
  overwritten flows), are the flows in between logged as lost and counted (``gaps``).
* **Not flows.** ``lost_events`` (Hubble's ring buffer or perf buffer overflowed) are counted by
  source in ``stats.events_lost`` (exported as ``netwarden_ingest_producer_lost_events``) and
  logged; ``node_status`` (a Relay's node went away or came back) is counted by state and logged.
  A message that is not a valid ``GetFlowsResponse`` is counted as ``bad_message`` and skipped;
  the stream goes on.
* **Reconnect.** Any failure (server gone, stream ended, network) is retried with exponential
  backoff and jitter, forever, until the service stops. The new stream asks for flows since
  shortly before the newest flow seen; :class:`~netwarden.ingest.sources.resume.ResumeTracker` skips the
  ones already delivered, so no flow is lost that the server still holds, and none is doubled.
* **Backpressure.** A reader thread takes messages off the stream into a small bounded queue;
  when the pipeline is slow, ``emit`` blocks, the queue fills, the reader stops reading, and
  gRPC flow control holds the server back. Nothing buffers without bound: a Hubble server
  then lets its ring overwrite what this client has not read, and says so with ``lost_events``.
"""

from __future__ import annotations

import hashlib
import random
import re
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import grpc
import grpc.experimental
from google.protobuf.message import DecodeError
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from netwarden.hubble import flow_pb2, observer_pb2, relay_pb2
from netwarden.ingest.leanproto import LeanResponse
from netwarden.ingest.protoflow import FlowDecoder, OutOfRange, enum_names, full_response
from netwarden.ingest.reader import ErrorReason, ReadStats
from netwarden.ingest.sources.base import SourceStatus
from netwarden.ingest.sources.resume import ResumeTracker

__all__ = [
    "DEFAULT_SERVER",
    "HubbleSource",
    "HubbleStats",
    "flows_request",
    "parse_since",
    "target",
]

#: A Cilium agent's Hubble socket (Hubble Relay listens on TCP 4245 instead).
DEFAULT_SERVER: Final = "unix:///var/run/cilium/hubble.sock"
GET_FLOWS: Final = "/observer.Observer/GetFlows"

_NODE_STATES: Final = enum_names(relay_pb2.NodeState)
_LOST_SOURCES: Final = enum_names(flow_pb2.LostEventSource)
_VERDICTS: Final = {v.name: v.number for v in flow_pb2.Verdict.DESCRIPTOR.values}
_DURATION = re.compile(r"^(\d+(?:\.\d*)?)(ms|s|m|h|d)$")
_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_NS: Final = 1_000_000_000
Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


# -- request and address ----------------------------------------------------------------------
def parse_since(text: str | datetime | None, now: datetime | None = None) -> datetime | None:
    """``since`` as Hubble's CLI takes it: an RFC 3339 time, or a duration ago (``90s``, ``5m``,
    ``2h``, ``1d``). None or empty: no start time (only new flows)."""
    if text is None or isinstance(text, datetime):
        return text
    text = text.strip()
    if not text:
        return None
    match = _DURATION.match(text)
    if match:
        ago = timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
        return (now or _utcnow()) - ago
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"since {text!r}: expected an RFC 3339 time such as "
            "2026-11-26T10:00:00Z or a duration such as 90s, 5m, 2h, 1d"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def flows_request(
    *,
    namespaces: Sequence[str] = (),
    verdicts: Sequence[str] = (),
    since_ns: int | None = None,
    follow: bool = True,
) -> Any:
    """The GetFlowsRequest ``hubble observe`` would send for the same options.

    One namespace becomes two whitelist filters, ``source_pod: ["ns/"]`` and
    ``destination_pod: ["ns/"]`` (a flow from or to the namespace); verdicts are ANDed into
    each filter (or form the only filter).
    """
    unknown = [v for v in verdicts if v.upper() not in _VERDICTS]
    if unknown:
        raise ValueError(
            f"unknown verdict {', '.join(unknown)}; Hubble's verdicts: "
            + ", ".join(n for n in _VERDICTS if n != "VERDICT_UNKNOWN")
        )
    codes = [_VERDICTS[v.upper()] for v in verdicts]
    request = observer_pb2.GetFlowsRequest(follow=follow)
    pods = [f"{ns.strip()}/" for ns in namespaces if ns.strip()]
    if pods:
        for field_name in ("source_pod", "destination_pod"):
            f = request.whitelist.add()
            getattr(f, field_name).extend(pods)
            f.verdict.extend(codes)
    elif codes:
        request.whitelist.add().verdict.extend(codes)
    if since_ns is not None:
        request.since.seconds, request.since.nanos = divmod(since_ns, _NS)
    return request


def target(server: str) -> str:
    """A gRPC target for ``server``: ``unix:///path`` (or a plain ``/path``) for a socket,
    ``host:port`` for TCP (Relay's port is 4245, an agent's 4244)."""
    server = server.strip()
    if not server:
        raise ValueError(
            "empty Hubble server address: use unix:///var/run/cilium/hubble.sock or host:port"
        )
    if server.startswith("/"):
        return "unix://" + server
    if server.startswith("unix:"):
        return server
    for scheme in ("tls://", "http://", "https://", "grpc://"):
        if server.startswith(scheme):
            raise ValueError(
                f"Hubble server {server!r}: give host:port without {scheme} "
                "(TLS is the hubble.tls option)"
            )
    host, sep, port = server.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"Hubble server {server!r}: expected host:port (Relay: 4245) or "
            "unix:///path/to/hubble.sock"
        )
    return server


@dataclass(frozen=True)
class TlsFiles:
    """TLS settings: the CA that signed the server (None: the system roots), and for mutual
    TLS this client's certificate and key; ``server_name`` overrides the name checked in the
    server's certificate (Hubble's are issued for ``*.<cluster>.hubble-grpc.cilium.io``)."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    server_name: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        if (self.cert is None) != (self.key is None):
            raise ValueError("mutual TLS needs both tls_cert and tls_key")
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca, "tls_ca"),
            private_key=_read(self.key, "tls_key"),
            certificate_chain=_read(self.cert, "tls_cert"),
        )


def _read(path: Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"{what} {path}: cannot read: {exc.strerror or exc}") from None


# -- counters -----------------------------------------------------------------------------------
@dataclass
class HubbleStats:
    """What the connection went through; flows, bad messages and lost events are in
    :class:`~netwarden.ingest.reader.ReadStats`."""

    connects: int = 0  # streams opened
    reconnects: int = 0  # streams opened after the first
    failures: Counter[str] = field(default_factory=Counter)  # by gRPC status code name
    duplicates: int = 0  # re-sent flows skipped after a reconnect (also any before ``since``)
    max_waiting: int = 0  # most flows ever waiting between the stream reader and the pipeline
    server_restarts: int = 0  # the server restarted while we were away (a gap is possible)
    gaps: int = 0  # reconnects where the server's buffer no longer reached back: flows lost
    node_status: Counter[str] = field(default_factory=Counter)  # NodeStatusEvents by state
    server_version: str = ""
    server_flows_rate: float = 0.0  # flows/s the server reported at the last connect
    connected: bool = False


class _HubbleCollector(Collector):
    """Exports :class:`HubbleStats` at scrape time (nothing on the hot path)."""

    def __init__(self, stats: HubbleStats, server: str) -> None:
        self.stats = stats
        self.server = server

    def collect(self) -> Iterator[Any]:
        s = self.stats
        labels = ["server"]
        yield _gauge(
            "netwarden_hubble_connected",
            "1 while the GetFlows stream is open.",
            labels,
            [([self.server], 1.0 if s.connected else 0.0)],
        )
        yield _counter(
            "netwarden_hubble_reconnects",
            "GetFlows streams reopened after a failure.",
            labels,
            [([self.server], s.reconnects)],
        )
        failures = CounterMetricFamily(
            "netwarden_hubble_stream_failures",
            "GetFlows streams that failed, by gRPC status.",
            labels=["server", "code"],
        )
        for code, n in sorted(s.failures.items()):
            failures.add_metric([self.server, code], n)
        yield failures
        yield _counter(
            "netwarden_hubble_duplicates_skipped",
            "Flows the server sent again after a reconnect, skipped.",
            labels,
            [([self.server], s.duplicates)],
        )
        yield _counter(
            "netwarden_hubble_server_restarts",
            "Reconnects that found the server restarted while we were away.",
            labels,
            [([self.server], s.server_restarts)],
        )
        yield _counter(
            "netwarden_hubble_gaps",
            "Reconnects after which the server no longer held the flows since our newest one "
            "(restarted or overwritten): the flows of that gap are lost.",
            labels,
            [([self.server], s.gaps)],
        )
        nodes = CounterMetricFamily(
            "netwarden_hubble_node_status_events",
            "Relay node status events, by state.",
            labels=["server", "state"],
        )
        for state, n in sorted(s.node_status.items()):
            nodes.add_metric([self.server, state], n)
        yield nodes
        yield _gauge(
            "netwarden_hubble_server_flows_rate",
            "Flows per second the server reported at the last connect.",
            labels,
            [([self.server], s.server_flows_rate)],
        )


def _counter(
    name: str, doc: str, labels: list[str], values: list[tuple[list[str], float]]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for label_values, value in values:
        family.add_metric(label_values, value)
    return family


def _gauge(
    name: str, doc: str, labels: list[str], values: list[tuple[list[str], float]]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for label_values, value in values:
        family.add_metric(label_values, value)
    return family


# -- handing flows from the stream reader to the pipeline ----------------------------------------
class _Handoff:
    """A bounded queue of converted flows between the stream reader and ``emit``.

    The reader blocks when ``limit`` flows wait (that is the backpressure); the consumer takes
    whatever is there, up to a batch, waiting at most ``linger`` seconds for the first.
    """

    def __init__(self, limit: int, stats: HubbleStats) -> None:
        self.limit = limit
        self.items: deque[Any] = deque()
        self.cond = threading.Condition()
        self.closed = False
        self.stats = stats

    def put(self, item: Any) -> bool:
        """Queue ``item``; False when the consumer has gone (stop reading)."""
        with self.cond:
            while len(self.items) >= self.limit and not self.closed:
                self.cond.wait()
            if self.closed:
                return False
            self.items.append(item)
            waiting = len(self.items)
            if waiting == 1:
                self.cond.notify_all()
            if waiting > self.stats.max_waiting:
                self.stats.max_waiting = waiting
            return True

    def take(self, most: int, linger: float) -> list[Any]:
        with self.cond:
            if not self.items:
                self.cond.wait(linger)
            n = min(most, len(self.items))
            out = [self.items.popleft() for _ in range(n)]
            if n:
                self.cond.notify_all()
            return out

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()


class _StreamEnded(Exception):
    """The server closed the stream without an error (it should not, with follow)."""


# -- the source ---------------------------------------------------------------------------------
class HubbleSource:
    """Flows from Hubble's Observer API, live; see the module docstring.

    ``server``: ``unix:///var/run/cilium/hubble.sock`` (default), a socket path, or ``host:port``
    (Relay: 4245). ``tls``: use TLS (``tls_ca``, and ``tls_cert`` + ``tls_key`` for mutual
    TLS; ``tls_server_name`` to check another name in the server's certificate).
    ``namespaces`` / ``verdicts``: only flows from or to these namespaces / with these
    verdicts. ``since``: on the first connect, start this far back (``5m``) or at this time;
    None: only new flows.
    """

    kind = "hubble"

    def __init__(
        self,
        server: str = DEFAULT_SERVER,
        *,
        tls: bool = False,
        tls_ca: str | Path | None = None,
        tls_cert: str | Path | None = None,
        tls_key: str | Path | None = None,
        tls_server_name: str | None = None,
        namespaces: Sequence[str] = (),
        verdicts: Sequence[str] = (),
        since: str | datetime | None = None,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        resume_overlap: float = 2.0,
        dedupe_limit: int = 100_000,
        connect_timeout: float = 10.0,
        batch_lines: int = 64,
        pending_flows: int = 1024,
        linger: float = 0.05,
        registry: CollectorRegistry | None = None,
        log: Callable[[str], Any] = print,
        clock: Clock = _utcnow,
        max_examples: int = 5,
    ) -> None:
        self.target = target(server)
        self.name = server
        if tls_cert or tls_key or tls_ca or tls_server_name:
            tls = True
        self.tls = (
            TlsFiles(
                Path(tls_ca) if tls_ca else None,
                Path(tls_cert) if tls_cert else None,
                Path(tls_key) if tls_key else None,
                tls_server_name,
            )
            if tls
            else None
        )
        if self.tls is not None:
            self._credentials = self.tls.credentials()  # fails now on unreadable files
        self.namespaces = tuple(namespaces)
        self.verdicts = tuple(verdicts)
        flows_request(namespaces=self.namespaces, verdicts=self.verdicts)  # validate now
        self.since = parse_since(since, clock())
        for name, value in (
            ("backoff_initial", backoff_initial),
            ("backoff_max", backoff_max),
            ("connect_timeout", connect_timeout),
            ("linger", linger),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {value!r}")
        if batch_lines < 1 or pending_flows < batch_lines:
            raise ValueError("batch_lines must be >= 1 and pending_flows >= batch_lines")
        self.backoff_initial = backoff_initial
        self.backoff_max = max(backoff_max, backoff_initial)
        self.connect_timeout = connect_timeout
        self.batch_lines = batch_lines
        self.pending_flows = pending_flows
        self.linger = linger
        self.tracker = ResumeTracker(overlap_seconds=resume_overlap, limit=dedupe_limit)
        self.stats = ReadStats(max_examples=max_examples)
        self._decoder = FlowDecoder()  # its caches of repeating sub-messages live with us
        self.hubble = HubbleStats()
        self.log = log
        self._clock = clock
        self._error: str | None = "not started"
        self._flows = 0
        self._last_flow_at: datetime | None = None
        self._message_no = 0
        self._since_ns = 0  # the current stream's since: older flows are not new
        # when the last open stream broke; failed attempts to reconnect do not move it, so a
        # server that came back between two attempts still counts as restarted
        self._away_since: datetime | None = None
        self._gap_check: _GapCheck | None = None  # decided by the resumed stream's first flow
        self._random = random.Random()
        if registry is not None:
            registry.register(_HubbleCollector(self.hubble, server))

    # -- Source ---------------------------------------------------------------------------------
    def status(self) -> SourceStatus:
        return SourceStatus(
            self.kind,
            self.name,
            self.hubble.connected,
            self._error,
            self._flows,
            self._last_flow_at,
        )

    def run(self, emit: Callable[[list[Any]], None], stop: threading.Event) -> None:
        attempt = 0
        try:
            while not stop.is_set():
                delivered_before = self._flows
                connects_before = self.hubble.connects
                try:
                    self._session(emit, stop)
                    error = "the server ended the stream"
                except grpc.RpcError as exc:
                    code = exc.code() if hasattr(exc, "code") else None
                    self.hubble.failures[code.name if code else "UNKNOWN"] += 1
                    error = _describe(exc)
                except _StreamEnded:
                    self.hubble.failures["ENDED"] += 1
                    error = "the server ended the stream"
                except DecodeError as exc:  # ServerStatus answered with garbage
                    self.hubble.failures["BAD_STATUS"] += 1
                    error = f"ServerStatus answer is not a ServerStatusResponse: {exc}"
                finally:
                    self.hubble.connected = False
                if stop.is_set():
                    break
                if self.hubble.connects > connects_before:
                    self._away_since = self._clock()
                attempt = 0 if self._flows > delivered_before else attempt + 1
                delay = self._backoff(attempt)
                self._error = f"{error}; reconnecting in {delay:.1f} s"
                self.log(f"hubble {self.name}: {self._error}")
                stop.wait(delay)
        finally:
            self.hubble.connected = False
            if self._error is None or not self._error.startswith("stopped"):
                self._error = "stopped"

    # -- one connection -------------------------------------------------------------------------
    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter: half to all of initial x 2^attempt, capped."""
        ceiling = min(self.backoff_max, self.backoff_initial * (2 ** min(attempt, 30)))
        return ceiling * (0.5 + 0.5 * self._random.random())

    def _channel(self) -> grpc.Channel:
        # Single-threaded unary-stream: messages are read on the calling thread, without a hop
        # through gRPC's own thread (measured: about 30 % more messages per second).
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", 16 << 20),
            (grpc.experimental.ChannelOptions.SingleThreadedUnaryStream, 1),
        ]
        if self.tls is None:
            return grpc.insecure_channel(self.target, options=options)
        if self.tls.server_name:
            options.append(("grpc.ssl_target_name_override", self.tls.server_name))
        return grpc.secure_channel(self.target, self._credentials, options=options)

    def _session(self, emit: Callable[[list[Any]], None], stop: threading.Event) -> None:
        with self._channel() as channel:
            status = observer_pb2.ServerStatusResponse.FromString(
                channel.unary_unary(
                    "/observer.Observer/ServerStatus",
                    request_serializer=observer_pb2.ServerStatusRequest.SerializeToString,
                    response_deserializer=None,
                )(observer_pb2.ServerStatusRequest(), timeout=self.connect_timeout)
            )
            restarted = self._server_status(status)
            self._expect_gap_check(status, restarted=restarted)
            resume_ns = self.tracker.resume_since_ns()
            if resume_ns is None and self.since is not None:
                since_dt = self.since
                resume_ns = int(since_dt.timestamp()) * _NS + since_dt.microsecond * 1000
            self.tracker.reconnected()
            self._since_ns = resume_ns or 0
            request = flows_request(
                namespaces=self.namespaces, verdicts=self.verdicts, since_ns=resume_ns
            )
            call = channel.unary_stream(
                GET_FLOWS,
                request_serializer=observer_pb2.GetFlowsRequest.SerializeToString,
                response_deserializer=None,
            )(request)
            self.hubble.connects += 1
            if self.hubble.connects > 1:
                self.hubble.reconnects += 1
            self.hubble.connected = True
            self._error = None
            self._pump(call, emit, stop)

    def _server_status(self, status: Any) -> bool:
        """Log and count what ServerStatus says; True if the server restarted while we were
        away."""
        h = self.hubble
        h.server_version = status.version
        h.server_flows_rate = status.flows_rate
        away = self._away_since
        restarted = bool(
            away is not None
            and status.uptime_ns
            and status.uptime_ns / _NS < (self._clock() - away).total_seconds()
        )
        if restarted:
            h.server_restarts += 1
        if h.connects == 0 or restarted:
            self.log(
                f"hubble {self.name}: server {status.version or '(no version)'}, "
                f"{status.num_flows:,} of {status.max_flows:,} flows buffered, "
                f"{status.flows_rate:,.1f} flows/s"
                + (
                    f", {status.num_connected_nodes.value} nodes connected"
                    if status.HasField("num_connected_nodes")
                    else ""
                )
                + ("; it restarted while we were away" if restarted else "")
            )
        return restarted

    def _expect_gap_check(self, status: Any, *, restarted: bool) -> None:
        """On a reconnect that may have cost flows (the server restarted, or its ring is full and
        so has overwritten some), let the resumed stream's first flow decide."""
        newest = self.tracker.max_time_ns
        if newest is None or self._gap_check is not None:
            return  # nothing delivered yet, or an undecided check from an earlier reconnect
        full = 0 < status.max_flows <= status.num_flows
        if restarted or full:
            reason = (
                "it restarted while we were away"
                if restarted
                else f"its ring of {status.max_flows:,} flows was overwritten while we were away"
            )
            self._gap_check = _GapCheck(newest, reason)

    def _check_gap(self, first_ns: int) -> None:
        """The resumed stream's first flow: later than our newest flow means the server's oldest
        available flow is past it, so what came in between is gone."""
        check, self._gap_check = self._gap_check, None
        if check is None or first_ns <= check.newest_ns:
            return  # the buffer reaches back: the flows since the resume point come again
        self.hubble.gaps += 1
        seconds = (first_ns - check.newest_ns) / _NS
        self.log(
            f"hubble {self.name}: the server's buffer now starts at {_iso(first_ns)}, after the "
            f"newest flow we had ({_iso(check.newest_ns)}); {check.reason}: flows of that gap "
            f"(up to {seconds:,.1f} s) are lost"
        )

    def _pump(self, call: Any, emit: Callable[[list[Any]], None], stop: threading.Event) -> None:
        """Read the stream in a thread into a bounded handoff; emit batches from it here."""
        handoff = _Handoff(self.pending_flows, self.hubble)
        outcome: list[BaseException] = []

        def read() -> None:
            try:
                for data in call:
                    item = self._message(data)
                    if item is not None and not handoff.put(item):
                        return
                outcome.append(_StreamEnded())
            except grpc.RpcError as exc:
                outcome.append(exc)
            except BaseException as exc:
                outcome.append(exc)
            finally:
                with handoff.cond:
                    handoff.closed = True
                    handoff.cond.notify_all()

        reader = threading.Thread(target=read, name="hubble-reader", daemon=True)
        reader.start()
        try:
            while True:
                if stop.is_set():
                    call.cancel()
                    handoff.close()
                batch = handoff.take(self.batch_lines, self.linger)
                if batch:  # read from the stream, so delivered even when stopping
                    self._deliver(batch, emit)
                elif handoff.closed and not handoff.items:
                    break
        finally:
            handoff.close()
            call.cancel()
            reader.join(timeout=5)
        if outcome and not stop.is_set():
            exc = outcome[0]
            if isinstance(exc, grpc.RpcError) and exc.code() == grpc.StatusCode.CANCELLED:
                raise _StreamEnded
            raise exc

    def _deliver(self, batch: list[Any], emit: Callable[[list[Any]], None]) -> None:
        emit(batch)
        self._flows += len(batch)
        self._last_flow_at = self._clock()

    def _bad_message(self, data: bytes, exc: DecodeError) -> None:
        self.stats.record_error(
            self.name,
            self._message_no,
            ErrorReason.BAD_MESSAGE,
            f"not a GetFlowsResponse ({len(data)} bytes): {exc}",
        )

    def _message(self, data: bytes) -> Any:
        """One GetFlowsResponse: the flow to deliver, or None (counted otherwise)."""
        self._message_no += 1
        stats = self.stats
        stats.lines += 1
        try:
            response = LeanResponse.FromString(data)  # lean: only what windows read
        except DecodeError as exc:
            self._bad_message(data, exc)
            return None
        kind = response.WhichOneof("response_types")
        if kind == "flow":
            flow = response.flow
            ts = flow.time
            seconds = ts.seconds
            nanos = ts.nanos
            if not (seconds or nanos or flow.HasField("time")):  # rare: check presence
                if not response.HasField("time"):
                    stats.record_error(
                        self.name,
                        self._message_no,
                        ErrorReason.MISSING_TIME,
                        "flow has no event time (neither flow.time nor the response's time)",
                    )
                    return None
                ts = response.time
                seconds = ts.seconds
                nanos = ts.nanos
            time_ns = seconds * _NS + nanos
            if self._gap_check is not None:
                self._check_gap(time_ns)
            key = flow.uuid or hashlib.blake2b(data, digest_size=16).digest()
            if time_ns < self._since_ns or not self.tracker.is_new(time_ns, key):
                self.hubble.duplicates += 1
                return None
            try:
                record = self._decoder.record(data, flow, seconds, nanos)
            except OutOfRange as exc:
                stats.record_error(self.name, self._message_no, exc.reason, str(exc))
                return None
            except DecodeError as exc:  # a malformed sub-message the lean parse skipped
                self._bad_message(data, exc)
                return None
            stats.flows += 1
            return record
        if kind is not None:  # rare: parse in full
            try:
                response = full_response(data)
            except DecodeError as exc:
                self._bad_message(data, exc)
                return None
        if kind == "lost_events":
            lost = response.lost_events
            source = (
                _LOST_SOURCES.get(lost.source, f"LOST_EVENT_SOURCE_{lost.source}")
                if lost.source
                else "UNKNOWN_LOST_EVENT_SOURCE"
            )
            stats.lost_event_lines += 1
            stats.events_lost[source] += lost.num_events_lost
            self.log(
                f"hubble {self.name}: the server lost {lost.num_events_lost:,} events "
                f"({source}" + (f", node {response.node_name}" if response.node_name else "") + ")"
            )
            return None
        if kind == "node_status":
            event = response.node_status
            state = _NODE_STATES.get(event.state_change, "UNKNOWN_NODE_STATE")
            stats.node_status_lines += 1
            self.hubble.node_status[state] += 1
            nodes = ", ".join(event.node_names) or "(no node named)"
            self.log(
                f"hubble {self.name}: {state} {nodes}"
                + (f": {event.message}" if event.message else "")
            )
            return None
        stats.record_error(
            self.name,
            self._message_no,
            ErrorReason.NOT_A_FLOW,
            "GetFlowsResponse without flow, lost_events or node_status",
        )
        return None


@dataclass(frozen=True, slots=True)
class _GapCheck:
    """A reconnect that may have cost flows: the newest flow time delivered before it, and why
    flows may be gone (for the log)."""

    newest_ns: int
    reason: str


def _iso(time_ns: int) -> str:
    return datetime.fromtimestamp(time_ns / _NS, UTC).isoformat(timespec="milliseconds")


def _describe(exc: grpc.RpcError) -> str:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    name = code.name if code is not None else "error"
    if code == grpc.StatusCode.UNAVAILABLE:
        return f"unavailable: {details}"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return "no answer in time"
    return f"{name}: {details}"

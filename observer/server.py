"""Hubble's Observer gRPC API (``GetFlows``, ``ServerStatus``) served from a :class:`FlowRing`.

Semantics follow Hubble's ``LocalObserverServer`` (``pkg/hubble/observer/local_observer.go``),
so ``hubble observe``, Hubble UI/Relay-style clients and netwarden's own client read netwarden
as they read a Cilium agent:

* ``number=N`` returns the last N matching flows (the first N with ``first``), oldest first;
  ``number=0`` without ``follow`` returns every matching flow held. ``first`` with ``follow`` is
  refused (INVALID_ARGUMENT), as in Hubble. ``number`` with ``since`` is *not* refused: as in
  Hubble, ``since`` chooses where reading starts and ``number`` limits how many flows follow.
* ``since``/``until`` compare the flow's own time, both inclusive. As in Hubble, the first flow
  later than ``until`` ends the stream, following or not.
* ``follow`` sends the history part (last ``number``, or flows since ``since``, or nothing) and
  then new flows as they are written, until the client goes away or the server stops.
* Whitelist/blacklist filters: :mod:`netwarden.observer.filters`; unsupported fields and bad
  values are refused with INVALID_ARGUMENT before anything is sent.
* A reader that the ring's writer lapped (a slow client, a burst) gets one ``lost_events``
  response ``{source: HUBBLE_RING_BUFFER, num_events_lost: N}`` and continues with the oldest
  entry held. (Hubble sends one LostEvent with ``num_events_lost: 1`` per overwritten slot;
  netwarden sends their sum at once.) Lost events and node-status events in the ring bypass
  filters and time ranges, as in Hubble.
* ``field_mask`` keeps only the listed Flow fields, as Hubble's; the response's ``time`` and
  ``node_name`` are then those of the masked flow (empty unless listed), as Hubble's.

Nothing is buffered per client beyond one read batch: a stream that cannot send blocks its own
worker thread while the ring moves on, which is how it falls behind and learns about it.
"""

from __future__ import annotations

import os
import socket
import ssl
import stat
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Self

import grpc
from google.protobuf import field_mask_pb2, unknown_fields, wrappers_pb2
from google.protobuf.message import DecodeError

from netwarden import __version__
from netwarden.hubble import flow_pb2, observer_pb2, observer_pb2_grpc
from netwarden.observer.filters import FilterError, FlowPredicate, compile_filters
from netwarden.observer.ring import FlowRing

__all__ = [
    "DEFAULT_LISTEN",
    "ListenAddress",
    "ObserverServer",
    "ObserverServerError",
    "ObserverServicer",
    "ServingStats",
    "TLSFiles",
    "parse_listen",
]

#: Hubble's agent port (``hubble observe --server localhost:4244`` reaches it).
DEFAULT_LISTEN = "127.0.0.1:4244"
#: Longest unix socket path the kernel accepts (``sun_path`` is 108 bytes with the NUL).
_MAX_UNIX_PATH = 107
_NS = 1_000_000_000
# Timestamp.CheckValid: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59Z
_MIN_SECONDS, _MAX_SECONDS = -62135596800, 253402300799

Response = observer_pb2.GetFlowsResponse


class ObserverServerError(Exception):
    """The server cannot start as asked (address, socket, certificates); the message says why."""


# -- the service ------------------------------------------------------------------------------------
@dataclass
class ServingStats:
    """What the servicer has done since it started (read without locking; for progress output)."""

    streams_total: int = 0
    streams_active: int = 0
    streams_refused: int = 0  # over max_streams
    flows_sent: int = 0
    lost_events_sent: int = 0  # LostEvent responses sent because a reader fell behind
    events_lost: int = 0  # sum of their num_events_lost


@dataclass(frozen=True, slots=True)
class _Plan:
    """A validated GetFlows request."""

    keep: FlowPredicate
    number: int
    first: bool
    follow: bool
    since: int | None  # nanoseconds since the epoch
    until: int | None
    mask: field_mask_pb2.FieldMask | None


class ObserverServicer(observer_pb2_grpc.ObserverServicer):
    """``observer.Observer`` over a :class:`FlowRing`.

    Parameters
    ----------
    ring:
        Where the flows come from; writers keep writing to it while clients read.
    version:
        ServerStatus ``version`` (default ``netwarden <version>``).
    max_streams:
        Concurrent GetFlows calls; more are refused with RESOURCE_EXHAUSTED (each open stream
        holds a worker thread).
    poll_interval:
        How often a waiting follower re-checks that its client is still there (it is also woken
        at once when the call ends or the server stops).
    batch_size:
        Ring entries taken per read; bounds what a stream holds besides the ring.
    """

    def __init__(
        self,
        ring: FlowRing,
        *,
        version: str | None = None,
        max_streams: int = 16,
        poll_interval: float = 1.0,
        batch_size: int = 256,
    ) -> None:
        if max_streams < 1:
            raise ValueError(f"max_streams must be at least 1, got {max_streams}")
        self.ring = ring
        self.version = version or f"netwarden {__version__}"
        self.max_streams = max_streams
        self.poll_interval = poll_interval
        self.batch_size = batch_size
        self.stats = ServingStats()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._started = time.monotonic()

    def stop(self) -> None:
        """End every open stream (UNAVAILABLE) and refuse new ones; the server is going away."""
        self._stopping.set()
        self.ring.wake()

    # -- RPCs -------------------------------------------------------------------------------------
    def ServerStatus(
        self, request: observer_pb2.ServerStatusRequest, context: grpc.ServicerContext
    ) -> observer_pb2.ServerStatusResponse:
        ring = self.ring
        return observer_pb2.ServerStatusResponse(
            num_flows=len(ring),
            max_flows=ring.capacity,
            seen_flows=ring.seen_flows,
            uptime_ns=int((time.monotonic() - self._started) * _NS),
            num_connected_nodes=wrappers_pb2.UInt32Value(value=1),
            num_unavailable_nodes=wrappers_pb2.UInt32Value(value=0),
            version=self.version,
            flows_rate=ring.flows_rate(),
        )

    def GetFlows(
        self, request: observer_pb2.GetFlowsRequest, context: grpc.ServicerContext
    ) -> Iterator[Response]:
        plan = self._plan(request, context)
        if self._stopping.is_set():
            _abort(context, grpc.StatusCode.UNAVAILABLE, "netwarden observer is stopping")
        with self._lock:
            if self.stats.streams_active >= self.max_streams:
                self.stats.streams_refused += 1
                refused = True
            else:
                self.stats.streams_active += 1
                self.stats.streams_total += 1
                refused = False
        if refused:
            _abort(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"too many concurrent GetFlows calls (limit {self.max_streams})",
            )
        try:
            context.add_callback(self.ring.wake)  # a client that leaves wakes its follower
            yield from self._stream(plan, context)
        finally:
            with self._lock:
                self.stats.streams_active -= 1

    # -- GetFlows internals ---------------------------------------------------------------------------
    def _plan(self, request: observer_pb2.GetFlowsRequest, context: grpc.ServicerContext) -> _Plan:
        if request.first and request.follow:
            _abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, "first cannot be specified with follow"
            )
        since = until = None
        try:
            if request.HasField("since"):
                since = _checked_ns(request.since, "since")
            if request.HasField("until"):
                until = _checked_ns(request.until, "until")
            keep = compile_filters(request.whitelist, request.blacklist)
        except (ValueError, FilterError) as exc:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        mask = _field_mask(request)
        if mask is not None and not mask.IsValidForDescriptor(flow_pb2.Flow.DESCRIPTOR):
            _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "field_mask: invalid Flow field path in " + ", ".join(mask.paths),
            )
        return _Plan(keep, request.number, request.first, request.follow, since, until, mask)

    def _stream(self, plan: _Plan, context: grpc.ServicerContext) -> Iterator[Response]:
        first_seq, entries = self.ring.snapshot()
        history, until_passed = _history(entries, plan)
        for response in history:
            yield self._sent(response, plan)
        if not plan.follow or until_passed:
            return
        reader = self.ring.reader(first_seq + len(entries))
        while True:
            if self._stopping.is_set():
                _abort(context, grpc.StatusCode.UNAVAILABLE, "netwarden observer is stopping")
            if not context.is_active():
                return
            batch = reader.next_batch(self.batch_size, timeout=self.poll_interval)
            if batch.lost:
                yield self._lost(batch.lost)
            for response in batch.entries:
                if response.HasField("flow"):
                    t = _ns(response.flow.time)
                    if plan.until is not None and t > plan.until:
                        return
                    if (plan.since is not None and t < plan.since) or not plan.keep(response.flow):
                        continue
                yield self._sent(response, plan)
            if batch.closed and not batch.entries and reader.position >= self.ring.head:
                return  # the ring is closed and drained: no flow will ever come

    def _sent(self, response: Response, plan: _Plan) -> Response:
        if response.HasField("flow"):
            self.stats.flows_sent += 1
            if plan.mask is not None:
                return _masked(response, plan.mask)
        return response

    def _lost(self, count: int) -> Response:
        self.stats.lost_events_sent += 1
        self.stats.events_lost += count
        response = Response(
            node_name=self.ring.node_name,
            lost_events=flow_pb2.LostEvent(
                source=flow_pb2.HUBBLE_RING_BUFFER, num_events_lost=count
            ),
        )
        response.time.GetCurrentTime()
        return response


def _history(entries: list[Response], plan: _Plan) -> tuple[list[Response], bool]:
    """The responses a request gets from what the ring holds now, and whether a flow later than
    ``until`` was seen.

    As Hubble's reader, the first flow later than ``until`` (matching the filters or not) ends
    the stream, following or not: flows held after it are not served even when their own time
    is earlier (a Relay merges nodes, so ring order is not strictly time order). ``number``
    counts back from that point, so ``number=N`` with ``until`` gives the last N flows up to
    ``until``."""
    matches: list[int] = []
    until_passed = False
    if plan.until is not None:
        for i, response in enumerate(entries):
            if response.HasField("flow") and _ns(response.flow.time) > plan.until:
                entries, until_passed = entries[:i], True
                break
    start_since = 0  # after the last matching flow older than since (where Hubble's rewind stops)
    for i, response in enumerate(entries):
        if not response.HasField("flow"):
            continue
        flow = response.flow
        t = _ns(flow.time)
        if not plan.keep(flow):
            continue
        if plan.since is not None and t < plan.since:
            start_since = i + 1
            continue
        matches.append(i)
    n, end = plan.number, len(entries)
    if plan.since is not None or plan.first:
        # from a start point onwards; a follower takes everything from there (Hubble ignores
        # number once following)
        start = start_since if plan.since is not None else 0
        if n and not plan.follow and len(matches) > n:
            matches = matches[:n]
            end = matches[-1] + 1
    elif plan.follow and n == 0:
        return [], until_passed  # follow without history
    elif n and len(matches) >= n:
        matches = matches[-n:]
        start = matches[0]
    else:
        start = 0
    chosen = set(matches)
    out = [entries[i] for i in range(start, end) if i in chosen or not entries[i].HasField("flow")]
    return out, until_passed


def _field_mask(request: observer_pb2.GetFlowsRequest) -> field_mask_pb2.FieldMask | None:
    """The request's field mask: ``field_mask``, else the deprecated ``experimental.field_mask``
    (field 1, reserved in netwarden's proto) that hubble CLIs up to 1.16 send, as Hubble does."""
    if request.field_mask.paths:
        return request.field_mask
    for field in unknown_fields.UnknownFieldSet(request.experimental):
        if field.field_number == 1 and field.wire_type == 2:  # length-delimited: a FieldMask
            try:
                mask = field_mask_pb2.FieldMask.FromString(field.data)
            except DecodeError:
                return None
            return mask if mask.paths else None
    return None


def _masked(response: Response, mask: field_mask_pb2.FieldMask) -> Response:
    """The response of a masked flow, built as Hubble builds it: ``time`` and ``node_name`` come
    from the masked flow, so they are empty unless the mask lists ``time`` / ``node_name``
    (a client that asks for fewer fields gets fewer bytes, envelope included)."""
    out = Response()
    out.flow.SetInParent()
    mask.MergeMessage(response.flow, out.flow)
    if out.flow.HasField("time"):
        out.time.CopyFrom(out.flow.time)
    out.node_name = out.flow.node_name
    return out


def _ns(ts: Any) -> int:
    return int(ts.seconds) * _NS + int(ts.nanos)


def _checked_ns(ts: Any, name: str) -> int:
    """As Go's ``Timestamp.CheckValid``: years 1-9999, nanos within a second."""
    if not _MIN_SECONDS <= ts.seconds <= _MAX_SECONDS or not 0 <= ts.nanos < _NS:
        raise ValueError(f"{name}: invalid timestamp (seconds={ts.seconds}, nanos={ts.nanos})")
    return _ns(ts)


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("context.abort returned")  # pragma: no cover - abort always raises


# -- listen addresses and TLS ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ListenAddress:
    """Where to listen: a unix socket path, or a TCP host and port (port 0: any free one)."""

    unix_path: Path | None = None
    host: str = ""
    port: int = 0

    @property
    def grpc_target(self) -> str:
        if self.unix_path is not None:
            return f"unix:{self.unix_path}"
        host = self.host or "[::]"
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{host}:{self.port}"


def parse_listen(text: str) -> ListenAddress:
    """``unix:///abs/path.sock`` (or ``unix:relative.sock``), ``HOST:PORT``, ``[V6]:PORT`` or
    ``:PORT`` (every interface)."""
    if text.startswith("unix:"):
        rest = text[len("unix:") :]
        rest = rest.removeprefix("//")  # unix:///abs → /abs
        if not rest:
            raise ObserverServerError(f"listen address {text!r}: no socket path after unix:")
        return ListenAddress(unix_path=Path(rest).expanduser().absolute())
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ObserverServerError(
            f"listen address {text!r}: expected HOST:PORT (port 0-65535, e.g. 127.0.0.1:4244), "
            ":PORT, or unix:///path/to.sock"
        )
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return ListenAddress(host=host, port=int(port_text))


@dataclass(frozen=True, slots=True)
class TLSFiles:
    """Server certificate and key (PEM); with ``client_ca``, clients must present a certificate
    signed by it (mutual TLS)."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def credentials(self) -> grpc.ServerCredentials:
        """Read and check the files (a cert that does not match its key fails here, with the
        file names, rather than at every client's handshake)."""
        cert, key = _read_pem(self.cert, "--tls-cert"), _read_pem(self.key, "--tls-key")
        check = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            check.load_cert_chain(self.cert, self.key)
        except (ssl.SSLError, OSError) as exc:
            raise ObserverServerError(
                f"--tls-cert {self.cert} / --tls-key {self.key}: not a usable certificate and "
                f"matching private key ({exc})"
            ) from None
        ca = None
        if self.client_ca is not None:
            ca = _read_pem(self.client_ca, "--tls-client-ca")
            try:
                check.load_verify_locations(cafile=self.client_ca)
            except (ssl.SSLError, OSError) as exc:
                raise ObserverServerError(
                    f"--tls-client-ca {self.client_ca}: not a usable CA certificate ({exc})"
                ) from None
        return grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=ca, require_client_auth=ca is not None
        )


def _read_pem(path: Path, option: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ObserverServerError(f"{option} {path}: no such file") from None
    except IsADirectoryError:
        raise ObserverServerError(f"{option} {path}: is a directory, expected a PEM file") from None
    except OSError as exc:
        raise ObserverServerError(f"{option} {path}: cannot read: {exc.strerror or exc}") from None
    if b"-----BEGIN " not in data:
        raise ObserverServerError(f"{option} {path}: not a PEM file")
    return data


# -- the server ------------------------------------------------------------------------------------
class ObserverServer:
    """A gRPC server for :class:`ObserverServicer` on one address.

    ``start()`` binds (creating a unix socket's folder and replacing a stale socket file, never
    another running server's or a non-socket file) and returns the bound address, with the real
    port when port 0 was asked. ``stop(grace)`` ends follow streams, waits up to ``grace``
    seconds for calls to finish and removes the unix socket. Usable as a context manager.
    """

    def __init__(
        self,
        ring: FlowRing,
        listen: str = DEFAULT_LISTEN,
        *,
        tls: TLSFiles | None = None,
        max_streams: int = 16,
        version: str | None = None,
        poll_interval: float = 1.0,
    ) -> None:
        self.listen = parse_listen(listen)
        self.tls = tls
        self.servicer = ObserverServicer(
            ring, version=version, max_streams=max_streams, poll_interval=poll_interval
        )
        self.address = ""  # set by start(): "HOST:PORT" or "unix:///path"
        self.port = 0
        self._server: grpc.Server | None = None

    @property
    def ring(self) -> FlowRing:
        return self.servicer.ring

    def start(self) -> str:
        if self._server is not None:
            raise RuntimeError("the observer server is already started")
        credentials = self.tls.credentials() if self.tls is not None else None
        if self.listen.unix_path is not None:
            _prepare_socket_path(self.listen.unix_path)
        # ServerStatus must still get a thread when every stream slot is taken
        workers = self.servicer.max_streams + 4
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="observer"),
            maximum_concurrent_rpcs=workers,
            options=[
                ("grpc.so_reuseport", 0),  # a port in use is an error, not shared
                ("grpc.keepalive_time_ms", 30_000),  # notice clients that vanished
                ("grpc.keepalive_timeout_ms", 10_000),
            ],
        )
        observer_pb2_grpc.add_ObserverServicer_to_server(self.servicer, server)
        target = self.listen.grpc_target
        try:
            if credentials is not None:
                port = server.add_secure_port(target, credentials)
            else:
                port = server.add_insecure_port(target)
        except RuntimeError as exc:
            raise ObserverServerError(
                f"cannot listen on {self._describe()}: {exc} (address in use or not available?)"
            ) from None
        if port == 0 and self.listen.unix_path is None:
            raise ObserverServerError(
                f"cannot listen on {self._describe()} (address in use or not available?)"
            )
        server.start()
        self._server = server
        if self.listen.unix_path is not None:
            self.address = f"unix://{self.listen.unix_path}"
        else:
            self.port = port
            host = self.listen.host or "::"
            self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return self.address

    def stop(self, grace: float | None = 1.0) -> None:
        """Stop serving: open streams end with UNAVAILABLE, then calls get ``grace`` seconds."""
        self.servicer.stop()
        if self._server is not None:
            self._server.stop(grace).wait()
            self._server = None
        path = self.listen.unix_path
        if path is not None and _is_socket(path):
            path.unlink(missing_ok=True)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server stops (True) or ``timeout`` passes (False)."""
        if self._server is None:
            return True
        return self._server.wait_for_termination(timeout)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _describe(self) -> str:
        if self.listen.unix_path is not None:
            return f"unix://{self.listen.unix_path}"
        return self.listen.grpc_target


def _is_socket(path: Path) -> bool:
    try:
        return stat.S_ISSOCK(os.lstat(path).st_mode)
    except OSError:
        return False


def _prepare_socket_path(path: Path) -> None:
    """Create the socket's folder; remove a stale socket left by a process that died."""
    if len(os.fsencode(path)) > _MAX_UNIX_PATH:
        raise ObserverServerError(f"unix socket path {path} is longer than {_MAX_UNIX_PATH} bytes")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ObserverServerError(
            f"cannot create folder {path.parent} for the socket: {exc.strerror or exc}"
        ) from None
    if not os.path.lexists(path):
        return
    if not _is_socket(path):
        raise ObserverServerError(f"{path} exists and is not a socket; not replacing it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        path.unlink(missing_ok=True)  # nobody listens: stale
        return
    except OSError as exc:
        raise ObserverServerError(
            f"cannot check existing socket {path}: {exc.strerror or exc}"
        ) from None
    finally:
        probe.close()
    raise ObserverServerError(f"{path}: another server is listening on this socket")

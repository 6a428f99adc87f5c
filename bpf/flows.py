"""Kernel events as Hubble flows: what netwarden's eBPF agent reports looks like Hubble's.

Each :mod:`netwarden.bpf.events` record becomes one or two flows in the shape of
``hubble observe -o json`` (the ``{"flow": ..., "node_name": ..., "time": ...}`` envelope), so
every consumer (the window builder, ``netwarden windows``, the Observer server, Hubble tooling)
reads them as it reads Hubble's. The choices, and why:

* **Orientation.** A flow goes from the connection's initiator to its responder
  (``is_reply`` false), as Hubble's request flows do; ``traffic_direction`` is EGRESS when the
  reporting socket is the client and INGRESS when it is the server, with the observation point
  FROM_ENDPOINT / TO_ENDPOINT, so the once-per-subject counting rule
  (:mod:`netwarden.ingest.direction`) counts a connection seen at both ends once for each end.
* **TCP open**: a SYN flow and its SYN-ACK reply (the window features count attempts and
  answers: ``new_conns``, ``unanswered_syns``). **Close**: a FIN flow carrying what Hubble
  lacks, in netwarden's own field ``netwarden``: bytes and duration, in the flow's orientation
  (``bytes_sent`` = initiator to responder). A connect that never got established closes with a
  lone SYN flow (an unanswered attempt). **Resets**: an RST flow, a reply when the kernel
  answered for no socket (a closed port).
* **UDP**: one flow per socket/peer pair per report interval, with bytes and datagrams each
  way; the end with the lower port is taken as the server (UDP has no handshake to tell).
* **Drops**: verdict DROPPED, event type 1 (drop), direction unknown (counted for both ends, as
  Cilium's drops), the running kernel's drop reason name in ``netwarden.kernel_drop_reason``
  (Hubble's ``drop_reason_desc`` is Cilium's datapath enum, which kernel reasons are not).

Endpoints come from an :class:`EndpointResolver` (:mod:`netwarden.bpf.identity`): the
reporting socket's own end from its network namespace and cgroup, the peer from its address.

**Rendering.** The agent writes tens of thousands of flows a second; building each as nested
dicts and serializing them made most of its ~30 us of CPU per kernel record (now ~8 us). A flow's
JSON is almost all fixed for a given kind of flow between two given ends: what varies is the
ports, netwarden's counters, the time and the uuid. So each flow is defined once, as the dict
below, with *holes* (placeholder strings) where those go; that dict is serialized once per
kind and pair of ends into a ``%``-template (:func:`_template`), and each flow is one ``%``
of it (~1 us). Templates are rebuilt every second of event time, with the endpoints, so a pod
that appears or changes is picked up. :meth:`FlowMapper.lines` gives the JSON lines,
:meth:`FlowMapper.flows` the same flows as dicts.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import orjson

from netwarden.bpf.events import (
    Conn,
    ConnectionClosed,
    ConnectionOpened,
    KernelEvent,
    PacketDropped,
    TcpReset,
    UdpTraffic,
)

__all__ = ["EndpointResolver", "FlowMapper"]

_EMITTER: Final = {"name": "netwarden", "version": "ebpf"}
_TRACE: Final = 4
_DROP: Final = 1
_FROM_ENDPOINT_SUBTYPE: Final = 5  # monitor numbering (INTERFACES.md section 2.4)
_TO_ENDPOINT_SUBTYPE: Final = 0

# Holes in a flow template: strings no real value holds (NUL is never in a Kubernetes name or
# label); orjson writes them as "\u0000name", which _template turns into %d (ports), %s (the
# stats, a JSON object), "%s" (the time, text that needs no escaping) or the run's uuid prefix
# and "%012x" (the flow's number).
_SPORT: Final = "\x00sport"
_DPORT: Final = "\x00dport"
_STATS: Final = "\x00stats"
_TIME: Final = "\x00time"
_UUID: Final = "\x00uuid"
_HOLE = re.compile(rb'"\\u0000([a-z]+)"')
_HOLE_FORMATS: Final = {
    b"sport": b"%d",
    b"dport": b"%d",
    b"stats": b"%s",
    b"time": b'"%s"',
    b"uuid": b'"{uuid}%012x"',
}
#: netwarden's field of a connection's close in its usual form: bytes both ways and duration,
#: no retransmits, then the process (other forms go through the general path, _Stats.of)
_CLOSE_STATS: Final = b'{"bytes_sent":%d,"bytes_received":%d,"duration_ns":%d,%s}'
_ENVELOPE_HOLES: Final = ("time", "uuid", "time")
_NEWLINE: Final = orjson.OPT_APPEND_NEWLINE

Body = dict[str, Any]
#: a flow with holes, and the holes it must have, in order (the values are passed so)
Shape = tuple[Body, tuple[str, ...]]


class EndpointLike(Protocol):
    identity: int
    namespace: str
    pod_name: str
    labels: tuple[str, ...]
    workloads: tuple[tuple[str, str], ...]


class EndpointResolver(Protocol):
    """Who an end of a flow is: the reporting socket's own end, or a peer by address."""

    def local(self, netns: int, cgroup_id: int, pid: int) -> EndpointLike: ...

    def remote(self, ip: str) -> EndpointLike: ...


def _endpoint(info: EndpointLike) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if info.identity:
        out["identity"] = info.identity
    if info.namespace:
        out["namespace"] = info.namespace
    if info.labels:
        out["labels"] = list(info.labels)
    if info.pod_name:
        out["pod_name"] = info.pod_name
    if info.workloads:
        out["workloads"] = [{"name": name, "kind": kind} for name, kind in info.workloads]
    return out


def _template(envelope: dict[str, Any], holes: tuple[str, ...], uuid_prefix: bytes) -> bytes:
    """The envelope's JSON line as a ``%``-format whose fields are its holes, in the order
    ``holes`` names (checked: the values are passed in that order)."""
    raw = orjson.dumps(envelope, option=_NEWLINE).replace(b"%", b"%%")
    found = tuple(name.decode() for name in _HOLE.findall(raw))
    if found != holes:
        raise ValueError(f"flow template has holes {found}, expected {holes}")
    return _HOLE.sub(lambda m: _HOLE_FORMATS[m.group(1)].replace(b"{uuid}", uuid_prefix), raw)


class _Clock:
    """RFC 3339 text of event times; each second's part is formatted once (events of a few
    neighbouring seconds interleave, so a handful are kept)."""

    def __init__(self) -> None:
        self._stamps: dict[int, bytes] = {}

    def rfc3339(self, time_ns: int) -> bytes:
        seconds, nanos = divmod(time_ns, 1_000_000_000)
        stamp = self._stamps.get(seconds)
        if stamp is None:
            if len(self._stamps) > 8:
                self._stamps.clear()
            stamp = self._stamps[seconds] = (
                datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S").encode()
            )
        return b"%s.%09dZ" % (stamp, nanos)


class _Stats:
    """netwarden's own field of a flow (a JSON object): the non-zero counts, then the process
    (pid, comm, netns, cgroup_id, the non-zero ones), whose part is made once per process."""

    def __init__(self) -> None:
        self._processes: dict[tuple[int, str, int, int], bytes] = {}

    def clear(self) -> None:
        self._processes.clear()

    def process(self, event: Any) -> bytes:
        """The process's members, without braces ("" when nothing is known)."""
        key = (event.pid, event.comm, event.netns, event.cgroup_id)
        found = self._processes.get(key)
        if found is None:
            members = {
                name: value
                for name, value in zip(("pid", "comm", "netns", "cgroup_id"), key)
                if value
            }
            found = self._processes[key] = orjson.dumps(members)[1:-1]
        return found

    def of(self, event: Any, **counts: int) -> bytes:
        """The whole field: ``counts`` (the non-zero ones, in order), then the process."""
        members = b",".join(
            [b'"%s":%d' % (name.encode(), value) for name, value in counts.items() if value]
            + [part for part in (self.process(event),) if part]
        )
        return b"{%s}" % members

    def close(self, event: Any, sent: int, received: int) -> bytes:
        """A connection's close: bytes each way (in the flow's orientation), duration,
        retransmits."""
        process = self.process(event)
        if sent and received and event.duration_ns and not event.retransmits and process:
            return _CLOSE_STATS % (sent, received, event.duration_ns, process)
        return self.of(
            event,
            bytes_sent=sent,
            bytes_received=received,
            duration_ns=event.duration_ns,
            retransmits=event.retransmits,
        )


def _ports(conn: Conn, local_is_client: bool) -> tuple[int, int]:
    """(initiator's port, responder's port)."""
    if local_is_client:
        return conn.local_port, conn.remote_port
    return conn.remote_port, conn.local_port


class FlowMapper:
    """Turns kernel events into Hubble-shaped flows: JSON lines (:meth:`lines`) or the
    envelopes as dicts (:meth:`flows`)."""

    def __init__(self, resolver: EndpointResolver, node_name: str) -> None:
        self.resolver = resolver
        self.node_name = node_name
        self._clock = _Clock()
        # flow uuids: a random version-4 prefix per run and the flow's number, so they are
        # unique without asking the OS for randomness per flow (the number is in the template)
        self._uuid_prefix = str(uuid.uuid4())[:24].encode()  # 8-4-4-4- (version and variant)
        self._flow_no = 0
        self._stats = _Stats()
        # templates by kind of flow and its ends, re-made every second of event time (module
        # docstring); endpoints are resolved only when a template is made
        self._templates: dict[tuple[Any, ...], tuple[bytes, ...]] = {}
        self._second = -1
        self._render: dict[type, Callable[[Any], list[bytes]]] = {
            ConnectionOpened: self._opened,
            ConnectionClosed: self._closed,
            TcpReset: self._reset,
            UdpTraffic: self._udp,
            PacketDropped: self._dropped,
        }

    def lines(self, event: KernelEvent) -> list[bytes]:
        """The flows one event stands for (in time order), as JSON lines (newline-ended)."""
        render = self._render.get(type(event))
        if render is None:
            raise TypeError(f"not a kernel event: {type(event).__name__}")
        self._expire(event.time_ns)
        return render(event)

    def flows(self, event: KernelEvent) -> list[dict[str, Any]]:
        """The same flows as :meth:`lines`, as ``hubble observe -o json`` envelopes."""
        return [orjson.loads(line) for line in self.lines(event)]

    # -- endpoints and templates -----------------------------------------------------------------
    @staticmethod
    def _ends(event: Any) -> tuple[Any, ...]:
        """What a socket event's templates depend on: its own end (network namespace, cgroup,
        or pid when there is no cgroup) and the connection's addresses."""
        conn = event.conn
        return (
            event.netns,
            event.cgroup_id,
            event.pid if not event.cgroup_id else 0,
            conn.protocol,
            conn.family,
            conn.local_addr,
            conn.remote_addr,
        )

    def _local(self, event: Any) -> dict[str, Any]:
        return _endpoint(self.resolver.local(event.netns, event.cgroup_id, event.pid))

    def _remote(self, ip: str) -> dict[str, Any]:
        return _endpoint(self.resolver.remote(ip))

    def _expire(self, time_ns: int) -> None:
        second = time_ns // 1_000_000_000
        # only forward: opens swept from the connection table arrive with their (earlier)
        # times among newer events, and must not empty the caches back and forth
        if second > self._second or len(self._templates) > 65_536:
            self._second = max(second, self._second)
            self._templates.clear()
            self._stats.clear()

    def _shapes(
        self, key: tuple[Any, ...], build: Callable[[], tuple[Shape, ...]]
    ) -> tuple[bytes, ...]:
        """The templates of one kind of flow between given ends (built on first use)."""
        found = self._templates.get(key)
        if found is None:
            found = self._templates[key] = tuple(
                _template(self._envelope(body), holes + _ENVELOPE_HOLES, self._uuid_prefix)
                for body, holes in build()
            )
        return found

    def _envelope(self, body: Body) -> dict[str, Any]:
        body["time"] = _TIME
        body["uuid"] = _UUID
        body["emitter"] = _EMITTER
        body["node_name"] = self.node_name
        return {"flow": body, "node_name": self.node_name, "time": _TIME}

    def _oriented(self, event: Any, conn: Conn, local_is_client: bool) -> Body:
        """Source = initiator, destination = responder; direction from the reporting end.
        Ports are holes (``sport`` = the initiator's)."""
        local = self._local(event)
        remote = self._remote(conn.remote_addr)
        if local_is_client:
            src, dst = (conn.local_addr, local), (conn.remote_addr, remote)
            direction, point, sub_type = "EGRESS", "FROM_ENDPOINT", _FROM_ENDPOINT_SUBTYPE
        else:
            src, dst = (conn.remote_addr, remote), (conn.local_addr, local)
            direction, point, sub_type = "INGRESS", "TO_ENDPOINT", _TO_ENDPOINT_SUBTYPE
        return {
            "verdict": "FORWARDED",
            "IP": {
                "source": src[0],
                "destination": dst[0],
                "ipVersion": "IPv4" if conn.family == 4 else "IPv6",
            },
            "l4": {conn.protocol: {"source_port": _SPORT, "destination_port": _DPORT}},
            "source": src[1],
            "destination": dst[1],
            "Type": "L3_L4",
            "event_type": {"type": _TRACE, "sub_type": sub_type},
            "traffic_direction": direction,
            "trace_observation_point": point,
            "is_reply": False,
        }

    def _flow(
        self,
        event: Any,
        local_is_client: bool,
        flags: dict[str, bool] | None,
        *,
        reply: bool = False,
        stats: bool = True,
    ) -> Shape:
        """One oriented flow (a reply: the other way), TCP ``flags`` if given, with netwarden's
        field unless ``stats`` is false."""
        body = self._oriented(event, event.conn, local_is_client)
        if reply:
            body = _reversed(body)
        if flags is not None:
            (ports,) = body["l4"].values()
            ports["flags"] = flags
        holes = ("dport", "sport") if reply else ("sport", "dport")
        if stats:
            body["netwarden"] = _STATS
            holes += ("stats",)
        return body, holes

    # -- one kind of event each ------------------------------------------------------------------
    def _opened(self, e: ConnectionOpened) -> list[bytes]:
        client = e.role == "client"
        syn, answer = self._shapes(
            ("open", client, *self._ends(e)),
            lambda: (
                self._flow(e, client, {"SYN": True}),
                self._flow(e, client, {"SYN": True, "ACK": True}, reply=True, stats=False),
            ),
        )
        sport, dport = _ports(e.conn, client)
        when = self._clock.rfc3339(e.time_ns)
        n = self._flow_no = self._flow_no + 2
        return [
            syn % (sport, dport, b"{%s}" % self._stats.process(e), when, n - 1, when),
            answer % (dport, sport, when, n, when),
        ]

    def _closed(self, e: ConnectionClosed) -> list[bytes]:
        client = e.role == "client"
        conn = e.conn
        flags = {"FIN": True, "ACK": True} if e.established else {"SYN": True}
        (fin,) = self._shapes(
            ("close", client, e.established, *self._ends(e)),
            lambda: (self._flow(e, client, flags),),
        )
        sent, received = (
            (e.bytes_sent, e.bytes_received) if client else (e.bytes_received, e.bytes_sent)
        )
        sport, dport = _ports(conn, client)
        when = self._clock.rfc3339(e.time_ns)
        n = self._flow_no = self._flow_no + 1
        return [fin % (sport, dport, self._stats.close(e, sent, received), when, n, when)]

    def _reset(self, e: TcpReset) -> list[bytes]:
        conn = e.conn
        if e.direction == "received":  # the peer reset our connection: a reply to us
            client, reply = True, True
        else:
            # sent: from a closed port (no socket: the kernel answered for it) it is a reply
            # to the peer's attempt; from an open socket, an abort from our end
            reply = e.pid == 0 and e.cgroup_id == 0
            client = not reply
        (rst,) = self._shapes(
            ("reset", client, reply, *self._ends(e)),
            lambda: (self._flow(e, client, {"RST": True}, reply=reply),),
        )
        sport, dport = _ports(conn, client)
        if reply:
            sport, dport = dport, sport
        when = self._clock.rfc3339(e.time_ns)
        n = self._flow_no = self._flow_no + 1
        return [rst % (sport, dport, b"{%s}" % self._stats.process(e), when, n, when)]

    def _udp(self, e: UdpTraffic) -> list[bytes]:
        conn = e.conn
        client = conn.remote_port < conn.local_port or (
            conn.remote_port == conn.local_port and e.datagrams_sent >= e.datagrams_received
        )
        (flow,) = self._shapes(
            ("udp", client, *self._ends(e)), lambda: (self._flow(e, client, None),)
        )
        if client:
            counts = (e.bytes_sent, e.bytes_received, e.datagrams_sent, e.datagrams_received)
        else:
            counts = (e.bytes_received, e.bytes_sent, e.datagrams_received, e.datagrams_sent)
        stats = self._stats.of(
            e,
            bytes_sent=counts[0],
            bytes_received=counts[1],
            packets_sent=counts[2],
            packets_received=counts[3],
            duration_ns=max(e.time_ns - e.first_ns, 0),
        )
        sport, dport = _ports(conn, client)
        when = self._clock.rfc3339(e.time_ns)
        n = self._flow_no = self._flow_no + 1
        return [flow % (sport, dport, stats, when, n, when)]

    def _dropped(self, e: PacketDropped) -> list[bytes]:
        conn = e.conn

        def build() -> tuple[Shape, ...]:
            body: Body = {
                "verdict": "DROPPED",
                "Type": "L3_L4",
                "event_type": {"type": _DROP},
                "traffic_direction": "TRAFFIC_DIRECTION_UNKNOWN",
            }
            holes: tuple[str, ...] = ("stats",)
            if conn is not None:
                body["IP"] = {
                    "source": conn.local_addr,
                    "destination": conn.remote_addr,
                    "ipVersion": "IPv4" if conn.family == 4 else "IPv6",
                }
                body["l4"] = {conn.protocol: {"source_port": _SPORT, "destination_port": _DPORT}}
                body["source"] = self._remote(conn.local_addr)
                body["destination"] = self._remote(conn.remote_addr)
                holes = ("sport", "dport", "stats")
            body["netwarden"] = _STATS
            return ((body, holes),)

        stats: dict[str, Any] = {"kernel_drop_reason": e.reason}
        if e.location:
            stats["kernel_drop_location"] = e.location
        if e.netns:
            stats["netns"] = e.netns
        when = self._clock.rfc3339(e.time_ns)
        n = self._flow_no = self._flow_no + 1
        if conn is None:
            (flow,) = self._shapes(("drop",), build)
            return [flow % (orjson.dumps(stats), when, n, when)]
        (flow,) = self._shapes(
            ("drop", conn.protocol, conn.family, conn.local_addr, conn.remote_addr), build
        )
        return [flow % (conn.local_port, conn.remote_port, orjson.dumps(stats), when, n, when)]


def _reversed(body: Body) -> Body:
    """The same flow in the other direction, as a reply (responder to initiator)."""
    out = dict(body)
    out["IP"] = {
        **body["IP"],
        "source": body["IP"]["destination"],
        "destination": body["IP"]["source"],
    }
    ((proto, ports),) = body["l4"].items()
    out["l4"] = {
        proto: {"source_port": ports["destination_port"], "destination_port": ports["source_port"]}
    }
    out["source"], out["destination"] = body["destination"], body["source"]
    out["is_reply"] = True
    out.pop("netwarden", None)
    if body["trace_observation_point"] == "FROM_ENDPOINT":
        out["trace_observation_point"] = "TO_ENDPOINT"
        out["event_type"] = {"type": _TRACE, "sub_type": _TO_ENDPOINT_SUBTYPE}
    else:
        out["trace_observation_point"] = "FROM_ENDPOINT"
        out["event_type"] = {"type": _TRACE, "sub_type": _FROM_ENDPOINT_SUBTYPE}
    return out

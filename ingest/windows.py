"""Tumbling event-time windows per identity, closed by a watermark with bounded lateness.

A flow belongs to window ``floor(t / window_seconds)`` of each subject it counts for (see
:mod:`netwarden.ingest.direction`). The watermark is the largest event time seen minus the
allowed lateness; a window closes when the watermark passes its end. A flow whose window had
already closed when it arrived is *late*: it is counted (``BuilderStats.late_flows``) and not
added, so closed windows never change. Lateness is decided per flow against the watermark as it
was when that flow arrived, so the result does not depend on how the stream is batched.

The watermark follows the *stream's* time, not any single flow's: a flow stamped more than
``max_skew`` ahead of the newest time the stream has confirmed (a node with a broken clock, a
corrupt line stamped 9999-12-31) is held aside instead of moving the watermark. Each flow that
arrives after it either confirms it (is not more than ``max_skew`` behind it) or contradicts it;
once one side has :data:`CONFIRMATIONS` votes, the held flow is either followed (the whole stream
has moved: a replay of another day, a node that was off) or dropped and counted
(``BuilderStats.future_flows``, logged once per burst). So one flow, or one node's flows, can
never move the watermark past everybody else's, and a stream that really jumps is followed
after a few dozen flows with nothing lost.

Memory is bounded by the active identities: open windows exist only for identities seen within
the lateness horizon, and window statistics are counters, fixed-size sketches and at most
:data:`~netwarden.ingest.features.EDGES_PER_WINDOW` edges per side. The builder learns nothing
across windows: what is new to an identity is the detector's question (its edge memory,
:mod:`netwarden.models.edges`), so a window is the same whatever came before it.

**Edge peers.** Each window lists its edges: (peer, protocol/port) with flows, SYNs, SYN-ACKs,
resets and drops. A workload or reserved peer is its stable key (``namespace/workload``,
``reserved:<name>``), the same across pods, rollouts and node drains. An internet address is
named by the DNS name the flow carries (Hubble's ``destination_names``/``source_names``, from
Cilium's DNS proxy: ``fqdn:api.stripe.com``), so a SaaS vendor rotating its addresses is one
peer; an address without a name is its network (``cidr:203.0.113.0/24``, IPv6 ``/48``), the
unit providers allocate and rotate within.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from netwarden.ingest.direction import (
    CLIENT,
    NOT_COUNTED_EVENT_TYPES,
    SERVER,
    counted_sides,
)
from netwarden.ingest.features import (
    DROP,
    EDGE_KEY_SHIFT,
    EDGES_PER_WINDOW,
    EXAMPLE_NAMES,
    FEATURE_NAMES,
    FLAG_ONE,
    PENDING_FLAGS_SHIFT,
    PENDING_LIMIT,
    RST,
    SYN,
    SYN_ACK,
    SideStats,
    split_edge_key,
    unpack_flags,
)
from netwarden.ingest.flow import DROP_REASONS, EARLIEST_EVENT_TIME, LATEST_EVENT_TIME
from netwarden.ingest.footprint import deep_size
from netwarden.ingest.identity import IdentityResolver, Peer, Subject
from netwarden.ingest.sketch import stable_hash64
from netwarden.validation import check_ranges

__all__ = [
    "CONFIRMATIONS",
    "START_CONFIRMATIONS",
    "BuilderStats",
    "ClosedWindow",
    "Edge",
    "WindowBuilder",
    "WindowConfig",
    "windows_to_rows",
]

_log = logging.getLogger(__name__)
#: At most one log line per burst of flows far ahead of the stream, and per this many seconds.
_LOG_EVERY: Final = 60.0

#: Votes that decide about a flow held for being far ahead of the stream: it is followed when
#: this many later flows confirm its time and they outnumber those that contradict it, dropped
#: when as many contradict it. At the hundreds of flows a second of even a small cluster this is
#: a fraction of a second of stream; a node with a broken clock is a minority of the flows, so
#: its flows are dropped, unless it is most of the traffic (then nothing can tell it is wrong).
CONFIRMATIONS: Final = 64
#: The same for the first flows of a stream, which have no stream time to be compared with:
#: its time is taken from the first flow that this many later flows confirm (more than
#: contradict), so that a corrupt first line cannot set it, and the windows of a short stream
#: start without waiting for many flows.
START_CONFIRMATIONS: Final = 8

_POLICY_REASONS: Final = frozenset({"POLICY_DENIED", "POLICY_DENY", "L7_DENIED"})
#: Rule 2 of netwarden.ingest.direction, for the common case of a known traffic direction.
_SIDES_BY_DIRECTION: Final = {"EGRESS": CLIENT, 2: CLIENT, "INGRESS": SERVER, 1: SERVER}
_DROPPED: Final = frozenset({"DROPPED", 2})  # verdict by name or number
_L7_TYPES: Final = frozenset({"L7", 2})  # FlowType
_RESPONSE: Final = frozenset({"RESPONSE", 2})  # L7FlowType
_REQUEST: Final = frozenset({"REQUEST", 1})
_HASH_CACHE_LIMIT: Final = 1 << 17
_PROTO_ICMP, _PROTO_TCP, _PROTO_UDP, _PROTO_SCTP = 1, 6, 17, 132
_PROTO_NAMES: Final = {_PROTO_TCP: "TCP", _PROTO_UDP: "UDP", _PROTO_SCTP: "SCTP"}
_EARLIEST: Final = EARLIEST_EVENT_TIME.timestamp()
_LATEST: Final = LATEST_EVENT_TIME.timestamp()


#: Valid ranges of the WindowConfig parameters, checked once when a config is made.
_CONSTRAINTS: Final[dict[str, tuple[float, float]]] = {
    "window_seconds": (1.0, 86_400.0),
    "allowed_lateness": (0.0, 86_400.0),
    "max_skew": (1.0, 86_400.0),
}


@dataclass(frozen=True)
class WindowConfig:
    """Window settings, validated once.

    Parameters
    ----------
    window_seconds:
        Length of the tumbling windows, 1 s to 1 day (default 60).
    allowed_lateness:
        How far behind the newest event time a flow may arrive and still be counted, 0 s to
        1 day (default 15). Larger values keep windows open longer.
    max_skew:
        How far ahead of the stream's time (the newest event time it has confirmed) one flow
        may be and still move it, 1 s to 1 day (default 60, one default window). Hubble
        stamps flows with the node's clock and NTP keeps nodes within milliseconds of each
        other, so a flow a window or more ahead of all the others comes from a broken clock (an
        RTC set to local time is hours off) or a corrupt line, not from the network; moving the
        watermark to it would make every other node's flows late. Such a flow is held until
        the flows after it confirm or contradict it (:data:`CONFIRMATIONS`). Lower it towards
        ``allowed_lateness`` to also stop a node skewed by less than a window (any skew beyond
        the lateness makes the others' flows late); the cost is that a replayed file with quiet
        gaps longer than ``max_skew`` is held back by a few dozen flows at each gap.
    """

    window_seconds: float = 60.0
    allowed_lateness: float = 15.0
    max_skew: float = 60.0

    def __post_init__(self) -> None:
        check_ranges(self, _CONSTRAINTS)


@dataclass
class BuilderStats:
    """What the builder did with the flows it was given."""

    flows_seen: int = 0
    flows_counted: int = 0
    late_flows: int = 0
    #: Flows dropped for being stamped far ahead of the stream (see ``max_skew``).
    future_flows: int = 0
    #: The first of them, readable (time, how far ahead, where from).
    future_example: str = ""
    not_counted: Counter[str] = field(default_factory=Counter)
    windows_closed: int = 0
    max_open_windows: int = 0
    watermark: float = -math.inf


_EGRESS_COLUMNS: Final = tuple(f"egress_{n}" for n in FEATURE_NAMES)
_INGRESS_COLUMNS: Final = tuple(f"ingress_{n}" for n in FEATURE_NAMES)
#: One SYN, SYN-ACK, reset, drop in an edge's packed counters (features.FLAG_ONE).
_SYN, _SYN_ACK, _RST, _DROP = (FLAG_ONE[i] for i in (SYN, SYN_ACK, RST, DROP))


@dataclass(frozen=True, slots=True)
class Edge:
    """One (peer, protocol/port) of a window side, with what happened on it.

    ``protocol`` is the IP protocol number (6 TCP, 17 UDP, 132 SCTP; 0 without ports: ICMP and
    others), ``port`` the destination (service) port.
    """

    peer: str
    peer_hash: int
    protocol: int
    port: int
    flows: int
    syns: int
    syn_acks: int
    resets: int
    drops: int
    #: Connection start times (internet peers only; at most EDGE_TIMES per window).
    times: tuple[float, ...] = ()

    @property
    def port_text(self) -> str:
        if not self.protocol:
            return ""
        return f"{_PROTO_NAMES.get(self.protocol, self.protocol)}/{self.port}"

    @property
    def failures(self) -> int:
        """Connection attempts that failed: SYNs without SYN-ACK, resets, drops."""
        return max(self.syns - self.syn_acks, 0) + self.resets + self.drops


@dataclass(eq=False)
class ClosedWindow:
    """One identity's window: bounds, and its client (egress) and server (ingress) statistics."""

    subject: Subject
    start: float  # epoch seconds, inclusive
    end: float  # epoch seconds, exclusive
    client: SideStats
    server: SideStats
    #: Peer hash -> readable key (the builder's, shared) for :meth:`examples`.
    peer_names: dict[int, str] = field(default_factory=dict, repr=False)
    #: :meth:`edges` per side, computed once (a closed window does not change).
    _edges: dict[bool, list[Edge]] = field(default_factory=dict, repr=False)
    #: :meth:`features`, computed once: the scorer, drift and the history all read them.
    _features: dict[str, float] | None = field(default=None, repr=False)

    @property
    def identity(self) -> str:
        return self.subject.id

    def start_datetime(self) -> datetime:
        return datetime.fromtimestamp(self.start, tz=UTC)

    def end_datetime(self) -> datetime:
        return datetime.fromtimestamp(self.end, tz=UTC)

    def features(self) -> dict[str, float]:
        """``egress_*`` then ``ingress_*`` features, in :func:`feature_columns` order (a copy:
        the values are computed once per window)."""
        if self._features is None:
            out = dict(zip(_EGRESS_COLUMNS, self.client.feature_values(), strict=True))
            out.update(zip(_INGRESS_COLUMNS, self.server.feature_values(), strict=True))
            self._features = out
        return dict(self._features)

    def drop_reasons(self) -> tuple[dict[str, int], dict[str, int]]:
        return dict(self.client.drop_reasons), dict(self.server.drop_reasons)

    def merge(self, other: ClosedWindow) -> ClosedWindow:
        """Combine two partials of the same identity and window (e.g. from two nodes)."""
        if other.subject.id != self.subject.id or (other.start, other.end) != (
            self.start,
            self.end,
        ):
            raise ValueError(
                f"cannot merge window {other.subject.id} [{other.start}, {other.end}) into "
                f"{self.subject.id} [{self.start}, {self.end})"
            )
        return ClosedWindow(
            self.subject,
            self.start,
            self.end,
            self.client + other.client,
            self.server + other.server,
            {**other.peer_names, **self.peer_names},
        )

    def nbytes(self) -> int:
        return 120 + self.client.nbytes() + self.server.nbytes() + 80 * len(self.peer_names)

    def edges(self, egress: bool) -> list[Edge]:
        """The window's edges on one side (egress: the subject as client), busiest first.
        Internet addresses are named here: by the DNS name a flow to them carried, else by
        their network (see the module docstring)."""
        cached = self._edges.get(egress)
        if cached is not None:
            return cached
        side = self.client if egress else self.server
        side.fold()
        names = self.peer_names
        flags = side.edge_flags
        times = side.edge_times
        alias = side.edge_alias
        merged: dict[tuple[str, int], list[Any]] = {}
        for key, n in side.edges.items():
            h, pk = split_edge_key(key)
            name = names.get(h, f"peer:{h:016x}")
            if h in alias:
                h = alias[h]
                name = names.get(h, name)
            elif name.startswith("world:"):
                edge_peer = _cidr_peer(name)
                h, name = edge_peer.hash, edge_peer.key
            counts = unpack_flags(flags.get(key, 0))
            entry = merged.get((name, pk))
            if entry is None:
                merged[(name, pk)] = [h, n, *counts, list(times.get(key, ()))]
            else:
                entry[1] += n
                for i in range(4):
                    entry[2 + i] += counts[i]
                entry[6] += times.get(key, ())
        out = []
        for (name, pk), (h, n, syn, synack, rst, drop, started) in merged.items():
            out.append(
                Edge(
                    name,
                    h,
                    pk >> 16 if pk >= 0 else 0,
                    pk & 0xFFFF if pk >= 0 else 0,
                    n,
                    syn,
                    synack,
                    rst,
                    drop,
                    tuple(sorted(started)),
                )
            )
        out.sort(key=lambda e: (-e.flows, e.peer, e.protocol, e.port))
        self._edges[egress] = out
        return out

    def examples(self) -> dict[str, Any]:
        """Readable examples of what the window holds: busiest peers and ports, DNS names,
        drop reasons, per side. Computed on demand (only anomalies need them)."""
        names = self.peer_names

        def pairs(side: SideStats) -> list[dict[str, Any]]:
            side.fold()
            out = []
            for key, n in sorted(side.top_pairs.items(), key=lambda kv: (-kv[1], kv[0])):
                h, pk = split_edge_key(key)
                port = "" if pk < 0 else f"{_PROTO_NAMES.get(pk >> 16, pk >> 16)}/{pk & 0xFFFF}"
                out.append({"peer": names.get(h, f"peer:{h:016x}"), "port": port, "flows": n})
            return out

        return {
            "egress": {
                "to": pairs(self.client),
                "dns_names": list(self.client.sample_names),
                "drop_reasons": dict(self.client.drop_reasons),
            },
            "ingress": {
                "from": pairs(self.server),
                "dns_names": list(self.server.sample_names),
                "drop_reasons": dict(self.server.drop_reasons),
            },
        }


class _Open:
    """An open window's two sides, each made (lean) when a flow first counts for it: many
    subjects are only clients or only servers in a window."""

    __slots__ = ("client", "server", "subject")

    def __init__(self, subject: Subject) -> None:
        self.subject = subject
        self.client: SideStats | None = None
        self.server: SideStats | None = None


def _add_bytes(side: SideStats, stats: Any, subject_is_source: bool) -> None:
    """Byte counts of an eBPF agent flow (in the flow's orientation) from the subject's end."""
    if subject_is_source:
        side.bytes_sent += stats.bytes_sent
        side.bytes_received += stats.bytes_received
    else:
        side.bytes_sent += stats.bytes_received
        side.bytes_received += stats.bytes_sent


class WindowBuilder:
    """Turns a stream of flow batches into closed per-identity windows.

    Feed it with :meth:`add` (any iterable of Flow-like records, in roughly event-time order),
    collect the windows it returns as the watermark passes them, and :meth:`flush` at the end.
    ``log`` receives one line per burst of flows dropped for being far ahead of the stream
    (default: this module's logger, at warning level).
    """

    def __init__(
        self,
        config: WindowConfig | None = None,
        *,
        resolver: IdentityResolver | None = None,
        log: Callable[[str], Any] | None = None,
    ) -> None:
        self.config = config or WindowConfig()
        self.resolver = resolver or IdentityResolver()
        self.stats = BuilderStats()
        self.log = log or _log.warning
        self._width = float(self.config.window_seconds)
        self._lateness = float(self.config.allowed_lateness)
        self._skew = float(self.config.max_skew)
        #: Window index -> subject id -> its open window (keyed by the id: a str hashes once).
        self._open: dict[int, dict[str, _Open]] = {}
        #: The stream's time: the newest event time it has confirmed.
        self._max_time = -math.inf
        #: Flows held for being more than max_skew ahead of it, in arrival order, as [time,
        #: flow, later flows confirming it, later flows contradicting it, stream time then].
        self._held: list[list[Any]] = []
        self._burst_logged = False
        self._next_log = 0.0
        # Late iff (window index + 1) <= _late_limit, i.e. its end is at or before the watermark.
        self._late_limit = -math.inf
        #: DNS name -> its internet edge peer (``fqdn:<name>``), see the module docstring.
        self._world_names: dict[str, Peer] = {}
        self._names: dict[str, tuple[int, float, int]] = {}
        #: Peer hash -> readable peer key, for examples in closed windows (bounded).
        self._peer_names: dict[int, str] = {}
        #: The previous generation of ``_peer_names`` (two generations bound the cache while a
        #: window still open keeps the names of its peers).
        self._old_peer_names: dict[int, str] = {}

    # -- public ---------------------------------------------------------------------------

    def add(self, flows: Iterable[Any]) -> list[ClosedWindow]:
        """Add flows; return the windows the advanced watermark closed (oldest first)."""
        self._add(flows)
        return self._close_until(self._late_limit)

    def flush(self) -> list[ClosedWindow]:
        """Close every open window (end of stream)."""
        self._settle(end=True)
        return self._close_until(math.inf)

    def settle(self) -> list[ClosedWindow]:
        """The stream went quiet: decide now about the flows held for being far ahead of it
        (followed if more later flows confirmed than contradicted them, else dropped; the very
        first flows of a stream define its time) and return the windows that closes."""
        self._settle()
        return self._close_until(self._late_limit)

    def advance(self, event_time: float) -> list[ClosedWindow]:
        """Move event time to ``event_time`` (Unix seconds) without a flow, as a live service
        does when its stream is quiet, and return the windows the watermark now passes. Never
        moves time backwards. The stream is quiet: held flows are decided first (:meth:`settle`)."""
        self._settle()
        if event_time > self._max_time:
            self._max_time = event_time
            self._late_limit = (event_time - self._lateness) / self._width
            self.stats.watermark = event_time - self._lateness
            self._resolve(math.inf)
        return self._close_until(self._late_limit)

    @property
    def held_flows(self) -> int:
        """Flows held for being far ahead of the stream, not yet followed or dropped."""
        return len(self._held)

    @property
    def open_windows(self) -> int:
        return sum(len(v) for v in self._open.values())

    def open_bytes(self) -> int:
        """Memory held by the open windows' state, measured (:func:`deep_size`): the objects
        themselves, each counted once; a walk over every open window, so callers sample it."""
        return deep_size(o for wins in self._open.values() for o in wins.values())

    # -- hot path -------------------------------------------------------------------------

    def _add(self, flows: Iterable[Any], trusted: bool = False) -> None:
        """Count ``flows`` into windows. ``trusted``: their times were judged already (held
        flows followed or released, a flow judged on time while others are held)."""
        stats = self.stats
        resolver = self.resolver
        cache_get = resolver.cache.get
        resolve = resolver.resolve
        by_direction = _SIDES_BY_DIRECTION
        peer_names = self._peer_names
        width = self._width
        lateness = self._lateness
        skew = self._skew
        max_time = self._max_time
        late_limit = self._late_limit
        # Flows after ahead_limit go the slow way (self._arrive): far ahead of the stream, or
        # every flow while some are held (-inf); none when trusted (+inf).
        every, none = -math.inf, math.inf
        ahead_limit = none if trusted else every if self._held else max_time + skew
        open_windows = self._open
        not_counted = stats.not_counted
        count_side = self._count_side
        lean = SideStats.lean
        seen = late = counted = no_subject = 0
        last_widx = None
        wins: dict[str, _Open] = {}
        for f in flows:
            seen += 1
            t = f.time.timestamp()
            if t > max_time:
                if t > ahead_limit:
                    self._max_time = max_time
                    self._late_limit = late_limit
                    self._arrive(f, t)
                    max_time = self._max_time
                    late_limit = self._late_limit
                    ahead_limit = every if self._held else max_time + skew
                    last_widx = None
                    continue
                max_time = t
                late_limit = (t - lateness) / width
                if ahead_limit != none:
                    ahead_limit = t + skew
            elif ahead_limit == every:  # flows are held: every flow votes on them
                self._max_time = max_time
                self._late_limit = late_limit
                self._arrive(f, t)
                max_time = self._max_time
                late_limit = self._late_limit
                ahead_limit = every if self._held else max_time + skew
                last_widx = None
                continue
            widx = int(t // width)
            if widx + 1 <= late_limit:
                late += 1
                continue
            et = f.event_type
            if et is not None and et.type in NOT_COUNTED_EVENT_TYPES:
                not_counted[f"event_type_{et.type}"] += 1
                continue
            nw = f.netwarden  # eBPF agent flows: byte counts
            reply = f.is_reply
            if reply is None:
                reply = f.reply
            direction = f.traffic_direction
            sides = by_direction.get(direction)
            if sides is None:  # direction unknown: the observation point decides
                sides = counted_sides(direction, f.trace_observation_point, reply)
            ip = f.IP
            if ip is not None:
                sip = ip.source
                dip = ip.destination
            else:
                sip = dip = ""
            ep = f.source
            src = cache_get(
                (ep.identity, ep.namespace, ep.pod_name, sip)
                if ep is not None
                else (0, "", "", sip)
            )
            if src is None:
                src = resolve(ep, sip, trim=False)
                peer_names[src[1].hash] = src[1].key
            ep = f.destination
            dst = cache_get(
                (ep.identity, ep.namespace, ep.pod_name, dip)
                if ep is not None
                else (0, "", "", dip)
            )
            if dst is None:
                dst = resolve(ep, dip, trim=False)
                peer_names[dst[1].hash] = dst[1].key
            if reply:
                client, server = dst, src
            else:
                client, server = src, dst
            proto = port = flags = 0
            l4 = f.l4
            if l4 is not None:
                tcp = l4.TCP
                if tcp is not None:
                    proto = _PROTO_TCP
                    port = tcp.source_port if reply else tcp.destination_port
                    fl = tcp.flags
                    if fl is not None:
                        flags = fl.SYN | (fl.ACK << 1) | (fl.RST << 2)
                else:
                    udp = l4.UDP
                    if udp is not None:
                        proto = _PROTO_UDP
                        port = udp.source_port if reply else udp.destination_port
                    elif l4.ICMPv4 is not None or l4.ICMPv6 is not None:
                        proto = _PROTO_ICMP
                    elif l4.SCTP is not None:
                        proto = _PROTO_SCTP
                        port = l4.SCTP.source_port if reply else l4.SCTP.destination_port
            if widx != last_widx:
                wins = open_windows.get(widx)  # type: ignore[assignment]
                if wins is None:
                    wins = open_windows[widx] = {}
                last_widx = widx
            did = False
            if sides & CLIENT:
                subject = client[0]
                if subject is not None:
                    acc = wins.get(subject.id)
                    if acc is None:
                        acc = wins[subject.id] = _Open(subject)
                    side = acc.client
                    if side is None:
                        side = acc.client = lean()
                    count_side(
                        side,
                        server[1],
                        reply,
                        proto,
                        port,
                        flags,
                        f,
                        f.source_names if reply else f.destination_names,
                    )
                    if nw is not None:
                        _add_bytes(side, nw, not reply)
                    if not reply and (flags & 3 == 1 or proto == _PROTO_UDP):
                        pod = f.source.pod_name if f.source is not None else ""
                        if pod:  # pods opening connections or resolving names
                            side.add_pod(pod)
                    did = True
            if sides & SERVER:
                subject = server[0]
                if subject is not None:
                    acc = wins.get(subject.id)
                    if acc is None:
                        acc = wins[subject.id] = _Open(subject)
                    side = acc.server
                    if side is None:
                        side = acc.server = lean()
                    count_side(
                        side,
                        client[1],
                        reply,
                        proto,
                        port,
                        flags,
                        f,
                        f.destination_names if reply else f.source_names,
                    )
                    if nw is not None:
                        _add_bytes(side, nw, reply)
                    did = True
            if did:
                counted += 1
            else:
                no_subject += 1
        if not trusted:
            stats.flows_seen += seen
        stats.flows_counted += counted
        stats.late_flows += late
        if no_subject:
            not_counted["no_subject"] += no_subject
        self._max_time = max_time
        self._late_limit = late_limit
        stats.watermark = max_time - lateness
        if len(peer_names) > _HASH_CACHE_LIMIT:
            # bounded: the older generation goes; names are re-learned as endpoints resolve
            self._old_peer_names = peer_names
            self._peer_names = {}
        resolver.trim()

    # -- the stream's time --------------------------------------------------------------------

    def _arrive(self, f: Any, t: float) -> None:
        """A flow far ahead of the stream's time, or any flow while some are held (state is in
        ``self``): it votes on the held flows, is held itself or counted, and the held flows
        that now have enough votes, or that the stream's time has caught up with, move on."""
        if not _EARLIEST <= t < _LATEST:  # only from sources that do not check (the reader does)
            self.stats.not_counted["time_out_of_range"] += 1
            return
        skew = self._skew
        held = self._held
        before = self._max_time
        votes = CONFIRMATIONS if before > -math.inf else START_CONFIRMATIONS
        decided = False
        if held:
            reach = t + skew  # t confirms a held time h unless it is far behind it (t < h - skew)
            for entry in held:
                if entry[0] <= reach:
                    entry[2] += 1
                    decided = decided or entry[2] >= votes
                else:
                    entry[3] += 1
                    decided = decided or entry[3] >= votes
        if t > before + skew:
            if not held:
                self._burst_logged = False
            held.append([t, f, 0, 0, before])
        else:
            self._add((f,), trusted=True)
        if decided or (held and self._max_time > before):
            self._resolve(votes)

    def _resolve(self, votes: float) -> None:
        """Go over the held flows in arrival order: count those the stream's time has caught up
        with and those ``votes`` later flows confirmed (more than contradicted them: the stream
        follows them), drop those that as many contradicted, keep the others. Flows are counted
        one by one in arrival order, as they would have been had none been held."""
        skew = self._skew
        moved = True
        while moved and self._held:
            moved = False
            held, self._held = self._held, []
            dropped = []
            for entry in held:
                t, f, confirmed, contradicted, _ = entry
                decided = confirmed >= votes or contradicted >= votes
                if t <= self._max_time + skew or (decided and confirmed > contradicted):
                    self._add((f,), trusted=True)
                    moved = True
                elif decided:
                    dropped.append(entry)
                else:
                    self._held.append(entry)
            if dropped:
                self._drop(dropped)

    def _drop(self, entries: list[list[Any]]) -> None:
        """Drop held flows as far ahead of the stream: counted, logged once per burst."""
        stats = self.stats
        stats.future_flows += len(entries)
        if stats.future_example and self._burst_logged:
            return
        t, f, *_, stream_time = entries[0]
        example = _describe_future(f, t, stream_time)
        if not stats.future_example:
            stats.future_example = example
        now = time.monotonic()
        if not self._burst_logged and now >= self._next_log:
            self._burst_logged = True
            self._next_log = now + _LOG_EVERY
            self.log(
                f"flow stamped far ahead of the stream dropped (not allowed to move the "
                f"watermark; max_skew {self._skew:g} s): {example}; further ones are counted "
                f"as future flows"
            )

    def _settle(self, *, end: bool = False) -> None:
        """Decide about every held flow now, by the votes it has: followed if more later flows
        confirmed than contradicted it, else dropped. The last flow, which nothing voted on, is
        followed at the end of the stream (it can no longer make other flows late) or when the
        stream has no time yet; while the stream goes on it is dropped: a live stream's time
        moves on with the wall clock while it is quiet, so a flow still far ahead of it after a
        quiet spell comes from a wrong clock."""
        if not self._held:
            return
        self._resolve(1)
        if self._held and (end or self._max_time == -math.inf):
            held, self._held = self._held, []
            self._add([entry[1] for entry in held], trusted=True)
        if self._held:
            held, self._held = self._held, []
            self._drop(held)

    def _count_side(
        self,
        side: SideStats,
        peer: Peer,
        reply: bool,
        proto: int,
        port: int,
        flags: int,
        f: Any,
        peer_names: tuple[str, ...],
    ) -> None:
        """Add one flow event to one subject's side; ``peer`` is the other end."""
        dropped = f.verdict in _DROPPED
        l7 = f.l7
        if l7 is not None or f.Type in _L7_TYPES:
            if l7 is not None:
                self._count_l7(side, l7, reply)
            if dropped:  # L7 denials carry no drop reason (INTERFACES.md section 2.3)
                side.drops += 1
                side.policy_drops += 1
                side.add_reason("L7_DENIED", 1)
            if (
                not reply
                and proto
                and proto != _PROTO_ICMP
                and (l7 is None or l7.type not in _RESPONSE)
            ):
                # the edge a request travels (Hubble may show a proxied connection only at L7)
                edge = (peer.hash << EDGE_KEY_SHIFT) | ((proto << 16) | port) + 1
                edges = side.edges
                if edges is None:
                    edges = side.edges = {}
                edges[edge] = edges.get(edge, 0) + 1
                if len(edges) > 2 * EDGES_PER_WINDOW:
                    side.prune_edges()
            return
        marks = 0  # what this flow adds to its edge's packed counters (_SYN + _RST ...)
        if dropped:
            marks = _DROP
            side.drops += 1
            reason = f.drop_reason_desc or f.drop_reason
            if not reason and f.netwarden is not None and f.netwarden.kernel_drop_reason:
                reason = f.netwarden.kernel_drop_reason  # the running kernel's skb drop reason
            if isinstance(reason, int):
                reason = DROP_REASONS.get(reason, f"DROP_REASON_{reason}")
            side.add_reason(reason, 1)
            if reason in _POLICY_REASONS:
                side.policy_drops += 1
        if proto == _PROTO_TCP:
            if flags & 4:
                side.tcp_resets += 1
                marks += _RST
            if flags & 1:
                if flags & 2:
                    if reply:
                        side.syn_acks += 1
                        marks += _SYN_ACK
                elif not reply:
                    side.new_conns += 1
                    marks += _SYN
        elif proto == _PROTO_ICMP and not reply:
            side.icmp += 1
        pk = (proto << 16) | port if proto and proto != _PROTO_ICMP else -1
        if peer_names and peer.is_world:
            self._name_world(peer, peer_names, side)
        pkey = (peer.hash << EDGE_KEY_SHIFT) | (pk + 1)  # features.edge_key
        pending = side.pending
        if pending is None:
            pending = side.pending = {}
        if reply:  # no flow of the side; its SYN-ACK, reset or drop still counts on the edge
            if marks:
                pending[pkey] = pending.get(pkey, 0) + (marks << PENDING_FLAGS_SHIFT)
            return
        side.flows += 1
        pending[pkey] = pending.get(pkey, 0) + 1 + (marks << PENDING_FLAGS_SHIFT)
        if len(pending) > PENDING_LIMIT:
            side.fold()
        if peer.is_world:
            if proto != _PROTO_TCP or marks & 0xFFFFFFFF:  # a SYN
                side.started(pkey, f.time.timestamp())
            side.world_flows += 1
            sketch = side.world_peers
            if sketch is None:
                sketch = side.sketch("world_peers")
            sketch.add(peer.hash)
            if peer_names:
                fqdns = side.sketch("world_fqdns")
                for name in peer_names:
                    fqdns.add(self._name_info(name)[2])

    def _count_l7(self, side: SideStats, l7: Any, reply: bool) -> None:
        kind = l7.type
        response = kind in _RESPONSE or (reply and kind not in _REQUEST)
        dns = l7.dns
        if dns is not None:
            if response:
                side.dns_responses += 1
                if dns.rcode == 3:
                    side.dns_nxdomain += 1
                return
            query = dns.query
            length, entropy, h = self._name_info(query[:-1] if query[-1:] == "." else query)
            side.dns_queries += 1
            side.qname_len_sum += length
            if length > side.qname_len_max:
                side.qname_len_max = length
            side.qname_entropy_sum += entropy
            sketch = side.dns_names
            if sketch is None:
                sketch = side.sketch("dns_names")
            sketch.add(h)
            names = side.sample_names
            if names is None:
                side.sample_names = [query]
            elif len(names) < EXAMPLE_NAMES and query not in names:
                names.append(query)
            return
        http = l7.http
        if http is not None:
            if response:
                side.http_responses += 1
                code = http.code
                if 400 <= code < 500:
                    side.http_4xx += 1
                elif 500 <= code < 600:
                    side.http_5xx += 1
            else:
                side.http_requests += 1

    def _name_info(self, name: str) -> tuple[int, float, int]:
        """(length, character entropy in bits, stable hash) of a DNS name, cached (bounded)."""
        info = self._names.get(name)
        if info is None:
            if len(self._names) >= _HASH_CACHE_LIMIT:
                self._names.clear()
            n = len(name)
            entropy = 0.0
            if n:
                for c in Counter(name).values():
                    p = c / n
                    entropy -= p * math.log2(p)
            info = self._names[name] = (n, entropy + 0.0, stable_hash64(name))
        return info

    # -- closing --------------------------------------------------------------------------

    def _close_until(self, limit: float) -> list[ClosedWindow]:
        """Close the windows whose index + 1 <= limit (their end is at or before the watermark)."""
        open_windows = self._open
        self.stats.max_open_windows = max(self.stats.max_open_windows, self.open_windows)
        ready = sorted(w for w in open_windows if w + 1 <= limit)
        closed: list[ClosedWindow] = []
        width = self._width
        for widx in ready:
            wins = open_windows.pop(widx)
            start = widx * width
            for subject_id in sorted(wins):
                acc = wins[subject_id]
                subject = acc.subject
                client = acc.client.finish() if acc.client is not None else SideStats()
                server = acc.server.finish() if acc.server is not None else SideStats()
                closed.append(
                    ClosedWindow(
                        subject,
                        start,
                        start + width,
                        client,
                        server,
                        self._names_of(client, server),
                    )
                )
        self.stats.windows_closed += len(closed)
        return closed

    def _names_of(self, *sides: SideStats) -> dict[int, str]:
        """Readable keys of every peer the sides mention (edges and examples), copied out of the
        builder's bounded name cache so that a closed window keeps them."""
        names = self._peer_names
        old = self._old_peer_names
        out: dict[int, str] = {}
        for side in sides:
            shift = EDGE_KEY_SHIFT
            hashes = {k >> shift for k in side.edges} | {k >> shift for k in side.top_pairs}
            for h in hashes | set(side.edge_alias.values()):
                name = names.get(h) or old.get(h)
                if name is not None:
                    out[h] = name
        return out

    def _name_world(self, peer: Peer, names: tuple[str, ...], side: SideStats) -> None:
        """Remember on ``side`` the DNS name a flow to internet address ``peer`` carried."""
        name = names[0]
        named = self._world_names.get(name)
        if named is None:
            if len(self._world_names) >= _HASH_CACHE_LIMIT:
                self._world_names.clear()
            named = self._world_names[name] = world_edge_peer(peer.key, name)
        self._peer_names[named.hash] = named.key
        alias = side.edge_alias
        if alias is None:
            alias = side.edge_alias = {}
        known = alias.get(peer.hash)
        if known is None or named.hash < known:
            alias[peer.hash] = named.hash


@functools.lru_cache(maxsize=1 << 14)
def _cidr_peer(peer_key: str) -> Peer:
    return world_edge_peer(peer_key, "")


def world_edge_peer(peer_key: str, name: str) -> Peer:
    """``fqdn:<name>`` for a named internet peer, else ``cidr:<network>`` of its address
    (``world:<ip>`` peer keys; IPv4 /24, IPv6 /48)."""
    if name:
        return Peer.of("fqdn:" + name.rstrip(".").lower(), True, "world")
    ip = peer_key.removeprefix("world:")
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return Peer.of(peer_key, True, "world")
    prefix = 24 if addr.version == 4 else 48
    net = ipaddress.ip_network(f"{addr}/{prefix}", strict=False)
    return Peer.of(f"cidr:{net}", True, "world")


def _describe_future(f: Any, t: float, stream_time: float) -> str:
    """A readable line about a flow far ahead of the stream: its time, by how much, from where."""
    stamp = getattr(f, "time", None)
    text = stamp.isoformat() if stamp is not None else f"{t:.0f}"
    if stream_time > -math.inf:
        ahead = t - stream_time
        size = (
            f"{ahead / 86_400 / 365.25:,.0f} years"
            if ahead >= 2 * 365 * 86_400
            else f"{ahead / 86_400:,.1f} days"
            if ahead >= 2 * 86_400
            else f"{ahead:,.0f} s"
        )
        text += f", {size} ahead of the stream ({datetime.fromtimestamp(stream_time, UTC):%Y-%m-%dT%H:%M:%SZ})"
    node = getattr(f, "node_name", "")
    ends = [
        f"{ep.namespace}/{ep.pod_name}" if ep.pod_name else f"identity {ep.identity}"
        for ep in (f.source, f.destination)
        if ep is not None
    ]
    if ends:
        text += ", " + " -> ".join(ends)
    if node:
        text += f", node {node}"
    return text


def windows_to_rows(windows: Sequence[ClosedWindow]) -> list[dict[str, Any]]:
    """Flatten windows into row dicts: identity, bounds, features, drop reasons."""
    rows = []
    for w in windows:
        row: dict[str, Any] = {
            "identity": w.subject.id,
            "namespace": w.subject.namespace,
            "workload": w.subject.workload,
            "window_start": w.start_datetime(),
            "window_end": w.end_datetime(),
        }
        row.update(w.features())
        egress_reasons, ingress_reasons = w.drop_reasons()
        row["egress_drop_reasons"] = egress_reasons
        row["ingress_drop_reasons"] = ingress_reasons
        rows.append(row)
    return rows

"""Window features: mergeable per-side statistics and the table that documents them.

A window holds two :class:`SideStats`, one for the subject as a **client** (connections it
initiates: egress) and one as a **server** (connections it accepts: ingress). Every statistic
is mergeable: counts and sums add, maxima take the max, distinct counts use
:class:`~netwarden.ingest.sketch.DistinctSketch` (exact union), the port histogram adds
bucket-wise. So two partial windows of one identity (two nodes, two batches) merge, with ``+``,
to exactly the window one builder fed both would produce; ``tests/test_features.py`` proves it.

The features a model sees are derived from these statistics when the window closes
(:meth:`SideStats.features`); their names are ``egress_<name>`` and ``ingress_<name>`` with
``<name>`` from :data:`FEATURES`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from netwarden.ingest.footprint import deep_size
from netwarden.ingest.sketch import DistinctSketch, stable_hash64, stable_hash64_many

__all__ = [
    "FEATURES",
    "FEATURE_NAMES",
    "FLAG_ONE",
    "PORT_BUCKETS",
    "Feature",
    "SideStats",
    "edge_key",
    "feature_columns",
    "port_bucket",
    "split_edge_key",
    "unpack_flags",
]

#: Destination ports are counted in this many hashed buckets (exact below ~30 distinct ports;
#: the entropy saturates at log2(PORT_BUCKETS) = 10 bits).
PORT_BUCKETS: Final = 1024
#: Edges (peer, protocol/port) kept per side and window for the detector's edge memory: the
#: smallest keys (bottom-k), so the kept set is the same however the window was split. Ordinary
#: workloads use a few dozen edges a window; beyond this the window is a sweep whatever the rest.
EDGES_PER_WINDOW: Final = 512
#: Per-edge counters kept beside the flow count: SYNs sent, SYN-ACKs received, resets, drops.
SYN, SYN_ACK, RST, DROP = 0, 1, 2, 3
#: The four counters of an edge are packed into one int, 32 bits each (``SYN`` lowest): one
#: small object per edge instead of a list, and one addition per flow. A window would need more
#: than 4 billion SYNs on one edge to carry into the next counter.
FLAG_BITS: Final = 32
_FLAG_MASK: Final = (1 << FLAG_BITS) - 1
#: What one SYN, SYN-ACK, reset or drop adds to an edge's packed counters.
FLAG_ONE: Final = tuple(1 << (FLAG_BITS * i) for i in (SYN, SYN_ACK, RST, DROP))


def unpack_flags(packed: int) -> tuple[int, int, int, int]:
    """(SYNs, SYN-ACKs, resets, drops) of an edge's packed counters."""
    return (
        packed & _FLAG_MASK,
        (packed >> FLAG_BITS) & _FLAG_MASK,
        (packed >> 2 * FLAG_BITS) & _FLAG_MASK,
        packed >> 3 * FLAG_BITS,
    )


#: Connection start times kept per internet edge and window (for the rhythm of beacons).
EDGE_TIMES: Final = 16
#: Example (peer, port) pairs and DNS names kept per side for explanations.
EXAMPLE_PAIRS: Final = 8
EXAMPLE_NAMES: Final = 5
#: Pending (peer, port) pairs per side before they are folded into the sketches.
PENDING_LIMIT: Final = 4096
#: A pending edge's value is its flows plus its packed counters (FLAG_ONE) shifted left by this
#: many bits: one dict entry per edge while the window is open, split by :meth:`SideStats.fold`.
PENDING_FLAGS_SHIFT: Final = 32
_FLOWS_MASK: Final = (1 << PENDING_FLAGS_SHIFT) - 1
#: An edge (peer, port key) is one int: ``peer_hash << EDGE_KEY_SHIFT | (port_key + 1)``, with
#: ``port_key`` = ``protocol << 16 | port``, or -1 without a port (ICMP). One int costs a third of
#: a tuple and its port int, hashes without recomputing, and sorts exactly as (peer, port key).
EDGE_KEY_SHIFT: Final = 25
_PORT_MASK: Final = (1 << EDGE_KEY_SHIFT) - 1


def edge_key(peer_hash: int, port_key: int) -> int:
    """The int key of edge (peer, ``protocol << 16 | port`` or -1); see EDGE_KEY_SHIFT."""
    return (peer_hash << EDGE_KEY_SHIFT) | (port_key + 1)


def split_edge_key(key: int) -> tuple[int, int]:
    """(peer hash, port key) of an :func:`edge_key`."""
    return key >> EDGE_KEY_SHIFT, (key & _PORT_MASK) - 1


_SKETCH_PRECISION: Final = 10
_SKETCH_EXACT: Final = 32


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    description: str


#: Every per-side feature, in column order. ``egress_*`` describes the subject as a client,
#: ``ingress_*`` as a server. "Flow" means an L3/L4 flow event counted for that side (see
#: ``netwarden.ingest.direction``); L7 events feed only the dns_* and http_* features.
FEATURES: Final[tuple[Feature, ...]] = (
    Feature("flows", "L3/L4 flow events (not replies) counted for this side"),
    Feature("new_conns", "TCP connection attempts: SYN without ACK"),
    Feature("distinct_peers", "distinct peers: workloads, reserved identities, world IPs (sketch)"),
    Feature("distinct_dst_ports", "distinct destination (service) ports, by protocol (sketch)"),
    Feature("dst_port_entropy", "Shannon entropy in bits of the destination port distribution"),
    Feature("drops", "flows dropped, any reason (verdict DROPPED)"),
    Feature("policy_drops", "drops by policy: POLICY_DENIED (133), POLICY_DENY (181), L7 denials"),
    Feature("tcp_resets", "TCP segments with RST, either direction"),
    Feature(
        "unanswered_syns", "SYNs without a SYN-ACK reply in the window (max(SYN - SYN-ACK, 0))"
    ),
    Feature("icmp", "ICMPv4/ICMPv6 flow events"),
    Feature("dns_queries", "DNS requests (L7)"),
    Feature(
        "dns_nxdomain_share",
        "share of DNS responses with rcode 3 (NXDOMAIN), of at least SHARE_MIN_COUNT responses",
    ),
    Feature("dns_qname_len_mean", "mean length of queried names (characters, no trailing dot)"),
    Feature("dns_qname_len_max", "longest queried name"),
    Feature("dns_qname_entropy_mean", "mean per-name character entropy of queried names (bits)"),
    Feature("dns_distinct_names", "distinct queried names (sketch)"),
    Feature("http_requests", "HTTP requests (L7)"),
    Feature(
        "http_4xx_share",
        "share of HTTP responses with status 400-499, of at least SHARE_MIN_COUNT responses",
    ),
    Feature(
        "http_5xx_share",
        "share of HTTP responses with status 500-599, of at least SHARE_MIN_COUNT responses",
    ),
    Feature("world_flows", "flows to (egress) or from (ingress) world addresses"),
    Feature("world_distinct_peers", "distinct world IP addresses (sketch)"),
    Feature("world_distinct_fqdns", "distinct DNS names of world peers (sketch)"),
    Feature(
        "bytes_sent",
        "bytes the subject sent on this side's connections (eBPF agent "
        "flows; 0 from Hubble, which does not count bytes)",
    ),
    Feature(
        "bytes_received", "bytes the subject received on this side's connections (eBPF agent flows)"
    ),
)
FEATURE_NAMES: Final[tuple[str, ...]] = tuple(f.name for f in FEATURES)
_ZEROS: Final = (0.0,) * len(FEATURE_NAMES)


def feature_columns() -> list[str]:
    """Model feature columns in their fixed order: every egress feature, then every ingress one."""
    return [f"egress_{n}" for n in FEATURE_NAMES] + [f"ingress_{n}" for n in FEATURE_NAMES]


def port_bucket(port: int) -> int:
    """Spread a port number over :data:`PORT_BUCKETS` buckets (Fibonacci hashing)."""
    return ((port * 40503) & 0xFFFF) >> 6


def _entropy(counts: dict[int, int]) -> float:
    total = sum(counts.values())
    if total <= 0:
        return 0.0
    h = 0.0
    for c in counts.values():
        if c:
            p = c / total
            h -= p * math.log2(p)
    return h + 0.0


_SMALL_FOLD: Final = 64
#: An open side keeps up to this many pods in a list (cheap to scan), more in a set.
_PODS_AS_LIST: Final = 8


@functools.lru_cache(maxsize=1 << 16)
def _port_hash(port_key: int) -> int:
    """Stable hash of ``protocol << 16 | port`` (memoised: a pure function of a small domain)."""
    return stable_hash64(port_key)


#: Shares are of at least this many responses (fewer count as this many): one failed request
#: in a quiet minute is one failure, not a 100% error rate.
SHARE_MIN_COUNT: Final = 10


def _share(part: int, whole: int) -> float:
    return round(part / max(whole, SHARE_MIN_COUNT), 9) if part else 0.0


def _count(sketch: DistinctSketch | None) -> float:
    return 0.0 if sketch is None else round(sketch.count(), 3)


def _nonzero(counts: dict[Any, int]) -> dict[Any, int]:
    return {k: v for k, v in counts.items() if v}


_PROTOTYPE: Final = DistinctSketch(precision=_SKETCH_PRECISION, exact_limit=_SKETCH_EXACT)


def _sketch() -> DistinctSketch:
    return _PROTOTYPE.empty_like()


class SideStats:
    """Mergeable statistics of one subject, one side (client or server), one window.

    The window builder updates the public counters directly (it is the hot path); everything
    else goes through :meth:`__iadd__` and :meth:`features`.
    """

    __slots__ = (
        "bytes_received",
        "bytes_sent",
        "dns_names",
        "dns_nxdomain",
        "dns_queries",
        "dns_responses",
        "drop_reasons",
        "drops",
        "dst_ports",
        "edge_alias",
        "edge_flags",
        "edge_times",
        "edges",
        "flows",
        "http_4xx",
        "http_5xx",
        "http_requests",
        "http_responses",
        "icmp",
        "new_conns",
        "peers",
        "pending",
        "pods",
        "policy_drops",
        "port_hist",
        "qname_entropy_sum",
        "qname_len_max",
        "qname_len_sum",
        "sample_names",
        "syn_acks",
        "tcp_resets",
        "top_pairs",
        "world_flows",
        "world_fqdns",
        "world_peers",
    )

    def __init__(self) -> None:
        self.flows = 0
        self.new_conns = 0
        self.syn_acks = 0
        self.drops = 0
        self.policy_drops = 0
        self.tcp_resets = 0
        self.icmp = 0
        self.dns_queries = 0
        self.dns_responses = 0
        self.dns_nxdomain = 0
        self.qname_len_sum = 0
        self.qname_len_max = 0
        self.qname_entropy_sum = 0.0
        self.http_requests = 0
        self.http_responses = 0
        self.http_4xx = 0
        self.http_5xx = 0
        self.world_flows = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self.drop_reasons: dict[str, int] = {}
        self.port_hist: dict[int, int] = {}
        # Sketches are created on first use (see sketch()): most sides of most windows never
        # need some of them, and creating five per side per window is measurable.
        self.peers: DistinctSketch | None = None
        self.dst_ports: DistinctSketch | None = None
        self.dns_names: DistinctSketch | None = None
        self.world_peers: DistinctSketch | None = None
        self.world_fqdns: DistinctSketch | None = None
        #: edge_key(peer hash, protocol << 16 | port, or -1) -> flows: every edge of the window, for
        #: the detector's edge memory; pruned to the smallest EDGES_PER_WINDOW keys. Internet
        #: addresses are renamed to their DNS name or network only when the window is read
        #: (ClosedWindow.edges), so the result does not depend on which flow carried the name.
        self.edges: dict[int, int] = {}
        #: The same keys -> SYN, SYN-ACK, RST, DROP counts packed in one int (FLAG_ONE,
        #: unpack_flags), only for edges that had any.
        self.edge_flags: dict[int, int] = {}
        #: Internet address hash -> the hash of a DNS name a flow to it carried (the smallest,
        #: should flows carry several).
        self.edge_alias: dict[int, int] = {}
        #: Internet edges -> the first EDGE_TIMES connection start times (Unix seconds).
        self.edge_times: dict[int, list[float]] = {}
        #: Pods of the subject that opened connections or sent UDP (DNS) on this side: a pod
        #: new to the identity explains a start-up burst (netwarden.detector.judge).
        self.pods: set[str] = set()
        #: edge_key(peer hash, protocol << 16 | port, or -1 without a port) -> flows (plus the
        #: edge's counters, PENDING_FLAGS_SHIFT), not yet folded into the sketches and the port
        #: histogram. Folding in bulk is what keeps the per-flow cost
        #: at one dict update; :meth:`fold` runs when it grows past PENDING_LIMIT and before
        #: anything reads the state, so the result is the same as updating flow by flow.
        self.pending: dict[int, int] = {}
        #: Examples, not features (approximate, not part of the merge contract): the busiest
        #: (peer hash, port key) pairs and the first few DNS names queried.
        self.top_pairs: dict[int, int] = {}
        self.sample_names: list[str] = []

    @classmethod
    def lean(cls) -> SideStats:
        """An empty side whose containers are None until first used, for the window builder's
        open windows: most sides of most windows use a few of them, and an empty dict costs 64
        bytes. Only the builder writes to a lean side; :meth:`finish` makes it a full one."""
        # Straight assignments, not loops over _SUMS: a window makes two (tested equal to
        # SideStats() once finished).
        side = cls.__new__(cls)
        side.flows = side.new_conns = side.syn_acks = side.drops = side.policy_drops = 0
        side.tcp_resets = side.icmp = side.dns_queries = side.dns_responses = 0
        side.dns_nxdomain = side.qname_len_sum = side.qname_len_max = 0
        side.http_requests = side.http_responses = side.http_4xx = side.http_5xx = 0
        side.world_flows = side.bytes_sent = side.bytes_received = 0
        side.qname_entropy_sum = 0.0
        side.peers = side.dst_ports = side.dns_names = side.world_peers = None
        side.world_fqdns = None
        side.drop_reasons = side.port_hist = side.edges = side.edge_flags = None  # type: ignore[assignment]
        side.edge_alias = side.edge_times = side.pods = side.pending = None  # type: ignore[assignment]
        side.top_pairs = side.sample_names = None  # type: ignore[assignment]
        return side

    def finish(self) -> SideStats:
        """Fold what is pending and give a lean side every container (pods as a set), so that a
        closed window reads exactly like one built from full sides; returns ``self``."""
        if self.pending:
            self.fold()
        if self.pending is None:
            self.pending = {}
        if self.drop_reasons is None:
            self.drop_reasons = {}
        if self.port_hist is None:
            self.port_hist = {}
        if self.edges is None:
            self.edges = {}
        if self.edge_flags is None:
            self.edge_flags = {}
        if self.edge_alias is None:
            self.edge_alias = {}
        if self.edge_times is None:
            self.edge_times = {}
        if self.top_pairs is None:
            self.top_pairs = {}
        if self.sample_names is None:
            self.sample_names = []
        pods: Any = self.pods
        if pods is None:
            self.pods = set()
        elif type(pods) is not set:
            self.pods = set(pods)
        return self

    def add_pod(self, pod: str) -> None:
        """A pod of the subject opened a connection or sent UDP on this side. Kept as a short
        list while the window is open (a set costs 216 bytes for one pod)."""
        pods: Any = self.pods
        if pods is None:
            self.pods = [pod]  # type: ignore[assignment]
        elif pod in pods:
            return
        elif isinstance(pods, set):
            pods.add(pod)
        elif len(pods) < _PODS_AS_LIST:
            pods.append(pod)
        else:
            self.pods = {*pods, pod}

    _SUMS = (
        "flows",
        "new_conns",
        "syn_acks",
        "drops",
        "policy_drops",
        "tcp_resets",
        "icmp",
        "dns_queries",
        "dns_responses",
        "dns_nxdomain",
        "qname_len_sum",
        "http_requests",
        "http_responses",
        "http_4xx",
        "http_5xx",
        "world_flows",
        "bytes_sent",
        "bytes_received",
    )
    _SKETCHES = ("peers", "dst_ports", "dns_names", "world_peers", "world_fqdns")

    def sketch(self, name: str) -> DistinctSketch:
        """The named distinct-count sketch, created empty on first use."""
        found: DistinctSketch | None = getattr(self, name)
        if found is None:
            found = _sketch()
            setattr(self, name, found)
        return found

    def add_reason(self, reason: str, n: int) -> None:
        reasons = self.drop_reasons
        if reasons is None:
            reasons = self.drop_reasons = {}
        reasons[reason] = reasons.get(reason, 0) + n

    def fold(self) -> None:
        """Move the pending (peer, port) counts into the sketches, histogram and peer sample."""
        pending = self.pending
        if not pending:
            return
        if self.port_hist is None:
            self.port_hist = {}
        if self.top_pairs is None:
            self.top_pairs = {}
        if self.edges is None:
            self.edges = {}
        flows_mask = _FLOWS_MASK
        if any(v > flows_mask for v in pending.values()):  # packed counters: to edge_flags
            flags = self.edge_flags
            if flags is None:
                flags = self.edge_flags = {}
            shift = PENDING_FLAGS_SHIFT
            for pair, v in list(pending.items()):
                if v > flows_mask:
                    flags[pair] = flags.get(pair, 0) + (v >> shift)
                    if v & flows_mask:
                        pending[pair] = v & flows_mask
                    else:  # an edge seen only in replies: counters, no flow
                        del pending[pair]
            if not pending:
                return
        shift, mask = EDGE_KEY_SHIFT, _PORT_MASK
        peers = {k >> shift for k in pending}
        ports = {(k & mask) - 1 for k in pending if k & mask}
        if len(pending) < _SMALL_FOLD:  # numpy's fixed cost dominates small folds
            sketch = self.peers
            if sketch is None:
                sketch = self.peers = _sketch()
            sketch.add_hashes(peers)
            if ports:
                sketch = self.dst_ports
                if sketch is None:
                    sketch = self.dst_ports = _sketch()
                sketch.add_hashes([_port_hash(pk) for pk in ports])
        else:
            self.sketch("peers").update(np.fromiter(peers, dtype=np.uint64, count=len(peers)))
            if ports:
                self.sketch("dst_ports").update(
                    stable_hash64_many(np.fromiter(ports, dtype=np.int64, count=len(ports)))
                )
        hist = self.port_hist
        top = self.top_pairs
        edges = self.edges
        for pair, n in pending.items():
            top[pair] = top.get(pair, 0) + n
            edges[pair] = edges.get(pair, 0) + n
            if pair & mask:  # has a port
                bucket = ((((pair & mask) - 1 & 0xFFFF) * 40503) & 0xFFFF) >> 6  # port_bucket()
                hist[bucket] = hist.get(bucket, 0) + n
        if len(top) > EXAMPLE_PAIRS:
            self.top_pairs = dict(
                sorted(top.items(), key=lambda kv: (-kv[1], kv[0]))[:EXAMPLE_PAIRS]
            )
        self.prune_edges()
        pending.clear()

    def __iadd__(self, other: SideStats) -> SideStats:
        self.finish()
        other.finish()
        for name in self._SUMS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.qname_len_max = max(self.qname_len_max, other.qname_len_max)
        # Float sums of per-name entropies: addition order can differ in the last ulp between
        # a merged and a single window; features() rounds to 9 decimals, far below any signal.
        self.qname_entropy_sum += other.qname_entropy_sum
        for reason, n in other.drop_reasons.items():
            self.add_reason(reason, n)
        hist = self.port_hist
        for bucket, n in other.port_hist.items():
            hist[bucket] = hist.get(bucket, 0) + n
        for name in self._SKETCHES:
            theirs: DistinctSketch | None = getattr(other, name)
            if theirs is not None:
                mine = self.sketch(name)
                mine += theirs
        edges = self.edges
        for key, n in other.edges.items():
            edges[key] = edges.get(key, 0) + n
        flags = self.edge_flags
        for key, packed in other.edge_flags.items():
            flags[key] = flags.get(key, 0) + packed
        self.pods |= other.pods
        alias = self.edge_alias
        for h, named in other.edge_alias.items():
            alias[h] = min(alias.get(h, named), named)
        times = self.edge_times
        for key, theirs in other.edge_times.items():
            times[key] = sorted(times.get(key, []) + theirs)[:EDGE_TIMES]
        for pair, n in other.top_pairs.items():
            self.top_pairs[pair] = self.top_pairs.get(pair, 0) + n
        for name in other.sample_names:
            if len(self.sample_names) < EXAMPLE_NAMES and name not in self.sample_names:
                self.sample_names.append(name)
        self.prune_edges()
        return self

    def __add__(self, other: SideStats) -> SideStats:
        out = SideStats()
        out += self
        out += other
        return out

    @property
    def empty(self) -> bool:  # counters only: safe on a lean side
        return not (
            self.flows
            or self.drops
            or self.dns_queries
            or self.dns_responses
            or self.http_requests
            or self.http_responses
            or self.icmp
            or self.tcp_resets
            or self.syn_acks
            or self.bytes_sent
            or self.bytes_received
        )

    def prune_edges(self) -> None:
        """Keep the smallest edge keys (bottom-k): the same set however the stream was split."""
        if self.edges is not None and len(self.edges) > EDGES_PER_WINDOW:
            edges = self.edges
            self.edges = {k: edges[k] for k in sorted(edges)[:EDGES_PER_WINDOW]}
            kept = self.edges
            if self.edge_flags:
                self.edge_flags = {k: v for k, v in self.edge_flags.items() if k in kept}
            if self.edge_times:
                self.edge_times = {k: v for k, v in self.edge_times.items() if k in kept}

    def started(self, key: tuple[int, int], t: float) -> None:
        """A connection on an internet edge started at ``t``: keep the first few times."""
        edge_times = self.edge_times
        if edge_times is None:
            edge_times = self.edge_times = {}
        times = edge_times.get(key)
        if times is None:
            edge_times[key] = [t]
        elif len(times) < EDGE_TIMES:
            times.append(t)
        elif t < times[-1]:
            times[-1] = t
            times.sort()

    def flag(self, key: tuple[int, int], which: int, n: int = 1) -> None:
        """Count a SYN, SYN-ACK, reset or drop on one edge."""
        flags = self.edge_flags
        if flags is None:
            flags = self.edge_flags = {}
        flags[key] = flags.get(key, 0) + n * FLAG_ONE[which]

    def features(self) -> dict[str, float]:
        """The documented features (:data:`FEATURES`), by bare name."""
        return dict(zip(FEATURE_NAMES, self.feature_values(), strict=True))

    def feature_values(self) -> tuple[float, ...]:
        """The documented features' values in :data:`FEATURES` order (what :meth:`features`
        names; writers zip them with their own column names)."""
        self.finish()
        if self.empty:  # nothing counted: every feature is 0 (each implies a counter above 0)
            return _ZEROS
        q = self.dns_queries
        dns_resp = self.dns_responses
        http_resp = self.http_responses
        return (
            float(self.flows),
            float(self.new_conns),
            _count(self.peers),
            _count(self.dst_ports),
            round(_entropy(self.port_hist), 9) if self.port_hist else 0.0,
            float(self.drops),
            float(self.policy_drops),
            float(self.tcp_resets),
            float(max(self.new_conns - self.syn_acks, 0)),
            float(self.icmp),
            float(q),
            _share(self.dns_nxdomain, dns_resp),
            round(self.qname_len_sum / q, 9) if q else 0.0,
            float(self.qname_len_max),
            round(self.qname_entropy_sum / q, 9) if q else 0.0,
            _count(self.dns_names),
            float(self.http_requests),
            _share(self.http_4xx, http_resp),
            _share(self.http_5xx, http_resp),
            float(self.world_flows),
            _count(self.world_peers),
            _count(self.world_fqdns),
            float(self.bytes_sent),
            float(self.bytes_received),
        )

    def nbytes(self) -> int:
        """Memory held by this side's state, measured (:func:`deep_size`)."""
        return deep_size([self])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SideStats):
            return NotImplemented
        self.finish()
        other.finish()
        return (
            all(getattr(self, n) == getattr(other, n) for n in self._SUMS)
            and self.qname_len_max == other.qname_len_max
            and math.isclose(
                self.qname_entropy_sum, other.qname_entropy_sum, rel_tol=1e-12, abs_tol=1e-9
            )
            and _nonzero(self.drop_reasons) == _nonzero(other.drop_reasons)
            and _nonzero(self.port_hist) == _nonzero(other.port_hist)
            and all(
                (getattr(self, n) or _sketch()) == (getattr(other, n) or _sketch())
                for n in self._SKETCHES
            )
            and self._pruned(self.edges) == self._pruned(other.edges)
            and self._pruned_flags(self.edge_flags, self.edges)
            == self._pruned_flags(other.edge_flags, other.edges)
            and self.edge_alias == other.edge_alias
            and self.pods == other.pods
        )

    @staticmethod
    def _pruned(edges: dict[int, int]) -> dict[int, int]:
        return {k: edges[k] for k in sorted(edges)[:EDGES_PER_WINDOW]}

    @staticmethod
    def _pruned_flags(flags: dict[int, int], edges: dict[int, int]) -> dict[int, int]:
        kept = set(sorted(edges)[:EDGES_PER_WINDOW])
        return {k: v for k, v in flags.items() if k in kept and v}

    __hash__ = None  # type: ignore[assignment]

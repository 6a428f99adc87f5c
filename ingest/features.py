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
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from netwarden.ingest.sketch import DistinctSketch, stable_hash64, stable_hash64_many

__all__ = [
    "FEATURES",
    "FEATURE_NAMES",
    "PORT_BUCKETS",
    "Feature",
    "SideStats",
    "feature_columns",
    "port_bucket",
]

#: Destination ports are counted in this many hashed buckets (exact below ~30 distinct ports;
#: the entropy saturates at log2(PORT_BUCKETS) = 10 bits).
PORT_BUCKETS: Final = 1024
#: How many distinct peers per window are remembered for the new-peer baseline (bottom-k by hash,
#: so the kept set is the same however the window was split).
BASELINE_PEERS_PER_WINDOW: Final = 256
#: Example (peer, port) pairs and DNS names kept per side for explanations.
EXAMPLE_PAIRS: Final = 8
EXAMPLE_NAMES: Final = 5
#: Pending (peer, port) pairs per side before they are folded into the sketches.
PENDING_LIMIT: Final = 4096
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
    Feature(
        "new_peers",
        "distinct peers new to this identity: first seen less than an hour ago "
        "(WindowConfig.novelty_seconds); estimated from a bottom-256 sample by hash, exact up "
        "to 256 peers",
    ),
    Feature("new_peer_flows", "flows to (egress) or from (ingress) those new peers"),
    Feature("drops", "flows dropped, any reason (verdict DROPPED)"),
    Feature("policy_drops", "drops by policy: POLICY_DENIED (133), POLICY_DENY (181), L7 denials"),
    Feature("tcp_resets", "TCP segments with RST, either direction"),
    Feature(
        "unanswered_syns", "SYNs without a SYN-ACK reply in the window (max(SYN - SYN-ACK, 0))"
    ),
    Feature("icmp", "ICMPv4/ICMPv6 flow events"),
    Feature("dns_queries", "DNS requests (L7)"),
    Feature("dns_nxdomain_share", "share of DNS responses with rcode 3 (NXDOMAIN)"),
    Feature("dns_qname_len_mean", "mean length of queried names (characters, no trailing dot)"),
    Feature("dns_qname_len_max", "longest queried name"),
    Feature("dns_qname_entropy_mean", "mean per-name character entropy of queried names (bits)"),
    Feature("dns_distinct_names", "distinct queried names (sketch)"),
    Feature(
        "dns_new_names",
        "distinct queried names new to this identity (first queried less "
        "than an hour ago), estimated like new_peers",
    ),
    Feature("http_requests", "HTTP requests (L7)"),
    Feature("http_4xx_share", "share of HTTP responses with status 400-499"),
    Feature("http_5xx_share", "share of HTTP responses with status 500-599"),
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


@functools.lru_cache(maxsize=1 << 16)
def _port_hash(port_key: int) -> int:
    """Stable hash of ``protocol << 16 | port`` (memoised: a pure function of a small domain)."""
    return stable_hash64(port_key)


def _novel_flows(new: set[int], seen: dict[int, int], flows: int) -> float:
    """Flows of the window's new peers: exact while the sample holds every peer, else the
    sample's new-peer share of flows times all flows (a ratio estimate)."""
    if not seen or not new:
        return 0.0
    novel = sum(seen.get(h, 0) for h in new)
    if len(seen) < BASELINE_PEERS_PER_WINDOW:
        return float(novel)
    return float(round(novel / max(sum(seen.values()), 1) * flows))


def _novel_count(new: set[int], seen: Collection[int], distinct: DistinctSketch | None) -> float:
    """How many of the window's distinct keys are new: exact while the bottom-k sample ``seen``
    holds them all, else the sample's new share times the distinct count (a uniform sample by
    hash, so the share carries over). A count, not a share: one new name in a quiet window and a
    hundred in a tunnel are both 100% new, but only one of them is an anomaly."""
    if not seen:
        return 0.0
    novel = len(new & seen)
    if len(seen) < BASELINE_PEERS_PER_WINDOW:
        return float(novel)
    return float(round(novel / len(seen) * max(_count(distinct), len(seen))))


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
        "flows",
        "http_4xx",
        "http_5xx",
        "http_requests",
        "http_responses",
        "icmp",
        "names_seen",
        "new_conns",
        "new_names",
        "new_peers",
        "peers",
        "peers_seen",
        "pending",
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
        #: Peer hash -> flows, for the baseline; pruned to the smallest BASELINE_PEERS_PER_WINDOW
        #: hashes (a uniform sample of the peers, the same however the stream was split).
        self.peers_seen: dict[int, int] = {}
        #: Of ``peers_seen``, those not in the identity's baseline; set when the window closes.
        self.new_peers: set[int] = set()
        #: DNS name hashes queried (bottom-k like peers) and, at close, those new to the identity.
        self.names_seen: set[int] = set()
        self.new_names: set[int] = set()
        #: (peer hash, protocol << 16 | port, or -1 without a port) -> flows, not yet folded into
        #: the sketches and the port histogram. Folding in bulk is what keeps the per-flow cost
        #: at one dict update; :meth:`fold` runs when it grows past PENDING_LIMIT and before
        #: anything reads the state, so the result is the same as updating flow by flow.
        self.pending: dict[tuple[int, int], int] = {}
        #: Examples, not features (approximate, not part of the merge contract): the busiest
        #: (peer hash, port key) pairs and the first few DNS names queried.
        self.top_pairs: dict[tuple[int, int], int] = {}
        self.sample_names: list[str] = []

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
        self.drop_reasons[reason] = self.drop_reasons.get(reason, 0) + n

    def fold(self) -> None:
        """Move the pending (peer, port) counts into the sketches, histogram and peer sample."""
        pending = self.pending
        if not pending:
            return
        peers = {h for h, _ in pending}
        ports = {pk for _, pk in pending if pk >= 0}
        if len(pending) < _SMALL_FOLD:  # numpy's fixed cost dominates small folds
            add = self.sketch("peers").add
            for h in peers:
                add(h)
            if ports:
                add = self.sketch("dst_ports").add
                for pk in ports:
                    add(_port_hash(pk))
        else:
            self.sketch("peers").update(np.fromiter(peers, dtype=np.uint64, count=len(peers)))
            if ports:
                self.sketch("dst_ports").update(
                    stable_hash64_many(np.fromiter(ports, dtype=np.int64, count=len(ports)))
                )
        hist = self.port_hist
        top = self.top_pairs
        seen = self.peers_seen
        for pair, n in pending.items():
            top[pair] = top.get(pair, 0) + n
            h = pair[0]
            seen[h] = seen.get(h, 0) + n
            pk = pair[1]
            if pk >= 0:
                bucket = (((pk & 0xFFFF) * 40503) & 0xFFFF) >> 6  # port_bucket(), inlined
                hist[bucket] = hist.get(bucket, 0) + n
        if len(top) > EXAMPLE_PAIRS:
            self.top_pairs = dict(
                sorted(top.items(), key=lambda kv: (-kv[1], kv[0]))[:EXAMPLE_PAIRS]
            )
        self.prune_peers_seen()
        pending.clear()

    def __iadd__(self, other: SideStats) -> SideStats:
        self.fold()
        other.fold()
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
        seen = self.peers_seen
        for h, n in other.peers_seen.items():
            seen[h] = seen.get(h, 0) + n
        self.new_peers |= other.new_peers
        self.names_seen |= other.names_seen
        self.new_names |= other.new_names
        for pair, n in other.top_pairs.items():
            self.top_pairs[pair] = self.top_pairs.get(pair, 0) + n
        for name in other.sample_names:
            if len(self.sample_names) < EXAMPLE_NAMES and name not in self.sample_names:
                self.sample_names.append(name)
        self.prune_peers_seen()
        return self

    def __add__(self, other: SideStats) -> SideStats:
        out = SideStats()
        out += self
        out += other
        return out

    @property
    def empty(self) -> bool:
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

    def prune_peers_seen(self) -> None:
        """Keep the smallest hashes (bottom-k): the same set however the stream was split."""
        if len(self.peers_seen) > BASELINE_PEERS_PER_WINDOW:
            seen = self.peers_seen
            self.peers_seen = {h: seen[h] for h in sorted(seen)[:BASELINE_PEERS_PER_WINDOW]}
            self.new_peers &= self.peers_seen.keys()
        if len(self.names_seen) > BASELINE_PEERS_PER_WINDOW:
            self.names_seen = set(sorted(self.names_seen)[:BASELINE_PEERS_PER_WINDOW])
            self.new_names &= self.names_seen

    def features(self) -> dict[str, float]:
        """The documented features (:data:`FEATURES`), by bare name."""
        self.fold()
        flows = self.flows
        dns_resp = self.dns_responses
        http_resp = self.http_responses
        q = self.dns_queries
        return {
            "flows": float(flows),
            "new_conns": float(self.new_conns),
            "distinct_peers": _count(self.peers),
            "distinct_dst_ports": _count(self.dst_ports),
            "dst_port_entropy": round(_entropy(self.port_hist), 9),
            "new_peers": _novel_count(self.new_peers, self.peers_seen.keys(), self.peers),
            "new_peer_flows": _novel_flows(self.new_peers, self.peers_seen, flows),
            "drops": float(self.drops),
            "policy_drops": float(self.policy_drops),
            "tcp_resets": float(self.tcp_resets),
            "unanswered_syns": float(max(self.new_conns - self.syn_acks, 0)),
            "icmp": float(self.icmp),
            "dns_queries": float(q),
            "dns_nxdomain_share": round(self.dns_nxdomain / dns_resp, 9) if dns_resp else 0.0,
            "dns_qname_len_mean": round(self.qname_len_sum / q, 9) if q else 0.0,
            "dns_qname_len_max": float(self.qname_len_max),
            "dns_qname_entropy_mean": round(self.qname_entropy_sum / q, 9) if q else 0.0,
            "dns_distinct_names": _count(self.dns_names),
            "dns_new_names": _novel_count(self.new_names, self.names_seen, self.dns_names),
            "http_requests": float(self.http_requests),
            "http_4xx_share": round(self.http_4xx / http_resp, 9) if http_resp else 0.0,
            "http_5xx_share": round(self.http_5xx / http_resp, 9) if http_resp else 0.0,
            "world_flows": float(self.world_flows),
            "world_distinct_peers": _count(self.world_peers),
            "world_distinct_fqdns": _count(self.world_fqdns),
            "bytes_sent": float(self.bytes_sent),
            "bytes_received": float(self.bytes_received),
        }

    def nbytes(self) -> int:
        """Approximate memory held by this side's state."""
        sketches = sum(
            getattr(self, name).nbytes()
            for name in self._SKETCHES
            if getattr(self, name) is not None
        )
        return (
            64
            + 8 * len(self.__slots__)
            + sketches
            + 100 * (len(self.port_hist) + len(self.drop_reasons))
            + 40
            * (
                len(self.peers_seen)
                + len(self.new_peers)
                + len(self.names_seen)
                + len(self.new_names)
            )
            + 120 * len(self.pending)
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SideStats):
            return NotImplemented
        self.fold()
        other.fold()
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
            and self._pruned_counts(self.peers_seen) == self._pruned_counts(other.peers_seen)
            and (self.new_peers & set(self._pruned(self.peers_seen)))
            == (other.new_peers & set(self._pruned(other.peers_seen)))
            and self._pruned(self.names_seen) == self._pruned(other.names_seen)
            and (self.new_names & set(self._pruned(self.names_seen)))
            == (other.new_names & set(self._pruned(other.names_seen)))
        )

    @staticmethod
    def _pruned(peers: Iterable[int]) -> list[int]:
        return sorted(peers)[:BASELINE_PEERS_PER_WINDOW]

    @staticmethod
    def _pruned_counts(peers: dict[int, int]) -> dict[int, int]:
        return {h: peers[h] for h in sorted(peers)[:BASELINE_PEERS_PER_WINDOW]}

    __hash__ = None  # type: ignore[assignment]

"""What workloads were seen doing normally, and what a workload did during an anomaly.

A containment must never cut traffic that is part of normal operation (a Prometheus scrape, a
service's own database connection). Two sources say what is normal, and they differ in detail:

* **flows** (the service's recent history before the anomaly, or training flows): each forwarded
  request flow is an edge (identity, side, peer, port), ``egress`` for its source and ``ingress``
  for its destination, as Cilium enforces it. Port-level, but only as long as the history is.
* **the model's edge memory** (:class:`~netwarden.models.edges.EdgeMemory`): every edge
  (identity, side, peer, protocol/port) seen in training and since, port by port; port-less
  edges (ICMP) are normal on every port.

Peers are named as :class:`~netwarden.ingest.identity.IdentityResolver` names them
(``namespace/workload``, ``world:<ip>``, ``reserved:<name>``), the names anomaly examples use.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from netwarden.ingest.identity import IdentityResolver
from netwarden.ingest.sketch import stable_hash64
from netwarden.models.edges import EdgeMemory
from netwarden.remediation.matcher import l4_key

__all__ = ["EVERY_PORT", "NormalEdges", "Port", "RecentFlows", "activity"]

#: (protocol, port or ICMP type), as :mod:`netwarden.remediation.propose` writes it.
Port = tuple[str, int]
#: A peer seen as normal whose ports are unknown (from baselines): every port counts as normal.
EVERY_PORT: Final[frozenset[Port]] = frozenset({("*", 0)})
_PROTOCOLS: Final = {6: "TCP", 17: "UDP", 132: "SCTP"}
_NOT_TRAFFIC: Final = frozenset({2, 3, 6, 7, 130})
_ICMP: Final = ("ICMPv4", "ICMPv6")


def _is_reply(flow: Any) -> bool:
    is_reply = getattr(flow, "is_reply", None)
    if is_reply is not None:
        return bool(is_reply)
    return bool(getattr(flow, "reply", False))


#: A flow's resolved ends: (source subject, source peer, destination subject, destination peer).
Ends = tuple[Any, Any, Any, Any]


class RecentFlows:
    """Flows with each one's ends resolved once, and which flows concern which workload.

    A batch of containments makes several passes over the same recent flows (the normal edges
    before the batch, then for each anomaly what it did and the flows its policy could drop):
    with the ends resolved here once, those passes read them instead of resolving every flow
    again, and an anomaly's passes read only the flows of the workloads it concerns (a policy
    selecting a workload can drop nothing else). Iterating gives the flows, oldest first, so it
    stands wherever a flow list does."""

    __slots__ = ("_by", "_ends", "flows", "start")

    def __init__(
        self, flows: Iterable[Any], *, start: int = 0, previous: RecentFlows | None = None
    ) -> None:
        """``start`` numbers the first flow in the stream the flows come from; a ``previous``
        window of the same stream lends the ends it already resolved for the flows both hold
        (a history of recent flows slides: most of a batch's flows were in the batch before)."""
        self.flows: list[Any] = list(flows)
        self.start = start
        self._ends: list[Ends] = []
        self._by: dict[str, list[int]] = defaultdict(list)  # identity -> stream numbers
        shared = self._shared(previous)
        if shared and previous is not None:
            offset = start - previous.start
            self._ends = previous._ends[offset : offset + shared]
            end = start + shared
            for identity, numbers in previous._by.items():
                kept = numbers[bisect_left(numbers, start) : bisect_left(numbers, end)]
                if kept:
                    self._by[identity] = kept
        resolver = IdentityResolver()
        for i in range(shared, len(self.flows)):
            ends = resolver.ends(self.flows[i])
            self._ends.append(ends)
            src, _, dst, _ = ends
            if src is not None:
                self._by[src.id].append(start + i)
            if dst is not None and (src is None or dst.id != src.id):
                self._by[dst.id].append(start + i)

    def _shared(self, previous: RecentFlows | None) -> int:
        """How many of the first flows here ``previous`` holds too (as the same objects)."""
        if previous is None or not self.flows:
            return 0
        offset = self.start - previous.start
        if not 0 <= offset < len(previous.flows):
            return 0
        shared = min(len(previous.flows) - offset, len(self.flows))
        ends_match = (
            previous.flows[offset] is self.flows[0]
            and previous.flows[offset + shared - 1] is self.flows[shared - 1]
        )
        return shared if ends_match else 0

    @classmethod
    def _view(cls, flows: list[Any], ends: list[Ends]) -> RecentFlows:
        out = cls.__new__(cls)
        out.flows, out._ends, out._by, out.start = flows, ends, {}, 0
        return out

    def __iter__(self) -> Iterator[Any]:
        return iter(self.flows)

    def __len__(self) -> int:
        return len(self.flows)

    def __bool__(self) -> bool:
        return bool(self.flows)

    def with_ends(self) -> Iterator[tuple[Any, Ends]]:
        return zip(self.flows, self._ends, strict=True)

    def of(self, identity: str) -> RecentFlows:
        """The flows from or to ``identity`` (oldest first, their ends resolved)."""
        picked = [n - self.start for n in self._by.get(identity, ())]
        return RecentFlows._view([self.flows[i] for i in picked], [self._ends[i] for i in picked])


def _edges(
    flows: Iterable[Any], resolver: IdentityResolver, *, forwarded_only: bool
) -> Iterable[tuple[Any, str | None, str, str | None, str, Port]]:
    """(flow, source subject id, source peer key, destination subject id, destination peer key,
    port) of every request flow with L4 (ends resolved here unless ``flows`` has them)."""
    pairs: Iterable[tuple[Any, Ends | None]] = (
        flows.with_ends() if isinstance(flows, RecentFlows) else ((f, None) for f in flows)
    )
    for flow, ends in pairs:
        if _is_reply(flow):
            continue
        if forwarded_only and flow.verdict not in ("FORWARDED", 1):
            continue
        event = getattr(flow, "event_type", None)
        if event is not None and event.type in _NOT_TRAFFIC:
            continue
        l4 = l4_key(flow)
        if not l4.protocol:
            continue
        port: Port = (l4.protocol, l4.icmp_type if l4.protocol in _ICMP else l4.port)
        src, src_peer, dst, dst_peer = ends if ends is not None else resolver.ends(flow)
        yield (
            flow,
            src.id if src is not None else None,
            src_peer.key,
            dst.id if dst is not None else None,
            dst_peer.key,
            port,
        )


def _peer_ports() -> defaultdict[str, set[Port]]:
    """A factory by name, not a lambda: normal edges cross process boundaries (pickled from
    the pipeline process to the API's, netwarden.pipeline_process)."""
    return defaultdict(set)


def _by_side() -> defaultdict[tuple[str, str], defaultdict[str, set[Port]]]:
    return defaultdict(_peer_ports)


@dataclass
class NormalEdges:
    """Normal edges by (identity, side): peer key -> ports, and peer hashes (normal on every
    port)."""

    ports: dict[tuple[str, str], dict[str, set[Port]]] = field(default_factory=_by_side)
    hashes: dict[tuple[str, str], set[int]] = field(default_factory=lambda: defaultdict(set))
    #: identity -> DNS names it resolved (a DNS containment keeps them resolvable).
    names: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    flows: int = 0

    @classmethod
    def from_flows(cls, flows: Iterable[Any], *, before: datetime | None = None) -> NormalEdges:
        """Edges of the forwarded request flows (those earlier than ``before`` when given: the
        flows of an anomaly are not normal)."""
        out = cls()
        out.add_flows(flows, before=before)
        return out

    @classmethod
    def from_memory(cls, memory: EdgeMemory) -> NormalEdges:
        """Edges of a model's edge memory (:mod:`netwarden.models.edges`), port by port.
        Internet peers are left to the flows: the memory names them by DNS name or network,
        a containment by address. Port-less edges (ICMP) are normal on every port."""
        out = cls()
        for identity in memory.identities():
            for egress, peer, proto, port in memory.edges_of(identity):
                if peer.startswith(("fqdn:", "cidr:")):
                    continue
                side = "egress" if egress else "ingress"
                name = _PROTOCOLS.get(proto)
                if name is None:
                    out.hashes[(identity, side)].add(stable_hash64(peer))
                else:
                    out.ports[(identity, side)][peer].add((name, port))
        return out

    def add_flows(self, flows: Iterable[Any], *, before: datetime | None = None) -> None:
        resolver = IdentityResolver()
        for flow, src, src_key, dst, dst_key, port in _edges(flows, resolver, forwarded_only=True):
            t = getattr(flow, "time", None)
            if before is not None and t is not None and t >= before:
                continue
            self.flows += 1
            if src is not None:
                self.ports[(src, "egress")][dst_key].add(port)
                l7 = getattr(flow, "l7", None)
                dns = getattr(l7, "dns", None) if l7 is not None else None
                for name in (getattr(dns, "query", "") or "", *(flow.destination_names or ())):
                    if name:
                        self.names[src].add(name.lower().rstrip("."))
            if dst is not None:
                self.ports[(dst, "ingress")][src_key].add(port)

    def merge(self, other: NormalEdges) -> NormalEdges:
        """Both sources in one (``self`` is changed and returned)."""
        for key, peers in other.ports.items():
            for peer, ports in peers.items():
                self.ports[key][peer] |= ports
        for key, hashes in other.hashes.items():
            self.hashes[key] |= hashes
        for identity, names in other.names.items():
            self.names[identity] |= names
        self.flows += other.flows
        return self

    def knows(self, identity: str) -> bool:
        """Whether anything normal is known about ``identity`` (either side)."""
        return any(
            (identity, side) in self.ports or (identity, side) in self.hashes
            for side in ("egress", "ingress")
        )

    def normal_ports(self, identity: str, side: str, peer: str) -> frozenset[Port] | None:
        """The ports on which ``peer`` is a normal peer of ``identity``'s ``side``: None when it
        is not one, :data:`EVERY_PORT` when it is on every port (port-less edges)."""
        ports = self.ports.get((identity, side), {}).get(peer)
        if ports:
            return frozenset(ports)
        if stable_hash64(peer) in self.hashes.get((identity, side), ()):
            return EVERY_PORT
        return None

    def edge_ports(self, identity: str, side: str, peer: str) -> frozenset[Port] | None:
        """:meth:`normal_ports` of the edge seen from both of its ends (a workload peer's own
        opposite side too): normal for either end is normal."""
        found = [self.normal_ports(identity, side, peer)]
        if "/" in peer and not peer.startswith(("world:", "reserved:")):
            other = "ingress" if side == "egress" else "egress"
            found.append(self.normal_ports(peer, other, identity))
        known = [f for f in found if f is not None]
        if not known:
            return None
        if any(f == EVERY_PORT for f in known) and all(not (f - EVERY_PORT) for f in known):
            return EVERY_PORT
        return frozenset().union(*(f - EVERY_PORT for f in known))


def activity(
    flows: Iterable[Any],
    identity: str,
    side: str,
    start: datetime | None = None,
    end: datetime | None = None,
) -> dict[str, dict[Port, int]]:
    """What ``identity`` did on ``side`` between ``start`` and ``end``: peer key -> port ->
    request flows, dropped ones included (an attempt the policy refused is still the attack)."""
    out: dict[str, dict[Port, int]] = defaultdict(lambda: defaultdict(int))
    resolver = IdentityResolver()
    if isinstance(flows, RecentFlows):
        flows = flows.of(identity)  # the same flows' edges, without a pass over the others
    for flow, src, src_key, dst, dst_key, port in _edges(flows, resolver, forwarded_only=False):
        t = getattr(flow, "time", None)
        if t is not None and ((start is not None and t < start) or (end is not None and t >= end)):
            continue
        if side == "egress" and src == identity:
            out[dst_key][port] += 1
        elif side == "ingress" and dst == identity:
            out[src_key][port] += 1
    return {peer: dict(ports) for peer, ports in out.items()}

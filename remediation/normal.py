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

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from netwarden.ingest.identity import IdentityResolver
from netwarden.ingest.sketch import stable_hash64
from netwarden.models.edges import EdgeMemory
from netwarden.remediation.matcher import l4_key

__all__ = ["EVERY_PORT", "NormalEdges", "Port", "activity"]

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


def _edges(
    flows: Iterable[Any], resolver: IdentityResolver, *, forwarded_only: bool
) -> Iterable[tuple[Any, str | None, str, str | None, str, Port]]:
    """(flow, source subject id, source peer key, destination subject id, destination peer key,
    port) of every request flow with L4."""
    for flow in flows:
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
        ip = getattr(flow, "IP", None)
        src, src_peer = resolver.resolve(flow.source, ip.source if ip else "")
        dst, dst_peer = resolver.resolve(flow.destination, ip.destination if ip else "")
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
    for flow, src, src_key, dst, dst_key, port in _edges(flows, resolver, forwarded_only=False):
        t = getattr(flow, "time", None)
        if t is not None and ((start is not None and t < start) or (end is not None and t >= end)):
            continue
        if side == "egress" and src == identity:
            out[dst_key][port] += 1
        elif side == "ingress" and dst == identity:
            out[src_key][port] += 1
    return {peer: dict(ports) for peer, ports in out.items()}

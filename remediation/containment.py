"""A targeted containment change for one anomaly, as a full policy and a JSON patch.

**Who is contained.** An anomaly of a workload's *egress* (it opened the connections) contains
that workload. An anomaly of its *ingress* (a scan or lateral movement arriving at it) makes it
the victim: the containment is for the source, an ``egressDeny`` on the attacking workload
towards the victim (the policy then selects the attacker, :attr:`Containment.identity`), so the
victim's own clients are never touched. Only when the source is outside the cluster (world, a
reserved entity), which no endpoint selector can select, is it an ``ingressDeny`` on the victim.
The side is the one whose reasons weigh most (their contributions).

**What is denied.** What the contained side did during the anomaly: every peer and port of
``flows`` between the anomaly's first window and its end (all of a scan, not the busiest
examples), else the anomaly's examples. Edges seen as normal (:class:`NormalEdges` from training
baselines or the flows before the anomaly, and what ``current`` allows) are never denied. A few
ports of a peer (up to :data:`SCAN_PORTS`) are denied one by one; more are a scan, covered whole:
all ports of a peer with no normal edge, ``endPort`` ranges between the normal ports of one with
some. A peer known normal only from the baselines (ports unknown) is left alone. If nothing is
left, :class:`ValueError` says why.

The change is chosen from what the anomaly shows:

* **dns** (DNS-name reasons of an anomaly whose egress weighs most: many/new/long/high-entropy
  names, NXDOMAIN share): Cilium has no DNS deny rule, so the workload's kube-dns rule is
  rewritten to allow only its known names (the current policy's names, minus the tunnelled
  domain); the DNS proxy refuses every other lookup.
* **quarantine** (drops, unanswered SYNs or resets across many peers or ports, of the workload's
  own egress, when nothing normal is known about it): deny rules for all egress except DNS to
  kube-dns, and for all ingress. With known normal edges a quarantine would cut them, so the
  offending peers and ports are denied instead.
* **deny** (otherwise): ``egressDeny``/``ingressDeny`` as above.

With ``current`` (the contained workload's policy, e.g. its baseline) the result is that policy
with the change applied plus an RFC 6902 patch from it; without, a standalone policy selecting
the workload that only adds restrictions (``enableDefaultDeny`` off). Every result is validated
with :func:`~netwarden.remediation.schema.check_policy`. With ``flows``, the proposal is replayed
against the ones that are not part of the anomaly and :attr:`Containment.warnings` says what
normal traffic it would drop.
"""

from __future__ import annotations

import copy
import ipaddress
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import jsonpatch
import orjson

from netwarden.detector.store import AnomalyRecord
from netwarden.ingest.identity import IdentityResolver
from netwarden.remediation.matcher import fqdn_pattern, l4_key
from netwarden.remediation.normal import EVERY_PORT, NormalEdges, RecentFlows, activity
from netwarden.remediation.propose import (
    DNS_SELECTOR,
    MANAGED_BY,
    NS_KEY,
    PeerRef,
    Port,
    Proposer,
    dns_rule,
    policy_name,
    rules_for,
)
from netwarden.remediation.schema import API_VERSION, check_policy
from netwarden.remediation.simulate import drop_warnings

__all__ = ["Containment", "containment", "peer_rules"]

_DNS_FEATURES: Final = (
    "dns_distinct_names",
    "dns_new_names",
    "dns_qname_len_mean",
    "dns_qname_len_max",
    "dns_qname_entropy_mean",
    "dns_nxdomain_share",
)
_STORM_FEATURES: Final = (
    "drops",
    "policy_drops",
    "unanswered_syns",
    "tcp_resets",
    "distinct_dst_ports",
    "dst_port_entropy",
    "distinct_peers",
)
#: Distinct offending peers, or peer-port pairs, from which a targeted deny becomes a quarantine.
QUARANTINE_PEERS: Final = 5
QUARANTINE_PAIRS: Final = 10
_OUTSIDE_CLUSTER: Final = (
    "world",
    "host",
    "remote-node",
    "kube-apiserver",
    "init",
    "ingress",
    "health",
    "unmanaged",
)
#: Distinct ports to one peer above which they are a scan: covered whole (all ports of a peer
#: with no normal edge, ranges between the normal ports of one with some) instead of one by one.
#: A workload normally uses one to three ports of a peer (service, gRPC, metrics).
SCAN_PORTS: Final = 5
_L4: Final = ("TCP", "UDP", "SCTP")
_MAX_PORTS: Final = 40  # CRD limit per toPorts[].ports and per icmps[].fields
#: (protocol, first port, last port); ICMP types as (family, type, type).
PortRange = tuple[str, int, int]
#: Offending ports of one peer: ranges to deny, or None for every port.
Denied = tuple[PortRange, ...] | None


@dataclass(frozen=True, slots=True)
class Containment:
    """A proposed change: ``policy`` is the whole policy after it, ``patch`` the RFC 6902 patch
    from ``current`` (None when no current policy was given). ``identity`` is the workload the
    policy selects (the attacker when the anomaly's subject is its victim); ``warnings`` what
    normal traffic of ``flows`` it would drop (empty without flows)."""

    action: str  # deny, dns, quarantine
    policy: dict[str, Any]
    patch: list[dict[str, Any]] | None
    notes: tuple[str, ...]
    identity: str = ""
    warnings: tuple[str, ...] = ()


def containment(
    anomaly: AnomalyRecord,
    current: Mapping[str, Any] | None = None,
    *,
    selectors: Mapping[str, Mapping[str, str]] | None = None,
    known_names: Iterable[str] = (),
    normal: NormalEdges | None = None,
    flows: Iterable[Any] | None = None,
    current_for: Callable[[str], Mapping[str, Any] | None] | None = None,
) -> Containment:
    """Choose and build the containment change for ``anomaly``.

    ``current`` is the policy of the anomaly's workload; when the containment is for another
    workload (the attacker), ``current_for(identity)`` gives that one's (none without it).
    ``selectors`` maps workload peers (``namespace/workload``) to their stable labels
    (:meth:`~netwarden.remediation.propose.Proposer.selectors`; learned from ``flows`` when not
    given); a peer missing there is selected by ``k8s:app=<workload>``. ``known_names`` adds
    names the workload may still resolve. ``normal`` holds the edges never to deny; ``flows``
    (recent flows, the anomaly's included) show everything the anomaly did.
    Raises :class:`ValueError` when there is nothing to deny.
    """
    flow_list: list[Any] | RecentFlows | None = (
        flows if isinstance(flows, RecentFlows) or flows is None else list(flows)
    )
    features = {r.feature.split("_", 1)[1] for r in anomaly.reasons if "_" in r.feature}
    side = _primary_side(anomaly)
    # DNS only when the workload's own egress stands out: a scan victim whose lookups also
    # moved a little (its ingress weighs most) is answered at its attacker, not in its DNS.
    dns = side == "egress" and bool(features & set(_DNS_FEATURES))
    if selectors is None and flow_list:
        selectors = Proposer().add_all(flow_list).selectors()
    selectors = selectors or {}
    notes: list[str] = []
    evidence = _evidence(anomaly, side, flow_list)
    own_spec = current.get("spec") if current is not None else None
    target, tside, peers = _target(anomaly, side, evidence, normal, own_spec, notes)
    if target != anomaly.identity:
        current = current_for(target) if current_for is not None else None
        notes.insert(
            0,
            f"{anomaly.identity} is the target of this traffic, not its source: the source "
            f"{target} is contained, and {anomaly.identity} keeps its normal clients",
        )
    base = copy.deepcopy(dict(current)) if current is not None else _standalone(anomaly, target)
    spec = base.setdefault("spec", {})
    if current is None and selectors.get(target):
        spec["endpointSelector"] = {"matchLabels": dict(sorted(selectors[target].items()))}
    offending = _offending(
        target, tside, peers, normal, spec if current is not None else None, notes
    )
    pairs = sum(len(ports) for ports in peers.values())  # what it did, not the rules for it
    known = (normal is not None and normal.knows(target)) or current is not None
    if dns:
        action = "dns"
        names = [*known_names, *(normal.names.get(target, ()) if normal is not None else ())]
        _restrict_dns(spec, anomaly, names, notes)
        if offending:
            _deny(spec, tside, offending, target, selectors, notes)
    elif (
        tside == "egress"
        and target == anomaly.identity
        and features & set(_STORM_FEATURES)
        and (len(offending) >= QUARANTINE_PEERS or pairs >= QUARANTINE_PAIRS)
        and not known
    ):
        action = "quarantine"
        _quarantine(spec, notes)
        notes.append("nothing is known to be normal for it, so nothing normal is cut")
    else:
        action = "deny"
        if not offending:
            why = "; ".join(notes) or "no offending peer could be named from its examples"
            raise ValueError(
                f"nothing to contain for anomaly {anomaly.id} of {anomaly.identity}: {why}"
            )
        _deny(spec, tside, offending, target, selectors, notes)
    check_policy(base)
    patch = jsonpatch.make_patch(dict(current), base).patch if current is not None else None
    warnings: tuple[str, ...] = ()
    if flow_list:
        attack = _AttackFlows(anomaly, target, tside, offending, action, normal)
        # A policy selecting ``target`` can only drop flows from or to it.
        mine = (
            flow_list.of(target).flows
            if isinstance(flow_list, RecentFlows)
            else [f for f in flow_list if attack.involves(f)]
        )
        warnings = drop_warnings(base, mine, current=current, part_of_anomaly=attack)
    return Containment(action, base, patch, tuple(notes), target, warnings)


#: Keys of a rule that say which ports it is about; what is left says which peers.
_PORT_KEYS: Final = ("toPorts", "icmps")


def peer_rules(policy: Mapping[str, Any]) -> frozenset[str]:
    """What ``policy`` says about peers, one item per rule: the peer part of each deny rule
    (its ports left out) and each allow rule whole, as canonical JSON with its section.

    Two containments of one incident that name the same peers are one decision for a reviewer
    (a scan that went on to more ports of the same hosts); one naming a peer the other does not
    (an exfiltration after a lateral movement) is another."""
    spec = policy.get("spec") or {}
    out: set[str] = set()
    for section in ("egressDeny", "ingressDeny", "egress", "ingress"):
        deny = section.endswith("Deny")
        for rule in spec.get(section) or ():
            part = {k: v for k, v in rule.items() if not (deny and k in _PORT_KEYS)}
            out.add(section + orjson.dumps(part, option=orjson.OPT_SORT_KEYS).decode())
    return frozenset(out)


def _primary_side(anomaly: AnomalyRecord) -> str:
    """The side whose reasons weigh most: who did the unusual thing."""
    weight: dict[str, float] = defaultdict(float)
    for reason in anomaly.reasons:
        side = reason.feature.split("_", 1)[0]
        if side in ("egress", "ingress"):
            weight[side] += max(float(reason.contribution), 0.0) or 1e-9
    if not weight:
        return "egress"
    return max(("egress", "ingress"), key=lambda s: weight.get(s, 0.0))


def _standalone(anomaly: AnomalyRecord, target: str) -> dict[str, Any]:
    namespace, _, workload = target.partition("/")
    what = (
        f"netwarden containment of anomaly {anomaly.id}: {anomaly.summary}"
        if target == anomaly.identity
        else f"netwarden containment of {target}, the source of anomaly {anomaly.id} of "
        f"{anomaly.identity}: {anomaly.summary}"
    )
    return {
        "apiVersion": API_VERSION,
        "kind": "CiliumNetworkPolicy",
        "metadata": {
            "name": policy_name(workload, f"containment-{anomaly.id}"),
            "namespace": namespace,
            "labels": dict(MANAGED_BY),
            "annotations": {
                "netwarden.io/identity": target,
                "netwarden.io/anomaly": str(anomaly.id),
            },
        },
        "spec": {
            "description": what[:1000],
            "endpointSelector": {"matchLabels": {"k8s:app": workload}},
            # Only add restrictions: other policies keep deciding what is allowed.
            "enableDefaultDeny": {"egress": False, "ingress": False},
        },
    }


# -- offending peers ----------------------------------------------------------------------------


def _peer_ref(key: str) -> PeerRef | None:
    if key.startswith("world:"):
        ip = key.split(":", 1)[1]
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            return PeerRef("entities", "world")
        return PeerRef("cidr", ip)
    if key.startswith("reserved:"):
        name = key.split(":", 1)[1]
        name = "world" if name.startswith("world") else name
        return PeerRef("entities", name) if name in _OUTSIDE_CLUSTER else None
    if "/" in key and not key.startswith("peer:"):
        return PeerRef("endpoints", key)
    return None  # an unnamed peer hash: nothing to select it by


def _port(text: str) -> Port | None:
    proto, _, number = text.partition("/")
    if proto in ("TCP", "UDP", "SCTP") and number.isdigit():
        return (proto, int(number))
    return None


def _is_workload(key: str) -> bool:
    return "/" in key and not key.startswith(("world:", "reserved:", "peer:"))


def _evidence(
    anomaly: AnomalyRecord, side: str, flows: list[Any] | RecentFlows | None
) -> dict[str, dict[Port, int]]:
    """Peer key -> port -> flows of ``side`` during the anomaly: from ``flows`` when they cover
    it (everything it did), else from its examples (the busiest pairs only)."""
    if flows:
        found = activity(
            flows, anomaly.identity, side, anomaly.first_window_start, anomaly.last_window_end
        )
        if found:
            return found
    data = (anomaly.examples or {}).get(side) or {}
    out: dict[str, dict[Port, int]] = defaultdict(dict)
    for pair in data.get("to" if side == "egress" else "from") or ():
        peer = str(pair.get("peer", ""))
        port = _port(str(pair.get("port", ""))) or ("", 0)
        out[peer][port] = out[peer].get(port, 0) + int(pair.get("flows") or 1)
    return dict(out)


def _not_normal(
    normal: NormalEdges | None, identity: str, side: str, peer: str, ports: Iterable[Port]
) -> set[Port]:
    if normal is None:
        return set(ports)
    known = normal.edge_ports(identity, side, peer)
    if known is None:
        return set(ports)
    if known == EVERY_PORT:
        return set()
    return {p for p in ports if p not in known}


def _target(
    anomaly: AnomalyRecord,
    side: str,
    evidence: Mapping[str, Mapping[Port, int]],
    normal: NormalEdges | None,
    spec: Mapping[str, Any] | None,
    notes: list[str],
) -> tuple[str, str, dict[str, dict[Port, int]]]:
    """(identity to contain, its side, peer key -> port -> flows of that side).

    On the ingress side the subject is on the receiving end: of the workload sources on edges
    that are not normal (neither in ``normal`` nor allowed by the subject's policy ``spec``), the
    one on the most distinct ports (a scan), then with the most flows, is contained at its egress
    (one policy selects one workload: other sources are named in the notes, their own anomalies
    contain them); sources outside the cluster, which no endpoint selector selects, are denied
    at the subject's ingress."""
    subject = anomaly.identity
    if side == "egress":
        return subject, "egress", {k: dict(v) for k, v in evidence.items()}
    weight: dict[str, tuple[int, int]] = {}
    for peer, ports in evidence.items():
        ref = _peer_ref(peer)
        if not _is_workload(peer) or peer == subject or ref is None:
            continue
        bad = _not_normal(normal, subject, "ingress", peer, ports)
        if spec is not None:
            bad = {p for p in bad if not (p[0] and _allowed(spec, "ingress", ref, p))}
        if bad:
            weight[peer] = (len(bad), sum(ports[p] for p in bad))
    if weight:
        attacker, *others = sorted(weight, key=lambda k: (-weight[k][0], -weight[k][1], k))
        if others:
            notes.append(
                f"other sources of traffic to {subject} on edges not known to be normal, not "
                "contained here: " + ", ".join(others[:10])
            )
        return attacker, "egress", {subject: dict(evidence[attacker])}
    outside = {k: dict(v) for k, v in evidence.items() if not _is_workload(k)}
    if not outside and evidence:
        notes.append(
            f"every workload that sent traffic to {subject} during the anomaly did so on "
            f"edges seen as normal ({', '.join(sorted(evidence)[:10])})"
        )
    return subject, "ingress", outside


def _offending(
    target: str,
    side: str,
    peers: Mapping[str, Mapping[Port, int]],
    normal: NormalEdges | None,
    spec: Mapping[str, Any] | None,
    notes: list[str],
) -> dict[PeerRef, Denied]:
    """What to deny of ``side`` of ``target``, per peer: port ranges, or None for all ports.

    Never a normal edge (``normal``, or what ``spec`` allows); DNS lookups to kube-dns are never
    offending here."""
    out: dict[PeerRef, Denied] = {}
    left: list[str] = []
    for key, counts in sorted(peers.items()):
        peer = _peer_ref(key)
        if peer is None:
            left.append(f"{key} (nothing stable to select it by)")
            continue
        ports = set(counts)
        if peer.value.startswith("kube-system/"):
            ports = {p for p in ports if p[1] != 53 or p[0] not in ("UDP", "TCP")}
        known = normal.edge_ports(target, side, key) if normal is not None else None
        if spec is not None:
            if _allowed(spec, side, peer, None):
                known = EVERY_PORT
            elif known != EVERY_PORT:
                allowed = {p for p in ports if p[0] and _allowed(spec, side, peer, p)}
                if allowed:
                    known = frozenset(allowed | set(known or ()))
        if known == EVERY_PORT:
            left.append(f"{key} (a normal peer, on ports unknown or all allowed)")
            continue
        bad = {p for p in ports if known is None or (p[0] and p not in known)}
        if not bad:
            left.append(f"{key} (only on its normal ports)")
            continue
        if len(bad) <= SCAN_PORTS:  # a few ports: exactly those, for the reviewer to check
            out[peer] = tuple(sorted((proto, n, n) for proto, n in bad if proto)) or None
        else:  # a scan: cover it whole (its next ports too), around any normal port
            out[peer] = None if known is None else _cover(bad, known)
        if out[peer] == ():
            del out[peer]
    if left:
        notes.append(
            "left alone: "
            + ", ".join(left[:10])
            + (f" and {len(left) - 10} more" if len(left) > 10 else "")
        )
    return out


def _cover(bad: set[Port], normal: frozenset[Port]) -> tuple[PortRange, ...]:
    """Ranges covering the ``bad`` ports of each protocol, split at the ``normal`` ones, so a
    scan is covered whole (and its next ports too) while every normal port stays open."""
    out: list[PortRange] = []
    for proto in _L4:
        ports = sorted(p for q, p in bad if q == proto and p > 0)
        if not ports:
            continue
        fences = sorted(p for q, p in normal if q in (proto, "ANY"))
        group: list[int] = []
        for port in ports:
            if group and any(group[-1] < f < port for f in fences):
                out.append((proto, group[0], group[-1]))
                group = []
            group.append(port)
        out.append((proto, group[0], group[-1]))
    for proto, value in sorted(bad):
        if proto in ("ICMPv4", "ICMPv6"):
            out.append((proto, value, value))
    return tuple(out)


def _allowed(spec: Mapping[str, Any], side: str, peer: PeerRef, port: Port | None) -> bool:
    """Whether an allow rule of ``spec`` names this peer (structurally) and port."""
    to = side == "egress"
    for rule in spec.get(side) or ():
        if not _rule_has_port(rule, port):
            continue
        if peer.kind == "entities" and peer.value in (
            rule.get("toEntities" if to else "fromEntities") or ()
        ):
            return True
        if peer.kind == "cidr":
            for item in rule.get("toCIDRSet" if to else "fromCIDRSet") or ():
                if "cidr" in item and ipaddress.ip_address(peer.value) in ipaddress.ip_network(
                    item["cidr"]
                ):
                    return True
        if peer.kind == "endpoints":
            ns, _, workload = peer.value.partition("/")
            for sel in rule.get("toEndpoints" if to else "fromEndpoints") or ():
                labels = (sel or {}).get("matchLabels") or {}
                if labels.get(NS_KEY, ns) == ns and workload in {
                    str(v) for k, v in labels.items() if k != NS_KEY
                }:
                    return True
    return False


def _rule_has_port(rule: Mapping[str, Any], port: Port | None) -> bool:
    blocks = rule.get("toPorts")
    if not blocks:
        return True
    if port is None:
        return False
    for block in blocks:
        for item in block.get("ports") or ():
            proto = item.get("protocol", "ANY")
            if str(item.get("port")) == str(port[1]) and proto in (port[0], "ANY"):
                return True
    return False


# -- the three changes --------------------------------------------------------------------------


def _deny(
    spec: dict[str, Any],
    side: str,
    offending: Mapping[PeerRef, Denied],
    target: str,
    selectors: Mapping[str, Mapping[str, str]],
    notes: list[str],
) -> None:
    """``{side}Deny`` rules: one per (peer kind, denied ports), ports as ``endPort`` ranges."""
    namespace = target.split("/", 1)[0]
    groups: dict[tuple[str, Denied], list[PeerRef]] = defaultdict(list)
    for peer, denied in offending.items():
        groups[(peer.kind, denied)].append(peer)
    sel = {
        p.value: dict(selectors.get(p.value) or {"k8s:app": p.value.split("/", 1)[1]})
        for p in offending
        if p.kind == "endpoints"
    }
    rules: list[dict[str, Any]] = []
    for (_, denied), members in sorted(groups.items(), key=lambda kv: sorted(kv[1])):
        (l3,) = rules_for({p: {("", 0)} for p in members}, side, selectors=sel, namespace=namespace)
        for part in _port_blocks(denied):
            rules.append({**l3, **part})
    spec.setdefault(f"{side}Deny", []).extend(rules)
    shown = ", ".join(
        f"{p.value} {_ranges_text(denied)}" for p, denied in sorted(offending.items())
    )
    notes.append(f"deny {side} {'to' if side == 'egress' else 'from'} {shown}")


def _port_blocks(denied: Denied) -> list[dict[str, Any]]:
    """The port part of deny rules: nothing (all ports), ``toPorts`` ranges and/or ``icmps``
    (never both in one rule: Cilium refuses that)."""
    if denied is None:
        return [{}]
    items = [
        {"port": str(lo), "protocol": proto, **({"endPort": hi} if hi > lo else {})}
        for proto, lo, hi in denied
        if proto in _L4
    ]
    fields = [
        {"type": lo, "family": "IPv6" if proto == "ICMPv6" else "IPv4"}
        for proto, lo, _ in denied
        if proto not in _L4
    ]
    out: list[dict[str, Any]] = []
    if items:
        out.append(
            {
                "toPorts": [
                    {"ports": items[i : i + _MAX_PORTS]} for i in range(0, len(items), _MAX_PORTS)
                ]
            }
        )
    if fields:
        out.append(
            {
                "icmps": [
                    {"fields": fields[i : i + _MAX_PORTS]}
                    for i in range(0, len(fields), _MAX_PORTS)
                ]
            }
        )
    return out


def _ranges_text(denied: Denied) -> str:
    if denied is None:
        return "all ports"
    return "/".join(f"{p}/{lo}" + (f"-{hi}" if hi > lo else "") for p, lo, hi in denied)


class _AttackFlows:
    """Whether a flow is part of the anomaly: ``target``'s ``side`` to a contained peer (any
    peer for a quarantine) on an edge that is not normal; without normal edges, only during the
    anomaly. Everything else a containment drops is normal traffic it should not."""

    def __init__(
        self,
        anomaly: AnomalyRecord,
        target: str,
        side: str,
        offending: Mapping[PeerRef, Denied],
        action: str,
        normal: NormalEdges | None,
    ) -> None:
        self.start, self.end = anomaly.first_window_start, anomaly.last_window_end
        self.target, self.side, self.action, self.normal = target, side, action, normal
        self.peers = {p.value for p in offending}
        self.resolver = IdentityResolver()

    def involves(self, flow: Any) -> bool:
        src, _, dst, _ = self.resolver.ends(flow)
        return self.target in (src and src.id, dst and dst.id)

    def __call__(self, flow: Any) -> bool:
        src, src_peer, dst, dst_peer = self.resolver.ends(flow)
        own, peer = (src, dst_peer) if self.side == "egress" else (dst, src_peer)
        if own is None or own.id != self.target:
            return False
        ref = _peer_ref(peer.key)
        if self.action != "quarantine" and (ref is None or ref.value not in self.peers):
            return False
        if self.normal is None:
            t = getattr(flow, "time", None)
            return t is not None and self.start <= t < self.end
        known = self.normal.edge_ports(self.target, self.side, peer.key)
        if known is None:
            return True
        l4 = l4_key(flow)
        return known != EVERY_PORT and (l4.protocol, l4.port) not in known


def _quarantine(spec: dict[str, Any], notes: list[str]) -> None:
    spec["egressDeny"] = [
        {"toEntities": list(_OUTSIDE_CLUSTER)},
        {
            "toEndpoints": [
                {
                    "matchExpressions": [
                        {"key": NS_KEY, "operator": "Exists"},
                        {
                            "key": "k8s:k8s-app",
                            "operator": "NotIn",
                            "values": [DNS_SELECTOR["k8s:k8s-app"]],
                        },
                    ]
                }
            ]
        },
    ]
    spec["ingressDeny"] = [{"fromEntities": ["all"]}]
    egress = [r for r in spec.get("egress") or () if _is_dns_rule(r)]
    spec["egress"] = egress or [dns_rule(())]
    notes.append(
        "quarantine: every egress is denied except DNS to kube-dns, and every ingress is "
        "denied (deny rules win over any allow rule)"
    )


def _is_dns_rule(rule: Mapping[str, Any]) -> bool:
    return any(
        (sel or {}).get("matchLabels") == DNS_SELECTOR for sel in rule.get("toEndpoints") or ()
    )


def _tunnel_domains(names: Iterable[str]) -> set[str]:
    """Parent domains of the suspicious names (the tunnel hides data in the first labels)."""
    parents: dict[str, int] = defaultdict(int)
    for name in names:
        name = name.lower().rstrip(".")
        parent = name.partition(".")[2]
        if parent.count(".") >= 1:
            parents[parent] += 1
    return {p for p, n in parents.items() if n >= 2} or set(parents)


def _restrict_dns(
    spec: dict[str, Any], anomaly: AnomalyRecord, known_names: Iterable[str], notes: list[str]
) -> None:
    egress_data = (anomaly.examples or {}).get("egress") or {}
    known = sorted({n.lower().rstrip(".") for n in known_names if n})
    # A name the workload resolves normally is never refused, nor is a domain above one (the
    # window's sample names mix normal lookups, search-domain expansions included, with the bad).
    suspicious = [
        n for n in egress_data.get("dns_names") or () if n.lower().rstrip(".") not in known
    ]
    bad = {
        d
        for d in _tunnel_domains(suspicious)
        if not any(n == d or n.endswith("." + d) for n in known)
    }
    compiled = [fqdn_pattern(f"*.{d}") for d in bad]

    def ok(entry: Mapping[str, str]) -> bool:
        value = (entry.get("matchName") or entry.get("matchPattern") or "").lower().rstrip(".")
        if value == "*" or any(value == d or value.endswith("." + d) for d in bad):
            return False
        return not any(p.fullmatch(value + ".") for p in compiled)

    rules = list(spec.get("egress") or ())
    current = [r for r in rules if _is_dns_rule(r)]
    names: list[dict[str, str]] = []
    for rule in current:
        for block in rule.get("toPorts") or ():
            names += [e for e in ((block.get("rules") or {}).get("dns") or ()) if ok(e)]
    extra = [{"matchName": n} for n in known]
    allowed = sorted({tuple(e.items()) for e in [*names, *extra] if ok(e)})
    new_rule = dns_rule(())
    new_rule["toPorts"][0]["rules"]["dns"] = [dict(e) for e in allowed]
    if not allowed:
        # An empty list would mean "any name": allow one that cannot be resolved instead.
        new_rule["toPorts"][0]["rules"]["dns"] = [{"matchName": "none.invalid"}]
    if current:
        index = rules.index(current[0])
        spec["egress"] = [r for r in rules if not _is_dns_rule(r)]
        spec["egress"].insert(index, new_rule)
    else:
        spec["egress"] = [new_rule, *rules]
    domains = ", ".join(sorted(bad)) or "the anomaly's names"
    notes.append(
        f"DNS lookups are restricted to the workload's {len(allowed)} known names; lookups "
        f"under {domains} are refused by the DNS proxy. Cilium has no DNS deny rule, so "
        "this is an allow-list: it holds only while no other policy allows more names."
    )

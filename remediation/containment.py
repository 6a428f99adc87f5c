"""A targeted containment change for one anomaly, as a full policy and a JSON patch.

The change is chosen from what the anomaly shows (its reasons and example flows):

* **dns** (DNS-name reasons: many/new/long/high-entropy names, NXDOMAIN share): Cilium has no DNS
  deny rule, so the workload's kube-dns rule is rewritten to allow only its known names (the
  current policy's names, minus the tunnelled domain); the DNS proxy refuses every other lookup.
* **quarantine** (drops, unanswered SYNs or resets across many peers or ports: a drop storm or a
  scan): deny rules for all egress except DNS to kube-dns, and for all ingress. Deny rules win
  over any allow, so this holds whatever other policies allow.
* **deny** (otherwise): ``egressDeny``/``ingressDeny`` for the offending peers and ports from the
  anomaly's examples; with a current policy, peers and ports it already allows are kept out.

With ``current`` (the workload's policy, e.g. its baseline) the result is that policy with the
change applied plus an RFC 6902 patch from it; without, a standalone policy selecting the
workload that only adds restrictions (``enableDefaultDeny`` off, so it puts nothing else in
default deny). Every result is validated with :func:`~netwarden.remediation.schema.check_policy`.
"""

from __future__ import annotations

import copy
import ipaddress
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import jsonpatch

from netwarden.detector.store import AnomalyRecord
from netwarden.remediation.matcher import fqdn_pattern
from netwarden.remediation.propose import (
    DNS_SELECTOR,
    MANAGED_BY,
    NS_KEY,
    PeerRef,
    Port,
    dns_rule,
    policy_name,
    rules_for,
)
from netwarden.remediation.schema import API_VERSION, check_policy

__all__ = ["Containment", "containment"]

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


@dataclass(frozen=True, slots=True)
class Containment:
    """A proposed change: ``policy`` is the whole policy after it, ``patch`` the RFC 6902 patch
    from ``current`` (None when no current policy was given)."""

    action: str  # deny, dns, quarantine
    policy: dict[str, Any]
    patch: list[dict[str, Any]] | None
    notes: tuple[str, ...]


def containment(
    anomaly: AnomalyRecord,
    current: Mapping[str, Any] | None = None,
    *,
    selectors: Mapping[str, Mapping[str, str]] | None = None,
    known_names: Iterable[str] = (),
) -> Containment:
    """Choose and build the containment change for ``anomaly``.

    ``selectors`` maps workload peers (``namespace/workload``) to their stable labels
    (:meth:`~netwarden.remediation.propose.Proposer.selectors`); a peer missing there is selected
    by ``k8s:app=<workload>``. ``known_names`` adds names the workload may still resolve.
    """
    sides = _sides(anomaly)
    features = {r.feature.split("_", 1)[1] for r in anomaly.reasons if "_" in r.feature}
    base = copy.deepcopy(dict(current)) if current is not None else _standalone(anomaly)
    spec = base.setdefault("spec", {})
    notes: list[str] = []
    offending = {
        side: _offending(anomaly, side, spec if current is not None else None) for side in sides
    }
    pairs = sum(len(ports) or 1 for side in offending.values() for ports in side.values())
    peers = sum(len(side) for side in offending.values())
    if features & set(_DNS_FEATURES) and "egress" in sides:
        action = "dns"
        _restrict_dns(spec, anomaly, known_names, notes)
    elif features & set(_STORM_FEATURES) and (
        peers >= QUARANTINE_PEERS or pairs >= QUARANTINE_PAIRS
    ):
        action = "quarantine"
        _quarantine(spec, notes)
    else:
        action = "deny"
        _deny(spec, offending, anomaly, selectors or {}, notes)
    check_policy(base)
    patch = jsonpatch.make_patch(dict(current), base).patch if current is not None else None
    return Containment(action, base, patch, tuple(notes))


def _sides(anomaly: AnomalyRecord) -> list[str]:
    sides = []
    for reason in anomaly.reasons:
        side = reason.feature.split("_", 1)[0]
        if side in ("egress", "ingress") and side not in sides:
            sides.append(side)
    return sides or ["egress"]


def _standalone(anomaly: AnomalyRecord) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "CiliumNetworkPolicy",
        "metadata": {
            "name": policy_name(anomaly.workload, f"containment-{anomaly.id}"),
            "namespace": anomaly.namespace,
            "labels": dict(MANAGED_BY),
            "annotations": {
                "netwarden.io/identity": anomaly.identity,
                "netwarden.io/anomaly": str(anomaly.id),
            },
        },
        "spec": {
            "description": f"netwarden containment of anomaly {anomaly.id}: {anomaly.summary}"[
                :1000
            ],
            "endpointSelector": {"matchLabels": {"k8s:app": anomaly.workload}},
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


def _offending(
    anomaly: AnomalyRecord, side: str, spec: Mapping[str, Any] | None
) -> dict[PeerRef, set[Port]]:
    """Example peers and ports of ``side`` that ``spec`` does not already allow (all of them
    without a spec); DNS lookups to kube-dns are never offending here."""
    data = (anomaly.examples or {}).get(side) or {}
    out: dict[PeerRef, set[Port]] = defaultdict(set)
    for pair in data.get("to" if side == "egress" else "from") or ():
        peer = _peer_ref(str(pair.get("peer", "")))
        port = _port(str(pair.get("port", "")))
        if peer is None or (
            port is not None and port[1] == 53 and peer.value.startswith("kube-system/")
        ):
            continue
        if spec is not None and _allowed(spec, side, peer, port):
            continue
        if port is None:
            out.setdefault(peer, set())
        else:
            out[peer].add(port)
    return dict(out)


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
    offending: Mapping[str, Mapping[PeerRef, set[Port]]],
    anomaly: AnomalyRecord,
    selectors: Mapping[str, Mapping[str, str]],
    notes: list[str],
) -> None:
    for side, peers in offending.items():
        if not peers:
            continue
        sel = {
            p.value: dict(selectors.get(p.value) or {"k8s:app": p.value.split("/", 1)[1]})
            for p in peers
            if p.kind == "endpoints"
        }
        rules = rules_for(peers, side, selectors=sel, namespace=anomaly.namespace)
        spec.setdefault(f"{side}Deny", []).extend(rules)
        shown = ", ".join(
            f"{p.value} {'/'.join(f'{a}/{b}' for a, b in sorted(ports)) or 'all ports'}"
            for p, ports in sorted(peers.items())
        )
        notes.append(f"deny {side} {'to' if side == 'egress' else 'from'} {shown}")
    if not any(offending.values()):
        notes.append(
            "no offending peer could be named from the anomaly's examples; nothing to deny"
        )
        spec.setdefault("egressDeny", [])
    if not any(spec.get(k) for k in ("ingress", "ingressDeny", "egress", "egressDeny")):
        # A valid policy needs a rule; a deny rule that matches nothing changes nothing.
        spec["egressDeny"] = [{"toCIDRSet": [{"cidr": "0.0.0.0/32"}]}]


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
    bad = _tunnel_domains(egress_data.get("dns_names") or ())
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
    extra = [{"matchName": n.lower().rstrip(".")} for n in known_names]
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

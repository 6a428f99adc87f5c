"""The policy amendment an accepted change needs: its edges, allowed, in each workload's policy.

Accepting a change (:mod:`netwarden.detector.change_store`) teaches the detector that its edges
are normal; the cluster's policies must allow them too, or a least-privilege baseline applied
earlier drops the new traffic. So every workload the change touched gets one proposal (author
``netwarden``, reviewed like any other) that amends its policy with the change's edges, built
the way :mod:`netwarden.remediation.propose` builds a baseline:

* its **egress** edges as ``egress`` rules: ``toEndpoints`` for workloads (their stable labels,
  the namespace key for another namespace), ``toEntities`` for reserved peers, ``toFQDNs`` for
  named internet peers (and their names in the workload's kube-dns rule, which the DNS proxy
  needs to see), ``toCIDRSet`` for unnamed networks, each with its ``toPorts``; a lookup on
  kube-dns's port 53 is the kube-dns rule itself, never a plain allow (that would bypass the
  DNS proxy that ``toFQDNs`` relies on);
* its **ingress** edges as ``ingress`` rules: ``fromEndpoints``/``fromEntities``/
  ``fromCIDRSet`` with ``toPorts``.

**Which policy.** The workload's baseline (``<workload>-baseline``) as it is now (the cluster's,
or netwarden's record of what it applied): the proposal is that policy with the rules added
(rules it already has are not repeated; a locked-down direction's empty rule ``{}`` gives way
to them), plus the RFC 6902 patch. A workload without a baseline gets a policy of its own,
``<workload>-change-<id>``, with ``enableDefaultDeny`` off for both directions: it only adds
allows, so applying it can never cut traffic, and it keeps the change allowed once a baseline
is applied. Every proposal passes the CRD validation and the target check of
:meth:`~netwarden.remediation.proposals.ProposalStore.create`; peers nothing stable can select
(an unnamed peer) are left out and named in the proposal's note.
"""

from __future__ import annotations

import copy
import ipaddress
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import jsonpatch

from netwarden.detector.change_store import ChangeRecord
from netwarden.remediation.apply import ApplyError, PolicyApplier, restorable
from netwarden.remediation.matcher import fqdn_pattern
from netwarden.remediation.proposals import (
    BASELINE,
    ProposalRecord,
    ProposalStore,
    TargetMismatch,
    built_for,
)
from netwarden.remediation.propose import (
    DNS_SELECTOR,
    MANAGED_BY,
    PeerRef,
    Port,
    dns_rule,
    policy_name,
    rules_for,
)
from netwarden.remediation.schema import API_VERSION
from netwarden.remediation.target import IDENTITY_ANNOTATION

__all__ = ["Amendment", "amendment", "current_baseline", "propose_amendments"]

_PROTOCOLS: Final = {"TCP", "UDP", "SCTP", "ICMPv4", "ICMPv6"}
#: Reserved identities a rule can name, as the entity it names them by.
_ENTITIES: Final = {
    "host": "host",
    "remote-node": "remote-node",
    "kube-apiserver": "kube-apiserver",
    "health": "health",
    "init": "init",
    "ingress": "ingress",
    "unmanaged": "unmanaged",
    "world": "world",
    "world-ipv4": "world",
    "world-ipv6": "world",
}
_DNS_WORKLOADS: Final = frozenset({"kube-system/kube-dns", "kube-system/coredns"})
#: (policy or None, where it came from) of a workload's baseline now.
CurrentLookup = Callable[[str], tuple[Mapping[str, Any] | None, str]]


@dataclass(frozen=True, slots=True)
class Amendment:
    """The policy one workload needs for a change: ``policy`` (the whole policy after the
    amendment), ``patch`` from ``current`` (None for a new policy), ``notes`` for the
    reviewer (edges left out, and why), ``workload_labels`` the labels it selects the
    workload by (for the target check)."""

    identity: str
    policy: dict[str, Any]
    current: dict[str, Any] | None
    patch: list[dict[str, Any]] | None
    notes: tuple[str, ...]
    workload_labels: dict[str, str] | None


def _port(text: str) -> Port | None:
    """``TCP/443`` -> ("TCP", 443); "" (no ports: ICMP and others) -> ("", 0)."""
    if not text:
        return ("", 0)
    proto, _, number = text.partition("/")
    if proto in _PROTOCOLS and number.isdigit():
        return (proto, int(number))
    return None


def _peer(key: str) -> PeerRef | None:
    """How a rule names an edge memory peer (models.edges); None when nothing can."""
    if key.startswith("fqdn:"):
        return PeerRef("fqdns", key.removeprefix("fqdn:").rstrip(".").lower())
    if key.startswith("cidr:"):
        try:
            return PeerRef("cidr", str(ipaddress.ip_network(key.removeprefix("cidr:"))))
        except ValueError:
            return None
    if key.startswith("world:"):
        try:
            return PeerRef("cidr", str(ipaddress.ip_network(key.removeprefix("world:"))))
        except ValueError:
            return PeerRef("entities", "world")
    if key.startswith("reserved:"):
        entity = _ENTITIES.get(key.removeprefix("reserved:"))
        return PeerRef("entities", entity) if entity else None
    if "/" in key and not key.startswith("peer:"):
        return PeerRef("endpoints", key)
    return None


def _is_dns(peer: PeerRef, port: Port, selectors: Mapping[str, Mapping[str, str]]) -> bool:
    if peer.kind != "endpoints" or port not in (("UDP", 53), ("TCP", 53)):
        return False
    labels = selectors.get(peer.value) or {}
    return peer.value in _DNS_WORKLOADS or (
        peer.value.startswith("kube-system/") and labels.get("k8s:k8s-app") == "kube-dns"
    )


def _is_dns_rule(rule: Mapping[str, Any]) -> bool:
    return any(
        (sel or {}).get("matchLabels") == DNS_SELECTOR for sel in rule.get("toEndpoints") or ()
    )


def _allow_names(egress: list[dict[str, Any]], names: set[str], standalone: bool) -> None:
    """Let the workload's kube-dns rule allow lookups of ``names`` (a new rule when it has
    none: those names only, or every name for a policy that only adds allows)."""
    rules = [r for r in egress if _is_dns_rule(r)]
    if not rules:
        egress.insert(0, dns_rule(() if standalone else names))
        return
    entries: list[dict[str, str]] | None = None
    allowed: list[dict[str, str]] = []
    for rule in rules:
        for block in rule.get("toPorts") or ():
            dns = (block.get("rules") or {}).get("dns")
            if isinstance(dns, list):
                allowed += [e for e in dns if isinstance(e, dict)]
                entries = dns if entries is None else entries
    if entries is None:  # a plain allow to kube-dns: every lookup passes already
        return
    for name in sorted(names):
        if any(e.get("matchName", "").lower().rstrip(".") == name for e in allowed) or any(
            "matchPattern" in e and fqdn_pattern(e["matchPattern"]).match(name + ".")
            for e in allowed
        ):
            continue
        entries.append({"matchName": name})
        allowed.append({"matchName": name})


def _standalone(identity: str, change: ChangeRecord, labels: Mapping[str, str]) -> dict[str, Any]:
    namespace, _, workload = identity.partition("/")
    return {
        "apiVersion": API_VERSION,
        "kind": "CiliumNetworkPolicy",
        "metadata": {
            "name": policy_name(workload, f"change-{change.change_id.removeprefix('chg-')}"),
            "namespace": namespace,
            "labels": dict(MANAGED_BY),
            "annotations": {
                IDENTITY_ANNOTATION: identity,
                "netwarden.io/change": change.change_id,
            },
        },
        "spec": {
            "description": (
                f"netwarden: allows of accepted change {change.change_id} ({change.description})"
            )[:1000],
            "endpointSelector": {"matchLabels": dict(sorted(labels.items()))},
            # only allows: whatever else selects the workload keeps deciding the rest
            "enableDefaultDeny": {"egress": False, "ingress": False},
        },
    }


def _add_rules(spec: dict[str, Any], direction: str, rules: list[dict[str, Any]]) -> None:
    have = [r for r in spec.get(direction) or () if r != {}]
    for rule in rules:
        if rule not in have:
            have.append(rule)
    spec[direction] = have


def amendment(
    change: ChangeRecord,
    identity: str,
    *,
    current: Mapping[str, Any] | None,
    selectors: Mapping[str, Mapping[str, str]],
) -> Amendment | None:
    """The amendment of ``identity``'s policy (``current``: its baseline now, or None) with
    its edges in ``change``; None when none of them can be expressed. ``selectors`` maps
    workloads to their stable labels (:meth:`~netwarden.remediation.propose.Proposer.
    selectors`); a workload missing there is selected by ``k8s:app=<workload>``."""
    namespace, _, workload = identity.partition("/")
    notes: list[str] = []
    peers: dict[str, dict[PeerRef, set[Port]]] = {
        "egress": defaultdict(set),
        "ingress": defaultdict(set),
    }
    names: set[str] = set()
    uses_dns = False
    for e in change.edges:
        if e["identity"] != identity:
            continue
        peer, port = _peer(str(e["peer"])), _port(str(e["port"]))
        if peer is None or port is None:
            notes.append(f"left out {e['direction']} {e['peer']}: nothing stable names it")
            continue
        direction = "egress" if e["direction"] == "egress" else "ingress"
        if direction == "egress" and _is_dns(peer, port, selectors):
            uses_dns = True
            continue
        if direction == "egress" and peer.kind == "fqdns":
            names.add(peer.value)
        peers[direction][peer].add(port)
    if not any(peers.values()) and not uses_dns:
        return None
    sel = {
        p.value: dict(selectors.get(p.value) or {"k8s:app": p.value.split("/", 1)[1]})
        for side in peers.values()
        for p in side
        if p.kind == "endpoints"
    }
    before = dict(current) if current is not None else None
    if before is not None and not isinstance(before.get("spec"), Mapping):
        notes.append("its current policy has no single spec to amend: proposed as its own policy")
        before = None
    learned = dict(selectors.get(identity) or {}) or None
    if before is not None:
        base = copy.deepcopy(before)
    else:
        base = _standalone(identity, change, learned or {"k8s:app": workload})
    spec = base["spec"]
    for direction in ("egress", "ingress"):
        rules = rules_for(peers[direction], direction, selectors=sel, namespace=namespace)
        if rules:
            _add_rules(spec, direction, rules)
    if names or uses_dns:
        egress = [r for r in spec.get("egress") or () if r != {}]
        _allow_names(egress, names, standalone=before is None)
        spec["egress"] = egress
    patch = jsonpatch.make_patch(before, base).patch if before is not None else None
    labels = built_for(before, identity) or learned
    return Amendment(identity, base, before, patch, tuple(notes), labels)


def current_baseline(
    store: ProposalStore, applier: PolicyApplier | None, identity: str
) -> tuple[dict[str, Any] | None, str]:
    """``identity``'s baseline policy as it is now, and where that came from: the cluster's
    when there is an applier (and it answers), else the one netwarden last applied."""
    namespace, _, workload = identity.partition("/")
    name = policy_name(workload, "baseline")
    source = "current policy from netwarden's records"
    if applier is not None:
        try:
            live = applier.get(namespace, name)
        except ApplyError as exc:
            source = f"the cluster could not be read ({exc}); {source}"
        else:
            return (
                restorable(live) if live is not None else None
            ), "current policy from the cluster"
    record = store.latest_applied(namespace, name)
    return (record.policy if record is not None else None), source


def propose_amendments(
    store: ProposalStore,
    change: ChangeRecord,
    *,
    current: CurrentLookup,
    selectors: Mapping[str, Mapping[str, str]] | None = None,
    actor: str = "netwarden",
    identities: Iterable[str] | None = None,
) -> tuple[list[ProposalRecord], list[str]]:
    """One proposal per workload of ``change`` (or of ``identities``) amending its policy (see
    the module docstring), linked to the change in its note; returns the proposals and what
    could not be proposed, in words."""
    selectors = selectors or {}
    made: list[ProposalRecord] = []
    notes: list[str] = []
    wanted = sorted(
        {str(e["identity"]) for e in change.edges} if identities is None else set(identities)
    )
    for identity in wanted:
        if "/" not in identity or identity.startswith(("reserved:", "fqdn:", "cidr:", "peer:")):
            continue
        policy, source = current(identity)
        found = amendment(change, identity, current=policy, selectors=selectors)
        if found is None:
            notes.append(f"{identity}: no amendment: none of its edges can be named in a policy")
            continue
        what = (
            f"amends its baseline ({source})"
            if found.current is not None
            else "a policy of its own (no baseline applied), only adding allows"
        )
        note = f"amendment for accepted change {change.change_id} ({change.description}): {what}"
        if found.notes:
            note += "; " + "; ".join(found.notes)
        try:
            made.append(
                store.create(
                    kind=BASELINE,
                    identity=identity,
                    policy=found.policy,
                    patch=found.patch,
                    current=found.current,
                    actor=actor,
                    note=note,
                    workload_labels=found.workload_labels,
                )
            )
        except TargetMismatch as exc:
            notes.append(f"{identity}: no amendment: {exc}")
    return made, notes

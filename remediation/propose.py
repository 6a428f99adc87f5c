"""Least-privilege baseline CiliumNetworkPolicies learned from a workload's normal flows.

One policy per workload (replicas aggregated), selecting its pods by their *stable* labels and
allowing exactly the peers and ports it was seen using:

* **Subjects and peers** are named as :mod:`netwarden.ingest.identity` names them. Selectors use
  labels that every replica shares and that survive a rollout (``k8s:app``,
  ``app.kubernetes.io/name`` ...), never per-pod ones (``pod-template-hash``, pod names ...).
  A peer in another namespace gets ``k8s:io.kubernetes.pod.namespace``; the subject's own
  selector does not (a CNP's ``endpointSelector`` is pinned to its namespace anyway).
* **What counts**: only FORWARDED request flows (not replies, not drops: a drop is not "normal").
  A flow is evidence for its source's egress and its destination's ingress, as Cilium enforces it.
* **DNS**: lookups go to kube-dns on 53/UDP and 53/TCP through a ``rules.dns`` allow-list of the
  names the workload resolved (``matchName``; many names under one parent become one
  ``*.parent`` ``matchPattern``), which also feeds ``toFQDNs``.
* **Peers outside the cluster**: ``toFQDNs`` when the flow carries the peer's names, else
  ``toCIDRSet`` /32 (or /128); only when there are more such addresses than ``max_cidrs`` the
  peer cannot be narrowed and ``world`` is used. Reserved peers become entities; a peer labelled
  ``reserved:kube-apiserver`` is always the ``kube-apiserver`` entity, also when it carries
  ``reserved:world`` or a CIDR identity (an API server outside the cluster): Cilium does not
  reliably match CIDR rules against the API server's identity.
* **Small**: peers of one kind sharing the same port set share one rule (Cilium refuses rules
  that mix L3 kinds, so kinds stay apart); ports are sorted; output is deterministic.

Every policy is checked with :func:`netwarden.remediation.schema.check_policy` before it is
returned: an invalid proposal raises instead of being produced.
"""

from __future__ import annotations

import ipaddress
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import yaml

from netwarden.ingest.identity import IdentityResolver, Subject
from netwarden.ingest.selectors import label_list, parse_label
from netwarden.remediation.matcher import l4_key
from netwarden.remediation.schema import API_VERSION, check_policy

__all__ = [
    "DNS_SELECTOR",
    "PeerRef",
    "Proposer",
    "Skipped",
    "dns_rule",
    "policy_file_name",
    "policy_yaml",
    "propose_baselines",
    "rules_for",
    "stable_labels",
]

NS_KEY: Final = "k8s:io.kubernetes.pod.namespace"
#: How every proposal selects cluster DNS.
DNS_SELECTOR: Final[dict[str, str]] = {NS_KEY: "kube-system", "k8s:k8s-app": "kube-dns"}
DNS_PORTS: Final = (("UDP", 53), ("TCP", 53))
MANAGED_BY: Final = {"app.kubernetes.io/managed-by": "netwarden"}

#: Keys that name the application; when present they alone make the selector (a ``version`` or
#: ``tier`` label may change on rollout, these do not).
_APP_KEYS: Final = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app",
    "k8s-app",
    "name",
    "component",
)
#: Labels that differ between pods of one workload, or between runs/revisions of it.
_PER_POD_KEYS: Final = frozenset(
    {
        "pod-template-hash",
        "controller-revision-hash",
        "statefulset.kubernetes.io/pod-name",
        "pod-template-generation",
        "controller-uid",
        "batch.kubernetes.io/controller-uid",
        "job-name",
        "batch.kubernetes.io/job-name",
        "apps.kubernetes.io/pod-index",
        "batch.kubernetes.io/job-completion-index",
        "pod-index",
    }
)
_SERVICE_ACCOUNT: Final = "io.cilium.k8s.policy.serviceaccount"
_KUBE_APISERVER: Final = "reserved:kube-apiserver"
_CILIUM_PREFIX: Final = "io.cilium."
_NAMESPACE: Final = "io.kubernetes.pod.namespace"
#: Entities the CRD accepts, by the reserved identity name a flow carries.
_ENTITY: Final[dict[str, str]] = {
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
_MAX_PORTS: Final = 40  # CRD limit per toPorts[].ports and per icmps[].fields
_NAME_OK: Final = re.compile(r"[^a-z0-9.-]+")
_DNS_NAME: Final = re.compile(r"^([-a-zA-Z0-9_]+[.]?)+$")
_L4: Final = ("TCP", "UDP", "SCTP")
_ICMP: Final = ("ICMPv4", "ICMPv6")

#: (protocol, port-or-ICMP-type); ("", 0) means an L3-only peer (other protocols).
Port = tuple[str, int]


@dataclass(frozen=True, order=True, slots=True)
class PeerRef:
    """How a rule names one peer: ``kind`` is the rule field family, ``value`` its item.

    kinds: ``endpoints`` (value: subject id, resolved to a selector when building), ``entities``
    (entity name), ``fqdns`` (DNS name), ``cidr`` (IP address).
    """

    kind: str
    value: str


@dataclass(frozen=True, slots=True)
class Skipped:
    """A workload that got no policy, and why."""

    identity: str
    reason: str


@dataclass
class _Workload:
    subject: Subject
    flows: int = 0
    first: datetime | None = None
    last: datetime | None = None
    egress: dict[PeerRef, set[Port]] = field(default_factory=lambda: defaultdict(set))
    ingress: dict[PeerRef, set[Port]] = field(default_factory=lambda: defaultdict(set))
    dns_names: set[str] = field(default_factory=set)
    uses_dns: bool = False


def stable_labels(labels: Iterable[str]) -> dict[str, str]:
    """The labels of one pod that are the same for every pod of its workload, as selector keys.

    >>> stable_labels(["k8s:app=cart", "k8s:pod-template-hash=7d9f8b6c5d",
    ...                "k8s:io.kubernetes.pod.namespace=shop", "reserved:world"])
    {'k8s:app': 'cart'}
    """
    out: dict[str, str] = {}
    for text in labels:
        source, key, value = parse_label(text)
        if source != "k8s" or key in _PER_POD_KEYS or key == _NAMESPACE:
            continue
        if key.startswith(_CILIUM_PREFIX) and key != _SERVICE_ACCOUNT:
            continue
        out[f"k8s:{key}"] = value
    return out


def _selector_labels(common: Mapping[str, str]) -> dict[str, str]:
    """Narrow the labels all replicas share to the ones that identify the workload."""
    app = {k: v for k, v in common.items() if k.removeprefix("k8s:") in _APP_KEYS}
    if app:
        return app
    other = {k: v for k, v in common.items() if k != f"k8s:{_SERVICE_ACCOUNT}"}
    if other:
        return other
    return dict(common)  # the service account, or nothing


def _is_kube_dns(namespace: str, labels: Mapping[str, str]) -> bool:
    return namespace == "kube-system" and labels.get("k8s:k8s-app") == "kube-dns"


def _dns_name(name: str) -> str:
    return name.strip().lower().rstrip(".")


def _collapse(names: Iterable[str], min_for_pattern: int) -> list[dict[str, str]]:
    """``matchName`` per name; ``min_for_pattern`` or more names with one parent become
    ``*.parent`` (``*`` stays within one label, so nothing deeper is allowed)."""
    by_parent: dict[str, list[str]] = defaultdict(list)
    for name in sorted(set(names)):
        if _DNS_NAME.match(name):
            parent = name.partition(".")[2]
            by_parent[parent if parent.count(".") >= 1 else ""].append(name)
    out: list[dict[str, str]] = []
    for parent in sorted(by_parent):
        group = by_parent[parent]
        if parent and len(group) >= min_for_pattern:
            out.append({"matchPattern": f"*.{parent}"})
        else:
            out.extend({"matchName": n} for n in group)
    return sorted(out, key=lambda d: (next(iter(d.values())), next(iter(d))))


def dns_rule(names: Iterable[str], *, min_for_pattern: int = 6) -> dict[str, Any]:
    """Egress to kube-dns on 53/UDP and 53/TCP, allowing lookups of ``names`` only (all names
    when none is known: the DNS proxy must still see lookups for ``toFQDNs`` to work)."""
    dns = _collapse((_dns_name(n) for n in names), min_for_pattern) or [{"matchPattern": "*"}]
    return {
        "toEndpoints": [{"matchLabels": dict(DNS_SELECTOR)}],
        "toPorts": [
            {
                "ports": [{"port": str(port), "protocol": proto} for proto, port in DNS_PORTS],
                "rules": {"dns": dns},
            }
        ],
    }


def _port_sort(port: Port) -> tuple[int, str, int]:
    return (port[1], port[0], 0)


def _ports_blocks(ports: Iterable[Port]) -> dict[str, Any]:
    """``toPorts`` or ``icmps`` for one port set (never both: Cilium refuses that)."""
    ports = sorted(ports, key=_port_sort)
    if ports and ports[0][0] in _ICMP:
        fields = [
            {"type": t, "family": "IPv6" if proto == "ICMPv6" else "IPv4"} for proto, t in ports
        ]
        return {
            "icmps": [
                {"fields": fields[i : i + _MAX_PORTS]} for i in range(0, len(fields), _MAX_PORTS)
            ]
        }
    if not ports or ports[0][0] == "":
        return {}
    items = [
        {"port": str(port), "protocol": proto} if port else {"port": "0", "protocol": proto}
        for proto, port in ports
    ]
    return {
        "toPorts": [{"ports": items[i : i + _MAX_PORTS]} for i in range(0, len(items), _MAX_PORTS)]
    }


def _split_ports(ports: set[Port]) -> list[frozenset[Port]]:
    """One port set per rule family: L4 ports, ICMP types, L3-only."""
    l4 = frozenset(p for p in ports if p[0] in _L4)
    icmp = frozenset(p for p in ports if p[0] in _ICMP)
    other = frozenset(p for p in ports if p[0] not in _L4 and p[0] not in _ICMP)
    return [s for s in (l4, icmp, other) if s]


_KIND_ORDER: Final = {"endpoints": 0, "entities": 1, "fqdns": 2, "cidr": 3}


def rules_for(
    peers: Mapping[PeerRef, Iterable[Port]],
    direction: str,
    *,
    selectors: Mapping[str, dict[str, str]],
    namespace: str,
) -> list[dict[str, Any]]:
    """Rules (for ``egress``/``egressDeny`` when ``direction`` is ``"egress"``, else the ingress
    forms) allowing each peer its ports, one rule per (peer kind, port set).

    ``selectors`` maps endpoint peers (subject ids) to their stable labels; peers in another
    namespace than ``namespace`` get the namespace key. Endpoint peers without a selector are
    left out (nothing stable to select them by).
    """
    to = direction == "egress"
    groups: dict[tuple[str, frozenset[Port]], list[PeerRef]] = defaultdict(list)
    for peer, ports in peers.items():
        if peer.kind == "endpoints" and not selectors.get(peer.value):
            continue
        for part in _split_ports(set(ports)):
            groups[(peer.kind, part)].append(peer)
    rules = []
    for (kind, ports), members in groups.items():
        rule: dict[str, Any] = {}
        if kind == "endpoints":
            sels = []
            for peer in sorted(members):
                labels = dict(selectors[peer.value])
                peer_ns = peer.value.split("/", 1)[0]
                if peer_ns != namespace:
                    labels[NS_KEY] = peer_ns
                sels.append({"matchLabels": dict(sorted(labels.items()))})
            rule["toEndpoints" if to else "fromEndpoints"] = sels
        elif kind == "entities":
            rule["toEntities" if to else "fromEntities"] = sorted({p.value for p in members})
        elif kind == "fqdns":
            rule["toFQDNs"] = [{"matchName": p.value} for p in sorted(members)]
        else:
            rule["toCIDRSet" if to else "fromCIDRSet"] = [
                {"cidr": str(ipaddress.ip_network(p.value))} for p in sorted(members)
            ]
        rule.update(_ports_blocks(ports))
        rules.append(((_KIND_ORDER[kind], sorted(ports, key=_port_sort), sorted(members)), rule))
    return [rule for _, rule in sorted(rules, key=lambda kv: kv[0])]


def policy_name(workload: str, suffix: str) -> str:
    """A DNS-1123 object name from a workload name (``identity:12`` -> ``identity-12``)."""
    base = _NAME_OK.sub("-", workload.lower()).strip("-.") or "workload"
    return f"{base[: 253 - len(suffix) - 1]}-{suffix}"


def policy_file_name(policy: Mapping[str, Any]) -> str:
    """``<namespace>-<workload>.yaml`` for a proposal (the workload from its annotation)."""
    meta = policy["metadata"]
    identity = meta.get("annotations", {}).get("netwarden.io/identity", "")
    workload = identity.split("/", 1)[1] if "/" in identity else meta["name"]
    return (
        f"{meta.get('namespace', 'default')}-{_NAME_OK.sub('-', workload.lower()).strip('-.')}.yaml"
    )


class Proposer:
    """Accumulates flows per workload; :meth:`policies` builds the validated proposals.

    ``max_cidrs``: world addresses without names beyond which a direction falls back to the
    ``world`` entity. ``min_for_pattern``: DNS names under one parent that become one pattern.
    """

    def __init__(self, *, max_cidrs: int = 16, min_for_pattern: int = 6) -> None:
        self.max_cidrs = max_cidrs
        self.min_for_pattern = min_for_pattern
        self.flows_seen = 0
        self.flows_used = 0
        self.skipped: list[Skipped] = []
        self._resolver = IdentityResolver()
        self._workloads: dict[str, _Workload] = {}
        self._labels: dict[str, dict[str, str]] = {}  # subject id -> labels all replicas share
        self._label_cache: dict[tuple[Any, ...], dict[str, str]] = {}
        self._apiserver: dict[tuple[Any, ...], bool] = {}

    # -- input ---------------------------------------------------------------------------------

    def add_all(self, flows: Iterable[Any]) -> Proposer:
        for flow in flows:
            self.add(flow)
        return self

    def add(self, flow: Any) -> None:
        """Record one flow; only forwarded request flows with L4 count."""
        self.flows_seen += 1
        if flow.verdict not in ("FORWARDED", 1) or _is_reply(flow):
            return
        event = getattr(flow, "event_type", None)
        if event is not None and event.type in (2, 3, 6, 7, 130):
            return
        l4 = l4_key(flow)
        if not l4.protocol:
            return
        port: Port = (l4.protocol, l4.icmp_type if l4.protocol in _ICMP else l4.port)
        ip = flow.IP
        src = self._end(flow.source, ip.source if ip else "")
        dst = self._end(flow.destination, ip.destination if ip else "")
        if src is None or dst is None:
            return
        src_subject, dst_subject, dst_ns, dst_labels = src[0], dst[0], dst[2], dst[3]
        used = False
        if src_subject is not None:
            work = self._workload(src_subject, flow)
            dns = _is_kube_dns(dst_ns, dst_labels)
            if dns and port in DNS_PORTS:
                work.uses_dns = True
            else:
                for peer in self._peers(dst, ip.destination if ip else "", flow.destination_names):
                    work.egress[peer].add(port)
            l7 = getattr(flow, "l7", None)
            query = l7.dns.query if l7 is not None and l7.dns is not None else ""
            if query:
                work.uses_dns = True
                work.dns_names.add(_dns_name(query))
            for name in flow.destination_names:
                work.dns_names.add(_dns_name(name))
            used = True
        if dst_subject is not None:
            work = self._workload(dst_subject, flow)
            for peer in self._peers(src, ip.source if ip else "", flow.source_names):
                work.ingress[peer].add(port)
            used = True
        self.flows_used += used

    def _end(
        self, endpoint: Any, ip: str
    ) -> tuple[Subject | None, str, str, dict[str, str]] | None:
        """(subject, peer kind, namespace, shared labels) of one end; None when unknown."""
        subject, peer = self._resolver.resolve(endpoint, ip)
        if subject is None:
            if self._is_apiserver(endpoint, ip):
                # The API server outside the cluster carries reserved:world (and a CIDR
                # identity) too; Cilium matches it reliably only by its entity, not by CIDR.
                return None, "reserved:kube-apiserver", "", {}
            if peer.is_world:
                return None, "world", "", {}
            if peer.reserved:
                return None, "reserved:" + peer.reserved, "", {}
            return None
        if subject.namespace == "unknown":
            return None
        key = IdentityResolver.cache_key(endpoint, ip)
        own = self._label_cache.get(key)
        if own is None:
            own = self._label_cache[key] = stable_labels(label_list(endpoint.labels))
        common = self._labels.get(subject.id)
        if common is None:
            self._labels[subject.id] = dict(own)
        elif common.items() - own.items():
            self._labels[subject.id] = {k: v for k, v in common.items() if own.get(k) == v}
        return subject, "pod", subject.namespace, self._labels[subject.id]

    def _is_apiserver(self, endpoint: Any, ip: str) -> bool:
        if endpoint is None:
            return False
        key = IdentityResolver.cache_key(endpoint, ip)
        found = self._apiserver.get(key)
        if found is None:
            found = self._apiserver[key] = _KUBE_APISERVER in label_list(endpoint.labels)
        return found

    def _peers(
        self, end: tuple[Subject | None, str, str, dict[str, str]], ip: str, names: Iterable[str]
    ) -> list[PeerRef]:
        subject, kind, _, _ = end
        if subject is not None:
            return [PeerRef("endpoints", subject.id)]
        if kind == "world":
            named = sorted({_dns_name(n) for n in names if _DNS_NAME.match(_dns_name(n))})
            if named:
                return [PeerRef("fqdns", n) for n in named]
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                return [PeerRef("entities", "world")]
            return [PeerRef("cidr", ip)]
        entity = _ENTITY.get(kind.removeprefix("reserved:"))
        return [PeerRef("entities", entity)] if entity else []

    def _workload(self, subject: Subject, flow: Any) -> _Workload:
        work = self._workloads.get(subject.id)
        if work is None:
            work = self._workloads[subject.id] = _Workload(subject)
        work.flows += 1
        t = flow.time
        if t is not None:
            work.first = t if work.first is None or t < work.first else work.first
            work.last = t if work.last is None or t > work.last else work.last
        return work

    # -- output --------------------------------------------------------------------------------

    def selectors(self) -> dict[str, dict[str, str]]:
        """Subject id -> the selector labels of that workload (empty when it has none)."""
        return {sid: _selector_labels(labels) for sid, labels in self._labels.items()}

    def policies(self) -> dict[str, dict[str, Any]]:
        """Identity -> validated baseline policy, sorted by identity."""
        selectors = self.selectors()
        self.skipped = []
        out: dict[str, dict[str, Any]] = {}
        for sid in sorted(self._workloads):
            work = self._workloads[sid]
            own = selectors.get(sid) or {}
            if not own:
                self.skipped.append(Skipped(sid, "no stable labels to select its pods by"))
                continue
            policy = self._policy(work, own, selectors)
            if policy is None:
                self.skipped.append(Skipped(sid, "no traffic that a rule could express"))
                continue
            check_policy(policy)
            out[sid] = policy
        return out

    def _narrow_world(self, peers: dict[PeerRef, set[Port]]) -> dict[PeerRef, set[Port]]:
        """Too many unnamed world addresses: they cannot be narrowed, use the world entity."""
        cidrs = [p for p in peers if p.kind == "cidr"]
        if len(cidrs) <= self.max_cidrs:
            return peers
        out = {p: set(ports) for p, ports in peers.items() if p.kind != "cidr"}
        world = out.setdefault(PeerRef("entities", "world"), set())
        for p in cidrs:
            world |= peers[p]
        return out

    def _policy(
        self, work: _Workload, own: dict[str, str], selectors: Mapping[str, dict[str, str]]
    ) -> dict[str, Any] | None:
        ns = work.subject.namespace
        egress = rules_for(
            self._narrow_world(work.egress), "egress", selectors=selectors, namespace=ns
        )
        ingress = rules_for(
            self._narrow_world(work.ingress), "ingress", selectors=selectors, namespace=ns
        )
        has_fqdns = any(p.kind == "fqdns" for p in work.egress)
        if work.uses_dns or has_fqdns:
            egress.insert(0, dns_rule(work.dns_names, min_for_pattern=self.min_for_pattern))
        if not egress and not ingress:
            return None
        spec: dict[str, Any] = {
            "description": _description(work),
            "endpointSelector": {"matchLabels": dict(sorted(own.items()))},
        }
        # A direction without observed traffic is still locked down: default deny with no allow.
        spec["ingress"] = ingress or [{}]
        spec["egress"] = egress or [{}]
        return {
            "apiVersion": API_VERSION,
            "kind": "CiliumNetworkPolicy",
            "metadata": {
                "name": policy_name(work.subject.workload, "baseline"),
                "namespace": ns,
                "labels": dict(MANAGED_BY),
                "annotations": {
                    "netwarden.io/identity": work.subject.id,
                    "netwarden.io/flows": str(work.flows),
                },
            },
            "spec": spec,
        }


def _description(work: _Workload) -> str:
    span = ""
    if work.first is not None and work.last is not None:
        span = f" between {work.first:%Y-%m-%dT%H:%M:%SZ} and {work.last:%Y-%m-%dT%H:%M:%SZ}"
    return (
        f"netwarden least-privilege baseline for {work.subject.id}, learned from "
        f"{work.flows} forwarded request flows{span}"
    )


def _is_reply(flow: Any) -> bool:
    is_reply = getattr(flow, "is_reply", None)
    if is_reply is not None:
        return bool(is_reply)
    return bool(getattr(flow, "reply", False))


def propose_baselines(
    flows: Iterable[Any], *, max_cidrs: int = 16, min_for_pattern: int = 6
) -> dict[str, dict[str, Any]]:
    """Identity (``namespace/workload``) -> its validated baseline CiliumNetworkPolicy dict."""
    return Proposer(max_cidrs=max_cidrs, min_for_pattern=min_for_pattern).add_all(flows).policies()


class _Dumper(yaml.SafeDumper):
    """Block style, keys in insertion order, no aliases: reads like a hand-written policy."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def policy_yaml(policy: Mapping[str, Any]) -> str:
    """The policy as YAML, key order kept (apiVersion, kind, metadata, spec)."""
    return yaml.dump(
        dict(policy),
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=100,
    )

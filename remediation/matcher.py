"""Judge recorded flows against CiliumNetworkPolicies the way the Cilium datapath would (L3/L4).

Policies are the dicts ``yaml.safe_load`` returns for ``CiliumNetworkPolicy`` (``spec`` and/or
``specs``) and ``CiliumClusterwideNetworkPolicy``. :class:`PolicySet` compiles them once into
predicates; :meth:`PolicySet.verdict` then costs a few dict lookups and selector checks per flow.

Semantics (cilium v1.19 ``pkg/policy``, ``pkg/k8s/apis/cilium.io/utils``):

* **Enforcement points.** A request flow is judged at the egress of its source and at the ingress
  of its destination, each only when that end is a local Cilium endpoint (a pod, the host, or the
  health/init/ingress endpoints). Reply flows (``is_reply``, else the deprecated ``reply``) belong
  to a connection that was allowed when it started and are not judged.
* **Selection and default deny.** A rule (one element of ``spec``/``specs``) selects an endpoint
  by its ``endpointSelector``; the host endpoint is selected only by ``nodeSelector`` rules (host
  policies). A selecting rule puts the endpoint in default deny for a direction when it has any
  allow or deny rules there (``len(ingress) > 0 or len(ingressDeny) > 0``, so ``ingress: [{}]``
  counts and ``ingress: []`` does not), unless ``enableDefaultDeny`` says otherwise for that
  direction. An endpoint in default deny for no rule is allowed everything in that direction.
* **Deny wins.** A matching ``ingressDeny``/``egressDeny`` rule drops the flow (``POLICY_DENY``)
  whatever allows it; otherwise a matching allow rule lets it through; otherwise default deny
  drops it (``POLICY_DENIED``).
* **Rule = L3 AND L4.** Peers (``fromEndpoints``, ``fromEntities``, ``fromCIDR(Set)``,
  ``toFQDNs``, ``toServices``, ``from/toNodes`` ...) are OR-ed; ``toPorts``/``icmps`` are OR-ed and
  AND-ed with the peers. No peer field but ports: any peer. No peer field and no ports (``{}``):
  matches nothing. A peer field present but empty (``fromEndpoints: []``) selects nothing.
* **Namespaces.** A CNP's ``endpointSelector`` always gets ``k8s:io.kubernetes.pod.namespace=<ns>``
  (a CNP without ``metadata.namespace`` is taken to live in ``default``, as ``kubectl`` would).
  Its peer selectors get the same unless they name the namespace key (source ``k8s`` or ``any``),
  a ``io.cilium.k8s.namespace.labels.*`` key, or a ``reserved:`` key. A CCNP's peer selectors
  without a namespace (or reserved) key get ``k8s:io.kubernetes.pod.namespace`` *Exists* (pods
  only), unless its ``endpointSelector`` names ``reserved:init``. With ``cluster_name`` set, peer
  selectors also get ``k8s:io.cilium.k8s.policy.cluster=<name>`` unless they name a cluster
  (``policy-default-local-cluster``).
* **Entities** map to ``reserved:*`` labels (``world`` = world, world-ipv4, world-ipv6; ``all`` =
  anything; ``cluster`` = host, remote-node, init, ingress, health, unmanaged, kube-apiserver and
  the pods of the local cluster; ``none`` = nothing). Endpoints whose reserved identity number is
  known but whose labels were masked get the identity's labels back.
* **CIDR** rules (``toCIDR``, ``toCIDRSet`` with ``except``, ``fromCIDR(Set)``) match the peer IP
  only when the peer is outside the cluster (world or a CIDR/FQDN identity): Cilium never applies
  CIDR rules to pods, and to nodes only with ``policy-cidr-match-mode: nodes``
  (``cidr_match_nodes=True``). ``cidrGroupRef``/``cidrGroupSelector`` need the CiliumCIDRGroup
  objects and match nothing here (a warning says so).
* **FQDN** (``toFQDNs``) matches world peers through the DNS names seen for their IP: the flow's
  ``destination_names`` and the caller's ``dns_names`` map (IP -> names). ``matchName`` is exact,
  case-insensitive; ``matchPattern`` follows ``pkg/fqdn/matchpattern`` (``*`` = any DNS
  characters within one label, a leading ``**.`` = one or more whole labels, ``*`` alone = all).
* **Ports.** ``port`` is a number (``0``/absent = all ports) or a named port, resolved through the
  caller's ``named_ports`` map (Cilium resolves it per pod from container port names, which flows
  do not carry; an unresolved name matches nothing and is reported as a warning). ``endPort``
  makes a range. ``protocol`` TCP/UDP/SCTP, ``ANY``/absent = all three. ``icmps`` match ICMPv4/v6
  type (number or CamelCase name); a rule with only L3 also allows ICMP and other protocols.
* **L7** (``rules: http/dns/kafka``) is not simulated: such a port rule allows the L4 port and the
  verdict carries ``l7=True`` so a caller knows the proxy would filter further.
* ``fromRequires``/``toRequires`` (deprecated), ``fromGroups``/``toGroups`` (cloud providers) and
  ``k8sServiceSelector`` are not modelled: they match nothing and produce a warning.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Final

import msgspec

from netwarden.ingest.selectors import (
    ANY,
    Label,
    LabelSelector,
    Requirement,
    SelectorError,
    label_list,
    parse_label,
)

__all__ = [
    "EGRESS",
    "INGRESS",
    "Decision",
    "DirectionVerdict",
    "EndpointView",
    "L4Key",
    "Peer",
    "PolicyError",
    "PolicyRef",
    "PolicySet",
    "RuleRef",
    "Verdict",
    "endpoint_view",
    "fqdn_pattern",
    "l4_key",
    "load_policies",
]

CNP: Final = "CiliumNetworkPolicy"
CCNP: Final = "CiliumClusterwideNetworkPolicy"
NS_KEY: Final = "io.kubernetes.pod.namespace"
NS_LABELS_PREFIX: Final = "io.cilium.k8s.namespace.labels"
CLUSTER_KEY: Final = "io.cilium.k8s.policy.cluster"
INGRESS: Final = "ingress"
EGRESS: Final = "egress"

#: Reserved identity number -> the labels Cilium gives it (pkg/identity/numericidentity.go).
RESERVED_LABELS: Final[dict[int, tuple[str, ...]]] = {
    1: ("reserved:host",),
    2: ("reserved:world",),
    3: ("reserved:unmanaged",),
    4: ("reserved:health",),
    5: ("reserved:init",),
    6: ("reserved:remote-node",),
    7: ("reserved:kube-apiserver", "reserved:remote-node"),
    8: ("reserved:ingress",),
    9: ("reserved:world-ipv4",),
    10: ("reserved:world-ipv6",),
}
_WORLD_NAMES: Final = frozenset({"world", "world-ipv4", "world-ipv6"})
_NODE_NAMES: Final = frozenset({"host", "remote-node", "kube-apiserver"})
#: Reserved endpoints that run on a node and have their own policy (besides the host).
_LOCAL_RESERVED: Final = frozenset({"health", "init", "ingress"})
_LOCAL_SCOPE: Final = 1 << 24
_REMOTE_NODE_SCOPE: Final = 2 << 24

_CLUSTER_RESERVED: Final = (
    "host",
    "remote-node",
    "init",
    "ingress",
    "health",
    "unmanaged",
    "kube-apiserver",
)
_ENTITIES: Final[dict[str, tuple[str, ...]]] = {
    "world": ("world", "world-ipv4", "world-ipv6"),
    "world-ipv4": ("world-ipv4",),
    "world-ipv6": ("world-ipv6",),
    "host": ("host",),
    "init": ("init",),
    "ingress": ("ingress",),
    "remote-node": ("remote-node",),
    "health": ("health",),
    "unmanaged": ("unmanaged",),
    "kube-apiserver": ("kube-apiserver",),
    "none": (),
    "all": (),
    "cluster": _CLUSTER_RESERVED,
}

_PROTOCOLS: Final = frozenset({"TCP", "UDP", "SCTP"})
#: ICMP type names accepted by the CRD (pkg/policy/api/icmp.go), per family.
_ICMP4: Final[dict[str, int]] = {
    "EchoReply": 0,
    "DestinationUnreachable": 3,
    "Redirect": 5,
    "Echo": 8,
    "EchoRequest": 8,
    "RouterAdvertisement": 9,
    "RouterSelection": 10,
    "TimeExceeded": 11,
    "ParameterProblem": 12,
    "Timestamp": 13,
    "TimestampReply": 14,
    "Photuris": 40,
    "ExtendedEchoRequest": 42,
    "ExtendedEchoReply": 43,
}
_ICMP6: Final[dict[str, int]] = {
    "DestinationUnreachable": 1,
    "PacketTooBig": 2,
    "TimeExceeded": 3,
    "ParameterProblem": 4,
    "EchoRequest": 128,
    "EchoReply": 129,
    "MulticastListenerQuery": 130,
    "MulticastListenerReport": 131,
    "MulticastListenerDone": 132,
    "RouterSolicitation": 133,
    "RouterAdvertisement": 134,
    "NeighborSolicitation": 135,
    "NeighborAdvertisement": 136,
    "RedirectMessage": 137,
    "RouterRenumbering": 138,
    "ICMPNodeInformationQuery": 139,
    "ICMPNodeInformationResponse": 140,
    "InverseNeighborDiscoverySolicitation": 141,
    "InverseNeighborDiscoveryAdvertisement": 142,
    "HomeAgentAddressDiscoveryRequest": 144,
    "HomeAgentAddressDiscoveryReply": 145,
    "MobilePrefixSolicitation": 146,
    "MobilePrefixAdvertisement": 147,
    "DuplicateAddressRequestCodeSuffix": 157,
    "DuplicateAddressConfirmationCodeSuffix": 158,
    "ExtendedEchoRequest": 160,
    "ExtendedEchoReply": 161,
}
_DNS_CHARS: Final = "[-a-zA-Z0-9_]"


class PolicyError(ValueError):
    """A policy document the matcher cannot compile (what Cilium or the CRD would reject)."""


class Decision(str, Enum):  # noqa: UP042 (str() of a member is its name, as printed)
    ALLOWED = "allowed"
    DENIED_DEFAULT = "denied-default"  # no rule allowed it: Hubble POLICY_DENIED (133)
    DENIED_RULE = "denied-rule"  # a deny rule matched: Hubble POLICY_DENY (181)
    NOT_JUDGED = "not-judged"  # a reply, or not traffic


@dataclass(frozen=True, slots=True)
class PolicyRef:
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        short = "ccnp" if self.kind == CCNP else "cnp"
        return (
            f"{short}/{self.name}"
            if not self.namespace
            else f"{short}/{self.namespace}/{self.name}"
        )


@dataclass(frozen=True, slots=True)
class RuleRef:
    """Where a rule sits: ``cnp/shop/p spec[0].egressDeny[1]``."""

    policy: PolicyRef
    spec: int
    section: str  # ingress, ingressDeny, egress, egressDeny
    index: int

    def __str__(self) -> str:
        return f"{self.policy} spec[{self.spec}].{self.section}[{self.index}]"


@dataclass(frozen=True, slots=True)
class DirectionVerdict:
    """The verdict at one enforcement point (the source's egress or the destination's ingress)."""

    direction: str
    decision: Decision
    enforced: bool  # the endpoint is in default deny in this direction
    rule: RuleRef | None = None  # the deny or allow rule that decided, if any
    l7: bool = False  # allowed by a port rule that carries L7 rules (not simulated)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the policy set does to one flow; ``egress``/``ingress`` are None when that end is not
    a local Cilium endpoint (world, remote node ...) or the flow was not judged."""

    decision: Decision
    egress: DirectionVerdict | None = None
    ingress: DirectionVerdict | None = None
    reason: str = ""

    @property
    def allowed(self) -> bool:
        return self.decision in (Decision.ALLOWED, Decision.NOT_JUDGED)

    @property
    def dropped(self) -> bool:
        return self.decision in (Decision.DENIED_DEFAULT, Decision.DENIED_RULE)

    @property
    def dropped_at(self) -> DirectionVerdict | None:
        """The enforcement point that drops the flow; egress first, as the packet leaves there."""
        for point in (self.egress, self.ingress):
            if point is not None and point.decision in (
                Decision.DENIED_DEFAULT,
                Decision.DENIED_RULE,
            ):
                return point
        return None

    @property
    def rule(self) -> RuleRef | None:
        point = self.dropped_at
        return point.rule if point is not None else None


# --- endpoints ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EndpointView:
    """A flow endpoint as policy sees it: its labels and what kind of peer it is."""

    labels: tuple[Label, ...]
    kind: str  # pod, host, world, node (remote-node/kube-apiserver), reserved (health/init/...), unknown
    reserved: frozenset[str] = frozenset()

    @property
    def is_local_endpoint(self) -> bool:
        """Whether Cilium enforces policy for this endpoint (it can be a subject)."""
        return (
            self.kind == "pod"
            or self.kind == "host"
            or (self.kind == "reserved" and bool(self.reserved & _LOCAL_RESERVED))
        )


def endpoint_view(
    endpoint: Any, namespace_labels: Mapping[str, Mapping[str, str]] | None = None
) -> EndpointView:
    """Labels and kind of a Hubble endpoint (``Endpoint`` or ``CompactEndpoint``).

    Missing facts are filled from the ones present: the pod namespace label from ``namespace``
    (field-masked exports), reserved labels from a reserved identity number, ``reserved:world`` for
    CIDR/FQDN identities, and ``io.cilium.k8s.namespace.labels.*`` from ``namespace_labels``.
    """
    if endpoint is None:
        return EndpointView((), "unknown")
    texts = list(label_list(getattr(endpoint, "labels", ())))
    identity = int(getattr(endpoint, "identity", 0) or 0)
    namespace = getattr(endpoint, "namespace", "") or ""
    labels = [parse_label(t) for t in texts]
    reserved = {key for source, key, _ in labels if source == "reserved"}
    if identity in RESERVED_LABELS and not reserved:
        labels += [parse_label(t) for t in RESERVED_LABELS[identity]]
    elif _LOCAL_SCOPE <= identity < _REMOTE_NODE_SCOPE and not reserved & _WORLD_NAMES:
        labels.append(("reserved", "world", ""))
    reserved = {key for source, key, _ in labels if source == "reserved"}
    if reserved & _WORLD_NAMES or identity in (2, 9, 10):
        kind = "world"  # also the L7-proxy quirk: identity 2 with a pod name is still world
    elif "host" in reserved:
        kind = "host"
    elif reserved & _NODE_NAMES:
        kind = "node"
    elif reserved:
        kind = "reserved"
    else:
        if namespace and not any(k == NS_KEY and s in ("k8s", "unspec") for s, k, _ in labels):
            labels.append(("k8s", NS_KEY, namespace))
        ns = namespace or next((v for s, k, v in labels if k == NS_KEY), "")
        if namespace_labels and ns in namespace_labels:
            present = {k for _, k, _ in labels}
            for key, value in namespace_labels[ns].items():
                full = f"{NS_LABELS_PREFIX}.{key}"
                if full not in present:
                    labels.append(("k8s", full, str(value)))
        kind = "pod" if labels else "unknown"
    return EndpointView(tuple(labels), kind, frozenset(reserved))


# --- compiled predicates -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class L4Key:
    """The L4 facts of a flow that port rules read."""

    protocol: str  # TCP, UDP, SCTP, ICMPv4, ICMPv6, or "" (none / other)
    port: int = 0  # destination port (service port of a request)
    icmp_type: int = -1


@dataclass(frozen=True, slots=True)
class _PortMatch:
    protocols: frozenset[str]
    low: int
    high: int
    l7: bool

    def matches(self, l4: L4Key) -> bool:
        return l4.protocol in self.protocols and self.low <= l4.port <= self.high


@dataclass(frozen=True, slots=True)
class _ICMPMatch:
    protocol: str  # ICMPv4 / ICMPv6
    type: int

    def matches(self, l4: L4Key) -> bool:
        return l4.protocol == self.protocol and l4.icmp_type == self.type


@dataclass(frozen=True, slots=True)
class _CIDRMatch:
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    excepts: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    def matches(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        if ip.version != self.network.version or ip not in self.network:
            return False
        return not any(ip.version == e.version and ip in e for e in self.excepts)


@dataclass(frozen=True, slots=True)
class Peer:
    """The far end of a flow at one enforcement point."""

    view: EndpointView
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    names: tuple[str, ...]  # DNS names seen for the IP, lower case, no trailing dot
    service: tuple[str, str] | None  # (namespace, name) of the destination service


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """One element of ingress/ingressDeny/egress/egressDeny: L3 peers AND L4 ports."""

    ref: RuleRef
    deny: bool
    wildcard_l3: bool
    selectors: tuple[LabelSelector, ...]
    any_entity: bool
    entity_reserved: frozenset[str]
    entity_cluster_pods: bool
    cidrs: tuple[_CIDRMatch, ...]
    fqdns: tuple[re.Pattern[str], ...]
    services: tuple[tuple[str | None, str], ...]
    nodes: tuple[LabelSelector, ...]
    ports: tuple[_PortMatch, ...]
    icmps: tuple[_ICMPMatch, ...]
    wildcard_l4: bool
    cluster_name: str | None
    cidr_match_nodes: bool

    def matches_l3(self, peer: Peer) -> bool:
        if self.wildcard_l3 or self.any_entity:
            return True
        view = peer.view
        if view.reserved & self.entity_reserved:
            return True
        if self.entity_cluster_pods and view.kind == "pod" and _in_cluster(view, self.cluster_name):
            return True
        labels = view.labels
        for selector in self.selectors:
            if selector.matches(labels):
                return True
        if self.nodes and view.kind in ("host", "node"):
            if any(s.matches(labels) for s in self.nodes):
                return True
        outside = view.kind == "world" or (self.cidr_match_nodes and view.kind in ("host", "node"))
        if outside and peer.ip is not None and any(c.matches(peer.ip) for c in self.cidrs):
            return True
        if self.fqdns and view.kind == "world":
            for name in peer.names:
                fqdn = name + "."
                if any(p.match(fqdn) for p in self.fqdns):
                    return True
        if self.services and peer.service is not None:
            ns, name = peer.service
            if any(sname == name and (sns is None or sns == ns) for sns, sname in self.services):
                return True
        return False

    def matches_l4(self, l4: L4Key) -> tuple[bool, bool]:
        """(matches, allowed through a port rule that has L7 rules)."""
        if self.wildcard_l4:
            return True, False
        for port in self.ports:
            if port.matches(l4):
                return True, port.l7
        return any(i.matches(l4) for i in self.icmps), False


def _in_cluster(view: EndpointView, cluster_name: str | None) -> bool:
    if cluster_name is None:
        return True
    return any(
        k == CLUSTER_KEY and v == cluster_name for s, k, v in view.labels if s in ("k8s", "unspec")
    )


@dataclass(frozen=True, slots=True)
class CompiledSpec:
    """One Cilium rule (an element of ``spec``/``specs``) with its subject and sections."""

    policy: PolicyRef
    index: int
    subject: LabelSelector | None  # endpointSelector (namespace already pinned)
    node_subject: LabelSelector | None  # nodeSelector
    rules: Mapping[str, tuple[CompiledRule, ...]]  # direction -> deny rules first, then allows
    default_deny: Mapping[str, bool]
    has_rules: Mapping[str, bool]

    def selects(self, view: EndpointView) -> bool:
        if view.kind == "host":
            return self.node_subject is not None and self.node_subject.matches(view.labels)
        return self.subject is not None and self.subject.matches(view.labels)


# --- compiling ---------------------------------------------------------------------------------


@dataclass
class _Compiler:
    cluster_name: str | None
    cidr_match_nodes: bool
    named_ports: Mapping[str, int]
    warnings: list[str] = field(default_factory=list)

    def policy(self, doc: Mapping[str, Any]) -> list[CompiledSpec]:
        if not isinstance(doc, Mapping):
            raise PolicyError(f"policy must be a mapping, got {type(doc).__name__}")
        kind = doc.get("kind", CNP)
        if kind not in (CNP, CCNP):
            raise PolicyError(f"unsupported kind {kind!r}")
        meta = doc.get("metadata") or {}
        name = str(meta.get("name", ""))
        namespace = "" if kind == CCNP else str(meta.get("namespace") or "default")
        ref = PolicyRef(kind, namespace, name)
        rules: list[Any] = []
        if doc.get("spec") is not None:
            rules.append(doc["spec"])
        rules.extend(doc.get("specs") or ())
        if not rules:
            raise PolicyError(f"{ref}: spec or specs must be provided")
        return [self.spec(ref, i, rule) for i, rule in enumerate(rules)]

    def spec(self, ref: PolicyRef, index: int, rule: Mapping[str, Any]) -> CompiledSpec:
        if not isinstance(rule, Mapping):
            raise PolicyError(f"{ref} spec[{index}]: rule must be a mapping")
        has_es, has_ns = "endpointSelector" in rule, "nodeSelector" in rule
        if has_es == has_ns:
            raise PolicyError(f"{ref} spec[{index}]: exactly one of endpointSelector/nodeSelector")
        try:
            subject = node_subject = None
            if has_es:
                subject = LabelSelector.from_dict(rule.get("endpointSelector") or {})
                if ref.namespace:
                    subject = subject.with_requirement(
                        Requirement("k8s", NS_KEY, "In", frozenset({ref.namespace}))
                    )
            else:
                node_subject = LabelSelector.from_dict(rule.get("nodeSelector") or {})
            matches_init = subject is not None and subject.has_key("reserved", "init")
            compiled: dict[str, tuple[CompiledRule, ...]] = {}
            default_deny: dict[str, bool] = {}
            has_rules: dict[str, bool] = {}
            dd_cfg = rule.get("enableDefaultDeny") or {}
            for direction, allow_key, deny_key in (
                (INGRESS, "ingress", "ingressDeny"),
                (EGRESS, "egress", "egressDeny"),
            ):
                allows = rule.get(allow_key) or []
                denies = rule.get(deny_key) or []
                out = [
                    self.rule(
                        RuleRef(ref, index, deny_key, i), r, True, direction, ref, matches_init
                    )
                    for i, r in enumerate(denies)
                ]
                out += [
                    self.rule(
                        RuleRef(ref, index, allow_key, i), r, False, direction, ref, matches_init
                    )
                    for i, r in enumerate(allows)
                ]
                compiled[direction] = tuple(out)
                has_rules[direction] = bool(allows or denies)
                configured = dd_cfg.get(direction)
                default_deny[direction] = (
                    has_rules[direction] if configured is None else bool(configured)
                )
        except SelectorError as exc:
            raise PolicyError(f"{ref} spec[{index}]: {exc}") from exc
        return CompiledSpec(ref, index, subject, node_subject, compiled, default_deny, has_rules)

    def peer_selector(self, raw: Any, ref: PolicyRef, matches_init: bool) -> LabelSelector:
        """A from/toEndpoints selector with Cilium's namespace (and cluster) defaulting."""
        sel = LabelSelector.from_dict(raw or {})
        if sel.has_key_prefix("reserved."):
            return sel
        if not sel.has_key("k8s", NS_KEY) and not sel.has_key(ANY, NS_KEY):
            if not ref.namespace:
                if not matches_init:
                    sel = LabelSelector((*sel.requirements, Requirement("k8s", NS_KEY, "Exists")))
            elif not sel.has_key_prefix(f"k8s.{NS_LABELS_PREFIX}") and not sel.has_key_prefix(
                f"{ANY}.{NS_LABELS_PREFIX}"
            ):
                sel = sel.with_requirement(
                    Requirement("k8s", NS_KEY, "In", frozenset({ref.namespace}))
                )
        if (
            self.cluster_name
            and not sel.has_key("k8s", CLUSTER_KEY)
            and not sel.has_key(ANY, CLUSTER_KEY)
        ):
            sel = sel.with_requirement(
                Requirement("k8s", CLUSTER_KEY, "In", frozenset({self.cluster_name}))
            )
        return sel

    def rule(
        self,
        rref: RuleRef,
        raw: Any,
        deny: bool,
        direction: str,
        ref: PolicyRef,
        matches_init: bool,
    ) -> CompiledRule:
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise PolicyError(f"{rref}: rule must be a mapping")
        pre = "from" if direction == INGRESS else "to"
        l3_keys = [
            f"{pre}Endpoints",
            f"{pre}Entities",
            f"{pre}CIDR",
            f"{pre}CIDRSet",
            f"{pre}Nodes",
            f"{pre}Groups",
            f"{pre}Requires",
        ]
        if direction == EGRESS:
            l3_keys += ["toFQDNs", "toServices"]
        l3_present = any(k in raw and raw[k] is not None for k in l3_keys)
        for key in (f"{pre}Requires", f"{pre}Groups"):
            if raw.get(key):
                self.warnings.append(f"{rref}: {key} is not simulated (matches nothing)")
        selectors = tuple(
            self.peer_selector(s, ref, matches_init) for s in raw.get(f"{pre}Endpoints") or ()
        )
        nodes = tuple(LabelSelector.from_dict(s or {}) for s in raw.get(f"{pre}Nodes") or ())
        entities = [str(e) for e in raw.get(f"{pre}Entities") or ()]
        for entity in entities:
            if entity not in _ENTITIES:
                raise PolicyError(f"{rref}: unknown entity {entity!r}")
        entity_reserved = frozenset(r for e in entities for r in _ENTITIES[e])
        cidrs = [self.cidr(rref, c) for c in raw.get(f"{pre}CIDR") or ()]
        for item in raw.get(f"{pre}CIDRSet") or ():
            if not item.get("cidr"):
                self.warnings.append(
                    f"{rref}: cidrGroupRef/cidrGroupSelector not simulated (matches nothing)"
                )
                continue
            base = self.cidr(rref, item["cidr"])
            cidrs.append(
                _CIDRMatch(
                    base.network,
                    tuple(self.cidr(rref, e).network for e in item.get("except") or ()),
                )
            )
        fqdns: list[re.Pattern[str]] = []
        services: list[tuple[str | None, str]] = []
        if direction == EGRESS:
            for item in raw.get("toFQDNs") or ():
                if item.get("matchName"):
                    fqdns.append(re.compile(re.escape(_fqdn(item["matchName"])) + r"\Z"))
                elif item.get("matchPattern"):
                    fqdns.append(fqdn_pattern(item["matchPattern"]))
            for item in raw.get("toServices") or ():
                svc = item.get("k8sService")
                if svc and svc.get("serviceName"):
                    services.append(
                        (svc.get("namespace") or ref.namespace or None, str(svc["serviceName"]))
                    )
                else:
                    self.warnings.append(f"{rref}: toServices k8sServiceSelector not simulated")
        ports, icmps = self.l4(rref, raw, deny)
        has_l4 = bool(raw.get("toPorts") or raw.get("icmps"))
        return CompiledRule(
            ref=rref,
            deny=deny,
            wildcard_l3=not l3_present and has_l4,
            selectors=selectors,
            any_entity="all" in entities,
            entity_reserved=entity_reserved,
            entity_cluster_pods="cluster" in entities,
            cidrs=tuple(cidrs),
            fqdns=tuple(fqdns),
            services=tuple(services),
            nodes=nodes,
            ports=ports,
            icmps=icmps,
            wildcard_l4=not has_l4,
            cluster_name=self.cluster_name,
            cidr_match_nodes=self.cidr_match_nodes,
        )

    def cidr(self, rref: RuleRef, text: Any) -> _CIDRMatch:
        try:
            return _CIDRMatch(ipaddress.ip_network(str(text), strict=False))
        except ValueError as exc:
            raise PolicyError(f"{rref}: bad CIDR {text!r}") from exc

    def l4(
        self, rref: RuleRef, raw: Mapping[str, Any], deny: bool
    ) -> tuple[tuple[_PortMatch, ...], tuple[_ICMPMatch, ...]]:
        ports: list[_PortMatch] = []
        for port_rule in raw.get("toPorts") or ():
            rules = port_rule.get("rules") or {}
            l7 = bool(rules) and not deny
            entries = port_rule.get("ports") or [{}]
            for entry in entries:
                proto = str(entry.get("protocol") or "ANY").upper()
                if proto == "ANY":
                    protocols = _PROTOCOLS
                elif proto in _PROTOCOLS:
                    protocols = frozenset({proto})
                else:
                    self.warnings.append(
                        f"{rref}: protocol {proto} not simulated (matches nothing)"
                    )
                    continue
                text = str(entry.get("port") or "0").strip()
                if text.isdigit():
                    low = int(text)
                elif text in self.named_ports:
                    low = int(self.named_ports[text])
                else:
                    self.warnings.append(
                        f"{rref}: named port {text!r} unresolved (matches nothing)"
                    )
                    continue
                if not 0 <= low <= 65535:
                    raise PolicyError(f"{rref}: port {text!r} out of range")
                if low == 0:
                    ports.append(_PortMatch(protocols, 0, 65535, l7))
                    continue
                end = int(entry.get("endPort") or 0)
                ports.append(_PortMatch(protocols, low, max(low, min(end, 65535)), l7))
        icmps: list[_ICMPMatch] = []
        for icmp_rule in raw.get("icmps") or ():
            for item in icmp_rule.get("fields") or ():
                family = str(item.get("family") or "IPv4")
                names = _ICMP6 if family == "IPv6" else _ICMP4
                value = item.get("type")
                if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
                    number = int(value)
                elif value in names:
                    number = names[value]
                else:
                    raise PolicyError(f"{rref}: unknown ICMP type {value!r} for {family}")
                icmps.append(_ICMPMatch("ICMPv6" if family == "IPv6" else "ICMPv4", number))
        return tuple(ports), tuple(icmps)


def _fqdn(name: str) -> str:
    name = name.strip().lower()
    return name if name.endswith(".") else name + "."


def fqdn_pattern(pattern: str) -> re.Pattern[str]:
    """A ``matchPattern`` as a regex over a lower-case FQDN with trailing dot (pkg/fqdn/matchpattern).

    >>> bool(fqdn_pattern("*.cilium.io").match("sub.cilium.io.")), bool(fqdn_pattern("*.cilium.io").match("cilium.io."))
    (True, False)
    >>> bool(fqdn_pattern("**.cilium.io").match("a.b.cilium.io.")), bool(fqdn_pattern("*").match("x.y."))
    (True, True)
    """
    text = pattern.strip().lower()
    if re.fullmatch(r"\*+\.?", text):
        return re.compile(rf"(^({_DNS_CHARS}+[.])+$)|(^[.]$)")
    text = _fqdn(text).replace(".", "[.]")
    text = re.sub(r"^\*{2,}\[\.\]", f"({_DNS_CHARS}+([.]{_DNS_CHARS}+){{0,}})[.]", text)
    text = re.sub(r"\*+", f"{_DNS_CHARS}*", text)
    return re.compile("^" + text + "$")


# --- flows -------------------------------------------------------------------------------------


def _is_reply(flow: Any) -> bool:
    is_reply = getattr(flow, "is_reply", None)
    if is_reply is not None:
        return bool(is_reply)
    return bool(getattr(flow, "reply", False))


def l4_key(flow: Any) -> L4Key:
    """Protocol and destination port (or ICMP type) of a flow."""
    l4 = getattr(flow, "l4", None)
    if l4 is None:
        return L4Key("")
    for proto in ("TCP", "UDP", "SCTP"):
        layer = getattr(l4, proto, None)
        if layer is not None:
            return L4Key(proto, layer.destination_port)
    for proto in ("ICMPv4", "ICMPv6"):
        layer = getattr(l4, proto, None)
        if layer is not None:
            return L4Key(proto, 0, layer.type)
    return L4Key("")


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not text:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _names(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v.strip().lower().rstrip(".") for v in values if v))


# --- the policy set ----------------------------------------------------------------------------


_NOT_TRAFFIC: Final = frozenset({2, 3, 6, 7, 130})


class PolicySet:
    """Compiled policies; :meth:`verdict` judges one flow.

    Parameters
    ----------
    policies : iterable of policy dicts (as ``yaml.safe_load`` returns them; ``None`` skipped).
    cluster_name : the local cluster; enables ``policy-default-local-cluster`` on peer selectors
        and restricts the ``cluster`` entity's pods to it. ``None`` treats every pod as local.
    dns_names : IP -> DNS names seen in DNS responses, used by ``toFQDNs`` besides each flow's own
        ``destination_names``.
    named_ports : port name -> number, for ``toPorts`` named ports.
    namespace_labels : namespace -> its labels, added to endpoints as
        ``k8s:io.cilium.k8s.namespace.labels.<key>`` when the flow does not carry them.
    cidr_match_nodes : apply CIDR rules to node IPs too (``policy-cidr-match-mode: nodes``).
    """

    def __init__(
        self,
        policies: Iterable[Mapping[str, Any] | None],
        *,
        cluster_name: str | None = None,
        dns_names: Mapping[str, Iterable[str]] | None = None,
        named_ports: Mapping[str, int] | None = None,
        namespace_labels: Mapping[str, Mapping[str, str]] | None = None,
        cidr_match_nodes: bool = False,
    ) -> None:
        compiler = _Compiler(cluster_name, cidr_match_nodes, dict(named_ports or {}))
        self.specs: tuple[CompiledSpec, ...] = tuple(
            spec for doc in policies if doc is not None for spec in compiler.policy(doc)
        )
        self.warnings: tuple[str, ...] = tuple(dict.fromkeys(compiler.warnings))
        self.dns_names = {ip: _names(names) for ip, names in (dns_names or {}).items()}
        self.namespace_labels = namespace_labels
        self._views: dict[tuple[Any, ...], EndpointView] = {}
        self._selected: dict[tuple[tuple[Label, ...], str], tuple[CompiledSpec, ...]] = {}

    def __len__(self) -> int:
        return len(self.specs)

    def view(self, endpoint: Any) -> EndpointView:
        """The (cached) :class:`EndpointView` of a flow endpoint."""
        if endpoint is None:
            return EndpointView((), "unknown")
        labels = getattr(endpoint, "labels", ())
        key = (
            getattr(endpoint, "identity", 0),
            getattr(endpoint, "namespace", ""),
            bytes(labels) if isinstance(labels, msgspec.Raw) else tuple(labels or ()),
        )
        found = self._views.get(key)
        if found is None:
            if len(self._views) > 1 << 16:
                self._views.clear()
            found = self._views[key] = endpoint_view(endpoint, self.namespace_labels)
        return found

    def selecting(self, view: EndpointView, direction: str) -> tuple[CompiledSpec, ...]:
        """The rules that select ``view`` and say something about ``direction``."""
        key = (view.labels, direction)
        found = self._selected.get(key)
        if found is None:
            found = self._selected[key] = tuple(
                s
                for s in self.specs
                if (s.has_rules[direction] or s.default_deny[direction]) and s.selects(view)
            )
        return found

    def judge(
        self, subject: EndpointView, peer: Peer, direction: str, l4: L4Key
    ) -> DirectionVerdict:
        """The verdict at one enforcement point, for a subject already known to be local."""
        specs = self.selecting(subject, direction)
        if not specs:
            return DirectionVerdict(direction, Decision.ALLOWED, False)
        allowed_by: CompiledRule | None = None
        allowed_l7 = False
        l3_cache: dict[int, bool] = {}
        for spec in specs:
            for rule in spec.rules[direction]:
                if rule.deny:
                    ok, _ = rule.matches_l4(l4)
                    if ok and _l3(rule, peer, l3_cache):
                        return DirectionVerdict(direction, Decision.DENIED_RULE, True, rule.ref)
                elif allowed_by is None or allowed_l7:
                    ok, l7 = rule.matches_l4(l4)
                    if ok and _l3(rule, peer, l3_cache):
                        if allowed_by is None or not l7:
                            allowed_by, allowed_l7 = rule, l7
        enforced = any(s.default_deny[direction] for s in specs)
        if allowed_by is not None:
            return DirectionVerdict(
                direction, Decision.ALLOWED, enforced, allowed_by.ref, allowed_l7
            )
        if enforced:
            return DirectionVerdict(direction, Decision.DENIED_DEFAULT, True)
        return DirectionVerdict(direction, Decision.ALLOWED, False)

    def verdict(self, flow: Any) -> Verdict:
        """Judge one Hubble flow (``Flow`` or ``CompactFlow``) at both enforcement points."""
        if _is_reply(flow):
            return Verdict(Decision.NOT_JUDGED, reason="reply")
        event = getattr(flow, "event_type", None)
        if event is not None and event.type in _NOT_TRAFFIC:
            return Verdict(Decision.NOT_JUDGED, reason="not traffic")
        ip = getattr(flow, "IP", None)
        src_ip = ip.source if ip is not None else ""
        dst_ip = ip.destination if ip is not None else ""
        src = self.view(getattr(flow, "source", None))
        dst = self.view(getattr(flow, "destination", None))
        l4 = l4_key(flow)
        egress = ingress = None
        if src.is_local_endpoint:
            names = _names(getattr(flow, "destination_names", ()) or ())
            if dst_ip in self.dns_names:
                names = tuple(dict.fromkeys(names + self.dns_names[dst_ip]))
            svc = getattr(flow, "destination_service", None)
            service = (svc.namespace, svc.name) if svc is not None and svc.name else None
            egress = self.judge(src, Peer(dst, _ip(dst_ip), names, service), EGRESS, l4)
        if dst.is_local_endpoint:
            names = _names(getattr(flow, "source_names", ()) or ())
            ingress = self.judge(dst, Peer(src, _ip(src_ip), names, None), INGRESS, l4)
        decision = Decision.ALLOWED
        for point in (egress, ingress):
            if point is not None and point.decision is not Decision.ALLOWED:
                decision = point.decision
                break
        return Verdict(decision, egress, ingress)


def _l3(rule: CompiledRule, peer: Peer, cache: dict[int, bool]) -> bool:
    key = id(rule)
    found = cache.get(key)
    if found is None:
        found = cache[key] = rule.matches_l3(peer)
    return found


def load_policies(docs: Iterable[Any]) -> list[Mapping[str, Any]]:
    """Keep the CNP/CCNP documents of a YAML stream (other kinds and empty documents dropped)."""
    return [d for d in docs if isinstance(d, Mapping) and d.get("kind") in (CNP, CCNP)]

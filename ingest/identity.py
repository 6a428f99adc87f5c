"""Who a flow's ends are: workload identities (window subjects) and peers.

Subject (the identity a window belongs to) is written ``namespace/workload`` and taken, in order,
from:

1. ``workloads[0].name`` (Hubble >= 1.13 fills it from the pod's owner);
2. the labels ``app.kubernetes.io/name``, ``app``, ``k8s-app`` (``k8s:`` source);
3. the pod name with its ReplicaSet and pod hash suffixes removed
   (``cart-7d9f8b6c5d-x2k4q`` -> ``cart``, ``postgres-0`` -> ``postgres``);
4. the Cilium security identity (``identity:12345``);
5. the IP address (``ip:10.244.1.7``).

The namespace is the endpoint's ``namespace`` or its ``k8s:io.kubernetes.pod.namespace`` label,
else ``unknown``. Reserved identities (host, world, kube-apiserver, health, remote-node, ...,
and CIDR/FQDN-selected addresses) are peers, never subjects.

Resolution runs once per distinct endpoint: results are cached by the endpoint's identifying
fields, so the per-flow cost is one dict lookup. The cache is bounded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final, Protocol

import msgspec

from netwarden.ingest.sketch import stable_hash64

__all__ = [
    "RESERVED_IDENTITIES",
    "EndpointLike",
    "IdentityResolver",
    "Peer",
    "Subject",
    "is_world_identity",
    "strip_pod_suffix",
]

#: Reserved numeric identities (pkg/identity/numericidentity.go).
RESERVED_IDENTITIES: Final[dict[int, str]] = {
    1: "host",
    2: "world",
    3: "unmanaged",
    4: "health",
    5: "init",
    6: "remote-node",
    7: "kube-apiserver",
    8: "ingress",
    9: "world-ipv4",
    10: "world-ipv6",
    11: "encrypted-overlay",
}
_WORLD_IDS: Final = frozenset({2, 9, 10})
#: Identities with this bit set are local-scope CIDR/FQDN identities: external addresses.
_LOCAL_SCOPE: Final = 1 << 24
_REMOTE_NODE_SCOPE: Final = 2 << 24
_APP_LABEL_KEYS: Final = ("app.kubernetes.io/name", "app", "k8s-app")
_NAMESPACE_LABEL: Final = "io.kubernetes.pod.namespace"
# Kubernetes' "safe" alphabet for generated name suffixes (no vowels, no 0/1/3).
_SAFE: Final = "[bcdfghjklmnpqrstvwxz2456789]"
_POD_SUFFIXES: Final = (
    re.compile(rf"^(?P<base>.+)-{_SAFE}{{6,10}}-{_SAFE}{{5}}$"),  # Deployment: rs hash + pod hash
    re.compile(rf"^(?P<base>.+)-\d{{8,10}}-{_SAFE}{{5}}$"),  # CronJob: job timestamp + pod hash
    re.compile(rf"^(?P<base>.+)-{_SAFE}{{5}}$"),  # DaemonSet, Job, bare ReplicaSet
    re.compile(r"^(?P<base>.+)-\d+$"),  # StatefulSet ordinal
)
_CACHE_LIMIT: Final = 1 << 16
_labels_decoder = msgspec.json.Decoder(list[str])


class _Workload(msgspec.Struct):
    name: str = ""


_workloads_decoder = msgspec.json.Decoder(list[_Workload])


class EndpointLike(Protocol):
    """The fields of a Hubble Endpoint that identity resolution reads."""

    identity: int
    namespace: str
    pod_name: str
    labels: Any  # list[str], or msgspec.Raw holding the JSON list
    workloads: Any


@dataclass(frozen=True, slots=True)
class Subject:
    """A workload that windows are built for."""

    id: str  # "namespace/workload"
    namespace: str
    workload: str


@dataclass(frozen=True, slots=True)
class Peer:
    """The far end of a flow, as a key stable across pods and replicas.

    ``key`` is the peer's subject id for workloads, ``reserved:<name>`` for reserved identities
    other than world, and ``world:<ip>`` for world (external) addresses.
    """

    key: str
    is_world: bool
    reserved: str  # reserved identity name, "" for workloads
    hash: int = 0  # stable 64-bit hash of ``key`` (same on every node), for sketches

    @classmethod
    def of(cls, key: str, is_world: bool = False, reserved: str = "") -> Peer:
        return cls(key, is_world, reserved, stable_hash64(key))


def is_world_identity(identity: int) -> bool:
    """World, world-ipv4/ipv6, or a local-scope CIDR/FQDN identity (an external address)."""
    return identity in _WORLD_IDS or _LOCAL_SCOPE <= identity < _REMOTE_NODE_SCOPE


def strip_pod_suffix(pod_name: str) -> str:
    """Remove ReplicaSet/pod hash or StatefulSet ordinal suffixes from a pod name.

    >>> strip_pod_suffix("reviews-v1-545db77b95-s6jb8"), strip_pod_suffix("postgres-0")
    ('reviews-v1', 'postgres')
    >>> strip_pod_suffix("node-exporter-x7k2p"), strip_pod_suffix("xwing")
    ('node-exporter', 'xwing')
    """
    for pattern in _POD_SUFFIXES:
        match = pattern.match(pod_name)
        if match:
            return match.group("base")
    return pod_name


def _label_list(labels: Any) -> list[str] | tuple[str, ...]:
    """Labels from a decoded list/tuple, raw JSON, or a protobuf repeated field."""
    if isinstance(labels, (tuple, list)):
        return labels
    if isinstance(labels, msgspec.Raw):
        raw = bytes(labels)
        if not raw:
            return []
        try:
            return _labels_decoder.decode(raw)
        except msgspec.MsgspecError:
            return []
    return list(labels) if labels is not None else []


def _first_workload(workloads: Any) -> str:
    """``workloads[0].name`` from a decoded list/tuple, raw JSON or a protobuf repeated field."""
    if isinstance(workloads, msgspec.Raw):
        raw = bytes(workloads)
        if not raw:
            return ""
        try:
            workloads = _workloads_decoder.decode(raw)
        except msgspec.MsgspecError:
            return ""
    return workloads[0].name if workloads else ""


def _parse_labels(labels: list[str] | tuple[str, ...]) -> tuple[dict[str, str], str]:
    """Split ``source:key=value`` labels; return k8s/unspecified-source labels and a reserved name."""
    k8s: dict[str, str] = {}
    reserved = ""
    for label in labels:
        source, sep, rest = label.partition(":")
        if not sep:
            source, rest = "", label
        key, _, value = rest.partition("=")
        if source == "reserved":
            if not reserved:
                reserved = key
        elif source in ("k8s", "", "any", "unspec"):
            k8s[key] = value
    return k8s, reserved


class IdentityResolver:
    """Resolves flow endpoints to subjects and peers, caching per distinct endpoint.

    Subjects are interned: the same workload always yields the same :class:`Subject` object,
    so callers may key dictionaries by it cheaply.
    """

    def __init__(self, *, cache_limit: int = _CACHE_LIMIT) -> None:
        self.cache: dict[tuple[Any, ...], tuple[Subject | None, Peer]] = {}
        self._subjects: dict[str, Subject] = {}
        self._cache_limit = cache_limit

    def resolve(
        self, endpoint: EndpointLike | None, ip: str, *, trim: bool = True
    ) -> tuple[Subject | None, Peer]:
        """Return ``(subject or None if reserved/world, peer)`` for one flow end.

        Results are cached under :meth:`cache_key`; hot loops may look up :attr:`cache` with
        that key themselves, call this only on a miss with ``trim=False`` (so entries they rely
        on stay) and call :meth:`trim` when done with them.
        """
        key = self.cache_key(endpoint, ip)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        if trim:
            self.trim()
        result = self.cache[key] = self._resolve(endpoint, ip)
        return result

    def ends(self, flow: Any) -> tuple[Subject | None, Peer, Subject | None, Peer]:
        """Both ends of ``flow`` resolved: (source subject, source peer, destination subject,
        destination peer), each with the flow's IP of that end."""
        ip = getattr(flow, "IP", None)
        src, src_peer = self.resolve(flow.source, ip.source if ip else "")
        dst, dst_peer = self.resolve(flow.destination, ip.destination if ip else "")
        return src, src_peer, dst, dst_peer

    def trim(self) -> None:
        """Bound the cache: empty it once it holds ``cache_limit`` endpoints."""
        if len(self.cache) >= self._cache_limit:
            self.cache.clear()

    @staticmethod
    def cache_key(endpoint: EndpointLike | None, ip: str) -> tuple[int, str, str, str]:
        """(identity, namespace, pod name, IP): what tells endpoints apart.

        A pod keeps its workload for life, so its labels need not be part of the key.
        """
        if endpoint is None:
            return (0, "", "", ip)
        return (endpoint.identity, endpoint.namespace, endpoint.pod_name, ip)

    def subject(self, namespace: str, workload: str) -> Subject:
        sid = f"{namespace}/{workload}"
        found = self._subjects.get(sid)
        if found is None:
            found = self._subjects[sid] = Subject(sid, namespace, workload)
        return found

    def _resolve(self, endpoint: EndpointLike | None, ip: str) -> tuple[Subject | None, Peer]:
        if endpoint is None:
            return self._anonymous(ip)
        labels = _label_list(endpoint.labels)
        k8s, reserved_label = _parse_labels(labels)
        ident = endpoint.identity
        reserved = RESERVED_IDENTITIES.get(ident, "") or reserved_label
        if is_world_identity(ident) or reserved in ("world", "world-ipv4", "world-ipv6"):
            # L7 proxy quirk: identity 2 with a pod name still means "world" to policy.
            return None, Peer.of(f"world:{ip}" if ip else "world:unknown", True, "world")
        if reserved:
            return None, Peer.of(f"reserved:{reserved}", False, reserved)
        namespace = endpoint.namespace or k8s.get(_NAMESPACE_LABEL, "")
        workload = _first_workload(endpoint.workloads)
        if not workload:
            for key in _APP_LABEL_KEYS:
                if k8s.get(key):
                    workload = k8s[key]
                    break
        if not workload and endpoint.pod_name:
            workload = strip_pod_suffix(endpoint.pod_name)
        if not workload and ident:
            workload = f"identity:{ident}"
        if not workload:
            if not namespace:
                return self._anonymous(ip)
            workload = f"ip:{ip}" if ip else "unknown"
        subject = self.subject(namespace or "unknown", workload)
        return subject, Peer.of(subject.id)

    def _anonymous(self, ip: str) -> tuple[Subject | None, Peer]:
        """No endpoint information at all (e.g. a field-masked export): the IP is all we have."""
        if not ip:
            return None, Peer.of("unknown")
        subject = self.subject("unknown", f"ip:{ip}")
        return subject, Peer.of(subject.id)

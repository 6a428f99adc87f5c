"""Pods of this node (or of the cluster), kept current by a list-then-watch.

The identity resolver maps a cgroup to a pod UID and a peer address to a pod; both need the
pods' metadata without asking the API server per event. :class:`PodWatch` lists pods (paged)
and then watches from the list's ``resourceVersion`` in a daemon thread, through the official
``kubernetes`` client (the loop, its resume/relist/backoff semantics and its handling of a
refusal are :class:`~netwarden.bpf.k8swatch.ListWatch`'s), keeping a :class:`PodIndex`:
UID -> pod, pod IP -> pod, and which node each node address belongs to as pods report it
(``hostIP``/``hostIPs``, and the IPs of host-network pods, which are their node's: such a pod
is never the owner of an IP, as in Cilium, whose ipcache skips them).
"""

from __future__ import annotations

import ipaddress
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from kubernetes import client as k8s

from netwarden.bpf.k8swatch import ListWatch, WatchStats

__all__ = [
    "PodIndex",
    "PodInfo",
    "PodWatch",
    "WatchStats",
    "api_client_from_environment",
    "workload_of",
]

_TERMINAL: Final = frozenset({"Succeeded", "Failed"})
#: the static pod's own UID (its manifest hash), which names its cgroup, on the mirror pod
MIRROR_ANNOTATION: Final = "kubernetes.io/config.mirror"


def workload_of(pod: Mapping[str, Any]) -> tuple[str, str] | None:
    """(name, kind) of the workload that owns a pod, with Cilium's heuristics
    (``pkg/k8s/utils/workload.go``): a ReplicaSet named ``<deployment>-<pod-template-hash>`` is
    its Deployment, a Job named ``<cronjob>-<8-10 digits>`` its CronJob, else the controller.
    None for pods with no generated name or no controller (bare and static pods).
    """
    meta = pod.get("metadata") or {}
    if not meta.get("generateName"):
        return None
    ref = next((r for r in meta.get("ownerReferences") or () if r.get("controller")), None)
    if ref is None:
        return None
    kind, name = ref.get("kind", ""), ref.get("name", "")
    labels = meta.get("labels") or {}
    template_hash = labels.get("pod-template-hash", "")
    if kind == "ReplicaSet" and template_hash and name.endswith(template_hash):
        return name.removesuffix(f"-{template_hash}"), "Deployment"
    if kind == "ReplicationController" and labels.get("deploymentconfig"):
        return labels["deploymentconfig"], "DeploymentConfig"
    if kind == "Job":
        base, _, stamp = name.rpartition("-")
        if base and stamp.isdigit() and 8 <= len(stamp) <= 10:
            return base, "CronJob"
    return name, kind


@dataclass(frozen=True, slots=True)
class PodInfo:
    """What identity resolution needs of a pod (decoded from its JSON)."""

    uid: str
    namespace: str
    name: str
    labels: tuple[tuple[str, str], ...]  # sorted (key, value)
    service_account: str
    node_name: str
    host_network: bool
    ips: tuple[str, ...]
    host_ip: str
    phase: str
    deleting: bool  # deletionTimestamp set: its IP may already belong to its successor
    workload: tuple[str, str] | None  # (name, kind)
    static_uid: str  # kubernetes.io/config.mirror of a mirror pod, else ""
    resource_version: str
    host_ips: tuple[
        str, ...
    ] = ()  # status.hostIPs (Kubernetes 1.28+: both families), else (host_ip,)

    @classmethod
    def from_dict(cls, pod: Mapping[str, Any]) -> PodInfo:
        """From a pod as the API server sends it (camelCase JSON)."""
        meta = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        status = pod.get("status") or {}
        ips = [p.get("ip", "") for p in status.get("podIPs") or ()] or [status.get("podIP") or ""]
        host_ips = [h.get("ip", "") for h in status.get("hostIPs") or ()] or [
            status.get("hostIP") or ""
        ]
        return cls(
            uid=meta.get("uid", ""),
            namespace=meta.get("namespace", ""),
            name=meta.get("name", ""),
            labels=tuple(sorted((meta.get("labels") or {}).items())),
            service_account=spec.get("serviceAccountName") or spec.get("serviceAccount") or "",
            node_name=spec.get("nodeName") or "",
            host_network=bool(spec.get("hostNetwork")),
            ips=tuple(_canonical(ip) for ip in ips if ip),
            host_ip=_canonical(status.get("hostIP") or ""),
            phase=status.get("phase") or "",
            deleting=bool(meta.get("deletionTimestamp")),
            workload=workload_of(pod),
            static_uid=(meta.get("annotations") or {}).get(MIRROR_ANNOTATION, ""),
            resource_version=meta.get("resourceVersion", ""),
            host_ips=tuple(_canonical(ip) for ip in host_ips if ip),
        )

    def node_addresses(self) -> frozenset[str]:
        """The addresses this pod shows to be its node's: its host IPs, and its own IPs when it
        uses the host's network."""
        found = {*self.host_ips, self.host_ip} - {""}
        if self.host_network:
            found.update(self.ips)
        return frozenset(found)


def _canonical(ip: str) -> str:
    """One spelling per address (the resolver looks addresses up as text)."""
    try:
        return ipaddress.ip_address(ip).compressed
    except ValueError:
        return ip


class PodIndex:
    """Pods by UID and by IP, and node addresses by node, safe to read while a watch thread writes.

    ``generation`` grows with every change, so a reader can cache what it derived from the
    index and know when to derive it again. At most ``max_pods`` pods are kept (further ones
    are counted in ``dropped``): a node agent watching its node holds ~100, a cluster-wide
    watch of a 5,000-node cluster ~150,000.
    """

    def __init__(self, *, max_pods: int = 250_000) -> None:
        self.max_pods = max_pods
        self.generation = 0
        self.dropped = 0
        self._lock = threading.Lock()
        self._by_uid: dict[str, PodInfo] = {}
        self._by_static: dict[str, str] = {}  # static pod hash -> mirror pod UID
        self._by_ip: dict[str, str] = {}  # IP -> UID
        self._node_addrs: dict[
            str, Counter[str]
        ] = {}  # node address -> node name -> pods saying so

    def by_uid(self, uid: str) -> PodInfo | None:
        """A pod by ``metadata.uid``, or a static pod by the UID in its cgroup path."""
        with self._lock:
            pod = self._by_uid.get(uid)
            if pod is None and (mirror := self._by_static.get(uid)) is not None:
                pod = self._by_uid.get(mirror)
            return pod

    def by_ip(self, ip: str) -> PodInfo | None:
        """The running pod that has this IP (never a host-network pod)."""
        with self._lock:
            uid = self._by_ip.get(ip)
            return None if uid is None else self._by_uid.get(uid)

    def host_ips(self) -> frozenset[str]:
        """Node addresses, as pods report them (:meth:`PodInfo.node_addresses`)."""
        with self._lock:
            return frozenset(self._node_addrs)

    def node_of_address(self, ip: str) -> str | None:
        """The node whose address this is, as its pods report it (the name most of them give;
        "" when they give none); None when no pod reports it."""
        with self._lock:
            nodes = self._node_addrs.get(ip)
            return nodes.most_common(1)[0][0] if nodes else None

    def pods(self) -> list[PodInfo]:
        with self._lock:
            return list(self._by_uid.values())

    def __len__(self) -> int:
        return len(self._by_uid)

    def upsert(self, pod: PodInfo) -> None:
        with self._lock:
            if pod.uid not in self._by_uid and len(self._by_uid) >= self.max_pods:
                self.dropped += 1
                return
            self._unindex(pod.uid)
            self._index(pod)
            self.generation += 1

    def remove(self, uid: str) -> None:
        with self._lock:
            self._unindex(uid)
            self.generation += 1

    def replace(self, pods: Iterable[PodInfo]) -> None:
        """Make the index hold exactly these pods (after a list)."""
        with self._lock:
            self._by_uid.clear()
            self._by_static.clear()
            self._by_ip.clear()
            self._node_addrs.clear()
            for pod in pods:
                if len(self._by_uid) >= self.max_pods:
                    self.dropped += 1
                    continue
                self._index(pod)
            self.generation += 1

    def _index(self, pod: PodInfo) -> None:
        self._by_uid[pod.uid] = pod
        if pod.static_uid:
            self._by_static[pod.static_uid] = pod.uid
        for address in pod.node_addresses():
            self._node_addrs.setdefault(address, Counter())[pod.node_name] += 1
        if pod.host_network or pod.phase in _TERMINAL:
            return
        for ip in pod.ips:
            holder = self._by_ip.get(ip)
            # a terminating pod does not take its IP back from the pod that reuses it
            if holder is None or not pod.deleting or holder == pod.uid:
                self._by_ip[ip] = pod.uid

    def _unindex(self, uid: str) -> None:
        old = self._by_uid.pop(uid, None)
        if old is None:
            return
        if old.static_uid and self._by_static.get(old.static_uid) == uid:
            del self._by_static[old.static_uid]
        for address in old.node_addresses():
            nodes = self._node_addrs[address]
            nodes[old.node_name] -= 1
            if nodes[old.node_name] <= 0:
                del nodes[old.node_name]
                if not nodes:
                    del self._node_addrs[address]
        for ip in old.ips:
            if self._by_ip.get(ip) == uid:
                del self._by_ip[ip]


class PodWatch(ListWatch[PodInfo]):
    """List then watch pods into a :class:`PodIndex`, in a daemon thread.

    ``node_name`` limits it to one node's pods (``fieldSelector=spec.nodeName=<node>``, what a
    DaemonSet agent wants); None watches every pod (to recognise pods of other nodes as peers
    and other nodes' addresses as remote nodes). Other options: :class:`ListWatch`.
    """

    resource = "pods"
    without = "pod identities (peers and sockets resolve to host, world or their netns)"
    index: PodIndex

    def __init__(self, api: k8s.ApiClient, *, node_name: str | None = None,
                 index: PodIndex | None = None, **options: Any) -> None:  # fmt: skip
        super().__init__(api, **options)
        self.node_name = node_name
        self.index = index if index is not None else PodIndex()

    @property
    def field_selector(self) -> str | None:
        return f"spec.nodeName={self.node_name}" if self.node_name else None

    def _request(self, **kwargs: Any) -> Any:
        return self.core.list_pod_for_all_namespaces(field_selector=self.field_selector, **kwargs)

    def _decode(self, obj: Mapping[str, Any]) -> PodInfo:
        return PodInfo.from_dict(obj)

    def _replace(self, items: list[PodInfo]) -> None:
        self.index.replace(items)

    def _upsert(self, item: PodInfo) -> None:
        self.index.upsert(item)

    def _remove(self, item: PodInfo) -> None:
        self.index.remove(item.uid)


def api_client_from_environment(
    kubeconfig: str | None = None, context: str | None = None
) -> k8s.ApiClient:
    """An API client from the pod's service account, else from a kubeconfig file."""
    from kubernetes import config

    if kubeconfig is None:
        try:
            config.load_incluster_config()
            return k8s.ApiClient()
        except config.ConfigException:
            pass
    return config.new_client_from_config(config_file=kubeconfig, context=context)

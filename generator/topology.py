"""A small, seeded Kubernetes cluster: nodes, namespaces, workloads, pods and reserved peers.

The generator needs stable, realistic names and numbers (identities, pod names, IPs, endpoint
IDs) so that the flows it writes look like ``hubble observe -o json`` from a real cluster. The
*shape* of the application (which workloads exist, who talks to whom) comes from a
:class:`~.spec.ClusterSpec`; the seed varies replica counts, pod placement, hashes and addresses.
Pods that appear later (a new Deployment, an autoscaled replica, a rescheduled pod, a Job) are
made by :meth:`Topology.spawn_pod`, from addresses that the pods built here never use.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from .clusters import DEMO
from .spec import ClusterSpec, WorkloadSpec

__all__ = [
    "CLUSTER",
    "Endpoint",
    "Node",
    "Topology",
    "Workload",
    "WorldService",
    "build_topology",
    "workload_labels",
]

CLUSTER = DEMO.name
_SAFE = "bcdfghjklmnpqrstvwxz2456789"  # k8s rand.SafeEncodeString alphabet (pod-name suffixes)
KUBE_DNS_IDENTITY = 102  # well-known identity of the kube-dns pods (INTERFACES.md §4.1)
DNS = "kube-system/coredns"
_SPAWN_HOSTS = range(100, 200)  # host part of pods made after the start (changes)


@dataclass(frozen=True)
class Node:
    """A cluster node; ``lag_ns`` models how late its Hubble stream reaches the merged output."""

    index: int
    name: str
    ip: str
    labels: tuple[str, ...]
    lag_ns: int
    cluster: str = CLUSTER
    zone: str = ""

    @property
    def full_name(self) -> str:
        return f"{self.cluster}/{self.name}"


@dataclass(eq=False)
class Endpoint:
    """One side of a flow as Hubble shows it: a pod or a reserved identity (world, host, ...).

    A pod with no owner (``kubectl run``) has no ``workload``: Hubble then leaves ``workloads``
    out, as Cilium finds no controller to name."""

    key: int
    identity: int
    labels: tuple[str, ...]
    namespace: str = ""
    pod_name: str = ""
    workload: str = ""
    kind: str = ""
    endpoint_id: int = 0
    node: Node | None = None
    ip: str = ""
    mac: str = ""
    ifindex: int = 0
    port: int = 0  # serving container port (pods only)
    cluster: str = CLUSTER

    @property
    def is_pod(self) -> bool:
        return self.node is not None

    def as_json(self, observed_on: Node | None) -> dict[str, object]:
        """The protojson ``Endpoint``; ``ID`` only appears on the node that hosts the pod."""
        out: dict[str, object] = {}
        if self.node is not None and observed_on is self.node:
            out["ID"] = self.endpoint_id
        out["identity"] = self.identity
        if self.namespace:
            out["cluster_name"] = self.cluster
            out["namespace"] = self.namespace
        out["labels"] = list(self.labels)
        if self.pod_name:
            out["pod_name"] = self.pod_name
            if self.workload:
                out["workloads"] = [{"name": self.workload, "kind": self.kind}]
        return out


@dataclass
class Workload:
    """A Deployment/StatefulSet/DaemonSet and its pods; ``ident`` is ``namespace/name``."""

    namespace: str
    name: str
    kind: str
    port: int
    metrics_port: int | None
    identity: int
    labels: tuple[str, ...]
    cluster_ip: str
    pods: list[Endpoint] = field(default_factory=list)

    @property
    def ident(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class WorldService:
    """An external dependency reached by FQDN (IPs only from the documentation ranges)."""

    fqdn: str
    ips: tuple[str, ...]
    port: int


@dataclass
class Topology:
    nodes: list[Node]
    workloads: dict[str, Workload]
    world: Endpoint
    host: dict[int, Endpoint]  # node index -> reserved:host endpoint seen on that node
    remote_node: Endpoint
    kube_apiserver: Endpoint  # apiserver seen from a node that does not run it
    host_apiserver: Endpoint  # apiserver seen from the control-plane node itself
    apiserver_ip: str
    world_services: dict[str, WorldService]
    dns_upstream: WorldService
    spec: ClusterSpec = DEMO
    apiserver_node: Node | None = None  # the node that runs the apiserver, if in the cluster
    cordoned: set[int] = field(default_factory=set)  # nodes no new pod is scheduled on
    # coredns replica slot -> (time its Corefile reload took effect, the new upstream)
    upstream_switch: dict[int, tuple[int, WorldService]] = field(default_factory=dict)
    _next_key: int = 0
    _used_ips: set[str] = field(default_factory=set)
    _used_ids: dict[int, set[int]] = field(default_factory=dict)

    @property
    def cluster(self) -> str:
        return self.spec.name

    @property
    def workers(self) -> list[Node]:
        """Nodes that run application pods (not the control plane)."""
        return [n for n in self.nodes if n is not self.apiserver_node]

    def schedulable(self) -> list[Node]:
        """Workers a new pod may land on (not cordoned)."""
        return [n for n in self.workers if n.index not in self.cordoned]

    def endpoint_ids(self) -> dict[int, set[int]]:
        """Endpoint IDs in use per node index (a copy)."""
        return {n: set(ids) for n, ids in self._used_ids.items()}

    def upstream_for(self, dns_pod: Endpoint, t_ns: int) -> WorldService:
        """The resolver the CoreDNS pod forwards to at ``t_ns`` (its Corefile may have changed)."""
        if self.upstream_switch:
            pods = self.workloads[DNS].pods
            slot = pods.index(dns_pod) if dns_pod in pods else 0
            switch = self.upstream_switch.get(slot)
            if switch is not None and t_ns >= switch[0]:
                return switch[1]
        return self.dns_upstream

    def new_workload(
        self,
        namespace: str,
        name: str,
        kind: str,
        port: int,
        metrics_port: int | None,
        rnd: random.Random,
        *,
        extra_labels: tuple[str, ...] = (),
        app_label: bool = True,
        service: bool = True,
    ) -> Workload:
        """A workload that is not in the spec (a new Deployment, a Job, a bare debug pod).

        It is labelled like its namespace's workloads (same app label key) unless
        ``app_label`` is False (``kubectl run`` sets only ``run=<name>``, in ``extra_labels``);
        a bare pod runs as the ``default`` service account and has no Service."""
        keys = [w.app_key for w in self.spec.workloads if w.name != "coredns"]
        app_key = next(
            (w.app_key for w in self.spec.workloads if w.namespace == namespace),
            max(set(keys), key=keys.count),
        )
        if app_label:
            labels = _labels(namespace, app_key, name, name, self.cluster, extra_labels)
        else:
            labels = _labels(namespace, "", "", "default", self.cluster, extra_labels)
        cip = f"{self.spec.service_prefix}.{rnd.randrange(1, 255)}.{rnd.randrange(1, 255)}"
        return Workload(
            namespace,
            name,
            kind,
            port,
            metrics_port,
            _identity(labels),
            labels,
            cip if service else "",
        )

    def spawn_pod(
        self, wl: Workload, node: Node, rnd: random.Random, pod_name: str, *, host: int = 0
    ) -> Endpoint:
        """A new pod of ``wl`` on ``node`` (not added to ``wl.pods``: the caller decides when)."""
        if not host:
            host = next((h for h in _SPAWN_HOSTS if self._pod_ip(node, h) not in self._used_ips), 0)
            if not host:
                raise RuntimeError(f"no free pod address left on {node.name}")
        ip = self._pod_ip(node, host)
        self._used_ips.add(ip)
        used = self._used_ids.setdefault(node.index, set())
        ep_id = rnd.randrange(1, 4096)
        while ep_id in used:
            ep_id = rnd.randrange(1, 4096)
        used.add(ep_id)
        self._next_key += 1
        return Endpoint(
            self._next_key,
            wl.identity,
            wl.labels,
            wl.namespace,
            pod_name,
            wl.name if wl.kind != "Pod" else "",
            wl.kind,
            ep_id,
            node,
            ip,
            _mac(rnd),
            rnd.randrange(8, 120),
            wl.port,
            self.cluster,
        )

    def replica_name(self, wl: Workload, rnd: random.Random, ordinal: int = -1) -> str:
        """The name a new replica of ``wl`` gets: same ReplicaSet hash, new suffix (Deployment),
        or the ordinal (StatefulSet)."""
        if wl.kind == "StatefulSet":
            return f"{wl.name}-{ordinal if ordinal >= 0 else len(wl.pods)}"
        base = wl.pods[0].pod_name.rsplit("-", 1)[0] if wl.pods else wl.name
        return f"{base}-{pod_suffix(rnd)}"

    def _pod_ip(self, node: Node, host: int) -> str:
        return f"{self.spec.pod_prefix}.{node.index}.{host}"


# -- building -----------------------------------------------------------------------------------
def pod_suffix(rnd: random.Random, n: int = 5) -> str:
    """A random pod-name suffix in Kubernetes' safe alphabet."""
    return "".join(rnd.choice(_SAFE) for _ in range(n))


def _identity(labels: tuple[str, ...]) -> int:
    """Stable cluster-local identity (256..65535) for a label set, as the allocator would keep."""
    digest = hashlib.sha256("\n".join(labels).encode()).digest()
    return 256 + int.from_bytes(digest[:4], "big") % (65536 - 256)


def _labels(
    ns: str,
    app_key: str,
    app: str,
    sa: str,
    cluster: str = CLUSTER,
    extra: tuple[str, ...] = (),
) -> tuple[str, ...]:
    return tuple(
        sorted(
            (
                *((f"k8s:{app_key}={app}",) if app_key else ()),
                f"k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name={ns}",
                f"k8s:io.cilium.k8s.policy.cluster={cluster}",
                f"k8s:io.cilium.k8s.policy.serviceaccount={sa}",
                f"k8s:io.kubernetes.pod.namespace={ns}",
                *extra,
            )
        )
    )


def workload_labels(spec: ClusterSpec, ws: WorkloadSpec) -> tuple[str, ...]:
    """The identity labels of a spec workload (coredns keeps its ``k8s-app=kube-dns``)."""
    app = "kube-dns" if ws.name == "coredns" else ws.name
    return _labels(ws.namespace, ws.app_key, app, ws.service_account, spec.name)


def _mac(rnd: random.Random) -> str:
    first = (rnd.randrange(256) & 0xFC) | 0x02  # locally administered, unicast
    return ":".join(f"{b:02x}" for b in [first, *(rnd.randrange(256) for _ in range(5))])


def _node_labels(spec: ClusterSpec, name: str, zone: str, control_plane: bool) -> tuple[str, ...]:
    if spec.style == "eks":
        labels: tuple[str, ...] = (
            "eks.amazonaws.com/nodegroup=general",
            "kubernetes.io/arch=amd64",
            f"kubernetes.io/hostname={name}",
            "kubernetes.io/os=linux",
            "node.kubernetes.io/instance-type=m6i.2xlarge",
            f"topology.kubernetes.io/region={spec.region}",
            f"topology.kubernetes.io/zone={spec.region}{zone}",
        )
    else:
        labels = (
            "beta.kubernetes.io/arch=amd64",
            "beta.kubernetes.io/os=linux",
            f"kubernetes.io/hostname={spec.name}-{name}",
            "kubernetes.io/os=linux",
            f"topology.kubernetes.io/zone={spec.region}{zone}",
            *(("node-role.kubernetes.io/control-plane=",) if control_plane else ()),
        )
    return tuple(sorted(labels))


def build_topology(rnd: random.Random, spec: ClusterSpec = DEMO) -> Topology:
    """Build the seeded cluster of ``spec`` (``demo``: 1 control plane + 4 workers, 13 workloads)."""
    nodes = []
    for i, ns in enumerate(spec.nodes):
        node_labels = _node_labels(spec, ns.name, ns.zone, ns.control_plane)
        lag = rnd.randrange(0, 1_500_000_000)  # each node's stream arrives 0-1.5 s late
        name = f"{spec.name}-{ns.name}" if spec.style == "kind" else ns.name
        nodes.append(Node(i, name, ns.ip, node_labels, lag, spec.name, ns.zone))
    control = next((n for n, s in zip(nodes, spec.nodes) if s.control_plane), None)
    workers = [n for n in nodes if n is not control]
    next_host = {n.index: 10 for n in nodes}
    used_ids: dict[int, set[int]] = {n.index: set() for n in nodes}
    used_ips: set[str] = set()
    key = 0
    workloads: dict[str, Workload] = {}
    for ws in spec.workloads:
        ns, name, kind, port = ws.namespace, ws.name, ws.kind, ws.port
        labels = workload_labels(spec, ws)
        ident = KUBE_DNS_IDENTITY if name == "coredns" else _identity(labels)
        cip = f"{spec.service_prefix}.{rnd.randrange(1, 255)}.{rnd.randrange(1, 255)}"
        wl = Workload(ns, name, kind, port, ws.metrics_port, ident, labels, cip)
        daemon = kind == "DaemonSet"
        replicas = len(nodes) if daemon else rnd.randint(*ws.replicas)
        rs_hash = "" if daemon else "".join(rnd.choice(_SAFE) for _ in range(rnd.choice((9, 10))))
        pool = nodes if name == "coredns" or daemon else workers
        first = 0 if daemon else rnd.randrange(len(pool))
        for r in range(replicas):
            node = pool[(first + r) % len(pool)]  # spread replicas like anti-affinity would
            if kind == "StatefulSet":
                pod_name = f"{name}-{r}"
            elif daemon:
                pod_name = f"{name}-{pod_suffix(rnd)}"
            else:
                pod_name = f"{name}-{rs_hash}-{''.join(rnd.choice(_SAFE) for _ in range(5))}"
            host = next_host[node.index]
            next_host[node.index] += rnd.randint(1, 7)
            ep_id = rnd.randrange(1, 4096)
            while ep_id in used_ids[node.index]:
                ep_id = rnd.randrange(1, 4096)
            used_ids[node.index].add(ep_id)
            ip = f"{spec.pod_prefix}.{node.index}.{host}"
            used_ips.add(ip)
            wl.pods.append(
                Endpoint(
                    key,
                    ident,
                    labels,
                    ns,
                    pod_name,
                    name,
                    kind,
                    ep_id,
                    node,
                    ip,
                    _mac(rnd),
                    rnd.randrange(8, 120),
                    port,
                    spec.name,
                )
            )
            key += 1
        workloads[wl.ident] = wl

    def reserved(identity: int, *labels: str) -> Endpoint:
        nonlocal key
        key += 1
        return Endpoint(key, identity, tuple(sorted(labels)), cluster=spec.name)

    world = reserved(2, "reserved:world")
    host = {n.index: reserved(1, "reserved:host") for n in nodes}
    remote = reserved(6, "reserved:remote-node")
    if control is not None:
        apiserver = reserved(7, "reserved:kube-apiserver", "reserved:remote-node")
    else:  # a managed control plane: the apiserver is outside the cluster
        apiserver = reserved(7, "reserved:kube-apiserver", "reserved:world")
    host_api = reserved(1, "reserved:host", "reserved:kube-apiserver")
    services = {f: WorldService(f, ips, 443) for f, ips in spec.world_services.items()}
    upstream = WorldService("dns-upstream", (spec.dns_upstream,), 53)
    return Topology(
        nodes,
        workloads,
        world,
        host,
        remote,
        apiserver,
        host_api,
        spec.apiserver_ip,
        services,
        upstream,
        spec,
        control,
        _next_key=max(key, 1 << 20),
        _used_ips=used_ips,
        _used_ids=used_ids,
    )

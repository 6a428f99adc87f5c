"""A small, seeded Kubernetes cluster: nodes, namespaces, workloads, pods and reserved peers.

The generator needs stable, realistic names and numbers (identities, pod names, IPs, endpoint
IDs) so that the flows it writes look like ``hubble observe -o json`` from a real cluster. The
*shape* of the application (which workloads exist, who talks to whom) is fixed; the seed varies
replica counts, pod placement, hashes and addresses.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

__all__ = [
    "CLUSTER",
    "Endpoint",
    "Node",
    "Topology",
    "Workload",
    "WorldService",
    "build_topology",
]

CLUSTER = "netwarden-demo"
_SAFE = "bcdfghjklmnpqrstvwxz2456789"  # k8s rand.SafeEncodeString alphabet (pod-name suffixes)
KUBE_DNS_IDENTITY = 102  # well-known identity of the kube-dns pods (INTERFACES.md §4.1)


@dataclass(frozen=True)
class Node:
    """A cluster node; ``lag_ns`` models how late its Hubble stream reaches the merged output."""

    index: int
    name: str
    ip: str
    labels: tuple[str, ...]
    lag_ns: int

    @property
    def full_name(self) -> str:
        return f"{CLUSTER}/{self.name}"


@dataclass(eq=False)
class Endpoint:
    """One side of a flow as Hubble shows it: a pod or a reserved identity (world, host, ...)."""

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
            out["cluster_name"] = CLUSTER
            out["namespace"] = self.namespace
        out["labels"] = list(self.labels)
        if self.pod_name:
            out["pod_name"] = self.pod_name
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


# namespace, name, kind, container port, metrics port, replica range, service account, app key
_SPECS: tuple[tuple[str, str, str, int, int | None, tuple[int, int], str, str], ...] = (
    (
        "ingress-nginx",
        "ingress-nginx-controller",
        "Deployment",
        443,
        10254,
        (2, 2),
        "ingress-nginx",
        "app.kubernetes.io/name",
    ),
    ("shop", "storefront", "Deployment", 8080, 8080, (2, 4), "storefront", "app"),
    ("shop", "catalog", "Deployment", 8080, 8080, (2, 3), "catalog", "app"),
    ("shop", "recommendations", "Deployment", 8080, 8080, (1, 2), "recommendations", "app"),
    ("shop", "mailer", "Deployment", 8080, None, (1, 1), "mailer", "app"),
    ("checkout", "cart", "Deployment", 8080, 8080, (2, 3), "cart", "app"),
    ("checkout", "payments", "Deployment", 8080, 8080, (2, 2), "payments", "app"),
    ("checkout", "orders", "Deployment", 8080, 8080, (1, 2), "orders", "app"),
    ("db", "postgres", "StatefulSet", 5432, 9187, (1, 2), "postgres", "app"),
    ("db", "redis", "StatefulSet", 6379, 9121, (1, 1), "redis", "app"),
    ("monitoring", "prometheus", "StatefulSet", 9090, None, (1, 1), "prometheus", "app"),
    ("monitoring", "grafana", "Deployment", 3000, None, (1, 1), "grafana", "app"),
    ("kube-system", "coredns", "Deployment", 53, 9153, (2, 2), "coredns", "k8s-app"),
)

_WORLD_SERVICES = {
    "api.stripe.com": ("203.0.113.10", "203.0.113.11"),
    "api.sendgrid.com": ("203.0.113.40",),
    "o4507.ingest.sentry.io": ("203.0.113.70",),
}


def _identity(labels: tuple[str, ...]) -> int:
    """Stable cluster-local identity (256..65535) for a label set, as the allocator would keep."""
    digest = hashlib.sha256("\n".join(labels).encode()).digest()
    return 256 + int.from_bytes(digest[:4], "big") % (65536 - 256)


def _labels(ns: str, app_key: str, app: str, sa: str) -> tuple[str, ...]:
    return tuple(
        sorted(
            (
                f"k8s:{app_key}={app}",
                f"k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name={ns}",
                f"k8s:io.cilium.k8s.policy.cluster={CLUSTER}",
                f"k8s:io.cilium.k8s.policy.serviceaccount={sa}",
                f"k8s:io.kubernetes.pod.namespace={ns}",
            )
        )
    )


def _mac(rnd: random.Random) -> str:
    first = (rnd.randrange(256) & 0xFC) | 0x02  # locally administered, unicast
    return ":".join(f"{b:02x}" for b in [first, *(rnd.randrange(256) for _ in range(5))])


def build_topology(rnd: random.Random) -> Topology:
    """Build the seeded cluster: 1 control plane + 4 workers, 6 namespaces, 13 workloads."""
    names = ["control-plane", "worker-1", "worker-2", "worker-3", "worker-4"]
    zones = ["a", "a", "b", "b", "c"]
    nodes = []
    for i, (n, z) in enumerate(zip(names, zones)):
        node_labels = tuple(
            sorted(
                (
                    "beta.kubernetes.io/arch=amd64",
                    "beta.kubernetes.io/os=linux",
                    f"kubernetes.io/hostname={CLUSTER}-{n}",
                    "kubernetes.io/os=linux",
                    f"topology.kubernetes.io/zone=eu-west-1{z}",
                    *(("node-role.kubernetes.io/control-plane=",) if i == 0 else ()),
                )
            )
        )
        lag = rnd.randrange(0, 1_500_000_000)  # each node's stream arrives 0-1.5 s late
        nodes.append(Node(i, f"{CLUSTER}-{n}", f"172.18.0.{i + 2}", node_labels, lag))
    workers = nodes[1:]
    next_host = {n.index: 10 for n in nodes}
    used_ids: dict[int, set[int]] = {n.index: set() for n in nodes}
    key = 0
    workloads: dict[str, Workload] = {}
    for ns, name, kind, port, mport, (lo, hi), sa, app_key in _SPECS:
        labels = _labels(ns, app_key, "kube-dns" if name == "coredns" else name, sa)
        ident = KUBE_DNS_IDENTITY if name == "coredns" else _identity(labels)
        cip = f"10.96.{rnd.randrange(1, 255)}.{rnd.randrange(1, 255)}"
        wl = Workload(ns, name, kind, port, mport, ident, labels, cip)
        replicas = rnd.randint(lo, hi)
        rs_hash = "".join(rnd.choice(_SAFE) for _ in range(rnd.choice((9, 10))))
        pool = nodes if name == "coredns" else workers
        first = rnd.randrange(len(pool))
        for r in range(replicas):
            node = pool[(first + r) % len(pool)]  # spread replicas like anti-affinity would
            if kind == "StatefulSet":
                pod_name = f"{name}-{r}"
            else:
                pod_name = f"{name}-{rs_hash}-{''.join(rnd.choice(_SAFE) for _ in range(5))}"
            host = next_host[node.index]
            next_host[node.index] += rnd.randint(1, 7)
            ep_id = rnd.randrange(1, 4096)
            while ep_id in used_ids[node.index]:
                ep_id = rnd.randrange(1, 4096)
            used_ids[node.index].add(ep_id)
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
                    f"10.244.{node.index}.{host}",
                    _mac(rnd),
                    rnd.randrange(8, 120),
                    port,
                )
            )
            key += 1
        workloads[wl.ident] = wl

    def reserved(identity: int, *labels: str) -> Endpoint:
        nonlocal key
        key += 1
        return Endpoint(key, identity, tuple(sorted(labels)))

    world = reserved(2, "reserved:world")
    host = {n.index: reserved(1, "reserved:host") for n in nodes}
    remote = reserved(6, "reserved:remote-node")
    apiserver = reserved(7, "reserved:kube-apiserver", "reserved:remote-node")
    host_api = reserved(1, "reserved:host", "reserved:kube-apiserver")
    services = {f: WorldService(f, ips, 443) for f, ips in _WORLD_SERVICES.items()}
    upstream = WorldService("dns-upstream", ("192.0.2.53",), 53)
    return Topology(
        nodes, workloads, world, host, remote, apiserver, host_api, nodes[0].ip, services, upstream
    )

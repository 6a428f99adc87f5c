"""What a simulated cluster is made of, as plain data: one :class:`ClusterSpec` per cluster shape.

Everything that differs between clusters (nodes, workloads, who calls whom and how often, the
load curve, DNS habits, monitoring, batch jobs, and which workloads play which part in attacks
and benign changes) lives in a spec, so topology, traffic, attacks and changes read it instead of
naming workloads themselves. The specs themselves are in :mod:`.clusters`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "ClusterSpec",
    "DnsHabits",
    "Edge",
    "JobRole",
    "NewServiceRole",
    "NightlyJob",
    "NodeSpec",
    "Periodic",
    "Roles",
    "SaasRole",
    "WorkloadSpec",
]

Requests = tuple[tuple[str, str], ...]  # (method, path template) pairs


@dataclass(frozen=True)
class NodeSpec:
    """A node: its name, zone, InternalIP and whether it runs the control plane."""

    name: str
    zone: str
    ip: str
    control_plane: bool = False


@dataclass(frozen=True)
class WorkloadSpec:
    """A Deployment/StatefulSet/DaemonSet; ``replicas`` is drawn per seed (DaemonSets: one per
    node)."""

    namespace: str
    name: str
    kind: str
    port: int
    metrics_port: int | None
    replicas: tuple[int, int]
    service_account: str
    app_key: str


@dataclass(frozen=True)
class Edge:
    """A normal dependency: ``client`` calls ``server`` about ``per_min`` times a minute at peak."""

    client: str  # workload ident, or "world" for internet users
    server: str  # workload ident, or "world:<fqdn>"
    kind: str  # "http" | "tcp" | "tls" | "ingress"
    per_min: float
    requests: Requests = ()


@dataclass(frozen=True)
class Periodic:
    """Background that runs on a timer whatever the users do (log shipping, consumer polls):
    every pod of ``client`` talks to ``server`` every ``period_s`` on a kept-alive connection."""

    client: str
    server: str
    kind: str  # "http" | "tcp"
    period_s: float
    requests: Requests = ()


@dataclass(frozen=True)
class NightlyJob:
    """A CronJob that runs every night at ``hour_utc`` for ``minutes`` (a range), so it is part
    of normal traffic: it reads ``reads`` (a workload) and uploads to ``uploads`` (an FQDN)."""

    namespace: str
    name: str
    hour_utc: float
    minutes: tuple[int, int]
    reads: str
    calls: str  # an HTTP service it reports to
    call: tuple[str, str]
    uploads: str
    metrics_port: int | None


@dataclass(frozen=True)
class DnsHabits:
    """How the cluster's pods resolve names.

    ``lookup``: the chance a request of each edge kind starts with a lookup (the rest reuse a
    cached answer or an open connection); ``aaaa``: the chance a lookup also asks AAAA (musl
    and dual-stack glibc ask both); ``search``: search domains after the cluster's own (from the
    node's resolv.conf, as ``dnsPolicy: ClusterFirst`` appends them); ``forward_misses``: CoreDNS
    forwards names outside the cluster domain, NXDOMAIN ones included, to the upstream.
    """

    lookup: dict[str, float]
    aaaa: float = 0.3
    search: tuple[str, ...] = ()
    forward_misses: bool = False


@dataclass(frozen=True)
class NewServiceRole:
    """A Deployment that may appear (``new_service``): who calls it and what it depends on."""

    namespace: str
    name: str
    caller: str
    dependency: str
    requests: Requests
    per_min: float


@dataclass(frozen=True)
class SaasRole:
    """An existing service that may start calling a new external vendor (``new_saas_vendor``)."""

    caller: str
    fqdn: str
    per_min: float


@dataclass(frozen=True)
class JobRole:
    """A one-off Job/CronJob (``new_job``): what it reads (a data store in its own namespace,
    ``via="tcp"``, or a service, ``via="http"`` with ``requests``) and where it uploads."""

    namespace: str
    name: str
    kind: str  # "Job" | "CronJob"
    reads: str
    via: str
    requests: Requests = ()
    uploads: str = ""


@dataclass(frozen=True)
class Roles:
    """Which workloads play which part in attacks and changes on this cluster."""

    port_scan: tuple[str, ...]
    lateral: tuple[tuple[str, str], ...]
    exfiltration: tuple[str, ...]
    dns_tunnel: tuple[str, ...]
    apps: tuple[str, ...]  # c2_beacon, drop_storm, slow_beacon
    slow_lateral: tuple[tuple[str, str], ...]  # (app, data store in another namespace)
    slow_scan: tuple[str, ...]  # attackers; the peer is one of their normal servers
    new_service: tuple[NewServiceRole, ...]
    saas: tuple[SaasRole, ...]
    new_job: tuple[JobRole, ...]
    debug_namespaces: tuple[str, ...]
    autoscaled: tuple[tuple[str, int, int], ...]  # (workload, extra replicas lo, hi) under HPA
    policy_namespaces: tuple[str, ...]  # ingress policy allows only the service ports here


@dataclass(frozen=True)
class ClusterSpec:
    """One cluster shape. ``key`` is what ``generate(cluster=...)`` takes; ``name`` is the
    Cilium cluster name in labels and node names."""

    key: str
    name: str
    style: str  # "kind" | "eks": node naming and labels, where the apiserver lives
    region: str
    nodes: tuple[NodeSpec, ...]
    pod_prefix: str  # pods get <prefix>.<node index>.<host>
    service_prefix: str  # ClusterIPs get <prefix>.<a>.<b>
    apiserver_ip: str
    workloads: tuple[WorkloadSpec, ...]
    world_services: dict[str, tuple[str, ...]]
    dns_upstream: str
    edges: tuple[Edge, ...]
    load: Callable[[int], float]
    dns: DnsHabits
    scraper: str  # the Prometheus workload
    scrape_interval_s: int
    node_scrape_interval_s: int
    watchers: tuple[str, ...]  # workloads that keep watches open on the kube-apiserver
    visitor_prefix: str
    roles: Roles
    periodic: tuple[Periodic, ...] = ()
    nightly: tuple[NightlyJob, ...] = ()

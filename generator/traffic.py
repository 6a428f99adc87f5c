"""Normal traffic: the application's call graph driven by a daily load cycle, plus background.

Request edges (who calls whom, how often at the daily peak) carry the load cycle of the cluster
(:attr:`~.spec.ClusterSpec.load`: for ``demo`` a smooth day curve, quiet around 01:00-04:00 UTC,
busiest around 13:00, quieter weekends), a slow random wobble per edge, and Poisson counts per
minute. Background traffic that does not follow users (Prometheus scrapes, node-exporter,
kube-apiserver watches, the spec's timers and nightly CronJob) runs at fixed periods and is not
scaled by ``rate``. Rare non-policy drops complete the picture.

:class:`Sessions` holds the shape of one session per edge kind; :class:`NormalTraffic` schedules
them. A surge (``changes``) reuses :class:`Sessions` with its own random streams and pods.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .clusters import DEMO, load_factor
from .nightly import NightlyJobs
from .sessions import Conversations, dns_name, fill, status, ticks
from .spec import Edge, Periodic
from .topology import Endpoint, Topology, Workload

__all__ = [
    "EDGES",
    "Edge",
    "KeptAlive",
    "NormalTraffic",
    "Sessions",
    "dns_name",
    "load_factor",
    "status",
    "ticks",
]

EDGES: tuple[Edge, ...] = DEMO.edges
_S = 1_000_000_000
_MIN = 60 * _S
_RECYCLE_NS = 20 * _MIN  # Prometheus reopens a scrape connection about every 20 minutes


@dataclass(frozen=True)
class KeptAlive:
    """A kept-alive connection that a moved pod forces to reopen (see NormalTraffic.repoint)."""

    client: Endpoint
    server: Endpoint
    server_ip: str
    dport: int
    cport: int
    phase: int
    period: int


class Sessions:
    """One session per edge kind (ingress, HTTP, TCP, TLS to the world), built on Conversations.

    ``pods_of`` says which pods of a workload may serve or send at a time: normal traffic uses
    the workload's pods; a surge adds its autoscaled replicas.
    """

    def __init__(
        self, topo: Topology, conv: Conversations, rnd: random.Random, visitors: list[str]
    ) -> None:
        self.topo, self.conv, self.rnd, self.visitors = topo, conv, rnd, visitors
        self.habits = topo.spec.dns

    def pods_of(self, wl: Workload, t: int) -> list[Endpoint]:
        return wl.pods

    def session(self, edge: Edge, t: int) -> None:
        rnd, conv, wl = self.rnd, self.conv, self.topo.workloads
        if edge.kind == "ingress":
            server = rnd.choice(self.pods_of(wl[edge.server], t))
            ip = rnd.choice(self.visitors)
            conv.tcp_connect(
                t,
                self.topo.world,
                server,
                ip,
                server.ip,
                server.port,
                response=True,
                close=rnd.random() < 0.6,
            )
            return
        cw = wl[edge.client]
        client = rnd.choice(self.pods_of(cw, t))
        if edge.kind == "tls":
            self.tls(t, client, edge.server.split(":", 1)[1])
            return
        sw = wl[edge.server]
        server = rnd.choice(self.pods_of(sw, t))
        name, hit = dns_name(cw, sw)
        if rnd.random() < self.habits.lookup[edge.kind]:
            t = conv.lookup(
                t,
                client,
                name,
                hit,
                (sw.cluster_ip,),
                rnd.randint(5, 30),
                aaaa=rnd.random() < self.habits.aaaa,
            )
        if edge.kind == "tcp":
            if rnd.random() < 0.15:
                conv.tcp_connect(
                    t,
                    client,
                    server,
                    client.ip,
                    server.ip,
                    server.port,
                    response=True,
                    close=rnd.random() < 0.5,
                )
            else:
                conv.activity(
                    t, client, server, client.ip, server.ip, conv.ephemeral_port(), server.port
                )
            return
        new_conn = rnd.random() < 0.3
        if new_conn:
            cport, t = conv.tcp_connect(
                t, client, server, client.ip, server.ip, server.port, data=False, close=False
            )
        else:
            cport = conv.ephemeral_port()
        for _ in range(1 + (rnd.random() < 0.3)):
            method, path = rnd.choice(edge.requests)
            url = f"http://{sw.name}.{sw.namespace}.svc.cluster.local{fill(path, rnd)}"
            t = conv.http(t, client, server, cport, method, url, status(method, rnd))
            t += conv.uniform_ns(100_000, 50_000_000)
        if new_conn and rnd.random() < 0.5:
            conv.packet(
                t,
                client,
                server,
                client.ip,
                server.ip,
                "TCP",
                cport,
                server.port,
                "AF",
                True,
                "ESTABLISHED",
            )

    def tls(self, t: int, client: Endpoint, fqdn: str) -> None:
        rnd, conv = self.rnd, self.conv
        svc = self.topo.world_services[fqdn]
        ip = rnd.choice(svc.ips)
        if rnd.random() < self.habits.lookup["tls"]:
            t = conv.lookup(
                t,
                client,
                fqdn,
                fqdn + ".",
                svc.ips,
                rnd.randint(30, 300),
                aaaa=rnd.random() < self.habits.aaaa,
                upstream=rnd.random() < 0.4,
            )
        if rnd.random() < 0.5:
            conv.tcp_connect(
                t, client, self.topo.world, client.ip, ip, svc.port, response=True, fqdn=fqdn
            )
        else:
            conv.activity(
                t,
                client,
                self.topo.world,
                client.ip,
                ip,
                conv.ephemeral_port(),
                svc.port,
                fqdn=fqdn,
            )


class NormalTraffic(Sessions):
    """Emits the normal sessions that start inside each time chunk."""

    def __init__(
        self,
        topo: Topology,
        conv: Conversations,
        np_rng: np.random.Generator,
        rnd: random.Random,
        rate: float,
    ) -> None:
        spec = topo.spec
        # internet users: 198.51.100.0/24 (SaaS peers: 203.0.113.0/24, attackers: 192.0.2.0/24)
        visitors = [f"{spec.visitor_prefix}.{rnd.randint(1, 254)}" for _ in range(200)]
        super().__init__(topo, conv, rnd, visitors)
        self.np_rng, self.rate = np_rng, rate
        self.edges = spec.edges
        self.load = spec.load
        self.wobble = np.zeros(len(self.edges))
        wl = topo.workloads
        self.prometheus = wl[spec.scraper].pods[0]
        self.scrape_period = spec.scrape_interval_s * _S
        self.node_period = spec.node_scrape_interval_s * _S
        self.scrape_targets = [
            (p, w.metrics_port, rnd.randrange(self.scrape_period), conv.ephemeral_port())
            for w in wl.values()
            if w.metrics_port
            for p in w.pods
        ]
        self.watchers = [
            (p, rnd.randrange(60 * _S), conv.ephemeral_port())
            for key in spec.watchers
            for p in wl[key].pods
        ]
        self.node_phase = [rnd.randrange(self.node_period) for _ in topo.nodes]
        # timers of the spec: (item, client pod, server pod, phase, client port)
        self.timers: list[tuple[Periodic, Endpoint, Endpoint, int, int]] = [
            (
                item,
                p,
                rnd.choice(wl[item.server].pods),
                rnd.randrange(int(item.period_s * _S)),
                conv.ephemeral_port(),
            )
            for item in spec.periodic
            for p in wl[item.client].pods
        ]
        self.nightly = (
            NightlyJobs(topo, conv, rnd, lambda: self.prometheus, self.scrape_period)
            if spec.nightly
            else None
        )

    # -- scheduling ----------------------------------------------------------------------------
    def emit(self, t0: int, t1: int) -> None:
        """Generate every normal session that starts in [t0, t1)."""
        frac = (t1 - t0) / _MIN
        self.wobble = 0.98 * self.wobble + self.np_rng.normal(0.0, 0.04, len(self.edges))
        load = self.load(t0 + (t1 - t0) // 2)
        lam = (
            np.array([e.per_min for e in self.edges])
            * np.exp(self.wobble)
            * load
            * self.rate
            * frac
        )
        counts = self.np_rng.poisson(lam)
        rnd = self.rnd
        span = t1 - t0
        for edge, n in zip(self.edges, counts.tolist()):
            for _ in range(n):
                self.session(edge, t0 + int(rnd.random() * span))
        self._periodic(t0, t1)
        for _ in range(int(self.np_rng.poisson(0.05 * load * self.rate * frac))):
            self._normal_drop(t0 + int(rnd.random() * span))
        if self.nightly is not None:
            self.nightly.emit(t0, t1)

    def scrape(self, t: int, target: Endpoint, port: int, cport: int) -> None:
        """One scrape on a kept-alive connection: GET /metrics and its answer."""
        prom = self.prometheus
        self.conv.activity(t, prom, target, prom.ip, target.ip, cport, port, response=False)

    def _periodic(self, t0: int, t1: int) -> None:
        conv, prom = self.conv, self.prometheus
        period = self.scrape_period
        recycle = _RECYCLE_NS // period
        for i, (pod, port, phase, cport) in enumerate(self.scrape_targets):
            for t in ticks(t0, t1, phase, period):
                if (t // period + i) % recycle == 0:  # scrape connection recycled every ~20 min
                    cport, _ = conv.tcp_connect(t, prom, pod, prom.ip, pod.ip, port, close=False)
                    self.scrape_targets[i] = (pod, port, phase, cport)
                else:
                    conv.activity(t, prom, pod, prom.ip, pod.ip, cport, port, response=False)
        for node, phase in zip(self.topo.nodes, self.node_phase):
            peer = self.topo.host[node.index] if node is prom.node else self.topo.remote_node
            for t in ticks(t0, t1, phase, self.node_period):
                conv.activity(t, prom, peer, prom.ip, node.ip, 41000 + node.index, 9100)
        for pod, phase, cport in self.watchers:
            on_cp = pod.node is self.topo.apiserver_node  # the apiserver's node sees it as host
            api = self.topo.host_apiserver if on_cp else self.topo.kube_apiserver
            for t in ticks(t0, t1, phase, 60 * _S):
                conv.activity(
                    t + self.rnd.randrange(5 * _S),
                    pod,
                    api,
                    pod.ip,
                    self.topo.apiserver_ip,
                    cport,
                    6443,
                )
        for item, client, server, phase, cport in self.timers:
            for t in ticks(t0, t1, phase, int(item.period_s * _S)):
                self._timer(t, item, client, server, cport)

    def _timer(
        self, t: int, item: Periodic, client: Endpoint, server: Endpoint, cport: int
    ) -> None:
        if item.kind == "tcp":
            self.conv.activity(t, client, server, client.ip, server.ip, cport, server.port)
            return
        sw = self.topo.workloads[item.server]
        method, path = self.rnd.choice(item.requests)
        url = f"http://{sw.name}.{sw.namespace}.svc.cluster.local{path}"
        self.conv.http(t, client, server, cport, method, url, 200)

    # -- pods that move ------------------------------------------------------------------------
    def repoint(self, old: Endpoint, new: Endpoint, ports: Callable[[], int]) -> list[KeptAlive]:
        """Point the background at ``new`` instead of ``old`` (a rescheduled pod) and return the
        kept-alive connections that must be reopened, each with the client port now in use.

        New client ports come from ``ports`` (the caller's random stream, not this one's, so
        the rest of normal traffic is not shifted)."""
        out = []
        if self.prometheus is old:
            self.prometheus = new
        for i, (pod, port, phase, _cport) in enumerate(self.scrape_targets):
            if pod is old:
                cport = ports()
                self.scrape_targets[i] = (new, port, phase, cport)
                out.append(
                    KeptAlive(self.prometheus, new, new.ip, port, cport, phase, self.scrape_period)
                )
        for i, (pod, phase, _cport) in enumerate(self.watchers):
            if pod is old:
                cport = ports()
                self.watchers[i] = (new, phase, cport)
                api = self.topo.kube_apiserver
                out.append(KeptAlive(new, api, self.topo.apiserver_ip, 6443, cport, phase, 60 * _S))
        for i, (item, client, server, phase, cport) in enumerate(self.timers):
            if client is old or server is old:
                client = new if client is old else client
                server = new if server is old else server
                cport = ports()
                self.timers[i] = (item, client, server, phase, cport)
                period = int(item.period_s * _S)
                out.append(KeptAlive(client, server, server.ip, server.port, cport, phase, period))
        return out

    def _normal_drop(self, t: int) -> None:
        """Rare datapath drops that are not policy: stale CT, missing backends, stray ACKs."""
        rnd, conv, wl = self.rnd, self.conv, self.topo.workloads
        edge = rnd.choice([e for e in self.edges if e.kind in ("http", "tcp")])
        client = rnd.choice(wl[edge.client].pods)
        server = rnd.choice(wl[edge.server].pods)
        code, desc, direction, flags = rnd.choice(
            (
                (163, "UNKNOWN_CONNECTION_TRACKING_STATE", "INGRESS", "AF"),
                (136, "CT_MISSING_TCP_ACK_FLAG", "INGRESS", "A"),
                (158, "SERVICE_BACKEND_NOT_FOUND", "EGRESS", "S"),
                (151, "STALE_OR_UNROUTABLE_IP", "", "AP"),
            )
        )
        conv.drop(
            t,
            client,
            server,
            client.ip,
            server.ip,
            "TCP",
            conv.ephemeral_port(),
            server.port,
            flags,
            code,
            desc,
            direction,
        )

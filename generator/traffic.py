"""Normal traffic: the application's call graph driven by a daily load cycle, plus background.

Request edges (who calls whom, how often at the daily peak) carry the load cycle: a smooth
day curve (quiet around 01:00-04:00 UTC, busiest around 13:00), quieter weekends, a slow random
wobble per edge, and Poisson counts per minute. Background traffic that does not follow users
(Prometheus scrapes every 30 s, node-exporter, kube-apiserver watches) runs at fixed periods and
is not scaled by ``rate``. Rare non-policy drops complete the picture.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np

from .sessions import Conversations
from .topology import Endpoint, Topology, Workload

__all__ = ["EDGES", "Edge", "NormalTraffic", "load_factor"]

_S = 1_000_000_000
_MIN = 60 * _S


@dataclass(frozen=True)
class Edge:
    """A normal dependency: ``client`` calls ``server`` about ``per_min`` times a minute at peak."""

    client: str  # workload ident, or "world" for internet users
    server: str  # workload ident, or "world:<fqdn>"
    kind: str  # "http" | "tcp" | "tls" | "ingress"
    per_min: float
    requests: tuple[tuple[str, str], ...] = ()


_SHOP = (
    ("GET", "/"),
    ("GET", "/products"),
    ("GET", "/products/{id}"),
    ("GET", "/products/{id}"),
    ("POST", "/cart/items"),
    ("GET", "/static/app.js"),
)
EDGES: tuple[Edge, ...] = (
    Edge("world", "ingress-nginx/ingress-nginx-controller", "ingress", 22.7),
    Edge("ingress-nginx/ingress-nginx-controller", "shop/storefront", "http", 22.7, _SHOP),
    Edge(
        "shop/storefront",
        "shop/catalog",
        "http",
        13.9,
        (("GET", "/api/v1/products?page={n}"), ("GET", "/api/v1/products/{id}")),
    ),
    Edge(
        "shop/storefront",
        "shop/recommendations",
        "http",
        5.7,
        (("GET", "/api/v1/recommendations?user={id}"),),
    ),
    Edge(
        "shop/storefront",
        "checkout/cart",
        "http",
        5.7,
        (("GET", "/api/v1/carts/{id}"), ("POST", "/api/v1/carts/{id}/items")),
    ),
    Edge("shop/storefront", "db/redis", "tcp", 6.3),
    Edge("checkout/cart", "db/redis", "tcp", 5.7),
    Edge("checkout/cart", "checkout/payments", "http", 1.9, (("POST", "/v1/charges"),)),
    Edge("checkout/cart", "checkout/orders", "http", 1.9, (("POST", "/api/v1/orders"),)),
    Edge("checkout/orders", "db/postgres", "tcp", 3.1),
    Edge("shop/catalog", "db/postgres", "tcp", 6.3),
    Edge("checkout/payments", "db/postgres", "tcp", 1.9),
    Edge("checkout/payments", "world:api.stripe.com", "tls", 1.9),
    Edge("checkout/orders", "shop/mailer", "http", 1.3, (("POST", "/api/v1/send"),)),
    Edge("shop/mailer", "world:api.sendgrid.com", "tls", 1.3),
    Edge("shop/storefront", "world:o4507.ingest.sentry.io", "tls", 0.6),
    Edge("shop/recommendations", "db/redis", "tcp", 3.1),
    Edge(
        "monitoring/grafana",
        "monitoring/prometheus",
        "http",
        1.3,
        (("GET", "/api/v1/query_range?query=up"),),
    ),
)


def load_factor(t_ns: int) -> float:
    """Relative user load at time ``t_ns`` (1.0 = weekday peak around 13:00 UTC)."""
    hours = (t_ns / _S) / 3600.0
    day = 0.5 - 0.5 * math.cos(2 * math.pi * (hours % 24 - 1.0) / 24)  # 0 at 01:00, 1 at 13:00
    weekday = int(hours // 24 + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
    week = 0.65 if weekday >= 5 else 1.0
    return week * (0.08 + 0.92 * day**1.6)


def _dns_name(client: Workload, server: Workload) -> tuple[str, str]:
    """The name a client uses for a service and the FQDN that answers it."""
    hit = f"{server.name}.{server.namespace}.svc.cluster.local."
    same_ns = client.namespace == server.namespace
    name = server.name if same_ns else f"{server.name}.{server.namespace}"
    return name, hit


def _fill(path: str, rnd: random.Random) -> str:
    return path.replace("{id}", str(rnd.randint(1, 5000))).replace("{n}", str(rnd.randint(1, 40)))


class NormalTraffic:
    """Emits the normal sessions that start inside each time chunk."""

    def __init__(
        self,
        topo: Topology,
        conv: Conversations,
        np_rng: np.random.Generator,
        rnd: random.Random,
        rate: float,
    ) -> None:
        self.topo, self.conv, self.np_rng, self.rnd, self.rate = topo, conv, np_rng, rnd, rate
        self.wobble = np.zeros(len(EDGES))
        # internet users: 198.51.100.0/24 (SaaS peers: 203.0.113.0/24, attackers: 192.0.2.0/24)
        self.visitors = [f"198.51.100.{rnd.randint(1, 254)}" for _ in range(200)]
        wl = topo.workloads
        self.prometheus = wl["monitoring/prometheus"].pods[0]
        self.scrape_targets = [
            (p, w.metrics_port, rnd.randrange(30 * _S), conv.ephemeral_port())
            for w in wl.values()
            if w.metrics_port
            for p in w.pods
        ]
        watching = (
            "kube-system/coredns",
            "ingress-nginx/ingress-nginx-controller",
            "monitoring/prometheus",
        )
        self.watchers = [
            (p, rnd.randrange(60 * _S), conv.ephemeral_port())
            for key in watching
            for p in wl[key].pods
        ]
        self.node_phase = [rnd.randrange(60 * _S) for _ in topo.nodes]

    # -- scheduling ----------------------------------------------------------------------------
    def emit(self, t0: int, t1: int) -> None:
        """Generate every normal session that starts in [t0, t1)."""
        frac = (t1 - t0) / _MIN
        self.wobble = 0.98 * self.wobble + self.np_rng.normal(0.0, 0.04, len(EDGES))
        load = load_factor(t0 + (t1 - t0) // 2)
        lam = np.array([e.per_min for e in EDGES]) * np.exp(self.wobble) * load * self.rate * frac
        counts = self.np_rng.poisson(lam)
        rnd = self.rnd
        span = t1 - t0
        for edge, n in zip(EDGES, counts.tolist()):
            for _ in range(n):
                self._session(edge, t0 + int(rnd.random() * span))
        self._periodic(t0, t1)
        for _ in range(int(self.np_rng.poisson(0.05 * load * self.rate * frac))):
            self._normal_drop(t0 + int(rnd.random() * span))

    def _periodic(self, t0: int, t1: int) -> None:
        conv, prom = self.conv, self.prometheus
        for i, (pod, port, phase, cport) in enumerate(self.scrape_targets):
            for t in _ticks(t0, t1, phase, 30 * _S):
                if (t // (30 * _S) + i) % 40 == 0:  # scrape connection recycled every ~20 min
                    cport, _ = conv.tcp_connect(t, prom, pod, prom.ip, pod.ip, port, close=False)
                    self.scrape_targets[i] = (pod, port, phase, cport)
                else:
                    conv.activity(t, prom, pod, prom.ip, pod.ip, cport, port, response=False)
        for node, phase in zip(self.topo.nodes, self.node_phase):
            peer = self.topo.host[node.index] if node is prom.node else self.topo.remote_node
            for t in _ticks(t0, t1, phase, 60 * _S):
                conv.activity(t, prom, peer, prom.ip, node.ip, 41000 + node.index, 9100)
        for pod, phase, cport in self.watchers:
            on_cp = pod.node is self.topo.nodes[0]  # the apiserver's own node sees it as host
            api = self.topo.host_apiserver if on_cp else self.topo.kube_apiserver
            for t in _ticks(t0, t1, phase, 60 * _S):
                conv.activity(
                    t + self.rnd.randrange(5 * _S),
                    pod,
                    api,
                    pod.ip,
                    self.topo.apiserver_ip,
                    cport,
                    6443,
                )

    # -- sessions ------------------------------------------------------------------------------
    def _session(self, edge: Edge, t: int) -> None:
        rnd, conv, wl = self.rnd, self.conv, self.topo.workloads
        if edge.kind == "ingress":
            server = rnd.choice(wl[edge.server].pods)
            ip = rnd.choice(self.visitors)
            conv.tcp_connect(
                t,
                self.topo.world,
                server,
                ip,
                server.ip,
                443,
                response=True,
                close=rnd.random() < 0.6,
            )
            return
        cw = wl[edge.client]
        client = rnd.choice(cw.pods)
        if edge.kind == "tls":
            self._tls(t, client, edge.server.split(":", 1)[1])
            return
        sw = wl[edge.server]
        server = rnd.choice(sw.pods)
        name, hit = _dns_name(cw, sw)
        if rnd.random() < (0.12 if edge.kind == "http" else 0.05):
            t = conv.lookup(
                t, client, name, hit, (sw.cluster_ip,), rnd.randint(5, 30), aaaa=rnd.random() < 0.3
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
            url = f"http://{sw.name}.{sw.namespace}.svc.cluster.local{_fill(path, rnd)}"
            t = conv.http(t, client, server, cport, method, url, _status(method, rnd))
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

    def _tls(self, t: int, client: Endpoint, fqdn: str) -> None:
        rnd, conv = self.rnd, self.conv
        svc = self.topo.world_services[fqdn]
        ip = rnd.choice(svc.ips)
        if rnd.random() < 0.3:
            t = conv.lookup(
                t,
                client,
                fqdn,
                fqdn + ".",
                svc.ips,
                rnd.randint(30, 300),
                aaaa=rnd.random() < 0.3,
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

    def _normal_drop(self, t: int) -> None:
        """Rare datapath drops that are not policy: stale CT, missing backends, stray ACKs."""
        rnd, conv, wl = self.rnd, self.conv, self.topo.workloads
        edge = rnd.choice([e for e in EDGES if e.kind in ("http", "tcp")])
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


def _status(method: str, rnd: random.Random) -> int:
    r = rnd.random()
    if r < 0.004:
        return 503
    if r < 0.007:
        return 500
    if r < 0.02:
        return 404
    return 201 if method == "POST" else 200


def _ticks(t0: int, t1: int, phase: int, period: int) -> range:
    """Times phase + k*period that fall in [t0, t1)."""
    first = t0 + (phase - t0) % period
    return range(first, t1, period)

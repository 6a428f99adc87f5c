"""Benign change as a real cluster has it every day: what a planned change is and the pieces the
change scenarios share (a client-side DNS cache, Poisson arrivals that follow user load,
Prometheus discovering and scraping new pods, a new pod warming up its connection pools).

A :class:`Change` is planned up front like an attack, with the workloads it touches
(``identities``) and its time range, and then emitted chunk by chunk: ``transitions`` change
shared state at a chunk start (a pod rescheduled), ``events`` happen once, ``streams`` produce
whatever falls in each chunk. Changes draw from their own random streams, so normal traffic of a
seed only differs where the change itself alters it (a rescheduled pod, a new DNS upstream).
The scenarios are in :mod:`.change_new` and :mod:`.change_shift`; :mod:`.schedule` places them.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from .sessions import Conversations, dns_name, ticks
from .topology import Endpoint, Topology, Workload
from .traffic import NormalTraffic

__all__ = [
    "Change",
    "ChangeContext",
    "PodLife",
    "Resolver",
    "Scrapes",
    "arrivals",
    "hhmm",
    "identities",
    "servers_of",
    "warm_up",
]

_S = 1_000_000_000
_MIN = 60 * _S


@dataclass
class Change:
    """A planned change: its label facts plus what to do when."""

    change: str
    identities: tuple[str, ...]
    start_ns: int
    end_ns: int
    description: str
    transitions: list[tuple[int, Callable[[], None]]] = field(default_factory=list)
    events: list[tuple[int, Callable[[int], None]]] = field(default_factory=list)
    streams: list[Callable[[int, int], None]] = field(default_factory=list)
    _applied: int = 0
    _next: int = 0
    _sorted: bool = False

    def apply(self, t0: int) -> None:
        """Make the state changes due by ``t0`` (called before the chunk's normal traffic)."""
        while self._applied < len(self.transitions) and self.transitions[self._applied][0] <= t0:
            self.transitions[self._applied][1]()
            self._applied += 1

    def emit(self, t0: int, t1: int) -> None:
        """Run the events that start in [t0, t1) and every stream's share of it."""
        if not self._sorted:
            self.events.sort(key=lambda ev: ev[0])
            self._sorted = True
        ev = self.events
        while self._next < len(ev) and ev[self._next][0] < t1:
            t, fn = ev[self._next]
            if t >= t0:
                fn(t)
            self._next += 1
        for stream in self.streams:
            stream(t0, t1)


@dataclass
class ChangeContext:
    """What a change planner may use: the cluster, its normal traffic (whose pods and kept-alive
    connections a reschedule moves), and the change's own random streams."""

    topo: Topology
    normal: NormalTraffic
    conv: Conversations
    rnd: random.Random
    np_rng: np.random.Generator
    rate: float
    range_end_ns: int

    def load(self, t_ns: int) -> float:
        return self.topo.spec.load(t_ns)


@dataclass
class PodLife:
    """A pod that exists from ``ready`` (it serves and is discovered) until ``gone``."""

    pod: Endpoint
    ready: int
    gone: int

    def alive(self, t: int) -> bool:
        return self.ready <= t < self.gone


def hhmm(t_ns: int) -> str:
    return datetime.fromtimestamp(t_ns // _S, tz=UTC).strftime("%H:%M")


def identities(*idents: str) -> tuple[str, ...]:
    """Sorted, without duplicates or blanks."""
    return tuple(sorted({i for i in idents if i}))


def arrivals(ctx: ChangeContext, t0: int, t1: int, lo: int, hi: int, per_min: float) -> list[int]:
    """Poisson arrival times in [t0, t1) ∩ [lo, hi) at ``per_min`` × the cluster's user load ×
    ``rate``: what users make a service do."""
    a, b = max(t0, lo), min(t1, hi)
    if a >= b:
        return []
    lam = per_min * ctx.load(a + (b - a) // 2) * ctx.rate * (b - a) / _MIN
    n = int(ctx.np_rng.poisson(lam))
    return sorted(a + int(ctx.rnd.random() * (b - a)) for _ in range(n))


class Resolver:
    """A client-side DNS cache per pod: the first use of a name by a pod is always a lookup, and
    so is the first use after the answer's TTL expired."""

    def __init__(self, ctx: ChangeContext, ttl_s: int) -> None:
        self.ctx, self.ttl = ctx, ttl_s * _S
        self.expiry: dict[int, int] = {}

    def resolve(
        self,
        t: int,
        pod: Endpoint,
        name: str,
        hit: str,
        ips: tuple[str, ...],
        *,
        upstream: bool = False,
    ) -> tuple[int, bool]:
        """(time the answer is in, whether a lookup was made)."""
        if t < self.expiry.get(pod.key, -1):
            return t, False
        conv, habits = self.ctx.conv, self.ctx.topo.spec.dns
        aaaa = self.ctx.rnd.random() < habits.aaaa
        t = conv.lookup(t, pod, name, hit, ips, self.ttl // _S, aaaa=aaaa, upstream=upstream)
        self.expiry[pod.key] = t + self.ttl
        return t, True


class Scrapes:
    """Prometheus scraping pods that come and go: it discovers a pod through the Kubernetes API
    (kubernetes_sd watches pods), opens a connection at its first scrape and reuses it at the
    cluster's scrape interval until the pod is gone."""

    def __init__(self, ctx: ChangeContext, lives: list[PodLife], port: int) -> None:
        self.ctx, self.lives, self.port = ctx, lives, port
        period = ctx.normal.scrape_period
        self.phases = [ctx.rnd.randrange(period) for _ in lives]
        self.cports: dict[int, int] = {}

    def __call__(self, t0: int, t1: int) -> None:
        conv, prom = self.ctx.conv, self.ctx.normal.prometheus
        period = self.ctx.normal.scrape_period
        for life, phase in zip(self.lives, self.phases):
            lo, hi = max(t0, life.ready + _S), min(t1, life.gone)
            if lo >= hi:
                continue
            pod = life.pod
            for t in ticks(lo, hi, phase, period):
                cport = self.cports.get(pod.key)
                if cport is None:
                    self.cports[pod.key], _ = conv.tcp_connect(
                        t, prom, pod, prom.ip, pod.ip, self.port, close=False
                    )
                else:
                    conv.activity(t, prom, pod, prom.ip, pod.ip, cport, self.port, response=False)


def warm_up(
    ctx: ChangeContext, t: int, pod: Endpoint, client: Workload, servers: list[str]
) -> None:
    """A starting pod resolves its dependencies and opens its connection pools to them."""
    conv, wl = ctx.conv, ctx.topo.workloads
    for ident in servers:
        server = wl.get(ident)
        if server is None or not server.pods:
            continue
        name, hit = dns_name(client, server)
        t = conv.lookup(t, pod, name, hit, (server.cluster_ip,), 5, aaaa=True)
        target = ctx.rnd.choice(server.pods)
        _, t = conv.tcp_connect(
            t, pod, target, pod.ip, target.ip, server.port, data=False, close=False
        )
        t += conv.uniform_ns(1_000_000, 50_000_000)


def servers_of(topo: Topology, ident: str) -> list[str]:
    """The workloads ``ident`` calls in normal traffic (its dependencies)."""
    return sorted(
        {e.server for e in topo.spec.edges if e.client == ident and e.server in topo.workloads}
    )

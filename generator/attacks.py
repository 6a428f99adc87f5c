"""Labelled attack scenarios injected on top of normal traffic.

Each scenario is planned up front (attacker, peers, every event time), so its label describes
exactly what was emitted; emission then happens chunk by chunk like normal traffic. Attacks use
their own random stream, so the normal traffic of a seed is the same with or without them.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from .sessions import Conversations
from .topology import Endpoint, Topology, Workload

__all__ = ["SCENARIOS", "Attack", "min_duration_ns", "plan_attack", "plan_attacks"]

SCENARIOS: tuple[str, ...] = (
    "port_scan",
    "lateral_movement",
    "exfiltration",
    "dns_tunnel",
    "c2_beacon",
    "drop_storm",
)
TUNNEL_DOMAIN = "t.exfil.example.net"

_S = 1_000_000_000
_MIN = 60 * _S
_APPS = (
    "shop/storefront",
    "shop/catalog",
    "shop/recommendations",
    "shop/mailer",
    "checkout/cart",
    "checkout/payments",
    "checkout/orders",
    "monitoring/grafana",
)


@dataclass
class Attack:
    """A planned attack: its label facts plus the events to emit, sorted by time."""

    scenario: str
    identity: str
    start_ns: int
    end_ns: int
    description: str
    events: list[tuple[int, Callable[[int], None]]] = field(default_factory=list)
    _next: int = 0

    def emit(self, t0: int, t1: int) -> None:
        """Run the events whose start time falls in [t0, t1)."""
        ev = self.events
        while self._next < len(ev) and ev[self._next][0] < t1:
            t, fn = ev[self._next]
            if t >= t0:
                fn(t)
            self._next += 1


def plan_attacks(
    names: list[str],
    topo: Topology,
    conv: Conversations,
    rnd: random.Random,
    start_ns: int,
    end_ns: int,
) -> list[Attack]:
    """Place attacks in non-overlapping slots across the middle of [start, end)."""
    if not names:
        return []
    lo = start_ns + (end_ns - start_ns) * 15 // 100
    hi = start_ns + (end_ns - start_ns) * 90 // 100
    slot = (hi - lo) // len(names)
    if slot * 8 // 10 < _MIN:
        need = len(names) * 100 / 3600
        raise ValueError(
            f"a {(end_ns - start_ns) / 3600e9:g} h range is too short for "
            f"{len(names)} attack(s): use hours >= {need:.2f}"
        )
    order = list(names)
    rnd.shuffle(order)
    attacks = []
    for i, name in enumerate(order):
        dur = int(rnd.uniform(min_duration_ns(name) // _MIN, 15) * _MIN)
        dur = min(dur, slot * 8 // 10) // _S * _S  # at least one minute, see the check above
        s0 = lo + i * slot + int(rnd.random() * (slot - dur))
        s0 = -(-s0 // _S) * _S  # whole seconds, so labels contain their flows exactly
        attacks.append(plan_attack(name, topo, conv, rnd, s0, s0 + dur))
    attacks.sort(key=lambda a: a.start_ns)
    return attacks


def min_duration_ns(name: str) -> int:
    """The shortest span in which scenario ``name`` looks like itself (a beacon needs repeats)."""
    return 8 * _MIN if name == "c2_beacon" else 3 * _MIN


def plan_attack(
    name: str, topo: Topology, conv: Conversations, rnd: random.Random, start_ns: int, end_ns: int
) -> Attack:
    """Plan one attack of scenario ``name`` over [start_ns, end_ns), drawing from ``rnd``.

    Used by :func:`plan_attacks` for files and by the live generator, which schedules attacks
    one at a time as its open-ended stream advances.
    """
    planner = _PLANNERS.get(name)
    if planner is None:
        raise ValueError(f"unknown attack scenario {name!r}; valid: {', '.join(SCENARIOS)}")
    if end_ns <= start_ns:
        raise ValueError(f"attack {name!r} must end after it starts")
    return planner(topo, conv, rnd, start_ns, end_ns)


def _times(rnd: random.Random, start: int, end: int, n: int) -> list[int]:
    """n event times in [start, end - 1 s), leaving room for replies inside the interval."""
    span = max(end - start - _S, 1)
    return sorted(start + int(rnd.random() * span) for _ in range(n))


def _attacker(
    topo: Topology, rnd: random.Random, choices: tuple[str, ...]
) -> tuple[Workload, Endpoint]:
    w = topo.workloads[rnd.choice(choices)]
    return w, rnd.choice(w.pods)


def _others(topo: Topology, w: Workload) -> list[Endpoint]:
    return [p for o in topo.workloads.values() if o is not w for p in o.pods]


def _world_ip(rnd: random.Random, lo: int, hi: int) -> str:
    return f"192.0.2.{rnd.randint(lo, hi)}"


# -- scenarios ----------------------------------------------------------------------------------
def _port_scan(topo: Topology, conv: Conversations, rnd: random.Random, s: int, e: int) -> Attack:
    w, pod = _attacker(
        topo,
        rnd,
        (
            "shop/recommendations",
            "shop/mailer",
            "checkout/orders",
            "monitoring/grafana",
            "shop/catalog",
        ),
    )
    peers = rnd.sample(_others(topo, w), rnd.randint(6, min(12, len(_others(topo, w)))))
    ports = rnd.sample(range(1, 10001), rnd.randint(300, 900))
    n = rnd.randint(800, 1600)
    plan = [(rnd.choice(peers), rnd.choice(ports)) for _ in range(n)]
    distinct = len({p for _, p in plan})
    a = Attack(
        "port_scan",
        w.ident,
        s,
        e,
        f"{w.ident} scans {distinct:,} TCP ports on {len(peers)} peers ({n:,} SYN probes)",
    )
    for t, (peer, port) in zip(_times(rnd, s, e, n), plan):
        a.events.append(
            (t, lambda t, peer=peer, port=port: conv.probe(t, pod, peer, port, port == peer.port))
        )
    return a


_LATERAL = (
    ("shop/storefront", "db/postgres"),
    ("shop/mailer", "db/redis"),
    ("shop/recommendations", "checkout/payments"),
    ("ingress-nginx/ingress-nginx-controller", "db/postgres"),
    ("monitoring/grafana", "db/postgres"),
    ("shop/catalog", "checkout/payments"),
)


def _lateral(topo: Topology, conv: Conversations, rnd: random.Random, s: int, e: int) -> Attack:
    src, dst = rnd.choice(_LATERAL)
    w, tw = topo.workloads[src], topo.workloads[dst]
    pod = rnd.choice(w.pods)
    n = max(8, int((e - s) / _S / rnd.uniform(3, 12)))
    name = tw.name if w.namespace == tw.namespace else f"{tw.name}.{tw.namespace}"
    hit = f"{tw.name}.{tw.namespace}.svc.cluster.local."
    a = Attack(
        "lateral_movement",
        w.ident,
        s,
        e,
        f"{w.ident} opens {n} connections to {tw.ident}:{tw.port}, a service it never used",
    )

    def connect(t: int, first: bool) -> None:
        if first or rnd.random() < 0.2:
            t = conv.lookup(t, pod, name, hit, (tw.cluster_ip,), 30)
        target = rnd.choice(tw.pods)
        conv.tcp_connect(t, pod, target, pod.ip, target.ip, tw.port, response=True)

    for i, t in enumerate(_times(rnd, s, e, n)):
        a.events.append((t, lambda t, first=(i == 0): connect(t, first)))
    return a


def _exfil(topo: Topology, conv: Conversations, rnd: random.Random, s: int, e: int) -> Attack:
    w, pod = _attacker(
        topo,
        rnd,
        (
            "checkout/orders",
            "shop/catalog",
            "checkout/payments",
            "db/postgres",
            "shop/recommendations",
        ),
    )
    word = rnd.choice(("files", "backup", "upload", "sync"))
    fqdn = f"{word}-{rnd.randrange(16**4):04x}.example.net"
    ip = _world_ip(rnd, 100, 199)
    n = int((e - s) / _MIN * rnd.uniform(30, 80))
    a = Attack(
        "exfiltration",
        w.ident,
        s,
        e,
        f"{w.ident} uploads data over {n:,} connections to new world peer {fqdn} ({ip}:443)",
    )
    world = topo.world
    last_lookup = [-(10**18)]

    def upload(t: int) -> None:
        if t - last_lookup[0] > 60 * _S:
            last_lookup[0] = t
            t = conv.lookup(t, pod, fqdn, fqdn + ".", (ip,), 60, upstream=True)
        cport, t = conv.tcp_connect(t, pod, world, pod.ip, ip, 443, close=False, fqdn=fqdn)
        for _ in range(rnd.randint(3, 8)):
            t = conv.activity(
                t + rnd.randint(1_000_000, 40_000_000),
                pod,
                world,
                pod.ip,
                ip,
                cport,
                443,
                response=rnd.random() < 0.3,
                fqdn=fqdn,
            )
        conv.packet(
            t + 1_000_000,
            pod,
            world,
            pod.ip,
            ip,
            "TCP",
            cport,
            443,
            "AF",
            True,
            "ESTABLISHED",
            "",
            fqdn,
        )

    for t in _times(rnd, s, e, n):
        a.events.append((t, upload))
    return a


def tunnel_label(rnd: random.Random) -> str:
    """A 40-60 character base32 label, as DNS tunnelling tools encode their payload."""
    n = rnd.randint(40, 60)
    raw = rnd.getrandbits(8 * 40).to_bytes(40, "big")
    return base64.b32encode(raw).decode().lower().rstrip("=")[:n]


def _dns_tunnel(topo: Topology, conv: Conversations, rnd: random.Random, s: int, e: int) -> Attack:
    w, pod = _attacker(
        topo,
        rnd,
        (
            "shop/storefront",
            "checkout/cart",
            "shop/mailer",
            "monitoring/grafana",
            "shop/recommendations",
        ),
    )
    n = int((e - s) / _S * rnd.uniform(2, 6))
    a = Attack(
        "dns_tunnel",
        w.ident,
        s,
        e,
        f"{w.ident} sends {n:,} DNS queries with high-entropy names under {TUNNEL_DOMAIN}",
    )

    def query(t: int) -> None:
        q = f"{tunnel_label(rnd)}.{TUNNEL_DOMAIN}."
        if rnd.random() < 0.6:
            conv.dns_query(
                t,
                pod,
                q,
                "TXT",
                rcode=3 if rnd.random() < 0.5 else 0,
                ttl=0,
                latency=rnd.randint(5_000_000, 60_000_000),
            )
        else:
            conv.dns_query(t, pod, q, "A", rcode=3, latency=rnd.randint(5_000_000, 60_000_000))

    for t in _times(rnd, s, e, n):
        a.events.append((t, query))
    return a


def _c2_beacon(topo: Topology, conv: Conversations, rnd: random.Random, s: int, e: int) -> Attack:
    w, pod = _attacker(topo, rnd, _APPS)
    fqdn = f"cdn-sync-{rnd.randrange(16**4):04x}.example.org"
    ip = _world_ip(rnd, 10, 90)
    period = rnd.uniform(30, 60)
    times, t = [], s + int(rnd.random() * 5 * _S)
    while t < e - _S:
        times.append(t)
        t += int(period * rnd.uniform(0.95, 1.05) * _S)
    a = Attack(
        "c2_beacon",
        w.ident,
        s,
        e,
        f"{w.ident} beacons every {period:.0f} s (±5%) to new world peer {fqdn} ({ip}:443),"
        f" {len(times)} times",
    )
    world = topo.world

    def beacon(t: int, i: int) -> None:
        if i % 5 == 0:
            t = conv.lookup(t, pod, fqdn, fqdn + ".", (ip,), 300, upstream=True)
        conv.tcp_connect(t, pod, world, pod.ip, ip, 443, response=True, fqdn=fqdn)

    for i, t in enumerate(times):
        a.events.append((t, lambda t, i=i: beacon(t, i)))
    return a


_DENIED_PORTS = (22, 80, 443, 2379, 3306, 5432, 6379, 8080, 8443, 9090, 9200, 10250, 27017)


def _drop_storm(topo: Topology, conv: Conversations, rnd: random.Random, s: int, e: int) -> Attack:
    w, pod = _attacker(topo, rnd, _APPS)
    others = _others(topo, w)
    peers = rnd.sample(others, min(len(others), rnd.randint(15, 30)))
    ports = rnd.sample(_DENIED_PORTS, rnd.randint(5, len(_DENIED_PORTS)))
    n = int((e - s) / _S * rnd.uniform(4, 12))  # connection attempts, each retried twice
    a = Attack(
        "drop_storm",
        w.ident,
        s,
        e,
        f"{w.ident} has {3 * n:,} packets dropped by policy (POLICY_DENIED) towards "
        f"{len(peers)} peers on {len(ports)} ports",
    )

    def attempt(t: int) -> None:
        peer, port = rnd.choice(peers), rnd.choice(ports)
        direction = "EGRESS" if rnd.random() < 0.75 else "INGRESS"
        sport = conv.ephemeral_port()
        when = t + (conv.hop(pod, peer) if direction == "INGRESS" else 0)
        for retry in (0, 1 * _S, 3 * _S):  # SYN retransmissions; still inside the interval
            tt = min(when + retry, e - 1000)
            conv.drop(
                tt,
                pod,
                peer,
                pod.ip,
                peer.ip,
                "TCP",
                sport,
                port,
                "S",
                133,
                "POLICY_DENIED",
                direction,
            )

    for t in _times(rnd, s, e - 3 * _S, n):
        a.events.append((t, attempt))
    return a


_PLANNERS: dict[str, Callable[[Topology, Conversations, random.Random, int, int], Attack]] = {
    "port_scan": _port_scan,
    "lateral_movement": _lateral,
    "exfiltration": _exfil,
    "dns_tunnel": _dns_tunnel,
    "c2_beacon": _c2_beacon,
    "drop_storm": _drop_storm,
}

"""Labelled attack scenarios injected on top of normal traffic.

Each scenario is planned up front (attacker, peers, every event time), so its label describes
exactly what was emitted; emission then happens chunk by chunk like normal traffic. Attacks use
their own random stream, so the normal traffic of a seed is the same with or without them.
Who attacks whom comes from the cluster's :class:`~.spec.Roles`.

``SCENARIOS`` are the fast attacks (minutes); ``SLOW_SCENARIOS`` are low-and-slow ones that
need an hour or more to show (a connection or probe a minute), so they are asked for by name
or through ``ALL_SCENARIOS`` (``--attacks all``) and planned by :mod:`.schedule`.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from .sessions import Conversations, dns_name
from .topology import Endpoint, Topology, Workload

__all__ = [
    "ALL_SCENARIOS",
    "SCENARIOS",
    "SLOW_SCENARIOS",
    "Attack",
    "max_duration_ns",
    "min_duration_ns",
    "plan_attack",
    "plan_attacks",
]

SCENARIOS: tuple[str, ...] = (
    "port_scan",
    "lateral_movement",
    "exfiltration",
    "dns_tunnel",
    "c2_beacon",
    "drop_storm",
)
SLOW_SCENARIOS: tuple[str, ...] = ("slow_lateral", "slow_scan", "slow_beacon")
ALL_SCENARIOS: tuple[str, ...] = SCENARIOS + SLOW_SCENARIOS
TUNNEL_DOMAIN = "t.exfil.example.net"

_S = 1_000_000_000
_MIN = 60 * _S


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
    """The shortest span in which scenario ``name`` looks like itself (a beacon needs repeats,
    a low-and-slow attack an hour of them)."""
    if name in SLOW_SCENARIOS:
        return 60 * _MIN
    return 8 * _MIN if name == "c2_beacon" else 3 * _MIN


def max_duration_ns(name: str) -> int:
    """The longest span :mod:`.schedule` gives scenario ``name``."""
    return 90 * _MIN if name in SLOW_SCENARIOS else 15 * _MIN


def plan_attack(
    name: str, topo: Topology, conv: Conversations, rnd: random.Random, start_ns: int, end_ns: int
) -> Attack:
    """Plan one attack of scenario ``name`` over [start_ns, end_ns), drawing from ``rnd``.

    Used by :func:`plan_attacks` for files and by the live generator, which schedules attacks
    one at a time as its open-ended stream advances.
    """
    planner = _PLANNERS.get(name)
    if planner is None:
        raise ValueError(f"unknown attack scenario {name!r}; valid: {', '.join(ALL_SCENARIOS)}")
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
    w, pod = _attacker(topo, rnd, topo.spec.roles.port_scan)
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


def _lateral(topo: Topology, conv: Conversations, rnd: random.Random, s: int, e: int) -> Attack:
    src, dst = rnd.choice(topo.spec.roles.lateral)
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
    w, pod = _attacker(topo, rnd, topo.spec.roles.exfiltration)
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
    w, pod = _attacker(topo, rnd, topo.spec.roles.dns_tunnel)
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
    w, pod = _attacker(topo, rnd, topo.spec.roles.apps)
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
    w, pod = _attacker(topo, rnd, topo.spec.roles.apps)
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


# -- low and slow -------------------------------------------------------------------------------
def _slow_lateral(
    topo: Topology, conv: Conversations, rnd: random.Random, s: int, e: int
) -> Attack:
    """A compromised app reads a data store in another namespace, one or two sessions a minute.

    Each session succeeds like a client's would (handshake, a query or two, small answers, FIN);
    the name is resolved once, as a client that found the service by DNS and cached it would."""
    src, dst = rnd.choice(topo.spec.roles.slow_lateral)
    w, tw = topo.workloads[src], topo.workloads[dst]
    pod = rnd.choice(w.pods)
    name, hit = dns_name(w, tw)
    times = []
    for m in range(s, e - _S, _MIN):
        span = min(_MIN, e - _S - m)
        times += sorted(m + int(rnd.random() * span) for _ in range(1 + (rnd.random() < 0.5)))
    a = Attack(
        "slow_lateral",
        w.ident,
        s,
        e,
        f"{w.ident} opens {len(times)} connections (1-2 a minute) to {tw.ident}:{tw.port} in "
        "another namespace, an edge it never used; each reads a little and closes",
    )

    def session(t: int, first: bool) -> None:
        if first:
            t = conv.lookup(t, pod, name, hit, (tw.cluster_ip,), 30)
        target = rnd.choice(tw.pods)
        cport, t = conv.tcp_connect(
            t, pod, target, pod.ip, target.ip, tw.port, response=True, close=False
        )
        for _ in range(rnd.randint(0, 2)):
            t = conv.activity(
                t + conv.uniform_ns(200_000, 5_000_000),
                pod,
                target,
                pod.ip,
                target.ip,
                cport,
                tw.port,
            )
        conv.packet(
            t + conv.uniform_ns(100_000, 2_000_000),
            pod,
            target,
            pod.ip,
            target.ip,
            "TCP",
            cport,
            tw.port,
            "AF",
            True,
            "ESTABLISHED",
        )

    for i, t in enumerate(times):
        a.events.append((t, lambda t, first=(i == 0): session(t, first)))
    return a


# ports an attacker tries first (nmap's most common TCP ports among them), then random ones
_TOP_PORTS = (
    21, 22, 23, 25, 53, 80, 110, 111, 135, 139, 143, 443, 445, 993, 995, 1433, 1521, 1723,
    2049, 2375, 2379, 3000, 3306, 3389, 4444, 5000, 5432, 5601, 5672, 5900, 6379, 6443, 7001,
    8000, 8008, 8081, 8443, 8888, 9000, 9090, 9092, 9100, 9200, 9300, 10250, 11211, 15672, 27017,
)  # fmt: skip


def _slow_scan(topo: Topology, conv: Conversations, rnd: random.Random, s: int, e: int) -> Attack:
    """One new port every 30-60 s on a peer the attacker normally talks to.

    A closed port answers SYN with RST-ACK; an open one (the peer's metrics port) with SYN-ACK,
    which the scanner's connect() then resets. Where the peer's namespace has an ingress policy
    that allows only its service port (``Roles.policy_namespaces``), every probe is dropped by
    policy instead, and the kernel retransmits the SYN once a second later."""
    spec, wl = topo.spec, topo.workloads
    w = wl[rnd.choice(spec.roles.slow_scan)]
    pod = rnd.choice(w.pods)
    servers = sorted({e.server for e in spec.edges if e.client == w.ident and e.server in wl})
    pw = wl[rnd.choice(servers)]
    peer = rnd.choice(pw.pods)
    known = {pw.port}
    opened = {pw.metrics_port} - {None} - known
    policed = pw.namespace in spec.roles.policy_namespaces
    times, t = [], s + int(rnd.uniform(1, 10) * _S)
    while t < e - 2 * _S:
        times.append(t)
        t += int(rnd.uniform(30, 60) * _S)
    top = [p for p in _TOP_PORTS if p not in known]
    rnd.shuffle(top)
    ports = top[: len(times)]
    while len(ports) < len(times):
        p = rnd.randint(1024, 65535)
        if p not in known and p not in ports:
            ports.append(p)
    n_open = 0 if policed else sum(p in opened for p in ports)
    answer = "dropped by policy" if policed else f"refused with RST ({n_open} open)"
    a = Attack(
        "slow_scan",
        w.ident,
        s,
        e,
        f"{w.ident} probes {len(ports)} new TCP ports on {pw.ident} ({peer.ip}), one every "
        f"30-60 s: {answer}",
    )

    def probe(t: int, port: int) -> None:
        if policed:
            sport = conv.ephemeral_port()
            for retry in (0, _S):
                when = t + retry + conv.hop(pod, peer)
                conv.drop(
                    when, pod, peer, pod.ip, peer.ip, "TCP", sport, port, "S", 133,
                    "POLICY_DENIED", "INGRESS",
                )  # fmt: skip
            return
        is_open = port in opened
        cport = conv.ephemeral_port()
        at_s = conv.packet(t, pod, peer, pod.ip, peer.ip, "TCP", cport, port, "S", True, "NEW")
        at_c = conv.packet(
            at_s + 6_000, peer, pod, peer.ip, pod.ip, "TCP", port, cport,
            "SA" if is_open else "RA", False, "REPLY",
        )  # fmt: skip
        if is_open:
            conv.packet(
                at_c + 20_000, pod, peer, pod.ip, peer.ip, "TCP", cport, port, "RA", True,
                "ESTABLISHED",
            )  # fmt: skip

    for t, port in zip(times, ports):
        a.events.append((t, lambda t, port=port: probe(t, port)))
    return a


def _slow_beacon(topo: Topology, conv: Conversations, rnd: random.Random, s: int, e: int) -> Attack:
    """A short TLS session once a minute (a few seconds of jitter) to a bare internet address.

    The implant has the address built in: no DNS lookup precedes it, so Hubble has no name for
    the peer (no ``destination_names``)."""
    w, pod = _attacker(topo, rnd, topo.spec.roles.apps)
    ip = _world_ip(rnd, 200, 250)
    port = rnd.choice((443, 443, 8443))
    jitter = rnd.uniform(2, 5)
    times = []
    k = 0
    base = s + int(rnd.uniform(jitter + 1, 20) * _S)
    while True:
        t = base + k * _MIN + int(rnd.uniform(-jitter, jitter) * _S)
        if t >= e - _S:
            break
        times.append(t)
        k += 1
    a = Attack(
        "slow_beacon",
        w.ident,
        s,
        e,
        f"{w.ident} connects to {ip}:{port} (no DNS name) every 60 s ±{jitter:.0f} s, "
        f"{len(times)} times, a few hundred bytes each",
    )
    world = topo.world

    def beacon(t: int) -> None:
        conv.tcp_connect(t, pod, world, pod.ip, ip, port, response=True)

    for t in times:
        a.events.append((t, beacon))
    return a


_PLANNERS: dict[str, Callable[[Topology, Conversations, random.Random, int, int], Attack]] = {
    "port_scan": _port_scan,
    "lateral_movement": _lateral,
    "exfiltration": _exfil,
    "dns_tunnel": _dns_tunnel,
    "c2_beacon": _c2_beacon,
    "drop_storm": _drop_storm,
    "slow_lateral": _slow_lateral,
    "slow_scan": _slow_scan,
    "slow_beacon": _slow_beacon,
}

"""Changes that shift what exists: a traffic surge with autoscaling, a node drain, a new DNS
upstream.

- ``surge``: twice the user traffic on the user-facing path (every edge reachable from the
  internet entry point) for 45-60 min, as a campaign or a push notification brings. The HPA
  sees CPU rise (metrics-server resolution 15 s, HPA sync 15 s) and adds replicas in steps, a
  few minutes in; they start on various nodes, warm up their pools and are scraped. After the
  surge the HPA waits its 5-minute scale-down stabilisation window and removes them. Keep-alive
  connections opened before a scale-up stay on the old pods, so the extra traffic is what the
  new replicas share. Label end: the replicas are gone.
- ``node_drain``: ``kubectl drain`` of a worker whose zone has another worker (zonal volumes
  pin StatefulSet pods to their zone). The node is cordoned for good; every pod on it except
  DaemonSets' is evicted and recreated elsewhere: Deployments' pods with new names, StatefulSet
  pods with their old name, all with new IPs. Prometheus and apiserver watches reopen their
  connections to the new pods, and the new pods warm up their pools.
- ``dns_provider_change``: the Corefile's ``forward`` moves to a new resolver. Each CoreDNS
  replica switches when its ConfigMap volume is refreshed and the ``reload`` plugin notices
  (30-120 s), and from then on forwards cache misses to the new address on 53.
"""

from __future__ import annotations

from .changes import (
    Change,
    ChangeContext,
    PodLife,
    Scrapes,
    hhmm,
    identities,
    servers_of,
    warm_up,
)
from .topology import DNS, Endpoint, Workload, WorldService
from .traffic import Sessions

__all__ = ["SURGE_TAIL_NS", "dns_provider_change", "node_drain", "surge", "user_path"]

_S = 1_000_000_000
_MIN = 60 * _S
#: After a surge: the HPA's default scale-down stabilisation window, then pod termination.
SURGE_TAIL_NS = 6 * _MIN


def user_path(ctx: ChangeContext) -> list:
    """The edges users drive: those reachable from the internet entry point."""
    edges, reached = ctx.topo.spec.edges, {"world"}
    path: list = []
    grew = True
    while grew:
        grew = False
        for edge in edges:
            if edge.client in reached and edge not in path:
                path.append(edge)
                if not edge.server.startswith("world:"):
                    reached.add(edge.server)
                grew = True
    return [e for e in edges if e in path]


class _SurgeSessions(Sessions):
    """Normal session shapes over the workload's pods plus the autoscaled ones alive at t."""

    def __init__(self, ctx: ChangeContext, extra: dict[str, list[PodLife]]) -> None:
        visitors = ctx.normal.visitors + [
            f"{ctx.topo.spec.visitor_prefix}.{ctx.rnd.randint(1, 254)}" for _ in range(100)
        ]
        super().__init__(ctx.topo, ctx.conv, ctx.rnd, visitors)
        self.extra = extra

    def pods_of(self, wl: Workload, t: int) -> list[Endpoint]:
        lives = self.extra.get(wl.ident)
        if not lives:
            return wl.pods
        return wl.pods + [life.pod for life in lives if life.alive(t)]


def surge(ctx: ChangeContext, s: int, e: int) -> Change:
    topo, rnd = ctx.topo, ctx.rnd
    surge_end = e - SURGE_TAIL_NS
    extra: dict[str, list[PodLife]] = {}
    for ident, lo, hi in topo.spec.roles.autoscaled:
        wl = topo.workloads[ident]
        nodes = topo.schedulable()
        first = rnd.randrange(len(nodes))
        lives = []
        for i in range(rnd.randint(lo, hi)):
            step = rnd.uniform(90, 180) if i == 0 else rnd.uniform(240, 420)  # HPA steps
            name = topo.replica_name(wl, rnd, len(wl.pods) + i)
            pod = topo.spawn_pod(wl, nodes[(first + i) % len(nodes)], rnd, name)
            gone = surge_end + 5 * _MIN + int(rnd.uniform(0, 40) * _S)
            lives.append(PodLife(pod, s + int(step * _S), min(gone, e - 5 * _S)))
        extra[ident] = lives
    sessions = _SurgeSessions(ctx, extra)
    path = user_path(ctx)

    def more_users(t0: int, t1: int) -> None:
        a, b = max(t0, s), min(t1, surge_end)
        if a >= b:
            return
        load = ctx.load(a + (b - a) // 2) * ctx.rate * (b - a) / _MIN
        counts = ctx.np_rng.poisson([edge.per_min * load for edge in path])
        for edge, n in zip(path, counts.tolist()):
            for _ in range(n):
                sessions.session(edge, a + int(rnd.random() * (b - a)))

    workloads = {
        side
        for edge in path
        for side in (edge.client, edge.server)
        if side != "world" and not side.startswith("world:")
    }
    lives = [life for ls in extra.values() for life in ls]
    ports = {life.pod.key: topo.workloads[i].metrics_port for i, ls in extra.items() for life in ls}
    scraped = [life for life in lives if ports[life.pod.key]]
    scaled = ", ".join(f"{ident} +{len(ls)}" for ident, ls in extra.items())
    c = Change(
        "surge",
        identities(*workloads, DNS, topo.spec.scraper if scraped else ""),
        s,
        e,
        f"2x user traffic on the user-facing path ({len(path)} edges from "
        f"{path[0].server}) {hhmm(s)}-{hhmm(surge_end)}; the HPA adds pods ({scaled}) and "
        f"removes them by {hhmm(max(life.gone for life in lives))}",
    )
    c.streams.append(more_users)
    for ident, ls in extra.items():
        wl = topo.workloads[ident]
        deps = servers_of(topo, ident)
        for life in ls:
            c.events.append(
                (
                    life.ready,
                    lambda t, pod=life.pod, wl=wl, deps=deps: warm_up(ctx, t, pod, wl, deps),
                )
            )
    by_port: dict[int, list[PodLife]] = {}
    for life in scraped:
        by_port.setdefault(ports[life.pod.key] or 0, []).append(life)
    c.streams += [Scrapes(ctx, ls, port) for port, ls in by_port.items()]
    return c


def node_drain(ctx: ChangeContext, s: int, e: int) -> Change:
    topo, rnd, normal, conv = ctx.topo, ctx.rnd, ctx.normal, ctx.conv
    workers = topo.schedulable()

    def movable(node) -> list[tuple[Workload, int]]:
        return [
            (wl, i)
            for wl in topo.workloads.values()
            if wl.kind != "DaemonSet"
            for i, pod in enumerate(wl.pods)
            if pod.node is node
        ]

    candidates = [
        n
        for n in workers
        if any(o is not n and o.zone == n.zone for o in workers)
        and len({wl.ident for wl, _ in movable(n)}) >= 2
    ]
    node = rnd.choice(candidates or workers)
    moves = movable(node)
    topo.cordoned.add(node.index)  # later changes schedule around it
    rest = topo.schedulable()
    first = rnd.randrange(len(rest))
    plan: list[tuple[Workload, int, Endpoint]] = []
    for k, (wl, i) in enumerate(moves):
        old = wl.pods[i]
        if wl.kind == "StatefulSet":  # its volume is zonal: same zone, other node
            target = rnd.choice([n for n in rest if n.zone == node.zone] or rest)
            name = old.pod_name
        else:
            target = rest[(first + k) % len(rest)]
            name = topo.replica_name(wl, rnd)
        plan.append((wl, i, topo.spawn_pod(wl, target, rnd, name)))
    starts = {new.key: s + int(rnd.uniform(5, 40) * _S) for _, _, new in plan}

    def drain() -> None:
        for wl, i, new in plan:
            old = wl.pods[i]
            wl.pods[i] = new
            for conn in normal.repoint(old, new, conv.ephemeral_port):
                tick = s + (conn.phase - s) % conn.period  # the first use after the move
                at = max(s, tick - 2_000_000)
                conv.tcp_connect(
                    at,
                    conn.client,
                    conn.server,
                    conn.client.ip,
                    conn.server_ip,
                    conn.dport,
                    data=False,
                    close=False,
                    cport=conn.cport,
                )

    moved = sorted({wl.ident for wl, _ in moves})
    scraped = any(wl.metrics_port for wl, _ in moves)
    onto = sorted({new.node.name for _, _, new in plan if new.node is not None})
    c = Change(
        "node_drain",
        identities(*moved, topo.spec.scraper if scraped else ""),
        s,
        e,
        f"{node.name} drained at {hhmm(s)} and left cordoned: {len(plan)} pods of "
        f"{len(moved)} workloads ({', '.join(moved)}) recreated with new IPs on "
        f"{', '.join(onto)}",
    )
    c.transitions.append((s, drain))
    for wl, _, new in plan:
        deps = servers_of(topo, wl.ident)
        c.events.append(
            (starts[new.key], lambda t, pod=new, wl=wl, deps=deps: warm_up(ctx, t, pod, wl, deps))
        )
    return c


def dns_provider_change(ctx: ChangeContext, s: int, e: int) -> Change:
    topo, rnd = ctx.topo, ctx.rnd
    old = topo.dns_upstream.ips[0]
    used = {ip for svc in topo.world_services.values() for ip in svc.ips} | {old}
    # another provider is another network: an address beside the old one is the same
    # provider's (a failover), not a change of provider
    net = old.rsplit(".", 1)[0]
    candidates = [
        ip
        for ip in ("203.0.113.254", "203.0.113.252", "203.0.113.251")
        if ip not in used and not ip.startswith(net + ".")
    ] or ["198.18.0.53", "198.18.1.53", "198.19.0.53"]
    new = rnd.choice(candidates)
    upstream = WorldService("dns-upstream", (new,), 53)
    switches = [s + int(rnd.uniform(30, 120) * _S) for _ in topo.workloads[DNS].pods]
    for slot, t in enumerate(switches):
        topo.upstream_switch[slot] = (t, upstream)
    return Change(
        "dns_provider_change",
        identities(DNS),
        s,
        e,
        f"CoreDNS forwards to {new}:53 instead of {old}:53 from {hhmm(s)} (each replica after "
        f"its Corefile reload, by {hhmm(max(switches))})",
    )

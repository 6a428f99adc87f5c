"""Changes that add something new: a Deployment, an external vendor, a one-off Job, a debug pod.

Each is what the Kubernetes objects involved make happen on the network:

- ``new_service``: a new Deployment (1-3 replicas, its own identity) in an existing namespace.
  Its pods start (image pull, readiness: 20-90 s), resolve their dependency and open a connection
  pool to it; Prometheus discovers them through the API and scrapes their metrics port at the
  cluster's interval; a few minutes later (the caller's rollout or feature flag) an existing
  workload starts calling it: a DNS lookup of ``<svc>.<ns>.svc.cluster.local`` through CoreDNS
  first (per client pod, again when the answer expires), then HTTP on its port, at a rate that
  follows user load. It stays to the end of the generated range.
- ``new_saas_vendor``: an existing service starts calling a new vendor by name on 443. SaaS and
  CDN names answer with a short TTL and rotate their addresses, so each lookup returns 2-4 of a
  handful of IPs; every pod looks the name up before its first call and after the TTL, CoreDNS
  forwards cache misses upstream, and calls follow the caller's user load.
- ``new_job``: a Job (or a new CronJob's first run) never seen before runs once for 20-40 min:
  its pod (its own identity: ``job-name`` labels) resolves what it reads, reads a data store of
  its own namespace or pages through a service, and uploads to object storage by name.
- ``debug_pod``: ``kubectl run tmp-shell --rm -it --image nicolaka/netshoot`` in a namespace for
  10-20 min: a bare pod (no owner, so no workload in Hubble) through which a person runs a few
  ``nslookup``/``dig``, ``curl`` and ``nc -zv`` against the namespace's services, minutes apart.
"""

from __future__ import annotations

from .changes import (
    Change,
    ChangeContext,
    PodLife,
    Resolver,
    Scrapes,
    arrivals,
    hhmm,
    identities,
    warm_up,
)
from .nightly import job_labels
from .sessions import dns_name, fill, status, ticks
from .topology import DNS, Workload, WorldService, pod_suffix

__all__ = ["debug_pod", "new_job", "new_saas_vendor", "new_service", "scrapes_every_pod"]

_S = 1_000_000_000
_MIN = 60 * _S


def scrapes_every_pod(ctx: ChangeContext) -> bool:
    """Whether the cluster's monitoring scrapes every pod (then Jobs are scraped too)."""
    spec = ctx.topo.spec
    return all(w.metrics_port for w in spec.workloads if f"{w.namespace}/{w.name}" != spec.scraper)


def _spread(ctx: ChangeContext, n: int) -> list:
    nodes = ctx.topo.schedulable()
    first = ctx.rnd.randrange(len(nodes))
    return [nodes[(first + i) % len(nodes)] for i in range(n)]


def new_service(ctx: ChangeContext, s: int, e: int) -> Change:
    topo, rnd, conv = ctx.topo, ctx.rnd, ctx.conv
    role = rnd.choice(topo.spec.roles.new_service)
    caller, dep = topo.workloads[role.caller], topo.workloads[role.dependency]
    metrics = caller.port if caller.metrics_port == caller.port else caller.metrics_port
    wl = topo.new_workload(role.namespace, role.name, "Deployment", caller.port, metrics, rnd)
    rs_hash = pod_suffix(rnd, rnd.choice((9, 10)))
    lives = []
    for node in _spread(ctx, rnd.randint(1, 3)):
        pod = topo.spawn_pod(wl, node, rnd, f"{wl.name}-{rs_hash}-{pod_suffix(rnd)}")
        lives.append(PodLife(pod, s + int(rnd.uniform(20, 90) * _S), e + _S))
    calls_from = s + int(rnd.uniform(3, 8) * _MIN)
    name, hit = dns_name(caller, wl)
    resolver = Resolver(ctx, rnd.randint(5, 30))
    conns: dict[tuple[int, int], int] = {}  # (client, server) -> kept-alive client port
    pools: dict[int, int] = {}  # new pod -> its pooled connection to the dependency

    def start(t: int, life: PodLife) -> None:
        warm_up(ctx, t, life.pod, wl, [dep.ident])
        pools[life.pod.key] = conv.ephemeral_port()

    def calls(t0: int, t1: int) -> None:
        for t in arrivals(ctx, t0, t1, calls_from, e - _S, role.per_min):
            ready = [life.pod for life in lives if life.alive(t)]
            client, server = rnd.choice(caller.pods), rnd.choice(ready)
            t, looked = resolver.resolve(t, client, name, hit, (wl.cluster_ip,))
            if not looked and rnd.random() < topo.spec.dns.lookup["http"]:
                t = conv.lookup(t, client, name, hit, (wl.cluster_ip,), 5)
            key = (client.key, server.key)
            if key not in conns or rnd.random() < 0.3:
                conns[key], t = conv.tcp_connect(
                    t, client, server, client.ip, server.ip, wl.port, data=False, close=False
                )
            method, path = rnd.choice(role.requests)
            url = f"http://{wl.name}.{wl.namespace}.svc.cluster.local{fill(path, rnd)}"
            if rnd.random() < 0.7:  # the new service reads its dependency while it answers
                target = rnd.choice(dep.pods)
                conv.activity(
                    t + conv.hop(client, server) + conv.uniform_ns(200_000, 2_000_000),
                    server,
                    target,
                    server.ip,
                    target.ip,
                    pools.get(server.key) or conv.ephemeral_port(),
                    dep.port,
                )
            conv.http(t, client, server, conns[key], method, url, status(method, rnd))

    prom = topo.spec.scraper
    scraped = (
        f"; {prom} scrapes :{metrics} every {topo.spec.scrape_interval_s} s" if metrics else ""
    )
    c = Change(
        "new_service",
        identities(wl.ident, caller.ident, dep.ident, DNS, prom if metrics else ""),
        s,
        e,
        f"new Deployment {wl.ident} ({len(lives)} replica(s), :{wl.port}) from {hhmm(s)}; "
        f"{caller.ident} calls it over HTTP from {hhmm(calls_from)} after looking up "
        f"{hit[:-1]}{scraped}; it reads {dep.ident}",
    )
    c.events += [(life.ready, lambda t, life=life: start(t, life)) for life in lives]
    c.streams.append(calls)
    if metrics:
        c.streams.append(Scrapes(ctx, lives, metrics))
    return c


def new_saas_vendor(ctx: ChangeContext, s: int, e: int) -> Change:
    topo, rnd, conv = ctx.topo, ctx.rnd, ctx.conv
    role = rnd.choice(topo.spec.roles.saas)
    caller = topo.workloads[role.caller]
    pool = [f"203.0.113.{h}" for h in rnd.sample(range(120, 200), rnd.randint(5, 8))]
    ttl = 60 * _S

    def answer(t: int) -> tuple[str, ...]:
        """The rotating answer: which 2-4 of the pool, in which order, changes every TTL."""
        bucket = t // ttl
        first, count = (bucket * 3) % len(pool), 2 + bucket % 3
        return tuple(pool[(first + i) % len(pool)] for i in range(count))

    cached: dict[int, tuple[int, tuple[str, ...]]] = {}  # pod -> (expiry, answer)
    current: dict[int, tuple[str, int]] = {}  # pod -> (address, client port) of a kept connection
    upstream_until = [0]  # CoreDNS caches the answer for its TTL too

    def calls(t0: int, t1: int) -> None:
        for t in arrivals(ctx, t0, t1, s, e - _S, role.per_min):
            client = rnd.choice(caller.pods)
            expiry, ips = cached.get(client.key, (-1, ()))
            if t >= expiry:
                ips = answer(t)
                miss = t >= upstream_until[0]
                if miss:
                    upstream_until[0] = t + ttl
                aaaa = rnd.random() < topo.spec.dns.aaaa
                t = conv.lookup(
                    t, client, role.fqdn, role.fqdn + ".", ips, 60, aaaa=aaaa, upstream=miss
                )
                cached[client.key] = (t + ttl, ips)
            ip = ips[0]
            kept = current.get(client.key)
            if kept is not None and kept[0] == ip and rnd.random() < 0.6:
                conv.activity(t, client, topo.world, client.ip, ip, kept[1], 443, fqdn=role.fqdn)
                continue
            close = rnd.random() < 0.5
            cport, _ = conv.tcp_connect(
                t,
                client,
                topo.world,
                client.ip,
                ip,
                443,
                response=True,
                close=close,
                fqdn=role.fqdn,
            )
            if close:
                current.pop(client.key, None)
            else:
                current[client.key] = (ip, cport)

    c = Change(
        "new_saas_vendor",
        identities(caller.ident, DNS),
        s,
        e,
        f"{caller.ident} starts calling new vendor {role.fqdn}:443 at {hhmm(s)} (about "
        f"{role.per_min:g}/min at peak, following user load); each lookup answers 2-4 of "
        f"{len(pool)} rotating addresses ({', '.join(sorted(pool))})",
    )
    c.streams.append(calls)
    return c


def new_job(ctx: ChangeContext, s: int, e: int) -> Change:
    topo, rnd, conv = ctx.topo, ctx.rnd, ctx.conv
    role = rnd.choice(topo.spec.roles.new_job)
    minute = s // _MIN
    job_name = f"{role.name}-{minute}" if role.kind == "CronJob" else role.name
    metrics = 8080 if scrapes_every_pod(ctx) else None
    wl = topo.new_workload(
        role.namespace,
        role.name,
        role.kind,
        metrics or 0,
        metrics,
        rnd,
        extra_labels=job_labels(job_name),
        service=False,
    )
    pod = topo.spawn_pod(wl, rnd.choice(topo.schedulable()), rnd, f"{job_name}-{pod_suffix(rnd)}")
    life = PodLife(pod, s + int(rnd.uniform(5, 20) * _S), e - int(rnd.uniform(3, 10) * _S))
    target = topo.workloads[role.reads]
    store = _storage(ctx, role.uploads) if role.uploads else None
    server = rnd.choice(target.pods)
    state = {"port": 0}

    def start(t: int) -> None:
        name, hit = dns_name(wl, target)
        t = conv.lookup(t, pod, name, hit, (target.cluster_ip,), 5, aaaa=True)
        data = role.via == "tcp"
        state["port"], _ = conv.tcp_connect(
            t, pod, server, pod.ip, server.ip, target.port, data=data, response=data, close=False
        )

    def reads(t0: int, t1: int) -> None:
        lo, hi = max(t0, life.ready + 2 * _S), min(t1, life.gone - 5 * _S)
        period = 2 * _S if role.via == "tcp" else 3 * _S
        cport = state["port"] or conv.ephemeral_port()
        for t in ticks(lo, hi, life.ready, period) if lo < hi else ():
            t += conv.uniform_ns(0, period // 2)
            if role.via == "tcp":
                conv.activity(t, pod, server, pod.ip, server.ip, cport, target.port)
            else:
                method, path = rnd.choice(role.requests)
                url = f"http://{target.name}.{target.namespace}.svc.cluster.local{fill(path, rnd)}"
                conv.http(t, pod, server, cport, method, url, 200)

    def upload(t: int) -> None:
        assert store is not None
        t = conv.lookup(
            t, pod, store.fqdn, store.fqdn + ".", store.ips, 5, aaaa=True, upstream=True
        )
        ip = rnd.choice(store.ips)
        cport, t = conv.tcp_connect(
            t, pod, topo.world, pod.ip, ip, 443, close=False, fqdn=store.fqdn
        )
        for _ in range(rnd.randint(3, 8)):
            t = conv.activity(
                t + conv.uniform_ns(1_000_000, 40_000_000),
                pod,
                topo.world,
                pod.ip,
                ip,
                cport,
                443,
                fqdn=store.fqdn,
            )
        conv.packet(t + 500_000, pod, topo.world, pod.ip, ip, "TCP", cport, 443, "AF", True, "ESTABLISHED", "", store.fqdn)  # fmt: skip

    def finish(t: int) -> None:
        conv.packet(t, pod, server, pod.ip, server.ip, "TCP", state["port"] or conv.ephemeral_port(), target.port, "AF", True, "ESTABLISHED")  # fmt: skip

    prom = topo.spec.scraper if metrics else ""
    via = f"over TCP :{target.port}" if role.via == "tcp" else f"through its API :{target.port}"
    up = f", uploads to {store.fqdn}" if store else ""
    c = Change(
        "new_job",
        identities(wl.ident, target.ident, DNS, prom),
        s,
        e,
        f"{role.kind} {wl.ident} (pod {pod.pod_name}) runs once {hhmm(life.ready)}-"
        f"{hhmm(life.gone)}: reads {target.ident} {via}{up}",
    )
    c.events.append((life.ready, start))
    c.events.append((life.gone - 4 * _S, finish))
    if store is not None:
        t = life.ready + int(rnd.uniform(60, 120) * _S)
        while t < life.gone - 30 * _S:
            c.events.append((t, upload))
            t += int(rnd.uniform(60, 120) * _S)
    c.streams.append(reads)
    if metrics:
        c.streams.append(Scrapes(ctx, [life], metrics))
    return c


def _storage(ctx: ChangeContext, fqdn: str) -> WorldService:
    """Object storage: the cluster's own endpoint if it has one, else a few addresses."""
    known = ctx.topo.world_services.get(fqdn)
    if known is not None:
        return known
    hosts = ctx.rnd.sample(range(200, 216), 3)
    return WorldService(fqdn, tuple(f"203.0.113.{h}" for h in hosts), 443)


def debug_pod(ctx: ChangeContext, s: int, e: int) -> Change:
    topo, rnd, conv = ctx.topo, ctx.rnd, ctx.conv
    ns = rnd.choice(topo.spec.roles.debug_namespaces)
    wl = topo.new_workload(
        ns, "tmp-shell", "Pod", 0, None, rnd, extra_labels=("k8s:run=tmp-shell",), app_label=False
    )
    wl.cluster_ip = ""
    pod = topo.spawn_pod(wl, rnd.choice(topo.schedulable()), rnd, "tmp-shell")
    services = [
        w for w in topo.workloads.values() if w.namespace == ns and w.kind != "DaemonSet" and w.pods
    ]
    http_servers = {e.server for e in topo.spec.edges if e.kind == "http"}
    t, first, steps = s + int(rnd.uniform(10, 40) * _S), True, []
    while t < e - 10 * _S:
        svc = rnd.choice(services)
        if first:
            cmd = "nslookup"
        else:
            cmd = rnd.choice(
                ("nslookup", "dig", "curl" if svc.ident in http_servers else "nc", "nc")
            )
        steps.append((t, cmd, svc))
        first = False
        t += int(rnd.uniform(30, 150) * _S)

    def run(t: int, cmd: str, svc: Workload) -> None:
        name, hit = dns_name(wl, svc)
        if cmd == "dig":
            conv.lookup(t, pod, hit, hit, (svc.cluster_ip,), 5)
            return
        t = conv.lookup(t, pod, name, hit, (svc.cluster_ip,), 5, aaaa=True)
        if cmd == "nslookup":
            return
        target = rnd.choice(svc.pods)
        if cmd == "nc":  # nc -zv <svc> <port>: connect, then close
            conv.tcp_connect(t, pod, target, pod.ip, target.ip, svc.port, data=False)
            return
        cport, t = conv.tcp_connect(
            t, pod, target, pod.ip, target.ip, svc.port, data=False, close=False
        )
        url = f"http://{name}:{svc.port}/"
        t = conv.http(t, pod, target, cport, "GET", url, 200)
        conv.packet(t + 200_000, pod, target, pod.ip, target.ip, "TCP", cport, svc.port, "AF", True, "ESTABLISHED")  # fmt: skip

    touched = sorted({svc.ident for _, _, svc in steps})
    connected = [svc.ident for _, cmd, svc in steps if cmd in ("curl", "nc")]
    c = Change(
        "debug_pod",
        identities(wl.ident, DNS, *connected),
        s,
        e,
        f"kubectl run tmp-shell (nicolaka/netshoot) in {ns} {hhmm(s)}-{hhmm(e)}: "
        f"{len(steps)} commands (nslookup, dig, curl, nc -zv) against {', '.join(touched)}",
    )
    c.events += [(t, lambda t, cmd=cmd, svc=svc: run(t, cmd, svc)) for t, cmd, svc in steps]
    return c

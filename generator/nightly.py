"""A nightly CronJob as part of normal traffic: a new pod (and, in Cilium, a new security
identity) every night, the same workload ``namespace/name`` every night.

The CronJob controller names each Job ``<cronjob>-<scheduled minute since the epoch>``, and its
pod ``<job>-<5 chars>``; the pod carries ``job-name=<job>`` labels, which Cilium keeps as
identity labels, so every run gets its own identity while Hubble names the workload
``{"name": <cronjob>, "kind": "CronJob"}``. A run is placed by a hash of the seed's salt and its
scheduled time, so a night looks the same whichever generated range contains it; its sessions
draw from the normal random streams like everything else. Placement looks at the workers as
built, not at a later drain's cordon, so that normal traffic stays the same with and without
changes (a range with ``node_drain`` that spans a later night may run the job on the drained
node).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from .sessions import Conversations, dns_name, ticks
from .spec import NightlyJob
from .topology import Endpoint, Topology, Workload, pod_suffix

__all__ = ["NightlyJobs", "job_labels"]

_S = 1_000_000_000
_DAY = 86400 * _S
_READ_EVERY = 3 * _S  # the reconciliation pages through the database
_REPORT_EVERY = 30 * _S  # and posts each finished batch to the ledger
_KEY_BASE = 1 << 22  # endpoint keys of nightly pods, apart from built and spawned ones


def job_labels(job_name: str) -> tuple[str, ...]:
    """Identity labels a Job adds to its pods (``controller-uid`` is not identity-relevant)."""
    return (f"k8s:batch.kubernetes.io/job-name={job_name}", f"k8s:job-name={job_name}")


@dataclass
class _Run:
    """One night's run: its pod and the ports of its kept-alive connections."""

    pod: Endpoint
    start: int
    end: int
    db_port: int = 0
    api_port: int = 0
    scrape_port: int = 0
    scrape_phase: int = 0


class NightlyJobs:
    """Emits the spec's nightly CronJobs (their DNS, reads, reports, upload and scrapes)."""

    def __init__(
        self,
        topo: Topology,
        conv: Conversations,
        rnd: random.Random,
        scraper: Callable[[], Endpoint],
        scrape_period: int,
    ) -> None:
        self.topo, self.conv, self.rnd = topo, conv, rnd
        self.scraper, self.scrape_period = scraper, scrape_period
        self.salt = rnd.getrandbits(64)
        self.workers = list(topo.workers)  # placement ignores later cordons (see module doc)
        self.ids = topo.endpoint_ids()
        self.runs: dict[tuple[int, int], _Run] = {}

    def emit(self, t0: int, t1: int) -> None:
        for j, job in enumerate(self.topo.spec.nightly):
            for day in (t0 // _DAY - 1, t0 // _DAY):
                run = self._run(j, job, day)
                if run.start < t1 and run.end > t0:
                    self._emit_run(job, run, t0, t1)
                elif run.end <= t0:
                    self.runs.pop((j, day), None)

    def _run(self, j: int, job: NightlyJob, day: int) -> _Run:
        key = (j, day)
        run = self.runs.get(key)
        if run is not None:
            return run
        scheduled = day * _DAY + int(job.hour_utc * 3600) * _S
        minute = scheduled // (60 * _S)
        r = random.Random(f"{self.salt}/{job.namespace}/{job.name}/{minute}")
        job_name = f"{job.name}-{minute}"
        wl = self.topo.new_workload(
            job.namespace,
            job.name,
            "CronJob",
            job.metrics_port or 0,
            job.metrics_port,
            r,
            extra_labels=job_labels(job_name),
            service=False,
        )
        node = r.choice(self.workers)
        ep_id = r.randrange(1, 4096)
        while ep_id in self.ids[node.index]:
            ep_id = r.randrange(1, 4096)
        pod = Endpoint(
            _KEY_BASE + day * 8 + j,
            wl.identity,
            wl.labels,
            wl.namespace,
            f"{job_name}-{pod_suffix(r)}",
            wl.name,
            wl.kind,
            ep_id,
            node,
            f"{self.topo.spec.pod_prefix}.{node.index}.{200 + day % 50}",
            f"02:{r.randrange(256):02x}:{r.randrange(256):02x}:{r.randrange(256):02x}:"
            f"{r.randrange(256):02x}:{r.randrange(256):02x}",
            r.randrange(8, 120),
            wl.port,
            self.topo.cluster,
        )
        start = scheduled + int(r.uniform(5, 25) * _S)  # image pull, container start
        end = scheduled + r.randint(*job.minutes) * 60 * _S
        run = _Run(pod, start, end, scrape_phase=r.randrange(self.scrape_period))
        self.runs[key] = run
        return run

    def _emit_run(self, job: NightlyJob, run: _Run, t0: int, t1: int) -> None:
        conv, rnd, wl, pod = self.conv, self.rnd, self.topo.workloads, run.pod
        db_wl, api_wl = wl[job.reads], wl[job.calls]
        db, api = db_wl.pods[0], rnd.choice(api_wl.pods)  # reads the primary
        if t0 <= run.start < t1:
            t = run.start
            for target in (db_wl, api_wl):
                name, hit = dns_name(_as_client(pod), target)
                t = conv.lookup(t, pod, name, hit, (target.cluster_ip,), 5, aaaa=True)
            run.db_port, t = conv.tcp_connect(t, pod, db, pod.ip, db.ip, db.port, close=False)
            run.api_port, _ = conv.tcp_connect(
                t, pod, api, pod.ip, api.ip, api.port, data=False, close=False
            )
        run.db_port = run.db_port or conv.ephemeral_port()  # a range starting mid-run
        run.api_port = run.api_port or conv.ephemeral_port()
        lo, hi = max(t0, run.start + _S), min(t1, run.end - 10 * _S)
        for t in ticks(lo, hi, run.start, _READ_EVERY) if lo < hi else ():
            conv.activity(
                t + conv.uniform_ns(0, _S // 2), pod, db, pod.ip, db.ip, run.db_port, db.port
            )
        for t in ticks(lo, hi, run.start, _REPORT_EVERY) if lo < hi else ():
            method, path = job.call
            url = f"http://{api_wl.name}.{api_wl.namespace}.svc.cluster.local{path}"
            conv.http(t + conv.uniform_ns(0, _S), pod, api, run.api_port, method, url, 201)
        if job.metrics_port:
            self._scrapes(run, job.metrics_port, t0, t1)
        if t0 <= run.end - 8 * _S < t1:
            self._upload(job, run, run.end - 8 * _S, db)

    def _scrapes(self, run: _Run, port: int, t0: int, t1: int) -> None:
        conv, prom, pod = self.conv, self.scraper(), run.pod
        lo, hi = max(t0, run.start + 2 * _S), min(t1, run.end)
        for t in ticks(lo, hi, run.scrape_phase, self.scrape_period) if lo < hi else ():
            if not run.scrape_port:  # discovered: the first scrape opens the connection
                run.scrape_port, _ = conv.tcp_connect(
                    t, prom, pod, prom.ip, pod.ip, port, close=False
                )
            else:
                conv.activity(t, prom, pod, prom.ip, pod.ip, run.scrape_port, port, response=False)

    def _upload(self, job: NightlyJob, run: _Run, t: int, db: Endpoint) -> None:
        """The report goes to object storage, then the pod closes its connections and exits."""
        conv, rnd, pod = self.conv, self.rnd, run.pod
        svc = self.topo.world_services[job.uploads]
        t = conv.lookup(t, pod, svc.fqdn, svc.fqdn + ".", svc.ips, 5, aaaa=True, upstream=True)
        ip = rnd.choice(svc.ips)
        cport, t = conv.tcp_connect(
            t, pod, self.topo.world, pod.ip, ip, 443, close=False, fqdn=svc.fqdn
        )
        for _ in range(rnd.randint(3, 6)):
            t = conv.activity(
                t + conv.uniform_ns(1_000_000, 30_000_000),
                pod,
                self.topo.world,
                pod.ip,
                ip,
                cport,
                443,
                fqdn=svc.fqdn,
            )
        for peer, pip, sport, dport in (
            (self.topo.world, ip, cport, 443),
            (db, db.ip, run.db_port, db.port),
        ):
            t = conv.packet(
                t + conv.uniform_ns(100_000, 2_000_000),
                pod,
                peer,
                pod.ip,
                pip,
                "TCP",
                sport,
                dport,
                "AF",
                True,
                "ESTABLISHED",
                "",
                svc.fqdn if peer is self.topo.world else "",
            )


def _as_client(pod: Endpoint) -> Workload:
    """Just enough of a Workload for :func:`dns_name` (which needs the client's namespace)."""
    return Workload(pod.namespace, pod.workload, pod.kind, 0, None, 0, (), "")

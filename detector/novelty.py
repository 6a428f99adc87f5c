"""New edges: a change to review, or evidence of an attack. The decision rule, written down.

A window's edges that the identity's edge memory (:mod:`netwarden.models.edges`) does not know
are *new*. A cluster makes new edges every day (a new service and its callers, Prometheus
scraping it, a new SaaS vendor, a job), and an attacker makes them too; what tells them apart
is not novelty but how the new edge behaves. Each rule below is argued from how networks and
Kubernetes behave; a new edge that meets none of them is a **change** (one reviewable record,
never an alert: :mod:`netwarden.detector.changes`), one that meets any is **evidence** and the
window is an anomaly whose reasons name the rule and the edges.

Egress (the identity as client), a new edge to:

* **an internet address without a name** (``cidr:`` peer), when names are visible in this
  cluster (some internet peer was ever reached by name, i.e. Cilium's DNS proxy is on) and the
  identity does not already reach unnamed internet peers on that port: software finds internet
  services through DNS; a hard-coded address is how implants, miners and beacons are built.
  An identity that already talks to unnamed addresses on that port (a resolver's upstreams on
  53, a client of a fixed-address partner) is changing its peer, not its kind of traffic.
* **an internet peer on a port outside the web ports** (80, 443) that the identity never used
  toward the internet: SaaS APIs are HTTPS; SSH, SMTP relays, IRC, raw TCP to an unusual port
  are how data leaves and commands arrive.
* **a data store in another namespace**: a well-known database/cache/queue port that the peer
  is known to serve, in a different namespace. Namespaces are the unit of ownership in
  Kubernetes, and a running service that starts reaching another team's database directly is
  the lateral movement network policy exists to stop; however few the connections (one or two
  a minute is enough to read a database), the first one is the signal. One exception: a
  workload new to the cluster (itself a change under review) whose namespace already has that
  access, i.e. a new deployment joining its namespace's data path.
* **far more traffic than the identity's known edges carry**: a new edge with at least
  :data:`VOLUME_FACTOR` times the flows per window of the identity's busiest known edge of the
  same class (a new internet peer against the internet peers it knows, where it knows any;
  otherwise against all its edges), and :data:`VOLUME_MIN_FLOWS`. A new dependency's calls come
  from the same requests as the identity's other calls, so they run at the same order of rate
  as its other calls of that kind (a new SaaS API like its other SaaS APIs); a bulk upload does
  not. Internal edges are the wrong yardstick for the internet: a worker's pooled Kafka or
  database connections carry far more flow records than any API call, and data leaves to the
  internet. (A workload with no known edge has no rate to compare with: a new job's bulk read
  is its job.)
* **a workload in another namespace, both known, for the first time** (on a port the peer
  serves), unless the client already reaches :data:`CROSSING_NAMESPACES` or more other
  namespaces besides kube-system (an ingress controller, a scraper, a mesh gateway: crossing
  is their job). A new
  dependency on another team's service comes with a new workload or a new release far more
  often than out of a running service; a running service reaching into another namespace is
  how lateral movement looks (warning severity: it is the weakest rule).
* **a workload of its own namespace, by a running pod** (on a port the peer serves): both
  workloads known for at least :data:`ESTABLISHED_SECONDS`, and no pod of the client started
  within :data:`ESTABLISHED_SECONDS` before the edge first appeared, unless the client reaches
  :data:`HUB_PEERS` or more workloads already (a gateway, proxy or scraper: its targets follow
  its configuration). Code decides which services an application calls, and new code arrives
  in new pods: a release's new dependency shows within minutes of its pods starting, a new
  service's callers call a workload that is itself new. A pod that has run unchanged for an
  hour and starts calling an established service it never used is running something it was
  not deployed with (warning severity, like the crossing rule).
* **a random-looking DNS name** (``fqdn:`` peer whose first label has the character entropy and
  length of encoded data or a DGA, not of a word).

Either direction, over the last hour (``horizon_seconds``) of this identity's new edges:

* **failing new edges**: connection attempts that failed (SYN without SYN-ACK, reset, drop) on
  at least :data:`FAILING_EDGES` distinct new edges, or on one new edge in
  :data:`FAILING_WINDOWS` windows. A new dependency that is misconfigured fails on one edge for
  a moment; probing fails on many.
* **a port sweep**: at least :data:`SWEEP_PORTS` distinct new ports on one peer the identity
  otherwise knows, or at least :data:`SWEEP_PEERS` distinct new peers. A service adds one or
  two ports to a dependency in a release; walking through ports one by one (also one a minute,
  for hours) is a scan.
* **a beacon** (egress, internet): connections to a new internet peer starting at a fixed
  rhythm: over the horizon, at least :data:`BEACON_CONNECTIONS` connection starts whose
  intervals (10 s to 15 min on average) have a standard deviation under :data:`BEACON_JITTER`
  of their mean, or, to an internet domain no workload of the cluster uses, already
  :data:`BEACON_FAST_CONNECTIONS` under :data:`BEACON_FAST_JITTER`. Calls that follow users
  arrive at random (their intervals' deviation is about their mean: a coefficient of variation
  near 1; seven random intervals come out within 15% about once in 20,000 tries, four within 5%
  about once in 5,000, and the fast test is only tried on domains new to the whole cluster);
  an implant's check-in is a timer, and the jitter implants add to it is a few percent
  (uniform jitter of 10% of the period passes the first test always and the second about half
  the time, 5% both nearly always). The fast test catches a check-in every 30-45 s within three
  minutes; a beacon to a named host has no other tell. From pods that ran unchanged for
  :data:`ESTABLISHED_SECONDS` it starts at :data:`BEACON_EARLY_CONNECTIONS` (three random
  intervals fall within 5% once in 330 tries, and it is tried once per new domain: at the fourth
  connection), so a check-in every minute is found within three minutes too. Code decides what
  a pod calls, and new code comes in new pods: a new SaaS agent's timer (a metrics pusher, a
  flag poller) starts with its pods, where only the longer tests apply; an implant in a pod
  that was running before has no release to explain its new domain. When, besides, the
  workload reached no new internet destination for a whole day (:data:`CLOSED_SECONDS`: its
  vendors are a closed set, unlike a webhook sender's or a crawler's), it starts at
  :data:`BEACON_CLOSED_CONNECTIONS`: two intervals within 5%, at most
  :data:`BEACON_CLOSED_PERIOD` apart (random calls: once in 20 tries, tried once per new
  domain, and a settled workload with a closed set calling a new domain at all is already
  rare: a feature flag without a release). A check-in every 60 s that starts at a window
  boundary has only three connections in three windows.

Internet peers on the ingress side are not novelty at all: a public endpoint meets new client
networks all day. Nor are a new workload's refused callers: it refuses its first callers and
scrapers until it is ready.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from typing import Final

from netwarden.ingest.windows import ClosedWindow, Edge
from netwarden.models.edges import EdgeMemory, namespace_of, registrable_domain

__all__ = [
    "DATA_STORE_PORTS",
    "WEB_PORTS",
    "Evidence",
    "NewEdge",
    "Novelty",
    "NoveltyDetector",
]

#: Ports of internet services reached by ordinary software (HTTP, HTTPS).
WEB_PORTS: Final = frozenset({80, 443})
#: Well-known server ports of data stores, caches and queues (TCP).
DATA_STORE_PORTS: Final[dict[int, str]] = {
    1433: "SQL Server",
    1521: "Oracle",
    2379: "etcd",
    3306: "MySQL",
    5432: "PostgreSQL",
    5672: "AMQP",
    5984: "CouchDB",
    6379: "Redis",
    7000: "Cassandra",
    7687: "Neo4j",
    8086: "InfluxDB",
    9042: "Cassandra",
    9092: "Kafka",
    9200: "Elasticsearch",
    9300: "Elasticsearch",
    11211: "memcached",
    26257: "CockroachDB",
    27017: "MongoDB",
    28015: "RethinkDB",
}
FAILING_EDGES: Final = 3
FAILING_WINDOWS: Final = 2
SWEEP_PORTS: Final = 4
SWEEP_PEERS: Final = 16
BEACON_CONNECTIONS: Final = 8
BEACON_JITTER: Final = 0.15
BEACON_FAST_CONNECTIONS: Final = 5
BEACON_FAST_JITTER: Final = 0.05
#: From pods that ran unchanged for :data:`ESTABLISHED_SECONDS`, to a domain new to the
#: cluster, the fast test starts at this many connections (three intervals).
BEACON_EARLY_CONNECTIONS: Final = 4
#: ... and at this many (two intervals) when the workload's internet destinations also held
#: still for :data:`CLOSED_SECONDS`.
BEACON_CLOSED_CONNECTIONS: Final = 3
#: ... for check-ins this often or more (seconds): a timer of a minute (and its jitter) shows
#: only three times in three windows; a slower one has time for its fourth before it is late,
#: and calls that follow users come this slowly most often at night, so the weaker test is
#: tried on them least.
BEACON_CLOSED_PERIOD: Final = 90.0
#: A whole daily cycle: a workload that reached no new internet destination in one has a
#: closed set of them (its code's vendors); one that meets new ones daily (webhooks, crawlers,
#: link previews) does not.
CLOSED_SECONDS: Final = 86_400.0
BEACON_PERIOD: Final = (10.0, 900.0)
#: Other namespaces (kube-system aside) an identity reaches when crossing namespaces is its
#: job: an ingress controller, a scraper, a mesh gateway reach most of them; an application
#: reaches its data stores and perhaps a telemetry collector.
CROSSING_NAMESPACES: Final = 3
#: How long a workload must have been known, and its pods running, for a new dependency of
#: one of them to be its own doing rather than a release's (a rollout's pods start taking
#: traffic within minutes; an hour covers the release and a long tail of rare calls).
ESTABLISHED_SECONDS: Final = 3600.0
#: Workloads a client already reaches when reaching one more is its configuration's doing (a
#: gateway, a proxy, a scraper); an application's dependencies are a handful.
HUB_PEERS: Final = 8
VOLUME_FACTOR: Final = 10.0
VOLUME_MIN_FLOWS: Final = 30
#: Character entropy (bits) and length from which a DNS label looks like encoded data.
RANDOM_LABEL_BITS: Final = 3.9
RANDOM_LABEL_LENGTH: Final = 20
_TCP: Final = 6

#: Strength of each rule as a score, in units of the model threshold (see severity.py):
#: rules that only attacks meet are critical.
RULE_SCORES: Final[dict[str, float]] = {
    "unnamed_internet": 2.0,
    "internet_port": 1.5,
    "cross_namespace_data_store": 2.5,
    "cross_namespace_service": 1.5,
    "running_pod": 1.5,
    "volume": 2.0,
    "random_name": 2.0,
    "failing_new_edges": 2.0,
    "port_sweep": 3.0,
    "peer_sweep": 3.0,
    "beacon": 2.0,
}


@dataclass(frozen=True, slots=True)
class NewEdge:
    egress: bool
    edge: Edge

    def text(self) -> str:
        arrow = "to" if self.egress else "from"
        port = f" {self.edge.port_text}" if self.edge.port_text else ""
        return f"{arrow} {self.edge.peer}{port}"


@dataclass(frozen=True, slots=True)
class Evidence:
    """One rule a window's new edges met: why they are an anomaly, not a change."""

    rule: str
    text: str
    edges: tuple[NewEdge, ...]
    #: The other end most responsible (the attacker for ingress evidence), else "".
    peer: str = ""

    @property
    def score(self) -> float:
        return RULE_SCORES[self.rule]


@dataclass
class Novelty:
    """What was new in one window, and what of it is evidence."""

    new: list[NewEdge] = field(default_factory=list)
    evidence: list[Evidence] = field(default_factory=list)

    @property
    def suspicious(self) -> bool:
        return bool(self.evidence)


def label_entropy(label: str) -> float:
    n = len(label)
    if not n:
        return 0.0
    return -sum(c / n * math.log2(c / n) for c in Counter(label).values())


def random_looking(name: str) -> bool:
    """A DNS name whose first label looks like encoded data or a DGA, not like words."""
    label = name.removeprefix("fqdn:").split(".", 1)[0]
    if len(label) < RANDOM_LABEL_LENGTH:
        return False
    digits = sum(ch.isdigit() for ch in label)
    return label_entropy(label) >= RANDOM_LABEL_BITS or digits * 3 >= len(label)


def _is_world(peer: str) -> bool:
    return peer.startswith(("fqdn:", "cidr:", "world:"))


@dataclass
class _Seen:
    """A new edge within the horizon: windows it appeared in, flows, failures."""

    first: float
    windows: deque[tuple[float, int, int]] = field(default_factory=deque)  # start, flows, fails
    times: deque[float] = field(default_factory=lambda: deque(maxlen=64))  # connection starts


class NoveltyDetector:
    """Finds a window's new edges and the evidence among them; keeps the last hour of new
    edges per identity for the rules that need more than one window."""

    def __init__(self, memory: EdgeMemory, *, horizon_seconds: float = 3600.0) -> None:
        self.memory = memory
        self.horizon = horizon_seconds
        #: identity -> (egress, peer, protocol, port) -> its recent windows.
        self._recent: dict[str, dict[tuple[bool, str, int, int], _Seen]] = defaultdict(dict)

    def inspect(self, window: ClosedWindow) -> Novelty:
        identity = window.subject.id
        memory = self.memory
        novelty = Novelty()
        for egress in (True, False):
            for edge in window.edges(egress):
                if not egress and _is_world(edge.peer):
                    continue
                if memory.knows_connection(identity, egress, edge):
                    continue
                novelty.new.append(NewEdge(egress, edge))
        recent = self._remember(identity, window.start, novelty.new)
        if novelty.new:
            novelty.evidence = self._evidence(window, novelty.new, recent)
        return novelty

    # -- state over the horizon ------------------------------------------------------------------

    def _remember(
        self, identity: str, start: float, new: list[NewEdge]
    ) -> dict[tuple[bool, str, int, int], _Seen]:
        recent = self._recent[identity]
        for item in new:
            e = item.edge
            seen = recent.setdefault((item.egress, e.peer, e.protocol, e.port), _Seen(start))
            if not seen.windows or seen.windows[-1][0] != start:
                seen.windows.append((start, e.flows, e.failures))
                seen.times.extend(e.times)
        cutoff = start - self.horizon
        for key in [k for k, s in recent.items() if s.windows[-1][0] <= cutoff]:
            del recent[key]
        for seen in recent.values():
            while seen.windows and seen.windows[0][0] <= cutoff:
                seen.windows.popleft()
            while seen.times and seen.times[0] <= cutoff:
                seen.times.popleft()
        if not recent:
            del self._recent[identity]
        return recent

    def forget(self, identity: str, keys: set[tuple[bool, str, int, int]]) -> None:
        """Drop horizon state of edges that were accepted (learned) meanwhile."""
        recent = self._recent.get(identity)
        if recent:
            for key in keys:
                recent.pop(key, None)

    # -- the rules ---------------------------------------------------------------------------

    def _evidence(
        self,
        window: ClosedWindow,
        new: list[NewEdge],
        recent: dict[tuple[bool, str, int, int], _Seen],
    ) -> list[Evidence]:
        identity = window.subject.id
        memory = self.memory
        out: list[Evidence] = []
        namespace = namespace_of(identity)
        world_ports = memory.world_ports(identity)
        unnamed: list[NewEdge] = []
        odd_port: list[NewEdge] = []
        data_store: list[NewEdge] = []
        service: list[NewEdge] = []
        running: list[NewEdge] = []
        random_names: list[NewEdge] = []
        heavy: list[NewEdge] = []
        busiest = memory.busiest_egress(identity)
        # the peer class's norm: a new internet peer against the internet peers it knows
        busiest_internet = memory.busiest_egress(identity, internet=True)
        heavy_norm = ""
        for item in new:
            e = item.edge
            internet = _is_world(e.peer) and busiest_internet > 0
            norm = busiest_internet if internet else busiest
            if norm and item.egress and e.flows >= max(VOLUME_FACTOR * norm, VOLUME_MIN_FLOWS):
                heavy.append(item)
                heavy_norm = heavy_norm or (
                    f"its busiest known {'internet ' if internet else ''}edge carries "
                    f"{norm:,.1f} a window"
                )
            if item.egress and _is_world(e.peer):
                named, unnamed_known = world_ports.get((e.protocol, e.port), (0, 0))
                if e.peer.startswith("fqdn:") and random_looking(e.peer):
                    random_names.append(item)
                if e.port not in WEB_PORTS and e.protocol and not (named or unnamed_known):
                    odd_port.append(item)
                elif e.peer.startswith("cidr:") and memory.names_visible and not unnamed_known:
                    unnamed.append(item)
            elif (
                e.protocol == _TCP
                and e.port in DATA_STORE_PORTS
                and self._crosses_to_data_store(identity, namespace, item)
            ):
                data_store.append(item)
            elif self._crosses_to_service(identity, namespace, item):
                service.append(item)
            elif item.egress and self._from_running_pod(window, item, recent):
                running.append(item)
        if unnamed:
            out.append(
                Evidence(
                    "unnamed_internet",
                    f"reached {_list(unnamed)} without a DNS name, while internet peers in "
                    "this cluster are reached by name",
                    tuple(unnamed),
                )
            )
        if odd_port:
            out.append(
                Evidence(
                    "internet_port",
                    f"reached {_list(odd_port)}: an internet port it never used",
                    tuple(odd_port),
                )
            )
        if data_store:
            kinds = ", ".join(sorted({DATA_STORE_PORTS[i.edge.port] for i in data_store}))
            egress = data_store[0].egress
            out.append(
                Evidence(
                    "cross_namespace_data_store",
                    (
                        f"reached {_list(data_store)} ({kinds}) across namespaces, where no "
                        "workload of its namespace had that access"
                        if egress
                        else f"was reached by {_list(data_store, by=True)} ({kinds}) from "
                        "another namespace that had no such access"
                    ),
                    tuple(data_store),
                    peer="" if egress else data_store[0].edge.peer,
                )
            )
        if service:
            egress = service[0].egress
            out.append(
                Evidence(
                    "cross_namespace_service",
                    (
                        f"reached {_list(service)} in another namespace for the first time, "
                        "a workload it never used"
                        if egress
                        else f"was reached by {_list(service, by=True)} from another "
                        "namespace for the first time"
                    ),
                    tuple(service),
                    peer="" if egress else service[0].edge.peer,
                )
            )
        if running:
            out.append(
                Evidence(
                    "running_pod",
                    f"reached {_list(running)}, a workload of its namespace it never used, from "
                    "pods running unchanged for over an hour (no release, restart or new "
                    "replica that would bring a new dependency)",
                    tuple(running),
                )
            )
        if heavy:
            out.append(
                Evidence(
                    "volume",
                    f"sent {sum(i.edge.flows for i in heavy):,} flows to {_list(heavy)}, new "
                    f"to it: {heavy_norm}",
                    tuple(heavy),
                )
            )
        if random_names:
            out.append(
                Evidence(
                    "random_name",
                    f"reached {_list(random_names)}: a random-looking name",
                    tuple(random_names),
                )
            )
        out += self._horizon_rules(window, new, recent)
        return out

    def _crosses_to_data_store(self, identity: str, namespace: str, item: NewEdge) -> bool:
        """A new TCP edge to/from a data-store port of a workload in another namespace, that
        no workload of the client's namespace has."""
        e = item.edge
        memory = self.memory
        if item.egress:
            client, client_ns, server = identity, namespace, e.peer
            server_ns = namespace_of(e.peer)
        else:
            client, client_ns, server = e.peer, namespace_of(e.peer), identity
            server_ns = namespace
        if not client_ns or not server_ns or client_ns == server_ns:
            return False
        if not memory.serves(server, e.protocol, e.port):
            return False  # not a data store there: a probe, for the failing/sweep rules
        newcomer = not memory.knows_identity(client)
        return not (newcomer and memory.namespace_reaches(client_ns, server, e.protocol, e.port))

    def _crosses_to_service(self, identity: str, namespace: str, item: NewEdge) -> bool:
        """A new edge between two workloads the memory knows, in different namespaces, on a
        port the server serves, from a client that does not reach across namespaces by design
        (ingress controllers, scrapers, meshes already reach three or more other namespaces)."""
        e = item.edge
        peer_ns = namespace_of(e.peer)
        if not peer_ns or not namespace or peer_ns == namespace:
            return False
        memory = self.memory
        client, server = (identity, e.peer) if item.egress else (e.peer, identity)
        if not (memory.knows_identity(client) and memory.knows_identity(server)):
            return False  # a new workload is a change of its own
        if not memory.serves(server, e.protocol, e.port):
            return False
        return len(memory.namespaces_reached(client)) < CROSSING_NAMESPACES

    def _from_running_pod(
        self,
        window: ClosedWindow,
        item: NewEdge,
        recent: dict[tuple[bool, str, int, int], _Seen],
    ) -> bool:
        """A new egress edge to an established workload of the client's own namespace, on a
        port it serves, made while the client's pods had been running unchanged for
        :data:`ESTABLISHED_SECONDS` (see the module docstring)."""
        e = item.edge
        identity = window.subject.id
        namespace = namespace_of(identity)
        if not namespace or namespace_of(e.peer) != namespace or e.peer == identity:
            return False
        memory = self.memory
        if not memory.serves(e.peer, e.protocol, e.port):
            return False  # not a service there: a probe, for the failing/sweep rules
        seen = recent.get((True, e.peer, e.protocol, e.port))
        first = seen.first if seen is not None else window.start
        peer_since = memory.known_since(e.peer)
        if peer_since is None or peer_since > first - ESTABLISHED_SECONDS:
            return False  # a new service's first callers: a change
        if not self._settled(window, first):
            return False  # a new workload, a release, restart or scale-up: a change
        return len(memory.internal_peers(identity)) < HUB_PEERS

    def _settled(self, window: ClosedWindow, first: float) -> bool:
        """Whether the window's client identity was known, and each of its pods in the window
        running, for :data:`ESTABLISHED_SECONDS` before ``first`` (when a new edge first
        appeared): no new workload, release, restart or scale-up explains what it does."""
        identity = window.subject.id
        memory = self.memory
        settled = first - ESTABLISHED_SECONDS
        if not self._known_since(identity, settled):
            return False
        newest = memory.newest_pod(identity)
        if not window.client.pods or newest is None or newest > settled:
            return False  # a release, restart or scale-up within the hour (or pods unknown)
        for pod in window.client.pods:
            started = memory.pod_first_seen(identity, pod)
            if started is None or started > settled:
                return False
        return True

    def _closed(self, window: ClosedWindow, first: float) -> bool:
        """Whether the window's identity, known for :data:`CLOSED_SECONDS` before ``first``,
        reached no internet destination in that time that it had not reached before it: its
        internet peers are a closed set (see the module docstring)."""
        identity = window.subject.id
        since = first - CLOSED_SECONDS
        return self._known_since(identity, since) and not any(
            key[0] and _is_world(key[1]) and since < stat.first_seen < first
            for key, stat in self.memory.edges_of(identity).items()
        )

    def _known_since(self, identity: str, when: float) -> bool:
        """Whether the memory has known ``identity`` since ``when`` or before."""
        known = self.memory.known_since(identity)
        return known is not None and known <= when

    def _horizon_rules(
        self,
        window: ClosedWindow,
        new: list[NewEdge],
        recent: dict[tuple[bool, str, int, int], _Seen],
    ) -> list[Evidence]:
        out: list[Evidence] = []
        identity = window.subject.id
        in_window = {(i.egress, i.edge.peer, i.edge.protocol, i.edge.port): i for i in new}
        newcomer = not self.memory.knows_identity(identity)
        for egress in (True, False):
            keys = [k for k in recent if k[0] == egress]
            if not keys or (newcomer and not egress):
                continue  # a workload not yet ready refuses its first callers and scrapers
            failing = [k for k in keys if any(f for _, _, f in recent[k].windows)]
            persistent = [k for k in failing if sum(1 for _, _, f in recent[k].windows if f) >= 2]
            now_failing = [in_window[k] for k in failing if k in in_window]
            if now_failing and (len(failing) >= FAILING_EDGES or persistent):
                peers = Counter(i.edge.peer for i in now_failing)  # who fails here, now
                out.append(
                    Evidence(
                        "failing_new_edges",
                        f"{'made' if egress else 'got'} failing connections on "
                        f"{len(failing)} new edge{'s' if len(failing) != 1 else ''} in the "
                        f"last hour (refused, reset, unanswered or dropped), e.g. "
                        f"{_list(now_failing)}",
                        tuple(now_failing),
                        peer="" if egress else peers.most_common(1)[0][0],
                    )
                )
            by_peer: dict[str, set[tuple[int, int]]] = defaultdict(set)
            for k in keys:
                if k[2]:
                    by_peer[k[1]].add((k[2], k[3]))
            for peer, ports in sorted(by_peer.items()):
                known = self.memory.peer_edges(identity, egress, peer)
                if known and len(ports) >= SWEEP_PORTS:
                    shown = [i for k, i in in_window.items() if k[1] == peer]
                    if shown:
                        out.append(
                            Evidence(
                                "port_sweep",
                                f"{'tried' if egress else 'was tried on'} {len(ports)} new "
                                f"ports {'of' if egress else 'by'} {peer} in the last hour, "
                                f"a peer it knows on {_ports(known)}",
                                tuple(shown),
                                peer="" if egress else peer,
                            )
                        )
            peers = {k[1] for k in keys}
            if len(peers) >= SWEEP_PEERS and in_window:
                out.append(
                    Evidence(
                        "peer_sweep",
                        f"{'reached' if egress else 'was reached by'} {len(peers)} new peers "
                        "in the last hour",
                        tuple(i for k, i in in_window.items() if k[0] == egress)[:16],
                    )
                )
            if egress:
                out += self._beacons(window, keys, recent, in_window)
        return out

    def _beacons(
        self,
        window: ClosedWindow,
        keys: list[tuple[bool, str, int, int]],
        recent: dict[tuple[bool, str, int, int], _Seen],
        in_window: dict[tuple[bool, str, int, int], NewEdge],
    ) -> list[Evidence]:
        out = []
        for k in keys:
            if k not in in_window or not _is_world(k[1]):
                continue
            times = sorted(recent[k].times)
            gaps = [b - a for a, b in itertools.pairwise(times) if b - a > 0.5]
            if len(gaps) < BEACON_CLOSED_CONNECTIONS - 1:
                continue
            period = statistics.fmean(gaps)
            jitter = statistics.pstdev(gaps)
            first = recent[k].first
            if len(gaps) >= BEACON_CONNECTIONS - 1:
                limit = BEACON_JITTER
            elif k[1].startswith("fqdn:") and self.memory.knows_domain(registrable_domain(k[1])):
                continue  # a domain the cluster uses: its pollers get the longer test
            elif len(gaps) >= BEACON_FAST_CONNECTIONS - 1:
                limit = BEACON_FAST_JITTER
            elif not self._settled(window, first):
                continue  # a new workload or pod: a new agent's timer gets the longer tests
            elif len(gaps) >= BEACON_EARLY_CONNECTIONS - 1:
                limit = BEACON_FAST_JITTER
            elif (
                k[1].startswith("fqdn:")
                and period <= BEACON_CLOSED_PERIOD
                and self._closed(window, first)
            ):
                limit = BEACON_FAST_JITTER  # a named host: the rhythm is its only tell
            else:
                continue
            if BEACON_PERIOD[0] <= period <= BEACON_PERIOD[1] and jitter <= limit * period:
                out.append(
                    Evidence(
                        "beacon",
                        f"connected to {k[1]} {len(times)} times, every {period:.0f} s "
                        f"(\u00b1{jitter:.0f} s): a timer's rhythm, not users'",
                        (in_window[k],),
                    )
                )
        return out


def _ports(ports: list[tuple[int, int]]) -> str:
    shown = sorted(ports)[:3]
    text = ", ".join(f"{'TCP' if p == 6 else 'UDP' if p == 17 else p}/{n}" for p, n in shown)
    return text + (f" and {len(ports) - 3} more" if len(ports) > 3 else "")


def _list(items: list[NewEdge], limit: int = 3, *, by: bool = False) -> str:
    """``peer TCP/port, ...`` (``by``: ``peer on TCP/port``, for the server's view)."""
    joiner = " on " if by else " "
    shown = ", ".join(
        f"{i.edge.peer}{joiner + i.edge.port_text if i.edge.port_text else ''}"
        for i in items[:limit]
    )
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")

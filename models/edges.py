"""The edge memory: every (identity, direction, peer, protocol/port) seen as normal, with when.

Novelty is the question "has this workload ever done this?", and the answer must not depend on
where a file starts or on how long ago training ended. So the memory is not a sliding window of
recent flows: it keeps every edge learned from training windows and from windows scored as
normal since, with first and last seen (event time), flows and windows. It is bounded two ways,
both relative to the identity's own activity rather than to any clock: an edge unused for
``max_age_seconds`` while its identity stayed active is forgotten (a dependency that was removed),
and an identity keeps at most ``max_edges_per_identity`` edges (least recently used forgotten).
Identities are capped at ``max_identities`` (least recently active forgotten).

Peers are the window builder's edge peers (:mod:`netwarden.ingest.windows`): workloads by
``namespace/workload``, reserved entities by name, internet peers by DNS name or network, so a
rollout, a node drain or a SaaS vendor's address rotation is never novelty.

The memory is saved with each model version (``edges.json``) and kept by the service across
restarts; :meth:`EdgeMemory.to_json` / :meth:`EdgeMemory.from_json` are exact inverses.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from netwarden.ingest.windows import ClosedWindow, Edge
from netwarden.validation import check_ranges

__all__ = [
    "EdgeKey",
    "EdgeMemory",
    "EdgeMemoryConfig",
    "EdgeStat",
    "load_memory",
    "namespace_of",
    "save_memory",
]

#: (egress, peer, protocol, port): egress True for the identity as client.
EdgeKey = tuple[bool, str, int, int]
_FORMAT: Final = 1
#: Pods remembered per identity (a few rollouts of a large Deployment).
MAX_PODS: Final = 256
#: How long a pod counts as starting up after it first opens connections or resolves names:
#: readiness, connection pools and caches fill within the first minutes of a pod's life.
STARTUP_SECONDS: Final = 300.0

_CONSTRAINTS: Final[dict[str, tuple[float, float]]] = {
    "max_age_seconds": (3600.0, 400 * 86_400.0),
    "max_edges_per_identity": (16, 1 << 20),
    "max_identities": (16, 1 << 24),
}


@dataclass(frozen=True)
class EdgeMemoryConfig:
    """Bounds of the edge memory.

    Parameters
    ----------
    max_age_seconds:
        An edge unused this long while its identity stayed active is forgotten (default 45
        days: longer than a monthly job's period plus a holiday, so weekly and monthly
        batch work is remembered from one run to the next).
    max_edges_per_identity:
        Edges kept per identity, least recently used forgotten first (default 4096; a busy
        API gateway has a few hundred).
    max_identities:
        Identities kept, least recently active forgotten first (default 100,000).
    """

    max_age_seconds: float = 45 * 86_400.0
    max_edges_per_identity: int = 4096
    max_identities: int = 100_000

    def __post_init__(self) -> None:
        check_ranges(self, _CONSTRAINTS)


@dataclass(slots=True)
class EdgeStat:
    """What the memory knows about one edge (times are Unix seconds of window starts)."""

    first_seen: float
    last_seen: float
    flows: int
    windows: int


#: Second-level labels under which registries sell names (``example.co.uk``): the registrable
#: domain then has three labels. A short list of the common ones, not the Public Suffix List:
#: grouping a vendor's names a label too wide or narrow costs one extra record, not an alert.
_SECOND_LEVEL: Final = frozenset({"co", "com", "net", "org", "gov", "ac", "edu", "ne", "or"})


def is_internet(peer: str) -> bool:
    """Whether an edge's peer key names an internet peer (a DNS name, a network, the world)."""
    return peer.startswith(("fqdn:", "cidr:", "world:"))


def registrable_domain(name: str) -> str:
    """``api.eu.stripe.com`` -> ``stripe.com``; ``x.example.co.uk`` -> ``example.co.uk``."""
    labels = name.removeprefix("fqdn:").rstrip(".").lower().split(".")
    if len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2] in _SECOND_LEVEL:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def namespace_of(key: str) -> str:
    """The namespace of a workload key (``namespace/workload``), else ""."""
    if "/" in key and not key.startswith(("fqdn:", "cidr:", "reserved:", "world:", "peer:")):
        return key.split("/", 1)[0]
    return ""


class EdgeMemory:
    """Per identity, every edge learned as normal; see the module docstring."""

    def __init__(self, config: EdgeMemoryConfig | None = None) -> None:
        self.config = config or EdgeMemoryConfig()
        #: identity -> {edge key: stat}, least recently used edge first; identities least
        #: recently active first.
        self._edges: dict[str, dict[EdgeKey, EdgeStat]] = {}
        #: identity -> last window start it was active in.
        self._active: dict[str, float] = {}
        #: (namespace, peer, protocol, port) -> identities of that namespace with that egress
        #: edge: "this namespace already reaches that database".
        self._by_namespace: dict[tuple[str, str, int, int], int] = defaultdict(int)
        #: Every peer any identity has an edge with (either direction), with how many edges.
        self._peers: dict[str, int] = defaultdict(int)
        #: Egress edges to named internet peers: whether names are visible in this cluster.
        self._named_world = 0
        #: identity -> its pods seen opening connections or resolving names -> first seen:
        #: a pod first seen within STARTUP_SECONDS is starting up (at most MAX_PODS per
        #: identity, least recently seen dropped).
        self._pods: dict[str, dict[str, float]] = {}
        #: (identity, protocol, port) -> known edges into it on that port (its own ingress
        #: edges and others' egress edges to it): what it serves.
        self._serves: dict[tuple[str, int, int], int] = defaultdict(int)

    # -- questions ---------------------------------------------------------------------------

    def new_pods(self, window: ClosedWindow) -> set[str]:
        """Pods of the window's identity that are starting up: first seen less than
        STARTUP_SECONDS before the window, or never."""
        known = self._pods.get(window.subject.id, {})
        young = window.start - STARTUP_SECONDS
        return {p for p in window.client.pods if known.get(p, window.start) > young}

    def knows_identity(self, identity: str) -> bool:
        return identity in self._edges

    def known_since(self, identity: str) -> float | None:
        """When the identity's oldest known edge was first seen (None: not known)."""
        edges = self._edges.get(identity)
        if not edges:
            return None
        return min(s.first_seen for s in edges.values())

    def newest_pod(self, identity: str) -> float | None:
        """When the identity's most recently started pod was first seen (None: no pods
        known): the time of its last rollout, restart or scale-up."""
        pods = self._pods.get(identity)
        return max(pods.values()) if pods else None

    def pod_first_seen(self, identity: str, pod: str) -> float | None:
        return self._pods.get(identity, {}).get(pod)

    def knows_domain(self, domain: str) -> bool:
        """Whether any identity has a known edge with a name under registrable ``domain``."""
        return any(p.startswith("fqdn:") and registrable_domain(p) == domain for p in self._peers)

    def internal_peers(self, identity: str) -> set[str]:
        """Workloads (namespaced peers) the identity has known egress edges to."""
        return {k[1] for k in self._edges.get(identity, {}) if k[0] and namespace_of(k[1])}

    def knows(self, identity: str, egress: bool, edge: Edge) -> bool:
        found = self._edges.get(identity)
        return found is not None and (egress, edge.peer, edge.protocol, edge.port) in found

    def knows_connection(self, identity: str, egress: bool, edge: Edge) -> bool:
        """Whether the connection is known from either end: the identity's own edge, or, for a
        workload peer, the peer's edge the other way (Hubble may have shown only one end of it
        before: a flow observed where one pod ran, until a drain moved it)."""
        if self.knows(identity, egress, edge):
            return True
        if not namespace_of(edge.peer):
            return False
        found = self._edges.get(edge.peer)
        return found is not None and (not egress, identity, edge.protocol, edge.port) in found

    def get(self, identity: str, key: EdgeKey) -> EdgeStat | None:
        found = self._edges.get(identity)
        return None if found is None else found.get(key)

    def knows_peer(self, peer: str) -> bool:
        """Whether any identity has an edge with ``peer``, or ``peer`` is a known identity."""
        return peer in self._peers or peer in self._edges

    def peer_edges(self, identity: str, egress: bool, peer: str) -> list[tuple[int, int]]:
        """(protocol, port) of the identity's known edges with ``peer`` on one side."""
        return [
            (k[2], k[3]) for k in self._edges.get(identity, {}) if k[0] == egress and k[1] == peer
        ]

    def serves(self, identity: str, protocol: int, port: int) -> bool:
        """Whether ``identity`` is known to accept connections on (protocol, port)."""
        return self._serves.get((identity, protocol, port), 0) > 0

    def busiest_egress(self, identity: str, *, internet: bool = False) -> float:
        """Mean flows per window of the identity's busiest known egress edge (0 if none);
        ``internet``: of its edges to internet peers only."""
        return max(
            (
                s.flows / max(s.windows, 1)
                for k, s in self._edges.get(identity, {}).items()
                if k[0] and (not internet or is_internet(k[1]))
            ),
            default=0.0,
        )

    def namespaces_reached(self, identity: str) -> set[str]:
        """Namespaces other than its own (and kube-system, whose DNS every pod uses) that the
        identity has known egress edges into."""
        own = namespace_of(identity)
        return {
            ns
            for egress, peer, _, _ in self._edges.get(identity, {})
            if egress and (ns := namespace_of(peer)) and ns not in (own, "kube-system")
        }

    def namespace_reaches(self, namespace: str, peer: str, protocol: int, port: int) -> bool:
        """Whether some identity of ``namespace`` has a known egress edge to (peer, port)."""
        return self._by_namespace.get((namespace, peer, protocol, port), 0) > 0

    def world_ports(self, identity: str) -> dict[tuple[int, int], tuple[int, int]]:
        """(protocol, port) -> (named, unnamed) known egress edges to internet peers."""
        out: dict[tuple[int, int], tuple[int, int]] = {}
        for egress, peer, proto, port in self._edges.get(identity, {}):
            if not egress:
                continue
            if peer.startswith("fqdn:"):
                named, unnamed = out.get((proto, port), (0, 0))
                out[(proto, port)] = (named + 1, unnamed)
            elif peer.startswith("cidr:"):
                named, unnamed = out.get((proto, port), (0, 0))
                out[(proto, port)] = (named, unnamed + 1)
        return out

    @property
    def names_visible(self) -> bool:
        """Whether flows in this cluster carry DNS names for internet peers (Cilium's DNS
        proxy): then an internet address reached without a name was reached without a lookup."""
        return self._named_world > 0

    def identities(self) -> Iterator[str]:
        return iter(self._edges)

    def edges_of(self, identity: str) -> dict[EdgeKey, EdgeStat]:
        return dict(self._edges.get(identity, {}))

    def __len__(self) -> int:
        return sum(len(v) for v in self._edges.values())

    # -- learning ----------------------------------------------------------------------------

    def learn(self, window: ClosedWindow, *, skip: Iterable[EdgeKey] = ()) -> None:
        """Learn every edge of ``window`` except ``skip`` (edges under review)."""
        skipped = set(skip)
        identity = window.subject.id
        start = window.start
        learned = False
        for egress in (True, False):
            for edge in window.edges(egress):
                key = (egress, edge.peer, edge.protocol, edge.port)
                if key not in skipped:
                    self.add(identity, key, start, edge.flows)
                    learned = True
        if learned or identity in self._edges:  # an identity under review stays unknown
            self.touch(identity, start)
        if window.client.pods:
            pods = self._pods.setdefault(identity, {})
            for pod in sorted(window.client.pods):
                pods[pod] = min(pods.pop(pod, start), start)  # first seen; now most recent
            while len(pods) > MAX_PODS:
                del pods[next(iter(pods))]

    def add(self, identity: str, key: EdgeKey, when: float, flows: int, windows: int = 1) -> None:
        """Learn one edge seen at ``when`` (also what accepting a change does)."""
        edges = self._edges.get(identity)
        if edges is None:
            edges = self._new_identity(identity)
        stat = edges.pop(key, None)
        if stat is None:
            stat = EdgeStat(when, when, 0, 0)
            self._index(identity, key, +1)
        stat.first_seen = min(stat.first_seen, when)
        stat.last_seen = max(stat.last_seen, when)
        stat.flows += flows
        stat.windows += windows
        edges[key] = stat  # re-inserted: most recently used last
        if len(edges) > self.config.max_edges_per_identity:
            self._forget(identity, next(iter(edges)))

    def touch(self, identity: str, when: float) -> None:
        """Mark the identity active at ``when``; forget its edges unused for max_age."""
        if identity not in self._edges:
            self._new_identity(identity)
        last = max(self._active.pop(identity, when), when)
        self._active[identity] = last
        horizon = last - self.config.max_age_seconds
        edges = self._edges[identity]
        stale = [k for k, s in edges.items() if s.last_seen < horizon]
        for key in stale:
            self._forget(identity, key)

    def merge(self, other: EdgeMemory) -> None:
        """Learn everything ``other`` knows (e.g. a model's memory into the service's)."""
        for identity, pods in other._pods.items():
            mine = self._pods.setdefault(identity, {})
            for pod, t in pods.items():
                mine[pod] = min(mine.get(pod, t), t)
        for identity, edges in other._edges.items():
            for key, stat in edges.items():
                self.add(identity, key, stat.first_seen, stat.flows, stat.windows)
                self.add(identity, key, stat.last_seen, 0, 0)
            self.touch(identity, other._active.get(identity, 0.0))

    def _new_identity(self, identity: str) -> dict[EdgeKey, EdgeStat]:
        if len(self._edges) >= self.config.max_identities:
            oldest = next(iter(self._active), None) or next(iter(self._edges))
            for key in list(self._edges.get(oldest, {})):
                self._forget(oldest, key)
            self._edges.pop(oldest, None)
            self._active.pop(oldest, None)
        edges: dict[EdgeKey, EdgeStat] = {}
        self._edges[identity] = edges
        return edges

    def _forget(self, identity: str, key: EdgeKey) -> None:
        if self._edges[identity].pop(key, None) is not None:
            self._index(identity, key, -1)

    def _index(self, identity: str, key: EdgeKey, step: int) -> None:
        egress, peer, proto, port = key
        self._peers[peer] += step
        if self._peers[peer] <= 0:
            del self._peers[peer]
        if egress:
            ns_key = (namespace_of(identity), peer, proto, port)
            self._by_namespace[ns_key] += step
            if self._by_namespace[ns_key] <= 0:
                del self._by_namespace[ns_key]
            if peer.startswith("fqdn:"):
                self._named_world += step
        serves = (peer, proto, port) if egress else (identity, proto, port)
        self._serves[serves] += step
        if self._serves[serves] <= 0:
            del self._serves[serves]

    # -- saving ------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (identities and edges in their recency order)."""
        return {
            "format": _FORMAT,
            "identities": [
                {
                    "identity": identity,
                    "active": self._active.get(identity, 0.0),
                    "edges": [
                        [
                            "egress" if k[0] else "ingress",
                            k[1],
                            k[2],
                            k[3],
                            s.first_seen,
                            s.last_seen,
                            s.flows,
                            s.windows,
                        ]
                        for k, s in edges.items()
                    ],
                }
                for identity, edges in self._edges.items()
            ],
            "pods": {identity: list(pods.items()) for identity, pods in self._pods.items()},
        }

    @classmethod
    def from_json(cls, data: Any, config: EdgeMemoryConfig | None = None) -> EdgeMemory:
        """Read :meth:`to_json`'s output; a malformed document raises ValueError naming what."""
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ValueError(f"edge memory: expected format {_FORMAT}")
        memory = cls(config)
        items = data.get("identities")
        if not isinstance(items, list):
            raise ValueError("edge memory: 'identities' must be a list")
        for n, item in enumerate(items):
            try:
                identity = str(item["identity"])
                edges = memory._new_identity(identity)
                for side, peer, proto, port, first, last, flows, windows in item["edges"]:
                    if side not in ("egress", "ingress"):
                        raise ValueError(f"side {side!r}")
                    key = (side == "egress", str(peer), int(proto), int(port))
                    if key not in edges:
                        memory._index(identity, key, +1)
                    edges[key] = EdgeStat(float(first), float(last), int(flows), int(windows))
                memory._active[identity] = float(item.get("active", 0.0))
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"edge memory: identity #{n} is malformed: {exc}") from None
        pods = data.get("pods", {})
        if not isinstance(pods, dict):
            raise ValueError("edge memory: 'pods' must be an object")
        try:
            for identity, items in pods.items():
                memory._pods[str(identity)] = {str(p): float(t) for p, t in items}
        except (TypeError, ValueError) as exc:
            raise ValueError(f"edge memory: malformed pods: {exc}") from None
        return memory

    @classmethod
    def from_windows(
        cls, windows: Iterable[ClosedWindow], config: EdgeMemoryConfig | None = None
    ) -> EdgeMemory:
        """Learn every edge of ``windows`` (training: they are all normal by assumption)."""
        memory = cls(config)
        for window in sorted(windows, key=lambda w: w.start):
            memory.learn(window)
        return memory


def save_memory(memory: EdgeMemory, path: Path, *, log: Callable[[str], Any] | None = None) -> bool:
    """Write ``memory`` to ``path`` atomically (readers see the old or the new file); a
    failure is logged, not raised: the service keeps running on what it has in memory."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(orjson.dumps(memory.to_json()))
        os.replace(tmp, path)
        return True
    except OSError as exc:
        if log is not None:
            log(f"edge memory not saved to {path}: {exc.strerror or exc}")
        return False


def load_memory(path: Path, log: Callable[[str], Any] | None = None) -> EdgeMemory:
    """The memory saved in ``path``; empty when there is none. An unreadable or malformed file
    is set aside (``<name>.bad``) with one log line, and the service starts from its model's
    memory instead of refusing to start."""
    if not path.exists():
        return EdgeMemory()
    try:
        return EdgeMemory.from_json(orjson.loads(path.read_bytes()))
    except (OSError, ValueError) as exc:
        if log is not None:
            log(f"edge memory {path} unreadable ({exc}); set aside as {path.name}.bad")
        try:
            os.replace(path, path.with_name(path.name + ".bad"))
        except OSError:
            pass
        return EdgeMemory()

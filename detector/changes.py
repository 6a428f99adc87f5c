"""Changes: ordinary-looking novelty, grouped so that one change in the cluster is one record.

A new edge without evidence (:mod:`netwarden.detector.novelty`) is a change. A change in the
cluster touches several identities and many windows: a new deployment is scraped by
Prometheus, looks up names, is called by one service, on every pod, in every window from then
on. So new edges are grouped by the *new thing* they share, and a record stays open while its
edges keep appearing (within ``merge_gap_seconds``):

* a workload the edge memory does not know (as an identity or as anyone's peer): the new
  workload itself, its callers, its scrapers: ``workload:<namespace/name>``;
* an internet DNS name: its registrable domain (``vendor:stripe.com``), so a vendor's API,
  CDN and regional hostnames are one vendor;
* an unnamed internet network: per identity and port (``internet:<identity> TCP/53``), so a
  resolver moving to another upstream is one change;
* anything else (a known workload calling another known workload, or a reserved entity, for
  the first time): the pair, client first (``edge:<client> -> <server>``), so both ends' views
  of one connection are one change.

Edges of an open change are not learned by the edge memory until a person accepts the change
(:meth:`ChangeTracker.accept`): until then they are pending, re-examined in every window (a
change that starts to fail, sweep or beacon becomes evidence), and never reported twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from netwarden.detector.novelty import NewEdge
from netwarden.ingest.windows import ClosedWindow
from netwarden.models.edges import EdgeKey, EdgeMemory, namespace_of, registrable_domain

__all__ = ["Change", "ChangeTracker", "change_key", "registrable_domain"]

#: Edges listed per change (the rest are counted).
MAX_EDGES: Final = 256
#: (identity, egress, peer, protocol, port)
ChangeEdge = tuple[str, bool, str, int, int]


def _proto(protocol: int) -> str:
    return {6: "TCP", 17: "UDP", 132: "SCTP"}.get(protocol, str(protocol))


def change_key(
    memory: EdgeMemory, identity: str, item: NewEdge, pending_workloads: set[str]
) -> tuple[str, str]:
    """(kind, subject) of the change a new edge belongs to; see the module docstring."""
    peer = item.edge.peer
    if identity in pending_workloads or not memory.knows_identity(identity):
        return "workload", identity
    if namespace_of(peer) and (peer in pending_workloads or not memory.knows_peer(peer)):
        return "workload", peer
    if peer.startswith("fqdn:"):
        return "vendor", registrable_domain(peer)
    if peer.startswith("cidr:"):
        port = f" {_proto(item.edge.protocol)}/{item.edge.port}" if item.edge.protocol else ""
        return "internet", f"{identity}{port}"
    client, server = (identity, peer) if item.egress else (peer, identity)
    return "edge", f"{client} -> {server}"


@dataclass
class Change:
    """One change in the cluster: the new thing, who it touched, its edges, when."""

    id: str
    kind: str
    subject: str
    first_seen: float
    last_seen: float
    identities: set[str] = field(default_factory=set)
    edges: dict[ChangeEdge, int] = field(default_factory=dict)
    edges_omitted: int = 0
    #: Windows (of event time) it was seen in.
    windows: int = 0
    status: str = "open"
    seen_starts: set[float] = field(default_factory=set, repr=False)

    @property
    def key(self) -> tuple[str, str]:
        return self.kind, self.subject

    @property
    def first_datetime(self) -> datetime:
        return datetime.fromtimestamp(self.first_seen, UTC)

    @property
    def last_datetime(self) -> datetime:
        """The start of the last window the change was seen in, plus nothing: see windows."""
        return datetime.fromtimestamp(self.last_seen, UTC)

    def description(self) -> str:
        what = {
            "workload": f"new workload {self.subject}",
            "vendor": f"new internet service {self.subject}",
            "internet": f"new internet network for {self.subject}",
            "edge": f"new connection {self.subject}",
        }[self.kind]
        others = sorted(self.identities - {self.subject})
        tail = f", touching {', '.join(others[:4])}" if others else ""
        if len(others) > 4:
            tail += f" and {len(others) - 4} more"
        n = len(self.edges) + self.edges_omitted
        return f"{what}{tail}: {n} new edge{'' if n == 1 else 's'}"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Change:
        """The inverse of :meth:`to_json` (for the service's store)."""
        edges: dict[ChangeEdge, int] = {}
        for e in data.get("edges", ()):
            proto, _, port = e["port"].partition("/")
            names = {"TCP": 6, "UDP": 17, "SCTP": 132}
            number = names[proto] if proto in names else int(proto or 0)
            key = (e["identity"], e["direction"] == "egress", e["peer"], number, int(port or 0))
            edges[key] = int(e["flows"])
        return cls(
            id=data["id"],
            kind=data["kind"],
            subject=data["subject"],
            first_seen=_parse(data["first_seen"]),
            last_seen=_parse(data["last_seen"]),
            identities=set(data.get("identities", ())),
            edges=edges,
            edges_omitted=int(data.get("edges_omitted", 0)),
            windows=int(data.get("windows", 0)),
            status=data.get("status", "open"),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "subject": self.subject,
            "status": self.status,
            "first_seen": _rfc3339(self.first_seen),
            "last_seen": _rfc3339(self.last_seen),
            "identities": sorted(self.identities),
            "windows": self.windows,
            "description": self.description(),
            "edges": [
                {
                    "identity": identity,
                    "direction": "egress" if egress else "ingress",
                    "peer": peer,
                    "port": f"{_proto(proto)}/{port}" if proto else "",
                    "flows": flows,
                }
                for (identity, egress, peer, proto, port), flows in sorted(self.edges.items())
            ],
            "edges_omitted": self.edges_omitted,
        }


def _parse(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


class ChangeTracker:
    """Groups the change edges of each window into :class:`Change` records (see the module
    docstring); knows which edges are pending so the edge memory does not learn them."""

    def __init__(self, memory: EdgeMemory, *, merge_gap_seconds: float = 6 * 3600.0) -> None:
        self.memory = memory
        self.merge_gap = merge_gap_seconds
        self._open: dict[tuple[str, str], Change] = {}
        self._by_id: dict[str, Change] = {}
        #: identity -> its pending edge keys (egress, peer, protocol, port)
        self._pending: dict[str, set[EdgeKey]] = {}
        #: Changes created or changed since the last :meth:`take_touched`, by id.
        self._touched: dict[str, Change] = {}

    @property
    def pending_workloads(self) -> set[str]:
        return {c.subject for c in self._open.values() if c.kind == "workload"}

    def pending(self, identity: str) -> set[EdgeKey]:
        return self._pending.get(identity, set())

    def observe(
        self, window: ClosedWindow, new: Iterable[NewEdge]
    ) -> tuple[list[Change], set[str]]:
        """Record the window's change edges; returns (changes created, ids touched)."""
        identity = window.subject.id
        created: list[Change] = []
        touched: set[str] = set()
        workloads = self.pending_workloads
        for item in new:
            key = change_key(self.memory, identity, item, workloads)
            change = self._open.get(key)
            if change is not None and window.start - change.last_seen > self.merge_gap:
                change.status = "closed" if change.status == "open" else change.status
                del self._open[key]
                self._touched[change.id] = change
                change = None
            if change is None:
                digest = hashlib.sha256(f"{key[0]}|{key[1]}|{window.start}".encode()).hexdigest()
                change = Change(f"chg-{digest[:12]}", key[0], key[1], window.start, window.start)
                self._open[key] = change
                self._by_id[change.id] = change
                created.append(change)
                if key[0] == "workload":
                    workloads.add(key[1])
            e = item.edge
            edge_key: ChangeEdge = (identity, item.egress, e.peer, e.protocol, e.port)
            if edge_key in change.edges:
                change.edges[edge_key] += e.flows
            elif len(change.edges) < MAX_EDGES:
                change.edges[edge_key] = e.flows
            else:
                change.edges_omitted += 1
            change.identities.add(identity)
            if change.id not in touched and window.start not in change.seen_starts:
                change.windows += 1
                change.seen_starts = {window.start}
            change.last_seen = max(change.last_seen, window.start)
            touched.add(change.id)
            self._touched[change.id] = change
            self._pending.setdefault(identity, set()).add((item.egress, e.peer, e.protocol, e.port))
        return created, touched

    def take_touched(self) -> list[Change]:
        """The changes created or changed (edges, windows, status) since the last call, oldest
        first: what the service writes to its store after each judged batch."""
        touched = sorted(self._touched.values(), key=lambda c: (c.first_seen, c.id))
        self._touched = {}
        return touched

    def restore(self, changes: Iterable[Change]) -> None:
        """Take back changes recorded before a restart (the service's store): open ones are
        pending again (their edges stay unlearned and are not reported twice); accepted ones
        are already in the edge memory, rejected and escalated ones are history."""
        for change in changes:
            self._by_id[change.id] = change
            if change.status != "open":
                continue
            self._open[change.key] = change
            for identity, egress, peer, proto, port in change.edges:
                self._pending.setdefault(identity, set()).add((egress, peer, proto, port))

    def get(self, change_id: str) -> Change | None:
        return self._by_id.get(change_id)

    def changes(self) -> list[Change]:
        return sorted(self._by_id.values(), key=lambda c: (c.first_seen, c.id))

    def accept(self, change_id: str) -> Change:
        """Teach the edge memory every edge of the change, now."""
        change = self._by_id[change_id]
        for (identity, egress, peer, proto, port), flows in change.edges.items():
            key = (egress, peer, proto, port)
            self.memory.add(identity, key, change.first_seen, flows, 1)
            self.memory.add(identity, key, change.last_seen, 0, 0)
            self._pending.get(identity, set()).discard(key)
        change.status = "accepted"
        if self._open.get(change.key) is change:
            del self._open[change.key]
        self._touched[change.id] = change
        return change

    def escalate(self, identity: str, keys: set[EdgeKey]) -> list[Change]:
        """Open changes of ``identity`` with the peers of evidence edges (they failed, swept,
        beaconed: the first ports of a slow scan looked ordinary): those changes were never
        ordinary; they are marked ``escalated`` and stop being pending."""
        peers = {(egress, peer) for egress, peer, _, _ in keys}
        if not any(k[:2] in peers for k in self._pending.get(identity, ())):
            return []
        out = []
        for change in list(self._open.values()):
            if any(k[0] == identity and k[1:3] in peers for k in change.edges):
                change.status = "escalated"
                self._touched[change.id] = change
                self._open.pop(change.key, None)
                for i, e, p, pr, po in change.edges:
                    self._pending.get(i, set()).discard((e, p, pr, po))
                out.append(change)
        return out

    def reject(self, change_id: str) -> Change:
        """The change is unwanted: its edges stay unknown and are no longer a change."""
        change = self._by_id[change_id]
        change.status = "rejected"
        if self._open.get(change.key) is change:
            del self._open[change.key]
        for identity, egress, peer, proto, port in change.edges:
            self._pending.get(identity, set()).discard((egress, peer, proto, port))
        self._touched[change.id] = change
        return change

    def keep_rejected(self, change: Change) -> Change:
        """A change a person rejected, kept as the record its edges belong to while they go on:
        they stay pending (never learned) and the same unwanted traffic is not reported again
        as a new change; the service records the rejection as an anomaly instead. Like an
        open change it is let go once its edges stay away for ``merge_gap_seconds``. For the
        service, after a rejection and for recent rejected changes on restart."""
        change = self._by_id.setdefault(change.id, change)
        change.status = "rejected"
        if self._open.get(change.key) in (None, change):
            self._open[change.key] = change
        for identity, egress, peer, proto, port in change.edges:
            self._pending.setdefault(identity, set()).add((egress, peer, proto, port))
        self._touched[change.id] = change
        return change

"""Incidents: one attack, one record, naming the attacker; its victims linked, not alerted.

A port scan makes the scanner anomalous and every host it touches too (resets, unanswered SYNs,
connections from a peer never seen); a drop storm shows on each peer it hammers. Alerting on
each of them buries the one thing a responder needs, who is doing it. So every anomalous window
is given a role:

* **attacker**: the identity's own behaviour is anomalous: egress evidence (it made the new
  edges), or the model's strongest reason is on its egress side;
* **victim**: only its ingress side is anomalous, and the traffic behind it comes from one peer
  (the peer named by the evidence, else the peer of its failing or new incoming edges). The
  victim joins that peer's incident: the one open for it, or a new
  one naming it as the attacker, even when the attacker's own windows look ordinary (an
  identity with no model yet, a workload outside the cluster's view);
* **witness**: a victim whose attacker is not among the identities observed in that window
  (a workload outside the cluster's view, a node's host process, an attacker whose own side
  Hubble does not see), the first of its incident: its alert stands for the incident, naming
  the attacker and linking the other victims, so an attack nobody else sees still alerts once;
* **subject**: anomalous with no peer to blame (traffic from the internet, or nothing new came
  in: a busy or quiet spell of its own): an incident of its own.

An incident stays open while its attacker or victims keep being anomalous, with gaps up to
``gap_seconds``. Alerts go out per incident (attacker and subject windows); victim windows are
recorded and linked.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from netwarden.detector.novelty import Novelty
from netwarden.detector.results import ScoredWindow
from netwarden.ingest.windows import ClosedWindow
from netwarden.models.edges import namespace_of

__all__ = ["ATTACKER", "SUBJECT", "VICTIM", "WITNESS", "Incident", "IncidentTracker", "role_of"]

ATTACKER, VICTIM, WITNESS, SUBJECT = "attacker", "victim", "witness", "subject"


@dataclass
class Incident:
    id: str
    attacker: str
    first_seen: float
    last_seen: float
    victims: set[str] = field(default_factory=set)
    windows: int = 0
    peak_score: float = 0.0
    rules: set[str] = field(default_factory=set)
    summary: str = ""
    #: Windows of it that alert (the attacker's, a subject's, a witness's).
    alerting: int = 0
    #: The victim that alerts for it while its attacker is not observed (see WITNESS).
    witness: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "attacker": self.attacker,
            "victims": sorted(self.victims),
            "first_seen": _rfc3339(self.first_seen),
            "last_seen": _rfc3339(self.last_seen),
            "windows": self.windows,
            "peak_score": round(self.peak_score, 6),
            "rules": sorted(self.rules),
            "summary": self.summary,
        }


def _rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def role_of(
    window: ClosedWindow, scored: ScoredWindow, novelty: Novelty, model_counts: bool
) -> tuple[str, str]:
    """(role, culprit peer) of an anomalous window; see the module docstring."""
    if any(any(n.egress for n in e.edges) for e in novelty.evidence):
        return ATTACKER, ""
    if model_counts and scored.reasons and scored.reasons[0].feature.startswith("egress_"):
        return ATTACKER, ""
    for e in novelty.evidence:
        if e.peer:
            return _blame(e.peer)
    failing = Counter(n.edge.peer for n in novelty.new if not n.egress and n.edge.failures)
    if failing:
        return _blame(failing.most_common(1)[0][0])
    incoming = Counter(n.edge.peer for n in novelty.new if not n.egress)
    if incoming:
        return _blame(incoming.most_common(1)[0][0])
    return SUBJECT, ""  # nothing new came in: its own behaviour, nobody to blame


def _blame(peer: str) -> tuple[str, str]:
    return (VICTIM, peer) if namespace_of(peer) else (SUBJECT, "")


class IncidentTracker:
    """Open incidents by attacker; see the module docstring."""

    def __init__(self, *, gap_seconds: float = 900.0) -> None:
        self.gap = gap_seconds
        self._open: dict[str, Incident] = {}
        self._all: list[Incident] = []

    def active(self, attacker: str, now: float) -> Incident | None:
        found = self._open.get(attacker)
        if found is not None and now - found.last_seen <= self.gap:
            return found
        return None

    def attackers(self, now: float) -> set[str]:
        """Attackers of incidents open at ``now``."""
        return {a for a, i in self._open.items() if now - i.last_seen <= self.gap}

    def link(self, attacker: str, identity: str, start: float, scored: ScoredWindow) -> Incident:
        """Add an anomalous window (of ``identity``) to ``attacker``'s incident."""
        incident = self.active(attacker, start)
        if incident is None:
            digest = hashlib.sha256(f"{attacker}|{start}".encode()).hexdigest()
            incident = Incident(f"inc-{digest[:12]}", attacker, start, start)
            self._open[attacker] = incident
            self._all.append(incident)
        incident.last_seen = max(incident.last_seen, start)
        incident.windows += 1
        if identity != attacker:
            incident.victims.add(identity)
        else:
            incident.alerting += 1
        if (identity == attacker and scored.score >= incident.peak_score) or not incident.summary:
            incident.summary = scored.summary
        incident.peak_score = max(incident.peak_score, scored.score)
        for reason in scored.reasons:
            if reason.feature.startswith("rule:"):
                incident.rules.add(reason.feature[5:])
        return incident

    def incidents(self) -> list[Incident]:
        return sorted(self._all, key=lambda i: (i.first_seen, i.id))

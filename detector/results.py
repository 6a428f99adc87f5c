"""What scoring produces: scored windows with their reasons, shared by the scorer, the store,
the command line and (later) the API and alert sinks."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["Reason", "ScoredWindow"]


@dataclass(frozen=True, slots=True)
class Reason:
    """One feature that made a window anomalous.

    ``contribution`` is how much the anomaly score drops when this feature alone is set back to
    the identity's baseline (higher = more responsible); ``value`` is what the window showed and
    ``baseline``/``spread`` the identity's training median and robust spread (IQR/1.349).
    """

    feature: str
    value: float
    baseline: float
    spread: float
    contribution: float
    text: str  # the reason in words, e.g. "contacted 212 destination ports (baseline 3)"


@dataclass(frozen=True, slots=True)
class ScoredWindow:
    """One identity-window as the detector saw it. Scores: higher is more anomalous."""

    identity: str  # "namespace/workload"
    namespace: str
    workload: str
    window_start: datetime  # UTC
    window_end: datetime
    score: float
    threshold: float
    anomalous: bool
    model: str  # which model scored it: "identity:<ns>/<wl>", "namespace:<ns>" or "global"
    fallback: bool  # scored by a namespace/global model (unseen identity or too little history)
    reasons: tuple[Reason, ...] = ()
    #: Example flows behind the window: {"peers": [...], "ports": [...], "dns_names": [...],
    #: "drop_reasons": {...}} (bounded lists; see netwarden.ingest.features.SideStats.examples).
    examples: dict[str, Any] = field(default_factory=dict)
    summary: str = ""  # one sentence a person can act on
    #: Rules of netwarden.detector.novelty the window's new edges met: [{"rule", "text",
    #: "edges": ["to fqdn:x TCP/443", ...], "peer"}]; any makes the window anomalous.
    evidence: tuple[dict[str, Any], ...] = ()
    #: Ids of the changes (netwarden.detector.changes) the window's new edges belong to.
    changes: tuple[str, ...] = ()
    #: Edges new to the identity in this window (its edge memory did not know them).
    new_edges: int = 0
    #: The model's verdict alone, before novelty rules and the fallback rule.
    model_anomalous: bool = False
    #: Anomalous windows: the incident (netwarden.detector.incidents) and the identity's role
    #: in it ("attacker", "victim", "witness" or "subject": see netwarden.detector.incidents).
    incident: str = ""
    role: str = ""
    #: The incident's attacker (the identity itself unless its role is "victim" or "witness").
    attacker: str = ""

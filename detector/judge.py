"""The verdict on a window: the model's score, the novelty rules, changes, and learning.

Three questions, in order, for each closed window (in event-time order, so a batch gives the
same verdicts as one window at a time):

1. **The model** (:class:`~netwarden.detector.scorer.Scorer`): is the window's behaviour
   (rates, fan-out, failures, DNS shape) unlike the identity's training windows? An identity
   with too little history of its own is scored by its namespace's or the global model; that
   model knows other workloads, so how much a newcomer sends says nothing about it. For such a
   *fallback* verdict only a symptom counts, a feature that is suspicious in any workload
   (:data:`SYMPTOMS`: drops, resets, unanswered SYNs, NXDOMAIN, random or long DNS names, ICMP);
   the rest of a newcomer's novelty is judged by the rules. And the model alone alerts only on
   a clear verdict: a score of :data:`CLEAR_SCORE` thresholds, or past the threshold in two
   windows in a row. The threshold is calibrated so that about one training window in 5,000
   passes it; a single window just past it is the tail of normal traffic as often as it is an
   attack, while attacks that only the model sees (a tunnel, a flood) go far past it or last.
2. **The novelty rules** (:class:`~netwarden.detector.novelty.NoveltyDetector`): do the
   window's new edges meet a rule that only attacks meet? Then the window is an anomaly, scored
   at least the rule's strength, with the rule first among its reasons.
3. **Changes** (:class:`~netwarden.detector.changes.ChangeTracker`): otherwise its new edges
   are a change, grouped with the rest of that change.

Then the edge memory learns the window's edges, except those of an anomaly (an attack never
becomes normal by being seen) and those pending as a change (learned when a person accepts
it). Nothing else is taken back later: a window's verdict never changes what the identity's
other windows are compared with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Final

from netwarden.detector.changes import ChangeTracker
from netwarden.detector.explain import summary
from netwarden.detector.incidents import ATTACKER, SUBJECT, IncidentTracker, role_of
from netwarden.detector.novelty import Novelty, NoveltyDetector
from netwarden.detector.results import Reason, ScoredWindow
from netwarden.detector.scorer import Scorer
from netwarden.ingest.windows import ClosedWindow
from netwarden.models.edges import EdgeMemory

__all__ = ["SYMPTOMS", "WindowJudge"]

#: Features (without the egress_/ingress_ side) that are suspicious in any workload.
SYMPTOMS: Final = frozenset(
    {
        "drops",
        "policy_drops",
        "tcp_resets",
        "unanswered_syns",
        "icmp",
        "dns_nxdomain_share",
        "dns_qname_len_mean",
        "dns_qname_len_max",
        "dns_qname_entropy_mean",
        "http_5xx_share",
    }
)


#: A model score (in thresholds) that alerts in one window.
CLEAR_SCORE: Final = 1.5


def _symptom(feature: str) -> bool:
    return feature.partition("_")[2] in SYMPTOMS


class WindowJudge:
    """Scores windows with the model, applies the novelty rules, groups changes and
    incidents, learns."""

    def __init__(
        self,
        scorer: Scorer | None,
        memory: EdgeMemory,
        *,
        horizon_seconds: float = 3600.0,
        merge_gap_seconds: float = 6 * 3600.0,
        incident_gap_seconds: float = 900.0,
    ) -> None:
        self.scorer = scorer
        self.memory = memory
        self.novelty = NoveltyDetector(memory, horizon_seconds=horizon_seconds)
        self.changes = ChangeTracker(memory, merge_gap_seconds=merge_gap_seconds)
        self.incidents = IncidentTracker(gap_seconds=incident_gap_seconds)
        #: identity -> start of its last window past the model's threshold
        self._past: dict[str, float] = {}

    def judge(self, windows: Sequence[ClosedWindow]) -> list[ScoredWindow]:
        """Verdicts for ``windows`` (closed by one builder, in the order it closed them:
        window by window, every identity of a window together)."""
        if self.scorer is None:
            raise RuntimeError("no model to score with")
        scored = self.scorer.score(windows)
        out: list[ScoredWindow] = []
        start = 0
        for end in range(1, len(windows) + 1):
            if end == len(windows) or windows[end].start != windows[start].start:
                out += self._group(windows[start:end], scored[start:end])
                start = end
        return out

    def _group(
        self, windows: Sequence[ClosedWindow], scored: Sequence[ScoredWindow]
    ) -> list[ScoredWindow]:
        """One window's identities together: attackers are known before victims are linked
        and before anyone's new edges to an attacker could be taken for a change."""
        now = windows[0].start
        novelties = [self.novelty.inspect(w) for w in windows]
        counts = [self._model_counts(w, s) for w, s in zip(windows, scored, strict=True)]
        roles: list[tuple[str, str]] = []
        for w, s, n, c in zip(windows, scored, novelties, counts, strict=True):
            roles.append(role_of(w, s, n, c) if c or n.suspicious else ("", ""))
        attackers = self.incidents.attackers(now) | {
            w.subject.id for w, (role, _) in zip(windows, roles, strict=True) if role == ATTACKER
        }
        out = []
        for w, s, n, c, (role, culprit) in zip(
            windows, scored, novelties, counts, roles, strict=True
        ):
            out.append(self._one(w, s, n, c, role, culprit, attackers))
        return out

    def _model_counts(self, window: ClosedWindow, scored: ScoredWindow) -> bool:
        """Whether the model's verdict alone is an alert (see the module docstring)."""
        if not scored.anomalous:
            return False
        identity = window.subject.id
        previous = self._past.get(identity)
        self._past[identity] = window.start
        if len(self._past) > 100_000:
            del self._past[next(iter(self._past))]
        if scored.fallback and not any(_symptom(r.feature) for r in scored.reasons[:2]):
            return False
        width = window.end - window.start
        return scored.score >= CLEAR_SCORE or (
            previous is not None and window.start - previous <= width
        )

    def _one(
        self,
        window: ClosedWindow,
        model: ScoredWindow,
        novelty: Novelty,
        model_counts: bool,
        role: str,
        culprit: str,
        attackers: set[str],
    ) -> ScoredWindow:
        identity = window.subject.id
        anomalous = model_counts or novelty.suspicious
        changes: tuple[str, ...] = ()
        skip = set(self.changes.pending(identity))
        new_keys = {(n.egress, n.edge.peer, n.edge.protocol, n.edge.port) for n in novelty.new}
        if anomalous:
            skip |= new_keys
            if novelty.suspicious:
                evidence_keys = {
                    (n.egress, n.edge.peer, n.edge.protocol, n.edge.port)
                    for e in novelty.evidence
                    for n in e.edges
                }
                self.changes.escalate(identity, evidence_keys)
        elif novelty.new:
            # edges with an attacker are part of its incident, never a change
            ordinary = [n for n in novelty.new if n.edge.peer not in attackers]
            skip |= new_keys
            if ordinary:
                _, touched = self.changes.observe(window, ordinary)
                changes = tuple(sorted(touched))
            skip |= self.changes.pending(identity)
        self.memory.learn(window, skip=skip)
        result = replace(
            model,
            anomalous=anomalous,
            model_anomalous=model.anomalous,
            changes=changes,
            new_edges=len(novelty.new),
        )
        if novelty.suspicious:
            result = self._with_evidence(window, result, novelty, model_counts)
        elif model.anomalous and not model_counts:  # a newcomer's volume: not an alert
            return replace(result, reasons=(), examples={}, summary="")
        if not anomalous:
            return result
        attacker = identity if role in (ATTACKER, SUBJECT) else culprit
        incident = self.incidents.link(attacker, identity, window.start, result)
        return replace(result, incident=incident.id, role=role)

    def _with_evidence(
        self, window: ClosedWindow, result: ScoredWindow, novelty: Novelty, model_counts: bool
    ) -> ScoredWindow:
        evidence = sorted(novelty.evidence, key=lambda e: -e.score)
        rule_reasons = tuple(
            Reason(
                feature=f"rule:{e.rule}",
                value=float(len(e.edges)),
                baseline=0.0,
                spread=0.0,
                contribution=e.score,
                text=e.text,
            )
            for e in evidence
        )
        model_reasons = result.reasons if model_counts else ()
        reasons = rule_reasons + model_reasons
        score = max(result.score if model_counts else 0.0, evidence[0].score)
        return replace(
            result,
            score=score,
            reasons=reasons,
            examples=result.examples or window.examples(),
            summary=summary(window.subject.workload, [r.text for r in reasons[:3]]),
            evidence=tuple(
                {
                    "rule": e.rule,
                    "text": e.text,
                    "edges": [n.text() for n in e.edges],
                    "peer": e.peer,
                }
                for e in evidence
            ),
        )

"""The verdict on a window: the model's score, the novelty rules, changes, and learning.

Three questions, in order, for each closed window (in event-time order, so a batch gives the
same verdicts as one window at a time):

1. **The model** (:class:`~netwarden.detector.scorer.Scorer`): is the window's behaviour
   (rates, fan-out, failures, DNS shape) unlike the identity's training windows? An identity
   with too little history of its own is scored by its namespace's or the global model; that
   model knows other workloads, so how much a newcomer sends says nothing about it. For such a
   *fallback* verdict only a symptom counts, a feature past a level that is suspicious in any
   workload (:data:`SYMPTOMS`: drops, resets, unanswered SYNs, ICMP, random or very long DNS
   names); the rest of a newcomer's novelty is judged by the rules. A pod new to the identity
   explains a start-up burst (:data:`STARTUP`: name lookups and new connections). And the
   model alone alerts only on a clear verdict: a score of :data:`CLEAR_SCORE` thresholds, or
   past the threshold in :data:`CLEAR_RUN` windows in a row. The threshold is calibrated so
   that about one training window in 5,000 passes it; a window or two just past it is the tail
   of normal traffic (a busy spell, a surge) as often as it is an attack, while attacks that
   only the model sees (a tunnel, a flood) go far past it or last. While a change is in
   progress on the identity (new edges that met no rule), the traffic of reaching its new peer
   is the change's, unless it is more than any of its known edges carries and more than the
   volume rule's floor (:data:`CHANGE_EXPLAINS`).
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

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from typing import Final

from netwarden.detector.changes import ChangeTracker
from netwarden.detector.explain import summary
from netwarden.detector.incidents import (
    ATTACKER,
    SUBJECT,
    VICTIM,
    WITNESS,
    IncidentTracker,
    role_of,
)
from netwarden.detector.novelty import VOLUME_MIN_FLOWS, Novelty, NoveltyDetector
from netwarden.detector.results import Reason, ScoredWindow
from netwarden.detector.scorer import Scorer
from netwarden.ingest.windows import ClosedWindow
from netwarden.models.edges import EdgeMemory

__all__ = ["SYMPTOMS", "WindowJudge"]

#: Features (without the egress_/ingress_ side) that are suspicious in any workload, from the
#: value at which they are: ten failed connections a minute from one workload is a pattern, not
#: a retry; names of more than 4.3 bits a character are encoded data, not words (readable names
#: have 2.8-3.8); a mean name of 50 characters is past any cluster-local name plus search
#: suffix. A newcomer's DNS habits (a debug pod running dig) or error rates are not symptoms.
SYMPTOMS: Final[dict[str, float]] = {
    "drops": 10,
    "policy_drops": 10,
    "tcp_resets": 10,
    "unanswered_syns": 10,
    "icmp": 20,
    "dns_qname_entropy_mean": 4.3,
    "dns_qname_len_mean": 50,
    "dns_qname_len_max": 100,
}


def _symptoms(window: ClosedWindow) -> list[str]:
    """The features of ``window`` past their :data:`SYMPTOMS` floor."""
    features = window.features()
    return [
        f"{side}_{name}"
        for side in ("egress", "ingress")
        for name, floor in SYMPTOMS.items()
        if features[f"{side}_{name}"] >= floor
    ]


#: What a starting pod does (it resolves its dependencies' names, search path included, and
#: opens its connection pools): with a pod new to the identity in the window, a model verdict
#: made only of these is the start-up (autoscaling, a rollout, a drain), not an anomaly.
STARTUP: Final = frozenset(
    f"egress_{name}"
    for name in (
        "dns_queries",
        "dns_distinct_names",
        "dns_nxdomain_share",
        "new_conns",
        "flows",
        "distinct_peers",
        "distinct_dst_ports",
        "dst_port_entropy",
    )
) | {"ingress_new_conns"}  # and its clients open connections to it

#: What reaching a new peer adds to a window (the start-up features, and the internet flows and
#: peers): with a change in progress on the identity (new edges that met no rule), a model
#: verdict made only of these is the change's: the model learned the identity without that peer,
#: so its calls push the identity past what it was trained on (far past, where it never used the
#: internet), window after window, until the change is accepted; the rules judge the new edges
#: (volume against the identity's busiest known edge, rhythm, failures). A clear score with more
#: flows to the new peers than the identity's busiest known edge carries, and than the volume
#: rule's floor (:data:`~netwarden.detector.novelty.VOLUME_MIN_FLOWS`), is more than a new
#: dependency adds (a new dependency runs at the rate of the requests that call it, like the
#: others): a bulk upload stays the model's. Below that floor (about five short connections a
#: minute) any new dependency fits, however light the identity's known edges look: pooled
#: connections to a store or a broker carry a few flow records a minute whatever the load,
#: while each call to an internet API opens a connection of its own. So bytes, drops, resets
#: and the shape of names stay the model's.
CHANGE_EXPLAINS: Final = STARTUP | {
    "egress_world_flows",
    "egress_world_distinct_peers",
    "egress_world_distinct_fqdns",
}

#: The score of an identity whose anomaly is only what its victims saw (warning level: the
#: victims' own windows carry the detail).
NAMED_SCORE: Final = 1.5

#: A model score (in thresholds) that alerts in one window.
CLEAR_SCORE: Final = 1.5
#: Windows in a row past the threshold that alert whatever the score.
CLEAR_RUN: Final = 3


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
        #: identity -> (start of its last window past the model's threshold, how many windows
        #: in a row were)
        self._past: dict[str, tuple[float, int]] = {}

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
        counts = [
            self._model_counts(w, s, n) for w, s, n in zip(windows, scored, novelties, strict=True)
        ]
        roles: list[tuple[str, str]] = []
        for w, s, n, c in zip(windows, scored, novelties, counts, strict=True):
            roles.append(role_of(w, s, n, c) if c or n.suspicious else ("", ""))
        # A peer its victims name is the attacker even when its own view shows nothing (its
        # probes dropped at their destinations, its side not observed): its window here is
        # the incident's own alert, with what the victims saw as its reasons.
        named: dict[str, list[str]] = defaultdict(list)
        for w, (role, culprit) in zip(windows, roles, strict=True):
            if role == VICTIM:
                named[culprit].append(w.subject.id)
        attackers = (
            self.incidents.attackers(now)
            | set(named)
            | {
                w.subject.id
                for w, (role, _) in zip(windows, roles, strict=True)
                if role == ATTACKER
            }
        )
        present = {w.subject.id for w in windows}
        out = []
        for w, s, n, c, (role, culprit) in zip(
            windows, scored, novelties, counts, roles, strict=True
        ):
            victims = named.get(w.subject.id, [])
            if victims and not role:
                role = ATTACKER
            out.append(self._one(w, s, n, c, role, culprit, attackers, victims, present))
        return out

    def _model_counts(self, window: ClosedWindow, scored: ScoredWindow, novelty: Novelty) -> bool:
        """Whether the model's verdict alone is an alert (see the module docstring)."""
        if not scored.anomalous:
            return False
        identity = window.subject.id
        width = window.end - window.start
        start, count = self._past.get(identity, (-math.inf, 0))
        run = count + 1 if window.start - start <= width else 1
        self._past[identity] = (window.start, run)
        if len(self._past) > 100_000:
            del self._past[next(iter(self._past))]
        if scored.fallback and not _symptoms(window):
            return False
        if self.memory.new_pods(window) and all(r.feature in STARTUP for r in scored.reasons[:3]):
            return False  # a pod starting: it resolves its dependencies and connects to them
        new_flows = sum(n.edge.flows for n in novelty.new if n.egress)
        if (
            new_flows
            and not novelty.suspicious
            and all(r.feature in CHANGE_EXPLAINS for r in scored.reasons[:3])
            and (
                scored.score < CLEAR_SCORE
                or new_flows <= max(self.memory.busiest_egress(window.subject.id), VOLUME_MIN_FLOWS)
            )
        ):
            return False  # a change in progress: its new peer's traffic (see CHANGE_EXPLAINS)
        return scored.score >= CLEAR_SCORE or run >= CLEAR_RUN

    def _one(
        self,
        window: ClosedWindow,
        model: ScoredWindow,
        novelty: Novelty,
        model_counts: bool,
        role: str,
        culprit: str,
        attackers: set[str],
        victims: list[str],
        present: set[str],
    ) -> ScoredWindow:
        identity = window.subject.id
        named = bool(victims) and not (model_counts or novelty.suspicious)
        anomalous = model_counts or novelty.suspicious or named
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
        elif named:
            result = self._named_by(window, result, victims)
        elif model.anomalous and not model_counts:  # a newcomer's volume: not an alert
            return replace(result, reasons=(), examples={}, summary="")
        if not anomalous:
            return result
        attacker = identity if role in (ATTACKER, SUBJECT) else culprit
        incident = self.incidents.link(attacker, identity, window.start, result)
        if role == VICTIM and culprit not in present:
            # its attacker has no window here: the incident's first such victim alerts for it
            if not incident.witness and not incident.alerting:
                incident.witness = identity
                incident.alerting += 1
            if incident.witness == identity:
                role = WITNESS
        return replace(result, incident=incident.id, role=role, attacker=incident.attacker)

    def _named_by(
        self, window: ClosedWindow, result: ScoredWindow, victims: list[str]
    ) -> ScoredWindow:
        shown = ", ".join(sorted(victims)[:4]) + (
            f" and {len(victims) - 4} more" if len(victims) > 4 else ""
        )
        text = f"was named by its victims ({shown}): they saw its probes or its new connections"
        reason = Reason(
            feature="rule:named_by_victims",
            value=float(len(victims)),
            baseline=0.0,
            spread=0.0,
            contribution=NAMED_SCORE,
            text=text,
        )
        return replace(
            result,
            score=max(result.score, NAMED_SCORE),
            reasons=(reason,),
            examples=window.examples(),
            summary=summary(window.subject.workload, [text]),
        )

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

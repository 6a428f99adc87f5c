"""The promotion gate: a retrained candidate replaces the current model only when it is no worse.

Alert fatigue is what kills a detector, and a missed attack is what people remember, so the gate
asks two questions of the candidate against the model in service, on windows neither learned
from:

* **False alerts.** On the held-out validation slice (the most recent day(s) of history, not
  trained on) plus the windows people marked *expected*, the model's flags that nobody confirmed
  are grouped into alerts (a run of consecutive flagged windows of one identity is one alert,
  as the store merges them into one anomaly) and counted per identity-day. The candidate passes
  when its rate is at most ``current * max_ratio + tolerance`` (defaults: 10 % more plus 0.05
  alerts per identity-day: noise of a few windows, not a new source of alerts).
* **Confirmed anomalies.** Every anomaly people confirmed that the current model flags (any of
  its windows above threshold) must still be flagged by the candidate: losing one refuses it.

A window alerts as the detector alerts on the model alone: a score of 1.5 thresholds, or the
third window in a row past the threshold; a confirmed anomaly is caught when any of its windows
passes the threshold. The novelty rules of the detector judge edges, which both versions share,
so they do not decide between them. Without a current model the candidate is promoted, its figures recorded. The
decision and every figure go into the version's ``gate.json`` (:func:`GateReport.to_json`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import numpy as np

from netwarden.models.spec import raw_matrix, transform
from netwarden.models.training import ModelBundle
from netwarden.validation import check_ranges

__all__ = ["GateConfig", "GateReport", "ModelFigures", "count_alerts", "evaluate", "score_rows"]

#: The detector's rule for alerting on the model's verdict alone (netwarden.detector.judge's
#: CLEAR_SCORE and CLEAR_RUN; the detector layer sits above this one, so they are restated).
CLEAR_SCORE: Final = 1.5
CLEAR_RUN: Final = 3
PROMOTE: Final = "promote"
REFUSE: Final = "refuse"

_CONSTRAINTS: Final[dict[str, tuple[float, float]]] = {
    "max_ratio": (1.0, 100.0),
    "tolerance": (0.0, 100.0),
}


@dataclass(frozen=True)
class GateConfig:
    """How much worse than the current model a candidate may be on false alerts.

    Parameters
    ----------
    max_ratio:
        Candidate false alerts per identity-day may be this multiple of the current's ...
    tolerance:
        ... plus this many alerts per identity-day (absolute), so that a current model with
        almost no false alerts does not refuse every candidate over one more.
    """

    max_ratio: float = 1.1
    tolerance: float = 0.05

    def __post_init__(self) -> None:
        check_ranges(self, _CONSTRAINTS)


@dataclass(frozen=True, slots=True)
class ModelFigures:
    """One model's figures on the gate's windows."""

    version: str
    false_alerts: int
    flagged_windows: int
    per_identity_day: float
    confirmed_caught: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "false_alerts": self.false_alerts,
            "flagged_windows": self.flagged_windows,
            "false_alerts_per_identity_day": round(self.per_identity_day, 6),
            "confirmed_caught": list(self.confirmed_caught),
        }


@dataclass
class GateReport:
    """The gate's decision, why, and the figures behind it."""

    decision: str
    reasons: list[str]
    candidate: ModelFigures
    current: ModelFigures | None
    config: GateConfig
    windows: int  # validation windows plus expected ones, scored by both
    identity_days: int
    confirmed: int  # confirmed anomalies with windows in the history
    lost: list[str] = field(default_factory=list)
    validation_start: datetime | None = None
    validation_end: datetime | None = None
    decided_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def promoted(self) -> bool:
        return self.decision == PROMOTE

    def to_json(self) -> dict[str, Any]:
        return {
            "decision": self.decision,
            "reasons": self.reasons,
            "decided_at": self.decided_at.isoformat(),
            "candidate": self.candidate.to_json(),
            "current": self.current.to_json() if self.current is not None else None,
            "tolerance": {"max_ratio": self.config.max_ratio, "tolerance": self.config.tolerance},
            "windows": self.windows,
            "identity_days": self.identity_days,
            "confirmed": self.confirmed,
            "lost": self.lost,
            "validation_start": _iso(self.validation_start),
            "validation_end": _iso(self.validation_end),
        }

    def lines(self) -> list[str]:
        """The decision and its figures, for people."""
        c = self.candidate
        out = [
            f"gate: {self.decision.upper()}: " + "; ".join(self.reasons),
            f"  windows {self.windows:,} over {self.identity_days:,} identity-days; "
            f"confirmed anomalies {self.confirmed}",
            f"  candidate {c.version}: {c.false_alerts} false alerts "
            f"({c.per_identity_day:.3f} per identity-day), "
            f"{len(c.confirmed_caught)}/{self.confirmed} confirmed caught",
        ]
        if self.current is not None:
            k = self.current
            out.append(
                f"  current   {k.version}: {k.false_alerts} false alerts "
                f"({k.per_identity_day:.3f} per identity-day), "
                f"{len(k.confirmed_caught)}/{self.confirmed} confirmed caught"
            )
        return out


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def score_rows(bundle: ModelBundle, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Scores of window rows (``identity``, ``namespace``, ``window_start`` and the feature
    columns) in threshold units (flagged above 1.0), each by the model that would score it
    live: its identity's, else its namespace's, else the global one."""
    if not rows:
        return np.empty(0)
    x = transform(raw_matrix(rows))
    groups: dict[str, list[int]] = defaultdict(list)
    models = {}
    for i, row in enumerate(rows):
        model, _ = bundle.model_for(row["identity"], row.get("namespace", ""))
        groups[model.key].append(i)
        models[model.key] = model
    scores = np.empty(len(rows))
    for key, indices in groups.items():
        model = models[key]
        scores[indices] = model.score(x[indices]) / model.threshold
    return scores


def count_alerts(rows: Sequence[Mapping[str, Any]], scores: np.ndarray) -> tuple[int, int]:
    """(alerts, alerting windows): a window alerts by the detector's rule for the model alone
    (a score of :data:`CLEAR_SCORE` thresholds, or the :data:`CLEAR_RUN`-th window in a row
    past the threshold); a run of consecutive alerting windows of one identity is one alert."""
    order = sorted(range(len(rows)), key=lambda i: (rows[i]["identity"], rows[i]["window_start"]))
    alerts = windows = 0
    identity: Any = None
    prev_end: Any = None
    run = 0
    alerting_before = False
    for i in order:
        row = rows[i]
        if row["identity"] != identity or row["window_start"] != prev_end:
            identity, run, alerting_before = row["identity"], 0, False
        prev_end = row["window_end"]
        run = run + 1 if scores[i] > 1.0 else 0
        alerting = bool(scores[i] >= CLEAR_SCORE or run >= CLEAR_RUN)
        if alerting:
            windows += 1
            alerts += not alerting_before
        alerting_before = alerting
    return alerts, windows


def _figures(
    version: str,
    bundle: ModelBundle,
    rows: Sequence[Mapping[str, Any]],
    identity_days: int,
    confirmed: Mapping[str, Sequence[Mapping[str, Any]]],
) -> ModelFigures:
    alerts, alerting = count_alerts(rows, score_rows(bundle, rows))
    caught = tuple(
        sorted(
            label
            for label, windows in confirmed.items()
            if windows and bool(np.any(score_rows(bundle, windows) > 1.0))
        )
    )
    return ModelFigures(
        version=version,
        false_alerts=alerts,
        flagged_windows=alerting,
        per_identity_day=alerts / max(identity_days, 1),
        confirmed_caught=caught,
    )


def evaluate(
    candidate: ModelBundle,
    current: ModelBundle | None,
    validation: Sequence[Mapping[str, Any]],
    *,
    confirmed: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    expected: Sequence[Mapping[str, Any]] = (),
    config: GateConfig | None = None,
    candidate_version: str = "candidate",
    current_version: str = "current",
) -> GateReport:
    """Decide whether ``candidate`` may replace ``current`` (see the module docstring).

    ``validation`` are held-out window rows (none of them confirmed anomalies), ``expected``
    the windows people marked expected, ``confirmed`` the windows of each confirmed anomaly by
    its label (e.g. the anomaly id).
    """
    config = config or GateConfig()
    confirmed = dict(confirmed or {})
    seen = {(r["identity"], r["window_start"]) for r in validation}
    rows = list(validation) + [
        r for r in expected if (r["identity"], r["window_start"]) not in seen
    ]
    identity_days = len({(r["identity"], _day(r["window_start"])) for r in rows})
    starts = [r["window_start"] for r in validation]
    ends = [r["window_end"] for r in validation]
    cand = _figures(candidate_version, candidate, rows, identity_days, confirmed)
    report = GateReport(
        decision=PROMOTE,
        reasons=[],
        candidate=cand,
        current=None,
        config=config,
        windows=len(rows),
        identity_days=identity_days,
        confirmed=sum(1 for w in confirmed.values() if w),
        validation_start=min(starts) if starts else None,
        validation_end=max(ends) if ends else None,
    )
    if not rows:
        report.decision = REFUSE
        report.reasons.append("no validation windows: nothing to judge the candidate on")
        return report
    if current is None:
        report.reasons.append("no current model to compare with")
        return report
    cur = _figures(current_version, current, rows, identity_days, confirmed)
    report.current = cur
    allowed = cur.per_identity_day * config.max_ratio + config.tolerance
    if cand.per_identity_day > allowed:
        report.decision = REFUSE
        report.reasons.append(
            f"more false alerts: {cand.per_identity_day:.3f} per identity-day against "
            f"{cur.per_identity_day:.3f} (allowed up to {allowed:.3f})"
        )
    else:
        report.reasons.append(
            f"false alerts {cand.per_identity_day:.3f} per identity-day against "
            f"{cur.per_identity_day:.3f} (allowed up to {allowed:.3f})"
        )
    lost = sorted(set(cur.confirmed_caught) - set(cand.confirmed_caught))
    report.lost = lost
    if lost:
        report.decision = REFUSE
        report.reasons.append(
            f"loses {len(lost)} confirmed anomal{'y' if len(lost) == 1 else 'ies'} the current "
            f"model catches: {', '.join(lost[:10])}"
        )
    else:
        report.reasons.append(
            f"keeps every confirmed anomaly the current model catches "
            f"({len(cur.confirmed_caught)} of {report.confirmed})"
        )
    return report


def _day(value: Any) -> Any:
    return value.date() if hasattr(value, "date") else value

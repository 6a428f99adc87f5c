"""Severity of an anomaly from its peak score, one rule for the API, alerts and metrics.

Scores are in units of the model's threshold (1.0 = just past what training allowed; see
:mod:`netwarden.models.forest`), so severity needs no per-model tuning: ``warning`` from the
threshold, ``critical`` from :data:`CRITICAL_SCORE` times past it. A critical anomaly is far
outside anything seen in training (a scan, a tunnel); a warning may be a burst of unusual but
benign work.
"""

from __future__ import annotations

from typing import Final, Literal

__all__ = ["CRITICAL_SCORE", "SEVERITIES", "Severity", "score_range", "severity"]

Severity = Literal["warning", "critical"]
SEVERITIES: Final[tuple[Severity, ...]] = ("warning", "critical")
#: A peak score at least this many thresholds high is critical.
CRITICAL_SCORE: Final = 2.0


def severity(peak_score: float) -> Severity:
    """``critical`` from :data:`CRITICAL_SCORE`, else ``warning``."""
    return "critical" if peak_score >= CRITICAL_SCORE else "warning"


def score_range(level: str) -> tuple[float, float]:
    """The half-open peak-score range ``[low, high)`` of a severity, for filtering in a query."""
    if level == "critical":
        return CRITICAL_SCORE, float("inf")
    if level == "warning":
        return float("-inf"), CRITICAL_SCORE
    raise ValueError(f"unknown severity {level!r}: expected one of {', '.join(SEVERITIES)}")

"""Alertmanager alerts for anomalies (API v2, ``POST /api/v2/alerts``) and the sender.

An alert's labels are its identity in Alertmanager (its fingerprint): ``alertname``,
``severity``, ``namespace``, ``workload``, ``identity``, ``detector`` and ``anomaly_id``, the
last so that two anomalies of one workload (one resolved, the next one firing) never overwrite
each other. Annotations say what happened in words; ``generatorURL`` points at the anomaly in
netwarden's API.

Alertmanager resolves an alert by itself once ``endsAt`` passes, so a firing alert is sent with
``endsAt`` a few resend intervals ahead and sent again while it fires; a resolved one is sent
with ``endsAt`` = when it ended (never in the future).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

import httpx

from netwarden.detector.alerts.outbox import post_json
from netwarden.detector.severity import severity
from netwarden.detector.store import AnomalyRecord

__all__ = [
    "ALERTNAME",
    "DETECTOR",
    "AlertmanagerSender",
    "alert",
    "anomaly_url",
    "coalesce",
    "labels",
    "timestamp",
]

ALERTNAME: Final = "NetworkAnomaly"
DETECTOR: Final = "netwarden"
_TOP_REASONS: Final = 3

Alert = dict[str, Any]


def anomaly_url(public_url: str, anomaly_id: int) -> str:
    """Where a person (or a script) finds the anomaly in netwarden's API."""
    return f"{public_url.rstrip('/')}/api/v1/anomalies/{anomaly_id}"


def timestamp(value: datetime) -> str:
    """RFC 3339 in UTC with milliseconds, as Alertmanager writes them."""
    utc = value.astimezone(UTC)
    return utc.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def labels(a: AnomalyRecord) -> dict[str, str]:
    """The alert's labels; a change of severity makes it a different alert in Alertmanager."""
    return {
        "alertname": ALERTNAME,
        "severity": severity(a.peak_score),
        "namespace": a.namespace,
        "workload": a.workload,
        "identity": a.identity,
        "detector": DETECTOR,
        "anomaly_id": str(a.id),
    }


def _annotations(a: AnomalyRecord) -> dict[str, str]:
    reasons = [r.text for r in a.reasons[:_TOP_REASONS] if r.text]
    summary = a.summary or f"{a.identity} behaved unusually on the network"
    description = "; ".join(reasons) if reasons else summary
    extra = len(a.reasons) - _TOP_REASONS
    if extra > 0:
        description += f" (and {extra} more)"
    return {
        "summary": summary,
        "description": description,
        "score": f"{a.peak_score:.3g}",
        "threshold": f"{a.peak_threshold:.3g}",
        "windows": str(a.window_count),
        "state": a.state,
    }


def alert(
    a: AnomalyRecord,
    *,
    public_url: str,
    ends_at: datetime,
    alert_labels: dict[str, str] | None = None,
) -> Alert:
    """One postable alert for anomaly ``a``: firing if ``ends_at`` is in the future, resolved
    otherwise. ``alert_labels`` overrides the labels (to resolve the alert sent earlier under
    labels that have changed since)."""
    starts_at = a.first_window_start
    return {
        "labels": dict(alert_labels if alert_labels is not None else labels(a)),
        "annotations": _annotations(a),
        "startsAt": timestamp(starts_at),
        "endsAt": timestamp(max(ends_at, starts_at)),
        "generatorURL": anomaly_url(public_url, a.id),
    }


def coalesce(older: list[Alert], newer: list[Alert]) -> list[Alert]:
    """The alerts of a pending payload merged with a newer one for the same anomaly: one alert
    per label set, the newer state of each winning, the older order kept."""
    merged: dict[tuple[tuple[str, str], ...], Alert] = {}
    for item in [*older, *newer]:
        merged[tuple(sorted(item["labels"].items()))] = item
    return list(merged.values())


class AlertmanagerSender:
    """POSTs outbox payloads (lists of alerts) to one Alertmanager's v2 API."""

    def __init__(self, url: str, http: httpx.Client, *, timeout: float) -> None:
        self.endpoint = f"{url.rstrip('/')}/api/v2/alerts"
        self._http = http
        self._timeout = timeout

    def send(self, payload: list[Alert]) -> None:
        """Deliver, or raise :class:`netwarden.detector.alerts.outbox.DeliveryError`."""
        post_json(self._http, self.endpoint, payload, timeout=self._timeout)

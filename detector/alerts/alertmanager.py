"""Alertmanager alerts for anomalies (API v2, ``POST /api/v2/alerts``) and the sender.

An alert's labels are its identity in Alertmanager (its fingerprint): ``alertname``,
``severity``, ``namespace``, ``workload``, ``identity``, ``detector`` and ``anomaly_id``, the
last so that two anomalies of one workload (one resolved, the next one firing) never overwrite
each other. Annotations say what happened in words; ``generatorURL`` points at the anomaly in
netwarden's API.

Alertmanager resolves an alert by itself once ``endsAt`` passes, so a firing alert is sent with
``endsAt`` a few resend intervals ahead and sent again while it fires; a resolved one is sent
with ``endsAt`` = when it ended (never in the future).

Alertmanager notifies nobody about an alert it only ever saw resolved: its notification log
has no entry for it and the alert group holds nothing firing when it flushes. So an alert that
would reach it resolved without ever having reached it firing (the anomaly started and ended
while Alertmanager was unreachable, or within one batch) is first sent firing, held so for
longer than the route's ``group_wait``/``group_interval``, and resolved afterwards
(:func:`hold_unnotified`). Not so when a person ended it (suppressed or resolved it by hand,
which the alert's ``state`` annotation says): they know, and a suppression means silence.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

import httpx

from netwarden.detector.alerts.outbox import post_json
from netwarden.detector.lifecycle import ACKNOWLEDGED, OPEN
from netwarden.detector.severity import severity
from netwarden.detector.store import AnomalyRecord

__all__ = [
    "ALERTNAME",
    "DETECTOR",
    "AlertmanagerSender",
    "alert",
    "anomaly_url",
    "coalesce",
    "firing_labels",
    "hold_unnotified",
    "identity_of",
    "is_firing",
    "labels",
    "timestamp",
]

ALERTNAME: Final = "NetworkAnomaly"
DETECTOR: Final = "netwarden"
_TOP_REASONS: Final = 3
#: Anomaly states in which an alert that ended unseen is still owed a notification.
_OWED: Final = frozenset({OPEN, ACKNOWLEDGED})

Alert = dict[str, Any]
LabelSet = tuple[tuple[str, str], ...]


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


def identity_of(item: Alert) -> LabelSet:
    """An alert's identity in Alertmanager: its label set, in a hashable form."""
    return tuple(sorted(item["labels"].items()))


def coalesce(older: list[Alert], newer: list[Alert]) -> list[Alert]:
    """The alerts of a pending payload merged with a newer one for the same anomaly: one alert
    per label set, the newer state of each winning, the older order kept."""
    merged: dict[LabelSet, Alert] = {}
    for item in [*older, *newer]:
        merged[identity_of(item)] = item
    return list(merged.values())


def is_firing(item: Alert, at: datetime) -> bool:
    """Whether Alertmanager takes ``item`` as firing when it arrives at ``at`` (``endsAt``
    later); an ``endsAt`` that cannot be read counts as firing (sent as it is)."""
    try:
        ends = datetime.fromisoformat(str(item["endsAt"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return True
    return ends.tzinfo is None or ends > at


def firing_labels(payload: list[Alert], delivered_at: datetime) -> set[LabelSet]:
    """The label sets a delivered payload told Alertmanager were firing."""
    return {identity_of(x) for x in payload if is_firing(x, delivered_at)}


def hold_unnotified(
    payload: list[Alert], notified: set[LabelSet], *, now: datetime, until: datetime
) -> tuple[list[Alert], list[Alert]]:
    """What to send now for one anomaly's pending ``payload``, and the resolved alerts to send
    once ``until`` has passed.

    A resolved alert whose label set was never delivered firing (not in ``notified``) is sent
    firing with ``endsAt`` = ``until`` and resolved later, unless the same payload fires the
    anomaly under other labels (a severity change: the person hears of it through those) or a
    person ended the anomaly (suppressed or resolved it).
    """
    if any(is_firing(x, now) for x in payload):
        return payload, []
    send: list[Alert] = []
    later: list[Alert] = []
    for item in payload:
        notes = item.get("annotations")
        owed = isinstance(notes, dict) and notes.get("state") in _OWED
        if not owed or identity_of(item) in notified:
            send.append(item)
        else:
            send.append({**item, "endsAt": timestamp(until)})
            later.append(item)
    return send, later


class AlertmanagerSender:
    """POSTs outbox payloads (lists of alerts) to one Alertmanager's v2 API."""

    def __init__(self, url: str, http: httpx.Client, *, timeout: float) -> None:
        self.endpoint = f"{url.rstrip('/')}/api/v2/alerts"
        self._http = http
        self._timeout = timeout

    def send(self, payload: list[Alert]) -> None:
        """Deliver, or raise :class:`netwarden.detector.alerts.outbox.DeliveryError`."""
        post_json(self._http, self.endpoint, payload, timeout=self._timeout)

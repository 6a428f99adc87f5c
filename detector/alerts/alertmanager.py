"""Alertmanager alerts for anomalies and changes (API v2, ``POST /api/v2/alerts``) and the sender.

An alert's labels are its identity in Alertmanager (its fingerprint): ``alertname``,
``severity``, ``namespace``, ``workload``, ``identity``, ``detector`` and ``anomaly_id``, the
last so that two anomalies of one workload (one resolved, the next one firing) never overwrite
each other; an anomaly that is part of an incident (:mod:`netwarden.detector.incidents`) also
carries ``incident``. Annotations say what happened in words (for an incident: its attacker and
victims); ``generatorURL`` points at the anomaly in netwarden's API and the ``score_plot``
annotation at its identity's score picture (PNG).

A new change (:mod:`netwarden.detector.change_store`) is one informational alert
(:func:`change_alert`): ``alertname=NetwardenChange``, ``severity=info``, ``change_id``, and the
workload it is about; it resolves by itself a few minutes after it starts, so a route can send
``severity="info"`` to a quiet receiver (a channel nobody is paged from) without anyone
resolving anything.

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

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import quote

import httpx

from netwarden.detector.alerts.outbox import post_json
from netwarden.detector.change_store import ChangeRecord, subject_identities
from netwarden.detector.lifecycle import ACKNOWLEDGED, OPEN
from netwarden.detector.severity import severity
from netwarden.detector.store import AnomalyRecord

__all__ = [
    "ALERTNAME",
    "CHANGE_ALERTNAME",
    "DETECTOR",
    "AlertmanagerSender",
    "alert",
    "anomaly_url",
    "change_alert",
    "change_labels",
    "change_url",
    "coalesce",
    "firing_labels",
    "hold_unnotified",
    "identity_of",
    "is_firing",
    "labels",
    "listed",
    "score_plot_url",
    "timestamp",
]

ALERTNAME: Final = "NetworkAnomaly"
CHANGE_ALERTNAME: Final = "NetwardenChange"
DETECTOR: Final = "netwarden"
_TOP_REASONS: Final = 3
#: Victims named in an incident's annotation (the rest are counted).
_VICTIMS: Final = 20
#: Edges of a change named in its alert's description.
_CHANGE_EDGES: Final = 5
#: Anomaly states in which an alert that ended unseen is still owed a notification.
_OWED: Final = frozenset({OPEN, ACKNOWLEDGED})

Alert = dict[str, Any]
LabelSet = tuple[tuple[str, str], ...]


def anomaly_url(public_url: str, anomaly_id: int) -> str:
    """Where a person (or a script) finds the anomaly in netwarden's API."""
    return f"{public_url.rstrip('/')}/api/v1/anomalies/{anomaly_id}"


def score_plot_url(public_url: str, identity: str) -> str:
    """The identity's score-over-time picture (PNG) in netwarden's API, for a person to look
    at before reading (``/api/v1/identities/{namespace}/{workload}/score.png``)."""
    namespace, _, workload = identity.partition("/")
    path = f"{quote(namespace, safe='')}/{quote(workload, safe='')}"
    return f"{public_url.rstrip('/')}/api/v1/identities/{path}/score.png"


def timestamp(value: datetime) -> str:
    """RFC 3339 in UTC with milliseconds, as Alertmanager writes them."""
    utc = value.astimezone(UTC)
    return utc.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def labels(a: AnomalyRecord) -> dict[str, str]:
    """The alert's labels; a change of severity makes it a different alert in Alertmanager."""
    out = {
        "alertname": ALERTNAME,
        "severity": severity(a.peak_score),
        "namespace": a.namespace,
        "workload": a.workload,
        "identity": a.identity,
        "detector": DETECTOR,
        "anomaly_id": str(a.id),
    }
    if a.incident:
        out["incident"] = a.incident
    return out


def listed(names: Sequence[str], limit: int = _VICTIMS) -> str:
    """``a, b, c and 4 more``."""
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _annotations(a: AnomalyRecord, victims: Sequence[str]) -> dict[str, str]:
    reasons = [r.text for r in a.reasons[:_TOP_REASONS] if r.text]
    summary = a.summary or f"{a.identity} behaved unusually on the network"
    description = "; ".join(reasons) if reasons else summary
    extra = len(a.reasons) - _TOP_REASONS
    if extra > 0:
        description += f" (and {extra} more)"
    out = {
        "summary": summary,
        "description": description,
        "score": f"{a.peak_score:.3g}",
        "threshold": f"{a.peak_threshold:.3g}",
        "windows": str(a.window_count),
        "state": a.state,
    }
    if a.incident:
        out["incident"] = a.incident
        out["role"] = a.role
        out["attacker"] = a.identity
        out["victims"] = listed(sorted(victims)) if victims else "none so far"
    return out


def alert(
    a: AnomalyRecord,
    *,
    public_url: str,
    ends_at: datetime,
    alert_labels: dict[str, str] | None = None,
    victims: Sequence[str] = (),
) -> Alert:
    """One postable alert for anomaly ``a``: firing if ``ends_at`` is in the future, resolved
    otherwise. ``alert_labels`` overrides the labels (to resolve the alert sent earlier under
    labels that have changed since); ``victims`` are the identities linked to its incident as
    victims (named in the annotations)."""
    starts_at = a.first_window_start
    return {
        "labels": dict(alert_labels if alert_labels is not None else labels(a)),
        "annotations": {
            **_annotations(a, victims),
            "score_plot": score_plot_url(public_url, a.identity),
        },
        "startsAt": timestamp(starts_at),
        "endsAt": timestamp(max(ends_at, starts_at)),
        "generatorURL": anomaly_url(public_url, a.id),
    }


def change_url(public_url: str, change_id: str) -> str:
    """Where a person finds (and accepts or rejects) the change in netwarden's API."""
    return f"{public_url.rstrip('/')}/api/v1/changes/{change_id}"


def change_labels(c: ChangeRecord) -> dict[str, str]:
    """An informational alert's labels: the change and the workload it is about."""
    out = {
        "alertname": CHANGE_ALERTNAME,
        "severity": "info",
        "detector": DETECTOR,
        "change_id": c.change_id,
        "kind": c.kind,
    }
    subjects = subject_identities(c)
    if subjects:
        namespace, _, workload = subjects[0].partition("/")
        out |= {"namespace": namespace, "workload": workload, "identity": subjects[0]}
    return out


def change_alert(c: ChangeRecord, *, public_url: str, now: datetime, lasts: float) -> Alert:
    """The informational alert announcing change ``c``: it starts ``now`` and resolves by
    itself ``lasts`` seconds later (nobody needs to resolve a piece of information)."""
    edges = [
        f"{e['identity']} {'to' if e['direction'] == 'egress' else 'from'} {e['peer']}"
        + (f" {e['port']}" if e["port"] else "")
        for e in c.edges[:_CHANGE_EDGES]
    ]
    more = len(c.edges) + c.edges_omitted - len(edges)
    description = "; ".join(edges) + (f" (and {more} more)" if more > 0 else "")
    return {
        "labels": change_labels(c),
        "annotations": {
            "summary": f"change: {c.description}",
            "description": description or c.description,
            "subject": c.subject,
            "identities": listed(list(c.identities)),
            "first_seen": timestamp(c.first_seen),
            # "open": owed a notification (see hold_unnotified), like an open anomaly
            "state": OPEN,
        },
        "startsAt": timestamp(now),
        "endsAt": timestamp(now + timedelta(seconds=lasts)),
        "generatorURL": change_url(public_url, c.change_id),
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

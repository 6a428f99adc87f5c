"""Alerts for models that no longer fit an identity (:mod:`netwarden.detector.drift`).

One Alertmanager alert per identity whose model drifted: ``alertname=NetwardenModelDrift``,
``severity=warning``, with ``namespace``, ``workload``, ``identity`` and ``model`` (the model
key) as labels, the reason and the top drifting features in the annotations, and a link to the
identity's drift report in the API. It fires while the identity is judged drifted, is sent again
every ``resend_interval`` (Alertmanager ends an alert by itself at ``endsAt``), and is sent
resolved once the model fits again (or a new model version, whose counts start afresh, replaced
it). It goes through the outbox like every alert, keyed ``drift:<identity>``, so a pending
"firing" is merged into a newer "resolved".

With Slack configured, the channel gets one message when an identity's model stops fitting
(:func:`drift_message`) and one when it fits again (:func:`fits_again_message`), through the
same outbox (:class:`~netwarden.detector.alerts.notices.SlackNotices`: retried until
delivered, the second never before the first).

Which alerts are firing is kept in memory, as the drift counts are: after a restart a firing
alert that is not sent again ends by itself at its ``endsAt`` (a few resend intervals).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from netwarden.detector.alerts import slack
from netwarden.detector.alerts.alertmanager import DETECTOR, coalesce, timestamp
from netwarden.detector.alerts.notices import SlackNotices
from netwarden.detector.alerts.outbox import OutboxTransaction
from netwarden.detector.drift import DriftMonitor, DriftReport

__all__ = [
    "DRIFT_ALERTNAME",
    "DriftAlerts",
    "drift_alert",
    "drift_labels",
    "drift_message",
    "drift_url",
    "fits_again_message",
]

DRIFT_ALERTNAME: Final = "NetwardenModelDrift"
_SINK: Final = "alertmanager"
_SLACK: Final = "slack"

Alert = dict[str, Any]


def drift_url(public_url: str, namespace: str, workload: str) -> str:
    """The identity's drift report in netwarden's API."""
    return f"{public_url.rstrip('/')}/api/v1/identities/{namespace}/{workload}/drift"


def drift_labels(r: DriftReport) -> dict[str, str]:
    return {
        "alertname": DRIFT_ALERTNAME,
        "severity": "warning",
        "namespace": r.namespace,
        "workload": r.workload,
        "identity": r.identity,
        "model": r.model,
        "detector": DETECTOR,
    }


def drift_alert(
    r: DriftReport, *, public_url: str, starts_at: datetime, ends_at: datetime
) -> Alert:
    """The alert for a drifted identity: firing if ``ends_at`` is in the future."""
    features = _features(r)
    above = r.above_share if r.above_share is not None else 0.0
    training = r.training_above_share if r.training_above_share is not None else 0.0
    return {
        "labels": drift_labels(r),
        "annotations": {
            "summary": f"the model no longer fits {r.identity}: {r.reason}",
            "description": (
                f"top drifting features: {features}; {above:.1%} of its last {r.windows} "
                f"windows above the threshold (training {training:.2%}); retrain, or look at "
                "what changed"
            ),
            "score_psi": f"{r.score_psi:.3g}" if r.score_psi is not None else "",
            "windows": str(r.windows),
            "model_version": r.version or "",
            "state": r.state,
        },
        "startsAt": timestamp(starts_at),
        "endsAt": timestamp(max(ends_at, starts_at)),
        "generatorURL": drift_url(public_url, r.namespace, r.workload),
    }


def _features(r: DriftReport) -> str:
    return ", ".join(f"{f.feature} (PSI {f.psi:.2f})" for f in r.top) or "none in particular"


def drift_message(r: DriftReport, *, public_url: str) -> dict[str, Any]:
    """The Slack message telling that the model no longer fits an identity."""
    above = r.above_share if r.above_share is not None else 0.0
    training = r.training_above_share if r.training_above_share is not None else 0.0
    return slack.notice(
        title=f":chart_with_downwards_trend: Model no longer fits {r.identity}",
        text=f"Model drift in {r.identity}: {r.reason}",
        lines=[
            r.reason,
            f"top drifting features: {_features(r)}",
            f"{above:.1%} of its last {r.windows} windows above the threshold "
            f"(training {training:.2%})",
            "Retrain, or look at what changed; its anomalies are alerted as usual.",
        ],
        link=(drift_url(public_url, r.namespace, r.workload), "Drift report"),
        footer=f"model {r.model}, version {r.version or '?'} · not an anomaly · netwarden",
    )


def fits_again_message(
    alert: Alert, report: DriftReport | None, *, public_url: str
) -> dict[str, Any]:
    """The Slack message telling that a drifted identity's model fits again (``report``: its
    state now; None when it is no longer tracked)."""
    labels = alert["labels"]
    identity = labels["identity"]
    if report is None:
        now = "no longer tracked (no windows in the horizon)"
    elif report.version != alert["annotations"].get("model_version"):
        now = f"model version {report.version} scores it now (its counts start afresh)"
    else:
        now = f"{report.state}: {report.reason}"
    return slack.notice(
        title=f":white_check_mark: Model fits {identity} again",
        text=f"Model fits {identity} again",
        lines=[now],
        link=(drift_url(public_url, labels["namespace"], labels["workload"]), "Drift report"),
        footer="announced earlier in this channel · netwarden",
    )


@dataclass(slots=True)
class _Firing:
    alert: Alert
    started: datetime
    sent: datetime


class DriftAlerts:
    """Decides the drift alerts owed on each alerter pass (the alerter's thread only)."""

    def __init__(
        self, monitor: DriftMonitor, *, public_url: str, resend_interval: float, lifetime: int
    ) -> None:
        self.monitor = monitor
        self.public_url = public_url
        self.resend = timedelta(seconds=resend_interval)
        self.lifetime = lifetime
        self._firing: dict[str, _Firing] = {}

    def sync(
        self,
        tx: OutboxTransaction,
        now: datetime,
        *,
        alertmanager: bool = True,
        notices: SlackNotices | None = None,
    ) -> Counter[str]:
        """Enqueue what is owed now (new, due for resend, or resolved) to Alertmanager (when
        ``alertmanager``) and Slack (through ``notices``, when given); returns the messages
        enqueued by sink."""
        drifted = {r.identity: r for r in self.monitor.drifted()}
        enqueued: Counter[str] = Counter()
        for identity, r in sorted(drifted.items()):
            old = self._firing.get(identity)
            if old is not None and now - old.sent < self.resend:
                continue
            started = old.started if old is not None else now
            alert = drift_alert(
                r,
                public_url=self.public_url,
                starts_at=started,
                ends_at=now + self.lifetime * self.resend,
            )
            if alertmanager:
                tx.enqueue(_SINK, [alert], key=f"drift:{identity}", coalesce=coalesce)
                enqueued[_SINK] += 1
            if notices is not None:
                message = drift_message(r, public_url=self.public_url)
                enqueued[_SLACK] += notices.start(tx, f"drift:{identity}", message)
            self._firing[identity] = _Firing(alert, started, now)
        for identity in sorted(set(self._firing) - set(drifted)):
            old = self._firing.pop(identity)
            now_report = self.monitor.report(identity)
            state = now_report.state if now_report is not None else "gone"
            resolved = {
                **old.alert,
                "annotations": {**old.alert["annotations"], "state": state},
                "endsAt": timestamp(max(now, old.started)),
            }
            if alertmanager:
                tx.enqueue(_SINK, [resolved], key=f"drift:{identity}", coalesce=coalesce)
                enqueued[_SINK] += 1
            if notices is not None:
                message = fits_again_message(old.alert, now_report, public_url=self.public_url)
                enqueued[_SLACK] += notices.end(tx, f"drift:{identity}", message)
        return enqueued

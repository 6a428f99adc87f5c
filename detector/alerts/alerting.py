"""Alerts for anomalies: decide what to tell Alertmanager and Slack, and deliver it.

:class:`Alerter` follows the anomaly store's changes. ``sync()`` decides, per anomaly, what is
owed and writes it to the outbox (:mod:`netwarden.detector.alerts.outbox`) in one transaction together
with the per-anomaly alert state, so that deciding again enqueues nothing twice and a restarted
process owes exactly what was left. ``deliver()`` sends what is due and retries failures with
backoff, forever. ``run()`` loops both in a thread.

The rules, per anomaly (an anomaly is one incident however many windows it spans):

- **Alertmanager**: an anomaly that is ``ongoing`` and open or acknowledged fires, with
  ``endsAt`` = now + ``resend_lifetime`` resend intervals, and is sent again every
  ``resend_interval`` while it fires. When it stops (no longer ongoing, resolved or suppressed)
  it is sent once more, resolved, with ``endsAt`` = when it ended. If its severity changes, the
  alert under the old labels is resolved and one under the new labels fires. An open anomaly
  that had already ended when the alerter first saw it (a short burst inside one batch) is sent
  resolved at once.
- **Every anomaly reaches Alertmanager firing at least once.** Alertmanager notifies nobody of
  an alert it only ever saw resolved, and the outbox merges a pending "firing" into the newer
  "resolved" (so a backlog never re-fires what is over). So when a resolved alert is about to
  be sent for a label set no delivered message ever told Alertmanager was firing (the anomaly
  started and ended while Alertmanager was down, or within one batch), it is sent firing
  instead, with ``endsAt`` = now + ``firing_hold`` (longer than a route's ``group_wait`` and
  ``group_interval``, so Alertmanager's next flush notifies it), and the resolved alert follows
  once ``firing_hold`` has passed. What was delivered is durable (the outbox rows keep the
  payload as sent), so a restart neither loses the follow-up nor fires anything twice. An
  anomaly a person suppressed or resolved is not brought back to fire.
- **Slack**: one message per anomaly announces it. An open anomaly joins the next message; a
  message goes out once the oldest anomaly in it has waited ``group_wait`` and fewer than
  ``slack_max_messages`` went out in the last ``slack_rate_interval``; anomalies held back by
  the limit fold into the next message, which becomes a digest when it is big. An anomaly that
  is acknowledged, suppressed or resolved before its message goes out is left out. An anomaly
  that was still going on when its message was enqueued gets a short "is over" notice when it
  ends (``slack_send_resolved``), grouped and rate-limited the same way, and only once its
  first message was delivered: the channel always sees it fire first, then end.
- Suppressed anomalies send nothing (a firing one is resolved).
- **Incidents** (:mod:`netwarden.detector.incidents`): an anomaly whose role is ``victim`` is
  linked to its attacker's incident and alerts nothing of its own (neither sink); the
  attacker's (or a subject's) alert names the incident, and its victims as the store knows them
  when the alert is built.
- **Changes** (:mod:`netwarden.detector.change_store`, when the alerter is given a change
  store and ``notify_changes``): each new change is announced once, as information: an
  Alertmanager alert ``alertname=NetwardenChange``, ``severity=info`` that resolves by itself
  ``change_alert_seconds`` after it starts, and a Slack message (the changes of one pass
  together), neither rate-limited with the anomalies' messages nor counted against them. Which
  changes were announced is written with their messages, in one transaction.
- **Drift** (:mod:`netwarden.detector.alerts.drift`, after :meth:`Alerter.follow_drift`): an
  Alertmanager alert ``alertname=NetwardenModelDrift`` per identity whose model no longer fits,
  re-sent while it lasts and resolved when it fits again; in Slack, one message when it stops
  fitting and one when it fits again.
- **Conditions** of netwarden itself (failing scheduled retraining, :meth:`Alerter.condition`):
  the caller's Alertmanager alert, keyed, whose newer state supersedes a pending older one;
  in Slack, one message when it starts and one when it ends. Drift's and the conditions' Slack
  messages (:mod:`netwarden.detector.alerts.notices`) are neither grouped nor rate-limited with
  the anomalies', and a condition's end is sent only after its start was delivered.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import Counter as Tally
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Final, Self

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge

from netwarden.detector.alerts import alertmanager, slack
from netwarden.detector.alerts.drift import DriftAlerts
from netwarden.detector.alerts.notices import SlackNotices
from netwarden.detector.alerts.outbox import (
    SLACK_CLOSED,
    SLACK_CLOSING,
    SLACK_NONE,
    SLACK_SENT,
    SLACK_WAITING,
    AlertState,
    DeliveryError,
    FollowUp,
    Outbox,
    OutboxItem,
    OutboxTransaction,
)
from netwarden.detector.change_store import CLOSED as CHANGE_CLOSED
from netwarden.detector.change_store import OPEN as CHANGE_OPEN
from netwarden.detector.change_store import ChangeRecord, ChangeStore
from netwarden.detector.drift import DriftMonitor
from netwarden.detector.incidents import VICTIM
from netwarden.detector.lifecycle import ACKNOWLEDGED, OPEN, RESOLVED, SUPPRESSED
from netwarden.detector.store import AnomalyRecord, AnomalyStore

__all__ = ["ALERTMANAGER", "SLACK", "AlertMetrics", "AlertSettings", "Alerter", "decide"]

log = logging.getLogger(__name__)

ALERTMANAGER: Final = "alertmanager"
SLACK: Final = "slack"
_CURSOR: Final = "anomalies"
_CHANGES_CURSOR: Final = "changes"
#: How far around an incident's anomalies its victims are looked for.
_INCIDENT_SPAN: Final = timedelta(hours=1)
#: Changes are re-read this far behind the cursor: a store transaction that took its time
#: before commit is not missed (deciding is idempotent, so re-reading costs nothing else).
_RESCAN: Final = timedelta(seconds=60)
_PAGE: Final = 500
_PURGE_EVERY: Final = timedelta(hours=1)


@dataclass(frozen=True, kw_only=True, slots=True)
class AlertSettings:
    """Where alerts go and how often. Durations are in seconds; a sink without a URL is off."""

    alertmanager_url: str | None = None  # e.g. http://127.0.0.1:9093 (POST /api/v2/alerts)
    slack_webhook_url: str | None = None  # a Slack incoming webhook
    public_url: str = "http://127.0.0.1:8000"  # netwarden's API as people reach it (links)
    resend_interval: float = 60.0  # a firing alert is sent to Alertmanager again this often
    resend_lifetime: int = 4  # firing endsAt = now + this many resend intervals
    group_wait: float = 30.0  # Slack: wait this long for more anomalies to share a message
    slack_max_messages: int = 5  # Slack: at most this many messages ...
    slack_rate_interval: float = 600.0  # ... per this many seconds; the rest folds into a digest
    slack_detail_limit: int = 3  # Slack: a message with more anomalies is a digest
    backoff_initial: float = 1.0  # retry delay after the first failure, doubling ...
    backoff_max: float = 300.0  # ... up to this (jittered into its upper half)
    request_timeout: float = 10.0  # per HTTP request (connect, read, write, pool)
    lookback: float = 600.0  # first start: anomalies changed this recently are considered
    batch_size: int = 100  # messages sent per deliver() call
    retention: float = 7 * 86400.0  # delivered messages are kept this long, then deleted
    #: An alert Alertmanager never saw firing is held firing this long before it is resolved:
    #: longer than Alertmanager's default group_interval (5 m), so the route's next flush
    #: notifies it even when its group already exists.
    firing_hold: float = 360.0
    slack_send_resolved: bool = True  # Slack: an "is over" notice when an announced one ends
    notify_changes: bool = True  # announce each new change once, as information
    change_alert_seconds: float = 300.0  # a change's info alert resolves by itself after this

    #: name -> (lowest, highest) allowed; the one place valid values are declared.
    _RANGES: ClassVar[dict[str, tuple[float, float]]] = {
        "resend_interval": (1.0, 86400.0),
        "resend_lifetime": (2, 100),
        "group_wait": (0.0, 3600.0),
        "slack_max_messages": (1, 10_000),
        "slack_rate_interval": (1.0, 86400.0),
        "slack_detail_limit": (1, slack.MAX_DETAIL),
        "backoff_initial": (0.001, 3600.0),
        "backoff_max": (0.001, 86400.0),
        "request_timeout": (0.01, 300.0),
        "lookback": (0.0, 365 * 86400.0),
        "batch_size": (1, 10_000),
        "retention": (3600.0, 3650 * 86400.0),
        "firing_hold": (1.0, 86400.0),
        "change_alert_seconds": (60.0, 86400.0),
    }

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in self._RANGES:
                low, high = self._RANGES[f.name]
                if (
                    isinstance(value, bool)
                    or not isinstance(value, (int, float))
                    or not low <= value <= high
                    or (isinstance(low, int) and not isinstance(value, int))
                ):
                    raise ValueError(f"{f.name} must be in [{low}, {high}], got {value!r}")
        if self.retention < self.slack_rate_interval:
            raise ValueError(
                f"retention ({self.retention}) must be >= slack_rate_interval "
                f"({self.slack_rate_interval}): the rate limit counts messages"
            )
        if self.backoff_max < self.backoff_initial:
            raise ValueError(
                f"backoff_max ({self.backoff_max}) must be >= backoff_initial "
                f"({self.backoff_initial})"
            )
        for name in ("slack_send_resolved", "notify_changes"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a boolean, got {getattr(self, name)!r}")
        for name in ("alertmanager_url", "slack_webhook_url", "public_url"):
            url = getattr(self, name)
            if not url and name != "public_url":
                continue  # a sink without a URL is off
            if not url or not url.startswith(("http://", "https://")):
                raise ValueError(f"{name} must be an http(s) URL, got {url!r}")


class AlertMetrics:
    """Prometheus metrics of alert delivery, registered on the registry given."""

    def __init__(self, registry: CollectorRegistry, sinks: list[str]) -> None:
        self.deliveries = Counter(
            "netwarden_alert_deliveries_total",
            "Attempts to deliver an alert message, by sink and outcome (failures are retried).",
            ["sink", "outcome"],
            registry=registry,
        )
        self.enqueued = Counter(
            "netwarden_alert_messages_enqueued_total",
            "Alert messages written to the outbox, by sink.",
            ["sink"],
            registry=registry,
        )
        self.superseded = Counter(
            "netwarden_alert_messages_superseded_total",
            "Pending messages replaced by a newer state of the same alert, by sink.",
            ["sink"],
            registry=registry,
        )
        self.pending = Gauge(
            "netwarden_alert_outbox_pending",
            "Alert messages in the outbox not delivered yet, by sink.",
            ["sink"],
            registry=registry,
        )
        self.slack_anomalies = Counter(
            "netwarden_alert_slack_anomalies_total",
            "Anomalies reported to Slack, by message format (detail, digest, or over: the notice "
            "that an announced anomaly ended).",
            ["format"],
            registry=registry,
        )
        self.changes = Counter(
            "netwarden_alert_changes_announced",
            "New changes announced (as information) to the sinks.",
            registry=registry,
        )
        for sink in sinks:
            self.enqueued.labels(sink)
            self.superseded.labels(sink)
            self.pending.labels(sink).set(0)
            for outcome in ("success", "failure"):
                self.deliveries.labels(sink, outcome)


def _ended_at(a: AnomalyRecord, now: datetime) -> datetime:
    """When the anomaly stopped: the state change for a resolved or suppressed one (the last
    one touching it), else the end of its last anomalous window; never after ``now``."""
    t = a.updated_at if a.state in (RESOLVED, SUPPRESSED) else a.last_window_end
    return min(t, now)


def decide(
    a: AnomalyRecord,
    old: AlertState | None,
    now: datetime,
    settings: AlertSettings,
    *,
    to_alertmanager: bool = True,
    to_slack: bool = True,
    victims: Callable[[AnomalyRecord], Sequence[str]] | None = None,
) -> tuple[AlertState, list[dict[str, Any]]]:
    """The anomaly's new alert state and the Alertmanager alerts it owes now (pure, but for
    ``victims``, which names the victims of its incident when an alert is built).

    Slack messages are not built here: an anomaly only joins the waiting list, which
    :meth:`Alerter.sync` flushes as one message (see the module docstring). A victim's
    anomaly owes nothing of its own: its attacker's alert tells it.
    """
    state = old or AlertState(anomaly_id=a.id)
    alertable = a.role != VICTIM
    live = alertable and a.ongoing and a.state in (OPEN, ACKNOWLEDGED)
    alerts: list[dict[str, Any]] = []
    url = settings.public_url

    def alert(ends_at: datetime, alert_labels: dict[str, str] | None = None) -> dict[str, Any]:
        hit = victims(a) if victims is not None and a.incident else ()
        return alertmanager.alert(
            a, public_url=url, ends_at=ends_at, alert_labels=alert_labels, victims=hit
        )

    if to_alertmanager:
        want = alertmanager.labels(a)
        if live:
            if state.am_firing and state.am_labels is not None and state.am_labels != want:
                alerts.append(alert(now, state.am_labels))
            resend = timedelta(seconds=settings.resend_interval)
            if (
                alerts
                or not state.am_firing
                or state.am_sent_at is None
                or now - state.am_sent_at >= resend
            ):
                alerts.append(alert(now + settings.resend_lifetime * resend))
                state = replace(state, am_labels=want, am_firing=True, am_sent_at=now)
        elif state.am_firing:
            alerts.append(alert(_ended_at(a, now), state.am_labels))
            state = replace(state, am_firing=False, am_sent_at=now)
        elif old is None and a.state == OPEN and alertable:  # over before it was seen:
            # resolved at once, which delivery turns into "firing, then resolved" (see the
            # module docstring)
            alerts.append(alert(_ended_at(a, now)))
            state = replace(state, am_labels=want, am_sent_at=now)
    if to_slack:
        if (
            state.slack == SLACK_NONE
            and alertable
            and a.state == OPEN
            and (a.ongoing or old is None)
        ):
            state = replace(state, slack=SLACK_WAITING, slack_since=now)
        elif state.slack == SLACK_WAITING and (a.state != OPEN or not alertable):
            state = replace(state, slack=SLACK_NONE, slack_since=None)
        elif state.slack == SLACK_SENT and not a.ongoing:
            done = SLACK_CLOSING if settings.slack_send_resolved else SLACK_CLOSED
            state = replace(state, slack=done, slack_since=now)
    return state, alerts


def _alerts(payload: Any) -> bool:
    """Whether ``payload`` is a list of alerts with labels (as this module writes them)."""
    return isinstance(payload, list) and all(
        isinstance(x, dict) and isinstance(x.get("labels"), dict) for x in payload
    )


def _system_clock() -> datetime:
    return datetime.now(UTC)


class Alerter:
    """Alerts for the anomalies of ``store``, through an outbox in the same database.

    Parameters
    ----------
    store : AnomalyStore
        Where anomalies are; the outbox tables are created in its database.
    settings : AlertSettings
        Sinks, intervals and limits.
    registry : CollectorRegistry, optional
        Where the metrics are registered (a private registry if not given).
    http : httpx.Client, optional
        The client for both sinks; every request carries ``settings.request_timeout``. If not
        given the alerter makes (and closes) its own.
    now : callable, optional
        The clock (aware datetimes); tests inject one.
    rng : random.Random, optional
        The jitter's random source; tests seed one.
    changes : ChangeStore, optional
        Where changes are (normally on the store's database): new ones are announced
        (``settings.notify_changes``).
    """

    def __init__(
        self,
        store: AnomalyStore,
        settings: AlertSettings,
        *,
        registry: CollectorRegistry | None = None,
        http: httpx.Client | None = None,
        now: Callable[[], datetime] | None = None,
        rng: random.Random | None = None,
        changes: ChangeStore | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.changes = changes if settings.notify_changes else None
        self._clock = now or _system_clock
        self._rng = rng or random.Random()
        self._own_http = http is None
        self._http = http if http is not None else httpx.Client(timeout=settings.request_timeout)
        self._senders: dict[str, alertmanager.AlertmanagerSender | slack.SlackSender] = {}
        timeout = settings.request_timeout
        if settings.alertmanager_url:
            self._senders[ALERTMANAGER] = alertmanager.AlertmanagerSender(
                settings.alertmanager_url, self._http, timeout=timeout
            )
        if settings.slack_webhook_url:
            self._senders[SLACK] = slack.SlackSender(
                settings.slack_webhook_url, self._http, timeout=timeout
            )
        # A claimed message is someone else's for this long: longer than any one send.
        self._lease = timedelta(seconds=max(60.0, 3 * timeout))
        self.outbox = Outbox(store.url)
        self.metrics = AlertMetrics(registry or CollectorRegistry(), sorted(self._senders))
        self._sync_lock = threading.Lock()
        self._deliver_lock = threading.Lock()
        self._purged_at: datetime | None = None
        #: Alerts for models that no longer fit an identity (see follow_drift).
        self.drift: DriftAlerts | None = None
        #: Which drift and conditions Slack was told of (start and end messages).
        self.notices = SlackNotices()
        self._refresh_pending()

    def follow_drift(self, monitor: DriftMonitor) -> None:
        """Alert (Alertmanager, Slack) on the identities whose model no longer fits them
        (:mod:`netwarden.detector.alerts.drift`), from the next pass on."""
        s = self.settings
        self.drift = DriftAlerts(
            monitor,
            public_url=s.public_url,
            resend_interval=s.resend_interval,
            lifetime=s.resend_lifetime,
        )

    def condition(
        self, key: str, *, firing: bool, alert: dict[str, Any], slack_message: dict[str, Any]
    ) -> dict[str, int]:
        """Tell a condition of netwarden itself (failing scheduled retraining) to the sinks at
        once, through the outbox: Alertmanager gets ``alert``, its state now (keyed ``key``: it
        supersedes a pending older state); Slack gets ``slack_message`` when the condition
        starts (``firing``, once) and when it ends (after the start was delivered). Returns
        the messages enqueued by sink; thread-safe."""
        now = self._now()
        enqueued: Tally[str] = Tally()
        with self.outbox.transaction(now) as tx:
            if ALERTMANAGER in self._senders:
                tx.enqueue(ALERTMANAGER, [alert], key=key)
                enqueued[ALERTMANAGER] += 1
            if SLACK in self._senders:
                tell = self.notices.start if firing else self.notices.end
                enqueued[SLACK] += tell(tx, key, slack_message)
            superseded = list(tx.superseded)
        for sink, n in enqueued.items():
            self.metrics.enqueued.labels(sink).inc(n)
        for sink in superseded:
            self.metrics.superseded.labels(sink).inc()
        self._refresh_pending()
        return {sink: n for sink, n in enqueued.items() if n}

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the alerter's clock must return timezone-aware datetimes")
        return now.astimezone(UTC)

    # --------------------------------------------------------------------------------- sync

    def sync(self) -> dict[str, int]:
        """Decide what the store's anomalies owe and enqueue it; returns messages by sink.

        Idempotent: a second call with nothing changed (and no resend due) enqueues nothing.
        """
        with self._sync_lock:
            now = self._now()
            with self.outbox.transaction(now) as tx:
                cursor = tx.cursor(_CURSOR)
                change_cursor = tx.cursor(_CHANGES_CURSOR)
            # store reads: outside the outbox's transaction
            records, newest = self._changes(cursor, now)
            victims = self._victims(records)
            fresh, newest_change = self._new_changes(change_cursor, now)
            enqueued: Tally[str] = Tally()
            with self.outbox.transaction(now) as tx:
                states = tx.states(records)
                for a in sorted(records.values(), key=lambda r: r.id):
                    old = states.get(a.id)
                    new, alerts = decide(
                        a,
                        old,
                        now,
                        self.settings,
                        to_alertmanager=ALERTMANAGER in self._senders,
                        to_slack=SLACK in self._senders,
                        victims=victims,
                    )
                    if alerts:
                        tx.enqueue(
                            ALERTMANAGER,
                            alerts,
                            key=f"anomaly:{a.id}",
                            coalesce=alertmanager.coalesce,
                        )
                        enqueued[ALERTMANAGER] += 1
                    if new != old:
                        tx.put(new)
                group: list[AnomalyRecord] = []
                over: list[AnomalyRecord] = []
                if SLACK in self._senders:
                    group = self._flush_slack(tx, records, now, victims)
                    over = self._flush_slack_over(tx, records, now)
                enqueued[SLACK] += bool(group) + bool(over)
                enqueued += self._announce(tx, fresh, now)
                notices = self.notices if SLACK in self._senders else None
                if self.drift is not None:
                    enqueued += self.drift.sync(
                        tx, now, alertmanager=ALERTMANAGER in self._senders, notices=notices
                    )
                if notices is not None:  # ends that waited for their start's delivery
                    enqueued[SLACK] += notices.flush(tx)
                if newest is not None and (cursor is None or newest > cursor):
                    tx.set_cursor(_CURSOR, newest)
                if newest_change is not None and (
                    change_cursor is None or newest_change > change_cursor
                ):
                    tx.set_cursor(_CHANGES_CURSOR, newest_change)
                superseded = list(tx.superseded)
        for sink, n in enqueued.items():
            self.metrics.enqueued.labels(sink).inc(n)
        for sink in superseded:
            self.metrics.superseded.labels(sink).inc()
        if group:
            fmt = "detail" if len(group) <= self.settings.slack_detail_limit else "digest"
            self.metrics.slack_anomalies.labels(fmt).inc(len(group))
        if over:
            self.metrics.slack_anomalies.labels("over").inc(len(over))
        self._refresh_pending()
        return {sink: n for sink, n in enqueued.items() if n}

    def _changes(
        self, cursor: datetime | None, now: datetime
    ) -> tuple[dict[int, AnomalyRecord], datetime | None]:
        """Anomalies changed since the cursor (less a margin), plus those firing or awaiting
        Slack; and the newest change seen (the next cursor)."""
        since = (
            cursor - _RESCAN
            if cursor is not None
            else now - timedelta(seconds=self.settings.lookback)
        )
        records: dict[int, AnomalyRecord] = {}
        newest, after = cursor, 0
        while True:
            page = self.store.updated_since(since, after_id=after, limit=_PAGE)
            records.update((a.id, a) for a in page)
            if page and (newest is None or page[-1].updated_at > newest):
                newest = page[-1].updated_at
            if len(page) < _PAGE:
                break
            since, after = page[-1].updated_at, page[-1].id
        missing = [i for i in self.outbox.tracked() if i not in records]
        records.update((a.id, a) for a in self.store.get_many(missing))
        return records, newest

    def _victims(
        self, records: dict[int, AnomalyRecord]
    ) -> Callable[[AnomalyRecord], Sequence[str]]:
        """The victims of the incidents of ``records``' attackers (and subjects), as the store
        knows them now: its victim anomalies with the same incident, found among the anomalies
        around them (read here, outside the outbox's transaction, only when there are any)."""
        mine = [a for a in records.values() if a.incident and a.role != VICTIM]
        found: dict[str, set[str]] = defaultdict(set)
        if mine:
            incidents = {a.incident for a in mine}
            since = min(a.first_window_start for a in mine) - _INCIDENT_SPAN
            until = max(a.last_window_end for a in mine) + _INCIDENT_SPAN
            for offset in range(0, 10 * _PAGE, _PAGE):
                page = self.store.list(since=since, until=until, limit=_PAGE, offset=offset)
                for r in page:
                    if r.role == VICTIM and r.incident in incidents:
                        found[r.incident].add(r.identity)
                if len(page) < _PAGE:
                    break

        def victims(a: AnomalyRecord) -> Sequence[str]:
            return sorted(found.get(a.incident, ())) if a.role != VICTIM else ()

        return victims

    def _new_changes(
        self, cursor: datetime | None, now: datetime
    ) -> tuple[list[ChangeRecord], datetime | None]:
        """Changes recorded since the cursor (less a margin; their notices are idempotent),
        and the newest one's time (the next cursor)."""
        if self.changes is None or not self._senders:
            return [], None
        since = (
            cursor - _RESCAN
            if cursor is not None
            else now - timedelta(seconds=self.settings.lookback)
        )
        found: list[ChangeRecord] = []
        newest, after = cursor, 0
        while True:
            page = self.changes.created_since(since, after_id=after, limit=_PAGE)
            found += page
            if page and (newest is None or page[-1].created_at > newest):
                newest = page[-1].created_at
            if len(page) < _PAGE:
                return found, newest
            since, after = page[-1].created_at, page[-1].id

    def _announce(
        self, tx: OutboxTransaction, changes: list[ChangeRecord], now: datetime
    ) -> Tally[str]:
        """One informational alert per change not announced yet, and one Slack message for
        them together; a change decided or escalated before it was announced is told by its
        decision (or its anomaly) instead, and only marked."""
        enqueued: Tally[str] = Tally()
        if not changes:
            return enqueued
        told = tx.noticed(c.change_id for c in changes)
        fresh = [c for c in changes if c.change_id not in told]
        news = [c for c in fresh if c.status in (CHANGE_OPEN, CHANGE_CLOSED)]
        s = self.settings
        if news and ALERTMANAGER in self._senders:
            for c in news:
                notice = alertmanager.change_alert(
                    c, public_url=s.public_url, now=now, lasts=s.change_alert_seconds
                )
                tx.enqueue(
                    ALERTMANAGER,
                    [notice],
                    key=f"change:{c.change_id}",
                    coalesce=alertmanager.coalesce,
                )
                enqueued[ALERTMANAGER] += 1
        if news and SLACK in self._senders:
            payload = slack.change_message(news, public_url=s.public_url)
            tx.enqueue(SLACK, payload, key=f"changes:{news[0].change_id}")
            enqueued[SLACK] += 1
        tx.mark_noticed(c.change_id for c in fresh)
        if news:
            self.metrics.changes.inc(len(news))
        return enqueued

    def _slack_may_send(
        self, tx: OutboxTransaction, waiting: list[AlertState], now: datetime
    ) -> bool:
        """Whether the group waited long enough and the rate limit allows one more message."""
        s = self.settings
        if not waiting:
            return False
        oldest = min(w.slack_since or now for w in waiting)
        if now - oldest < timedelta(seconds=s.group_wait):
            return False
        return (
            tx.created_since(SLACK, now - timedelta(seconds=s.slack_rate_interval), unkeyed=True)
            < s.slack_max_messages  # else held back: they fold into the next message
        )

    def _flush_slack(
        self,
        tx: OutboxTransaction,
        records: dict[int, AnomalyRecord],
        now: datetime,
        victims: Callable[[AnomalyRecord], Sequence[str]],
    ) -> list[AnomalyRecord]:
        """One message for every anomaly waiting, once the group waited long enough and the
        rate limit allows; returns the anomalies in it (none: nothing was enqueued)."""
        s = self.settings
        waiting = [w for w in tx.slack_waiting() if w.anomaly_id in records]
        if not self._slack_may_send(tx, waiting, now):
            return []
        group = [records[w.anomaly_id] for w in waiting]
        payload = slack.message(
            group, public_url=s.public_url, detail_limit=s.slack_detail_limit, victims=victims
        )
        message_id = tx.enqueue(SLACK, payload)
        for w in waiting:
            # the message says whether it is still going on: one that is over is told in full
            done = SLACK_SENT if records[w.anomaly_id].ongoing else SLACK_CLOSED
            tx.put(replace(w, slack=done, slack_since=now, slack_message=message_id))
        return group

    def _flush_slack_over(
        self, tx: OutboxTransaction, records: dict[int, AnomalyRecord], now: datetime
    ) -> list[AnomalyRecord]:
        """One "is over" notice for the anomalies that ended after their message, once that
        message was delivered (never the end before the start), grouped and rate-limited like
        the messages; returns the anomalies in it."""
        closing = [w for w in tx.slack_waiting(SLACK_CLOSING) if w.anomaly_id in records]
        unsent = tx.pending_among(w.slack_message for w in closing if w.slack_message is not None)
        ready = [  # (one that grew again waits until it is over again)
            w
            for w in closing
            if w.slack_message not in unsent and not records[w.anomaly_id].ongoing
        ]
        if not self._slack_may_send(tx, ready, now):
            return []
        group = [records[w.anomaly_id] for w in ready]
        tx.enqueue(SLACK, slack.over_message(group, public_url=self.settings.public_url))
        for w in ready:
            tx.put(replace(w, slack=SLACK_CLOSED, slack_since=now))
        return group

    # ------------------------------------------------------------------------------ deliver

    def deliver(self) -> int:
        """Send the messages that are due; returns how many were delivered.

        A failure is recorded on its row (attempts, last error) and retried after a capped,
        jittered exponential backoff (longer if the receiver asked, HTTP 429); never dropped.
        """
        with self._deliver_lock:
            items = self.outbox.due(
                self._now(), lease=self._lease, limit=self.settings.batch_size, sinks=self._senders
            )
            # Alertmanager takes a list of alerts: one POST carries every due alert. Each
            # Slack message is its own POST.
            batches = [[i for i in items if i.sink == ALERTMANAGER]]
            batches += [[i] for i in items if i.sink != ALERTMANAGER]
            delivered = sum(self._send(batch) for batch in batches if batch)
            self._purge()
        self._refresh_pending()
        return delivered

    def _purge(self) -> None:
        """Forget delivered messages older than the retention, at most once an hour."""
        now = self._now()
        if self._purged_at is None or now - self._purged_at >= _PURGE_EVERY:
            self._purged_at = now
            self.outbox.purge(now - timedelta(seconds=self.settings.retention))

    def _notified(self, key: str, wanted: set[alertmanager.LabelSet]) -> set[alertmanager.LabelSet]:
        """The label sets of alert ``key`` that a delivered message told Alertmanager were
        firing, read newest first until ``wanted`` are all found."""
        found: set[alertmanager.LabelSet] = set()
        before: int | None = None
        while True:
            page = self.outbox.delivered(ALERTMANAGER, key, before_id=before, limit=_PAGE)
            for item in page:
                if item.delivered_at is not None and _alerts(item.payload):
                    found |= alertmanager.firing_labels(item.payload, item.delivered_at)
            if wanted <= found or len(page) < _PAGE:
                return found
            before = page[-1].id

    def _fire_first(
        self, batch: list[OutboxItem], now: datetime
    ) -> tuple[dict[int, Any], list[FollowUp]]:
        """Alertmanager: the payloads to send instead (alerts it never saw firing, sent
        firing first) and the resolved alerts that follow after ``firing_hold``."""
        if batch[0].sink != ALERTMANAGER:
            return {}, []
        until = now + timedelta(seconds=self.settings.firing_hold)
        sent: dict[int, Any] = {}
        follow_ups: list[FollowUp] = []
        for item in batch:
            if item.key is None or not _alerts(item.payload):
                continue
            if all(alertmanager.is_firing(x, now) for x in item.payload):
                continue  # the common case: nothing resolved in it
            wanted = {alertmanager.identity_of(x) for x in item.payload}
            send, later = alertmanager.hold_unnotified(
                item.payload, self._notified(item.key, wanted), now=now, until=until
            )
            if later:
                sent[item.id] = send
                follow_ups.append(FollowUp(ALERTMANAGER, item.key, later, until))
        return sent, follow_ups

    def _send(self, batch: list[OutboxItem]) -> int:
        """POST one batch of one sink; returns how many messages were delivered."""
        sink = batch[0].sink
        sent, follow_ups = self._fire_first(batch, self._now())
        payloads = [sent.get(item.id, item.payload) for item in batch]
        payload = payloads[0] if len(batch) == 1 else [a for p in payloads for a in p]
        try:
            self._senders[sink].send(payload)
        except DeliveryError as exc:
            if exc.rejected and len(batch) > 1:  # one bad alert must not hold back the rest
                return sum(self._send([item]) for item in batch)
            for item in batch:
                self._failed(item, str(exc), exc.retry_after)
            return 0
        except Exception as exc:  # a bug must not wedge the rows: record it and retry later
            log.exception("sending %d %s message(s) failed unexpectedly", len(batch), sink)
            for item in batch:
                self._failed(item, f"{type(exc).__name__}: {exc}", None)
            return 0
        self.outbox.mark_delivered(
            [item.id for item in batch], self._now(), sent=sent, follow_ups=follow_ups
        )
        for f in follow_ups:
            log.info(
                "alert %s reached Alertmanager firing for the first time after it ended; "
                "resolving it at %s",
                f.key,
                f.due.isoformat(),
            )
        self.metrics.deliveries.labels(sink, "success").inc(len(batch))
        return len(batch)

    def _failed(self, item: OutboxItem, error: str, retry_after: float | None) -> None:
        s = self.settings
        retry_at = self.outbox.mark_failed(
            item.id,
            self._now(),
            error,
            initial=s.backoff_initial,
            cap=s.backoff_max,
            rng=self._rng,
            retry_after=retry_after,
        )
        self.metrics.deliveries.labels(item.sink, "failure").inc()
        log.warning(
            "delivering %s message %d failed (attempt %d): %s; next try at %s",
            item.sink,
            item.id,
            item.attempts + 1,
            error,
            retry_at.isoformat() if retry_at else "never (superseded)",
        )

    def _refresh_pending(self) -> None:
        counts = self.outbox.pending()
        for sink in sorted(set(self._senders) | set(counts)):
            self.metrics.pending.labels(sink).set(counts.get(sink, 0))

    # ---------------------------------------------------------------------------------- run

    def run(self, stop: threading.Event, interval: float = 1.0) -> None:
        """Sync and deliver every ``interval`` seconds until ``stop`` is set (for a thread)."""
        while not stop.is_set():
            try:
                self.sync()
                self.deliver()
            except Exception:  # the database may be busy or gone for a moment: keep going
                log.exception("alerting pass failed; trying again in %.1f s", interval)
            stop.wait(interval)

    def close(self) -> None:
        """Release the outbox's connections and the HTTP client if the alerter made it."""
        self.outbox.close()
        if self._own_http:
            self._http.close()

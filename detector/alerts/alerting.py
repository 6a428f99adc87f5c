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
"""

from __future__ import annotations

import logging
import random
import threading
from collections import Counter as Tally
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Final, Self

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge

from netwarden.detector.alerts import alertmanager, slack
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
from netwarden.detector.lifecycle import ACKNOWLEDGED, OPEN, RESOLVED, SUPPRESSED
from netwarden.detector.store import AnomalyRecord, AnomalyStore

__all__ = ["ALERTMANAGER", "SLACK", "AlertMetrics", "AlertSettings", "Alerter", "decide"]

log = logging.getLogger(__name__)

ALERTMANAGER: Final = "alertmanager"
SLACK: Final = "slack"
_CURSOR: Final = "anomalies"
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
        if not isinstance(self.slack_send_resolved, bool):
            raise ValueError(
                f"slack_send_resolved must be a boolean, got {self.slack_send_resolved!r}"
            )
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
) -> tuple[AlertState, list[dict[str, Any]]]:
    """The anomaly's new alert state and the Alertmanager alerts it owes now (pure).

    Slack messages are not built here: an anomaly only joins the waiting list, which
    :meth:`Alerter.sync` flushes as one message (see the module docstring).
    """
    state = old or AlertState(anomaly_id=a.id)
    live = a.ongoing and a.state in (OPEN, ACKNOWLEDGED)
    alerts: list[dict[str, Any]] = []
    url = settings.public_url
    if to_alertmanager:
        want = alertmanager.labels(a)
        if live:
            if state.am_firing and state.am_labels is not None and state.am_labels != want:
                alerts.append(
                    alertmanager.alert(a, public_url=url, ends_at=now, alert_labels=state.am_labels)
                )
            resend = timedelta(seconds=settings.resend_interval)
            if (
                alerts
                or not state.am_firing
                or state.am_sent_at is None
                or now - state.am_sent_at >= resend
            ):
                alerts.append(
                    alertmanager.alert(
                        a, public_url=url, ends_at=now + settings.resend_lifetime * resend
                    )
                )
                state = replace(state, am_labels=want, am_firing=True, am_sent_at=now)
        elif state.am_firing:
            alerts.append(
                alertmanager.alert(
                    a, public_url=url, ends_at=_ended_at(a, now), alert_labels=state.am_labels
                )
            )
            state = replace(state, am_firing=False, am_sent_at=now)
        elif old is None and a.state == OPEN:  # over before it was seen: resolved at once,
            # which delivery turns into "firing, then resolved" (see the module docstring)
            alerts.append(alertmanager.alert(a, public_url=url, ends_at=_ended_at(a, now)))
            state = replace(state, am_labels=want, am_sent_at=now)
    if to_slack:
        if state.slack == SLACK_NONE and a.state == OPEN and (a.ongoing or old is None):
            state = replace(state, slack=SLACK_WAITING, slack_since=now)
        elif state.slack == SLACK_WAITING and a.state != OPEN:
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
    ) -> None:
        self.store = store
        self.settings = settings
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
        self._refresh_pending()

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
            records, newest = self._changes(cursor, now)  # store reads: outside the outbox's
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
                    group = self._flush_slack(tx, records, now)
                    over = self._flush_slack_over(tx, records, now)
                enqueued[SLACK] += bool(group) + bool(over)
                if newest is not None and (cursor is None or newest > cursor):
                    tx.set_cursor(_CURSOR, newest)
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
            tx.created_since(SLACK, now - timedelta(seconds=s.slack_rate_interval))
            < s.slack_max_messages  # else held back: they fold into the next message
        )

    def _flush_slack(
        self, tx: OutboxTransaction, records: dict[int, AnomalyRecord], now: datetime
    ) -> list[AnomalyRecord]:
        """One message for every anomaly waiting, once the group waited long enough and the
        rate limit allows; returns the anomalies in it (none: nothing was enqueued)."""
        s = self.settings
        waiting = [w for w in tx.slack_waiting() if w.anomaly_id in records]
        if not self._slack_may_send(tx, waiting, now):
            return []
        group = [records[w.anomaly_id] for w in waiting]
        payload = slack.message(group, public_url=s.public_url, detail_limit=s.slack_detail_limit)
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

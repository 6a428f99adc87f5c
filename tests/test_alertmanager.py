"""Alerts through the real Alertmanager, read back through its own API (GET /api/v2/alerts).

Alertmanager judges firing and resolved by its own wall clock, so these tests place windows
just before the real time and start the injected clock there.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from netwarden.detector.alerts import alertmanager
from netwarden.detector.alerts.alerting import ALERTMANAGER, Alerter, AlertSettings
from netwarden.detector.alerts.outbox import DELIVERED, PENDING
from netwarden.detector.results import ScoredWindow
from netwarden.detector.store import AnomalyStore
from tests.servers import Server, WebhookReceiver, free_port, start_alertmanager
from tests.test_alerts import PUBLIC, STEP, Clock, win

NOW = datetime.now(UTC).replace(second=0, microsecond=0)


def live(i: int, identity: str = "shop/cart", **kwargs: Any) -> ScoredWindow:
    """Window ``i`` of a run whose window 0 ended just now (i <= 0 is in the past)."""
    w = win(0, identity, **kwargs)
    start = NOW - STEP + i * STEP
    return replace(w, window_start=start, window_end=start + STEP)


@pytest.fixture
def am(tmp_path) -> Iterator[Server]:
    with start_alertmanager(tmp_path / "alertmanager") as server:
        yield server


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime.now(UTC))


@pytest.fixture
def store(tmp_path, clock) -> Iterator[AnomalyStore]:
    with AnomalyStore(f"sqlite:///{tmp_path / 'netwarden.db'}", now=clock) as s:
        yield s


def settings_for(url: str) -> AlertSettings:
    return AlertSettings(
        alertmanager_url=url,
        public_url=PUBLIC,
        resend_interval=60,
        backoff_initial=1,
        backoff_max=4,
        request_timeout=2,
    )


def active(server: Server, anomaly_id: int | None = None) -> list[dict[str, Any]]:
    """The alerts Alertmanager holds as active (resolved ones are not listed)."""
    params = {"filter": f'anomaly_id="{anomaly_id}"'} if anomaly_id is not None else {}
    response = httpx.get(f"{server.url}/api/v2/alerts", params=params, timeout=5)
    response.raise_for_status()
    return response.json()


def test_alert_is_read_back_then_resolved(am, store, clock) -> None:
    with Alerter(store, settings_for(am.url), now=clock) as alerter:
        (a,) = store.record([live(-2), live(-1), live(0)])
        assert alerter.sync() == {ALERTMANAGER: 1} and alerter.deliver() == 1
        (got,) = active(am, a.id)
        assert (
            got["labels"]
            == alertmanager.labels(a)
            == {
                "alertname": "NetworkAnomaly",
                "severity": "warning",
                "namespace": "shop",
                "workload": "cart",
                "identity": "shop/cart",
                "detector": "netwarden",
                "anomaly_id": str(a.id),
            }
        )
        assert got["annotations"]["summary"] == a.summary
        assert got["annotations"]["description"].startswith(
            "contacted 212 distinct destination ports (baseline 3); contacted 38 peers"
        )
        assert got["generatorURL"] == f"{PUBLIC}/api/v1/anomalies/{a.id}"
        assert got["status"]["state"] == "active"
        assert got["startsAt"] == alertmanager.timestamp(NOW - 3 * STEP)
        assert got["endsAt"] == alertmanager.timestamp(clock() + 4 * STEP)
        store.record([replace(live(1), score=0.3, anomalous=False)])  # the run ends
        assert alerter.sync() == {ALERTMANAGER: 1} and alerter.deliver() == 1
        assert active(am, a.id) == []  # endsAt in the past: resolved
        assert active(am) == []


def test_resend_keeps_the_alert_alive(am, store, clock) -> None:
    with Alerter(store, settings_for(am.url), now=clock) as alerter:
        (a,) = store.record([live(0)])
        alerter.sync()
        alerter.deliver()
        first = active(am, a.id)[0]["endsAt"]
        clock.advance(seconds=60)
        assert alerter.sync() == {ALERTMANAGER: 1} and alerter.deliver() == 1
        (again,) = active(am, a.id)
        assert again["endsAt"] == alertmanager.timestamp(clock() + 4 * STEP) != first
        assert again["startsAt"] == alertmanager.timestamp(NOW - STEP)  # the same alert


def test_suppression_and_escalation_in_alertmanager(am, store, clock) -> None:
    with Alerter(store, settings_for(am.url), now=clock) as alerter:
        (a,) = store.record([live(0, "shop/a")])
        (b,) = store.record([live(0, "shop/b", score=1.5)])
        alerter.sync()
        alerter.deliver()
        assert {x["labels"]["identity"] for x in active(am)} == {"shop/a", "shop/b"}
        store.suppress(a.id, actor="alice", until=clock() + timedelta(hours=1), reason="test")
        store.record([live(1, "shop/b", score=3.0)])  # escalates to critical
        assert alerter.sync() == {ALERTMANAGER: 2} and alerter.deliver() == 2
        assert active(am, a.id) == []  # suppressed: resolved
        (crit,) = active(am, b.id)  # the warning alert is resolved, the critical one fires
        assert crit["labels"]["severity"] == "critical"


def test_delivery_while_alertmanager_is_down_succeeds_after_it_starts(
    store, clock, tmp_path
) -> None:
    port = free_port()
    with Alerter(store, settings_for(f"http://127.0.0.1:{port}"), now=clock) as alerter:
        (a,) = store.record([live(0)])
        alerter.sync()
        assert alerter.deliver() == 0
        (item,) = alerter.outbox.items()
        assert (item.status, item.attempts) == (PENDING, 1) and item.last_error
        with start_alertmanager(tmp_path / "late", port=port) as am:
            assert alerter.deliver() == 0  # not due yet: backoff
            clock.t = item.next_attempt_at
            assert alerter.sync() == {}  # still owed, not owed twice
            assert alerter.deliver() == 1
            assert alerter.outbox.items()[0].status == DELIVERED
            (got,) = active(am, a.id)
            assert got["labels"]["identity"] == "shop/cart"


def test_an_alert_alertmanager_rejects_does_not_hold_back_the_others(am, store, clock) -> None:
    with Alerter(store, settings_for(am.url), now=clock) as alerter:
        (a,) = store.record([live(0)])
        alerter.sync()
        (good,) = alerter.outbox.items()
        bad = {**good.payload[0], "labels": {"not a label name": "x"}}
        with alerter.outbox.transaction(clock()) as tx:
            broken = tx.enqueue(ALERTMANAGER, [bad])
        assert alerter.deliver() == 1  # the batch was refused (400): each one on its own
        status = {i.id: (i.status, i.attempts) for i in alerter.outbox.items()}
        assert status == {good.id: (DELIVERED, 0), broken: (PENDING, 1)}
        assert "HTTP 400" in alerter.outbox.items()[1].last_error
        assert [x["labels"]["anomaly_id"] for x in active(am)] == [str(a.id)]


def test_an_anomaly_over_while_alertmanager_was_down_still_notifies(store, clock, tmp_path) -> None:
    """Alertmanager notifies nobody of an alert it only ever saw resolved: an anomaly that
    started and ended while it was down reaches it firing first, and a person is notified
    (its webhook receiver), then resolved; a restarted alerter owes nothing more."""
    port = free_port()
    with (
        WebhookReceiver() as hook,
        Alerter(store, settings_for(f"http://127.0.0.1:{port}"), now=clock) as alerter,
    ):
        (a,) = store.record([live(-1), live(0)])
        assert alerter.sync() == {ALERTMANAGER: 1} and alerter.deliver() == 0  # down
        clock.advance(seconds=20)
        store.record([replace(live(1), score=0.3, anomalous=False)])  # over, still down
        assert alerter.sync() == {ALERTMANAGER: 1}
        (owed,) = [i for i in alerter.outbox.items() if i.status == PENDING]
        assert alertmanager.is_firing(owed.payload[0], clock()) is False  # merged: resolved
        with start_alertmanager(tmp_path / "late", port=port, webhook_url=hook.url) as am:
            assert alerter.deliver() == 1
            (got,) = active(am, a.id)  # Alertmanager holds it firing ...
            assert got["status"]["state"] == "active"
            assert got["endsAt"] == alertmanager.timestamp(clock() + timedelta(seconds=360))
            seen = hook.wait_for(lambda ns: any(n["status"] == "firing" for n in ns))
            (told,) = [n for n in seen if n["status"] == "firing"]  # ... and notified it
            assert [x["labels"]["anomaly_id"] for x in told["alerts"]] == [str(a.id)]
            clock.advance(seconds=359)
            assert alerter.sync() == {} and alerter.deliver() == 0  # held firing
            clock.advance(seconds=1)
            assert alerter.sync() == {} and alerter.deliver() == 1  # then resolved
            assert active(am, a.id) == []
            seen = hook.wait_for(lambda ns: any(n["status"] == "resolved" for n in ns))
            assert [n["status"] for n in seen] == ["firing", "resolved"]
            resolved = seen[-1]["alerts"][0]
            ended = datetime.fromisoformat(resolved["endsAt"].replace("Z", "+00:00"))
            assert ended == NOW  # when it really ended
            clock.advance(minutes=10)
            with Alerter(store, settings_for(am.url), now=clock) as restarted:
                assert restarted.sync() == {} and restarted.deliver() == 0
            assert alerter.sync() == {} and alerter.deliver() == 0


def test_an_alert_delivered_firing_is_resolved_at_once(am, store, clock) -> None:
    """The usual case is unchanged: Alertmanager saw it firing, so the resolve goes as it is."""
    with WebhookReceiver() as hook, Alerter(store, settings_for(am.url), now=clock) as alerter:
        (a,) = store.record([live(0)])
        alerter.sync()
        assert alerter.deliver() == 1
        clock.advance(seconds=30)
        store.record([replace(live(1), score=0.3, anomalous=False)])
        assert alerter.sync() == {ALERTMANAGER: 1} and alerter.deliver() == 1
        assert [i.status for i in alerter.outbox.items()] == [DELIVERED, DELIVERED]
        assert active(am, a.id) == []
    assert hook.notifications == []  # (this Alertmanager routes to its null receiver)

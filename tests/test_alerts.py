"""Alerts: payloads, the per-anomaly lifecycle, grouping and rate limits, and durable delivery.

Alertmanager is the real one (tests/servers.py); Slack is a loopback stand-in that checks the
Block Kit structure like Slack does and fails on cue. Time is an injected clock shared by the
store and the alerter, so nothing here waits for backoffs or resend intervals.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from netwarden.detector.alerts import alertmanager, slack
from netwarden.detector.alerts.alerting import ALERTMANAGER, SLACK, Alerter, AlertSettings
from netwarden.detector.alerts.outbox import (
    DELIVERED,
    PENDING,
    SUPERSEDED,
    AlertState,
    OutboxItem,
    backoff_delay,
)
from netwarden.detector.change_store import ChangeStore
from netwarden.detector.explain import examples_text, summary
from netwarden.detector.results import Reason, ScoredWindow
from netwarden.detector.store import AnomalyRecord, AnomalyStore
from tests.servers import Server, free_port, start_alertmanager
from tests.test_change_store import new_workload_change, vendor_change

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
STEP = timedelta(seconds=60)
PUBLIC = "https://netwarden.example.org"

EXAMPLES = {
    "egress": {
        "to": [
            {"peer": "shop/catalog", "port": "TCP/8080", "flows": 41},
            {"peer": "world:203.0.113.9", "port": "TCP/443", "flows": 1200},
        ],
        "dns_names": ["x1.example.net"],
        "drop_reasons": {"POLICY_DENIED": 30},
    },
    "ingress": {"from": [], "dns_names": [], "drop_reasons": {}},
}


def win(
    i: int, identity: str = "shop/cart", *, score: float = 1.5, threshold: float = 1.0
) -> ScoredWindow:
    """Window ``i`` (T0 + i minutes) of ``identity``; anomalous when score > threshold."""
    namespace, workload = identity.split("/")
    reasons = (
        Reason(
            "egress_distinct_dst_ports",
            212.0,
            3.0,
            1.0,
            0.8,
            "contacted 212 distinct destination ports (baseline 3)",
        ),
        Reason("egress_distinct_peers", 38.0, 4.0, 1.0, 0.3, "contacted 38 peers (baseline 4)"),
        Reason("egress_tcp_resets", 90.0, 1.0, 1.0, 0.2, "saw 90 TCP resets (baseline 1)"),
        Reason("egress_flows", 5000.0, 300.0, 50.0, 0.1, "sent 5,000 flows (baseline 300)"),
    )
    start = T0 + i * STEP
    return ScoredWindow(
        identity=identity,
        namespace=namespace,
        workload=workload,
        window_start=start,
        window_end=start + STEP,
        score=score,
        threshold=threshold,
        anomalous=score > threshold,
        model=f"identity:{identity}",
        fallback=False,
        reasons=reasons,
        examples=EXAMPLES,
        summary=summary(workload, [r.text for r in reasons[:2]]),
    )


def normal(i: int, identity: str = "shop/cart") -> ScoredWindow:
    return win(i, identity, score=0.3)


class Clock:
    """An injectable clock that tests move by hand (the store and the alerter share it)."""

    def __init__(self, t: datetime = T0 + 10 * STEP) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t

    def advance(self, **kwargs: float) -> None:
        self.t += timedelta(**kwargs)


# ------------------------------------------------------------------------ the Slack stand-in

_BLOCK_TYPES = {"header", "section", "divider", "context", "actions", "image"}


def block_kit_problems(payload: Any) -> list[str]:
    """What Slack would reject (``invalid_blocks``) in an incoming-webhook payload."""
    problems: list[str] = []
    if (
        not isinstance(payload, dict)
        or not isinstance(payload.get("text"), str)
        or not payload["text"]
    ):
        return ["a non-empty top-level text (the notification fallback) is required"]
    blocks = payload.get("blocks")
    if not isinstance(blocks, list) or not 1 <= len(blocks) <= 50:
        return ["blocks must be a list of 1 to 50 blocks"]

    def text_object(obj: Any, where: str, limit: int, kinds: set[str]) -> None:
        if not isinstance(obj, dict) or obj.get("type") not in kinds:
            problems.append(f"{where}: a text object of type {sorted(kinds)} is required")
        elif not isinstance(obj.get("text"), str) or not 1 <= len(obj["text"]) <= limit:
            problems.append(f"{where}: text must have 1 to {limit} characters")

    for i, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind not in _BLOCK_TYPES:
            problems.append(f"block {i}: unknown type {kind!r}")
        elif kind == "header":
            text_object(block.get("text"), f"block {i} header", 150, {"plain_text"})
        elif kind == "section":
            if "text" not in block and "fields" not in block:
                problems.append(f"block {i}: a section needs text or fields")
            if "text" in block:
                text_object(block["text"], f"block {i} section", 3000, {"mrkdwn", "plain_text"})
            fields = block.get("fields", [])
            if len(fields) > 10:
                problems.append(f"block {i}: at most 10 fields")
            for j, f in enumerate(fields):
                text_object(f, f"block {i} field {j}", 2000, {"mrkdwn", "plain_text"})
        elif kind == "context":
            elements = block.get("elements", [])
            if not 1 <= len(elements) <= 10:
                problems.append(f"block {i}: a context has 1 to 10 elements")
            for j, e in enumerate(elements):
                text_object(e, f"block {i} element {j}", 3000, {"mrkdwn", "plain_text"})
    return problems


class SlackStandIn:
    """A Slack incoming webhook on loopback: accepts valid Block Kit messages (200 ``ok``),
    answers ``invalid_blocks`` like Slack otherwise, and fails on cue: each entry of
    ``failures`` answers one request (an HTTP status, or ``"timeout"``: no answer in time)."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []  # accepted, in arrival order
        self.requests = 0
        self.problems: list[list[str]] = []
        self.failures: deque[int | str] = deque()
        self.hang = threading.Event()  # set at teardown: a hanging answer stops waiting
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                stand_in.requests += 1
                failure = stand_in.failures.popleft() if stand_in.failures else None
                if failure == "timeout":
                    stand_in.hang.wait(5.0)  # longer than the client's timeout
                    return self._answer(500, "too late")
                if failure == 429:
                    return self._answer(429, "rate_limited", {"Retry-After": "30"})
                if isinstance(failure, int):
                    return self._answer(failure, "internal_error")
                payload = json.loads(body)
                problems = block_kit_problems(payload)
                if problems:
                    stand_in.problems.append(problems)
                    return self._answer(400, "invalid_blocks")
                stand_in.messages.append(payload)
                self._answer(200, "ok")

            def _answer(
                self, status: int, text: str, headers: dict[str, str] | None = None
            ) -> None:
                data = text.encode()
                try:
                    self.send_response(status)
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.send_header("content-type", "text/plain")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (timeout): nobody is listening
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/T000/B000/XXX"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.hang.set()
        self.server.shutdown()
        self.server.server_close()


# ----------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def am_server(tmp_path_factory) -> Iterator[Server]:
    with start_alertmanager(tmp_path_factory.mktemp("alertmanager")) as server:
        yield server


@pytest.fixture
def slack_in() -> Iterator[SlackStandIn]:
    stand_in = SlackStandIn()
    yield stand_in
    stand_in.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'netwarden.db'}"


@pytest.fixture
def store(db_url, clock) -> Iterator[AnomalyStore]:
    with AnomalyStore(db_url, now=clock) as s:
        yield s


@pytest.fixture
def settings(am_server, slack_in) -> AlertSettings:
    return AlertSettings(
        alertmanager_url=am_server.url,
        slack_webhook_url=slack_in.url,
        public_url=PUBLIC,
        resend_interval=60,
        group_wait=0,
        slack_max_messages=5,
        slack_rate_interval=600,
        backoff_initial=1,
        backoff_max=8,
        request_timeout=0.5,
    )


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def alerter(store, settings, clock, registry) -> Iterator[Alerter]:
    with Alerter(store, settings, registry=registry, now=clock, rng=random.Random(7)) as a:
        yield a


def rows(alerter: Alerter, sink: str) -> list[OutboxItem]:
    return alerter.outbox.items(sink)


def only(alerts: list[dict[str, Any]]) -> dict[str, Any]:
    (one,) = alerts
    return one


def ts(t: datetime) -> str:
    return alertmanager.timestamp(t)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


# ----------------------------------------------------------------------------------- payloads


def test_alertmanager_alert_structure(store, clock) -> None:
    (a,) = store.record([win(0, score=3.0), win(1, score=2.5)])
    firing = alertmanager.alert(a, public_url=PUBLIC + "/", ends_at=clock() + 4 * STEP)
    assert firing["labels"] == {
        "alertname": "NetworkAnomaly",
        "severity": "critical",
        "namespace": "shop",
        "workload": "cart",
        "identity": "shop/cart",
        "detector": "netwarden",
        "anomaly_id": str(a.id),
    }
    notes = firing["annotations"]
    assert notes["summary"] == a.summary and "212 distinct destination ports" in notes["summary"]
    assert notes["description"] == (
        "contacted 212 distinct destination ports (baseline 3); contacted 38 peers "
        "(baseline 4); saw 90 TCP resets (baseline 1) (and 1 more)"
    )  # the top three
    assert (notes["score"], notes["windows"], notes["state"]) == ("3", "2", "open")
    assert firing["startsAt"] == "2026-03-01T12:00:00.000Z"  # first window
    assert firing["endsAt"] == ts(clock() + 4 * STEP)
    assert firing["generatorURL"] == f"{PUBLIC}/api/v1/anomalies/{a.id}"
    assert all(isinstance(v, str) for v in [*firing["labels"].values(), *notes.values()])
    warning = replace(a, peak_score=1.99)
    assert alertmanager.labels(warning)["severity"] == "warning"
    # a resolved alert never ends before it starts, and keeps the labels it was sent with
    old = {**firing["labels"], "severity": "warning"}
    resolved = alertmanager.alert(a, public_url=PUBLIC, ends_at=T0 - STEP, alert_labels=old)
    assert resolved["labels"] == old and resolved["endsAt"] == resolved["startsAt"]


def test_coalesce_keeps_the_newest_state_of_each_alert() -> None:
    def al(sev: str, ends: str) -> dict[str, Any]:
        return {"labels": {"alertname": "x", "severity": sev}, "endsAt": ends}

    older = [al("warning", "resolved@1"), al("critical", "firing@1")]
    newer = [al("critical", "firing@2")]
    assert alertmanager.coalesce(older, newer) == [
        al("warning", "resolved@1"),
        al("critical", "firing@2"),
    ]


def test_slack_message_for_one_anomaly(store) -> None:
    (a,) = store.record([win(0, score=3.0)])
    msg = slack.message([a], public_url=PUBLIC)
    assert block_kit_problems(msg) == []
    assert "shop/cart" in msg["text"] and "critical" in msg["text"]
    text = json.dumps(msg["blocks"])
    header = msg["blocks"][0]
    assert header["type"] == "header" and "shop/cart" in header["text"]["text"]
    sections = [b["text"]["text"] for b in msg["blocks"] if b["type"] == "section" and "text" in b]
    what, why, flows = sections
    assert "*cart*" in what and "`shop`" in what and a.summary in what  # what, which workload
    assert why.splitlines() == [
        "*Why*",
        "• contacted 212 distinct destination ports (baseline 3)",
        "• contacted 38 peers (baseline 4)",
        "• saw 90 TCP resets (baseline 1)",
    ]
    assert flows == "*Example flows*\n" + examples_text(EXAMPLES, "egress")
    assert f"<{PUBLIC}/api/v1/anomalies/{a.id}|Anomaly #{a.id}>" in text  # the link


def test_slack_message_escapes_mrkdwn(store) -> None:
    w = replace(win(0), summary="cart sent <script> & friends")
    (a,) = store.record([w])
    msg = slack.message([a], public_url=PUBLIC)
    assert "&lt;script&gt; &amp; friends" in json.dumps(msg) and "<script>" not in json.dumps(msg)


def test_slack_digest_counts_every_anomaly(store) -> None:
    created = store.record([win(0, f"ns{k % 4}/w{k}", score=1.2 + k / 10) for k in range(40)])
    msg = slack.message(created, public_url=PUBLIC, detail_limit=3)
    assert block_kit_problems(msg) == []
    text = json.dumps(msg)
    assert msg["text"].startswith("40 network anomalies (") and "*40 anomalies*" in text
    crit = sum(a.peak_score >= 2.0 for a in created)
    assert f"{crit} critical, {40 - crit} warning" in text
    links = re.findall(r"/api/v1/anomalies/(\d+)\|", text)
    assert len(links) == 10 and "and 30 more" in text
    top = max(created, key=lambda a: a.peak_score)
    assert links[0] == str(top.id)  # most severe first


def test_a_small_group_is_shown_in_full(store) -> None:
    created = store.record([win(0, f"shop/w{k}") for k in range(3)])
    msg = slack.message(created, public_url=PUBLIC, detail_limit=3)
    assert block_kit_problems(msg) == []
    assert sum(b["type"] == "divider" for b in msg["blocks"]) == 2
    assert all(f"Anomaly #{a.id}>" in json.dumps(msg) for a in created)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("resend_interval", 0),
        ("resend_lifetime", 1),
        ("resend_lifetime", 2.5),
        ("group_wait", -1),
        ("slack_max_messages", 0),
        ("slack_detail_limit", 9),
        ("backoff_initial", 0),
        ("request_timeout", 0),
        ("batch_size", True),
        ("alertmanager_url", "127.0.0.1:9093"),
        ("public_url", "ftp://x"),
        ("public_url", ""),
    ],
)
def test_settings_refuse_bad_values(name, value) -> None:
    with pytest.raises(ValueError, match=name):
        AlertSettings(**{name: value})
    with pytest.raises(ValueError, match="backoff_max"):
        AlertSettings(backoff_initial=10, backoff_max=5)


def test_backoff_doubles_is_jittered_and_capped() -> None:
    rng = random.Random(1)
    for attempts in range(1, 40):
        base = min(300.0, 2.0 ** (attempts - 1))
        delays = [backoff_delay(attempts, initial=1.0, cap=300.0, rng=rng) for _ in range(50)]
        assert all(base / 2 <= d <= base for d in delays)
        assert len(set(delays)) > 1  # jittered
    with pytest.raises(ValueError):
        backoff_delay(0, initial=1.0, cap=2.0, rng=rng)


# ---------------------------------------------------------------------------------- lifecycle


def test_open_anomaly_fires_and_sends_one_message(
    alerter, store, clock, slack_in, registry
) -> None:
    (a,) = store.record([win(0), win(1)])
    assert alerter.sync() == {ALERTMANAGER: 1, SLACK: 1}
    (am,) = rows(alerter, ALERTMANAGER)
    firing = only(am.payload)
    assert firing["labels"]["anomaly_id"] == str(a.id)
    assert firing["endsAt"] == ts(clock() + 4 * STEP)  # a few resend intervals ahead
    assert alerter.sync() == {}  # idempotent
    assert alerter.deliver() == 2
    assert [i.status for i in alerter.outbox.items()] == [DELIVERED, DELIVERED]
    assert len(slack_in.messages) == 1 and slack_in.problems == []
    assert (
        sample(registry, "netwarden_alert_deliveries_total", sink="slack", outcome="success") == 1
    )
    assert sample(registry, "netwarden_alert_outbox_pending", sink="alertmanager") == 0
    assert alerter.sync() == {} and alerter.deliver() == 0
    (more,) = store.record([win(2)])  # the same incident grows: still one message
    assert more.id == a.id and alerter.sync() == {}
    assert alerter.outbox.state(a.id) == AlertState(
        anomaly_id=a.id,
        am_labels=alertmanager.labels(more),
        am_firing=True,
        am_sent_at=clock(),
        slack="sent",
        slack_since=clock(),
        slack_message=rows(alerter, SLACK)[0].id,
    )


def test_firing_alert_is_resent_every_resend_interval(alerter, store, clock) -> None:
    store.record([win(0)])
    alerter.sync()
    alerter.deliver()
    clock.advance(seconds=59)
    store.record([win(1)])
    assert alerter.sync() == {}
    clock.advance(seconds=1)
    assert alerter.sync() == {ALERTMANAGER: 1}
    assert alerter.sync() == {}
    resent = only(rows(alerter, ALERTMANAGER)[-1].payload)
    assert resent["endsAt"] == ts(clock() + 4 * STEP)
    assert resent["annotations"]["windows"] == "2"
    clock.advance(seconds=60)
    assert alerter.sync() == {ALERTMANAGER: 1}  # the undelivered re-send is superseded
    assert alerter.deliver() == 1
    assert [i.status for i in rows(alerter, ALERTMANAGER)] == [DELIVERED, SUPERSEDED, DELIVERED]
    assert len(rows(alerter, SLACK)) == 1


def test_ended_anomaly_is_resolved_once(alerter, store, clock) -> None:
    (a,) = store.record([win(0), win(1)])
    alerter.sync()
    clock.advance(seconds=30)
    store.record([normal(2)])  # the run ends
    assert alerter.sync() == {ALERTMANAGER: 1}
    resolved = only(rows(alerter, ALERTMANAGER)[-1].payload)
    assert resolved["endsAt"] == ts(T0 + 2 * STEP)  # when its last anomalous window ended
    assert resolved["labels"] == alertmanager.labels(a)
    clock.advance(minutes=10)
    assert alerter.sync() == {}  # no re-sends once resolved
    assert alerter.deliver() == 2  # the message, and the resolve that superseded the firing
    # ... which Alertmanager never saw firing: it goes out firing, the resolve follows later
    first, sent, follow_up = rows(alerter, ALERTMANAGER)
    assert [first.status, sent.status, follow_up.status] == [SUPERSEDED, DELIVERED, PENDING]
    assert only(sent.payload)["endsAt"] == ts(clock() + timedelta(seconds=360))
    assert only(follow_up.payload) == resolved and follow_up.next_attempt_at == clock() + 360 * (
        STEP / 60
    )
    assert len(rows(alerter, SLACK)) == 1


def test_resolving_by_hand_resolves_the_alert(alerter, store, clock) -> None:
    (a,) = store.record([win(0)])
    alerter.sync()
    clock.advance(seconds=20)
    store.resolve(a.id, actor="alice", note="fixed")
    assert alerter.sync() == {ALERTMANAGER: 1}
    assert only(rows(alerter, ALERTMANAGER)[-1].payload)["endsAt"] == ts(clock())


def test_suppressed_anomaly_sends_nothing(alerter, store, clock) -> None:
    (a,) = store.record([win(0)])
    store.suppress(a.id, actor="alice", until=clock() + timedelta(hours=1), reason="load test")
    store.record([win(1)])  # it grows, still suppressed
    assert alerter.sync() == {}
    clock.advance(minutes=30)
    assert alerter.sync() == {} and alerter.outbox.items() == []


def test_suppressing_a_firing_alert_resolves_it(alerter, store, clock, slack_in) -> None:
    (a,) = store.record([win(0)])
    alerter.sync()
    alerter.deliver()
    clock.advance(seconds=15)
    store.suppress(a.id, actor="alice", until=clock() + timedelta(minutes=5), reason="deploy")
    assert alerter.sync() == {ALERTMANAGER: 1}
    assert only(rows(alerter, ALERTMANAGER)[-1].payload)["endsAt"] == ts(clock())
    clock.advance(minutes=2)
    store.record([win(1)])
    assert alerter.sync() == {}  # suppressed: no re-sends, no Slack
    clock.advance(minutes=4)  # the suppression expires while the anomaly still goes on
    store.record([win(2)])
    assert alerter.sync() == {ALERTMANAGER: 1}  # it fires again ...
    assert alerter.outbox.state(a.id).am_firing
    alerter.deliver()
    assert len(slack_in.messages) == 1  # ... but the incident already had its message


def test_acknowledged_anomaly_keeps_firing_without_slack(
    alerter, store, clock, slack_in, settings
) -> None:
    with Alerter(store, replace(settings, group_wait=30), now=clock) as grouped:
        (a,) = store.record([win(0, "shop/a")])
        assert grouped.sync() == {ALERTMANAGER: 1}  # Slack waits for the group
        store.acknowledge(a.id, actor="alice")  # seen before the message went out
        clock.advance(seconds=60)
        assert grouped.sync() == {ALERTMANAGER: 1}  # re-sent: still firing in Alertmanager
        ack = only(rows(grouped, ALERTMANAGER)[-1].payload)
        assert ack["annotations"]["state"] == "acknowledged"
        assert rows(grouped, SLACK) == []
        (b,) = store.record([win(1, "shop/b")])
        assert grouped.sync() == {ALERTMANAGER: 1}
        clock.advance(seconds=30)
        assert grouped.sync() == {SLACK: 1}
        store.acknowledge(b.id, actor="bob")
        store.record([win(2, "shop/b")])
        clock.advance(seconds=60)
        assert grouped.sync() == {ALERTMANAGER: 2}  # both keep firing
        grouped.deliver()
        assert grouped.outbox.pending() == {}
    assert len(slack_in.messages) == 1 and f"#{b.id}" in json.dumps(slack_in.messages[0])


def test_severity_change_resolves_the_old_alert(alerter, store, clock) -> None:
    (a,) = store.record([win(0, score=1.5)])
    alerter.sync()
    warning = alertmanager.labels(a)
    clock.advance(seconds=10)
    store.record([win(1, score=3.0)])
    assert alerter.sync() == {ALERTMANAGER: 1}
    old, new = rows(alerter, ALERTMANAGER)[-1].payload
    assert (old["labels"], old["endsAt"]) == (warning, ts(clock()))
    assert (new["labels"]["severity"], new["endsAt"]) == ("critical", ts(clock() + 4 * STEP))
    assert rows(alerter, ALERTMANAGER)[0].status == SUPERSEDED  # never delivered: merged


def test_pending_alert_is_superseded_by_its_newer_state(alerter, store, clock, registry) -> None:
    store.record([win(0)])
    alerter.sync()
    clock.advance(seconds=60)
    alerter.sync()  # re-send while the first is still pending
    clock.advance(seconds=5)
    store.record([normal(1)])
    alerter.sync()
    first, second, third = rows(alerter, ALERTMANAGER)
    assert (first.status, first.superseded_by) == (SUPERSEDED, second.id)
    assert (second.status, third.status) == (SUPERSEDED, PENDING)
    assert only(third.payload)["endsAt"] == ts(T0 + STEP)  # only the resolve is left to send
    assert sample(registry, "netwarden_alert_messages_superseded_total", sink="alertmanager") == 2
    assert sample(registry, "netwarden_alert_outbox_pending", sink="alertmanager") == 1


def test_first_start_looks_back_only_so_far(store, settings, clock) -> None:
    store.record([win(0, "old/x"), normal(1, "old/x")])  # ended long before alerts existed
    clock.advance(hours=2)
    store.record([win(130, "new/y")])
    with Alerter(store, settings, now=clock) as a:
        assert a.sync() == {ALERTMANAGER: 1, SLACK: 1}
        assert "new/y" in json.dumps(rows(a, SLACK)[0].payload)
        assert "old/x" not in json.dumps(rows(a, SLACK)[0].payload)


def test_a_burst_that_ended_before_it_was_seen_fires_then_resolves(
    alerter, store, clock, slack_in
) -> None:
    (a,) = store.record([win(0), normal(1)])  # one batch: opened and ended
    assert alerter.sync() == {ALERTMANAGER: 1, SLACK: 1}
    assert only(rows(alerter, ALERTMANAGER)[0].payload)["endsAt"] == ts(T0 + STEP)  # resolved
    assert alerter.deliver() == 2
    sent, follow_up = rows(alerter, ALERTMANAGER)
    assert only(sent.payload)["endsAt"] == ts(clock() + timedelta(seconds=360))  # sent firing
    assert only(follow_up.payload)["endsAt"] == ts(T0 + STEP)  # then resolved
    assert alerter.outbox.state(a.id).slack == "closed"  # its message said it had ended
    clock.advance(seconds=359)
    assert alerter.sync() == {} and alerter.deliver() == 0
    clock.advance(seconds=1)
    assert alerter.sync() == {} and alerter.deliver() == 1
    clock.advance(hours=1)
    assert alerter.sync() == {} and alerter.deliver() == 0  # nothing more, ever
    assert [i.status for i in alerter.outbox.items()] == [DELIVERED, DELIVERED, DELIVERED]
    assert len(slack_in.messages) == 1 and "ended" in json.dumps(slack_in.messages[0])


def test_an_anomaly_over_while_slack_was_down_is_told_firing_then_over(
    alerter, store, clock, slack_in, registry
) -> None:
    slack_in.failures.extend([500] * 3)  # Slack is down for three attempts
    (a,) = store.record([win(0), win(1)])
    assert alerter.sync() == {ALERTMANAGER: 1, SLACK: 1}
    alerter.deliver()
    clock.advance(seconds=30)
    store.record([normal(2)])  # it ends while Slack is down
    assert alerter.sync() == {ALERTMANAGER: 1}  # no "over" before its announcement went out
    while not slack_in.messages:
        clock.t = max(clock(), rows(alerter, SLACK)[0].next_attempt_at)
        alerter.deliver()
        assert SLACK not in alerter.sync() or slack_in.messages
    assert alerter.outbox.state(a.id).slack == "closed"  # the "over" was enqueued ...
    assert alerter.deliver() == 1  # ... and goes out after the announcement
    first, over = slack_in.messages
    assert f"Anomaly #{a.id}>" in json.dumps(first) and "ongoing" in json.dumps(first)
    assert over["text"] == f"Network anomaly over in shop/cart (#{a.id})"
    assert (
        f"`shop/cart` ended {T0 + 2 * STEP:%Y-%m-%d %H:%M} UTC after 2 window(s)"
        in (over["blocks"][1]["text"]["text"])
    )
    assert slack_in.problems == []
    assert sample(registry, "netwarden_alert_slack_anomalies_total", format="over") == 1
    clock.advance(hours=1)
    assert alerter.sync() == {} and alerter.deliver() == 0
    assert len(slack_in.messages) == 2  # once each


def test_the_over_notice_survives_a_restart_and_is_sent_once(
    db_url, settings, clock, slack_in
) -> None:
    with AnomalyStore(db_url, now=clock) as store, Alerter(store, settings, now=clock) as a:
        (x,) = store.record([win(0, "shop/a")])
        (y,) = store.record([win(0, "shop/b")])
        a.sync()
        assert a.deliver() == 3  # one Slack message for both
        clock.advance(seconds=10)
        store.record([normal(1, "shop/a"), normal(1, "shop/b")])
        store.resolve(y.id, actor="alice", note="known")
    with AnomalyStore(db_url, now=clock) as store, Alerter(store, settings, now=clock) as b:
        assert b.sync() == {ALERTMANAGER: 2, SLACK: 1}
        assert b.sync() == {}
        assert b.deliver() == 3
    _, over = slack_in.messages
    text = over["blocks"][1]["text"]["text"]
    assert over["text"].startswith("2 network anomalies over")
    assert "`shop/a` ended" in text and "`shop/b` resolved by alice" in text
    assert f"|#{x.id}>" in text and f"|#{y.id}>" in text


def test_over_notices_can_be_turned_off(store, settings, clock, slack_in) -> None:
    with Alerter(store, replace(settings, slack_send_resolved=False), now=clock) as a:
        (x,) = store.record([win(0)])
        a.sync()
        a.deliver()
        store.record([normal(1)])
        a.sync()
        a.deliver()
        assert a.outbox.state(x.id).slack == "closed"
        clock.advance(hours=1)
        assert a.sync() == {} and a.deliver() == 0
    assert len(slack_in.messages) == 1


def test_a_suppressed_anomaly_is_not_brought_back_to_fire(store, settings, clock, db_url) -> None:
    """Alertmanager was down while an anomaly fired and a person suppressed it: the resolve
    goes as it is (a suppression means silence), also through a restarted alerter."""
    down = replace(settings, alertmanager_url=f"http://127.0.0.1:{free_port()}", group_wait=60)
    with Alerter(store, down, now=clock) as a:
        (x,) = store.record([win(0)])
        a.sync()
        a.deliver()
        store.suppress(x.id, actor="alice", until=clock() + timedelta(hours=1), reason="test")
        assert a.sync() == {ALERTMANAGER: 1}
    with Alerter(store, settings, now=clock) as b:
        assert b.deliver() == 1
        (first, last) = rows(b, ALERTMANAGER)
        assert (first.status, last.status) == (SUPERSEDED, DELIVERED)  # no follow-up
        assert only(last.payload)["annotations"]["state"] == "suppressed"
        assert only(last.payload)["endsAt"] == ts(clock())
        assert rows(b, SLACK) == []


def test_hold_unnotified_fires_only_what_was_never_seen_firing(store, clock) -> None:
    (a,) = store.record([win(0, score=1.5)])
    now = clock()
    until = now + timedelta(minutes=6)
    warning = alertmanager.alert(a, public_url=PUBLIC, ends_at=now - STEP)
    critical_labels = {**warning["labels"], "severity": "critical"}
    critical = alertmanager.alert(a, public_url=PUBLIC, ends_at=now, alert_labels=critical_labels)
    firing = alertmanager.alert(
        a, public_url=PUBLIC, ends_at=now + STEP, alert_labels=critical_labels
    )
    seen = {alertmanager.identity_of(warning)}
    # a severity change while it fires: the new labels fire, the old ones resolve as they are
    assert alertmanager.hold_unnotified([warning, firing], set(), now=now, until=until) == (
        [warning, firing],
        [],
    )
    # escalated and ended unseen: the critical one fires first, the warning one was seen
    send, later = alertmanager.hold_unnotified([warning, critical], seen, now=now, until=until)
    assert send == [warning, {**critical, "endsAt": ts(until)}] and later == [critical]
    # resolved by a person: not brought back
    by_hand = {**warning, "annotations": {**warning["annotations"], "state": "resolved"}}
    assert alertmanager.hold_unnotified([by_hand], set(), now=now, until=until) == ([by_hand], [])
    assert alertmanager.firing_labels(send, now) == {alertmanager.identity_of(critical)}


def test_two_alerters_on_one_database_decide_once(alerter, store, settings, clock) -> None:
    store.record([win(0)])
    with Alerter(AnomalyStore(store.url, now=clock), settings, now=clock) as other:
        assert alerter.sync() == {ALERTMANAGER: 1, SLACK: 1}
        assert other.sync() == {}
        other.store.close()


# ------------------------------------------------------------------- grouping and rate limit


def test_anomalies_within_group_wait_share_one_message(store, settings, clock, slack_in) -> None:
    with Alerter(
        store, replace(settings, group_wait=30, slack_detail_limit=5), now=clock
    ) as grouped:
        first = store.record([win(0, f"shop/w{k}") for k in range(3)])
        assert grouped.sync() == {ALERTMANAGER: 3}
        clock.advance(seconds=20)
        later = store.record([win(1, f"db/w{k}") for k in range(2)])
        assert grouped.sync() == {ALERTMANAGER: 2}
        clock.advance(seconds=10)  # the oldest has waited group_wait
        assert grouped.sync() == {SLACK: 1}
        clock.advance(seconds=5)
        assert grouped.sync() == {}
        assert grouped.deliver() == 6
    (msg,) = slack_in.messages
    assert msg["text"].startswith("5 network anomalies")
    assert all(f"Anomaly #{a.id}>" in json.dumps(msg) for a in first + later)


def test_rate_limit_folds_the_excess_into_a_digest(
    store, settings, clock, slack_in, registry
) -> None:
    limited = replace(settings, slack_max_messages=2, slack_rate_interval=600)
    opened: list[AnomalyRecord] = []
    with Alerter(store, limited, now=clock, registry=registry) as a:
        for k in range(30):  # a new anomaly every 10 s for 5 minutes
            opened += store.record([win(k, f"ns{k % 3}/w{k}")])
            a.sync()
            a.deliver()
            clock.advance(seconds=10)
        assert len(slack_in.messages) == 2  # the limit: 2 per 10 minutes
        clock.advance(seconds=600 - 300)
        assert a.sync()[SLACK] == 1
        a.deliver()
        assert SLACK not in a.sync()
        assert {s.slack for s in map(a.outbox.state, (x.id for x in opened))} == {"sent"}
    assert len(slack_in.messages) == 3
    one, two, digest = slack_in.messages
    assert digest["text"].startswith("28 network anomalies")  # every one held back, counted
    counted = {int(i) for m in (one, two) for i in re.findall(r"Anomaly #(\d+)>", json.dumps(m))}
    assert len(counted) == 2 and "*28 anomalies*" in json.dumps(digest)
    assert sample(registry, "netwarden_alert_slack_anomalies_total", format="digest") == 28
    assert sample(registry, "netwarden_alert_slack_anomalies_total", format="detail") == 2


def test_many_anomalies_at_once_are_one_message(alerter, store, slack_in) -> None:
    store.record([win(0, f"ns{k % 7}/w{k}") for k in range(150)])
    assert alerter.sync() == {ALERTMANAGER: 150, SLACK: 1}
    alerter.deliver()
    alerter.deliver()
    (digest,) = slack_in.messages
    assert "*150 anomalies*" in json.dumps(digest) and "and 140 more" in json.dumps(digest)


# ------------------------------------------------------------------ delivery, retries, restart


def test_failures_are_retried_with_backoff_and_nothing_is_lost(
    alerter, store, clock, slack_in, registry
) -> None:
    slack_in.failures.extend([500, 503, "timeout"])
    store.record([win(0)])
    alerter.sync()
    assert alerter.deliver() == 1  # Alertmanager took it; Slack answered 500
    (msg,) = rows(alerter, SLACK)
    assert (msg.status, msg.attempts, msg.last_error) == (PENDING, 1, "HTTP 500: internal_error")
    assert clock() + timedelta(seconds=0.5) <= msg.next_attempt_at <= clock() + timedelta(seconds=1)
    assert alerter.deliver() == 0 and slack_in.requests == 1  # not due yet: not tried
    waits = []
    for failure in ("HTTP 503", "ReadTimeout"):
        clock.t = rows(alerter, SLACK)[0].next_attempt_at
        assert alerter.deliver() == 0
        (msg,) = rows(alerter, SLACK)
        assert msg.last_error.startswith(failure) and msg.status == PENDING
        waits.append((msg.next_attempt_at - clock()).total_seconds())
    assert 1 <= waits[0] <= 2 and 2 <= waits[1] <= 4  # doubling, jittered in the upper half
    assert sample(registry, "netwarden_alert_outbox_pending", sink="slack") == 1
    clock.t = rows(alerter, SLACK)[0].next_attempt_at
    assert alerter.deliver() == 1
    (msg,) = rows(alerter, SLACK)
    assert (msg.status, msg.attempts, msg.delivered_at) == (DELIVERED, 3, clock())
    assert len(slack_in.messages) == 1 and slack_in.requests == 4
    assert (
        sample(registry, "netwarden_alert_deliveries_total", sink="slack", outcome="failure") == 3
    )
    assert (
        sample(registry, "netwarden_alert_deliveries_total", sink="slack", outcome="success") == 1
    )
    assert sample(registry, "netwarden_alert_outbox_pending", sink="slack") == 0


def test_backoff_is_capped_and_honours_retry_after(alerter, store, clock, slack_in) -> None:
    slack_in.failures.extend([500] * 8 + [429])
    store.record([win(0)])
    alerter.sync()
    for _ in range(8):
        alerter.deliver()
        msg = rows(alerter, SLACK)[0]
        assert msg.next_attempt_at - clock() <= timedelta(seconds=8)  # backoff_max
        clock.t = msg.next_attempt_at
    alerter.deliver()  # 429 with Retry-After: 30, capped at backoff_max (8)
    msg = rows(alerter, SLACK)[0]
    assert msg.next_attempt_at - clock() == timedelta(seconds=8)
    assert msg.attempts == 9 and msg.status == PENDING
    clock.t = msg.next_attempt_at
    alerter.deliver()
    assert rows(alerter, SLACK)[0].status == DELIVERED and len(slack_in.messages) == 1


def test_alertmanager_down_is_retried(store, settings, clock) -> None:
    down = replace(settings, alertmanager_url=f"http://127.0.0.1:{free_port()}")
    with Alerter(store, down, now=clock) as a:
        store.record([win(0)])
        a.sync()
        a.deliver()
        (am,) = rows(a, ALERTMANAGER)
        assert am.status == PENDING and am.attempts == 1 and "ConnectError" in am.last_error


def test_restart_delivers_what_was_pending_and_resends_nothing(
    db_url, settings, clock, slack_in
) -> None:
    with AnomalyStore(db_url, now=clock) as store, Alerter(store, settings, now=clock) as a:
        (first,) = store.record([win(0, "shop/a")])
        a.sync()
        assert a.deliver() == 2
        clock.advance(seconds=10)
        slack_in.failures.append(500)
        (second,) = store.record([win(1, "shop/b")])
        a.sync()
        assert a.deliver() == 1  # Alertmanager yes, Slack failed
        delivered = {i.id for i in a.outbox.items() if i.status == DELIVERED}
    clock.advance(seconds=5)
    with AnomalyStore(db_url, now=clock) as store, Alerter(store, settings, now=clock) as b:
        assert b.sync() == {}  # nothing new is owed after a restart
        clock.advance(seconds=5)
        assert b.deliver() == 1  # the pending Slack message, and only that
        assert {i.id for i in b.outbox.items() if i.status == DELIVERED} == delivered | {
            rows(b, SLACK)[1].id
        }
    assert len(slack_in.messages) == 2
    assert f"Anomaly #{first.id}>" in json.dumps(slack_in.messages[0])
    assert f"Anomaly #{second.id}>" in json.dumps(slack_in.messages[1])


def test_restart_in_a_new_process(db_url, settings, slack_in, tmp_path) -> None:
    """A separate Python process on the same file delivers what the first left pending."""
    hour_ago = Clock(datetime.now(UTC) - timedelta(hours=1))
    with AnomalyStore(db_url, now=hour_ago) as store, Alerter(store, settings, now=hour_ago) as a:
        store.record([win(0, "shop/a"), normal(1, "shop/a")])
        a.sync()
        assert a.deliver() == 2  # Slack, and Alertmanager (firing; the resolve follows later)
        slack_in.failures.append(500)
        store.record([win(2, "shop/b"), normal(3, "shop/b")])
        a.sync()
        assert a.deliver() == 1  # Alertmanager yes, Slack failed
        assert [i.status for i in a.outbox.items(SLACK)] == [DELIVERED, PENDING]
        assert [i.status for i in a.outbox.items(ALERTMANAGER)] == [
            DELIVERED,
            PENDING,
            DELIVERED,
            PENDING,
        ]
    script = f"""
import json
from netwarden.detector.alerts.alerting import Alerter, AlertSettings
from netwarden.detector.store import AnomalyStore
settings = AlertSettings(**json.loads({json.dumps(json.dumps(settings_dict(settings)))}))
with AnomalyStore({db_url!r}) as store, Alerter(store, settings) as alerter:
    print(json.dumps({{"enqueued": alerter.sync(), "delivered": alerter.deliver()}}))
"""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    # the Slack message and the two resolves, due by now
    assert json.loads(done.stdout) == {"enqueued": {}, "delivered": 3}
    assert len(slack_in.messages) == 2 and "shop/b" in json.dumps(slack_in.messages[1])


def settings_dict(s: AlertSettings) -> dict[str, Any]:
    return {f.name: getattr(s, f.name) for f in fields(s)}


def test_run_loop_delivers_until_stopped(db_url, settings, slack_in) -> None:
    with AnomalyStore(db_url) as store, Alerter(store, settings) as a:
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        w = win(0)
        store.record([replace(w, window_start=now - STEP, window_end=now)])
        stop = threading.Event()
        worker = threading.Thread(target=a.run, args=(stop,), kwargs={"interval": 0.05})
        worker.start()
        try:
            deadline = time.monotonic() + 30
            while not slack_in.messages and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            stop.set()
            worker.join(timeout=30)
        assert not worker.is_alive()
        assert len(slack_in.messages) == 1
        assert [i.status for i in a.outbox.items()] == [DELIVERED, DELIVERED]


def test_injected_http_client_is_used_and_left_open(store, settings, clock, slack_in) -> None:
    with httpx.Client() as http:
        with Alerter(store, replace(settings, alertmanager_url=None), http=http, now=clock) as a:
            store.record([win(0)])
            assert a.sync() == {SLACK: 1} and a.deliver() == 1
        assert not http.is_closed
    assert len(slack_in.messages) == 1


def test_delivered_messages_are_purged_after_the_retention(alerter, store, clock, slack_in) -> None:
    slack_in.failures.extend([500] * 50)  # Slack stays down: its message must survive
    store.record([win(0)])
    alerter.sync()
    alerter.deliver()
    assert [i.status for i in alerter.outbox.items()] == [DELIVERED, PENDING]
    clock.advance(days=8)  # older than the 7-day retention
    store.record([normal(1)])
    alerter.sync()
    alerter.deliver()  # the first pass of this alerter purges
    assert [(i.sink, i.status) for i in alerter.outbox.items()] == [
        (SLACK, PENDING),
        (ALERTMANAGER, DELIVERED),
    ]  # the resolve is new: kept
    with pytest.raises(ValueError, match="retention"):
        AlertSettings(retention=3600, slack_rate_interval=7200)


def test_an_in_memory_store_works_too(settings, clock, slack_in) -> None:
    with AnomalyStore("sqlite://", now=clock) as store, Alerter(store, settings, now=clock) as a:
        store.record([win(0)])
        assert a.sync() == {ALERTMANAGER: 1, SLACK: 1} and a.deliver() == 2
        assert a.sync() == {}
    assert len(slack_in.messages) == 1


# --------------------------------------------------------------------------- incidents, changes


def incident_win(i: int, identity: str, role: str, incident: str = "inc-0123456789ab") -> Any:
    return replace(win(i, identity, score=2.5), incident=incident, role=role)


def test_a_victim_alerts_through_its_attackers_incident(alerter, store, clock, slack_in) -> None:
    (attacker,) = store.record([incident_win(0, "shop/recs", "attacker")])
    victims = store.record(
        [incident_win(0, "checkout/payments", "victim"), incident_win(0, "shop/cart", "victim")]
    )
    assert alerter.sync() == {ALERTMANAGER: 1, SLACK: 1}  # the attacker's alert alone
    (am,) = rows(alerter, ALERTMANAGER)
    firing = only(am.payload)
    assert firing["labels"] == alertmanager.labels(attacker) | {"incident": "inc-0123456789ab"}
    assert firing["labels"]["identity"] == "shop/recs"
    notes = firing["annotations"]
    assert (notes["incident"], notes["role"], notes["attacker"], notes["victims"]) == (
        "inc-0123456789ab",
        "attacker",
        "shop/recs",
        "checkout/payments, shop/cart",
    )
    assert alerter.deliver() == 2
    (msg,) = slack_in.messages
    assert block_kit_problems(msg) == []
    text = json.dumps(msg)
    assert "*Incident* `inc-0123456789ab`: attacker `shop/recs`, victims checkout/payments, " in (
        text
    )
    assert all(f"Anomaly #{v.id}>" not in text for v in victims)
    # the victims grow and end: nothing of their own, ever
    store.record([incident_win(1, "checkout/payments", "victim")])
    store.record([normal(2, "checkout/payments"), normal(1, "shop/cart")])
    clock.advance(seconds=10)
    assert alerter.sync() == {} and alerter.deliver() == 0
    assert all(alerter.outbox.state(v.id).am_labels is None for v in victims)  # type: ignore[union-attr]


def test_a_subject_alerts_with_its_incident_and_no_victims(alerter, store) -> None:
    store.record([incident_win(0, "shop/cart", "subject", "inc-aaaaaaaaaaaa")])
    alerter.sync()
    notes = only(rows(alerter, ALERTMANAGER)[0].payload)["annotations"]
    assert (notes["role"], notes["attacker"], notes["victims"]) == (
        "subject",
        "shop/cart",
        "none so far",
    )


@pytest.fixture
def changes(db_url, clock) -> Iterator[ChangeStore]:
    with ChangeStore(db_url, now=clock) as s:
        yield s


def test_new_changes_are_announced_once_as_information(
    store, changes, settings, clock, slack_in, registry, am_server
) -> None:
    now = datetime.now(UTC)  # Alertmanager judges active alerts by its own clock
    clock.t = now  # the store's and the change store's clock too
    workload, vendor = new_workload_change(), vendor_change()
    changes.upsert([workload, vendor])
    with Alerter(store, settings, now=clock, registry=registry, changes=changes) as a:
        assert a.sync() == {ALERTMANAGER: 2, SLACK: 1}
        assert a.sync() == {}  # once
        notice = only(rows(a, ALERTMANAGER)[0].payload)
        assert notice["labels"] == {
            "alertname": "NetwardenChange",
            "severity": "info",
            "detector": "netwarden",
            "change_id": workload.id,
            "kind": "workload",
            "namespace": "checkout",
            "workload": "fraud-check",
            "identity": "checkout/fraud-check",
        }
        assert notice["startsAt"] == ts(now)
        assert notice["endsAt"] == ts(now + timedelta(seconds=300))  # resolves by itself
        assert notice["annotations"]["summary"].startswith(
            "change: new workload checkout/fraud-check"
        )
        assert notice["generatorURL"] == f"{PUBLIC}/api/v1/changes/{workload.id}"
        assert a.deliver() == 3
        got = httpx.get(
            f"{am_server.url}/api/v2/alerts",
            params={"filter": f'change_id="{workload.id}"'},
            timeout=5,
        ).json()
        assert [x["labels"]["severity"] for x in got] == ["info"]
        assert got[0]["status"]["state"] == "active"
        # Slack: one message for both, as information, and no anomaly rate limit spent on it
        (msg,) = slack_in.messages
        assert block_kit_problems(msg) == []
        assert msg["text"].startswith("2 changes in the cluster (not alerts)")
        text = json.dumps(msg)
        assert f"/api/v1/changes/{workload.id}|Change {workload.id}>" in text
        assert "`checkout/fraud-check` to `db/redis` TCP/6379 (18 flows)" in text
        assert sample(registry, "netwarden_alert_changes_announced_total") == 2
        # a change decided before it could be announced is not announced
        decided = new_workload_change("chg-bbbbbbbbbbbb")
        changes.upsert([decided])
        changes.accept(decided.id, actor="alice")
        assert a.sync() == {}
    # the anomaly rate limit counts anomaly messages only
    limited = replace(settings, slack_max_messages=1)
    with Alerter(store, limited, now=clock, changes=changes) as b:
        changes.upsert([new_workload_change("chg-cccccccccccc")])
        store.record([replace(win(0), window_start=now - STEP, window_end=now)])
        assert b.sync() == {ALERTMANAGER: 2, SLACK: 2}


def test_a_change_notice_survives_a_failing_slack(
    store, changes, settings, clock, slack_in
) -> None:
    slack_in.failures.extend([500, 429])
    changes.upsert([vendor_change()])
    with Alerter(store, replace(settings, alertmanager_url=None), now=clock, changes=changes) as a:
        assert a.sync() == {SLACK: 1}
        assert a.deliver() == 0
        clock.advance(seconds=2)
        assert a.deliver() == 0  # 429: retried after Slack's Retry-After
        clock.advance(seconds=8)
        assert a.deliver() == 1 and a.sync() == {}
    (msg,) = slack_in.messages
    assert msg["text"].startswith("Change in the cluster (not an alert): new internet service")


def test_changes_are_not_announced_when_turned_off(store, changes, settings, clock) -> None:
    changes.upsert([vendor_change()])
    quiet = replace(settings, notify_changes=False)
    with Alerter(store, quiet, now=clock, changes=changes) as a:
        assert a.sync() == {}

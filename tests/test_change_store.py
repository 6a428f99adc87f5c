"""The change store (a real SQLite file): upserts from the tracker, the lifecycle and its audit
trail, filters, decisions waiting for the pipeline, and a rejected change as an anomaly; and
the tracker's side the service relies on (touched changes, rejected changes held)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, inspect, text

from netwarden.detector.change_store import (
    ACCEPTED,
    CLOSED,
    ESCALATED,
    OPEN,
    REJECTED,
    REJECTION_SCORE,
    STATES,
    ChangeLifecycleError,
    ChangeNotFound,
    ChangeStore,
    record_rejection,
    subject_identities,
)
from netwarden.detector.changes import Change, ChangeTracker
from netwarden.detector.novelty import NoveltyDetector
from netwarden.detector.results import ScoredWindow
from netwarden.detector.severity import severity
from netwarden.detector.store import AnomalyStore
from netwarden.ingest.windows import ClosedWindow, WindowBuilder
from netwarden.models.edges import EdgeMemory
from netwarden.storage.base import Base
from tests.flowfactory import connection, decode, pod

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(seconds=60)
TCP, UDP = 6, 17


def new_workload_change(change_id: str = "chg-0123456789ab", minutes: int = 3) -> Change:
    """A new workload checkout/fraud-check, called by payments, scraped by prometheus, reading
    redis: one change, as the tracker records it, seen in ``minutes`` windows from T0."""
    t0 = T0.timestamp()
    return Change(
        id=change_id,
        kind="workload",
        subject="checkout/fraud-check",
        first_seen=t0,
        last_seen=t0 + 60 * (minutes - 1),
        identities={
            "checkout/fraud-check",
            "checkout/payments",
            "db/redis",
            "monitoring/prometheus",
        },
        edges={
            ("checkout/fraud-check", True, "db/redis", TCP, 6379): 18,
            ("checkout/fraud-check", True, "kube-system/coredns", UDP, 53): 12,
            ("checkout/fraud-check", False, "checkout/payments", TCP, 8080): 32,
            ("checkout/fraud-check", False, "monitoring/prometheus", TCP, 8080): 117,
            ("checkout/payments", True, "checkout/fraud-check", TCP, 8080): 32,
            ("db/redis", False, "checkout/fraud-check", TCP, 6379): 18,
            ("monitoring/prometheus", True, "checkout/fraud-check", TCP, 8080): 117,
        },
        windows=minutes,
    )


def vendor_change(change_id: str = "chg-aaaaaaaaaaaa") -> Change:
    """shop/mailer starts calling api.postmarkapp.com on 443."""
    t0 = (T0 + 10 * MINUTE).timestamp()
    return Change(
        id=change_id,
        kind="vendor",
        subject="postmarkapp.com",
        first_seen=t0,
        last_seen=t0 + 120,
        identities={"shop/mailer"},
        edges={("shop/mailer", True, "fqdn:api.postmarkapp.com", TCP, 443): 9},
        windows=3,
    )


class Clock:
    def __init__(self) -> None:
        self.t = T0 + timedelta(days=1)

    def __call__(self) -> datetime:
        return self.t


@pytest.fixture
def url(backend_url) -> str:
    """A SQLite file, then a PostgreSQL database (tests/storage_backends.py)."""
    return backend_url


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(url, clock):
    with ChangeStore(url, now=clock) as s:
        yield s


def test_the_tables_are_on_the_one_metadata(url, store) -> None:
    assert {"changes", "change_identities"} <= set(Base.metadata.tables)
    engine = create_engine(url)
    tables = set(inspect(engine).get_table_names())
    assert {"changes", "change_identities", "audit_events"} <= tables
    columns = {c["name"] for c in inspect(engine).get_columns("changes")}
    assert {
        "id", "change_id", "kind", "subject", "status", "first_seen", "last_seen", "windows",
        "identities", "edges", "edges_omitted", "description", "state_actor", "state_note",
        "decided_at", "applied_at", "proposal_ids", "anomaly_ids", "created_at", "updated_at",
    } <= columns  # fmt: skip
    engine.dispose()


def test_upsert_creates_once_then_follows_the_tracker(store, clock, url) -> None:
    change = new_workload_change()
    (created,) = store.upsert([change])
    assert (created.change_id, created.kind, created.subject) == (
        "chg-0123456789ab",
        "workload",
        "checkout/fraud-check",
    )
    assert (created.status, created.state_actor, created.windows) == (OPEN, "netwarden", 3)
    assert created.first_seen == T0 and created.last_seen == T0 + 2 * MINUTE
    assert len(created.edges) == 7 and created.decided_at is None
    assert created.to_change().edges == change.edges  # the tracker's record, round trip
    # seen again: updated, not created again
    change.last_seen += 120
    change.windows += 2
    change.edges[("checkout/payments", True, "checkout/fraud-check", TCP, 8080)] += 10
    clock.t += MINUTE
    assert store.upsert([change]) == []
    again = store.get("chg-0123456789ab")
    assert again is not None and (again.windows, again.last_seen) == (5, T0 + 4 * MINUTE)
    assert again.updated_at == clock.t and again.created_at == clock.t - MINUTE
    (event,) = store.events("chg-0123456789ab")
    assert (event.action, event.actor, event.from_state, event.to_state) == (
        "open",
        "netwarden",
        None,
        OPEN,
    )
    assert "new workload checkout/fraud-check" in event.note
    # the events are in the shared audit trail, as the change's kind of subject
    engine = create_engine(url)
    with engine.connect() as connection:
        kinds = connection.execute(text("SELECT DISTINCT subject_kind FROM audit_events")).all()
    engine.dispose()
    assert kinds == [("change",)]


def test_netwarden_ends_only_open_changes(store) -> None:
    a, b = new_workload_change(), vendor_change()
    store.upsert([a, b])
    store.accept(b.id, actor="alice")
    a.status, b.status = "escalated", "closed"  # what the tracker says afterwards
    store.upsert([a, b])
    escalated, accepted = store.get(a.id), store.get(b.id)
    assert escalated is not None and accepted is not None
    assert (escalated.status, escalated.state_actor) == (ESCALATED, "netwarden")
    assert "evidence" in escalated.state_note
    assert (accepted.status, accepted.state_actor) == (ACCEPTED, "alice")  # a person's decision
    assert [e.action for e in store.events(a.id)] == ["open", "escalate"]
    c = new_workload_change("chg-cccccccccccc")
    c.status = "closed"  # seen for the last time, then again after the merge gap
    store.upsert([c])
    closed = store.get(c.id)
    assert closed is not None and closed.status == CLOSED


def test_decisions_wait_for_the_pipeline(store, clock) -> None:
    store.upsert([new_workload_change(), vendor_change()])
    assert store.unapplied() == [] and not store.decided.is_set()
    accepted = store.accept("chg-0123456789ab", actor="alice", note="the fraud team's service")
    assert (accepted.status, accepted.decided_at, accepted.applied_at) == (ACCEPTED, clock.t, None)
    assert store.decided.is_set()
    clock.t += MINUTE
    rejected = store.reject("chg-aaaaaaaaaaaa", actor="bob", anomaly_ids=[7])
    assert rejected.anomaly_ids == (7,)
    assert [r.change_id for r in store.unapplied()] == ["chg-0123456789ab", "chg-aaaaaaaaaaaa"]
    store.mark_applied("chg-0123456789ab")
    assert [r.change_id for r in store.unapplied()] == ["chg-aaaaaaaaaaaa"]
    # the lifecycle: from open only, and every refusal names the state
    with pytest.raises(ChangeLifecycleError, match="is accepted: cannot accept") as refused:
        store.accept("chg-0123456789ab", actor="carol")
    assert (refused.value.state, refused.value.action) == (ACCEPTED, "accept")
    with pytest.raises(ChangeLifecycleError, match="is rejected: cannot accept"):
        store.check("chg-aaaaaaaaaaaa", "accept")
    with pytest.raises(ChangeNotFound, match="no change with id chg-ffffffffffff"):
        store.reject("chg-ffffffffffff", actor="bob")
    with pytest.raises(ValueError, match="actor"):
        store.upsert([new_workload_change("chg-dddddddddddd")])
        store.accept("chg-dddddddddddd", actor=" ")
    linked = store.link_proposals("chg-0123456789ab", [3, 4], notes=["db/redis: no amendment"])
    assert linked.proposal_ids == (3, 4) and linked.status == ACCEPTED
    events = store.events("chg-0123456789ab")
    assert [(e.action, e.actor, e.from_state, e.to_state) for e in events] == [
        ("open", "netwarden", None, OPEN),
        ("accept", "alice", OPEN, ACCEPTED),
        ("amend", "netwarden", ACCEPTED, ACCEPTED),
    ]
    assert events[1].note == "the fraud team's service"
    assert events[2].details == {"proposal_ids": [3, 4], "notes": ["db/redis: no amendment"]}
    assert store.events("chg-aaaaaaaaaaaa")[-1].details == {"anomaly_ids": [7]}
    assert store.counts() == {OPEN: 1, ACCEPTED: 1, REJECTED: 1, ESCALATED: 0, CLOSED: 0}
    assert set(store.counts()) == set(STATES)


def test_list_filters_and_pages(store) -> None:
    workload, vendor = new_workload_change(), vendor_change()
    store.upsert([workload, vendor])
    store.reject(vendor.id, actor="bob")

    def ids(**filters) -> list[str]:
        return [c.change_id for c in store.list(**filters)]

    assert ids() == [vendor.id, workload.id]  # most recently seen first
    assert ids(status=OPEN) == [workload.id] and ids(status=REJECTED) == [vendor.id]
    assert ids(identity="checkout/payments") == [workload.id]  # any identity it touched
    assert ids(identity="shop/mailer") == [vendor.id] and ids(identity="shop/cart") == []
    assert ids(kind="vendor") == [vendor.id]
    assert ids(since=T0 + 5 * MINUTE) == [vendor.id]  # seen at or after
    assert ids(until=T0 + 5 * MINUTE) == [workload.id]  # first seen before
    assert ids(limit=1) == [vendor.id] and ids(limit=1, offset=1) == [workload.id]
    assert store.count() == 2 and store.count(identity="db/redis") == 1
    assert store.count(status=OPEN, kind="vendor") == 0
    with pytest.raises(ValueError, match="unknown status"):
        store.list(status="maybe")
    assert [c.change_id for c in store.by_status(OPEN, REJECTED)] == [workload.id, vendor.id]
    created = store.created_since(T0)
    assert [c.change_id for c in created] == [workload.id, vendor.id]
    last = created[-1]
    assert store.created_since(last.created_at, after_id=last.id) == []


def _anomaly_windows(store: AnomalyStore, identity: str, change_id: str) -> None:
    """Normal windows of ``identity`` from T0 - 2 min to T0 + 3 min; those from T0 show the
    change."""
    namespace, workload = identity.split("/")
    store.record(
        [
            ScoredWindow(
                identity=identity,
                namespace=namespace,
                workload=workload,
                window_start=T0 + i * MINUTE,
                window_end=T0 + (i + 1) * MINUTE,
                score=0.4,
                threshold=1.0,
                anomalous=False,
                model=f"identity:{identity}",
                fallback=False,
                changes=(change_id,) if i >= 0 else (),
                new_edges=2 if i >= 0 else 0,
            )
            for i in range(-2, 4)
        ]
    )


def test_a_rejected_change_becomes_an_anomaly_of_its_subject(url, store) -> None:
    change = new_workload_change()
    (record,) = store.upsert([change])
    assert subject_identities(record) == ["checkout/fraud-check"]
    with AnomalyStore(url) as anomalies:
        _anomaly_windows(anomalies, "checkout/fraud-check", change.id)
        (anomaly,) = record_rejection(anomalies, record, actor="bob", note="not ours")
        assert (anomaly.identity, anomaly.role, anomaly.incident) == (
            "checkout/fraud-check",
            "subject",
            "",
        )
        # its first window showing the change: what the workload did then is the new thing
        assert anomaly.first_window_start == T0 and anomaly.window_count == 1
        assert anomaly.peak_score == REJECTION_SCORE and severity(anomaly.peak_score) == "warning"
        assert anomaly.state == "open" and anomaly.summary.startswith(
            "bob rejected change chg-0123456789ab (not ours): new workload checkout/fraud-check"
        )
        why, *edges = anomaly.reasons
        assert why.feature == "egress_rejected_change"  # what it does (as much as it is called)
        assert [r.text for r in edges] == [
            "rejected edge from monitoring/prometheus TCP/8080 (117 flows)",
            "rejected edge from checkout/payments TCP/8080 (32 flows)",
            "rejected edge to db/redis TCP/6379 (18 flows)",
            "rejected edge to kube-system/coredns UDP/53 (12 flows)",
        ]
        assert anomaly.examples["egress"]["to"][0] == {
            "peer": "db/redis",
            "port": "TCP/6379",
            "flows": 18,
        }
        (window,) = anomalies.windows("checkout/fraud-check", since=T0, until=T0 + MINUTE)
        assert window.anomalous and window.changes == (change.id,)
        assert window.evidence[0]["rule"] == "rejected_change"
    # a vendor is held against the workloads that reached it; an edge against its client
    vendor = store.upsert([vendor_change()])[0]
    assert subject_identities(vendor) == ["shop/mailer"]


def test_a_rejection_without_recorded_windows_is_dated_at_its_first_sighting(url, store) -> None:
    (record,) = store.upsert([vendor_change()])
    with AnomalyStore(url) as anomalies:
        (anomaly,) = record_rejection(anomalies, record, actor="bob", window_seconds=30)
        assert anomaly.first_window_start == T0 + 10 * MINUTE
        assert anomaly.last_window_end == T0 + 10 * MINUTE + timedelta(seconds=30)
        assert anomaly.reasons[0].feature == "egress_rejected_change"


# -- the tracker's side --------------------------------------------------------------------------

CART = pod("checkout", "cart", 30001, "10.244.1.10")
REDIS = pod("db", "redis", 30003, "10.244.3.30")
NEWSVC = pod("checkout", "fraud-check", 30007, "10.244.4.41")


def _windows(lines: list[dict]) -> list[ClosedWindow]:
    builder = WindowBuilder()
    return builder.add(decode(lines)) + builder.flush()


def _judge(
    memory: EdgeMemory, detector: NoveltyDetector, tracker: ChangeTracker, lines: list[dict]
) -> None:
    for w in _windows(lines):
        novelty = detector.inspect(w)
        assert novelty.evidence == []
        tracker.observe(w, novelty.new)
        memory.learn(w, skip=tracker.pending(w.identity))


def test_the_tracker_hands_over_what_it_touched_and_holds_a_rejected_change() -> None:
    memory = EdgeMemory.from_windows(_windows(connection(CART, REDIS, seconds=1, dport=6379)))
    detector, tracker = NoveltyDetector(memory), ChangeTracker(memory)
    assert tracker.take_touched() == []
    _judge(memory, detector, tracker, connection(CART, NEWSVC, seconds=61, dport=8080))
    (change,) = tracker.take_touched()
    assert change.kind == "workload" and tracker.take_touched() == []  # once
    # a person rejects it: held, its edges stay pending, its traffic is no new change
    tracker.keep_rejected(change)
    assert [c.id for c in tracker.take_touched()] == [change.id]
    _judge(memory, detector, tracker, connection(CART, NEWSVC, seconds=121, dport=8080))
    assert [c.id for c in tracker.changes()] == [change.id]
    (seen,) = tracker.take_touched()
    assert seen.id == change.id and seen.status == "rejected" and seen.windows == 2
    assert not memory.knows_identity("checkout/fraud-check")
    # a restarted tracker given the rejected record holds it the same way
    again = ChangeTracker(memory)
    again.keep_rejected(Change.from_json(change.to_json()))
    assert again.pending("checkout/cart") == tracker.pending("checkout/cart") != set()

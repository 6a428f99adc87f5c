"""The one storage layer: one ORM base for every table, one audit-event table shared by
anomalies and proposals, the generic lifecycle state machine, and the one-time copy of the
audit trail of a database written before the shared table existed."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from netwarden.detector import lifecycle as anomaly_lifecycle
from netwarden.detector import store as anomaly_store
from netwarden.detector.alerts import outbox
from netwarden.detector.results import ScoredWindow
from netwarden.detector.store import AnomalyStore, LifecycleError
from netwarden.remediation import proposals
from netwarden.remediation.proposals import ProposalLifecycleError, ProposalStore
from netwarden.storage import (
    AuditedLifecycle,
    Base,
    SqlStore,
    StateMachine,
    SubjectNotFound,
    TransitionError,
    record_of,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LATER = T0 + timedelta(days=1)


def _window(identity: str = "shop/cart") -> ScoredWindow:
    namespace, workload = identity.split("/")
    return ScoredWindow(
        identity=identity,
        namespace=namespace,
        workload=workload,
        window_start=T0,
        window_end=T0 + timedelta(seconds=60),
        score=0.9,
        threshold=0.5,
        anomalous=True,
        model="global",
        fallback=True,
    )


#: The smallest policy a proposal for shop/cart may hold (it must select that workload alone).
CART_POLICY = {
    "apiVersion": "cilium.io/v2",
    "kind": "CiliumNetworkPolicy",
    "metadata": {"name": "cart", "namespace": "shop"},
    "spec": {"endpointSelector": {"matchLabels": {"k8s:app": "cart"}}},
}


def _tables(path) -> set[str]:
    with sqlite3.connect(path) as raw:
        return {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


# ------------------------------------------------------------------------------ one schema


def test_every_table_is_on_the_one_base() -> None:
    tables = set(Base.metadata.tables)
    assert {
        "anomalies",
        "scored_windows",
        "proposals",
        "alert_outbox",
        "alert_state",
        "alert_cursor",
        "audit_events",
    } <= tables
    assert not {"anomaly_events", "proposal_events"} & tables  # one event table, not two


def test_a_new_database_has_one_event_table_and_the_kinds_do_not_mix(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'netwarden.db'}"
    with AnomalyStore(url, now=lambda: LATER) as store, ProposalStore(url) as review:
        (a,) = store.record([_window()])
        p = review.create(kind="baseline", identity="shop/cart", policy=CART_POLICY, actor="rita")
        assert a.id == p.id == 1  # the same id, two subjects
        store.acknowledge(a.id, actor="alice")
        assert [e.action for e in store.events(a.id)] == ["open", "acknowledge"]
        assert [e.action for e in review.events(p.id)] == ["propose"]
    tables = _tables(tmp_path / "netwarden.db")
    assert "audit_events" in tables and not {"anomaly_events", "proposal_events"} & tables


# ------------------------------------------------------------------------ the state machine


RULES = {"start": {"new": "running"}, "stop": {"new": "done", "running": "done"}}


def test_state_machine_rules_and_the_default_error() -> None:
    machine = StateMachine(kind="job", states=("new", "running", "done"), actions=RULES)
    assert machine.next_state(7, "new", "start") == "running"
    assert machine.sources("stop") == ("new", "running") and machine.sources("nope") == ()
    assert machine.allows("running", "stop") and not machine.allows("done", "stop")
    with pytest.raises(TransitionError) as err:
        machine.next_state(7, "done", "stop")
    assert str(err.value) == "job 7 is done: cannot stop (stop is allowed from: new, running)"
    assert (err.value.kind, err.value.subject_id, err.value.state, err.value.action) == (
        "job",
        7,
        "done",
        "stop",
    )
    with pytest.raises(TransitionError, match=r"cannot fly \(unknown action\)"):
        machine.next_state(7, "new", "fly")


def test_a_table_naming_an_unknown_state_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown states"):
        StateMachine(kind="job", states=("new",), actions={"start": {"new": "running"}})
    with pytest.raises(ValueError, match="initial state"):
        AuditedLifecycle(
            kind="job", states=("new",), actions={}, initial="gone", create_action="create"
        )


def test_the_domain_errors_are_the_generic_ones() -> None:
    err = LifecycleError(3, "resolved", "acknowledge")
    assert isinstance(err, TransitionError) and err.anomaly_id == err.subject_id == 3
    assert (
        str(err) == "anomaly 3 is resolved: cannot acknowledge (acknowledge is allowed from: open)"
    )
    perr = ProposalLifecycleError(4, "rejected", "approve")
    assert isinstance(perr, TransitionError) and perr.proposal_id == 4
    for missing in (anomaly_lifecycle.AnomalyNotFound(5), proposals.ProposalNotFound(5)):
        assert isinstance(missing, SubjectNotFound) and isinstance(missing, KeyError)
    assert anomaly_lifecycle.LIFECYCLE.kind == "anomaly" and proposals.LIFECYCLE.kind == "proposal"
    assert anomaly_lifecycle.LIFECYCLE.actions is anomaly_lifecycle.ACTIONS
    assert proposals.LIFECYCLE.actions is proposals.ACTIONS


@dataclass
class _Job:
    id: int
    state: str


JOBS = AuditedLifecycle(
    kind="job",
    states=("new", "running", "done"),
    actions=RULES,
    initial="new",
    create_action="create",
)


def test_a_transition_and_its_event_share_one_transaction() -> None:
    with SqlStore("sqlite://", now=lambda: T0) as store:
        job = _Job(1, "new")
        with store._begin() as (session, now):
            JOBS.created(session, job.id, actor="ci", note="queued", at=now)
            assert JOBS.transition(session, job, "start", actor="ci", note="go", at=now) == (
                "running"
            )
        with pytest.raises(RuntimeError), store._begin() as (session, now):
            JOBS.transition(session, job, "stop", actor="ci", note="", at=now)
            raise RuntimeError("the caller's transaction fails, and its event with it")
        refused = _Job(2, "done")
        with pytest.raises(TransitionError), store._begin() as (session, now):
            JOBS.transition(session, refused, "start", actor="ci", note="", at=now)
        assert refused.state == "done"
        with store._begin() as (session, _):
            events = [
                (e.subject_kind, e.subject_id, e.action, e.from_state, e.to_state, e.details)
                for e in JOBS.events(session, 1)
            ]
            assert JOBS.events(session, 2) == []
    assert events == [
        ("job", 1, "create", None, "new", {}),
        ("job", 1, "start", "new", "running", {}),
    ]


def test_a_failed_transaction_keeps_neither_the_state_nor_the_event(backend_url) -> None:
    with AnomalyStore(backend_url, now=lambda: LATER) as store:
        (a,) = store.record([_window()])
        with pytest.raises(RuntimeError), store._transaction() as (session, now):
            row = session.get(anomaly_store._AnomalyRow, a.id)
            anomaly_store._transition(
                session, row, "resolve", actor="bob", note="", at=now, now=now
            )
            session.flush()  # both written, then the transaction fails
            raise RuntimeError("boom")
        assert store.get(a.id).state == "open"  # type: ignore[union-attr]
        assert [e.action for e in store.events(a.id)] == ["open"]


def test_the_outbox_statuses_are_a_state_machine() -> None:
    statuses = outbox.STATUSES
    assert isinstance(statuses, StateMachine) and not isinstance(statuses, AuditedLifecycle)
    assert statuses.next_state(1, outbox.PENDING, "supersede") == outbox.SUPERSEDED
    assert statuses.next_state(1, outbox.SUPERSEDED, "deliver") == outbox.DELIVERED
    assert not statuses.allows(outbox.DELIVERED, "retry")
    assert not statuses.allows(outbox.SUPERSEDED, "supersede")


def test_record_of_copies_fields_and_takes_conversions() -> None:
    @dataclass(frozen=True)
    class Pair:
        a: int
        b: tuple[int, ...]

    row = _Job(id=1, state="x")
    row.a, row.b = 5, [1, 2]  # type: ignore[attr-defined]
    assert record_of(Pair, row, b=tuple(row.b)) == Pair(5, (1, 2))  # type: ignore[attr-defined]


# ------------------------------------------------------------- a database of the old schema

# The schema netwarden wrote before the shared audit table (SQLAlchemy's DDL for the tables of
# detector/store.py and remediation/proposals.py as they were), and what it stored in them.
OLD_SCHEMA = """
CREATE TABLE anomalies (
    id INTEGER NOT NULL,
    identity VARCHAR(512) NOT NULL,
    namespace VARCHAR(253) NOT NULL,
    workload VARCHAR(253) NOT NULL,
    state VARCHAR(16) NOT NULL,
    ongoing BOOLEAN NOT NULL,
    first_window_start DATETIME NOT NULL,
    last_window_end DATETIME NOT NULL,
    window_count INTEGER NOT NULL,
    peak_window_start DATETIME NOT NULL,
    peak_score FLOAT NOT NULL,
    peak_threshold FLOAT NOT NULL,
    model VARCHAR(512) NOT NULL,
    fallback BOOLEAN NOT NULL,
    reasons JSON NOT NULL,
    examples JSON NOT NULL,
    summary TEXT NOT NULL,
    suppressed_until DATETIME,
    state_note TEXT NOT NULL,
    state_actor VARCHAR(256) NOT NULL,
    created_at DATETIME NOT NULL,
    updated_at DATETIME NOT NULL,
    PRIMARY KEY (id)
);
CREATE INDEX ix_anomalies_ongoing_end ON anomalies (ongoing, last_window_end);
CREATE INDEX ix_anomalies_updated ON anomalies (updated_at, id);
CREATE INDEX ix_anomalies_namespace_end ON anomalies (namespace, last_window_end);
CREATE INDEX ix_anomalies_last_window_end ON anomalies (last_window_end);
CREATE INDEX ix_anomalies_identity_end ON anomalies (identity, last_window_end);
CREATE INDEX ix_anomalies_state_end ON anomalies (state, last_window_end);
CREATE INDEX ix_anomalies_state_suppressed_until ON anomalies (state, suppressed_until);
CREATE TABLE anomaly_events (
    id INTEGER NOT NULL,
    anomaly_id INTEGER NOT NULL,
    at DATETIME NOT NULL,
    actor VARCHAR(256) NOT NULL,
    action VARCHAR(32) NOT NULL,
    from_state VARCHAR(16),
    to_state VARCHAR(16) NOT NULL,
    note TEXT NOT NULL,
    PRIMARY KEY (id),
    FOREIGN KEY(anomaly_id) REFERENCES anomalies (id)
);
CREATE INDEX ix_anomaly_events_anomaly_id ON anomaly_events (anomaly_id);
CREATE TABLE scored_windows (
    id INTEGER NOT NULL,
    identity VARCHAR(512) NOT NULL,
    namespace VARCHAR(253) NOT NULL,
    workload VARCHAR(253) NOT NULL,
    window_start DATETIME NOT NULL,
    window_end DATETIME NOT NULL,
    score FLOAT NOT NULL,
    threshold FLOAT NOT NULL,
    anomalous BOOLEAN NOT NULL,
    model VARCHAR(512) NOT NULL,
    fallback BOOLEAN NOT NULL,
    reasons JSON NOT NULL,
    examples JSON NOT NULL,
    summary TEXT NOT NULL,
    anomaly_id INTEGER,
    PRIMARY KEY (id),
    CONSTRAINT uq_scored_windows_identity_start UNIQUE (identity, window_start),
    FOREIGN KEY(anomaly_id) REFERENCES anomalies (id)
);
CREATE INDEX ix_scored_windows_anomaly_id ON scored_windows (anomaly_id);
CREATE TABLE proposals (
    id INTEGER NOT NULL,
    kind VARCHAR(16) NOT NULL,
    identity VARCHAR(512) NOT NULL,
    anomaly_id INTEGER,
    policy JSON NOT NULL,
    patch JSON,
    current JSON,
    state VARCHAR(16) NOT NULL,
    problems JSON NOT NULL,
    dry_run JSON,
    change JSON,
    note TEXT NOT NULL,
    created_at DATETIME NOT NULL,
    updated_at DATETIME NOT NULL,
    PRIMARY KEY (id)
);
CREATE INDEX ix_proposals_state ON proposals (state, id);
CREATE INDEX ix_proposals_identity ON proposals (identity, id);
CREATE TABLE proposal_events (
    id INTEGER NOT NULL,
    proposal_id INTEGER NOT NULL,
    at DATETIME NOT NULL,
    actor VARCHAR(256) NOT NULL,
    action VARCHAR(32) NOT NULL,
    from_state VARCHAR(16),
    to_state VARCHAR(16) NOT NULL,
    note TEXT NOT NULL,
    details JSON NOT NULL,
    PRIMARY KEY (id),
    FOREIGN KEY(proposal_id) REFERENCES proposals (id)
);
CREATE INDEX ix_proposal_events_proposal_id ON proposal_events (proposal_id);

INSERT INTO anomalies VALUES (
    1, 'shop/cart', 'shop', 'cart', 'acknowledged', 0,
    '2026-03-01 12:00:00.000000', '2026-03-01 12:01:00.000000', 1,
    '2026-03-01 12:00:00.000000', 0.9, 0.5, 'global', 1, '[]', '{}', 'port scan',
    NULL, 'mine', 'alice', '2026-03-01 12:02:00.000000', '2026-03-01 12:05:00.000000'
);
INSERT INTO scored_windows VALUES (
    1, 'shop/cart', 'shop', 'cart', '2026-03-01 12:00:00.000000',
    '2026-03-01 12:01:00.000000', 0.9, 0.5, 1, 'global', 1, '[]', '{}', 'port scan', 1
);
INSERT INTO anomaly_events VALUES
    (1, 1, '2026-03-01 12:02:00.000000', 'netwarden', 'open', NULL, 'open',
     'first anomalous window 2026-03-01T12:00:00+00:00'),
    (2, 1, '2026-03-01 12:05:00.000000', 'alice', 'acknowledge', 'open', 'acknowledged',
     'mine');
INSERT INTO proposals VALUES (
    1, 'containment', 'shop/cart', 1, '{"metadata": {"name": "x", "namespace": "shop"}}',
    NULL, NULL, 'rejected', '[{"path": "spec", "message": "missing"}]', NULL, NULL,
    'contain it', '2026-03-01 12:03:00.000000', '2026-03-01 12:04:00.000000'
);
INSERT INTO proposal_events VALUES
    (1, 1, '2026-03-01 12:03:00.000000', 'netwarden', 'propose', NULL, 'proposed',
     'contain it', '{"problems": [{"path": "spec", "message": "missing"}]}'),
    (2, 1, '2026-03-01 12:04:00.000000', 'rita', 'reject', 'proposed', 'rejected',
     'too wide', '{}');
"""


@pytest.fixture
def old_db(tmp_path):
    path = tmp_path / "netwarden.db"
    with sqlite3.connect(path) as raw:
        raw.executescript(OLD_SCHEMA)
    raw.close()
    return path


def _at(minute: int) -> datetime:
    return T0 + timedelta(minutes=minute)


def test_an_old_database_keeps_its_audit_trail(old_db) -> None:
    url = f"sqlite:///{old_db}"
    with AnomalyStore(url, now=lambda: LATER) as store, ProposalStore(url) as review:
        events = store.events(1)
        assert [
            (e.anomaly_id, e.at, e.actor, e.action, e.from_state, e.to_state) for e in events
        ] == [
            (1, _at(2), "netwarden", "open", None, "open"),
            (1, _at(5), "alice", "acknowledge", "open", "acknowledged"),
        ]
        assert events[1].note == "mine"
        assert [(e.proposal_id, e.at, e.actor, e.action, e.to_state) for e in review.events(1)] == [
            (1, _at(3), "netwarden", "propose", "proposed"),
            (1, _at(4), "rita", "reject", "rejected"),
        ]
        assert review.events(1)[0].details == {"problems": [{"path": "spec", "message": "missing"}]}
        assert review.events(1)[1].details == {}
        # The lifecycle carries on from the stored state, after the copied events.
        assert store.resolve(1, actor="bob", note="fixed").state == "resolved"
        assert [e.action for e in store.events(1)] == ["open", "acknowledge", "resolve"]
        with pytest.raises(ProposalLifecycleError, match="proposal 1 is rejected"):
            review.approve(1, actor="rita")
        trail = (store.events(1), review.events(1))
    # Reopening copies nothing twice; the old tables are left as they were.
    with AnomalyStore(url, now=lambda: LATER) as store, ProposalStore(url) as review:
        assert (store.events(1), review.events(1)) == trail
    with sqlite3.connect(old_db) as raw:
        assert raw.execute("SELECT count(*) FROM audit_events").fetchone()[0] == 5
        assert raw.execute("SELECT count(*) FROM anomaly_events").fetchone()[0] == 2
        assert raw.execute("SELECT count(*) FROM proposal_events").fetchone()[0] == 2
    raw.close()


def test_the_first_store_to_open_copies_both_kinds(old_db) -> None:
    """The migration runs once, for the whole schema: whichever store opens first."""
    url = f"sqlite:///{old_db}"
    with AnomalyStore(url, now=lambda: LATER) as store:  # the proposal store not opened yet
        store.resolve(1, actor="bob")
    with sqlite3.connect(old_db) as raw:
        kinds = raw.execute("SELECT subject_kind, count(*) FROM audit_events GROUP BY 1")
        assert dict(kinds.fetchall()) == {"anomaly": 3, "proposal": 2}
    raw.close()
    with ProposalStore(url) as review:
        assert [e.action for e in review.events(1)] == ["propose", "reject"]


def test_an_old_table_written_again_after_the_migration_is_not_copied(old_db) -> None:
    url = f"sqlite:///{old_db}"
    AnomalyStore(url, now=lambda: LATER).close()
    with sqlite3.connect(old_db) as raw:  # an older netwarden writes to its table again
        raw.execute(
            "INSERT INTO anomaly_events VALUES (3, 1, '2026-03-02 12:00:00.000000', 'carol',"
            " 'resolve', 'acknowledged', 'resolved', 'late')"
        )
    raw.close()
    with AnomalyStore(url, now=lambda: LATER) as store:  # versioned now: nothing to adopt
        assert [e.action for e in store.events(1)] == ["open", "acknowledge"]


def _columns(path, table: str) -> list[str]:
    with sqlite3.connect(path) as raw:
        names = [r[1] for r in raw.execute(f"PRAGMA table_info({table})")]
    raw.close()
    return names


def test_an_old_proposals_table_gets_the_warnings_column_on_open(old_db) -> None:
    """A database written before proposals kept warnings opens: the column is added (its rows
    get ``[]``), once, by any store, and new proposals store theirs."""
    url = f"sqlite:///{old_db}"
    assert "warnings" not in _columns(old_db, "proposals")
    with AnomalyStore(url, now=lambda: LATER):  # the migration is the whole schema's
        pass
    assert _columns(old_db, "proposals").count("warnings") == 1
    with ProposalStore(url) as review:
        assert review.get(1).warnings == []  # type: ignore[union-attr]
        created = review.create(
            kind="baseline",
            identity="shop/cart",
            policy=CART_POLICY,
            actor="rita",
            warnings=["would drop shop/frontend -> shop/cart TCP/8080 (12 flows)"],
        )
    with ProposalStore(url) as review:  # reopening adds nothing twice
        assert review.get(created.id).warnings == [  # type: ignore[union-attr]
            "would drop shop/frontend -> shop/cart TCP/8080 (12 flows)"
        ]
        assert [p.warnings for p in review.list()] == [[created.warnings[0]], []]
    assert _columns(old_db, "proposals").count("warnings") == 1


def test_a_missing_column_without_a_value_for_old_rows_stops_the_migration(old_db) -> None:
    """A column the old rows would have no value for cannot be added: the migration fails
    naming it, and the database is left exactly as it was (one transaction)."""
    with sqlite3.connect(old_db) as raw:
        raw.execute("ALTER TABLE scored_windows DROP COLUMN summary")
        before = list(raw.iterdump())
    raw.close()
    with pytest.raises(ValueError, match=r"scored_windows\.summary"):
        AnomalyStore(f"sqlite:///{old_db}", now=lambda: LATER)
    with sqlite3.connect(old_db) as raw:
        assert list(raw.iterdump()) == before
    raw.close()

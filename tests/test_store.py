"""The anomaly store: merging windows into anomalies, re-scoring, the lifecycle, queries,
time zones, persistence and concurrent use."""

from __future__ import annotations

import itertools
import sqlite3
import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netwarden.detector.lifecycle import ACTIONS, STATES, SYSTEM_ACTOR
from netwarden.detector.results import Reason, ScoredWindow
from netwarden.detector.store import (
    AnomalyNotFound,
    AnomalyRecord,
    AnomalyStore,
    LifecycleError,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
STEP = timedelta(seconds=60)


def win(
    i: int,
    identity: str = "shop/cart",
    *,
    score: float = 0.9,
    threshold: float = 0.5,
    anomalous: bool | None = None,
) -> ScoredWindow:
    """Window number ``i`` (T0 + i minutes) of ``identity``; anomalous when score > threshold."""
    namespace, workload = identity.split("/")
    start = T0 + i * STEP
    reason = Reason(
        feature="egress_distinct_dst_ports",
        value=10.0 * i,
        baseline=3.0,
        spread=1.0,
        contribution=score,
        text=f"contacted {10 * i} destination ports (baseline 3)",
    )
    return ScoredWindow(
        identity=identity,
        namespace=namespace,
        workload=workload,
        window_start=start,
        window_end=start + STEP,
        score=score,
        threshold=threshold,
        anomalous=score > threshold if anomalous is None else anomalous,
        model=f"identity:{identity}",
        fallback=i % 2 == 1,
        reasons=(reason,),
        examples={"peers": [f"10.0.0.{i}"], "ports": [i]},
        summary=f"window {i}",
    )


def normal(i: int, identity: str = "shop/cart") -> ScoredWindow:
    return win(i, identity, score=0.1)


class Clock:
    """An injectable clock that tests move by hand."""

    def __init__(self, t: datetime = T0 + timedelta(days=1)) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t

    def advance(self, **kwargs: float) -> None:
        self.t += timedelta(**kwargs)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["memory", "file", "postgresql"])
def store(request, tmp_path, clock):
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
    else:
        url = "sqlite://" if request.param == "memory" else f"sqlite:///{tmp_path / 'netwarden.db'}"
    s = AnomalyStore(url, now=clock)
    yield s
    s.close()


def runs(store: AnomalyStore, identity: str = "shop/cart") -> list[tuple[int, int, bool]]:
    """(first window number, window count, ongoing) of the identity's anomalies, oldest first."""
    found = sorted(store.list(identity=identity), key=lambda a: a.first_window_start)
    return [((a.first_window_start - T0) // STEP, a.window_count, a.ongoing) for a in found]


# --------------------------------------------------------------------------------- merging


def test_consecutive_anomalous_windows_merge(store) -> None:
    created = store.record([win(0), win(1)])
    assert len(created) == 1 and created[0].window_count == 2
    extended = store.record([win(2)])
    assert [a.id for a in extended] == [created[0].id]
    a = store.get(created[0].id)
    assert (a.first_window_start, a.last_window_end, a.window_count) == (T0, T0 + 3 * STEP, 3)
    assert a.ongoing and a.state == "open"
    assert (a.identity, a.namespace, a.workload) == ("shop/cart", "shop", "cart")


def test_gap_without_window_splits(store) -> None:
    store.record([win(0), win(1)])
    store.record([win(3)])  # no window 2 at all: not directly consecutive
    assert runs(store) == [(0, 2, False), (3, 1, True)]


def test_normal_window_ends_the_run_and_splits(store) -> None:
    store.record([win(0), win(1)])
    assert runs(store) == [(0, 2, True)]
    assert store.record([normal(2)]) == []
    assert runs(store) == [(0, 2, False)]
    store.record([win(3)])
    assert runs(store) == [(0, 2, False), (3, 1, True)]


def test_batch_is_ordered_by_time_before_merging(store) -> None:
    store.record([win(2), win(0), win(1)])
    assert runs(store) == [(0, 3, True)]


def test_interleaved_identities_merge_per_identity(store) -> None:
    a, b, c = "shop/cart", "shop/pay", "db/pg"
    store.record([win(0, a), win(0, b), normal(0, c)])
    store.record([win(1, b), normal(1, a), win(1, c)])
    store.record([win(2, c), win(2, a), win(2, b)])
    assert runs(store, a) == [(0, 1, False), (2, 1, True)]
    assert runs(store, b) == [(0, 3, True)]
    assert runs(store, c) == [(1, 2, True)]
    assert len(store.windows(a)) == len(store.windows(b)) == len(store.windows(c)) == 3


def test_record_returns_only_anomalies_created_or_extended(store) -> None:
    first = store.record([win(0, "a/x"), win(0, "b/y")])
    assert {r.identity for r in first} == {"a/x", "b/y"}
    second = store.record([win(1, "a/x"), normal(1, "b/y"), normal(0, "c/z")])
    assert [r.identity for r in second] == ["a/x"]
    assert all(isinstance(r, AnomalyRecord) for r in first + second)
    assert store.record([]) == []


def test_peak_window_supplies_the_explanation(store) -> None:
    windows = [
        win(0, score=0.7, threshold=0.5),
        win(1, score=0.95, threshold=0.6),
        win(2, score=0.8, threshold=0.55),
        win(3, score=0.95, threshold=0.7),
    ]
    (a,) = store.record(windows[:2])
    assert a.peak_window_start == T0 + STEP
    (a,) = store.record(windows[2:])  # a later tie does not move the peak
    peak = windows[1]
    assert (a.peak_score, a.peak_threshold, a.peak_window_start) == (0.95, 0.6, peak.window_start)
    assert (a.reasons, a.examples, a.summary) == (peak.reasons, peak.examples, peak.summary)
    assert (a.model, a.fallback) == (peak.model, peak.fallback)
    assert a.window_count == 4


@settings(max_examples=40, deadline=None)
@given(
    flags=st.lists(st.sampled_from(["anomalous", "normal", "missing"]), max_size=20),
    cuts=st.lists(st.integers(0, 20), max_size=4),
)
def test_anomalies_are_the_maximal_consecutive_runs(flags, cuts) -> None:
    windows = [
        win(i) if f == "anomalous" else normal(i) for i, f in enumerate(flags) if f != "missing"
    ]
    expected: list[tuple[int, int]] = []
    for i, f in enumerate(flags):
        if f == "anomalous" and i > 0 and flags[i - 1] == "anomalous":
            expected[-1] = (expected[-1][0], expected[-1][1] + 1)
        elif f == "anomalous":
            expected.append((i, 1))
    bounds = sorted({0, len(windows), *(c for c in cuts if c <= len(windows))})
    with AnomalyStore("sqlite://") as s:
        for lo, hi in itertools.pairwise(bounds):  # any batching gives the same anomalies
            s.record(windows[lo:hi])
        assert [(first, n) for first, n, _ in runs(s)] == expected
        ongoing = [first for first, _, on in runs(s) if on]
        last = windows[-1] if windows else None
        assert ongoing == ([expected[-1][0]] if last is not None and last.anomalous else [])


# ------------------------------------------------------------------------------- re-scoring


def test_re_recording_is_idempotent(store) -> None:
    batch = [win(0), win(1), normal(2), win(3)]
    first = store.record(batch)
    again = store.record(batch)
    assert [a.id for a in again] == [a.id for a in first]
    assert [(a.window_count, a.first_window_start, a.last_window_end) for a in again] == [
        (a.window_count, a.first_window_start, a.last_window_end) for a in first
    ]
    assert runs(store) == [(0, 2, False), (3, 1, True)]
    assert store.windows("shop/cart") == batch
    assert [e.action for e in store.events(first[0].id)] == ["open"]


def test_a_window_twice_in_one_batch_is_stored_once_as_its_last_verdict(store) -> None:
    """New normal windows are written as plain rows after the anomalies; the same window twice
    in one batch (normal, then anomalous) still ends as one row holding the last verdict, in
    the anomaly it opened; and the other way round, it leaves that anomaly again."""
    (a,) = store.record([normal(0), normal(1), win(1), normal(2)])
    assert (a.first_window_start, a.window_count) == (T0 + STEP, 1)
    assert store.windows("shop/cart") == [normal(0), win(1), normal(2)]
    (b,) = store.record([win(5), normal(5)])
    assert b.window_count == 0 and store.windows("shop/cart")[-1] == normal(5)
    # what is left after purging every normal window: the one window in an anomaly
    assert store.purge_windows(T0 + timedelta(days=1)) == 3
    assert store.windows("shop/cart") == [win(1)]


def test_re_scoring_updates_the_window_and_the_peak(store) -> None:
    store.record([win(0, score=0.9), win(1, score=0.7), win(2, score=0.8)])
    (a,) = store.record([win(1, score=0.99)])
    assert (a.window_count, a.peak_score, a.peak_window_start) == (3, 0.99, T0 + STEP)
    (a,) = store.record([win(1, score=0.6)])  # the peak falls back to the best left
    assert (a.window_count, a.peak_score, a.peak_window_start) == (3, 0.9, T0)
    assert [w.score for w in store.windows("shop/cart")] == [0.9, 0.6, 0.8]


def test_re_scoring_as_normal_leaves_the_anomaly(store) -> None:
    store.record([win(0), win(1, score=0.95)])
    (a,) = store.record([normal(1)])
    assert (a.window_count, a.last_window_end, a.peak_window_start) == (1, T0 + STEP, T0)
    assert not a.ongoing  # the identity's latest window is now normal
    (a,) = store.record([normal(0)])  # nothing anomalous left: netwarden resolves it
    assert (a.state, a.window_count, a.state_actor) == ("resolved", 0, SYSTEM_ACTOR)
    assert store.events(a.id)[-1].action == "resolve"


def test_re_scoring_as_anomalous_merges(store) -> None:
    store.record([win(0), normal(1)])
    store.record([win(2)])
    assert runs(store) == [(0, 1, False), (2, 1, True)]
    store.record([win(1)])  # directly after anomaly 0; not the latest window
    assert runs(store) == [(0, 2, False), (2, 1, True)]


# -------------------------------------------------------------------------------- lifecycle

REACH = {
    "open": [],
    "acknowledged": ["acknowledge"],
    "suppressed": ["suppress"],
    "resolved": ["resolve"],
}


def _do(
    store: AnomalyStore,
    action: str,
    anomaly_id: int,
    clock: Clock,
    actor: str = "alice",
    note: str = "n",
) -> AnomalyRecord:
    if action == "suppress":
        return store.suppress(
            anomaly_id, actor=actor, until=clock() + timedelta(hours=1), reason=note
        )
    return getattr(store, action)(anomaly_id, actor=actor, note=note)


@pytest.mark.parametrize(
    ("state", "action"), [(s, a) for s in STATES for a in ("acknowledge", "suppress", "resolve")]
)
def test_every_transition(store, clock, state, action) -> None:
    (a,) = store.record([win(0)])
    for step in REACH[state]:
        _do(store, step, a.id, clock, actor="setup")
    assert store.get(a.id).state == state
    before = store.events(a.id)
    target = ACTIONS[action].get(state)
    if target is None:
        with pytest.raises(LifecycleError) as err:
            _do(store, action, a.id, clock)
        assert (err.value.anomaly_id, err.value.state, err.value.action) == (a.id, state, action)
        assert f"anomaly {a.id} is {state}: cannot {action}" in str(err.value)
        assert isinstance(err.value, ValueError)
        assert store.get(a.id).state == state and store.events(a.id) == before
    else:
        after = _do(store, action, a.id, clock, actor="bob", note="why")
        assert after.state == target == store.get(a.id).state
        assert (after.state_actor, after.state_note, after.updated_at) == ("bob", "why", clock())
        event = store.events(a.id)[-1]
        assert (
            event.actor,
            event.action,
            event.from_state,
            event.to_state,
            event.note,
            event.at,
        ) == ("bob", action, state, target, "why", clock())
        assert len(store.events(a.id)) == len(before) + 1


def test_the_table_is_the_one_in_the_brief() -> None:
    allowed = {(s, t) for table in ACTIONS.values() for s, t in table.items()}
    assert allowed == {
        ("open", "acknowledged"),
        ("open", "suppressed"),
        ("open", "resolved"),
        ("acknowledged", "suppressed"),
        ("acknowledged", "resolved"),
        ("suppressed", "open"),
        ("suppressed", "resolved"),
    }


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.acknowledge(999, actor="a"),
        lambda s: s.suppress(999, actor="a", until=T0 + timedelta(days=9), reason="r"),
        lambda s: s.resolve(999, actor="a"),
        lambda s: s.events(999),
    ],
)
def test_unknown_anomaly(store, call) -> None:
    with pytest.raises(AnomalyNotFound, match="no anomaly with id 999") as err:
        call(store)
    assert isinstance(err.value, KeyError)
    assert store.get(999) is None


def test_suppress_needs_a_future_until_a_reason_and_an_actor(store, clock) -> None:
    (a,) = store.record([win(0)])
    with pytest.raises(ValueError, match="not in the future"):
        store.suppress(a.id, actor="a", until=clock(), reason="maintenance")
    with pytest.raises(ValueError, match="reason"):
        store.suppress(a.id, actor="a", until=clock() + STEP, reason="  ")
    with pytest.raises(ValueError, match="timezone-aware"):
        store.suppress(a.id, actor="a", until=(clock() + STEP).replace(tzinfo=None), reason="r")
    with pytest.raises(ValueError, match="actor"):
        store.acknowledge(a.id, actor="")
    assert store.get(a.id).state == "open"
    s = store.suppress(a.id, actor="a", until=clock() + STEP, reason="maintenance")
    assert (s.suppressed_until, s.state_note) == (clock() + STEP, "maintenance")


def test_suppression_expires_lazily(store, clock) -> None:
    (a,) = store.record([win(0)])
    until = clock() + timedelta(minutes=10)
    store.suppress(a.id, actor="alice", until=until, reason="deploy window")
    clock.advance(minutes=9, seconds=59)
    assert store.get(a.id).state == "suppressed"
    assert [r.id for r in store.list(state="suppressed")] == [a.id]
    clock.advance(seconds=1)
    assert [r.id for r in store.list(state="suppressed")] == []  # applied on read
    reopened = store.get(a.id)
    assert (reopened.state, reopened.suppressed_until) == ("open", None)
    last = store.events(a.id)[-1]
    assert (last.action, last.actor, last.from_state, last.to_state, last.at) == (
        "unsuppress",
        SYSTEM_ACTOR,
        "suppressed",
        "open",
        until,
    )
    assert store.acknowledge(a.id, actor="alice").state == "acknowledged"


def test_suppression_expiry_is_applied_on_record(store, clock) -> None:
    (a,) = store.record([win(0)])
    store.suppress(a.id, actor="alice", until=clock() + STEP, reason="noisy")
    (s,) = store.record([win(1)])  # a suppressed anomaly still grows, and stays suppressed
    assert (s.id, s.state, s.window_count, s.ongoing) == (a.id, "suppressed", 2, True)
    clock.advance(minutes=2)
    (o,) = store.record([win(2)])
    assert (o.id, o.state, o.window_count) == (a.id, "open", 3)


def test_acknowledged_anomaly_keeps_growing(store, clock) -> None:
    (a,) = store.record([win(0)])
    store.acknowledge(a.id, actor="alice")
    (b,) = store.record([win(1)])
    assert (b.id, b.state, b.window_count) == (a.id, "acknowledged", 2)


def test_resolved_anomaly_is_never_reopened(store) -> None:
    (a,) = store.record([win(0)])
    resolved = store.resolve(a.id, actor="alice", note="fixed the cron job")
    assert not resolved.ongoing
    (b,) = store.record([win(1)])  # directly consecutive, but a is resolved
    assert b.id != a.id and (b.state, b.window_count, b.ongoing) == ("open", 1, True)
    a_now = store.get(a.id)
    assert (a_now.state, a_now.window_count, a_now.ongoing) == ("resolved", 1, False)
    store.record([win(1, score=0.97)])  # re-scoring b's window does not touch a
    assert store.get(a.id).window_count == 1 and store.get(b.id).peak_score == 0.97


def test_audit_trail(store, clock) -> None:
    (a,) = store.record([win(0)])
    clock.advance(minutes=1)
    store.acknowledge(a.id, actor="alice", note="looking")
    clock.advance(minutes=1)
    store.suppress(a.id, actor="bob", until=clock() + timedelta(minutes=5), reason="load test")
    clock.advance(minutes=10)
    store.resolve(a.id, actor="carol", note="expected traffic")
    events = store.events(a.id)
    assert [(e.action, e.actor, e.from_state, e.to_state, e.note) for e in events] == [
        ("open", SYSTEM_ACTOR, None, "open", f"first anomalous window {T0.isoformat()}"),
        ("acknowledge", "alice", "open", "acknowledged", "looking"),
        ("suppress", "bob", "acknowledged", "suppressed", "load test"),
        ("unsuppress", SYSTEM_ACTOR, "suppressed", "open", events[3].note),
        ("resolve", "carol", "open", "resolved", "expected traffic"),
    ]
    assert [e.at for e in events] == sorted(e.at for e in events)
    assert all(e.anomaly_id == a.id for e in events) and len({e.id for e in events}) == 5
    assert store.events(a.id) == events  # reading does not write


# ---------------------------------------------------------------------------------- queries


@pytest.fixture
def populated(store, clock) -> AnomalyStore:
    """Anomalies ending at 1, 3, 5, ... minutes, alternating identities and namespaces."""
    idents = ["shop/cart", "shop/pay", "db/pg"]
    for i in range(9):
        store.record([win(2 * i, idents[i % 3]), normal(2 * i + 1, idents[i % 3])])
    ids = {a.identity: a.id for a in reversed(store.list(limit=100))}  # each one's newest
    store.acknowledge(ids["db/pg"], actor="a")
    store.resolve(ids["shop/pay"], actor="a")
    return store


def test_list_filters(populated) -> None:
    s = populated
    everything = s.list()
    assert len(everything) == 9
    ends = [a.last_window_end for a in everything]
    assert ends == sorted(ends, reverse=True)  # newest first
    assert {a.identity for a in s.list(identity="shop/pay")} == {"shop/pay"}
    assert len(s.list(identity="shop/pay")) == 3
    assert {a.identity for a in s.list(namespace="shop")} == {"shop/cart", "shop/pay"}
    assert [a.identity for a in s.list(state="acknowledged")] == ["db/pg"]
    assert [a.identity for a in s.list(state="resolved")] == ["shop/pay"]
    assert len(s.list(state="open")) == 7
    assert s.list(identity="nope/nope") == []
    # overlap with [since, until): anomaly i covers [2i, 2i+1) minutes
    window = s.list(since=T0 + 4 * STEP, until=T0 + 9 * STEP)
    assert sorted((a.first_window_start - T0) // STEP for a in window) == [4, 6, 8]
    assert s.list(since=T0 + 5 * STEP, until=T0 + 6 * STEP) == []
    assert len(s.list(namespace="shop", state="open", since=T0 + 4 * STEP)) == 3


def test_list_pagination(populated) -> None:
    everything = populated.list()
    pages = [populated.list(limit=4, offset=o) for o in (0, 4, 8, 12)]
    assert [len(p) for p in pages] == [4, 4, 1, 0]
    assert [a.id for p in pages for a in p] == [a.id for a in everything]
    assert populated.list(limit=0) == []


@pytest.mark.parametrize(
    "kwargs",
    [{"state": "closed"}, {"limit": -1}, {"offset": -1}, {"since": T0.replace(tzinfo=None)}],
)
def test_list_rejects_bad_arguments(store, kwargs) -> None:
    with pytest.raises(ValueError):
        store.list(**kwargs)


def test_windows_query(store) -> None:
    batch = [win(0), normal(1), win(2), normal(3), win(0, "other/x")]
    store.record(batch)
    assert store.windows("shop/cart") == batch[:4]
    assert [w.window_start for w in store.windows("shop/cart", since=T0 + STEP)] == [
        T0 + STEP,
        T0 + 2 * STEP,
        T0 + 3 * STEP,
    ]
    assert [
        w.window_start
        for w in store.windows("shop/cart", since=T0 + 30 * STEP / 60, until=T0 + 2 * STEP)
    ] == [T0, T0 + STEP]
    assert len(store.windows("shop/cart", limit=2)) == 2
    assert store.windows("nobody/here") == []


def test_list_by_peak_score_range(store) -> None:
    store.record([win(0, "a/x", score=0.6), win(0, "b/y", score=2.0), win(0, "c/z", score=3.5)])

    def by(**kwargs: float | str) -> list[str]:
        return sorted(a.identity for a in store.list(**kwargs))

    assert by(min_score=2.0) == ["b/y", "c/z"]  # the lower bound is inclusive
    assert by(max_score=2.0) == ["a/x"]  # the upper bound is exclusive
    assert by(min_score=1.0, max_score=3.5) == ["b/y"]
    assert by(min_score=float("-inf"), max_score=float("inf")) == ["a/x", "b/y", "c/z"]
    assert by(min_score=2.0, namespace="c") == ["c/z"]
    with pytest.raises(ValueError, match="min_score"):
        store.list(min_score=float("nan"))


def test_count_matches_list(populated) -> None:
    s = populated
    filters = [
        {},
        {"identity": "shop/pay"},
        {"namespace": "shop"},
        {"state": "open"},
        {"since": T0 + 4 * STEP, "until": T0 + 9 * STEP},
        {"min_score": 0.95},
        {"max_score": 0.95, "namespace": "db"},
        {"identity": "nope/nope"},
    ]
    for kwargs in filters:
        assert s.count(**kwargs) == len(s.list(limit=1000, **kwargs)), kwargs
    assert s.count() == 9
    with pytest.raises(ValueError, match="unknown state"):
        s.count(state="closed")


def test_identities_summary(store, clock) -> None:
    store.record([win(0), win(1), normal(2), win(3, score=0.8)])  # two anomalies of shop/cart
    store.record([win(0, "db/pg"), normal(1, "db/pg")])
    store.record([normal(5, "shop/pay")])
    (first, *_) = store.list(identity="shop/cart")
    store.acknowledge(first.id, actor="alice")  # acknowledged: no longer counted as open
    summaries = {i.identity: i for i in store.identities()}
    assert list(summaries) == ["db/pg", "shop/cart", "shop/pay"]  # sorted by identity
    cart = summaries["shop/cart"]
    assert (cart.namespace, cart.workload, cart.windows, cart.open_anomalies) == (
        "shop",
        "cart",
        4,
        1,
    )
    assert (cart.first_window_start, cart.last_window_end) == (T0, T0 + 4 * STEP)
    assert (cart.last_score, cart.last_threshold, cart.last_anomalous) == (0.8, 0.5, True)
    pg = summaries["db/pg"]
    assert (pg.windows, pg.last_score, pg.last_anomalous, pg.open_anomalies) == (2, 0.1, False, 1)
    pay = summaries["shop/pay"]
    assert (pay.windows, pay.first_window_start, pay.open_anomalies) == (1, T0 + 5 * STEP, 0)
    assert pay.last_window_end.tzinfo is UTC
    assert [i.identity for i in store.identities(namespace="shop")] == ["shop/cart", "shop/pay"]
    assert store.identities(namespace="nowhere") == []


def test_identities_of_an_empty_store(store) -> None:
    assert store.identities() == []


def test_recent_windows_newest_first(store) -> None:
    store.record([win(i) if i % 2 else normal(i) for i in range(6)])
    recent = store.windows("shop/cart", limit=3, newest_first=True)
    assert [(w.window_start - T0) // STEP for w in recent] == [5, 4, 3]
    bounded = store.windows("shop/cart", until=T0 + 3 * STEP, newest_first=True)
    assert [(w.window_start - T0) // STEP for w in bounded] == [2, 1, 0]


def test_now_is_the_store_clock(store, clock) -> None:
    assert store.now() == clock()
    clock.advance(minutes=5)
    assert store.now() == clock() and store.now().tzinfo is UTC


# ---------------------------------------------------------------------- time zones, storage


def test_timezone_aware_round_trip(store) -> None:
    plus2 = timezone(timedelta(hours=2))
    w = win(0)
    local = ScoredWindow(
        **{
            **{f: getattr(w, f) for f in w.__slots__},
            "window_start": w.window_start.astimezone(plus2),
            "window_end": w.window_end.astimezone(plus2),
        }
    )
    (a,) = store.record([local])
    (back,) = store.windows("shop/cart")
    for value in (
        back.window_start,
        back.window_end,
        a.first_window_start,
        a.last_window_end,
        a.peak_window_start,
        a.created_at,
        store.events(a.id)[0].at,
    ):
        assert value.tzinfo is UTC
    assert back == w  # same instants, now in UTC
    (b,) = store.record([win(1)])  # and merging compares instants, not wall clocks
    assert b.id == a.id and b.window_count == 2


@pytest.mark.parametrize(
    "bad",
    [
        ScoredWindow(
            "a/b", "a", "b", T0.replace(tzinfo=None), T0 + STEP, 1.0, 0.5, True, "g", True
        ),
        ScoredWindow("a/b", "a", "b", T0, T0, 1.0, 0.5, True, "g", True),
        ScoredWindow("a/b", "a", "b", T0, T0 + STEP, float("nan"), 0.5, True, "g", True),
        ScoredWindow("", "a", "b", T0, T0 + STEP, 1.0, 0.5, True, "g", True),
    ],
)
def test_bad_windows_are_refused_and_the_batch_is_not_stored(store, bad) -> None:
    with pytest.raises(ValueError):
        store.record([win(0, "a/b"), bad])
    assert store.windows("a/b") == [] and store.list() == []


def test_persistence_across_reopening(backend_url, tmp_path, clock) -> None:
    url = backend_url
    with AnomalyStore(url, now=clock) as s:
        (a,) = s.record([win(0), win(1, score=0.99)])
        s.suppress(a.id, actor="alice", until=clock() + timedelta(hours=1), reason="known")
        before, events = s.get(a.id), s.events(a.id)
    with AnomalyStore(url, now=clock) as s:
        assert s.get(a.id) == before and s.events(a.id) == events
        assert s.windows("shop/cart") == [win(0), win(1, score=0.99)]
        (again,) = s.record([win(2)])  # the run continues after a restart
        assert (again.id, again.window_count, again.state) == (a.id, 3, "suppressed")
    if not url.startswith("sqlite"):
        return
    with sqlite3.connect(tmp_path / "netwarden.db") as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_closed_store_refuses_calls(tmp_path) -> None:
    s = AnomalyStore(f"sqlite:///{tmp_path / 'x.db'}")
    s.close()
    with pytest.raises(RuntimeError, match="closed"):
        s.list()


# ------------------------------------------------------------------ following changes (alerts)


def test_updated_since_follows_every_change(store, clock) -> None:
    (a,) = store.record([win(0)])
    start = clock()
    assert [r.id for r in store.updated_since(start - STEP)] == [a.id]
    assert store.updated_since(start, after_id=a.id) == []  # the bound is exclusive
    clock.advance(seconds=5)
    store.record([normal(1)])  # the run ends: ongoing flips, updated_at moves
    (changed,) = store.updated_since(start, after_id=a.id)
    assert (changed.id, changed.ongoing, changed.updated_at) == (a.id, False, clock())
    clock.advance(seconds=5)
    (b,) = store.record([win(2, "db/pg")])
    clock.advance(seconds=5)
    store.acknowledge(a.id, actor="alice")
    assert [(r.id, r.state) for r in store.updated_since(start)] == [
        (b.id, "open"),
        (a.id, "acknowledged"),
    ]  # oldest change first


def test_updated_since_pages_through_equal_timestamps(store, clock) -> None:
    store.record([win(0, f"ns/w{k}") for k in range(7)])  # one batch: one updated_at
    seen: list[int] = []
    since, after = clock() - STEP, 0
    while page := store.updated_since(since, after_id=after, limit=3):
        seen += [r.id for r in page]
        since, after = page[-1].updated_at, page[-1].id
    assert seen == sorted(seen) and len(set(seen)) == 7
    with pytest.raises(ValueError):
        store.updated_since(since.replace(tzinfo=None))


def test_updated_since_sees_a_suppression_expiry(store, clock) -> None:
    (a,) = store.record([win(0)])
    store.suppress(a.id, actor="alice", until=clock() + STEP, reason="deploy")
    mark = clock()
    clock.advance(minutes=2)
    (back,) = store.updated_since(mark, after_id=a.id)
    assert (back.id, back.state) == (a.id, "open")


def test_get_many(store) -> None:
    created = store.record([win(0, f"ns/w{k}") for k in range(4)])
    ids = [r.id for r in created]
    assert [r.id for r in store.get_many([ids[2], ids[0], ids[2], 999])] == [ids[0], ids[2]]
    assert store.get_many([]) == []
    assert store.get_many(ids) == [store.get(i) for i in ids]


# ------------------------------------------------------------------------------ concurrency

THREADS, STEPS = 8, 30


def _hammer(stores: list[AnomalyStore]) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def work(k: int) -> None:
        try:
            s = stores[k % len(stores)]
            start.wait()
            for i in range(STEPS):
                # own identity (one run), a shared namespace, and everyone's reads in between
                s.record([win(i, f"ns{k % 2}/w{k}"), normal(i, f"quiet/w{k}")])
                s.list(namespace=f"ns{k % 2}", limit=5)
                if i == STEPS // 2:
                    (a,) = s.list(identity=f"ns{k % 2}/w{k}")
                    s.acknowledge(a.id, actor=f"thread-{k}")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    check = stores[0]
    for k in range(THREADS):
        assert len(check.windows(f"ns{k % 2}/w{k}")) == STEPS
        assert len(check.windows(f"quiet/w{k}")) == STEPS
        (a,) = check.list(identity=f"ns{k % 2}/w{k}")
        assert (a.window_count, a.state, a.ongoing) == (STEPS, "acknowledged", True)
        assert [e.actor for e in check.events(a.id)] == [SYSTEM_ACTOR, f"thread-{k}"]
    assert len(check.list(limit=1000)) == THREADS


def test_concurrent_record_from_threads(store) -> None:
    _hammer([store])


def test_concurrent_record_from_two_stores_on_one_database(backend_url) -> None:
    stores = [AnomalyStore(backend_url), AnomalyStore(backend_url)]  # as two processes would
    try:
        _hammer(stores)
    finally:
        for s in stores:
            s.close()


def test_end_silent_runs(store) -> None:
    """An identity that goes quiet ends its run; an active one keeps it; resolved ones stay."""
    store.record([win(0, "shop/cart"), win(0, "shop/api"), win(1, "shop/api")])
    ended = store.end_silent_runs(T0 + 2 * STEP)  # windows up to the end of window 1 closed
    assert [a.identity for a in ended] == ["shop/cart"]
    (cart,) = store.list(identity="shop/cart")
    (api,) = store.list(identity="shop/api")
    assert not cart.ongoing and api.ongoing
    assert store.end_silent_runs(T0 + 2 * STEP) == []  # idempotent
    store.record([win(2, "shop/cart")])  # active again: a new anomaly, not the old one
    assert [a.ongoing for a in store.list(identity="shop/cart")] == [True, False]
    with pytest.raises(ValueError):
        store.end_silent_runs(datetime(2026, 3, 1))  # naive: refused


def test_purge_windows_keeps_the_evidence(store) -> None:
    store.record([normal(0), win(1), win(2), normal(3), normal(4)])
    assert store.purge_windows(T0 + 4 * STEP + STEP) == 2  # 0 and 3 ended; 1, 2 are evidence
    kept = [w.window_start for w in store.windows("shop/cart")]
    assert kept == [T0 + STEP, T0 + 2 * STEP, T0 + 4 * STEP]
    (anomaly,) = store.list()
    assert anomaly.window_count == 2


def test_novelty_fields_round_trip_and_older_databases_gain_their_columns(tmp_path) -> None:
    """Evidence, changes, incident and role are stored with each window (and the peak's on the
    anomaly); a database written before they existed (and before migrations) gets the columns
    when opened."""
    from dataclasses import replace

    path = tmp_path / "old.db"
    AnomalyStore(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as db:
        columns = ("evidence", "changes", "new_edges", "model_anomalous", "incident", "role")
        for column in (*columns, "attacker"):
            db.execute(f"ALTER TABLE scored_windows DROP COLUMN {column}")
        for column in ("incident", "role"):
            db.execute(f"ALTER TABLE anomalies DROP COLUMN {column}")
        db.execute("DROP TABLE alembic_version")
    store = AnomalyStore(f"sqlite:///{path}")
    w = replace(
        win(1),
        evidence=({"rule": "port_sweep", "text": "t", "edges": ["to a/b TCP/22"], "peer": ""},),
        changes=("chg-1",),
        new_edges=3,
        model_anomalous=True,
        incident="inc-1",
        role="attacker",
        attacker="shop/cart",
    )
    (anomaly,) = store.record([w])
    assert (anomaly.incident, anomaly.role) == ("inc-1", "attacker")
    (back,) = store.windows("shop/cart")
    assert back == w
    store.close()


def test_a_suppression_expiry_is_recorded_once_when_many_find_it_due(backend_url, clock) -> None:
    """Every call applies due expiries first; callers in other processes that find the same
    one due at once record one event between them (the rows are locked on PostgreSQL)."""
    stores = [AnomalyStore(backend_url, now=clock) for _ in range(4)]
    try:
        created = stores[0].record([win(0, f"ns/w{k}") for k in range(20)])
        for a in created:
            stores[0].suppress(a.id, actor="alice", until=clock() + STEP, reason="deploy")
        clock.advance(minutes=2)
        start = threading.Barrier(len(stores))
        errors: list[BaseException] = []

        def read(s: AnomalyStore) -> None:
            try:
                start.wait()
                s.list()
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=read, args=(s,)) for s in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert errors == []
        for a in created:
            actions = [e.action for e in stores[0].events(a.id)]
            assert actions == ["open", "suppress", "unsuppress"], (a.id, actions)
    finally:
        for s in stores:
            s.close()

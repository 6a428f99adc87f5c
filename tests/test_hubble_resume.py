"""Resuming a Hubble stream: the request it sends, and skipping what was already delivered."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netwarden.hubble import flow_pb2
from netwarden.ingest.sources.hubble import flows_request, parse_since, target
from netwarden.ingest.sources.resume import ResumeTracker

S = 1_000_000_000


def test_request_matches_hubble_observe_shapes() -> None:
    request = flows_request(namespaces=["shop"], verdicts=["dropped"], since_ns=5 * S + 7)
    assert request.follow
    assert [
        (list(f.source_pod), list(f.destination_pod), list(f.verdict)) for f in request.whitelist
    ] == [(["shop/"], [], [flow_pb2.DROPPED]), ([], ["shop/"], [flow_pb2.DROPPED])]
    assert (request.since.seconds, request.since.nanos) == (5, 7)
    only_verdict = flows_request(verdicts=["FORWARDED", "AUDIT"])
    assert [list(f.verdict) for f in only_verdict.whitelist] == [[1, 4]]
    everything = flows_request()
    assert not everything.whitelist and not everything.HasField("since")
    with pytest.raises(ValueError, match="unknown verdict DENIED.*DROPPED"):
        flows_request(verdicts=["DENIED"])


def test_since_and_target_parsing() -> None:
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    assert parse_since("5m", now) == now - timedelta(minutes=5)
    assert parse_since("1.5h", now) == now - timedelta(minutes=90)
    assert parse_since("2026-11-26T10:00:00Z", now) == now - timedelta(hours=2)
    assert parse_since("2026-11-26T10:00:00", now).tzinfo is UTC
    assert parse_since("", now) is None and parse_since(None, now) is None
    with pytest.raises(ValueError, match="RFC 3339 time.*duration"):
        parse_since("yesterday", now)
    assert target("/var/run/cilium/hubble.sock") == "unix:///var/run/cilium/hubble.sock"
    assert target("unix:///x.sock") == "unix:///x.sock"
    assert target("hubble-relay:4245") == "hubble-relay:4245"
    assert target("[::1]:4245") == "[::1]:4245"
    for bad, match in (
        ("", "empty"),
        ("relay", "host:port"),
        ("relay:99999", "host:port"),
        ("tls://relay:443", "without tls://"),
    ):
        with pytest.raises(ValueError, match=match):
            target(bad)


def test_resume_point_is_overlap_before_the_newest_flow() -> None:
    tracker = ResumeTracker(overlap_seconds=2, limit=100)
    assert tracker.resume_since_ns() is None
    for t in (10, 11, 13, 12):  # out of order, as a Relay may deliver
        assert tracker.is_new(t * S, f"u{t}")
    assert tracker.resume_since_ns() == 11 * S
    tracker.reconnected()
    # the server sends again everything since 11 s, then new flows
    resent = [tracker.is_new(t * S, f"u{t}") for t in (11, 12, 13)]
    assert resent == [False, False, False] and tracker.duplicates == 3
    assert tracker.is_new(14 * S, "u14") and tracker.is_new(11 * S, "late-but-new")


def test_identical_flows_are_kept_as_often_as_they_occur() -> None:
    """Without uuids the key is the content: two identical flows are two flows."""
    tracker = ResumeTracker(overlap_seconds=1, limit=100)
    assert tracker.is_new(5 * S, b"same") and tracker.is_new(5 * S, b"same")
    tracker.reconnected()
    assert [tracker.is_new(5 * S, b"same") for _ in range(3)] == [False, False, True]


def test_memory_is_bounded_and_the_resume_point_moves_past_what_was_forgotten() -> None:
    tracker = ResumeTracker(overlap_seconds=3600, limit=10)
    for i in range(25):
        tracker.is_new(100 * S + i, f"k{i}")
    assert tracker.remembered == 10
    since = tracker.resume_since_ns()
    assert since == 100 * S + 15  # keys 0..14 were forgotten: never asked for again
    tracker.reconnected()
    assert all(not tracker.is_new(100 * S + i, f"k{i}") for i in range(15, 25))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 40), st.integers(0, 5)), min_size=1, max_size=80), st.data()
)
def test_any_disconnect_point_loses_nothing_and_doubles_nothing(
    events: list[tuple[int, int]], data: st.DataObject
) -> None:
    """A server holding ``events`` (time order) drops the stream at any point; the client
    resumes since its resume point; what it delivers is exactly ``events`` once each."""
    flows = sorted((t * S // 10, f"c{c}") for t, c in events)
    cut = data.draw(st.integers(0, len(flows)))
    tracker = ResumeTracker(overlap_seconds=1.5, limit=1000)
    delivered = [f for f in flows[:cut] if tracker.is_new(*f)]
    since = tracker.resume_since_ns()
    tracker.reconnected()
    resent = [f for f in flows if since is None or f[0] >= since]
    delivered += [f for f in resent if tracker.is_new(*f)]
    assert sorted(delivered) == flows

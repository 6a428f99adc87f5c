"""The feature registry and the merge contract: partial windows combine exactly.

Like river's ``test_parallel.py``: stream X goes to builder A, stream Y to builder B, both to C;
every window of C must equal the merge of A's and B's windows, empty partials included.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netwarden.ingest.features import FEATURE_NAMES, FEATURES, SideStats, feature_columns
from netwarden.ingest.windows import ClosedWindow, WindowBuilder
from tests.flowfactory import decode, flow, pod, reserved, world

PODS = [
    pod("shop", "web", 30010, "10.244.1.1"),
    pod("checkout", "cart", 30011, "10.244.1.2"),
    pod("db", "redis", 30012, "10.244.2.3"),
    pod("kube-system", "kube-dns", 102, "10.244.0.10"),
]
PEERS = [
    *PODS,
    world("203.0.113.5"),
    world("198.51.100.7"),
    reserved("host", 1, "172.18.0.3"),
    reserved("kube-apiserver", 7, "172.18.0.1"),
]


def _random_flow(r: random.Random, seconds: float) -> dict:
    src = r.choice(PODS)
    dst = r.choice(PEERS)
    reply = r.random() < 0.3
    if reply:
        src, dst = dst, src
    kind = r.choice(["tcp", "tcp", "udp", "icmp", "drop", "dns", "http", "pv"])
    common = {
        "seconds": seconds,
        "reply": reply,
        "sport": r.randrange(30000, 30050),
        "direction": r.choice(["EGRESS", "INGRESS", "TRAFFIC_DIRECTION_UNKNOWN"]),
        "point": r.choice(["FROM_ENDPOINT", "TO_ENDPOINT", "TO_STACK"]),
    }
    if kind == "tcp":
        return flow(
            src,
            dst,
            dport=r.choice([80, 443, 5432, 6379, r.randrange(1, 65535)]),
            flags=tuple(r.sample(["SYN", "ACK", "RST", "FIN", "PSH"], r.randint(1, 2))),
            destination_names=r.choice([None, ["api.stripe.com"], ["evil.example"]]),
            **common,
        )
    if kind == "udp":
        return flow(src, dst, proto="UDP", dport=r.choice([53, 123, 8125]), **common)
    if kind == "icmp":
        return flow(src, dst, proto="ICMPv4", **common)
    if kind == "drop":
        return flow(
            src,
            dst,
            verdict="DROPPED",
            event_type=1,
            dport=r.randrange(1, 2000),
            drop_reason=r.choice(["POLICY_DENIED", "POLICY_DENY", "STALE_OR_UNROUTABLE_IP"]),
            **common,
        )
    if kind == "pv":
        return flow(src, dst, event_type=5, **common)
    if kind == "dns":
        name = r.choice(
            [
                "a.svc.cluster.local.",
                "api.stripe.com.",
                "".join(r.choices("abcdefghijklmnopqrstuvwxyz234567", k=40)) + ".t.example.",
            ]
        )
        l7 = {
            "type": "RESPONSE" if reply else "REQUEST",
            "dns": {"query": name, "rcode": r.choice([0, 3])},
        }
        return flow(src, dst, proto="UDP", dport=53, event_type=129, l7=l7, **common)
    l7 = {
        "type": "RESPONSE" if reply else "REQUEST",
        "http": {"code": r.choice([200, 404, 503]), "method": "GET"},
    }
    return flow(src, dst, event_type=129, l7=l7, **common)


def _windows(lines: list[dict], prefix: list[dict]) -> dict[tuple[str, float], ClosedWindow]:
    """Build with a shared learned baseline: the prefix windows first, then ``lines``."""
    builder = WindowBuilder()
    if prefix:
        builder.add(decode(prefix))
        builder._close_until(float("inf"))  # learn the prefix's peers into the baseline
    builder.add(decode(lines) if lines else [])
    return {(w.identity, w.start): w for w in builder.flush()}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(0, 120),
    parts=st.integers(2, 4),
    with_prefix=st.booleans(),
)
def test_partial_windows_merge_exactly(seed: int, n: int, parts: int, with_prefix: bool) -> None:
    r = random.Random(seed)
    # Flows of one window ([60, 120) s); the optional prefix ([0, 60) s) builds a baseline so
    # that the new-peer feature is tested against real history, the same for every builder.
    prefix = [_random_flow(r, r.uniform(0, 50)) for _ in range(40)] if with_prefix else []
    lines = [_random_flow(r, 60 + r.uniform(0, 59)) for _ in range(n)]
    if n > 10:  # push one identity past the exact limit of its sketches
        lines += [
            flow(PODS[0], world(f"203.0.113.{i}"), seconds=61, dport=1000 + i) for i in range(60)
        ]
    split: list[list[dict]] = [[] for _ in range(parts)]
    for line in lines:
        split[r.randrange(parts)].append(line)  # some parts may stay empty
    whole = _windows(lines, prefix)
    pieces = [_windows(part, prefix) for part in split]
    merged: dict[tuple[str, float], ClosedWindow] = {}
    order = list(range(parts))
    r.shuffle(order)
    for i in order:
        for key, w in pieces[i].items():
            merged[key] = merged[key].merge(w) if key in merged else w
    assert set(merged) == set(whole)
    for key, w in whole.items():
        m = merged[key]
        assert m.client == w.client and m.server == w.server, key
        assert m.features() == w.features(), key


def test_merging_an_empty_partial_changes_nothing() -> None:
    r = random.Random(3)
    (w,) = list(_windows([_random_flow(r, 1) for _ in range(50)], []).values())[:1]
    empty = ClosedWindow(w.subject, w.start, w.end, SideStats(), SideStats())
    assert w.merge(empty).client == w.client and empty.merge(w).server == w.server
    assert (SideStats() + SideStats()) == SideStats()


def test_merge_refuses_different_windows() -> None:
    r = random.Random(4)
    ws = list(_windows([_random_flow(r, s) for s in (1, 2, 3, 70, 71)], []).values())
    a = ws[0]
    b = next(w for w in ws if w.subject.id != a.subject.id or w.start != a.start)
    try:
        a.merge(b)
    except ValueError as exc:
        assert "cannot merge window" in str(exc)
    else:
        raise AssertionError("merge of different windows must fail")


def test_feature_table_documents_every_feature() -> None:
    computed = SideStats().features()
    assert tuple(computed) == FEATURE_NAMES
    assert all(f.description for f in FEATURES)
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    cols = feature_columns()
    assert cols[: len(FEATURE_NAMES)] == [f"egress_{n}" for n in FEATURE_NAMES]
    assert cols[len(FEATURE_NAMES) :] == [f"ingress_{n}" for n in FEATURE_NAMES]


def test_empty_side_features_are_zero_not_nan() -> None:
    assert all(v == 0.0 for v in SideStats().features().values())


def test_readme_feature_table_matches_the_code() -> None:
    """The README documents every feature, in column order, with the code's own description."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = readme.split("| feature | meaning |\n| --- | --- |\n", 1)[1].split("\n\n", 1)[0]
    rows = re.findall(r"^\| `([a-z0-9_]+)` \| (.+) \|$", table, flags=re.M)
    assert rows == [(f.name, f.description) for f in FEATURES]

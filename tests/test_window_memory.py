"""Memory of open windows: measured, not estimated (netwarden.ingest.footprint), and small:
containers are made when first used, edges are one int each, a side exists only once a flow
counts for it; a finished lean side is exactly a full one."""

from __future__ import annotations

import sys

from netwarden.ingest.features import SideStats, edge_key, split_edge_key
from netwarden.ingest.footprint import deep_size
from netwarden.ingest.identity import Subject
from netwarden.ingest.windows import WindowBuilder
from tests.flowfactory import connection, decode, pod

CART = pod("checkout", "cart", 30001, "10.244.1.10")
PAYMENTS = pod("checkout", "payments", 30002, "10.244.2.20")


def test_deep_size_counts_each_object_once_and_not_identities() -> None:
    big = 10**30
    shared = [big]
    assert deep_size([shared, shared]) == sys.getsizeof(shared) + sys.getsizeof(big)
    assert deep_size([{1: 2}]) == sys.getsizeof({1: 2})  # small ints are singletons
    assert deep_size([Subject("a/b", "a", "b")]) == 0  # the builder's, not the window's
    seen: set[int] = set()
    assert deep_size([shared], seen) > 0 and deep_size([shared], seen) == 0


def test_a_finished_lean_side_is_a_full_side() -> None:
    lean = SideStats.lean().finish()
    full = SideStats()
    assert lean == full
    for name in SideStats.__slots__:
        assert getattr(lean, name) == getattr(full, name), name
        assert type(getattr(lean, name)) is type(getattr(full, name)), name


def test_edge_keys_round_trip_and_sort_like_pairs() -> None:
    pairs = [(0, -1), (0, 0), (5, (6 << 16) | 443), (2**64 - 1, (132 << 16) | 65535), (7, -1)]
    for h, pk in pairs:
        assert split_edge_key(edge_key(h, pk)) == (h, pk)
    assert sorted(pairs) == [split_edge_key(k) for k in sorted(edge_key(*p) for p in pairs)]


def test_open_windows_of_quiet_subjects_are_small() -> None:
    """Two subjects, one connection each way: their open windows hold a few hundred bytes."""
    builder = WindowBuilder()
    builder.add(decode(connection(CART, PAYMENTS, seconds=1, dport=8080)))
    assert builder.settle() == []  # a stream's first flows wait for votes on its time
    assert builder.open_windows == 2
    per_window = builder.open_bytes() / builder.open_windows
    assert per_window <= 1024, per_window
    windows = builder.flush()
    cart = next(w for w in windows if w.identity == "checkout/cart")
    assert cart.server == SideStats() and cart.client.flows == 2  # the unused side, made full
    assert [e.syns for e in cart.edges(True)] == [1]

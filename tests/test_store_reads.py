"""Reads of the anomaly store do not queue behind its writer.

With the pipeline in a process of its own, the API process reads the store while the pipeline
writes to it. On SQLite a transaction that takes the write lock up front (BEGIN IMMEDIATE, what
every write does) would make each listing wait for the pipeline's current write; reads are
snapshots instead (WAL). Expired suppressions are still applied before a read shows them.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from netwarden.detector.lifecycle import OPEN, SUPPRESSED
from netwarden.detector.store import AnomalyStore
from tests.test_alerts import win


def test_a_read_does_not_wait_for_a_writer(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'netwarden.db'}"
    with AnomalyStore(url) as store:
        (a,) = store.record([win(0), win(1)])
        writer = sqlite3.connect(tmp_path / "netwarden.db", isolation_level=None)
        writer.execute("BEGIN IMMEDIATE")  # another process mid-write, holding the lock
        writer.execute("UPDATE anomalies SET state_note = 'x' WHERE id = ?", (a.id,))
        done = threading.Event()
        got: list[object] = []

        def read() -> None:
            got.append(store.page(limit=10))
            got.append(store.get(a.id))
            done.set()

        started = time.monotonic()
        threading.Thread(target=read, daemon=True).start()
        finished = done.wait(5.0)  # the busy timeout is far longer: a blocked read would wait
        writer.execute("ROLLBACK")
        writer.close()
        assert finished, "a read waited for the writer's lock"
        assert time.monotonic() - started < 5.0
        items, total = got[0]  # type: ignore[misc]
        assert [r.id for r in items] == [a.id] and total == 1
        assert got[1] == items[0]


def test_page_is_list_and_count_of_one_snapshot(backend_url: str) -> None:
    with AnomalyStore(backend_url) as store:
        store.record([win(0, "shop/cart")])
        store.record([win(0, "shop/web"), win(5, "pay/ledger")])
        for filters in ({}, {"namespace": "shop"}, {"identity": "pay/ledger"}, {"state": OPEN}):
            items, total = store.page(limit=1, **filters)
            assert items == store.list(limit=1, **filters)
            assert total == store.count(**filters)


def test_a_read_applies_a_due_suppression_expiry_first(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'netwarden.db'}"
    with AnomalyStore(url) as store:
        (a,) = store.record([win(0)])
        now = store.now()
        store.suppress(a.id, until=now + timedelta(seconds=1), actor="op", reason="maintenance")
        assert store.get(a.id).state == SUPPRESSED  # type: ignore[union-attr]
        time.sleep(1.2)
        items, _ = store.page()
        assert [r.state for r in items] == [OPEN]
        assert [e.action for e in store.events(a.id)][-1] == "unsuppress"
        assert replace(items[0]) == store.get(a.id)

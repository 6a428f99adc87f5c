"""One outbox, several alerting processes (the API Deployment's replicas in cluster mode).

Each replica runs an alerter over the same database: a message must be claimed by one of them
only (else Slack is told twice), and two passes must not decide on the same alert state at once.
Run on SQLite and on PostgreSQL (read committed, where nothing but the outbox's own locking
keeps two claims apart)."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

from netwarden.detector.alerts.outbox import Outbox

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
LEASE = timedelta(minutes=5)


def test_two_workers_never_claim_the_same_message(backend_url: str) -> None:
    first, second = Outbox(backend_url), Outbox(backend_url)
    try:
        with first.transaction(NOW) as tx:
            ids = [tx.enqueue("slack", {"n": i}) for i in range(300)]
        claimed: Counter[int] = Counter()
        lock = threading.Lock()
        start = threading.Barrier(2)

        def claim(outbox: Outbox) -> None:
            start.wait()
            while batch := outbox.due(NOW, lease=LEASE, limit=7):
                with lock:
                    claimed.update(item.id for item in batch)

        threads = [threading.Thread(target=claim, args=(o,)) for o in (first, second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert sorted(claimed) == sorted(ids)  # every message claimed ...
        assert max(claimed.values()) == 1  # ... by one worker once
    finally:
        first.close()
        second.close()


def test_alerter_passes_of_two_processes_take_turns(backend_url: str) -> None:
    """A pass that decides (reads state, enqueues) holds the outbox until it commits: a second
    pass started meanwhile sees what the first wrote."""
    first, second = Outbox(backend_url), Outbox(backend_url)
    try:
        entered = threading.Event()
        release = threading.Event()
        seen: list[int] = []

        def slow_pass() -> None:
            with first.transaction(NOW) as tx:
                entered.set()
                release.wait(10)
                tx.enqueue("slack", {"first": True}, key="anomaly-1")

        def other_pass() -> None:
            entered.wait(10)
            with second.transaction(NOW) as tx:
                # deciding on what is pending: the first pass's row, committed before this began
                seen.append(len(tx.pending_among(range(1, 10))))
                tx.enqueue("slack", {"second": True}, key="anomaly-1")

        a = threading.Thread(target=slow_pass)
        b = threading.Thread(target=other_pass)
        a.start()
        b.start()
        entered.wait(10)
        b.join(timeout=1.0)
        assert b.is_alive()  # waiting for the first pass
        release.set()
        a.join(timeout=30)
        b.join(timeout=30)
        assert seen == [1]
        items = first.items("slack")
        assert [i.payload for i in items if i.status == "pending"] == [{"second": True}]
    finally:
        first.close()
        second.close()

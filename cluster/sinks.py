"""Where a shard hands merged windows: durable when the call returns, idempotent per window.

A shard acknowledges a window's partials only after :meth:`WindowSink.handoff` returned, so a
shard killed in between has its partials redelivered to its replacement, which hands the window
off again: every sink keeps the first hand-off of an (identity, window start) and ignores the
next ones. So nothing is lost and nothing doubles, whatever instant the shard dies at.

:class:`ScoringSink` is the detector's own path (judge with the current model, record in the
anomaly store, as ``netwarden serve`` does with its windows). :class:`WindowFileSink` keeps the
merged windows in an SQLite file, for inspection and for the tests.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from netwarden.cluster.partials import Partial, decode_partial, encode_partial
from netwarden.ingest.windows import ClosedWindow

if TYPE_CHECKING:  # the scoring path (scikit-learn, SQLAlchemy) only where it is used
    from netwarden.detector.store import AnomalyStore
    from netwarden.models.registry import CurrentModel

__all__ = ["MergedWindow", "ScoringSink", "WindowFileSink", "WindowSink"]


class MergedWindow:
    """A window merged from the partials of ``nodes`` (message ids ``msg_ids``)."""

    __slots__ = ("msg_ids", "nodes", "window")

    def __init__(self, window: ClosedWindow, nodes: Sequence[str], msg_ids: Sequence[str]) -> None:
        self.window = window
        self.nodes = tuple(nodes)
        self.msg_ids = tuple(msg_ids)


class WindowSink(Protocol):
    def handoff(self, windows: list[MergedWindow]) -> int:
        """Make ``windows`` durable (in closing order); returns how many were new."""
        ...

    def late(self, partial: Partial) -> None:
        """A partial that came after its window was handed off (kept, not merged)."""
        ...


class WindowFileSink:
    """Merged windows in an SQLite file (WAL; several shard processes may share it)."""

    def __init__(self, path: Path, *, shard: str = "") -> None:
        self.path = Path(path)
        self.shard = shard
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=60.0, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # durable when handoff returns
        with self._db:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS windows (identity TEXT NOT NULL, start REAL NOT NULL,"
                " nodes TEXT NOT NULL, msg_ids TEXT NOT NULL, shard TEXT NOT NULL,"
                " body BLOB NOT NULL, PRIMARY KEY (identity, start))"
            )
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS late (msg_id TEXT PRIMARY KEY, identity TEXT NOT NULL,"
                " start REAL NOT NULL, shard TEXT NOT NULL, body BLOB NOT NULL)"
            )

    def handoff(self, windows: list[MergedWindow]) -> int:
        rows = [
            (
                m.window.subject.id,
                m.window.start,
                "\n".join(m.nodes),
                "\n".join(m.msg_ids),
                self.shard,
                encode_partial(Partial("merged", 0, 0, m.window)),
            )
            for m in windows
        ]
        with self._lock, self._db:
            before = self._db.total_changes
            self._db.executemany("INSERT OR IGNORE INTO windows VALUES (?, ?, ?, ?, ?, ?)", rows)
            return self._db.total_changes - before

    def late(self, partial: Partial) -> None:
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR IGNORE INTO late VALUES (?, ?, ?, ?, ?)",
                (
                    partial.msg_id,
                    partial.window.subject.id,
                    partial.window.start,
                    self.shard,
                    encode_partial(partial),
                ),
            )

    def read(self) -> list[tuple[ClosedWindow, tuple[str, ...], tuple[str, ...], str]]:
        """Every window handed off: (window, nodes, message ids, shard), by start, identity."""
        with self._lock:
            rows = self._db.execute(
                "SELECT body, nodes, msg_ids, shard FROM windows ORDER BY start, identity"
            ).fetchall()
        return [
            (decode_partial(body).window, tuple(nodes.split("\n")), tuple(ids.split("\n")), shard)
            for body, nodes, ids, shard in rows
        ]

    def late_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM late").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


class ScoringSink:
    """Judge merged windows with the current model and record them in the anomaly store.

    The store records a window once per (identity, window start); a window handed off again
    after a shard's restart is skipped here, so a replacement that got only some of a window's
    partials back (the rest acknowledged before the crash) cannot overwrite the full one.
    While no model is loaded, windows are refused (an exception: nothing is acknowledged, the
    partials wait in the stream).
    """

    def __init__(
        self,
        model: CurrentModel,
        store: AnomalyStore,
        *,
        on_judged: Callable[[list[ClosedWindow], list[Any], str], Any] | None = None,
    ) -> None:
        from netwarden.detector.judge import WindowJudge
        from netwarden.models.edges import EdgeMemory

        self.model = model
        self.store = store
        #: Called with the windows recorded, their verdicts and the model version (after the
        #: store has them): the shard's window history.
        self.on_judged = on_judged
        self.judge = WindowJudge(None, EdgeMemory())
        self._version: str | None = None
        self.late_partials = 0

    def handoff(self, windows: list[MergedWindow]) -> int:
        self.model.refresh()
        loaded = self.model.loaded
        if loaded is None:
            raise RuntimeError(f"no model loaded from {self.model.model_dir}: {self.model.error}")
        if self._version != loaded.version:
            from netwarden.detector.scorer import Scorer

            self.judge.scorer = Scorer(loaded.bundle)
            self.judge.memory.merge(loaded.bundle.edges)
            self._version = loaded.version
        fresh = [m.window for m in windows if not self._stored(m.window)]
        if not fresh:
            return 0
        scored = self.judge.judge(fresh)
        self.store.record(scored)
        self.store.end_silent_runs(max(s.window_end for s in scored))
        if self.on_judged is not None:
            self.on_judged(fresh, scored, loaded.version)
        return len(fresh)

    def _stored(self, w: ClosedWindow) -> bool:
        start = datetime.fromtimestamp(w.start, tz=UTC)
        found = self.store.windows(w.subject.id, since=start, until=w.end_datetime(), limit=1)
        return any(s.window_start == start for s in found)

    def late(self, partial: Partial) -> None:
        self.late_partials += 1

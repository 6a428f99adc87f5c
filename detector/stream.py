"""Judging windows as a stream closes them, in bounded batches.

Scoring in batches is much faster (one model call per identity per batch, not per window), and
it changes nothing: the :class:`~netwarden.detector.judge.WindowJudge` takes each batch's
windows in the order they closed, so novelty, changes and learning see the same sequence
whatever the batch size. :class:`StreamScorer` flushes after ``max_windows`` windows, or when
asked (end of input; a live source that has caught up).
"""

from __future__ import annotations

from collections.abc import Callable

from netwarden.detector.judge import WindowJudge
from netwarden.detector.results import ScoredWindow
from netwarden.ingest.windows import ClosedWindow

__all__ = ["StreamScorer"]


class StreamScorer:
    """Collects closed windows and judges them in bounded batches."""

    def __init__(
        self,
        judge: WindowJudge,
        on_scored: Callable[[list[ClosedWindow], list[ScoredWindow]], None],
        *,
        max_windows: int = 2048,
        on_unscored: Callable[[list[ClosedWindow]], None] | None = None,
    ) -> None:
        #: The judge's scorer is None while no model is loaded (a live service before its first
        #: model): windows are then handed to ``on_unscored`` instead.
        self.judge = judge
        self.on_scored = on_scored
        self.on_unscored = on_unscored
        self.max_windows = max_windows
        self._pending: list[ClosedWindow] = []

    def add(self, closed: list[ClosedWindow], *, flush: bool = False) -> list[ScoredWindow]:
        """Take windows the builder just closed; judge them when a batch is due, or now when
        ``flush`` is set. Returns what was judged (often nothing yet)."""
        pending = self._pending
        pending.extend(closed)
        if pending and (flush or len(pending) >= self.max_windows):
            return self.flush()
        return []

    def flush(self) -> list[ScoredWindow]:
        """Judge everything pending now."""
        windows, self._pending = self._pending, []
        if not windows:
            return []
        if self.judge.scorer is None:
            if self.on_unscored is not None:
                self.on_unscored(windows)
            return []
        scored = self.judge.judge(windows)
        self.on_scored(windows, scored)
        return scored

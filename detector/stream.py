"""Scoring windows as a stream closes them, without letting an attack teach the baselines.

The window builder learns each closed window's peers and DNS names into the identity's
baseline; a peer stays *new* for ``WindowConfig.novelty_seconds`` after its first use. An
anomalous window must not teach (its peers would turn normal because the attack used them), so
after scoring, anomalous windows are handed back to :meth:`WindowBuilder.forget`.

Scoring in batches is much faster (one model call per identity per batch), but a batch must be
scored before its oldest window leaves the novelty horizon, or ``forget`` would come too late.
:class:`StreamScorer` flushes on whichever comes first: ``max_windows`` windows, or windows
spanning half the novelty horizon of event time. A live service flushes after every group.
"""

from __future__ import annotations

from collections.abc import Callable

from netwarden.detector.results import ScoredWindow
from netwarden.detector.scorer import Scorer
from netwarden.ingest.windows import ClosedWindow, WindowBuilder

__all__ = ["StreamScorer"]


class StreamScorer:
    """Collects closed windows, scores them in bounded batches, forgets anomalous ones."""

    def __init__(self, scorer: Scorer, builder: WindowBuilder,
                 on_scored: Callable[[list[ClosedWindow], list[ScoredWindow]], None], *,
                 max_windows: int = 2048) -> None:
        self.scorer = scorer
        self.builder = builder
        self.on_scored = on_scored
        self.max_windows = max_windows
        self._span = builder.config.novelty_seconds / 2
        self._pending: list[ClosedWindow] = []

    def add(self, closed: list[ClosedWindow]) -> None:
        """Take windows the builder just closed; score when a batch is due."""
        pending = self._pending
        pending.extend(closed)
        if pending and (len(pending) >= self.max_windows
                        or pending[-1].end - pending[0].start >= self._span):
            self.flush()

    def flush(self) -> None:
        """Score everything pending now (end of input, or a live service after each group)."""
        windows, self._pending = self._pending, []
        if not windows:
            return
        scored = self.scorer.score(windows)
        for window, result in zip(windows, scored, strict=True):
            if result.anomalous:
                self.builder.forget(window)
        self.on_scored(windows, scored)

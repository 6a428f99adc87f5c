"""Scoring windows as a stream closes them, without letting an attack teach the baselines.

The window builder learns each closed window's peers and DNS names into the identity's
baseline; a peer stays *new* for ``WindowConfig.novelty_seconds`` after its first use. An
anomalous window must not teach (its peers would turn normal because the attack used them), so
after scoring, anomalous windows are handed back to :meth:`WindowBuilder.forget`.

Scoring in batches is much faster (one model call per identity per batch), but a batch must be
scored before its oldest window leaves the novelty horizon, or ``forget`` would come too late.
:class:`StreamScorer` flushes on whichever comes first: ``max_windows`` windows, or windows
spanning half the novelty horizon of event time. A live service asks for a flush whenever its
source has nothing more waiting.
"""

from __future__ import annotations

from collections.abc import Callable

from netwarden.detector.results import ScoredWindow
from netwarden.detector.scorer import Scorer
from netwarden.ingest.windows import ClosedWindow, WindowBuilder

__all__ = ["StreamScorer"]


class StreamScorer:
    """Collects closed windows, scores them in bounded batches, forgets anomalous ones."""

    def __init__(
        self,
        scorer: Scorer | None,
        builder: WindowBuilder,
        on_scored: Callable[[list[ClosedWindow], list[ScoredWindow]], None],
        *,
        max_windows: int = 2048,
        on_unscored: Callable[[list[ClosedWindow]], None] | None = None,
    ) -> None:
        #: The scorer of the next flush; a live service swaps it when a new model loads, and
        #: while it is None windows are handed to ``on_unscored`` instead.
        self.scorer = scorer
        self.builder = builder
        self.on_scored = on_scored
        self.on_unscored = on_unscored
        self.max_windows = max_windows
        self._span = builder.config.novelty_seconds / 2
        self._pending: list[ClosedWindow] = []

    def add(self, closed: list[ClosedWindow], *, flush: bool = False) -> list[ScoredWindow]:
        """Take windows the builder just closed; score them when a batch is due, or now when
        ``flush`` is set. Returns what was scored (often nothing yet)."""
        pending = self._pending
        pending.extend(closed)
        if pending and (
            flush
            or len(pending) >= self.max_windows
            or pending[-1].end - pending[0].start >= self._span
        ):
            return self.flush()
        return []

    def flush(self) -> list[ScoredWindow]:
        """Score everything pending now (end of input, or a live source that has caught up)."""
        windows, self._pending = self._pending, []
        if not windows:
            return []
        if self.scorer is None:
            if self.on_unscored is not None:
                self.on_unscored(windows)
            return []
        scored = self.scorer.score(windows)
        for window, result in zip(windows, scored, strict=True):
            if result.anomalous:
                self.builder.forget(window)
        self.on_scored(windows, scored)
        return scored

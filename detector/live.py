"""The live half of the data path: flows -> closed windows -> scores -> store -> alerts.

One :class:`LiveDetector` is driven by one thread (the service's pipeline thread): ``add`` with
each batch of flows, ``tick`` when the stream is quiet, so that event time moves on with the
wall clock and the windows of a quiet stream still close. A live stream is scored as its windows
close; a backlog (a replayed file, a burst) is scored in larger groups, since scikit-learn's
cost is per call, not per window. The :class:`~netwarden.detector.judge.WindowJudge` keeps the
service's edge memory (:mod:`netwarden.models.edges`): it starts from what the first model
learned in training, takes in what each new model version learned, and learns what the stream
shows as normal. Everything is recorded in the store before the alert hook runs. Windows that close while no
model is loaded are counted, not scored.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client import Counter as PromCounter

from netwarden.detector.judge import WindowJudge
from netwarden.detector.results import ScoredWindow
from netwarden.detector.scorer import Scorer
from netwarden.detector.store import AnomalyRecord, AnomalyStore
from netwarden.detector.stream import StreamScorer
from netwarden.ingest.windows import ClosedWindow, WindowBuilder
from netwarden.models.edges import EdgeMemory
from netwarden.models.registry import CurrentModel

__all__ = ["DetectorMetrics", "LiveDetector"]

_VERDICT = attrgetter("verdict")
#: Closed windows held at most while the source is ahead (one scoring call for all of them).
_MAX_HELD = 2048
_VERDICT_NAMES = {
    0: "VERDICT_UNKNOWN",
    1: "FORWARDED",
    2: "DROPPED",
    3: "ERROR",
    4: "AUDIT",
    5: "REDIRECTED",
    6: "TRACED",
    7: "TRANSLATED",
}


class DetectorMetrics:
    """Counters of the live detector, on the service's registry."""

    def __init__(self, registry: CollectorRegistry, source: str) -> None:
        self.source = source
        self.flows = PromCounter(
            "netwarden_flows",
            "Flows ingested, by source and verdict.",
            ["source", "verdict"],
            registry=registry,
        )
        self.windows_scored = PromCounter(
            "netwarden_windows_scored",
            "Identity-windows scored, by verdict.",
            ["anomalous"],
            registry=registry,
        )
        self.windows_unscored = PromCounter(
            "netwarden_windows_unscored",
            "Identity-windows closed while no model was loaded (not scored).",
            registry=registry,
        )
        self.scoring_seconds = Histogram(
            "netwarden_scoring_duration_seconds",
            "Time to score, record and alert on one group of closed windows.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=registry,
        )

    def count_flows(self, flows: Sequence[Any]) -> None:
        for verdict, n in Counter(map(_VERDICT, flows)).items():
            name = (
                _VERDICT_NAMES.get(verdict, str(verdict))
                if isinstance(verdict, int)
                else (verdict or "VERDICT_UNKNOWN")
            )
            self.flows.labels(self.source, name).inc(n)


class LiveDetector:
    """Feeds a window builder and scores, records and alerts on what it closes."""

    def __init__(
        self,
        builder: WindowBuilder,
        model: CurrentModel,
        store: AnomalyStore,
        *,
        metrics: DetectorMetrics | None = None,
        on_recorded: Callable[[list[AnomalyRecord]], Any] | None = None,
        clock: Callable[[], float] = time.time,
        memory: EdgeMemory | None = None,
        on_judged: Callable[[list[ClosedWindow], list[ScoredWindow]], Any] | None = None,
    ) -> None:
        self.builder = builder
        #: Called with each recorded batch: the closed windows and their verdicts (the
        #: service's window history).
        self.on_judged = on_judged
        self.model = model
        self.store = store
        self.metrics = metrics
        self.on_recorded = on_recorded
        self.clock = clock
        self._last_flow_wall = clock()
        self._last_event = float("-inf")
        self._scorer_version: str | None = None
        #: The service's edge memory; only the pipeline thread touches it.
        self.memory = memory if memory is not None else EdgeMemory()
        self.judge = WindowJudge(None, self.memory)
        self._stream = StreamScorer(
            self.judge, self._record, max_windows=_MAX_HELD, on_unscored=self._unscored
        )

    def add(self, flows: Sequence[Any], *, more: bool = False) -> list[ScoredWindow]:
        """One batch of flows from the source. ``more`` says further batches are already
        waiting: closed windows are then held and scored together with the next ones (one
        model call per identity for many windows), within the bounds of
        :class:`~netwarden.detector.stream.StreamScorer`."""
        if self.metrics is not None:
            self.metrics.count_flows(flows)
        self._last_flow_wall = self.clock()
        closed = self.builder.add(flows)
        self._last_event = max(
            self._last_event, self.builder.stats.watermark + self.builder.config.allowed_lateness
        )
        return self._score(closed, now=not more)

    def tick(self, idle_close: float) -> list[ScoredWindow]:
        """Called about once a second: when no flow has come for ``idle_close`` seconds, decide
        about the flows held for being far ahead of the stream, then move event time on by the
        wall-clock time that passed since the last flow."""
        idle = self.clock() - self._last_flow_wall
        closed: list[ClosedWindow] = []
        if idle >= idle_close:
            before = self.builder.stats.watermark
            closed = self.builder.settle()
            if self.builder.stats.watermark > before:  # held flows decided: flows' own time
                self._last_event = max(
                    self._last_event,
                    self.builder.stats.watermark + self.builder.config.allowed_lateness,
                )
            # from the last flow's event time, never from a time a tick moved to: each tick
            # adds the whole quiet spell to the last flow, not to the previous tick's time
            if self._last_event != float("-inf"):
                closed += self.builder.advance(self._last_event + idle)
        return self._score(closed, now=True)

    def finish(self) -> list[ScoredWindow]:
        """The stream ended (stdin EOF): close and score every open window."""
        return self._score(self.builder.flush(), now=True)

    def _score(self, closed: list[ClosedWindow], *, now: bool) -> list[ScoredWindow]:
        loaded = self.model.loaded
        if loaded is None:
            self.judge.scorer = None
        elif self._scorer_version != loaded.version or self.judge.scorer is None:
            self.judge.scorer = Scorer(loaded.bundle)
            if self._scorer_version != loaded.version:
                self.memory.merge(loaded.bundle.edges)  # what this version learned in training
            self._scorer_version = loaded.version
        started = time.perf_counter()
        scored = self._stream.add(closed, flush=now)
        if scored and self.metrics is not None:
            self.metrics.scoring_seconds.observe(time.perf_counter() - started)
        return scored

    def _unscored(self, windows: list[ClosedWindow]) -> None:
        if self.metrics is not None:
            self.metrics.windows_unscored.inc(len(windows))

    def _record(self, closed: list[ClosedWindow], scored: list[ScoredWindow]) -> None:
        """Store the scored windows, end the runs of identities that went quiet, alert."""
        records = self.store.record(scored)
        if self.on_judged is not None:
            self.on_judged(closed, scored)
        records += self.store.end_silent_runs(max(s.window_end for s in scored))
        if self.on_recorded is not None:
            self.on_recorded(records)
        if self.metrics is not None:
            flagged = sum(s.anomalous for s in scored)
            self.metrics.windows_scored.labels("true").inc(flagged)
            self.metrics.windows_scored.labels("false").inc(len(scored) - flagged)

"""Prometheus metrics of the ingest path, in a registry the caller owns (no global state).

The CLI writes them in the node_exporter textfile format (``netwarden windows --metrics-file``);
the service (later) serves the same registry on ``/metrics``. Counters are advanced from the
reader's and builder's own tallies after each batch, so the hot path pays nothing for them.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from netwarden.ingest.reader import ReadStats
from netwarden.ingest.windows import BuilderStats

__all__ = ["IngestMetrics"]


class IngestMetrics:
    """Counters for flows read, bad lines, lost events, late and future flows, windows."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.lines = Counter("netwarden_ingest_lines", "Input lines read.", registry=r)
        self.flows = Counter("netwarden_ingest_flows", "Flows decoded from the input.", registry=r)
        self.parse_errors = Counter(
            "netwarden_ingest_parse_errors",
            "Input lines skipped as bad, by reason.",
            ["reason"],
            registry=r,
        )
        self.lost_events = Counter(
            "netwarden_ingest_producer_lost_events",
            "Events the producer (Hubble) reported lost, by source.",
            ["source"],
            registry=r,
        )
        self.late_flows = Counter(
            "netwarden_ingest_late_flows",
            "Flows that arrived after their window had closed (not added).",
            registry=r,
        )
        self.future_flows = Counter(
            "netwarden_ingest_future_flows",
            "Flows stamped too far ahead of the stream's time (max_skew) to move the watermark:"
            " dropped. A node with a wrong clock or corrupt input.",
            registry=r,
        )
        self.not_counted = Counter(
            "netwarden_ingest_flows_not_counted",
            "Flows read but not counted into windows, by reason.",
            ["reason"],
            registry=r,
        )
        self.windows_closed = Counter(
            "netwarden_ingest_windows_closed", "Identity-windows closed.", registry=r
        )
        self.open_windows = Gauge(
            "netwarden_ingest_open_windows", "Identity-windows currently open.", registry=r
        )
        self.watermark = Gauge(
            "netwarden_ingest_watermark_seconds", "Event-time watermark (Unix time).", registry=r
        )
        self._read = ReadStats()
        self._build = BuilderStats()

    def observe(self, read: ReadStats, build: BuilderStats, open_windows: int) -> None:
        """Advance the counters to the given cumulative tallies."""
        prev_r, prev_b = self._read, self._build
        self.lines.inc(read.lines - prev_r.lines)
        self.flows.inc(read.flows - prev_r.flows)
        for reason, n in read.errors.items():
            if n > prev_r.errors.get(reason, 0):
                self.parse_errors.labels(reason).inc(n - prev_r.errors.get(reason, 0))
        for source, n in read.events_lost.items():
            if n > prev_r.events_lost.get(source, 0):
                self.lost_events.labels(source).inc(n - prev_r.events_lost.get(source, 0))
        self.late_flows.inc(build.late_flows - prev_b.late_flows)
        self.future_flows.inc(build.future_flows - prev_b.future_flows)
        for reason, n in build.not_counted.items():
            if n > prev_b.not_counted.get(reason, 0):
                self.not_counted.labels(reason).inc(n - prev_b.not_counted.get(reason, 0))
        self.windows_closed.inc(build.windows_closed - prev_b.windows_closed)
        self.open_windows.set(open_windows)
        if build.watermark > float("-inf"):
            self.watermark.set(build.watermark)
        self._read = ReadStats(
            lines=read.lines,
            flows=read.flows,
            errors=read.errors.copy(),
            events_lost=read.events_lost.copy(),
        )
        self._build = BuilderStats(
            late_flows=build.late_flows,
            future_flows=build.future_flows,
            not_counted=build.not_counted.copy(),
            windows_closed=build.windows_closed,
        )

"""Flow files in, closed windows out: the reader and the window builder composed.

Kept separate from both so that the CLI, the benchmarks and (later) the service compose the same
small pieces; windows go to a callback (a writer, a scorer) as soon as they close, so memory stays
bounded however long the input is.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netwarden.ingest.compact import CompactFlow
from netwarden.ingest.inputfiles import STDIN
from netwarden.ingest.reader import FlowReader, ReadStats
from netwarden.ingest.windows import BuilderStats, ClosedWindow, WindowBuilder, WindowConfig

if TYPE_CHECKING:  # prometheus_client is imported only by callers that keep metrics
    from netwarden.ingest.metrics import IngestMetrics

__all__ = ["IngestResult", "build_windows", "input_size"]

#: Batches between samples of open-window memory and metric updates.
_SAMPLE_EVERY = 64


@dataclass
class IngestResult:
    read: ReadStats
    build: BuilderStats
    windows: int
    identities: int
    #: Measured state of the open windows (``sample_memory``; else 0): the largest sample, the
    #: windows open then, and the mean bytes per open identity-window over all samples.
    max_open_bytes: int = 0
    max_open_bytes_windows: int = 0
    bytes_per_window: float = 0.0

    def summary_lines(self) -> list[str]:
        b = self.build
        out = self.read.summary_lines()
        out.append(
            f"{b.flows_counted:,} flows counted into windows, {b.late_flows:,} late "
            f"(arrived after their window closed; not added)"
        )
        if b.future_flows:
            out.append(
                f"{b.future_flows:,} flows stamped too far ahead of the stream's time "
                f"(a wrong clock or corrupt input; not added), e.g. {b.future_example}"
            )
        if b.not_counted:
            out.append(
                "not counted: "
                + ", ".join(
                    f"{_NOT_COUNTED.get(k, k)} {n:,}" for k, n in b.not_counted.most_common()
                )
            )
        out.append(
            f"{self.windows:,} windows closed for {self.identities:,} identities "
            f"(at most {b.max_open_windows:,} open at once)"
        )
        return out


_NOT_COUNTED = {
    "event_type_5": "policy verdicts (repeat trace/drop events)",
    "event_type_7": "trace-sock events",
    "event_type_3": "capture events",
    "event_type_2": "debug events",
    "event_type_130": "agent events",
    "no_subject": "flows between reserved identities only",
    "time_out_of_range": "flows with an impossible event time",
}


def input_size(paths: Sequence[str | Path]) -> int | None:
    """Total bytes of the inputs on disk, or None when one is stdin or unreadable."""
    total = 0
    for path in paths:
        if str(path) == STDIN:
            return None
        try:
            total += os.stat(path).st_size
        except OSError:
            return None
    return total


def build_windows(
    paths: Iterable[str | Path],
    on_windows: Callable[[list[ClosedWindow]], Any],
    *,
    config: WindowConfig | None = None,
    reader: FlowReader[Any] | None = None,
    builder: WindowBuilder | None = None,
    progress: Callable[[int], Any] | None = None,
    metrics: IngestMetrics | None = None,
    sample_memory: bool = False,
) -> IngestResult:
    """Read every input in order, build windows, hand each group of closed windows to ``on_windows``.

    ``progress`` is called with the number of input bytes consumed so far (on disk, so gzip
    inputs report compressed bytes). ``sample_memory`` measures the open windows' state every
    few batches (a walk over all of it: for benchmarks, not for production runs).
    """
    reader = reader or FlowReader(flow_type=CompactFlow)
    builder = builder or WindowBuilder(config)
    windows = 0
    identities: set[str] = set()
    samples: list[tuple[int, int]] = []  # (bytes, open windows)
    batches = 0

    def sample() -> None:
        if sample_memory and builder.open_windows:
            samples.append((builder.open_bytes(), builder.open_windows))

    def emit(closed: list[ClosedWindow]) -> None:
        nonlocal windows
        if closed:
            windows += len(closed)
            identities.update(w.subject.id for w in closed)
            on_windows(closed)

    for path in paths:
        for batch in reader.read(path, on_position=progress):
            emit(builder.add(batch))
            batches += 1
            if batches % _SAMPLE_EVERY == 0:  # sampling keeps this bookkeeping off the hot path
                sample()
                if metrics is not None:
                    metrics.observe(reader.stats, builder.stats, builder.open_windows)
    sample()
    emit(builder.flush())
    if metrics is not None:
        metrics.observe(reader.stats, builder.stats, builder.open_windows)
    result = IngestResult(reader.stats, builder.stats, windows, len(identities))
    if samples:
        result.max_open_bytes, result.max_open_bytes_windows = max(samples)
        result.bytes_per_window = sum(b for b, _ in samples) / sum(n for _, n in samples)
    return result

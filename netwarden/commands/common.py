"""What the commands share: progress bars (over input bytes, or over the work's own unit),
checks of ``--flows`` and of output folders, the "no valid flows" error, and time spans."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from netwarden.errors import UserError
from netwarden.ingest.inputfiles import STDIN
from netwarden.ingest.pipeline import IngestResult, build_windows, input_size
from netwarden.ingest.reader import ReadStats
from netwarden.ingest.windows import ClosedWindow, WindowBuilder

__all__ = [
    "check_flow_paths",
    "check_writable_folder",
    "ingest_with_progress",
    "no_flows_error",
    "progress_bar",
    "time_span",
]


class _CountColumn(ProgressColumn):
    """``done/total unit`` for work that is not bytes (hours of traffic, models)."""

    def __init__(self, unit: str, decimals: int) -> None:
        super().__init__()
        self.unit = unit
        self.decimals = decimals

    def render(self, task: Task) -> Text:
        done = f"{task.completed:,.{self.decimals}f}"
        total = "?" if task.total is None else f"{task.total:,.{self.decimals}f}"
        return Text(f"{done}/{total} {self.unit}", style="progress.download")


def progress_bar(console: Console, *, unit: str = "bytes", decimals: int = 0) -> Progress:
    """A transient progress bar with elapsed and remaining time, counting ``unit``: input bytes
    (the default, for commands that read files) or the work's own unit, e.g. "models"."""
    amount = DownloadColumn() if unit == "bytes" else _CountColumn(unit, decimals)
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        amount,
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


def check_flow_paths(flows: Sequence[str]) -> None:
    if sum(1 for f in flows if f == STDIN) > 1:
        raise UserError("--flows: '-' (stdin) can be given only once")
    for path in flows:
        if path != STDIN and not Path(path).is_file():
            raise UserError(f"--flows {path}: no such file")


def check_writable_folder(option: str, folder: Path) -> None:
    """Create ``folder`` if needed and prove it takes a file, so that a command fails before
    its long work (reading flows, training) rather than after it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".netwarden-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"{option} {folder}: cannot write: {exc.strerror or exc}") from None


def _inputs(flows: Sequence[str]) -> str:
    return ", ".join("stdin" if f == STDIN else str(f) for f in flows)


def no_flows_error(flows: Sequence[str], stats: ReadStats) -> UserError | None:
    """The error for an input without one valid flow (empty, or every line bad), or None.

    One line: what was read and the first bad line, e.g. "no valid flows in f.json: 120 lines,
    120 skipped as bad (first: f.json:1: not_json: ...)"."""
    if stats.flows:
        return None
    if not stats.lines:
        return UserError(f"no valid flows in {_inputs(flows)}: the input is empty")
    first = f" (first: {stats.examples[0]})" if stats.examples else ""
    return UserError(
        f"no valid flows in {_inputs(flows)}: {stats.lines:,} lines, "
        f"{stats.error_lines:,} skipped as bad{first}"
    )


def time_span(start: datetime, end: datetime) -> str:
    """``2026-01-05 10:00-10:15`` within a day, ``2026-01-05 00:00 - 2026-01-06 00:00`` across
    days: a span reads unambiguously whatever its length."""
    if start.date() == end.date():
        return f"{start:%Y-%m-%d %H:%M}-{end:%H:%M}"
    return f"{start:%Y-%m-%d %H:%M} - {end:%Y-%m-%d %H:%M}"


def ingest_with_progress(
    flows: Sequence[str],
    on_windows: Callable[[list[ClosedWindow]], Any],
    *,
    console: Console,
    builder: WindowBuilder,
    metrics: Any = None,
    label: str = "building windows",
) -> IngestResult:
    """Run the ingest pipeline with a progress bar over the input bytes."""
    total = input_size(flows)
    with progress_bar(console) as progress:
        task = progress.add_task(label, total=total)
        done_before = [0]
        last = [0]

        def on_position(position: int) -> None:
            if position < last[0]:  # next file
                done_before[0] += last[0]
            last[0] = position
            progress.update(task, completed=done_before[0] + position)

        return build_windows(
            flows, on_windows, builder=builder, progress=on_position, metrics=metrics
        )


def signing_key(path: Path | None) -> bytes | None:
    """The key in ``path`` (``--signing-key``), or None; a user error when it cannot be read."""
    if path is None:
        return None
    from netwarden.models.signing import SigningKeyError, load_key

    try:
        return load_key(path)
    except SigningKeyError as exc:
        raise UserError(f"--signing-key: {exc}") from None

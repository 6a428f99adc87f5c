"""What the commands share: progress bars over input bytes, and checks of ``--flows``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from netwarden.errors import UserError
from netwarden.ingest.inputfiles import STDIN
from netwarden.ingest.pipeline import IngestResult, build_windows, input_size
from netwarden.ingest.windows import ClosedWindow, WindowBuilder

__all__ = ["check_flow_paths", "ingest_with_progress", "progress_bar"]


def progress_bar(console: Console) -> Progress:
    """A transient progress bar counting bytes of input, with elapsed and remaining time."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        DownloadColumn(),
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

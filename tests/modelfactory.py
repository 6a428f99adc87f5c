"""Models trained on generated traffic, for tests: one recipe, so fixtures only choose data."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from netwarden.generator import generate
from netwarden.ingest.pipeline import build_windows
from netwarden.ingest.windows import ClosedWindow, WindowBuilder, windows_to_rows
from netwarden.models.edges import EdgeMemory
from netwarden.models.training import ModelBundle, TrainConfig, train


def train_on_generated(
    out: Path,
    *,
    hours: float,
    seed: int,
    start: datetime,
    rate: float = 1.0,
    train_seed: int = 3,
    n_estimators: int = 50,
) -> tuple[ModelBundle, list[ClosedWindow]]:
    """Generate ``hours`` of normal traffic into ``out``, build its windows and train on them;
    the bundle carries the edge memory of those windows, as ``netwarden train`` saves it."""
    result = generate(out, hours=hours, seed=seed, start=start, rate=rate)
    builder = WindowBuilder()
    windows: list[ClosedWindow] = []
    build_windows([result.flows_path], windows.extend, builder=builder)
    bundle = train(
        windows_to_rows(windows),
        config=TrainConfig(n_estimators=n_estimators, seed=train_seed),
        windows=builder.config,
    )
    bundle.edges = EdgeMemory.from_windows(windows)
    return bundle, windows

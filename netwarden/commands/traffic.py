"""What the traffic commands do (generate, windows, features, the demo), with progress bars and
summaries; argument parsing is in :mod:`netwarden.cli.traffic`."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from netwarden.commands.common import (
    check_flow_paths,
    ingest_with_progress,
    no_flows_error,
    progress_bar,
    time_span,
)
from netwarden.errors import UserError
from netwarden.ingest.features import FEATURES, feature_columns
from netwarden.ingest.pipeline import IngestResult
from netwarden.ingest.windows import ClosedWindow, WindowBuilder, WindowConfig

__all__ = ["generate", "print_features", "run_demo", "windows"]


def _parse_start(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UserError(
            f"--start: not an RFC3339 time: {text!r} (e.g. 2026-01-05T00:00:00Z)"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def generate(
    out: Path,
    *,
    hours: float,
    seed: int,
    attacks: Sequence[str],
    rate: float,
    start: str | None,
    gzip: bool,
    console: Console,
    changes: Sequence[str] = (),
    cluster: str = "demo",
) -> Any:
    """Generate labelled traffic into ``out``; return the generator's result."""
    from netwarden.generator import ALL_SCENARIOS, CHANGES, CLUSTERS
    from netwarden.generator import generate as run_generator

    chosen = _chosen("--attacks", "scenario", attacks, ALL_SCENARIOS)
    chosen_changes = _chosen("--changes", "change", [c.strip() for c in changes], CHANGES)
    if cluster not in CLUSTERS:
        raise UserError(f"--cluster: unknown cluster {cluster}; choose from {', '.join(CLUSTERS)}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {out}: cannot create folder: {exc.strerror or exc}") from None
    # the generator reports the share of the time span written: shown as hours of traffic
    with progress_bar(console, unit="hours of traffic", decimals=1) as progress:
        task = progress.add_task("generating traffic", total=hours)
        try:
            result = run_generator(
                out,
                hours=hours,
                seed=seed,
                attacks=chosen,
                start=_parse_start(start),
                rate=rate,
                gzip=gzip,
                progress=lambda done: progress.update(task, completed=done * hours),
                changes=chosen_changes,
                cluster=cluster,
            )
        except ValueError as exc:
            raise UserError(str(exc)) from None
    console.print(
        f"wrote {result.flows:,} flows to {result.flows_path} "
        f"({result.start:%Y-%m-%d %H:%M} to {result.end:%Y-%m-%d %H:%M} UTC)",
        markup=False,
    )
    if result.labels:
        console.print(
            f"wrote {len(result.labels)} attack labels to {result.labels_path}", markup=False
        )
    if result.changes:
        console.print(
            f"wrote {len(result.changes)} change labels to {result.changes_path}", markup=False
        )
    return result


def _chosen(option: str, what: str, names: Sequence[str], valid: tuple[str, ...]) -> list[str]:
    """``names`` checked against ``valid``; ``all`` (alone) means every one."""
    chosen = list(valid) if [n.lower() for n in names] == ["all"] else list(names)
    unknown = [n for n in chosen if n not in valid]
    if unknown:
        raise UserError(
            f"{option}: unknown {what} {', '.join(unknown)}; "
            f"choose from {', '.join(valid)} or 'all'"
        )
    return chosen


def windows(
    flows: Sequence[str],
    out: Path,
    *,
    window_config: WindowConfig,
    console: Console,
    keep: list[ClosedWindow] | None = None,
    metrics_file: Path | None = None,
) -> IngestResult:
    """Build windows from ``flows`` into ``out``; print the summary to ``console``.

    An input without one valid flow, or whose flows make no window, is a UserError after the
    summary (which shows the bad lines), and ``out`` is removed: exit 2 means nothing written."""
    from netwarden.ingest.output import WindowWriter

    check_flow_paths(flows)
    try:
        writer = WindowWriter(out)
    except ValueError as exc:
        raise UserError(f"--out {exc}") from None

    def sink(closed: list[ClosedWindow]) -> None:
        writer.write(closed)
        if keep is not None:
            keep.extend(closed)

    metrics = None
    if metrics_file is not None:  # prometheus_client is imported only when metrics are asked for
        from netwarden.ingest.metrics import IngestMetrics

        metrics = IngestMetrics()
    with writer:
        result = ingest_with_progress(
            flows, sink, console=console, builder=WindowBuilder(window_config), metrics=metrics
        )
    if metrics_file is not None and metrics is not None:
        from prometheus_client import write_to_textfile

        try:
            write_to_textfile(str(metrics_file), metrics.registry)
        except OSError as exc:
            raise UserError(
                f"--metrics-file {metrics_file}: cannot write: {exc.strerror or exc}"
            ) from None
    for line in result.summary_lines():
        console.print(line, markup=False)
    error = no_flows_error(flows, result.read)
    if error is None and not writer.rows:
        error = UserError(
            f"no windows from {', '.join(flows)}: {result.read.flows:,} flows read, none "
            "counted into a window (see 'not counted' above)"
        )
    if error is not None:
        out.unlink(missing_ok=True)
        raise error
    console.print(f"wrote {writer.rows:,} identity-windows to {out}", markup=False)
    return result


def print_features(console: Console) -> None:
    table = Table(title="window features (each as egress_<name> and ingress_<name>)")
    table.add_column("feature", overflow="fold")
    table.add_column("meaning", overflow="fold")
    for feature in FEATURES:
        table.add_row(feature.name, feature.description)
    console.print(table)


def run_demo(
    out: Path, *, hours: float, seed: int, window_config: WindowConfig, console: Console
) -> None:
    """The embedded default: generate a labelled day, build its windows, show what attacks look like."""
    from netwarden.generator import SCENARIOS

    title = "netwarden: embedded demo (no cluster needed)"
    if console.is_terminal:
        console.rule(title)
    else:  # a rule would span the whole (unlimited) width of a file
        console.print(f"-- {title} --", markup=False)
    result = generate(
        out,
        hours=hours,
        seed=seed,
        attacks=list(SCENARIOS),
        rate=1.0,
        start=None,
        gzip=False,
        console=console,
    )
    kept: list[ClosedWindow] = []
    windows(
        [str(result.flows_path)],
        out / "windows.parquet",
        window_config=window_config,
        console=console,
        keep=kept,
    )
    _print_identities(kept, console)
    _print_attacks(result.labels, kept, console)
    console.print(
        f"\nflows: {result.flows_path}\nlabels: {result.labels_path}\n"
        f"windows: {out / 'windows.parquet'} (read with pandas.read_parquet or DuckDB)",
        markup=False,
    )


def _print_identities(kept: list[ClosedWindow], console: Console) -> None:
    per: dict[str, list[ClosedWindow]] = defaultdict(list)
    for w in kept:
        per[w.identity].append(w)
    table = Table(title=f"{len(per)} identities")
    table.add_column("identity", overflow="fold")  # folded, never cut, in a narrow terminal
    for col in ("windows", "egress flows", "ingress flows", "dns queries", "drops"):
        table.add_column(col, justify="right", no_wrap=True)
    for identity in sorted(
        per, key=lambda i: -sum(w.client.flows + w.server.flows for w in per[i])
    ):
        ws = per[identity]
        table.add_row(
            identity,
            f"{len(ws):,}",
            f"{sum(w.client.flows for w in ws):,}",
            f"{sum(w.server.flows for w in ws):,}",
            f"{sum(w.client.dns_queries for w in ws):,}",
            f"{sum(w.client.drops + w.server.drops for w in ws):,}",
        )
    console.print(table)


def _print_attacks(labels: Sequence[Any], kept: list[ClosedWindow], console: Console) -> None:
    """For each labelled attack, the features of the attacker's windows that moved most.

    Deviation is (attack value - median) / (MAD + 1) over the identity's windows outside any
    attack: a plain robust z-score, enough to show the signal is in the windows. Detection
    proper (models, thresholds) is the detector's job.
    """
    if not labels:
        return
    columns = feature_columns()
    table = Table(title="labelled attacks and what their windows show")
    for col in ("scenario", "identity", "time (UTC)"):
        table.add_column(col, overflow="fold")
    table.add_column("windows", justify="right", no_wrap=True)
    table.add_column("features that moved most: peak in attack (usual median)", overflow="fold")
    for label in labels:
        start, end = label.start.timestamp(), label.end.timestamp()
        mine = [w for w in kept if w.identity == label.identity]
        inside = [w for w in mine if w.end > start and w.start < end]
        outside = [
            w
            for w in mine
            if not any(
                w.end > lb.start.timestamp() and w.start < lb.end.timestamp() for lb in labels
            )
        ]
        if not inside or not outside:
            table.add_row(label.scenario, label.identity, "", str(len(inside)), "no windows")
            continue
        inside_f = [w.features() for w in inside]
        outside_f = [w.features() for w in outside]
        moves = []
        for col in columns:
            usual = [f[col] for f in outside_f]
            med = statistics.median(usual)
            mad = statistics.median(abs(v - med) for v in usual)
            peak = max(f[col] for f in inside_f)
            moves.append(((peak - med) / (mad + 1.0), col, peak, med))
        moves.sort(reverse=True)
        text = "\n".join(f"{col} {peak:,.4g} ({med:,.4g})" for _, col, peak, med in moves[:3])
        table.add_row(
            label.scenario,
            label.identity,
            time_span(label.start, label.end),
            str(len(inside)),
            text,
        )
    console.print(table)

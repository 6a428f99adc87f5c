"""Commands on traffic and windows: ``run`` (the embedded demo), ``generate``, ``windows`` and
``features``; :mod:`netwarden.commands.traffic` does the work."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Final

from netwarden.cli.consoles import stderr, stdout
from netwarden.cli.options import (
    add_flows_option,
    add_window_options,
    positive_float,
    window_config,
)

__all__ = ["COMMANDS", "add_parser"]


def _add_run(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser(
        "run",
        help="run the main job on its embedded default (no cluster needed)",
        description="Generate a labelled day of cluster traffic with every attack scenario, build "
        "its per-identity feature windows and print a summary showing what each "
        "attack looks like in the windows.",
    )
    run.add_argument(
        "--out",
        type=Path,
        default=Path("netwarden-data/demo"),
        help="folder for the generated flows, labels and windows (default: %(default)s)",
    )
    run.add_argument(
        "--hours",
        type=positive_float,
        default=24.0,
        help="hours of traffic to generate (default: %(default)s)",
    )
    run.add_argument("--seed", type=int, default=7, help="random seed (default: %(default)s)")
    add_window_options(run)
    run.set_defaults(handler=_cmd_run)


def _add_generate(sub: argparse._SubParsersAction) -> None:
    gen = sub.add_parser(
        "generate",
        help="generate labelled cluster traffic as Hubble JSON lines",
        description="Write realistic Kubernetes cluster traffic in the newest `hubble observe -o "
        "json` shape to OUT/flows.jsonl, with labelled attacks injected on request "
        "and described in OUT/labels.csv (scenario, identity, start, end), and benign "
        "changes (new services, vendors, jobs, surges, drains, ...) described in "
        "OUT/changes.csv (change, identities, start, end). Long attacks and changes "
        "need a long range: 24 hours fit all of them.",
    )
    gen.add_argument(
        "--hours",
        type=positive_float,
        default=24.0,
        help="hours of traffic (default: %(default)s)",
    )
    gen.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    gen.add_argument("--out", type=Path, required=True, help="output folder")
    gen.add_argument(
        "--attacks",
        nargs="*",
        default=[],
        metavar="SCENARIO",
        help="attack scenarios to inject, or 'all' (default: none); one of: "
        + ", ".join(_scenarios())
        + " (the slow_ ones last 60-90 minutes each)",
    )
    gen.add_argument(
        "--changes",
        default="",
        metavar="NAME[,NAME...]",
        help="benign changes to make, comma-separated, or 'all' (default: none); one of: "
        + ", ".join(_changes())
        + " (node_drain, new_service, new_saas_vendor and dns_provider_change last to the end)",
    )
    gen.add_argument(
        "--cluster",
        default="demo",
        metavar="NAME",
        help="cluster shape to simulate (default: %(default)s); one of: " + ", ".join(_clusters()),
    )
    gen.add_argument(
        "--rate",
        type=positive_float,
        default=1.0,
        help="multiplier of normal traffic volume (default: %(default)s)",
    )
    gen.add_argument(
        "--start",
        default=None,
        metavar="RFC3339",
        help="start time, e.g. 2026-01-05T00:00:00Z (default: that time)",
    )
    gen.add_argument("--gzip", action="store_true", help="write flows.jsonl.gz")
    gen.set_defaults(handler=_cmd_generate)


def _add_windows(sub: argparse._SubParsersAction) -> None:
    win = sub.add_parser(
        "windows",
        help="build per-identity feature windows from Hubble flow files",
        description="Read Hubble JSON flows (hubble observe -o json, exporter files, legacy bare "
        "flows; plain or gzip; '-' for stdin) and write one row per identity-window "
        "with its features. Bad lines are skipped, counted and reported.",
    )
    add_flows_option(win)
    win.add_argument("--out", type=Path, required=True, help="output file: .parquet or .jsonl")
    add_window_options(win, lateness=True)
    win.add_argument(
        "--metrics-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="also write ingest metrics (flows, parse errors by reason, late flows, "
        "lost events, windows) in Prometheus text format, e.g. for the "
        "node_exporter textfile collector",
    )
    win.set_defaults(handler=_cmd_windows)


def _add_features(sub: argparse._SubParsersAction) -> None:
    feats = sub.add_parser(
        "features",
        help="list the window features and what they mean",
        description="Print the table of window features.",
    )
    feats.set_defaults(handler=_cmd_features)


def _scenarios() -> tuple[str, ...]:
    from netwarden.generator import ALL_SCENARIOS

    return ALL_SCENARIOS


def _changes() -> tuple[str, ...]:
    from netwarden.generator import CHANGES

    return CHANGES


def _clusters() -> tuple[str, ...]:
    from netwarden.generator import CLUSTERS

    return tuple(CLUSTERS)


_PARSERS: Final[dict[str, Callable[[argparse._SubParsersAction], None]]] = {
    "run": _add_run,
    "generate": _add_generate,
    "windows": _add_windows,
    "features": _add_features,
}
COMMANDS: Final = tuple(_PARSERS)


def add_parser(subparsers: argparse._SubParsersAction, command: str) -> None:
    """Add the parser of ``command``, one of :data:`COMMANDS`, to ``subparsers``."""
    _PARSERS[command](subparsers)


# -- commands ---------------------------------------------------------------------------------


def _cmd_generate(args: argparse.Namespace) -> int:
    from netwarden.commands import traffic as commands

    commands.generate(
        args.out,
        hours=args.hours,
        seed=args.seed,
        attacks=args.attacks,
        rate=args.rate,
        start=args.start,
        gzip=args.gzip,
        console=stderr,
        changes=[c for c in args.changes.split(",") if c.strip()],
        cluster=args.cluster,
    )
    return 0


def _cmd_windows(args: argparse.Namespace) -> int:
    from netwarden.commands import traffic as commands

    commands.windows(
        args.flows,
        args.out,
        window_config=window_config(args),
        console=stderr,
        metrics_file=args.metrics_file,
    )
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from netwarden.commands import traffic as commands

    commands.run_demo(
        args.out,
        hours=args.hours,
        seed=args.seed,
        window_config=window_config(args),
        console=stdout(),
    )
    return 0


def _cmd_features(args: argparse.Namespace) -> int:
    from netwarden.commands import traffic as commands

    commands.print_features(stdout())
    return 0

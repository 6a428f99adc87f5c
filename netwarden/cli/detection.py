"""Commands on models: ``train`` and ``score``; :mod:`netwarden.commands.detection` does the
work."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Final

from netwarden.cli.consoles import stderr
from netwarden.cli.options import (
    add_flows_option,
    add_window_options,
    positive_float,
    window_config,
)

__all__ = ["COMMANDS", "add_parser"]


def _add_train(sub: argparse._SubParsersAction) -> None:
    tr = sub.add_parser(
        "train",
        help="train anomaly models from Hubble flow files",
        description="Build windows from the flows (normal traffic: a day or more, so the daily "
        "cycle is learned), train one model per identity with enough history plus "
        "per-namespace and global fallbacks, and save them as a new version in "
        "MODEL_DIR.",
    )
    add_flows_option(tr)
    tr.add_argument(
        "--model-dir",
        type=Path,
        required=True,
        metavar="DIR",
        help="model folder; a new version is added and made current",
    )
    add_window_options(tr, note="; scoring uses the same")
    tr.add_argument(
        "--expected-rate",
        type=positive_float,
        default=2e-4,
        metavar="RATE",
        help="share of normal windows expected above the threshold "
        "(default: %(default)s, about 0.3 windows per identity-day)",
    )
    tr.add_argument(
        "--min-windows",
        type=int,
        default=120,
        metavar="N",
        help="windows an identity needs for its own model (default: %(default)s)",
    )
    tr.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    _add_signing_key(
        tr,
        "sign the new version with the key in FILE (HMAC-SHA256; the service "
        "refuses versions not signed with its key: models.signing_key_file, on the "
        "embedded default <data_dir>/model-signing.key); unsigned without it",
    )
    tr.set_defaults(handler=_cmd_train)


def _add_signing_key(parser: argparse.ArgumentParser, text: str) -> None:
    parser.add_argument("--signing-key", type=Path, default=None, metavar="FILE", help=text)


def _add_score(sub: argparse._SubParsersAction) -> None:
    sc = sub.add_parser(
        "score",
        help="score Hubble flows with trained models",
        description="Build windows from the flows with the model's window length, score each "
        "identity-window and write one JSON object per window to FILE.jsonl; print "
        "the anomalies with their top reasons and the changes (new edges that look like "
        "ordinary traffic: a new service, a new vendor) on stderr.",
    )
    sc.add_argument(
        "--model-dir",
        type=Path,
        required=True,
        metavar="DIR",
        help="model folder written by `netwarden train`",
    )
    add_flows_option(sc)
    sc.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="FILE.jsonl",
        help="where to write the scored windows (JSON lines)",
    )
    sc.add_argument(
        "--changes",
        type=Path,
        default=None,
        metavar="FILE.jsonl",
        help="also write the changes found, one JSON object per change (JSON lines)",
    )
    sc.add_argument(
        "--db",
        type=Path,
        default=None,
        metavar="FILE",
        help="also record scored windows and anomalies in this SQLite database",
    )
    _add_signing_key(
        sc,
        "verify the model with the key in FILE before using it: an edited, "
        "unsigned or foreign-signed version is refused",
    )
    sc.set_defaults(handler=_cmd_score)


_PARSERS: Final[dict[str, Callable[[argparse._SubParsersAction], None]]] = {
    "train": _add_train,
    "score": _add_score,
}
COMMANDS: Final = tuple(_PARSERS)


def add_parser(subparsers: argparse._SubParsersAction, command: str) -> None:
    """Add the parser of ``command``, one of :data:`COMMANDS`, to ``subparsers``."""
    _PARSERS[command](subparsers)


# -- commands ---------------------------------------------------------------------------------


def _cmd_train(args: argparse.Namespace) -> int:
    from netwarden.commands import detection

    detection.train(
        args.flows,
        args.model_dir,
        window_config=window_config(args),
        expected_rate=args.expected_rate,
        min_windows=args.min_windows,
        seed=args.seed,
        console=stderr,
        signing_key=args.signing_key,
    )
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from netwarden.commands import detection

    detection.score(
        args.model_dir,
        args.flows,
        args.out,
        db=args.db,
        console=stderr,
        signing_key=args.signing_key,
        changes_out=args.changes,
    )
    return 0

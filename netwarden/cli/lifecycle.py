"""Commands on the model lifecycle: ``retrain`` and ``models`` (list, show, promote, rollback);
:mod:`netwarden.commands.lifecycle` does the work."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from netwarden.cli.consoles import stderr
from netwarden.cli.options import add_flows_option, positive_float, positive_int

__all__ = ["COMMANDS", "add_parser"]


def _timestamp(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an RFC 3339 time: {text!r}") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _add_model_dir(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument(
        "--model-dir",
        type=Path,
        required=required,
        metavar="DIR",
        help="model folder (netwarden serve's <data_dir>/models by default there)",
    )


def _add_signing_key(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--signing-key",
        type=Path,
        default=None,
        metavar="FILE",
        help="the service's model signing key: new versions are signed with it and a version "
        "is verified with it before it is made current (the service refuses unsigned ones)",
    )


def _add_retrain(sub: argparse._SubParsersAction) -> None:
    rt = sub.add_parser(
        "retrain",
        help="train a candidate model on the service's window history and promote it if the "
        "promotion gate passes",
        description="Train a candidate on the last DAYS of window history (not on windows of "
        "confirmed anomalies, nor flagged windows nobody reviewed; yes on what people called "
        "expected or accepted as a change), compare it with the current model on the last "
        "VALIDATION_DAYS (held out) and the labelled windows, save it as a new version with its "
        "gate.json, and make it current when it raises no more false alerts and loses no "
        "confirmed anomaly.",
    )
    _add_model_dir(rt)
    rt.add_argument(
        "--history",
        type=Path,
        required=True,
        metavar="DIR",
        help="the window history folder (netwarden serve's <data_dir>/history)",
    )
    rt.add_argument(
        "--store",
        default=None,
        metavar="URL",
        help="SQLAlchemy URL of the service's store, to read people's verdicts and decided "
        "changes from (default: the labels the service exports into DIR/labels)",
    )
    rt.add_argument(
        "--edges",
        type=Path,
        default=None,
        metavar="FILE",
        help="the service's live edge memory (<data_dir>/edges.json), merged into the "
        "candidate's (default: the current model's memory and accepted changes only)",
    )
    rt.add_argument(
        "--days",
        type=positive_float,
        default=14.0,
        metavar="N",
        help="days of history to use, validation included (default: %(default)s)",
    )
    rt.add_argument(
        "--validation-days",
        type=positive_float,
        default=1.0,
        metavar="N",
        help="the most recent days, held out of training for the gate (default: %(default)s)",
    )
    rt.add_argument(
        "--until",
        type=_timestamp,
        default=None,
        metavar="RFC3339",
        help="end of the history to use (default: the end of its newest window)",
    )
    rt.add_argument(
        "--keep-versions",
        type=positive_int,
        default=None,
        metavar="N",
        help="afterwards delete all but the N newest versions (never the current one nor "
        "its rollback target; default: keep all)",
    )
    rt.add_argument(
        "--no-promote",
        action="store_true",
        help="save the candidate and its gate report but leave the current model in place",
    )
    rt.add_argument(
        "--min-windows",
        type=positive_int,
        default=None,
        metavar="N",
        help="windows an identity needs for its own model (default: the current model's)",
    )
    rt.add_argument(
        "--gate-ratio",
        type=positive_float,
        default=1.1,
        metavar="X",
        help="false alerts per identity-day the candidate may have, as a multiple of the "
        "current model's (default: %(default)s) ...",
    )
    rt.add_argument(
        "--gate-tolerance",
        type=float,
        default=0.05,
        metavar="N",
        help="... plus this many per identity-day (default: %(default)s)",
    )
    rt.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    _add_signing_key(rt)
    rt.set_defaults(handler=_cmd_retrain)


def _add_models(sub: argparse._SubParsersAction) -> None:
    md = sub.add_parser(
        "models",
        help="list, show, promote or roll back model versions",
        description="The versions of a model folder: list them, show one (with its promotion "
        "gate report), make one current by hand, or go back to the previous one. A switch is "
        "atomic; a running service picks it up within models.reload_interval.",
    )
    actions = md.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = actions.add_parser("list", help="every version, newest first")
    _add_model_dir(ls)
    ls.add_argument("--json", action="store_true", help="one JSON object per version")
    ls.set_defaults(handler=_cmd_list)
    show = actions.add_parser("show", help="one version with its gate report (JSON)")
    _add_model_dir(show)
    show.add_argument("version", nargs="?", help="the version (default: the current one)")
    show.set_defaults(handler=_cmd_show)
    pr = actions.add_parser("promote", help="make a version current, whatever its gate said")
    _add_model_dir(pr)
    pr.add_argument("version", help="the version to make current")
    pr.add_argument("--reason", default="", help="why (kept in promotions.jsonl)")
    _add_signing_key(pr)
    pr.set_defaults(handler=_cmd_promote)
    rb = actions.add_parser("rollback", help="make the previous (or a named) version current")
    _add_model_dir(rb)
    rb.add_argument("version", nargs="?", help="the version to go back to (default: previous)")
    rb.add_argument("--reason", default="", help="why (kept in promotions.jsonl)")
    _add_signing_key(rb)
    rb.set_defaults(handler=_cmd_rollback)


def _add_history(sub: argparse._SubParsersAction) -> None:
    hi = sub.add_parser(
        "history",
        help="score flow files as the service would and add the windows to a window history",
        description="Build windows from the flows, judge them with the current model (edge "
        "memory, novelty rules, incidents) and append them to the window history in DIR, as "
        "netwarden serve does: to backfill a history from recorded flows, or to simulate days "
        "of service for retraining.",
    )
    add_flows_option(hi)
    _add_model_dir(hi)
    hi.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="the history folder to add to"
    )
    hi.add_argument(
        "--db",
        type=Path,
        default=None,
        metavar="FILE",
        help="also record the windows and anomalies in this SQLite store (to review them)",
    )
    hi.add_argument(
        "--edges",
        type=Path,
        default=None,
        metavar="FILE",
        help="live edge memory to start from and save back to (as serve keeps edges.json)",
    )
    _add_signing_key(hi)
    hi.set_defaults(handler=_cmd_history)


_PARSERS: Final[dict[str, Callable[[argparse._SubParsersAction], None]]] = {
    "retrain": _add_retrain,
    "models": _add_models,
    "history": _add_history,
}
COMMANDS: Final = tuple(_PARSERS)


def add_parser(subparsers: argparse._SubParsersAction, command: str) -> None:
    """Add the parser of ``command``, one of :data:`COMMANDS`, to ``subparsers``."""
    _PARSERS[command](subparsers)


def _actor() -> str:
    try:
        return f"{getpass.getuser()} (command line)"
    except Exception:
        return "command line"


# -- commands ---------------------------------------------------------------------------------


def _cmd_retrain(args: argparse.Namespace) -> int:
    from netwarden.commands import lifecycle
    from netwarden.errors import UserError
    from netwarden.models.gate import GateConfig

    try:
        gate = GateConfig(max_ratio=args.gate_ratio, tolerance=args.gate_tolerance)
    except ValueError as exc:
        raise UserError(f"--gate-ratio/--gate-tolerance: {exc}") from None
    result = lifecycle.retrain(
        args.model_dir,
        history=args.history,
        store_url=args.store,
        days=args.days,
        validation_days=args.validation_days,
        until=args.until,
        signing_key=args.signing_key,
        live_edges=args.edges,
        keep_versions=args.keep_versions,
        promote=not args.no_promote,
        gate=gate,
        min_windows=args.min_windows,
        seed=args.seed,
        actor=_actor(),
        console=stderr,
    )
    print(json.dumps({"version": result.version, "promoted": result.promoted}))
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from netwarden.commands.lifecycle import version_json
    from netwarden.models.artifact import list_versions

    versions = list_versions(args.model_dir)
    if not versions:
        stderr.print(f"no model versions in {args.model_dir}", markup=False)
        return 0
    for v in versions:
        item = version_json(v, args.model_dir)
        if args.json:
            print(json.dumps(item))
            continue
        gate = item["gate"] or {}
        decision = gate.get("decision", "-")
        rate = (gate.get("candidate") or {}).get("false_alerts_per_identity_day")
        shown = f"{decision}" + (
            f" ({rate:.3f} false alerts/identity-day)" if rate is not None else ""
        )
        print(
            f"{'*' if v.current else ' '} {v.version}  {v.created:%Y-%m-%d %H:%M} UTC  "
            f"{v.rows:>9,} windows  {v.models:>4} models  gate: {shown}"
        )
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from netwarden.commands.lifecycle import find_version, version_json
    from netwarden.errors import UserError
    from netwarden.models.registry import current_version, promotions

    name = args.version or current_version(args.model_dir)
    if name is None:
        raise UserError(f"{args.model_dir}: no current version; name one")
    item = version_json(find_version(args.model_dir, name), args.model_dir)
    item["promotions"] = [p for p in promotions(args.model_dir) if p.get("version") == name]
    json.dump(item, sys.stdout, indent=1)
    print()
    return 0


def _cmd_promote(args: argparse.Namespace) -> int:
    from netwarden.commands.lifecycle import promote

    previous = promote(
        args.model_dir,
        args.version,
        actor=_actor(),
        reason=args.reason,
        signing_key=args.signing_key,
    )
    stderr.print(f"{args.version} is now current (was {previous})", markup=False)
    return 0


def _cmd_rollback(args: argparse.Namespace) -> int:
    from netwarden.commands.lifecycle import rollback

    previous, target = rollback(
        args.model_dir,
        args.version,
        actor=_actor(),
        reason=args.reason,
        signing_key=args.signing_key,
    )
    stderr.print(f"rolled back from {previous} to {target}", markup=False)
    return 0


def _cmd_history(args: argparse.Namespace) -> int:
    from netwarden.commands.lifecycle import backfill

    backfill(
        args.flows,
        args.model_dir,
        args.out,
        db=args.db,
        edges=args.edges,
        signing_key=args.signing_key,
        console=stderr,
    )
    return 0

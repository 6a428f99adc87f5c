"""Commands on policies: ``propose`` and ``simulate``; :mod:`netwarden.commands.remediation`
does the work."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Final

from netwarden.cli.consoles import stderr, stdout
from netwarden.cli.options import add_flows_option

__all__ = ["COMMANDS", "add_parser"]


def _add_propose(sub: argparse._SubParsersAction) -> None:
    prop = sub.add_parser(
        "propose",
        help="propose a least-privilege baseline CiliumNetworkPolicy per workload",
        description="Learn from normal Hubble flows (forwarded requests only) which peers, ports "
        "and DNS names each workload uses, and write one validated "
        "CiliumNetworkPolicy per workload to DIR/<namespace>-<workload>.yaml.",
    )
    add_flows_option(prop)
    prop.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="DIR",
        help="folder for the policy files (created if missing)",
    )
    prop.add_argument(
        "--max-cidrs",
        type=int,
        default=16,
        metavar="N",
        help="unnamed world addresses per workload and direction allowed as /32 "
        "CIDRs; beyond that the world entity is used (default: %(default)s)",
    )
    prop.set_defaults(handler=_cmd_propose)


def _add_simulate(sub: argparse._SubParsersAction) -> None:
    sim = sub.add_parser(
        "simulate",
        help="replay Hubble flows through policies and show what they would drop",
        description="Load the CiliumNetworkPolicies of DIR (invalid ones are refused with their "
        "problems), judge every flow the way Cilium would (L3/L4; L7 rules are not "
        "simulated) and print the flows that would be dropped, grouped by workload, "
        "direction, peer and port.",
    )
    sim.add_argument(
        "--policies",
        type=Path,
        required=True,
        metavar="DIR",
        help="folder (or file) of policy YAML files, e.g. written by `propose`",
    )
    add_flows_option(sim)
    sim.set_defaults(handler=_cmd_simulate)


_PARSERS: Final[dict[str, Callable[[argparse._SubParsersAction], None]]] = {
    "propose": _add_propose,
    "simulate": _add_simulate,
}
COMMANDS: Final = tuple(_PARSERS)


def add_parser(subparsers: argparse._SubParsersAction, command: str) -> None:
    """Add the parser of ``command``, one of :data:`COMMANDS`, to ``subparsers``."""
    _PARSERS[command](subparsers)


# -- commands ---------------------------------------------------------------------------------


def _cmd_propose(args: argparse.Namespace) -> int:
    from netwarden.commands import remediation

    if args.max_cidrs < 0:
        from netwarden.errors import UserError

        raise UserError(f"--max-cidrs: must be 0 or more, got {args.max_cidrs}")
    remediation.propose(args.flows, args.out, max_cidrs=args.max_cidrs, console=stderr)
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from netwarden.commands import remediation

    remediation.simulate_policies(args.policies, args.flows, console=stderr, out=stdout())
    return 0

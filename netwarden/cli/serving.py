"""Commands that run until stopped or hand out access: ``serve``, ``observer``, ``agent`` and
``token``; :mod:`netwarden.service`, :mod:`netwarden.observer` and
:mod:`netwarden.commands.agent` do the work."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from netwarden.cli.consoles import stderr, stdout
from netwarden.cli.options import non_negative_float

__all__ = ["COMMANDS", "add_parser"]


def _add_serving_arguments(parser: argparse.ArgumentParser, *, max_flows_help: str) -> None:
    """Options of a command that serves Hubble's Observer API: ring size, streams, TLS."""
    parser.add_argument("--max-flows", type=int, default=4095, metavar="N", help=max_flows_help)
    parser.add_argument(
        "--max-streams",
        type=int,
        default=16,
        metavar="N",
        help="concurrent GetFlows calls served; more are refused (default: %(default)s)",
    )
    parser.add_argument(
        "--tls-cert",
        type=Path,
        default=None,
        metavar="FILE",
        help="serve TLS with this PEM server certificate (needs --tls-key)",
    )
    parser.add_argument(
        "--tls-key", type=Path, default=None, metavar="FILE", help="PEM private key of --tls-cert"
    )
    parser.add_argument(
        "--tls-client-ca",
        type=Path,
        default=None,
        metavar="FILE",
        help="require client certificates signed by this PEM CA (mutual TLS; "
        "needs --tls-cert and --tls-key)",
    )


def _serving_tls(args: argparse.Namespace) -> Any:
    """The TLS files of :func:`_add_serving_arguments`, checked (None: plain text)."""
    from netwarden.errors import UserError
    from netwarden.observer.server import TLSFiles

    if args.max_flows < 1:
        raise UserError(f"--max-flows: must be at least 1, got {args.max_flows}")
    if args.max_streams < 1:
        raise UserError(f"--max-streams: must be at least 1, got {args.max_streams}")
    if (args.tls_cert is None) != (args.tls_key is None):
        raise UserError("--tls-cert and --tls-key go together: give both or neither")
    if args.tls_client_ca is not None and args.tls_cert is None:
        raise UserError(
            "--tls-client-ca needs --tls-cert and --tls-key (mutual TLS is TLS "
            "with client certificates)"
        )
    if args.tls_cert is None:
        return None
    return TLSFiles(args.tls_cert, args.tls_key, args.tls_client_ca)


def _add_serve(sub: argparse._SubParsersAction) -> None:
    srv = sub.add_parser(
        "serve",
        help="run the service: live flows, scoring, alerts and the HTTP API",
        description="Follow a live flow source, close windows as event time passes, score them "
        "with the current model, store anomalies, send alerts and serve the HTTP "
        "API (under /api/v1; /healthz, /readyz, /metrics). Without --config it runs "
        "the embedded default: the built-in generator in real time, a first model "
        "trained on generated history, everything under netwarden-data/service. "
        "Every option can be overridden as NETWARDEN_<SECTION>__<OPTION>.",
    )
    srv.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="YAML configuration file (see --print-config)",
    )
    srv.add_argument(
        "--print-config",
        action="store_true",
        help="print every option with its default and meaning, then exit",
    )
    srv.set_defaults(handler=_cmd_serve)


def _add_observer(sub: argparse._SubParsersAction) -> None:
    obs = sub.add_parser(
        "observer",
        help="serve Hubble flows from a file over Hubble's gRPC Observer API",
        description="Replay a Hubble JSON flow file (hubble observe -o json, exporter file, "
        "legacy bare flows; plain or gzip; '-' for stdin) into a ring of the last "
        "--max-flows flows and serve it as a Hubble agent does: GetFlows (last/first "
        "N, follow, since/until, filters such as --namespace and --verdict) and "
        "ServerStatus, so `hubble observe --server ADDR` and netwarden's Hubble "
        "source read it. Runs until Ctrl-C or SIGTERM.",
    )
    obs.add_argument("file", metavar="FILE", help="Hubble JSON lines file ('-' for stdin)")
    obs.add_argument(
        "--listen",
        default="127.0.0.1:4244",
        metavar="ADDR",
        help="HOST:PORT (port 0: any free port, printed at start), :PORT for every "
        "interface, or unix:///path/to.sock (default: %(default)s, Hubble's "
        "agent port)",
    )
    obs.add_argument(
        "--rate",
        type=non_negative_float,
        default=0.0,
        metavar="FLOWS_PER_S",
        help="replay at this many flows per second; 0 = as fast as possible (default: %(default)s)",
    )
    obs.add_argument(
        "--follow",
        action="store_true",
        help="after the end of FILE keep serving what is appended to it, like "
        "tail -F (plain files only)",
    )
    _add_serving_arguments(
        obs,
        max_flows_help="flows kept for GetFlows; older ones are "
        "overwritten (Hubble's event buffer capacity, default: %(default)s)",
    )
    obs.add_argument(
        "--node-name",
        default=None,
        metavar="NAME",
        help="node name for flows that carry none and for lost events (default: this host's name)",
    )
    obs.set_defaults(handler=_cmd_observer)


def _add_agent(sub: argparse._SubParsersAction) -> None:
    agent = sub.add_parser(
        "agent",
        help="run the eBPF agent: connections, bytes and drops from the kernel",
        description="Load netwarden's kernel probes (bcc; needs root, the kernel's BTF and "
        "kernel headers: see bpf/setup-host.sh) and report TCP connections (open, "
        "close, bytes, duration, resets, retransmits), UDP traffic and packet drops "
        "(with the kernel's drop reason) as Hubble flows: JSON lines (--out), "
        "Hubble's gRPC Observer API (--observer-listen), or both. Identities come "
        "from the Kubernetes API, an identity map file, or the network namespace. "
        "Runs until Ctrl-C or SIGTERM.",
    )
    agent.add_argument(
        "--out",
        default=None,
        metavar="FILE",
        help="write flows as Hubble JSON lines to FILE ('-': stdout; the default "
        "unless --observer-listen is given)",
    )
    agent.add_argument(
        "--observer-listen",
        default=None,
        metavar="ADDR",
        help="also serve the flows over Hubble's gRPC Observer API on HOST:PORT "
        "or unix:///path.sock (e.g. 127.0.0.1:4244)",
    )
    _add_serving_arguments(
        agent,
        max_flows_help="flows kept for GetFlows with --observer-listen (default: %(default)s)",
    )
    agent.add_argument(
        "--identity-map",
        type=Path,
        default=None,
        metavar="FILE",
        help="YAML identity map: namespace, pod and labels by network namespace, "
        "cgroup or IP (hosts without Kubernetes, tests)",
    )
    agent.add_argument(
        "--kubernetes",
        default="auto",
        metavar="MODE",
        help="pod identities from the Kubernetes API: auto (in-cluster when "
        "running in a pod), off, or a kubeconfig path (default: %(default)s)",
    )
    agent.add_argument(
        "--node-name",
        default=None,
        metavar="NAME",
        help="node name on the flows (default: this host's name)",
    )
    agent.add_argument(
        "--cgroup-root",
        type=Path,
        default=None,
        metavar="DIR",
        help="the host's cgroup v2 root, where the UDP peer hooks are attached "
        "and sockets' cgroups are looked up to find their pods (default: "
        "the cgroup2 mount of this process; in a container, mount the "
        "host's /sys/fs/cgroup and name it here)",
    )
    agent.add_argument(
        "--no-udp-peers",
        action="store_true",
        help="do not attach the cgroup hooks that see the addresses of UDP "
        "sendto/recvfrom calls: peers of unconnected UDP sockets are then "
        "reported as 0.0.0.0:0",
    )
    agent.set_defaults(handler=_cmd_agent)


def _add_token(sub: argparse._SubParsersAction) -> None:
    tok = sub.add_parser(
        "token",
        help="create an API token",
        description="Print a new random API token (give it to its user) and the hashed entry to "
        "add to the tokens file (api.tokens_file) or to NETWARDEN_API_TOKENS. Only "
        "the hash is stored; the token cannot be recovered from it.",
    )
    tok.add_argument("--name", required=True, help="who or what uses the token (audit trail)")
    tok.add_argument(
        "--role",
        required=True,
        choices=("viewer", "operator", "reviewer", "admin"),
        help="viewer reads; operator also acknowledges, suppresses and resolves; "
        "reviewer and admin are for policy review and apply",
    )
    tok.set_defaults(handler=_cmd_token)


_PARSERS: Final[dict[str, Callable[[argparse._SubParsersAction], None]]] = {
    "serve": _add_serve,
    "observer": _add_observer,
    "agent": _add_agent,
    "token": _add_token,
}
COMMANDS: Final = tuple(_PARSERS)


def add_parser(subparsers: argparse._SubParsersAction, command: str) -> None:
    """Add the parser of ``command``, one of :data:`COMMANDS`, to ``subparsers``."""
    _PARSERS[command](subparsers)


# -- commands ---------------------------------------------------------------------------------


def _cmd_serve(args: argparse.Namespace) -> int:
    from netwarden.config import ConfigError, defaults_yaml, load_config
    from netwarden.errors import UserError

    if args.print_config:
        stdout().print(defaults_yaml(), markup=False, highlight=False, end="")
        return 0
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    from netwarden.service import serve

    serve(config, console=stderr)
    return 0


def _cmd_observer(args: argparse.Namespace) -> int:
    import signal
    import socket
    import threading

    from netwarden.errors import UserError
    from netwarden.observer.replay import serve_replay
    from netwarden.observer.server import ObserverServerError

    tls = _serving_tls(args)
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        serve_replay(
            args.file,
            listen=args.listen,
            rate=args.rate,
            follow=args.follow,
            max_flows=args.max_flows,
            node_name=args.node_name or socket.gethostname(),
            tls=tls,
            max_streams=args.max_streams,
            console=stderr,
            stop=stop,
        )
    except ObserverServerError as exc:
        raise UserError(str(exc)) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _cmd_agent(args: argparse.Namespace) -> int:
    from netwarden.commands.agent import run_agent

    return run_agent(args, tls=_serving_tls(args), console=stderr)


def _cmd_token(args: argparse.Namespace) -> int:
    from netwarden.api.auth import ENV_VAR, new_token

    token, entry = new_token(args.name, args.role)
    out = stdout()
    out.print(f"token:  {token}", markup=False, highlight=False)
    out.print(
        f"file:   - {{name: {entry.name}, role: {entry.role.name}, sha256: {entry.sha256}}}",
        markup=False,
        highlight=False,
    )
    out.print(f"env:    {ENV_VAR}={entry.line}", markup=False, highlight=False)
    return 0

"""The ``netwarden`` command line.

argparse rather than typer: ``--flows PATH [PATH ...]`` takes several values after one flag,
which other tools script against, and argparse expresses that directly (``nargs="+"``).
A user mistake (missing file, bad option value, unwritable output) prints one clear line and
exits with status 2; bad lines inside flow files are skipped, counted and reported with their
file and line number.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console

from netwarden import __version__

__all__ = ["main"]

_stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def _stdout() -> Console:
    """Tables stay readable when piped: a wide fixed width instead of 80 columns."""
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=140)
    return console


def _number(text: str, *, allow_zero: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value < 0 or (value == 0 and not allow_zero) or value != value:
        raise argparse.ArgumentTypeError(
            f"must be {'0 or more' if allow_zero else 'greater than 0'}, got {text}"
        )
    return value


def _positive_float(text: str) -> float:
    return _number(text, allow_zero=False)


def _non_negative_float(text: str) -> float:
    return _number(text, allow_zero=True)


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


def _add_flows_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--flows",
        nargs="+",
        required=True,
        metavar="PATH",
        help="flow files, read in the order given ('-' for stdin)",
    )


def _add_window_argument(parser: argparse.ArgumentParser, note: str = "") -> None:
    parser.add_argument(
        "--window",
        type=_positive_float,
        default=60.0,
        metavar="SECONDS",
        help=f"window length in seconds (default: %(default)s){note}",
    )


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netwarden",
        description="Network anomaly detection for Kubernetes: Hubble/eBPF flows in, per-identity "
        "feature windows, explained anomalies and CiliumNetworkPolicy proposals out.",
    )
    parser.add_argument("--version", action="version", version=f"netwarden {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

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
        type=_positive_float,
        default=24.0,
        help="hours of traffic to generate (default: %(default)s)",
    )
    run.add_argument("--seed", type=int, default=7, help="random seed (default: %(default)s)")
    run.add_argument(
        "--window",
        type=_positive_float,
        default=60.0,
        metavar="SECONDS",
        help="window length in seconds (default: %(default)s)",
    )
    run.set_defaults(handler=_cmd_run)

    gen = sub.add_parser(
        "generate",
        help="generate labelled cluster traffic as Hubble JSON lines",
        description="Write realistic Kubernetes cluster traffic in the newest `hubble observe -o "
        "json` shape to OUT/flows.jsonl, with labelled attacks injected on request "
        "and described in OUT/labels.csv (scenario, identity, start, end).",
    )
    gen.add_argument(
        "--hours",
        type=_positive_float,
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
        + ", ".join(_scenarios()),
    )
    gen.add_argument(
        "--rate",
        type=_positive_float,
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

    win = sub.add_parser(
        "windows",
        help="build per-identity feature windows from Hubble flow files",
        description="Read Hubble JSON flows (hubble observe -o json, exporter files, legacy bare "
        "flows; plain or gzip; '-' for stdin) and write one row per identity-window "
        "with its features. Bad lines are skipped, counted and reported.",
    )
    _add_flows_argument(win)
    win.add_argument("--out", type=Path, required=True, help="output file: .parquet or .jsonl")
    _add_window_argument(win)
    win.add_argument(
        "--lateness",
        type=_non_negative_float,
        default=15.0,
        metavar="SECONDS",
        help="allowed lateness of flows behind the newest event time (default: %(default)s)",
    )
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

    tr = sub.add_parser(
        "train",
        help="train anomaly models from Hubble flow files",
        description="Build windows from the flows (normal traffic: a day or more, so the daily "
        "cycle is learned), train one model per identity with enough history plus "
        "per-namespace and global fallbacks, and save them as a new version in "
        "MODEL_DIR.",
    )
    _add_flows_argument(tr)
    tr.add_argument(
        "--model-dir",
        type=Path,
        required=True,
        metavar="DIR",
        help="model folder; a new version is added and made current",
    )
    _add_window_argument(tr, "; scoring uses the same")
    tr.add_argument(
        "--expected-rate",
        type=_positive_float,
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
    tr.set_defaults(handler=_cmd_train)

    sc = sub.add_parser(
        "score",
        help="score Hubble flows with trained models",
        description="Build windows from the flows with the model's window length, score each "
        "identity-window and write one JSON object per window to FILE.jsonl; print "
        "the anomalies with their top reasons on stderr.",
    )
    sc.add_argument(
        "--model-dir",
        type=Path,
        required=True,
        metavar="DIR",
        help="model folder written by `netwarden train`",
    )
    _add_flows_argument(sc)
    sc.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="FILE.jsonl",
        help="where to write the scored windows (JSON lines)",
    )
    sc.add_argument(
        "--db",
        type=Path,
        default=None,
        metavar="FILE",
        help="also record scored windows and anomalies in this SQLite database",
    )
    sc.set_defaults(handler=_cmd_score)

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
        type=_non_negative_float,
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

    prop = sub.add_parser(
        "propose",
        help="propose a least-privilege baseline CiliumNetworkPolicy per workload",
        description="Learn from normal Hubble flows (forwarded requests only) which peers, ports "
        "and DNS names each workload uses, and write one validated "
        "CiliumNetworkPolicy per workload to DIR/<namespace>-<workload>.yaml.",
    )
    _add_flows_argument(prop)
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
    _add_flows_argument(sim)
    sim.set_defaults(handler=_cmd_simulate)

    feats = sub.add_parser(
        "features",
        help="list the window features and what they mean",
        description="Print the table of window features.",
    )
    feats.set_defaults(handler=_cmd_features)
    return parser


def _scenarios() -> tuple[str, ...]:
    from netwarden.generator import SCENARIOS

    return SCENARIOS


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
        console=_stderr,
    )
    return 0


def _cmd_windows(args: argparse.Namespace) -> int:
    from netwarden.commands import traffic as commands

    commands.windows(
        args.flows,
        args.out,
        window=args.window,
        lateness=args.lateness,
        console=_stderr,
        metrics_file=args.metrics_file,
    )
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from netwarden.commands import detection

    detection.train(
        args.flows,
        args.model_dir,
        window=args.window,
        expected_rate=args.expected_rate,
        min_windows=args.min_windows,
        seed=args.seed,
        console=_stderr,
    )
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from netwarden.commands import detection

    detection.score(args.model_dir, args.flows, args.out, db=args.db, console=_stderr)
    return 0


def _cmd_propose(args: argparse.Namespace) -> int:
    from netwarden.commands import remediation

    if args.max_cidrs < 0:
        from netwarden.errors import UserError

        raise UserError(f"--max-cidrs: must be 0 or more, got {args.max_cidrs}")
    remediation.propose(args.flows, args.out, max_cidrs=args.max_cidrs, console=_stderr)
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from netwarden.commands import remediation

    remediation.simulate_policies(args.policies, args.flows, console=_stderr, out=_stdout())
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from netwarden.commands import traffic as commands

    commands.run_demo(
        args.out, hours=args.hours, seed=args.seed, window=args.window, console=_stdout()
    )
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from netwarden.config import ConfigError, defaults_yaml, load_config
    from netwarden.errors import UserError

    if args.print_config:
        _stdout().print(defaults_yaml(), markup=False, highlight=False, end="")
        return 0
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    from netwarden.service import serve

    serve(config, console=_stderr)
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
            console=_stderr,
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

    return run_agent(args, tls=_serving_tls(args), console=_stderr)


def _cmd_token(args: argparse.Namespace) -> int:
    from netwarden.api.auth import new_token

    token, entry = new_token(args.name, args.role)
    out = _stdout()
    out.print(f"token:  {token}", markup=False, highlight=False)
    out.print(
        f"file:   - {{name: {entry.name}, role: {entry.role.name}, sha256: {entry.sha256}}}",
        markup=False,
        highlight=False,
    )
    out.print(f"env:    NETWARDEN_API_TOKENS={entry.line}", markup=False, highlight=False)
    return 0


def _cmd_features(args: argparse.Namespace) -> int:
    from netwarden.commands import traffic as commands

    commands.print_features(_stdout())
    return 0


def _fail(message: str) -> NoReturn:
    _stderr.print(f"[bold red]netwarden: error:[/] {message}", markup=True, highlight=False)
    raise SystemExit(2)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``netwarden`` command."""
    from netwarden.errors import UserError
    from netwarden.ingest.inputfiles import InputError

    parser = _build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], Any] = args.handler
    try:
        code = handler(args)
    except (UserError, InputError) as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _stderr.print("interrupted")
        raise SystemExit(130) from None
    except BrokenPipeError:
        raise SystemExit(0) from None
    sys.exit(code)

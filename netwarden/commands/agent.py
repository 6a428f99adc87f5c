"""The ``netwarden agent`` command: probes to JSON lines and/or an Observer gRPC server.

Kept apart from :mod:`netwarden.cli.serving` so that the command line stays a table of options;
this is what they do. Progress (events, flows, lost events) goes to stderr every
``progress_interval`` seconds; flows go to ``--out``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from contextlib import ExitStack
from typing import Any

from netwarden.bpf.agent import (
    Agent,
    AgentOptions,
    JsonLinesSink,
    RingSink,
    fan_out,
    keep_gc_off_hot_path,
)

__all__ = ["run_agent"]


def run_agent(
    args: argparse.Namespace, *, tls: Any, console: Any, progress_interval: float = 10.0
) -> int:
    """Run until SIGINT/SIGTERM; 0 on a clean stop. Unusable hosts/options raise UserError."""
    from netwarden.bpf.preflight import AgentUnavailable
    from netwarden.errors import UserError

    options = AgentOptions(
        node_name=args.node_name or "",
        identity_map=args.identity_map,
        kubernetes=args.kubernetes,
        udp_peers=not args.no_udp_peers,
        cgroup_root=args.cgroup_root,
    )
    out = args.out if args.out is not None else (None if args.observer_listen else "-")
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        with ExitStack() as stack:
            sinks = []
            if out is not None:
                stream = sys.stdout.buffer if out == "-" else stack.enter_context(_open_out(out))
                sinks.append(JsonLinesSink(stream))
            try:
                agent = Agent.open(options, log=lambda line: console.print(line, markup=False))
            except AgentUnavailable as exc:
                raise UserError(str(exc)) from None
            stack.callback(agent.close)  # also when the Observer server cannot start
            if args.observer_listen:
                # listening only once the probes are attached: an open port means a working
                # agent (the DaemonSet's readiness probe checks it)
                sinks.append(_serve(args, tls, options, stack, console))
            keep_gc_off_hot_path()
            watcher = threading.Thread(
                target=_progress, args=(agent, stop, console, progress_interval), daemon=True
            )
            watcher.start()
            agent.run(fan_out(*sinks), stop)
            console.print(_progress_line(agent), markup=False)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _open_out(path: str) -> Any:
    from netwarden.errors import UserError

    try:
        return open(path, "ab")
    except OSError as exc:
        raise UserError(f"--out {path}: cannot open: {exc.strerror or exc}") from None


def _serve(
    args: argparse.Namespace, tls: Any, options: AgentOptions, stack: ExitStack, console: Any
) -> RingSink:
    from netwarden.errors import UserError
    from netwarden.observer.ring import FlowRing
    from netwarden.observer.server import ObserverServer, ObserverServerError

    ring = FlowRing(args.max_flows, node_name=options.node_name)
    server = ObserverServer(ring, args.observer_listen, tls=tls, max_streams=args.max_streams)
    try:
        address = server.start()
    except ObserverServerError as exc:
        raise UserError(str(exc)) from None
    stack.callback(server.stop)
    console.print(f"netwarden agent: serving Hubble's Observer API on {address}", markup=False)
    return RingSink(ring)


def _progress_line(agent: Agent) -> str:
    return (
        f"netwarden agent: {agent.events:,} kernel events, {agent.flows:,} flows, "
        f"{agent.lost:,} events lost"
        + (f", {agent.mapping_errors:,} not mapped" if agent.mapping_errors else "")
    )


def _progress(agent: Agent, stop: threading.Event, console: Any, interval: float) -> None:
    last = None
    while not stop.wait(interval):
        state = (agent.events, agent.lost)
        if state != last:
            console.print(_progress_line(agent), markup=False)
            last = state

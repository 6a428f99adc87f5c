"""eBPF agent overhead: loopback TCP connections per second with and without the agent.

A load process (pinned to ``--cpu``) opens, writes to, reads from and closes loopback TCP
connections as fast as it can for ``--seconds``; it runs alternately without and with
``netwarden agent --out /dev/null`` running (pinned to the other core, as an agent on its own
CPU share), ``--repeat`` times each. Printed: connections per second both ways (median and
best) and the ratio with/without (target: above 0.95, i.e. under 5 % slower), and what the
agent reported: kernel events, flows, and events lost because its user space fell behind.
A third arm runs a plain busy loop on the agent's core instead of the agent: on a machine whose
two cores share one physical core (hyperthreads of a VM), any busy neighbour slows the load, and
the ratio against that arm is what the probes themselves cost.
The kernel-side cost of the probes lands on the load's core (the probes run where the events
happen); the agent's user-space work runs on its own core.

Needs root, BTF and kernel headers, like the agent.

    python benchmarks/agent_overhead.py [--seconds 5] [--repeat 7] [--cpu 0] [--payload 1024]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WINDOW = 0.5  # seconds: the load's rate is also taken over its best stretch this long
LISTENERS = 64  # server ports the load connects to in turn (_load says why)


def _pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


def _load(seconds: float, payload: int, cpu: int) -> dict:
    """Child: connect, send ``payload`` bytes, get them echoed, close; count connections."""
    _pin(cpu)
    # several listeners, taken in turn: one address and port give the clients ~28,000
    # ephemeral ports, each held in TIME_WAIT (reusable on loopback after a second), which a
    # fast machine runs through in under a second and then stalls on (seen: 43,500
    # connections, then nothing for the rest of the run)
    servers = []
    for _ in range(LISTENERS):
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen(4096)
        servers.append((server, server.getsockname()))
    data = b"x" * payload
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    window_start, window_done, best_window = start, 0, 0.0
    while (now := time.perf_counter()) < deadline:
        if now - window_start >= WINDOW:  # the steadiest stretch: least disturbed by neighbours
            best_window = max(best_window, (done - window_done) / (now - window_start))
            window_start, window_done = now, done
        for server, address in servers:
            client = socket.create_connection(address)
            accepted, _ = server.accept()
            client.sendall(data)
            got = 0
            while got < payload:
                got += len(accepted.recv(65536))
            accepted.sendall(data)
            got = 0
            while got < payload:
                got += len(client.recv(65536))
            client.close()
            accepted.close()
            done += 1
    elapsed = time.perf_counter() - start
    for server, _ in servers:
        server.close()
    return {"connections": done, "seconds": elapsed, "best_window": best_window}


def _run_load(seconds: float, payload: int, cpu: int) -> tuple[float, float]:
    """(connections/s over the run, over its best WINDOW-second stretch)."""
    proc = subprocess.run([sys.executable, __file__, "--child", "--seconds", str(seconds),
                           "--payload", str(payload), "--cpu", str(cpu)],
                          capture_output=True, text=True, check=True)
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    return r["connections"] / r["seconds"], r["best_window"]


def _start_agent(cpu: int, log: Path, extra: list[str]) -> subprocess.Popen:
    netwarden = Path(sys.executable).with_name("netwarden")
    cmd = [str(netwarden) if netwarden.exists() else sys.executable, *(
        [] if netwarden.exists() else ["-m", "netwarden"]), "agent", "--out", "/dev/null", *extra]
    proc = subprocess.Popen(["taskset", "-c", str(cpu), *cmd], stdout=subprocess.DEVNULL,
                            stderr=open(log, "wb"))  # noqa: SIM115 - closed with the process
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # ready when it says so on stderr
        if proc.poll() is not None:
            raise SystemExit(f"the agent exited: {log.read_text()[-2000:]}")
        if "probes attached" in log.read_text():
            return proc
        time.sleep(0.2)
    proc.terminate()
    raise SystemExit(f"the agent did not start in 60 s: {log.read_text()[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each run")
    parser.add_argument("--repeat", type=int, default=7,
                        help="alternating runs of each (the load's rate varies by tens of "
                             "percent on a shared machine: medians of several runs)")
    parser.add_argument("--cpu", type=int, default=0, help="core of the load")
    parser.add_argument("--payload", type=int, default=1024, help="bytes each way per connection")
    parser.add_argument("--agent-args", default="", metavar="ARGS",
                        help="more options for `netwarden agent`, e.g. --no-udp-peers")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_load(args.seconds, args.payload, args.cpu)))
        return
    agent_cpu = 1 - args.cpu if (os.cpu_count() or 1) > 1 else args.cpu
    log = Path("/tmp/netwarden-agent-benchmark.log")
    labels = {"without": "without agent", "busy": "other core busy", "with": "with agent"}
    rates: dict[str, list[float]] = {name: [] for name in labels}
    steady: dict[str, list[float]] = {name: [] for name in labels}
    reports = []

    def run_arm(name: str, i: int) -> None:
        helper = None
        if name == "busy":
            helper = subprocess.Popen(["taskset", "-c", str(agent_cpu), sys.executable, "-c",
                                       "while True: pass"])
        elif name == "with":
            helper = _start_agent(agent_cpu, log, args.agent_args.split())
        try:
            rate, best_window = _run_load(args.seconds, args.payload, args.cpu)
        finally:
            if helper is not None:
                helper.terminate()
                helper.wait(timeout=30)
        note = ""
        if name == "with":
            report = [line for line in log.read_text().splitlines() if "kernel events" in line]
            reports.append(report[-1] if report else "(no report)")
            note = f"   {reports[-1]}"
        rates[name].append(rate)
        steady[name].append(best_window)
        print(f"  run {i + 1} {labels[name]:16s} {rate:>8,.0f} connections/s "
              f"(best {WINDOW:g} s: {best_window:>8,.0f}){note}", flush=True)

    order = list(labels)
    for i in range(args.repeat):
        for name in order[i % 3:] + order[:i % 3]:  # rotated: drift of the machine cancels out
            run_arm(name, i)
    print()
    print(f"loopback TCP connections ({args.payload} bytes each way), load on cpu {args.cpu}, "
          f"agent on cpu {agent_cpu}, {args.repeat} rotated runs of {args.seconds:g} s each")
    for title, table in (("whole runs", rates), (f"best {WINDOW:g} s of each run", steady)):
        median = {k: statistics.median(v) for k, v in table.items()}
        print(f"{title}, median connections/s: " + ", ".join(
            f"{labels[k]} {median[k]:,.0f}" for k in labels))
        for base in ("without", "busy"):
            ratio = median["with"] / median[base]
            cost = (1 / median["with"] - 1 / median[base]) * 1e6
            print(f"  ratio with agent / {labels[base]}: {ratio:.3f} "
                  f"({(1 - ratio) * 100:+.1f} % slower, {cost:+.2f} us per connection)")


if __name__ == "__main__":
    main()

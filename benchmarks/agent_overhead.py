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

    python benchmarks/agent_overhead.py [--seconds 5] [--repeat 3] [--cpu 0] [--payload 1024]
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


def _pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


def _load(seconds: float, payload: int, cpu: int) -> dict:
    """Child: connect, send ``payload`` bytes, get them echoed, close; count connections."""
    _pin(cpu)
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(4096)
    address = server.getsockname()
    data = b"x" * payload
    done = 0
    deadline = time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < deadline:
        for _ in range(100):
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
    server.close()
    return {"connections": done, "seconds": elapsed}


def _run_load(seconds: float, payload: int, cpu: int) -> float:
    proc = subprocess.run([sys.executable, __file__, "--child", "--seconds", str(seconds),
                           "--payload", str(payload), "--cpu", str(cpu)],
                          capture_output=True, text=True, check=True)
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    return r["connections"] / r["seconds"]


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
    parser.add_argument("--repeat", type=int, default=3, help="alternating runs of each")
    parser.add_argument("--cpu", type=int, default=0, help="core of the load")
    parser.add_argument("--payload", type=int, default=1024, help="bytes each way per connection")
    parser.add_argument("--agent-args", default="", metavar="ARGS",
                        help="more options for `netwarden agent`, e.g. --no-udp-receive-peers")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_load(args.seconds, args.payload, args.cpu)))
        return
    agent_cpu = 1 - args.cpu if (os.cpu_count() or 1) > 1 else args.cpu
    log = Path("/tmp/netwarden-agent-benchmark.log")
    rates: dict[str, list[float]] = {"without": [], "busy": [], "with": []}
    reports = []
    for i in range(args.repeat):
        rate = _run_load(args.seconds, args.payload, args.cpu)
        print(f"  run {i + 1} without agent {rate:>10,.0f} connections/s", flush=True)
        rates["without"].append(rate)
        burner = subprocess.Popen(["taskset", "-c", str(agent_cpu), sys.executable, "-c",
                                   "while True: pass"])
        try:
            rate = _run_load(args.seconds, args.payload, args.cpu)
        finally:
            burner.kill()
            burner.wait()
        print(f"  run {i + 1} other core busy {rate:>8,.0f} connections/s", flush=True)
        rates["busy"].append(rate)
        agent = _start_agent(agent_cpu, log, args.agent_args.split())
        try:
            rate = _run_load(args.seconds, args.payload, args.cpu)
        finally:
            agent.terminate()
            agent.wait(timeout=30)
        report = [line for line in log.read_text().splitlines() if "kernel events" in line]
        reports.append(report[-1] if report else "(no report)")
        print(f"  run {i + 1} with agent    {rate:>10,.0f} connections/s   {reports[-1]}",
              flush=True)
        rates["with"].append(rate)
    median = {k: statistics.median(v) for k, v in rates.items()}
    best = {k: max(v) for k, v in rates.items()}
    print()
    print(f"loopback TCP connections ({args.payload} bytes each way), load on cpu {args.cpu}, "
          f"agent on cpu {agent_cpu}, {args.repeat} alternating runs of {args.seconds:g} s")
    labels = {"without": "without agent", "busy": "other core busy", "with": "with agent"}
    for name, label in labels.items():
        print(f"{label + ':':17s} median {median[name]:>10,.0f}  best {best[name]:>10,.0f} "
              "connections/s")
    for base in ("without", "busy"):
        for name, table in (("median", median), ("best", best)):
            ratio = table["with"] / table[base]
            print(f"ratio with agent / {labels[base]} ({name}): {ratio:.3f} "
                  f"({(1 - ratio) * 100:+.1f} % slower)")


if __name__ == "__main__":
    main()

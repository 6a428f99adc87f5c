"""eBPF agent overhead: loopback TCP connections per second with and without the agent.

A load (pinned to ``--cpu``) opens, uses and closes loopback TCP connections as fast as it can
for ``--seconds``, both ends on this host, so every connection is seen twice by the probes:

* ``--load python`` (default): one process connects, sends ``--payload`` bytes, gets them
  echoed, closes, over and over: the kernel's connection work with as little else as possible.
* ``--load nginx``: nginx (one worker) answering ``wrk -H "Connection: close"`` (one thread, 16
  connections): a real server and load generator, one HTTP request per connection (Debian:
  ``apt-get install nginx-light wrk``).

It runs in rotated order in four arms: without the agent; a busy loop on the other core (on a
VM whose cores share physical ones, any busy neighbour slows the load); the probes only (the
kernel programs attached and their ring drained without decoding, by this script: what the
probes cost the load's core by themselves); and with ``netwarden agent --out /dev/null`` on the
other core (the real thing: probes, decoding, identities, Hubble JSON). Printed: connections
per second of every run (and, for the Python load, of its best 0.5 s stretch), the medians, and
the ratios to "without", also per round (each round runs every arm once, back to back) to
cancel slow drifts of the machine; and what the agent reported (kernel events, flows, events
lost because its user space fell behind). Target: with / without above 0.95 (under 5 % slower).

``--toggle`` measures the probes' kernel-side cost more finely: one continuous load, the probes
loaded once and attached and detached in alternating windows (``--repeat`` pairs of
``--window`` seconds; connections counted from /proc/net/snmp), so no restart and no drift
longer than a pair enters a ratio; printed with its standard error. ``--toggle agent`` does
the same with the whole agent (run in the benchmark's process, on the other core; idle while its
probes are detached): the fairest with/without ratio on a noisy machine.

Needs root, BTF and kernel headers, like the agent.

    python benchmarks/agent_overhead.py [--load python|nginx] [--seconds 4] [--repeat 9]
    python benchmarks/agent_overhead.py --toggle [probes|agent] [--load python|nginx] [--repeat 200]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
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


def _run_load(seconds: float, payload: int, cpu: int) -> tuple[float, float | None]:
    """(connections/s over the run, over its best WINDOW-second stretch)."""
    proc = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            "--seconds",
            str(seconds),
            "--payload",
            str(payload),
            "--cpu",
            str(cpu),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    return r["connections"] / r["seconds"], r["best_window"]


NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_timeout 0;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ return 200 "hello\\n"; }}
    }}
}}
"""


class Nginx:
    """nginx with one worker on loopback, pinned to ``cpu``; ``run`` drives wrk against it."""

    def __init__(self, cpu: int) -> None:
        missing = [tool for tool in ("nginx", "wrk") if shutil.which(tool) is None]
        if missing:
            raise SystemExit(
                f"--load nginx needs {' and '.join(missing)} "
                f"(Debian: apt-get install nginx-light wrk)"
            )
        self.cpu = cpu
        self.dir = Path(tempfile.mkdtemp(prefix="netwarden-bench-nginx-"))
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        (self.dir / "nginx.conf").write_text(NGINX_CONF.format(dir=self.dir, port=self.port))
        self.proc = subprocess.Popen(
            [
                "taskset",
                "-c",
                str(cpu),
                "nginx",
                "-c",
                str(self.dir / "nginx.conf"),
                "-p",
                str(self.dir),
            ],
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(
                        f"nginx did not start: {self.proc.stderr.read().decode()}"
                    ) from None
                time.sleep(0.1)

    def wrk(self, seconds: float) -> list[str]:
        """The load: wrk on ``cpu``, one thread, 16 connections, one request each."""
        return [
            "taskset",
            "-c",
            str(self.cpu),
            "wrk",
            "-t1",
            "-c16",
            f"-d{max(1, round(seconds))}s",
            "-H",
            "Connection: close",
            f"http://127.0.0.1:{self.port}/",
        ]

    def run(self, seconds: float) -> tuple[float, float | None]:
        out = subprocess.run(self.wrk(seconds), capture_output=True, text=True, check=True).stdout
        found = re.search(r"Requests/sec:\s+([\d.]+)", out)
        if not found or "Non-2xx" in out:
            raise SystemExit(f"wrk failed:\n{out}")
        return float(found.group(1)), None

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


def _drain_probes() -> None:
    """Child: the probes attached and their ring buffer emptied, records not even decoded."""
    sys.path.insert(0, str(ROOT))
    from netwarden.bpf.loader import KernelProbes

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    with KernelProbes() as probes:
        print("probes attached", file=sys.stderr, flush=True)
        records = 0
        while not stop:
            records += probes.discard(100)
    print(f"probes only: {records:,} records discarded", file=sys.stderr, flush=True)


def _active_opens() -> int:
    """TCP connections this host (network namespace) has opened: /proc/net/snmp ActiveOpens."""
    names, values = (
        line.split()
        for line in Path("/proc/net/snmp").read_text().splitlines()
        if line.startswith("Tcp:")
    )
    return int(values[names.index("ActiveOpens")])


def _toggled(args: argparse.Namespace, agent_cpu: int) -> None:
    """The probes loaded once, attached and detached in alternating windows under one
    continuous load: drift over minutes cancels in each pair, and no load restarts, so the
    cost comes with a standard error. ``--toggle probes``: their user space is a drain loop,
    in both windows. ``--toggle agent``: the whole agent runs in this process (probes,
    decoding, identities, Hubble JSON to /dev/null, as ``netwarden agent --out /dev/null``),
    idle while its probes are detached."""
    sys.path.insert(0, str(ROOT))
    from netwarden.bpf.agent import Agent, AgentOptions, JsonLinesSink, keep_gc_off_hot_path
    from netwarden.bpf.loader import KernelProbes

    _pin(agent_cpu)
    total = args.repeat * 2 * (args.window + 0.5) + 30  # ample: the load is killed at the end
    nginx = Nginx(args.cpu) if args.load == "nginx" else None
    if nginx is not None:
        load = subprocess.Popen(nginx.wrk(total + 1), stdout=subprocess.DEVNULL)
    else:
        load = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--child",
                "--seconds",
                str(total),
                "--payload",
                str(args.payload),
                "--cpu",
                str(args.cpu),
            ],
            stdout=subprocess.DEVNULL,
        )
    rates: dict[str, list[float]] = {"off": [], "on": []}
    stop = threading.Event()
    agent_thread, probes = None, None
    try:
        if args.toggle == "agent":
            agent = Agent.open(AgentOptions(), log=lambda line: print(line, file=sys.stderr))
            probes = agent.probes
            probes.pause()
            devnull = open(os.devnull, "wb")
            keep_gc_off_hot_path()
            agent_thread = threading.Thread(target=agent.run, args=(JsonLinesSink(devnull), stop))
            agent_thread.start()

            def wait(seconds: float) -> None:
                time.sleep(seconds)
        else:
            probes = KernelProbes()
            probes.pause()

            def wait(seconds: float) -> None:
                start = time.perf_counter()
                while time.perf_counter() - start < seconds:
                    probes.discard(10)

        time.sleep(2)  # the load's start-up
        for i in range(args.repeat):
            for state in ("on", "off") if i % 2 == 0 else ("off", "on"):
                if state == "on":
                    probes.resume()
                time.sleep(0.1)  # settle
                start, opened = time.perf_counter(), _active_opens()
                wait(args.window)
                rates[state].append((_active_opens() - opened) / (time.perf_counter() - start))
                probes.pause()
                if agent_thread is None:
                    probes.discard(0)
            if load.poll() is not None:
                raise SystemExit("the load ended early")
            if agent_thread is not None and not agent_thread.is_alive():
                raise SystemExit("the agent stopped (its error is above)")
            print(
                f"  pair {i + 1:3d}: without {rates['off'][-1]:>8,.0f}, {args.toggle} "
                f"{rates['on'][-1]:>8,.0f} connections/s "
                f"({rates['on'][-1] / rates['off'][-1]:.3f})",
                flush=True,
            )
    finally:
        load.kill()
        load.wait()
        if nginx is not None:
            nginx.close()
        if agent_thread is not None:
            stop.set()
            agent_thread.join()  # closes the probes
            devnull.close()
            print(
                f"agent: {agent.events:,} kernel events, {agent.flows:,} flows, "
                f"{agent.lost:,} events lost",
                flush=True,
            )
        elif probes is not None:
            probes.close()
    ratios = [on / off for on, off in zip(rates["on"], rates["off"])]
    mean, error = statistics.mean(ratios), statistics.stdev(ratios) / len(ratios) ** 0.5
    off, on = statistics.mean(rates["off"]), statistics.mean(rates["on"])
    what = "the agent's probes" if args.toggle == "agent" else "probes"
    print()
    print(
        f"{what} attached / detached, {args.repeat} pairs of {args.window:g} s windows under "
        f"one {args.load} load on cpu {args.cpu}: {off:,.0f} and {on:,.0f} connections/s"
    )
    print(
        f"  ratio {mean:.4f} ± {error:.4f} (standard error; {(1 - mean) * 100:+.1f} % "
        f"slower, {(1 / on - 1 / off) * 1e6:+.2f} us per connection)"
    )


def _start(cmd: list[str], cpu: int, log: Path) -> subprocess.Popen:
    """Start ``cmd`` on ``cpu``; ready when it says "probes attached" on stderr."""
    proc = subprocess.Popen(
        ["taskset", "-c", str(cpu), *cmd], stdout=subprocess.DEVNULL, stderr=open(log, "wb")
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{cmd[0]} exited: {log.read_text()[-2000:]}")
        if "probes attached" in log.read_text():
            return proc
        time.sleep(0.2)
    proc.terminate()
    raise SystemExit(f"{cmd[0]} did not start in 60 s: {log.read_text()[-2000:]}")


def _start_agent(cpu: int, log: Path, extra: list[str]) -> subprocess.Popen:
    netwarden = Path(sys.executable).with_name("netwarden")
    cmd = [
        str(netwarden) if netwarden.exists() else sys.executable,
        *([] if netwarden.exists() else ["-m", "netwarden"]),
        "agent",
        "--out",
        "/dev/null",
        *extra,
    ]
    return _start(cmd, cpu, log)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--load",
        choices=("python", "nginx"),
        default="python",
        help="the loopback load (see the module docstring)",
    )
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each run")
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="rounds, each running every arm once (the load's rate varies by "
        "tens of percent on a shared machine: medians of several runs; "
        "default 9), or with --toggle pairs of windows (default 200)",
    )
    parser.add_argument("--cpu", type=int, default=0, help="core of the load")
    parser.add_argument(
        "--payload", type=int, default=1024, help="bytes each way per connection (--load python)"
    )
    parser.add_argument(
        "--agent-args",
        default="",
        metavar="ARGS",
        help="more options for `netwarden agent`, e.g. --no-udp-peers",
    )
    parser.add_argument(
        "--arms",
        default="without,busy,probes,with",
        metavar="LIST",
        help='arms to run, comma-separated, "without" among them (default: '
        "all four): e.g. without,probes to compare kernel-side changes",
    )
    parser.add_argument(
        "--toggle",
        nargs="?",
        const="probes",
        choices=("probes", "agent"),
        help="instead of the arms: the probes attached and detached in "
        "alternating windows under one continuous load, --repeat pairs, "
        'ratio with a standard error; "probes" (default): drained '
        'without decoding (their kernel-side cost); "agent": the whole '
        "agent, in this process",
    )
    parser.add_argument(
        "--window",
        type=float,
        default=0.25,
        help="seconds of each window with --toggle (short windows, many "
        "pairs: a neighbour's burst spoils few of them)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--drain-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_load(args.seconds, args.payload, args.cpu)))
        return
    if args.drain_child:
        _drain_probes()
        return
    agent_cpu = 1 - args.cpu if (os.cpu_count() or 1) > 1 else args.cpu
    if args.repeat is None:
        args.repeat = 200 if args.toggle else 9
    if args.repeat < 2:
        parser.error("--repeat: at least 2")
    if args.toggle:
        _toggled(args, agent_cpu)
        return
    log = Path(tempfile.gettempdir()) / "netwarden-agent-benchmark.log"
    labels = {
        "without": "without agent",
        "busy": "other core busy",
        "probes": "probes only",
        "with": "with agent",
    }
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if "without" not in arms or not set(arms) <= set(labels):
        parser.error(f'--arms: a comma-separated list of {", ".join(labels)}, with "without"')
    labels = {name: label for name, label in labels.items() if name in arms}
    rates: dict[str, list[float]] = {name: [] for name in labels}
    steady: dict[str, list[float]] = {name: [] for name in labels}
    nginx = Nginx(args.cpu) if args.load == "nginx" else None

    def load() -> tuple[float, float | None]:
        if nginx is not None:
            return nginx.run(args.seconds)
        return _run_load(args.seconds, args.payload, args.cpu)

    def run_arm(name: str, i: int) -> None:
        helper = None
        if name == "busy":
            helper = subprocess.Popen(
                ["taskset", "-c", str(agent_cpu), sys.executable, "-c", "while True: pass"]
            )
        elif name == "probes":
            helper = _start([sys.executable, __file__, "--drain-child"], agent_cpu, log)
        elif name == "with":
            helper = _start_agent(agent_cpu, log, args.agent_args.split())
        try:
            rate, best_window = load()
        finally:
            if helper is not None:
                helper.terminate()
                helper.wait(timeout=30)
        note = ""
        if name == "with":
            report = [line for line in log.read_text().splitlines() if "kernel events" in line]
            note = f"   {report[-1] if report else '(no report)'}"
        rates[name].append(rate)
        if best_window is not None:
            steady[name].append(best_window)
            note = f" (best {WINDOW:g} s: {best_window:>8,.0f}){note}"
        print(f"  run {i + 1} {labels[name]:16s} {rate:>8,.0f} connections/s{note}", flush=True)

    order = list(labels)
    try:
        for i in range(args.repeat):
            for name in order[i % len(order) :] + order[: i % len(order)]:  # rotated
                run_arm(name, i)
    finally:
        if nginx is not None:
            nginx.close()
    what = (
        "nginx + wrk, one request per connection"
        if nginx is not None
        else f"Python connect/echo/close, {args.payload} bytes each way"
    )
    print()
    print(
        f"loopback TCP connections ({what}), load on cpu {args.cpu}, agent on cpu "
        f"{agent_cpu}, {args.repeat} rotated rounds of {args.seconds:g} s runs"
    )
    tables = [("whole runs", rates)]
    if steady["without"]:
        tables.append((f"best {WINDOW:g} s of each run", steady))
    for title, table in tables:
        median = {k: statistics.median(v) for k, v in table.items()}
        print(
            f"{title}, median connections/s: "
            + ", ".join(f"{labels[k]} {median[k]:,.0f}" for k in labels)
        )
        for name in [n for n in labels if n != "without"]:
            ratio = median[name] / median["without"]
            paired = statistics.median(a / b for a, b in zip(table[name], table["without"]))
            cost = (1 / median[name] - 1 / median["without"]) * 1e6
            print(
                f"  {labels[name]} / without: {ratio:.3f} ({(1 - ratio) * 100:+.1f} % slower, "
                f"{cost:+.2f} us per connection); median of the rounds' ratios {paired:.3f}"
            )


if __name__ == "__main__":
    main()

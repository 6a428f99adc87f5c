"""Scale benchmark: N simulated nodes publish partial windows to a real nats-server, merged by
1 and 2 detector shards (``netwarden shard`` processes).

Fifteen minutes of the demo cluster (four nodes) are built into per-node partial windows once.
Simulated node ``i`` publishes the partials of real node ``i % 4`` with its identities renamed
into namespace ``t<i // 8>``: each identity is reported by about eight nodes, as a workload
spread over several nodes is, and identities grow with N. The partials of ``--windows``
windows are published first (one process, pipelined, each acknowledged: its rate is printed
too); then the shards start and consume them: fetch, decode, merge, close, hand off to an
SQLite file, acknowledge. Their time is from their consumers' creation to the last window
handed off (the final idle close subtracted).

Printed per (N, shards): partials and merged windows, that time, windows/s and partials/s, the flows those windows represent per second, and
each shard's peak memory (VmHWM).

    python benchmarks/scale.py [--nodes 10 100 1000] [--shards 1 2] [--windows 5]

Needs nats-server (Debian: apt-get install nats-server; /usr/sbin).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
from nats.js.errors import NotFoundError

from netwarden.cluster.partials import (
    STREAM,
    Partial,
    encode_partial,
    partitions_of_replica,
    server_mappings,
)
from netwarden.cluster.shard import consumer_name, ensure_stream
from netwarden.generator import generate
from netwarden.ingest.identity import Subject
from netwarden.ingest.reader import read_flows
from netwarden.ingest.windows import ClosedWindow, WindowBuilder, WindowConfig

PARTITIONS = 16
IDLE_CLOSE = 1.0
WINDOWS = WindowConfig(window_seconds=60.0, allowed_lateness=15.0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _base_partials(windows: int) -> tuple[dict[int, list[list[ClosedWindow]]], dict]:
    """Real node index -> per window index -> its closed windows (the first ``windows``), and
    the flows each node read in each of those windows."""
    with tempfile.TemporaryDirectory() as tmp:
        res = generate(
            Path(tmp), hours=0.25, seed=11, start=datetime(2026, 3, 2, 12, tzinfo=UTC), rate=0.3
        )
        flows = list(read_flows([res.flows_path]))
    nodes: dict[str, list[Any]] = defaultdict(list)
    for f in flows:
        nodes[f.node_name].append(f)
    out: dict[int, list[list[ClosedWindow]]] = {}
    counts: dict[int, list[int]] = {}
    for i, name in enumerate(sorted(nodes)):
        builder = WindowBuilder(WINDOWS)
        closed = builder.add(nodes[name]) + builder.flush()
        starts = sorted({w.start for w in closed})[:windows]
        out[i] = [[w for w in closed if w.start == s] for s in starts]
        counts[i] = [
            sum(1 for f in nodes[name] if s <= f.time.timestamp() < s + 60) for s in starts
        ]
    return out, counts


def _renamed(w: ClosedWindow, namespace: str) -> ClosedWindow:
    subject = Subject(f"{namespace}/{w.subject.workload}", namespace, w.subject.workload)
    return replace(w, subject=subject, _edges={}, _features=None)


def _bodies(
    base: dict[int, list[list[ClosedWindow]]], counts: dict, n: int
) -> tuple[list[tuple], int, int]:
    """(subject, body, msg id) of every simulated node's partials, window by window; merged
    window count; flows represented."""
    from netwarden.cluster.partials import input_subject

    msgs = []
    keys = set()
    flows = 0
    per_window = len(next(iter(base.values())))
    for widx in range(per_window):
        for i in range(n):
            ns = f"t{i // 8}"
            flows += counts[i % len(base)][widx]
            for seq, w in enumerate(base[i % len(base)][widx]):
                r = _renamed(w, ns)
                p = Partial(f"sim-{i}", 1, widx * 10_000 + seq, r)
                msgs.append((input_subject(ns, w.subject.workload), encode_partial(p), p.msg_id))
                keys.add(p.key)
    return msgs, len(keys), flows


async def _publish(url: str, msgs: list[tuple]) -> float:
    """Publish (pipelined, each acknowledged); the seconds it took."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    started = time.perf_counter()
    for i in range(0, len(msgs), 512):
        await asyncio.gather(
            *(
                js.publish(s, b, headers={"Nats-Msg-Id": m}, timeout=30)
                for s, b, m in msgs[i : i + 512]
            )
        )
    took = time.perf_counter() - started
    await nc.close()
    return took


async def _wait_for_consumers(url: str) -> None:
    """Until every partition has its shard's durable consumer (the shards have started)."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    for p in range(PARTITIONS):
        while True:
            try:
                await js.consumer_info(STREAM, consumer_name(p))
                break
            except NotFoundError:
                await asyncio.sleep(0.05)
    await nc.close()


async def _quiet(exc: Exception) -> None:
    pass


async def _create_stream(url: str) -> None:
    """Once the server listens (it was just started): create the stream."""
    nc = await nats.connect(url, max_reconnect_attempts=-1, error_cb=_quiet)
    await ensure_stream(nc.jetstream())
    await nc.close()


def _vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _run(binary: str, n: int, shards: int, base: tuple, work: Path) -> dict[str, Any]:
    port, monitor = _free_port(), _free_port()
    conf = work / "nats.conf"
    conf.write_text(
        f"listen: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor}\n"
        f'jetstream {{ store_dir: "{work / "js"}" }}\n' + server_mappings(PARTITIONS)
    )
    server = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.DEVNULL)
    url = f"nats://127.0.0.1:{port}"
    procs: list[subprocess.Popen] = []
    try:
        asyncio.run(_create_stream(url))
        msgs, windows, flows = _bodies(*base, n)
        publish_s = asyncio.run(_publish(url, msgs))  # before the shards start
        db = work / "windows.db"
        for k in range(shards):
            owns = ",".join(map(str, partitions_of_replica(k, shards, PARTITIONS)))
            argv = [sys.executable, "-m", "netwarden", "shard", "--nats", url, "--owns", owns]
            argv += ["--partitions", str(PARTITIONS), "--windows-db", str(db)]
            argv += ["--idle-close", str(IDLE_CLOSE), "--startup-grace", "0", "--name", f"s{k}"]
            procs.append(subprocess.Popen(argv, stderr=subprocess.DEVNULL))
        asyncio.run(_wait_for_consumers(url))
        started = time.perf_counter()  # the shards consume from here on
        done = 0
        while done < windows:
            time.sleep(0.1)
            try:
                with sqlite3.connect(db, timeout=30) as c:
                    done = c.execute("SELECT count(*) FROM windows").fetchone()[0]
            except sqlite3.OperationalError:  # not created yet
                pass
            if time.perf_counter() - started > 600:
                raise RuntimeError(f"only {done} of {windows} windows after 10 minutes")
        # the last windows close after IDLE_CLOSE without partials: not part of the work
        took = time.perf_counter() - started - IDLE_CLOSE
        memory = [_vm_hwm(p.pid) for p in procs]
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=30)
        server.terminate()
        server.wait(timeout=30)
    return {
        "nodes": n,
        "shards": shards,
        "partials": len(msgs),
        "windows": windows,
        "publish_s": publish_s,
        "merge_s": took,
        "flows": flows,
        "memory": memory,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--windows", type=int, default=5)
    args = parser.parse_args()
    binary = shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin")
    if binary is None:
        sys.exit("nats-server not found: apt-get install nats-server")
    base = _base_partials(args.windows)
    print(
        f"{'nodes':>6} {'shards':>6} {'partials':>9} {'windows':>8} {'merge s':>8} "
        f"{'publish s':>9} {'windows/s':>10} {'partials/s':>11} {'flows/s repr.':>14} {'shard MiB':>10}"
    )
    for n in args.nodes:
        for shards in args.shards:
            with tempfile.TemporaryDirectory() as tmp:
                r = _run(binary, n, shards, base, Path(tmp))
            s = max(r["merge_s"], 1e-3)
            mem = "/".join(f"{m / 2**20:.0f}" for m in r["memory"])
            print(
                f"{n:>6} {shards:>6} {r['partials']:>9,} {r['windows']:>8,} {s:>8.2f} "
                f"{r['publish_s']:>9.2f} {r['windows'] / s:>10,.0f} {r['partials'] / s:>11,.0f} "
                f"{r['flows'] / s:>14,.0f} {mem:>10}",
                flush=True,
            )


if __name__ == "__main__":
    main()

"""Ingest benchmark: what a user runs, from bytes to closed windows, vs parsing alone.

For each input (a generated day of each generator cluster, ``demo`` and ``fintech``, and any
``--file``), pinned to one core, in the same run and alternating ``--repeat`` times:

(a) baseline: a process that reads the file in 1 MiB blocks, splits lines and ``orjson.loads``
    each into dicts (timed as a whole process, interpreter start included, like (c));
(b) the in-process path: the reader (msgspec, lean struct) and the window builder, bytes to
    closed windows, timed inside its process (no start-up, no output);
(c) the user's command as a whole process: ``netwarden windows --flows F --out W.jsonl``
    (start-up, imports, progress, writing the windows included);
(s) its fixed cost: the same command on the file's first line only (interpreter start-up,
    imports, parser, output file), to read (c) against (b).

The best time of each is reported in flows per second with the ratios (c)/(a) and (b)/(a)
(>= 1.0: at least as fast as parsing alone). Timings on a shared machine are noisy: compare
the ratios of one run, not figures across runs.

Memory: one more run of (b) measures the open windows' state every 4,096 flows
(:func:`netwarden.ingest.footprint.deep_size`: ``sys.getsizeof`` of every object the windows
own, each once) and prints bytes per active identity-window: the mean over the samples, and at
the largest sample.

    python benchmarks/ingest.py [--clusters demo,fintech] [--hours 24] [--rate 1] [--repeat 3]
                                [--cpu 0] [--file FLOWS ...]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parent / ".data"
PHASES = ("parse", "inproc", "command", "startup")


def _pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


def _phase_parse(path: Path) -> dict:
    import orjson

    loads = orjson.loads
    n = 0
    start = time.perf_counter()
    with open(path, "rb") as f:
        carry = b""
        while True:
            block = f.read(1 << 20)
            if not block:
                break
            data = carry + block
            cut = data.rfind(b"\n")
            lines = data[:cut].split(b"\n")
            carry = data[cut + 1 :]
            for line in lines:
                if line:
                    loads(line)
                    n += 1
        if carry.strip():
            loads(carry)
            n += 1
    return {"flows": n, "inner_seconds": time.perf_counter() - start}


def _phase_inproc(path: Path, memory: bool) -> dict:
    from netwarden.ingest.pipeline import build_windows

    closed = [0]

    def sink(ws: list) -> None:
        closed[0] += len(ws)

    start = time.perf_counter()
    result = build_windows([path], sink, sample_memory=memory)
    elapsed = time.perf_counter() - start
    return {
        "flows": result.read.flows,
        "inner_seconds": elapsed,
        "windows": closed[0],
        "errors": result.read.error_lines,
        "late": result.build.late_flows,
        "max_open_windows": result.build.max_open_windows,
        "max_open_bytes": result.max_open_bytes,
        "max_open_bytes_windows": result.max_open_bytes_windows,
        "bytes_per_window": result.bytes_per_window,
        "identities": result.identities,
    }


def _child(phase: str, path: Path) -> dict:
    if phase == "parse":
        return _phase_parse(path)
    return _phase_inproc(path, memory=phase == "memory")


def _netwarden() -> list[str]:
    """The installed ``netwarden`` script beside this interpreter (what a user runs)."""
    script = Path(sys.executable).with_name("netwarden")
    return [str(script)] if script.exists() else [sys.executable, "-m", "netwarden"]


def _run(phase: str, path: Path, cpu: int, out: Path) -> dict:
    """One measurement in its own process pinned to ``cpu``; ``seconds`` is the whole process
    (``startup``: the command on the one-line file beside ``out``)."""
    if phase in ("command", "startup"):
        flows = out.with_name("first-line.jsonl") if phase == "startup" else path
        argv = [*_netwarden(), "windows", "--flows", str(flows), "--out", str(out)]
    else:
        argv = [sys.executable, __file__, "--child", phase, "--file", str(path)]
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(
        argv, capture_output=True, text=True, check=False, preexec_fn=lambda: _pin(cpu)
    )
    seconds = time.perf_counter() - start
    now = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_seconds = now.ru_utime + now.ru_stime - used.ru_utime - used.ru_stime
    if proc.returncode != 0:
        raise SystemExit(f"benchmark {phase} failed ({' '.join(argv)}):\n{proc.stderr}")
    if phase in ("command", "startup"):
        return {"seconds": seconds, "cpu_seconds": cpu_seconds}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["seconds"] = seconds
    result["cpu_seconds"] = cpu_seconds
    return result


def _ensure_data(cluster: str, hours: float, rate: float, seed: int) -> Path:
    """A generated day (or ``hours``) of ``cluster``'s traffic with every attack, made once."""
    out = DATA / f"ingest-{cluster}-h{hours:g}-r{rate:g}-s{seed}"
    flows = out / "flows.jsonl"
    if flows.exists() and (out / "done").exists():
        return flows
    print(
        f"generating {hours:g} h of {cluster} traffic at rate {rate:g} into {out} ...", flush=True
    )
    proc = subprocess.run(
        [*_netwarden(), "generate", "--cluster", cluster, "--hours", f"{hours:g}", "--rate",
         f"{rate:g}", "--seed", str(seed), "--attacks", "all", "--out", str(out)],
        check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"netwarden generate --cluster {cluster} failed")
    (out / "done").write_text("ok")
    return flows


def _measure(name: str, path: Path, repeat: int, cpu: int, scratch: Path) -> dict:
    size = path.stat().st_size
    out = scratch / "windows.jsonl"
    with open(path, "rb") as f:
        out.with_name("first-line.jsonl").write_bytes(f.readline())
    best: dict[str, dict] = {}
    least_cpu: dict[str, float] = {}  # a shared machine's wall times are noisy; CPU time less
    flows = 0
    for i in range(repeat):
        for phase in PHASES:
            r = _run(phase, path, cpu, out)
            flows = r.get("flows", flows)
            rate = flows / r["seconds"] if flows and phase != "startup" else 0.0
            shown = f"{rate:>10,.0f} flows/s" if rate else "(one flow)"
            print(
                f"  {name} run {i + 1} {phase:8s} {r['seconds']:8.2f} s {shown}"
                f"   (CPU {r['cpu_seconds']:.2f} s)"
            )
            if phase not in best or r["seconds"] < best[phase]["seconds"]:
                best[phase] = r
            least_cpu[phase] = min(least_cpu.get(phase, math.inf), r["cpu_seconds"])
    memory = _run("memory", path, cpu, out)
    a, b, c, s = best["parse"], best["inproc"], best["command"], best["startup"]
    rate = {p: flows / best[p]["seconds"] for p in ("parse", "inproc", "command")}
    rate["inproc"] = flows / b["inner_seconds"]
    print()
    print(
        f"{name}: {path} ({size / 1e6:,.0f} MB, {flows:,} flows, {size / max(flows, 1):,.0f} "
        f"bytes/flow), one core (cpu {cpu}), best of {repeat}"
    )
    print(
        f"  (a) parse only, orjson.loads -> dicts, whole process: {rate['parse']:>10,.0f} flows/s"
        f"   ({a['seconds']:.2f} s, of which parsing {a['inner_seconds']:.2f} s)"
    )
    print(
        f"  (b) bytes -> closed windows, in process             : {rate['inproc']:>10,.0f} flows/s"
        f"   ({b['inner_seconds']:.2f} s)   (b)/(a) {rate['inproc'] / rate['parse']:.2f}"
    )
    print(
        f"  (c) netwarden windows --flows F --out W.jsonl       : {rate['command']:>10,.0f} flows/s"
        f"   ({c['seconds']:.2f} s)   (c)/(a) {rate['command'] / rate['parse']:.2f}"
    )
    print(
        f"  (s) its fixed cost: the same command on one flow      : {s['seconds']:.2f} s"
        f"   (parse only's process outside parsing: {a['seconds'] - a['inner_seconds']:.2f} s)"
    )
    print(
        f"  CPU seconds of the whole processes (least of {repeat}): (a) {least_cpu['parse']:.2f},"
        f" (c) {least_cpu['command']:.2f}, (s) {least_cpu['startup']:.2f};"
        f" (c)/(a) by CPU time {least_cpu['parse'] / least_cpu['command']:.2f}"
    )
    print(
        f"  windows closed: {b['windows']:,} for {b['identities']:,} identities; late flows "
        f"{b['late']:,}; bad lines {b['errors']:,}; at most {b['max_open_windows']:,} open"
    )
    per_peak = memory["max_open_bytes"] / max(memory["max_open_bytes_windows"], 1)
    print(
        f"  state per active identity-window (measured): {memory['bytes_per_window']:,.0f} bytes "
        f"mean over samples; {per_peak:,.0f} bytes at the largest sample "
        f"({memory['max_open_bytes'] / 1024:,.0f} KiB for {memory['max_open_bytes_windows']:,} "
        "windows)"
    )
    print()
    return {
        "name": name,
        "flows": flows,
        "rate": rate,
        "memory": memory,
        "startup": s["seconds"],
        "cpu_ratio": least_cpu["parse"] / least_cpu["command"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--clusters",
        default="demo,fintech",
        help="generator clusters to measure, comma-separated ('' for none: only --file)",
    )
    parser.add_argument("--hours", type=float, default=24.0, help="hours of generated traffic")
    parser.add_argument(
        "--rate", type=float, default=1.0, help="traffic multiplier of the generated clusters"
    )
    parser.add_argument("--seed", type=int, default=11, help="generator seed")
    parser.add_argument(
        "--repeat", type=int, default=3, help="alternating runs of each phase; the best counts"
    )
    parser.add_argument("--cpu", type=int, default=0, help="core to pin the measurements to")
    parser.add_argument(
        "--file", type=Path, action="append", default=[], help="also measure this flow file"
    )
    parser.add_argument("--child", choices=["parse", "inproc", "memory"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.file[0])))
        return
    inputs = [
        (c, _ensure_data(c, args.hours, args.rate, args.seed))
        for c in args.clusters.split(",")
        if c.strip()
    ]
    inputs += [(f"{f.parent.name}/{f.name}", f) for f in args.file]
    if not inputs:
        raise SystemExit("nothing to measure: give --clusters or --file")
    scratch = Path(tempfile.mkdtemp(prefix="netwarden-bench-"))
    try:
        results = [_measure(n, p, args.repeat, args.cpu, scratch) for n, p in inputs]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"summary (best of {args.repeat}, one core; ratios are of the same run):")
    print(f"  {'input':<24} {'flows':>10} {'parse':>9} {'(b) inproc':>11} {'(c) command':>12}"
          f" {'(b)/(a)':>8} {'(c)/(a)':>8} {'B/window':>9} {'(s) s':>6} {'CPU (c)/(a)':>12}")  # fmt: skip
    for r in results:
        rate = r["rate"]
        print(
            f"  {r['name']:<24} {r['flows']:>10,} {rate['parse']:>9,.0f} {rate['inproc']:>11,.0f}"
            f" {rate['command']:>12,.0f} {rate['inproc'] / rate['parse']:>8.2f}"
            f" {rate['command'] / rate['parse']:>8.2f} {r['memory']['bytes_per_window']:>9,.0f}"
            f" {r['startup']:>6.2f} {r['cpu_ratio']:>12.2f}"
        )


if __name__ == "__main__":
    main()

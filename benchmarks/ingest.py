"""Ingest benchmark: the whole path from bytes to closed windows vs parsing alone.

On a generated file of at least one million Hubble JSON flows, pinned to one core, measure in
the same run:

(a) baseline: read the file in 1 MiB blocks, split lines, ``orjson.loads`` each into dicts;
(b) netwarden: the reader (msgspec, lean struct) and the window builder, from bytes to closed
    feature windows.

Each measurement runs in its own child process (so peak RSS is its own), alternating a and b
``--repeat`` times; the best time of each is reported with the ratio b/a in flows per second
(>= 1.0 means the whole path is at least as fast as parsing alone).

    python benchmarks/ingest.py [--hours 24] [--rate 3] [--repeat 5] [--cpu 0] [--file FLOWS]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parent / ".data"


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
    elapsed = time.perf_counter() - start
    return {"flows": n, "seconds": elapsed}


def _phase_windows(path: Path) -> dict:
    from netwarden.ingest.pipeline import build_windows

    closed = [0]

    def sink(ws: list) -> None:
        closed[0] += len(ws)

    start = time.perf_counter()
    result = build_windows([path], sink)
    elapsed = time.perf_counter() - start
    return {
        "flows": result.read.flows,
        "seconds": elapsed,
        "windows": closed[0],
        "errors": result.read.error_lines,
        "late": result.build.late_flows,
        "max_open_windows": result.build.max_open_windows,
        "max_open_bytes": result.max_open_bytes,
        "identities": result.identities,
    }


def _child(phase: str, path: Path, cpu: int) -> dict:
    _pin(cpu)
    out = _phase_parse(path) if phase == "parse" else _phase_windows(path)
    out["peak_rss"] = _peak_rss()
    return out


def _peak_rss() -> int:
    """This process's peak resident memory. VmHWM, not ru_maxrss: Linux carries ru_maxrss over
    exec, so a child of a large parent would report the parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _run_child(phase: str, path: Path, cpu: int) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", phase, "--file", str(path), "--cpu", str(cpu)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child {phase} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _ensure_data(hours: float, rate: float, seed: int) -> Path:
    from netwarden.generator import SCENARIOS, generate

    out = DATA / f"h{hours:g}-r{rate:g}-s{seed}"
    flows = out / "flows.jsonl"
    if flows.exists() and (out / "done").exists():
        return flows
    print(f"generating {hours:g} h of traffic at rate {rate:g} into {out} ...", flush=True)
    last = [0.0]

    def progress(done: float) -> None:
        if done - last[0] >= 0.1 or done >= 1.0:
            print(f"  {done:5.0%}", flush=True)
            last[0] = done

    result = generate(
        out, hours=hours, seed=seed, attacks=list(SCENARIOS), rate=rate, progress=progress
    )
    (out / "done").write_text(str(result.flows))
    return result.flows_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument(
        "--rate",
        type=float,
        default=3.0,
        help="traffic multiplier; 3 gives over a million flows per day",
    )
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--repeat", type=int, default=5, help="alternating runs of each; the best counts"
    )
    parser.add_argument("--cpu", type=int, default=0, help="core to pin the measurements to")
    parser.add_argument("--file", type=Path, help="use this flow file instead of generating")
    parser.add_argument("--child", choices=["parse", "windows"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.file, args.cpu)))
        return

    path = args.file or _ensure_data(args.hours, args.rate, args.seed)
    size = path.stat().st_size
    best: dict[str, dict] = {}
    for i in range(args.repeat):
        for phase in ("parse", "windows"):
            r = _run_child(phase, path, args.cpu)
            print(
                f"  run {i + 1} {phase:8s} {r['flows'] / r['seconds']:>10,.0f} flows/s", flush=True
            )
            if phase not in best or r["seconds"] < best[phase]["seconds"]:
                best[phase] = r
    a, b = best["parse"], best["windows"]
    rate_a, rate_b = a["flows"] / a["seconds"], b["flows"] / b["seconds"]
    per_window = b["max_open_bytes"] / max(b["max_open_windows"], 1)
    print()
    print(
        f"input: {path} ({size / 1e6:,.0f} MB, {b['flows']:,} flows, "
        f"{size / max(b['flows'], 1):,.0f} bytes/flow), one core (cpu {args.cpu}), "
        f"best of {args.repeat}"
    )
    print(
        f"(a) parse only, orjson.loads -> dicts : {rate_a:>10,.0f} flows/s   "
        f"peak RSS {a['peak_rss'] / 2**20:,.0f} MiB"
    )
    print(
        f"(b) bytes -> closed windows (netwarden): {rate_b:>10,.0f} flows/s   "
        f"peak RSS {b['peak_rss'] / 2**20:,.0f} MiB"
    )
    print(f"ratio (b)/(a): {rate_b / rate_a:.2f}")
    print(
        f"windows closed: {b['windows']:,} for {b['identities']:,} identities; "
        f"late flows {b['late']:,}; bad lines {b['errors']:,}"
    )
    print(
        f"open identity-windows at peak: {b['max_open_windows']:,}, "
        f"state {b['max_open_bytes'] / 1024:,.0f} KiB, "
        f"{per_window:,.0f} bytes per active identity-window"
    )


if __name__ == "__main__":
    main()

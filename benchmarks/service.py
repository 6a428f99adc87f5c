"""Service benchmark: does ingest keep up while the API is busy, and does the API stay quick?

Runs `netwarden serve` on the same recorded flows (a followed file, read as fast as the service
can; a model trained on the same cluster's history), once alone and once while concurrent
clients list anomalies through the API as fast as they can, with the pipeline in a process of
its own (``api.pipeline_process``, the default) and, for comparison, in the API's process.
Prints the ingest rate (flows per second delivered to the pipeline, which the bounded queue
holds to the rate it scores and stores windows) of each run, its ratio to `netwarden score`
on the same file and model (windows + scoring, the whole command, timed in the same run: the
baseline), and the p50/p99 latency of the anomaly listing under load. Everything runs here,
now, on this machine.

    python benchmarks/service.py [--hours 6] [--clients 8] [--repeat 3] [--modes split,single]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from netwarden.api.auth import new_token
from netwarden.commands.traffic import generate as generate_with_progress
from netwarden.generator import SCENARIOS, generate
from netwarden.ingest.pipeline import build_windows
from netwarden.ingest.windows import ClosedWindow, WindowBuilder, windows_to_rows
from netwarden.models.artifact import save_bundle
from netwarden.models.edges import EdgeMemory
from netwarden.models.signing import ensure_key
from netwarden.models.training import TrainConfig, train

DATA = Path(__file__).resolve().parent / ".data" / "service"
KEY = DATA / "model-signing.key"
START = datetime(2026, 1, 5, 6, tzinfo=UTC)


def _prepare(hours: float) -> tuple[Path, Path, int]:
    """A trained model folder and a flow file with attacks, cached between runs."""
    from rich.console import Console

    console = Console(stderr=True)
    # the service refuses models not signed with its key; v4: the edge memory's model format
    models = DATA / "models-signed-v4"
    if not (models / "CURRENT").exists():
        history = generate_with_progress(
            DATA / "history",
            hours=6,
            seed=5,
            attacks=[],
            rate=1.0,
            start=START.isoformat(),
            gzip=False,
            console=console,
        )
        builder = WindowBuilder()
        windows: list[ClosedWindow] = []
        build_windows([history.flows_path], windows.extend, builder=builder)
        bundle = train(windows_to_rows(windows), config=TrainConfig(seed=5))
        bundle.edges = EdgeMemory.from_windows(windows)
        save_bundle(bundle, models, key=ensure_key(KEY))
    test = DATA / f"test-{hours:g}h" / "flows.jsonl"
    if not test.exists():
        generate(
            test.parent,
            hours=hours,
            seed=6,
            start=START + timedelta(hours=6),
            attacks=list(SCENARIOS),
        )
    with test.open("rb") as f:
        flows = sum(1 for _ in f)
    return models, test, flows


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _score_rate(models: Path, flows_file: Path, flows: int, work: Path) -> float:
    """`netwarden score` (windows + scoring) on the same file and model: flows per second of
    the whole command, start-up included."""
    started = time.perf_counter()
    subprocess.run(
        [
            *(sys.executable, "-m", "netwarden", "score", "--model-dir", str(models)),
            *("--flows", str(flows_file), "--out", str(work / "scored.jsonl")),
            *("--signing-key", str(KEY)),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return flows / (time.perf_counter() - started)


def _run(
    models: Path,
    flows_file: Path,
    flows: int,
    clients: int,
    token: str,
    entry: str,
    work: Path,
    *,
    split: bool,
) -> tuple[float, list[float]]:
    """One service run; returns (flows per second, listing latencies in seconds)."""
    port = _free_port()
    data = work / f"run-{clients}-{'split' if split else 'single'}"
    env = {
        **os.environ,
        "NETWARDEN_DATA_DIR": str(data),
        "NETWARDEN_API__PORT": str(port),
        "NETWARDEN_SOURCE__SPEC": str(flows_file),
        "NETWARDEN_MODELS__DIR": str(models),
        "NETWARDEN_MODELS__BOOTSTRAP": "false",
        "NETWARDEN_MODELS__SIGNING_KEY_FILE": str(KEY),
        "NETWARDEN_API_TOKENS": entry,
        "NETWARDEN_API__PIPELINE_PROCESS": "true" if split else "false",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "netwarden", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    latencies: list[float] = []
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(timeout=30.0, headers={"Authorization": f"Bearer {token}"}) as http:
            while not stop.is_set():
                t = time.perf_counter()
                response = http.get(base + "/api/v1/anomalies", params={"limit": 50})
                latencies.append(time.perf_counter() - t)
                response.raise_for_status()

    try:
        with httpx.Client(timeout=5.0) as http:
            status = None
            while status is None:
                if proc.poll() is not None:
                    raise SystemExit(f"netwarden serve exited with {proc.returncode}")
                try:
                    status = http.get(base + "/healthz").json()
                except httpx.HTTPError:
                    time.sleep(0.05)
            threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
            for thread in threads:
                thread.start()
            started = time.perf_counter()
            first = last = 0
            t_first = started
            while last < flows:
                time.sleep(0.2)
                last = int(http.get(base + "/readyz").json().get("flows", 0))
                if not first and last:
                    first, t_first = last, time.perf_counter()
            elapsed = time.perf_counter() - t_first
            stop.set()
            for thread in threads:
                thread.join()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return (last - first) / elapsed, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=6.0, help="hours of test traffic")
    parser.add_argument("--clients", type=int, default=8, help="concurrent API clients")
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="rounds of runs; the medians are printed (the machine's other work varies)",
    )
    parser.add_argument(
        "--modes",
        default="split,single",
        help="split (the pipeline in its own process), single (one process), or both",
    )
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in ("split", "single") for m in modes):
        parser.error("--modes: split, single, or split,single")
    models, flows_file, flows = _prepare(args.hours)
    token, entry = new_token("bench", "viewer")
    import tempfile

    scores: list[float] = []
    runs: dict[str, dict[str, list[float]]] = {
        m: {"alone": [], "loaded": [], "p50": [], "p99": [], "requests": []} for m in modes
    }
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="netwarden-bench-") as tmp:
            work = Path(tmp)
            scores.append(_score_rate(models, flows_file, flows, work))
            line = [f"round {i + 1}: score {scores[-1]:,.0f} flows/s"]
            for mode in modes:
                split = mode == "split"
                alone, _ = _run(models, flows_file, flows, 0, token, entry.line, work, split=split)
                loaded, latencies = _run(
                    models, flows_file, flows, args.clients, token, entry.line, work, split=split
                )
                q = statistics.quantiles(latencies, n=100)
                r = runs[mode]
                r["alone"].append(alone)
                r["loaded"].append(loaded)
                r["p50"].append(q[49])
                r["p99"].append(q[98])
                r["requests"].append(len(latencies))
                line.append(
                    f"{mode}: alone {alone:,.0f}, with load {loaded:,.0f} flows/s, "
                    f"listing p50 {q[49] * 1000:.0f} ms p99 {q[98] * 1000:.0f} ms"
                )
        print("; ".join(line), flush=True)
    score = statistics.median(scores)
    print(
        f"{flows:,} flows ({args.hours:g} h of generated traffic with every attack), "
        f"{os.cpu_count()} cores, medians of {args.repeat} rounds"
    )
    print(f"baseline `netwarden score` (windows + scoring): {score:,.0f} flows/s")
    print(
        f"| pipeline | serve alone (flows/s) | / score | with {args.clients} API clients "
        "| / score | listing p50 | listing p99 |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for mode, r in runs.items():
        alone, loaded = statistics.median(r["alone"]), statistics.median(r["loaded"])
        name = "own process" if mode == "split" else "API's process"
        print(
            f"| {name} | {alone:,.0f} | {alone / score:.2f} | {loaded:,.0f} | "
            f"{loaded / score:.2f} | {statistics.median(r['p50']) * 1000:.0f} ms | "
            f"{statistics.median(r['p99']) * 1000:.0f} ms |"
        )


if __name__ == "__main__":
    main()

"""Score benchmark: ``netwarden score`` (windows + scoring) vs ``netwarden windows``, same flows.

For each generator cluster (``demo`` and ``fintech`` by default): a training range of another
seed, the day before, without attacks, trained once with ``netwarden train``; then the test
range (``--hours`` from the training range's start a day later, every attack). Both commands run
as a user runs them, whole processes pinned to one core (interpreter start, imports, model
loading, progress and output included), alternating ``--repeat`` times in the same run:

(w) ``netwarden windows --flows F --out W.jsonl``: bytes to closed windows, written;
(s) ``netwarden score --model-dir M --flows F --out S.jsonl``: the same windows, scored, judged
    and written.

The best time of each is reported in flows per second with the ratio (s)/(w) of the rates
(issue 22's target: >= 0.5). Then one more run of (s)'s work inside a process, timed by phase,
says where its time goes: imports, loading the models, and reading plus windowing plus judging,
of which judging (novelty rules, changes, incidents) and, within that, scoring (the forests,
deviations and explanations), and whether the models came from their flat arrays without
scikit-learn (a model folder trained before those existed is trained again). Timings on a shared machine are noisy: compare the ratios of one
run, not figures across runs. ``--profile`` also runs (s) once under cProfile, in a child
process, and prints the functions with the largest cumulative time.

    python benchmarks/score.py [--clusters demo,fintech] [--hours 6] [--seed 5]
                               [--train-seed 4] [--repeat 3] [--cpu 0] [--data DIR] [--profile]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from netwarden.detector.results import ScoredWindow

DATA = Path(__file__).resolve().parent / ".data"
START = datetime(2026, 1, 5, tzinfo=UTC)  # the test range's start; training is the day before


def _pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


def _netwarden() -> list[str]:
    """The installed ``netwarden`` script beside this interpreter (what a user runs)."""
    script = Path(sys.executable).with_name("netwarden")
    return [str(script)] if script.exists() else [sys.executable, "-m", "netwarden"]


def _check(argv: list[str], what: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed ({' '.join(argv)}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def _generate(
    out: Path, cluster: str, hours: float, seed: int, start: datetime, attacks: bool
) -> Path:
    """``netwarden generate`` into ``out`` once (a ``done`` marker makes it reusable)."""
    flows = out / "flows.jsonl"
    if flows.exists() and (out / "done").exists():
        return flows
    print(f"generating {hours:g} h of {cluster} (seed {seed}) into {out} ...", flush=True)
    argv = [*_netwarden(), "generate", "--cluster", cluster, "--hours", f"{hours:g}", "--seed",
            str(seed), "--start", start.strftime("%Y-%m-%dT%H:%M:%SZ"), "--out", str(out)]  # fmt: skip
    if attacks:
        argv += ["--attacks", "all"]
    _check(argv, f"netwarden generate --cluster {cluster}")
    (out / "done").write_text("ok")
    return flows


def _prepare(
    data: Path, cluster: str, hours: float, seed: int, train_seed: int
) -> tuple[Path, Path]:
    """The test flows and a model folder trained on the training range (made once)."""
    base = data / f"score-{cluster}-h{hours:g}-s{seed}-t{train_seed}"
    train_flows = _generate(
        base / "train", cluster, hours, train_seed, START - timedelta(days=1), attacks=False
    )
    test_flows = _generate(base / "test", cluster, hours, seed, START, attacks=True)
    models = base / "models"
    if not (models / "done").exists() or not _has_flat_arrays(models):
        print(f"training on {train_flows} ...", flush=True)
        shutil.rmtree(models, ignore_errors=True)
        _check(
            [*_netwarden(), "train", "--flows", str(train_flows), "--model-dir", str(models)],
            "netwarden train",
        )
        (models / "done").write_text("ok")
    return test_flows, models


def _has_flat_arrays(models: Path) -> bool:
    """Whether the current version has its forests' flat arrays (a model folder trained before
    they existed is trained again: it would load through skops, as a user's never would)."""
    current = models / "CURRENT"
    if not current.is_file():
        return False
    return any((models / current.read_text().strip() / "models").glob("*.npz"))


def _count_lines(path: Path) -> int:
    n = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            n += block.count(b"\n")
    return n


def _timed(argv: list[str], cpu: int, what: str) -> float:
    """Seconds of one whole process pinned to ``cpu``."""
    start = time.perf_counter()
    _check(argv, what, preexec_fn=lambda: _pin(cpu))
    return time.perf_counter() - start


def _phases(flows: Path, models: Path) -> dict[str, float]:
    """(s)'s work in this process (a child), timed by phase; no output is written."""
    start = time.perf_counter()
    from netwarden.detector.judge import WindowJudge
    from netwarden.detector.scorer import Scorer
    from netwarden.detector.stream import StreamScorer
    from netwarden.ingest.pipeline import build_windows
    from netwarden.ingest.windows import ClosedWindow, WindowBuilder
    from netwarden.models.artifact import load_bundle

    imported = time.perf_counter()
    bundle = load_bundle(models)
    loaded = time.perf_counter()
    spent = {"judge": 0.0, "score": 0.0}

    class TimedScorer(Scorer):
        def score(self, windows: Sequence[ClosedWindow]) -> list[ScoredWindow]:
            at = time.perf_counter()
            try:
                return super().score(windows)
            finally:
                spent["score"] += time.perf_counter() - at

    judge = WindowJudge(TimedScorer(bundle), bundle.edges)
    stream = StreamScorer(judge, lambda _w, _s: None, max_windows=2048)

    def sink(closed: list[ClosedWindow]) -> None:
        at = time.perf_counter()
        stream.add(closed)
        spent["judge"] += time.perf_counter() - at

    build_windows([flows], sink, builder=WindowBuilder(bundle.windows))
    at = time.perf_counter()
    stream.flush()
    spent["judge"] += time.perf_counter() - at
    done = time.perf_counter()
    return {
        "imports": imported - start,
        "load": loaded - imported,
        "ingest_and_judge": done - loaded,
        "judge": spent["judge"],
        "score": spent["score"],
        "models": len(bundle.models),
        "flat": sum(m.flat is not None for m in bundle.models.values()),
        "sklearn": any(name.split(".")[0] in ("sklearn", "skops") for name in sys.modules),
    }


def _profile(flows: Path, models: Path, scratch: Path, cpu: int, top: int = 30) -> None:
    stats = scratch / "score.prof"
    argv = [sys.executable, "-m", "cProfile", "-o", str(stats), "-m", "netwarden", "score",
            "--model-dir", str(models), "--flows", str(flows), "--out", str(scratch / "p.jsonl")]  # fmt: skip
    _timed(argv, cpu, "netwarden score under cProfile")
    import pstats

    print(f"  netwarden score under cProfile, top {top} by cumulative time:")
    pstats.Stats(str(stats), stream=sys.stdout).sort_stats("cumulative").print_stats(top)


def _measure(name: str, flows: Path, models: Path, args: argparse.Namespace, scratch: Path) -> dict:
    n = _count_lines(flows)
    size = flows.stat().st_size
    commands = {
        "windows": [*_netwarden(), "windows", "--flows", str(flows), "--out",
                    str(scratch / "w.jsonl")],
        "score": [*_netwarden(), "score", "--model-dir", str(models), "--flows", str(flows),
                  "--out", str(scratch / "s.jsonl")],
    }  # fmt: skip
    best: dict[str, float] = {}
    for i in range(args.repeat):
        for phase, argv in commands.items():
            seconds = _timed(argv, args.cpu, f"netwarden {phase}")
            print(f"  {name} run {i + 1} {phase:8s} {seconds:8.2f} s {n / seconds:>10,.0f} flows/s")
            best[phase] = min(best.get(phase, seconds), seconds)
    windows = _count_lines(scratch / "s.jsonl")
    ratio = best["windows"] / best["score"]
    print()
    print(
        f"{name}: {flows} ({size / 1e6:,.0f} MB, {n:,} flows, {windows:,} identity-windows), "
        f"one core (cpu {args.cpu}), best of {args.repeat}"
    )
    print(
        f"  (w) netwarden windows: {n / best['windows']:>10,.0f} flows/s  ({best['windows']:.2f} s)"
    )
    print(
        f"  (s) netwarden score  : {n / best['score']:>10,.0f} flows/s  ({best['score']:.2f} s)"
        f"   (s)/(w) {ratio:.2f}"
    )
    argv = [sys.executable, __file__, "--child-phases", str(flows), str(models)]
    proc = _check(
        argv, "the in-process phases of netwarden score", preexec_fn=lambda: _pin(args.cpu)
    )
    p = json.loads(proc.stdout.strip().splitlines()[-1])
    print(
        f"  (s) in process, by phase: imports {p['imports']:.2f} s, loading the models "
        f"{p['load']:.2f} s, reading + windows + judging {p['ingest_and_judge']:.2f} s (judging "
        f"{p['judge']:.2f} s, of which scoring {p['score']:.2f} s)"
    )
    print(
        f"  (s) {p['flat']} of {p['models']} models loaded from their flat arrays; scikit-learn "
        f"or skops imported: {'yes' if p['sklearn'] else 'no'}"
    )
    if args.profile:
        _profile(flows, models, scratch, args.cpu)
    print()
    return {"name": name, "flows": n, "windows": best["windows"], "score": best["score"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clusters", default="demo,fintech", help="comma-separated clusters")
    parser.add_argument("--hours", type=float, default=6.0, help="hours of the test range")
    parser.add_argument("--seed", type=int, default=5, help="generator seed of the test range")
    parser.add_argument("--train-seed", type=int, default=4, help="seed of the training range")
    parser.add_argument("--repeat", type=int, default=3, help="alternating runs; the best counts")
    parser.add_argument("--cpu", type=int, default=0, help="core to pin the measurements to")
    parser.add_argument("--data", type=Path, default=DATA, help="where generated data is kept")
    parser.add_argument("--profile", action="store_true", help="also profile one score run")
    parser.add_argument("--child-phases", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_phases:
        print(json.dumps(_phases(*args.child_phases)))
        return
    clusters = [c.strip() for c in args.clusters.split(",") if c.strip()]
    if not clusters:
        raise SystemExit("nothing to measure: give --clusters")
    inputs = [
        (c, *_prepare(args.data, c, args.hours, args.seed, args.train_seed)) for c in clusters
    ]
    scratch = Path(tempfile.mkdtemp(prefix="netwarden-bench-score-"))
    try:
        results = [_measure(name, f, m, args, scratch) for name, f, m in inputs]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"summary (best of {args.repeat}, one core, whole processes; ratios of the same run):")
    print(f"  {'cluster':<10} {'flows':>10} {'(w) windows':>12} {'(s) score':>10} {'(s)/(w)':>8}")
    for r in results:
        print(
            f"  {r['name']:<10} {r['flows']:>10,} {r['flows'] / r['windows']:>12,.0f}"
            f" {r['flows'] / r['score']:>10,.0f} {r['windows'] / r['score']:>8.2f}"
        )


if __name__ == "__main__":
    main()

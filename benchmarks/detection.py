"""Detection benchmark: netwarden's models vs a plain baseline on labelled generated traffic.

For each seed: generate two training days without attacks and a test day with every attack
scenario (same cluster, later days, another traffic seed), train, score, and report per
scenario whether it was detected and how long after the attack started the first anomalous
window of the attacking identity closed; plus false alerts per identity-day (runs of consecutive
anomalous windows outside every attack interval) and window precision (share of anomalous
windows that overlap an attack interval; attacks also disturb their victims, whose windows
count as attack-related). In the same run, the same numbers for a plain baseline: scikit-learn's
IsolationForest with default settings on each identity's raw flow count per window.

    python benchmarks/detection.py [--seeds 11 12 13] [--train-days 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.ensemble import IsolationForest

from netwarden.detector.results import ScoredWindow
from netwarden.detector.scorer import Scorer
from netwarden.detector.stream import StreamScorer
from netwarden.generator import SCENARIOS, AttackLabel, generate
from netwarden.ingest.pipeline import build_windows
from netwarden.ingest.windows import ClosedWindow, WindowBuilder, windows_to_rows
from netwarden.models.training import TrainConfig, train

DATA = Path(__file__).resolve().parent / ".data"
START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday


@dataclass
class Verdict:
    identity: str
    start: float
    end: float
    anomalous: bool


def _windows(path: Path, builder: WindowBuilder) -> list[ClosedWindow]:
    out: list[ClosedWindow] = []
    build_windows([path], out.extend, builder=builder)
    return out


def _baseline(train_w: list[ClosedWindow], test_w: list[ClosedWindow], seed: int) -> list[Verdict]:
    """Vanilla IsolationForest per identity on raw flow counts (egress + ingress flows)."""
    per: dict[str, list[float]] = defaultdict(list)
    for w in train_w:
        per[w.identity].append(float(w.client.flows + w.server.flows))
    models = {
        i: IsolationForest(random_state=seed).fit(np.array(v)[:, None])
        for i, v in per.items()
        if len(v) >= 16
    }
    out = []
    for w in test_w:
        model = models.get(w.identity)
        flag = bool(
            model is not None
            and model.predict(np.array([[w.client.flows + w.server.flows]]))[0] == -1
        )
        out.append(Verdict(w.identity, w.start, w.end, flag))
    return out


def _evaluate(
    verdicts: list[Verdict], labels: list[AttackLabel], window: float, days: float
) -> dict[str, Any]:
    spans = [(lb.start.timestamp(), lb.end.timestamp()) for lb in labels]
    per_scenario = {}
    for lb in labels:
        s, e = lb.start.timestamp(), lb.end.timestamp()
        hits = sorted(
            v.end
            for v in verdicts
            if v.anomalous and v.identity == lb.identity and v.end > s and v.start < e
        )
        # (seconds from the attack's start, within target?): the target is the end of the
        # attack's second whole window (the window it starts in may hold only its first second)
        target = -(-s // window) * window + 2 * window
        per_scenario[lb.scenario] = (hits[0] - s, hits[0] <= target) if hits else None
    runs = 0
    by_identity: dict[str, list[Verdict]] = defaultdict(list)
    for v in verdicts:
        by_identity[v.identity].append(v)
    related = anomalous = 0
    for items in by_identity.values():
        items.sort(key=lambda v: v.start)
        previous_end = None
        for v in items:
            in_attack = any(v.end > s and v.start < e for s, e in spans)
            if v.anomalous:
                anomalous += 1
                related += in_attack
                if not in_attack and previous_end != v.start:
                    runs += 1
                previous_end = v.end if not in_attack else None
            else:
                previous_end = None
    identities = len(by_identity)
    return {
        "ttd": per_scenario,
        "false_per_identity_day": runs / (identities * days),
        "precision": related / anomalous if anomalous else 1.0,
        "window": window,
    }


def run_seed(seed: int, train_days: int) -> tuple[dict[str, Any], dict[str, Any]]:
    root = DATA / f"detect-s{seed}-d{train_days}"
    train_files = []
    for day in range(train_days):
        folder = root / f"train{day}"
        if not (folder / "flows.jsonl").exists():
            generate(folder, hours=24, seed=seed * 100 + day, start=START + timedelta(days=day))
        train_files.append(folder / "flows.jsonl")
    test = generate(
        root / "test",
        hours=24,
        seed=seed * 100 + 99,
        start=START + timedelta(days=train_days),
        attacks=list(SCENARIOS),
    )
    builder = WindowBuilder()
    train_w: list[ClosedWindow] = []
    for path in train_files:
        train_w.extend(_windows(path, builder))
    t = time.perf_counter()
    bundle = train(windows_to_rows(train_w), config=TrainConfig(seed=seed))
    bundle.baselines = builder.export_baselines()
    train_s = time.perf_counter() - t
    scoring_builder = WindowBuilder()
    scoring_builder.seed_baselines(bundle.baselines)
    test_w: list[ClosedWindow] = []
    scored: list[ScoredWindow] = []

    def keep(windows: list[ClosedWindow], results: list[ScoredWindow]) -> None:
        test_w.extend(windows)
        scored.extend(results)

    # as `netwarden score` does: anomalous windows do not teach the peer/name baselines
    stream = StreamScorer(Scorer(bundle), scoring_builder, keep)
    t = time.perf_counter()
    build_windows([test.flows_path], stream.add, builder=scoring_builder)
    stream.flush()
    score_s = time.perf_counter() - t
    ours = [
        Verdict(s.identity, s.window_start.timestamp(), s.window_end.timestamp(), s.anomalous)
        for s in scored
    ]
    base = _baseline(train_w, test_w, seed)
    labels = list(test.labels)
    print(
        f"seed {seed}: trained {len(bundle.models)} models on {bundle.rows:,} windows in "
        f"{train_s:.1f} s; built and scored {len(scored):,} windows in {score_s:.1f} s",
        flush=True,
    )
    return _evaluate(ours, labels, 60.0, 1.0), _evaluate(base, labels, 60.0, 1.0)


def _fmt_ttd(value: tuple[float, bool] | None) -> str:
    if value is None:
        return "missed"
    seconds, on_time = value
    return f"{seconds:.0f} s" + ("" if on_time else " (late)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[11, 12, 13])
    parser.add_argument("--train-days", type=int, default=2)
    args = parser.parse_args()
    results = [run_seed(seed, args.train_days) for seed in args.seeds]
    print()
    print(
        "time to detect: from the attack's start to the end of the first anomalous window of "
        "the attacker, per seed; (late) = after the end of the attack's second whole window"
    )
    print(f"{'scenario':18s} {'netwarden':32s} {'baseline':32s}")
    for scenario in SCENARIOS:
        ours = [r[0]["ttd"].get(scenario) for r in results]
        base = [r[1]["ttd"].get(scenario) for r in results]
        print(
            f"{scenario:18s} {' / '.join(_fmt_ttd(v) for v in ours):32s} "
            f"{' / '.join(_fmt_ttd(v) for v in base):32s}"
        )
    for name, idx in (("netwarden", 0), ("baseline", 1)):
        detected = sum(v is not None for r in results for v in r[idx]["ttd"].values())
        on_time = sum(v is not None and v[1] for r in results for v in r[idx]["ttd"].values())
        total = sum(len(r[idx]["ttd"]) for r in results)
        fa = statistics.mean(r[idx]["false_per_identity_day"] for r in results)
        precision = statistics.mean(r[idx]["precision"] for r in results)
        print(
            f"{name:10s}: detected {detected}/{total} scenario runs ({on_time} within two "
            f"windows); false alerts "
            f"{fa:.2f} per identity-day; window precision {precision:.2f} "
            f"(seeds {', '.join(map(str, args.seeds))})"
        )


if __name__ == "__main__":
    main()

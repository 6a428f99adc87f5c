"""Detection under change: attacks found, benign changes reported once, false alerts, per cluster.

For each cluster shape and seed: generate two training days without attacks or changes, then a
test day with every attack scenario (fast and low-and-slow) and every benign change (a new
service and its caller, a new SaaS vendor, a job never seen, a surge with autoscaling, a debug
pod, a node drain, a DNS provider change); run ``netwarden train`` and ``netwarden score`` as a
user would (whole processes), for this tree and, in the same run, for a previous release
checked out from git (``--previous``, default the last commit before detection under change).

An *alert* is an incident (attacker, victims linked: ``incident``/``attacker`` in the score
output), or, for a release before incidents, a run of consecutive anomalous windows of one
identity (then every identity an attack disturbs raises its own). Per scenario: detected (an
alert naming the attacker overlaps the attack) and time to detect (from the attack's start to
the end of that alert's first window); "within three windows" means by the end of the attack's
third whole window. An alert not naming an attacker during its attack is *false*: *during
change* when it touches an identity the change touched, within the change's span plus an hour,
else *elsewhere*; alerts on other identities during an attack are counted apart (*victim
alerts*). Changes reported per benign change: each change record (``score --changes``) counts
for one labelled change, of those whose identities and time it overlaps the one sharing most
identities, then the latest to start before the record appeared (the previous release reports
none).

    python benchmarks/detection.py [--seeds 11 12 13] [--clusters demo fintech] [--jobs 2]
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / ".data"
START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday
WINDOW = 60.0
#: The last commit before "detection under change" (issue 19).
PREVIOUS = "b4bb581"
CHANGE_TAIL = 3600.0  # a change's span extends this long after its end for false alerts


@dataclass
class Label:
    name: str
    identities: tuple[str, ...]
    start: float
    end: float


@dataclass
class Result:
    ttd: dict[str, float | None] = field(default_factory=dict)  # scenario -> seconds or None
    on_time: dict[str, bool] = field(default_factory=dict)
    false_change: int = 0
    false_elsewhere: int = 0
    victim_alerts: int = 0
    identities: int = 0
    changes_per_change: dict[str, int] = field(default_factory=dict)
    unlabelled_changes: int = 0
    seconds: float = 0.0


def _netwarden(python: list[str], *args: str, env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(
        [*python, *args], capture_output=True, text=True, env=env, cwd=ROOT, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"netwarden {' '.join(args[:1])} failed:\n{proc.stderr[-3000:]}")


def _labels(folder: Path) -> tuple[list[Label], list[Label]]:
    attacks = []
    with (folder / "labels.csv").open() as fh:
        for r in csv.DictReader(fh):
            attacks.append(Label(r["scenario"], (r["identity"],), _t(r["start"]), _t(r["end"])))
    changes = []
    path = folder / "changes.csv"
    if path.exists():
        with path.open() as fh:
            for r in csv.DictReader(fh):
                changes.append(
                    Label(r["change"], tuple(r["identities"].split()), _t(r["start"]), _t(r["end"]))
                )
    return attacks, changes


def _t(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def generate(cluster: str, seed: int) -> tuple[list[Path], Path]:
    """Two clean training days and an attacked, changing test day (cached in .data)."""
    root = DATA / f"{cluster}-s{seed}"
    python = [sys.executable, "-m", "netwarden"]
    train = []
    for day in range(2):
        folder = root / f"train{day}"
        if not (folder / "labels.csv").exists():  # written last: a cut-off run redoes it
            _netwarden(
                python, "generate", "--hours", "24", "--seed", str(seed * 100 + day),
                "--cluster", cluster, "--start", (START + timedelta(days=day)).isoformat(),
                "--out", str(folder),
            )  # fmt: skip
        train.append(folder / "flows.jsonl")
    test = root / "test"
    if not (test / "labels.csv").exists():
        _netwarden(
            python, "generate", "--hours", "24", "--seed", str(seed * 100 + 99),
            "--cluster", cluster, "--start", (START + timedelta(days=2)).isoformat(),
            "--attacks", "all", "--changes", "all", "--out", str(test),
        )  # fmt: skip
    return train, test


def run(python: list[str], env: dict[str, str] | None, train: list[Path], test: Path,
        work: Path, *, new: bool) -> Result:  # fmt: skip
    """Train and score as a user would; evaluate against the test day's labels."""
    work.mkdir(parents=True, exist_ok=True)
    models = work / "models"
    shutil.rmtree(models, ignore_errors=True)
    t = time.perf_counter()
    _netwarden(python, "train", "--flows", *map(str, train), "--model-dir", str(models), env=env)
    out, changes = work / "scored.jsonl", work / "changes.jsonl"
    extra = ["--changes", str(changes)] if new else []
    _netwarden(
        python, "score", "--model-dir", str(models), "--flows", str(test / "flows.jsonl"),
        "--out", str(out), *extra, env=env,
    )  # fmt: skip
    seconds = time.perf_counter() - t
    attacks, benign = _labels(test)
    result = evaluate(out, changes if new else None, attacks, benign)
    result.seconds = seconds
    return result


@dataclass
class Alert:
    """One alert: an incident (this tree) or a run of consecutive anomalous windows of one
    identity (releases before incidents)."""

    attacker: str
    identities: set[str]
    start: float
    end: float
    first_end: dict[str, float] = field(default_factory=dict)  # per identity


def _alerts(scored: Path) -> tuple[list[Alert], int]:
    """The alerts of a ``score`` output, and how many identities it scored."""
    identities: set[str] = set()
    incidents: dict[str, Alert] = {}
    runs: dict[str, list[tuple[float, float]]] = defaultdict(list)
    with scored.open("rb") as fh:
        for line in fh:
            w = orjson.loads(line)
            identities.add(w["identity"])
            if not w["anomalous"]:
                continue
            s, e = _t(w["window_start"]), _t(w["window_end"])
            if "incident" in w:
                alert = incidents.setdefault(
                    w["incident"], Alert(w.get("attacker") or w["identity"], set(), s, e)
                )
                alert.identities.add(w["identity"])
                alert.start, alert.end = min(alert.start, s), max(alert.end, e)
                alert.first_end.setdefault(w["identity"], e)
            else:
                runs[w["identity"]].append((s, e))
    alerts = list(incidents.values())
    for identity, spans in runs.items():
        spans.sort()
        start, end = spans[0]
        for s, e in [*spans[1:], (float("inf"), float("inf"))]:
            if s <= end:
                end = e
            else:
                alerts.append(Alert(identity, {identity}, start, end, {identity: start + WINDOW}))
                start, end = s, e
    return alerts, len(identities)


def evaluate(
    scored: Path, changes: Path | None, attacks: list[Label], benign: list[Label]
) -> Result:
    result = Result()
    alerts, result.identities = _alerts(scored)

    def overlaps(alert: Alert, label: Label, tail: float) -> bool:
        return alert.end > label.start and alert.start < label.end + tail

    for a in attacks:
        attacker = a.identities[0]
        ends = [
            min(x.first_end.values())
            for x in alerts
            if x.attacker == attacker and overlaps(x, a, WINDOW)
        ]
        deadline = -(-a.start // WINDOW) * WINDOW + 3 * WINDOW
        first = min(ends) if ends else None
        result.ttd[a.name] = None if first is None else max(first - a.start, 0.0)
        result.on_time[a.name] = first is not None and first <= deadline
    for alert in alerts:
        if any(alert.attacker == a.identities[0] and overlaps(alert, a, WINDOW) for a in attacks):
            continue
        if any(overlaps(alert, a, WINDOW) for a in attacks):
            result.victim_alerts += 1
        elif any(
            alert.identities & set(c.identities) and overlaps(alert, c, CHANGE_TAIL) for c in benign
        ):
            result.false_change += 1
        else:
            result.false_elsewhere += 1
    if changes is not None and changes.exists():
        records = [orjson.loads(line) for line in changes.read_bytes().splitlines()]
        records = [r for r in records if r.get("status") != "escalated"]
        # each record counts for one change: of those it overlaps (identities and time), the
        # one sharing most identities, then the latest to start before the record appeared
        result.changes_per_change = {c.name: 0 for c in benign}
        for r in records:
            first, last = _t(r["first_seen"]), _t(r["last_seen"])
            mine = [
                c
                for c in benign
                if set(r["identities"]) & set(c.identities)
                and first < c.end + CHANGE_TAIL
                and last + WINDOW > c.start
            ]
            if not mine:
                result.unlabelled_changes += 1
                continue
            best = max(
                mine,
                key=lambda c: (
                    len(set(r["identities"]) & set(c.identities)),
                    c.start <= first + WINDOW,
                    c.start if c.start <= first + WINDOW else -c.start,
                ),
            )
            result.changes_per_change[best.name] += 1
    else:
        result.changes_per_change = {c.name: 0 for c in benign}
    return result


def _install(source: Path, target: Path) -> list[str]:
    """Install the tree at ``source`` into ``target``; the command line that runs it."""
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
         "--no-build-isolation", "--target", str(target), str(source)],
        check=True, capture_output=True,
    )  # fmt: skip
    return runner(target)


def runner(target: Path) -> list[str]:
    """The command line that runs the netwarden installed in ``target`` (ahead of the
    editable install of this checkout)."""
    return [sys.executable, "-c", "import runpy,sys; sys.path.insert(0, sys.argv.pop(1)); "
            "runpy.run_module('netwarden', run_name='__main__')", str(target)]  # fmt: skip


def this_tree(folder: Path) -> list[str]:
    """A snapshot of the working tree as it is now, so that edits during a long run do not
    mix versions in its results."""
    target = folder / "site-this-tree"
    shutil.rmtree(target, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", ".data", "*.egg-info", "__pycache__", "netwarden-data"))  # fmt: skip
        return _install(tree, target)


def previous_release(ref: str, folder: Path) -> list[str]:
    """Install ``ref`` (a git commit) into ``folder``; the command line that runs it."""
    target = folder / f"site-{ref}"
    if not (target / ".done").exists():
        shutil.rmtree(target, ignore_errors=True)
        with tempfile.TemporaryDirectory() as tmp:
            tree = Path(tmp) / "tree"
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), ref],
                check=True,
                capture_output=True,
            )
            try:
                _install(tree, target)
            finally:
                subprocess.run(
                    ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                    check=False,
                    capture_output=True,
                )
        (target / ".done").write_text(ref)
    return runner(target)


def _ttd(value: float | None, on_time: bool) -> str:
    if value is None:
        return "missed"
    return f"{value:.0f} s" + ("" if on_time else " (late)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[11, 12, 13])
    parser.add_argument("--clusters", nargs="+", default=["demo", "fintech"])
    parser.add_argument("--previous", default=PREVIOUS, help="git ref of the previous release")
    parser.add_argument("--no-previous", action="store_true", help="skip the previous release")
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (default 2)")
    args = parser.parse_args()
    DATA.mkdir(exist_ok=True)
    current = this_tree(DATA)
    old = None if args.no_previous else previous_release(args.previous, DATA)
    env = dict(os.environ)
    combos = [(c, s) for c in args.clusters for s in args.seeds]
    with ThreadPoolExecutor(args.jobs) as pool:
        data = dict(zip(combos, pool.map(lambda cs: generate(*cs), combos), strict=True))
        print(f"generated {len(combos)} cluster-seed combinations", flush=True)

        def one(key: tuple[str, int], new: bool) -> Result:
            train, test = data[key]
            work = DATA / "runs" / f"{key[0]}-s{key[1]}-{'new' if new else 'old'}"
            python = current if new else old
            assert python is not None
            result = run(python, env, train, test, work, new=new)
            print(f"  {key[0]} seed {key[1]} {'this tree' if new else args.previous}: "
                  f"{result.seconds:.0f} s", flush=True)  # fmt: skip
            return result

        jobs = [(k, True) for k in combos] + ([(k, False) for k in combos] if old else [])
        results = dict(zip(jobs, pool.map(lambda j: one(*j), jobs), strict=True))
    report(args, combos, results, old is not None)


def report(args: argparse.Namespace, combos: list[tuple[str, int]],
           results: dict[tuple[tuple[str, int], bool], Result], with_old: bool) -> None:  # fmt: skip
    versions = [(True, "this tree")] + ([(False, args.previous)] if with_old else [])
    print()
    print("time to detect per cluster/seed (from the attack's start to the end of the "
          "attacker's first alerting window; late = after its third whole window)")  # fmt: skip
    scenarios = sorted({s for r in results.values() for s in r.ttd})
    for new, name in versions:
        print(f"\n{name}")
        for scenario in scenarios:
            cells = [
                _ttd(results[(k, new)].ttd.get(scenario), results[(k, new)].on_time.get(scenario, False))
                for k in combos
            ]  # fmt: skip
            print(f"  {scenario:18s} {' / '.join(cells)}")
    print("\nsummary (" + ", ".join(f"{c} seed {s}" for c, s in combos) + ")")
    for new, name in versions:
        rs = [results[(k, new)] for k in combos]
        runs = sum(len(r.ttd) for r in rs)
        detected = sum(v is not None for r in rs for v in r.ttd.values())
        on_time = sum(v for r in rs for v in r.on_time.values())
        days = [r.identities for r in rs]
        fa_change = sum(r.false_change for r in rs) / sum(days)
        fa_else = sum(r.false_elsewhere for r in rs) / sum(days)
        victims = sum(r.victim_alerts for r in rs)
        per_change: dict[str, list[int]] = defaultdict(list)
        for r in rs:
            for c, n in r.changes_per_change.items():
                per_change[c].append(n)
        shown = ", ".join(f"{c} {statistics.mean(v):.1f}" for c, v in sorted(per_change.items()))
        print(
            f"  {name}: detected {detected}/{runs} ({on_time} within three windows); false "
            f"alerts per identity-day {fa_change + fa_else:.2f} ({fa_change:.2f} during "
            f"change, {fa_else:.2f} elsewhere); victim alerts {victims}; changes reported "
            f"per benign change: {shown or 'none'}; other change records "
            f"{sum(r.unlabelled_changes for r in rs)}; train+score "
            f"{statistics.mean(r.seconds for r in rs):.0f} s per run"
        )


if __name__ == "__main__":
    main()

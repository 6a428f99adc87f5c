"""Model lifecycle: false alerts per identity-day over simulated days, with scheduled
retraining and without, in the same run.

One generated cluster (``netwarden generate``, every benign change, no attacks: every alert is
a false one) over ``--days`` days after one training day (the first model learns its first
``--train-hours``; the whole day is history). Both arms start from the same first
model (``netwarden train`` on the training day) and see the same days, one at a time, as the
service would (``netwarden history``: windows, judge, store, window history, live edge memory).
After each day the people of the simulation review that day's anomalies: all are benign here,
so each gets the verdict ``expected`` (``--no-feedback``: nobody reviews). The *retrained* arm
runs ``netwarden retrain`` every ``--every`` days (the schedule), on the last ``--every`` + 1
days of its history (the training day is history too) with the last day held out for the gate;
the *static* arm never retrains.

Every netwarden step is a process, as a user or the CronJob runs it, of one snapshot of the
working tree taken at the start (``<work>/site``): the steps of a run take minutes and the
checkout may be edited meanwhile, and an arm that ran a day on other code than the other arm
differs from it from that day on (through its store and edge memory), before any retraining.
Printed per day and arm:
anomalies (alerts) per identity-day; then the totals after the first retraining, which is
where the arms can differ, and each retraining's gate decision.

    python benchmarks/lifecycle.py [--days 7] [--every 2] [--rate 0.1] [--seed 5] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

START = datetime(2026, 1, 5, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[1]
#: The netwarden the steps run: this checkout's (the editable install) until :func:`main`
#: points it at its snapshot.
SITE: Path | None = None


def snapshot(folder: Path, root: Path = ROOT) -> Path:
    """Copy the netwarden package as the working tree at ``root`` holds it now into
    ``folder``, laid out as installed (each folder of ``[tool.setuptools.package-dir]`` in
    pyproject.toml at its package's path); the folder to put first on ``sys.path``."""
    import tomllib

    setuptools = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.rmtree(folder, ignore_errors=True)
    # parents before their subpackages ("netwarden" sorts before "netwarden.detector")
    for package, source in sorted(setuptools["package-dir"].items()):
        target = folder.joinpath(*package.split("."))
        shutil.copytree(root / source, target, ignore=skip, dirs_exist_ok=True)
    return folder


def command(*args: str) -> list[str]:
    """The command line of one netwarden step: the snapshot's (:data:`SITE`) when taken,
    ahead of the editable install of this checkout."""
    if SITE is None:
        return [sys.executable, "-m", "netwarden", *args]
    return [
        sys.executable,
        "-c",
        "import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); "
        "runpy.run_module('netwarden', run_name='__main__')",
        str(SITE),
        *args,
    ]


def netwarden(*args: str) -> str:
    """Run one netwarden command as a process; its stdout (stderr shown on failure)."""
    done = subprocess.run(command(*args), capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"netwarden {args[0]} failed ({done.returncode})")
    return done.stdout + done.stderr


def split_by_day(flows: Path, out: Path, train_hours: float = 24.0) -> dict[int, Path]:
    """The generated flows, one file per day since START (the training day is 0), and under
    key -1 the first ``train_hours`` of day 0 (what the first model is trained on)."""
    first = START + timedelta(hours=train_hours)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[int, object] = {}
    paths: dict[int, Path] = {}
    with open(flows, "rb") as fh:
        for line in fh:
            stamp = orjson.loads(line)["flow"]["time"]
            when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
            day = (when - START).days
            if when < first:
                if -1 not in files:
                    paths[-1] = out / "train.jsonl"
                    files[-1] = open(paths[-1], "wb")
                files[-1].write(line)  # type: ignore[attr-defined]
            if day not in files:
                paths[day] = out / f"day{day}.jsonl"
                files[day] = open(paths[day], "wb")
            files[day].write(line)  # type: ignore[attr-defined]
    for f in files.values():
        f.close()  # type: ignore[attr-defined]
    return paths


def review(db: Path, day_start: datetime, day_end: datetime) -> int:
    """People: every anomaly of the day is expected (this cluster has no attacks)."""
    from netwarden.detector.store import AnomalyStore

    store = AnomalyStore(f"sqlite:///{db}")
    n = 0
    try:
        for record in store.list(since=day_start, until=day_end, limit=100_000):
            store.set_verdict(record.id, "expected", actor="reviewer", note="benign change")
            n += 1
    finally:
        store.close()
    return n


def alerts_per_identity_day(db: Path, history: Path, day_start: datetime) -> tuple[float, ...]:
    """The day's alerts per identity-day: anomalies the detector opened (its whole verdict),
    and runs of windows the model alone put past its threshold (the history's
    ``model_anomalous``); and the anomalies' count."""
    from netwarden.detector.store import AnomalyStore
    from netwarden.models.gate import count_alerts
    from netwarden.storage.history import read_windows

    day_end = day_start + timedelta(days=1)
    store = AnomalyStore(f"sqlite:///{db}")
    try:
        started = [
            a
            for a in store.list(since=day_start, until=day_end, limit=100_000)
            if day_start <= a.first_window_start < day_end
        ]
    finally:
        store.close()
    frame = read_windows(history, start=day_start, end=day_end)
    identities = max(1, frame["identity"].nunique()) if len(frame) else 1
    rows = frame[["identity", "window_start", "window_end"]].to_dict("records")
    # the model's own verdict (before the novelty rules raise a window's score): each run of
    # consecutive windows past its threshold counts once
    scores = (
        frame["model_anomalous"].fillna(False).to_numpy(dtype=float) * 2.0 if len(frame) else []
    )
    model_alerts, _ = count_alerts(rows, scores)
    return len(started) / identities, model_alerts / identities, len(started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=7, help="simulated days after training")
    parser.add_argument("--every", type=int, default=2, help="days between retrainings")
    parser.add_argument("--rate", type=float, default=0.1, help="traffic volume factor")
    parser.add_argument("--seed", type=int, default=5, help="generator seed")
    parser.add_argument(
        "--train-hours",
        type=float,
        default=24.0,
        help="hours of day 0 the first model learns (less than 24: it misses the daily cycle, "
        "as a service bootstrapped a few hours ago)",
    )
    parser.add_argument("--no-feedback", action="store_true", help="nobody reviews anomalies")
    parser.add_argument("--keep", type=Path, default=None, help="work folder to keep")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="netwarden-lifecycle-"))
    work.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    # one version of the code for every step of both arms, and for this script's own reads
    global SITE
    SITE = snapshot(work / "site")
    sys.path.insert(0, str(SITE))
    hours = 24 * (args.days + 1)
    netwarden(
        "generate",
        "--hours",
        str(hours),
        "--rate",
        str(args.rate),
        "--seed",
        str(args.seed),
        "--out",
        str(work / "gen"),
        "--start",
        START.isoformat(),
        "--changes",
        "all",
    )
    print(
        (work / "gen" / "changes.csv").read_text().split("\n", 1)[1].strip().replace("\n", "\n  ")
    )
    days = split_by_day(work / "gen" / "flows.jsonl", work / "days", args.train_hours)
    (work / "gen" / "flows.jsonl").unlink()  # the days hold the same lines: half the disk
    key = work / "signing.key"
    from netwarden.models.signing import ensure_key

    ensure_key(key)
    netwarden(
        "train",
        "--flows",
        str(days[-1]),
        "--model-dir",
        str(work / "first"),
        "--signing-key",
        str(key),
        "--min-windows",
        "60",
    )
    arms = {"static": False, "retrained": True}
    for arm in arms:
        shutil.copytree(work / "first", work / arm / "models")
        base = work / arm  # the training day is history too, as the service kept it
        netwarden(
            "history",
            "--flows",
            str(days[0]),
            "--model-dir",
            str(base / "models"),
            "--out",
            str(base / "history"),
            "--db",
            str(base / "s.db"),
            "--edges",
            str(base / "edges.json"),
            "--signing-key",
            str(key),
        )
    rates: dict[str, dict[int, tuple[float, ...]]] = defaultdict(dict)
    gates: list[str] = []
    for day in range(1, args.days + 1):
        day_start = START + timedelta(days=day)
        for arm, retrains in arms.items():
            base = work / arm
            netwarden(
                "history",
                "--flows",
                str(days[day]),
                "--model-dir",
                str(base / "models"),
                "--out",
                str(base / "history"),
                "--db",
                str(base / "s.db"),
                "--edges",
                str(base / "edges.json"),
                "--signing-key",
                str(key),
            )
            rates[arm][day] = alerts_per_identity_day(base / "s.db", base / "history", day_start)
            if not args.no_feedback:
                review(base / "s.db", day_start, day_start + timedelta(days=1))
            if retrains and day % args.every == 0:
                out = netwarden(
                    "retrain",
                    "--model-dir",
                    str(base / "models"),
                    "--history",
                    str(base / "history"),
                    "--store",
                    f"sqlite:///{base / 's.db'}",
                    "--edges",
                    str(base / "edges.json"),
                    "--signing-key",
                    str(key),
                    "--days",
                    str(args.every + 1.0),
                    "--validation-days",
                    "1",
                    "--min-windows",
                    "60",
                )
                gate = next(line for line in out.splitlines() if line.startswith("gate:"))
                gates.append(f"day {day}: {gate}")
        print(
            f"day {day}: alerts per identity-day (detector / model alone): "
            + ", ".join(
                f"{arm} {rates[arm][day][0]:.3f} / {rates[arm][day][1]:.3f}" for arm in arms
            ),
            flush=True,
        )
    after = list(range(args.every + 1, args.days + 1))
    summary = {
        arm: [round(sum(rates[arm][d][i] for d in after) / max(1, len(after)), 4) for i in (0, 1)]
        for arm in arms
    }
    print("retrainings:\n  " + "\n  ".join(gates))
    print(
        f"after the first retraining (days {after[0] if after else '-'}-{args.days}): "
        + ", ".join(f"{arm} {v[0]:.3f} / {v[1]:.3f}" for arm, v in summary.items())
        + " false alerts per identity-day (detector / model alone)"
    )
    print(
        json.dumps(
            {
                "train_hours": args.train_hours,
                "days": args.days,
                "every": args.every,
                "rate": args.rate,
                "feedback": not args.no_feedback,
                "after_first_retraining": summary,
                "seconds": round(time.perf_counter() - began),
            }
        )
    )
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""A week of the model lifecycle on generated traffic, the way a service lives it.

One generated cluster (``netwarden.generator.generate``, seed 1: a port scan from
checkout/orders on day 2) over eight days: day 0 trains the first model, days 1-7 are scored
one at a time through ``backfill`` (what ``netwarden history`` and ``serve`` do: windows,
judge, store, window history, live edge memory). The change mid-week: from day 3 00:00 on,
shop/catalog serves four times the traffic and keeps doing so (a new client: every flow from or
to it is repeated, as tests/test_drift.py scales a workload). At the end of each day people
review that day's anomalies: the scan's are confirmed, everything else is expected.

Retraining runs on the service's own schedule object (``RetrainSchedule`` with the
``netwarden retrain`` command ``serve`` builds from its configuration, ``retrain_command``),
driven by an **injected clock**: the simulated time moves day by day, and at each cron time the
schedule computes on the way (``next_run``) the schedule's ``run_once`` starts the same child
process ``serve``'s worker thread starts. The schedule is Thursdays and Sundays at 00:00: the
starts of day 3 (as the change begins) and of day 6 (after three days of it), each run on the
last four days of history (``retrain.days``), the newest one held out for the gate.

What the week shows: the runs happen and are counted; the candidate of day 6, which learned the
change, passes the gate and is promoted, and the model's alerts on shop/catalog stop after it;
a candidate trained on the scan's windows is refused by the gate; rolling back restores the
previous model's scores exactly (and promoting again the new ones); and drift, measured as the
service measures it (its ``drift`` configuration, ``DriftMonitor``), shows for shop/catalog
on day 3 under the model of before, not on day 2, and most of it is gone once the new model
scores it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from prometheus_client import CollectorRegistry
from rich.console import Console

from netwarden.commands.detection import train as train_command
from netwarden.commands.lifecycle import backfill, promote, rollback
from netwarden.commands.retraining import RetrainSchedule
from netwarden.config import ServiceConfig
from netwarden.detector.drift import DRIFTED, DriftMonitor, DriftReport
from netwarden.detector.judge import WindowJudge
from netwarden.detector.scorer import Scorer
from netwarden.detector.store import AnomalyStore
from netwarden.generator import generate
from netwarden.ingest.pipeline import build_windows
from netwarden.ingest.windows import ClosedWindow, WindowBuilder, WindowConfig
from netwarden.models.edges import EdgeMemory
from netwarden.models.gate import count_alerts, evaluate, score_rows
from netwarden.models.registry import CurrentModel, current_version, promotions, read_gate
from netwarden.models.signing import ensure_key
from netwarden.models.training import TrainConfig, train
from netwarden.service import retrain_command
from netwarden.storage.history import read_windows

START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday: day 0
DAYS = 7  # scored days after the training day
SEED = 1  # the generator's port scan lands on day 2, from checkout/orders
RATE = 0.05
SHIFTED = ("shop", "catalog")
SHIFT_DAY = 3  # Thursday
FACTOR = 4
SCHEDULE = "0 0 * * 4,0"  # Thursdays and Sundays 00:00: the starts of days 3 and 6
LEARN_DAY = 6  # the run at its start learns the change
RETRAIN_DAYS = 4  # retrain.days: the last four days of history, the newest held out

pytestmark = pytest.mark.slow


def _day(n: int) -> datetime:
    return START + timedelta(days=n)


def _touches(flow: dict[str, Any], namespace: str, workload: str) -> bool:
    ends = [flow.get("source") or {}, flow.get("destination") or {}]
    return any(
        e.get("namespace") == namespace
        and any(w.get("name") == workload for w in e.get("workloads") or [])
        for e in ends
    )


def _split_days(flows: Path, out: Path) -> dict[int, Path]:
    """One flow file per day; from SHIFT_DAY on, shop/catalog's flows ``FACTOR`` times."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {d: out / f"day{d}.jsonl" for d in range(DAYS + 1)}
    files = {d: p.open("wb") for d, p in paths.items()}
    shift = _day(SHIFT_DAY).isoformat().replace("+00:00", "")
    needle = f'"name":"{SHIFTED[1]}"'.encode()
    try:
        with flows.open("rb") as src:
            for line in src:
                stamp = line[line.index(b'"time":"') + 8 :][:19].decode()
                day = (datetime.fromisoformat(stamp + "+00:00") - START).days
                if not 0 <= day <= DAYS:
                    continue
                repeat = 1
                if stamp >= shift[:19] and needle in line:
                    if _touches(orjson.loads(line)["flow"], *SHIFTED):
                        repeat = FACTOR
                files[day].write(line * repeat)
    finally:
        for f in files.values():
            f.close()
    return paths


class SimClock:
    """The simulated time (Unix seconds) the schedule reads."""

    def __init__(self, at: datetime) -> None:
        self.t = at.timestamp()

    def __call__(self) -> float:
        return self.t


def _advance(schedule: RetrainSchedule, clock: SimClock, until: datetime) -> list[str]:
    """Move the simulated time to ``until`` as the schedule's worker waits for it: at each cron
    time on the way, one run (the child process ``serve`` starts); returns their results."""
    results = []
    while (due := schedule.next_run(clock.t)) <= until.timestamp():
        clock.t = due
        schedule.check_overdue()
        results.append(schedule.run_once())
    clock.t = until.timestamp()
    return results


def _review(url: str, day: int, attack: Any) -> tuple[int, int]:
    """People, at the end of ``day``: the scan's anomalies confirmed, the rest expected."""
    store = AnomalyStore(url)
    confirmed = expected = 0
    try:
        for a in store.list(since=_day(day), until=_day(day + 1), limit=100_000):
            scan = (
                a.identity == attack.identity
                and a.first_window_start < attack.end
                and a.last_window_end > attack.start
            )
            store.set_verdict(a.id, "confirmed" if scan else "expected", actor="alice")
            confirmed += scan
            expected += not scan
    finally:
        store.close()
    return confirmed, expected


def _model_alerts(history: Path, day: int, identity: str) -> int:
    """The model's alerts on ``identity`` that day: runs of windows it put past its
    threshold (the detector alerts on such a run once, as the gate counts them)."""
    frame = read_windows(history, start=_day(day), end=_day(day + 1), identities=[identity])
    if not len(frame):
        return 0
    rows = frame[["identity", "window_start", "window_end"]].to_dict("records")
    flagged = frame["model_anomalous"].fillna(False).to_numpy(dtype=float) * 2.0
    return count_alerts(rows, flagged)[0]


def _windows(path: Path) -> list[ClosedWindow]:
    windows: list[ClosedWindow] = []
    build_windows([path], windows.extend, builder=WindowBuilder())
    return windows


def _drift(model: CurrentModel, config: ServiceConfig, path: Path, identity: str) -> DriftReport:
    """``identity``'s drift after the day in ``path``, counted as the service counts it (the
    configured DriftMonitor over the judged windows, in batches like the pipeline's)."""
    loaded = model.loaded
    assert loaded is not None
    memory = EdgeMemory()
    memory.merge(loaded.bundle.edges)
    judge = WindowJudge(Scorer(loaded.bundle), memory)
    monitor = DriftMonitor(model, config.drift_config)
    windows = sorted(_windows(path), key=lambda w: w.start)
    for i in range(0, len(windows), 2000):
        batch = windows[i : i + 2000]
        monitor.observe(batch, judge.judge(batch))
    report = monitor.report(identity)
    assert report is not None and report.scored_by == "own"
    return report


@pytest.fixture(scope="module")
def week(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("week")
    generated = generate(
        root / "gen", hours=24 * (DAYS + 1), seed=SEED, start=START, rate=RATE,
        attacks=["port_scan"],
    )  # fmt: skip
    (attack,) = generated.labels
    days = _split_days(generated.flows_path, root / "days")
    generated.flows_path.unlink()
    yield {"root": root, "days": days, "attack": attack}


def _in_service(model: CurrentModel) -> Any:
    """The version in service after a reload, as the pipeline picks it up between batches."""
    model.refresh()
    assert model.error is None and model.loaded is not None, model.error
    return model.loaded


def test_a_week_of_retraining(week: dict[str, Any]) -> None:
    root, days, attack = week["root"], week["days"], week["attack"]
    attack_day = (attack.start - START).days
    assert attack.identity == "checkout/orders" and 1 <= attack_day < SHIFT_DAY
    console = Console(stderr=True, width=200)
    # the embedded default's folders, and the retraining settings the schedule passes on
    config = ServiceConfig(data_dir=root / "data", retrain={"days": RETRAIN_DAYS})
    model_dir, history = config.model_dir, config.history_dir
    key_file = config.model_signing_key_file
    config.data_dir.mkdir(parents=True)
    key = ensure_key(key_file)
    db = config.data_dir / "netwarden.db"
    assert config.store_url == f"sqlite:///{db}"
    train_command(
        [str(days[0])], model_dir, window_config=WindowConfig(), expected_rate=2e-4,
        min_windows=60, seed=0, console=console, signing_key=key_file,
    )  # fmt: skip
    first = current_version(model_dir)
    edges = config.data_dir / "edges.json"

    def score_day(day: int) -> None:
        backfill([str(days[day])], model_dir, history, db=db, edges=edges,
                 signing_key=key_file, console=console)  # fmt: skip

    score_day(0)  # the training day is history too, as the service kept it
    registry = CollectorRegistry()
    clock = SimClock(_day(1))
    logged: list[str] = []
    schedule = RetrainSchedule(
        SCHEDULE, retrain_command(config), registry, log=logged.append, clock=clock
    )
    model = CurrentModel(model_dir, windows=WindowConfig(), key=key)
    shifted = "/".join(SHIFTED)
    runs: dict[int, list[str]] = {}
    alerts: dict[int, int] = {}
    versions: dict[int, str] = {}
    held_out: list[dict[str, Any]] = []  # the windows of the day before LEARN_DAY ...
    before_scores = np.empty(0)  # ... scored by the model in service that day
    new_scores = np.empty(0)  # ... and by the one that learned the change
    drifted: DriftReport | None = None  # shop/catalog's drift on the change's first day
    for day in range(1, DAYS + 1):
        runs[day] = _advance(schedule, clock, _day(day))  # the runs due by the day's start
        versions[day] = _in_service(model).version
        if day == LEARN_DAY:
            learned, before = versions[day], versions[day - 1]
            assert runs[day] == ["promoted"] and learned != before, logged
            # rollback restores the previous model's scores exactly; promoting again, the new
            new_scores = score_rows(model.loaded.bundle, held_out)
            assert rollback(model_dir, actor="alice", key=key) == (learned, before)
            assert _in_service(model).version == before
            assert np.array_equal(score_rows(model.loaded.bundle, held_out), before_scores)
            assert not np.array_equal(before_scores, new_scores)
            promote(model_dir, learned, actor="alice", key=key)
            assert _in_service(model).version == learned
            assert np.array_equal(score_rows(model.loaded.bundle, held_out), new_scores)
            actions = [p["action"] for p in promotions(model_dir)[-3:]]
            assert actions == ["promote", "rollback", "promote"]
        score_day(day)
        alerts[day] = _model_alerts(history, day, shifted)
        confirmed, _ = _review(config.store_url, day, attack)
        if day == attack_day:
            assert confirmed >= 1  # the scan alerted and people confirmed it
        if day == LEARN_DAY - 1:
            held_out = read_windows(history, start=_day(day), end=_day(day + 1)).to_dict("records")
            before_scores = score_rows(model.loaded.bundle, held_out)
            # drift, as the service measures it: under the model in service, shop/catalog no
            # longer fits on the change's first day and fitted on the day before
            drifted = _drift(model, config, days[SHIFT_DAY], shifted)
            assert drifted.state == DRIFTED and drifted.score_psi is not None
            assert "score PSI" in drifted.reason and drifted.top
            assert _drift(model, config, days[SHIFT_DAY - 1], shifted).state != DRIFTED
    console.print(f"runs {runs}\nversions {versions}\nmodel alerts on {shifted}: {alerts}")
    # the scheduled runs happened, at the starts of days 3 and 6, and were counted
    assert [d for d, r in runs.items() if r] == [SHIFT_DAY, LEARN_DAY]
    value = registry.get_sample_value
    ran = sum(value("netwarden_retrain_runs_total", {"result": r}) for r in ("promoted", "kept"))
    assert ran == 2 and value("netwarden_retrain_runs_total", {"result": "failed"}) == 0
    assert value("netwarden_retrain_last_success_timestamp_seconds") == _day(6).timestamp()
    gate = read_gate(model_dir, versions[LEARN_DAY])
    assert gate is not None and gate["decision"] == "promote" and gate["promoted"] is True
    assert gate["candidate"]["false_alerts"] <= gate["current"]["false_alerts"]
    assert gate["confirmed"] == 1 and not gate["lost"]  # the confirmed scan stays caught
    # it learned the change: shop/catalog's windows of the held-out day past the threshold
    mine = np.array([r["identity"] == shifted for r in held_out])
    assert np.sum(new_scores[mine] > 1.0) < np.sum(before_scores[mine] > 1.0)
    # the model alerted on the change before the promotion (never before the change), and
    # stops after it
    assert sum(alerts[d] for d in range(SHIFT_DAY, LEARN_DAY)) > 0
    assert [alerts[d] for d in range(1, SHIFT_DAY)] == [0] * (SHIFT_DAY - 1)
    assert [alerts[d] for d in range(LEARN_DAY, DAYS + 1)] == [0] * (DAYS + 1 - LEARN_DAY)
    # drift under the model that learned the change: most of the shift is gone from the
    # score (its training reference still holds a day from before the change, so the state
    # may read drifted until a retraining on the new behaviour alone)
    after = _drift(model, config, days[DAYS], shifted)
    assert drifted is not None and drifted.score_psi is not None
    assert after.score_psi is not None and after.score_psi < drifted.score_psi / 4
    # a candidate trained on the scan's windows is refused by the gate
    everything = read_windows(history)
    scan = everything[
        (everything["identity"] == attack.identity)
        & (everything["window_start"] >= attack.start - timedelta(minutes=1))
        & (everything["window_start"] < attack.end)
    ].to_dict("records")
    assert scan
    validation = read_windows(history, start=_day(DAYS), end=_day(DAYS + 1)).to_dict("records")
    worse = train(scan * 20 + validation[:200], config=TrainConfig(n_estimators=40, min_windows=16))
    refused = evaluate(worse, model.loaded.bundle, validation, confirmed={"scan": scan})
    assert not refused.promoted, refused.reasons
    assert refused.lost == ["scan"], refused.reasons  # the scan it learned is no longer caught
    assert first not in (None, versions[LEARN_DAY])

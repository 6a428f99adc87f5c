"""Retraining from the window history: what is learned, the registry's switches, the schedule,
and a generated cluster whose change a promoted candidate stops alerting on."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from rich.console import Console

from netwarden.commands.lifecycle import backfill, labels_of, promote, retrain, rollback
from netwarden.commands.retraining import RetrainSchedule
from netwarden.detector.change_store import ChangeStore
from netwarden.detector.store import AnomalyStore
from netwarden.errors import UserError
from netwarden.ingest.features import feature_columns
from netwarden.models.artifact import list_versions, load_bundle, save_bundle
from netwarden.models.gate import score_rows
from netwarden.models.registry import (
    current_version,
    promotions,
    prune_versions,
    read_gate,
    rollback_target,
)
from netwarden.models.signing import ensure_key
from netwarden.models.training import TrainConfig, train
from netwarden.storage.history import (
    AnomalyLabel,
    Labels,
    read_windows,
    write_labels,
    write_rows,
)

T0 = datetime(2026, 3, 2, tzinfo=UTC)
FEATURES = feature_columns()


def _console() -> Console:
    return Console(stderr=True, width=200)


def _rows(hours: float, *, start: datetime, seed: int, scale: float = 1.0) -> list[dict]:
    """History rows of two identities, a window a minute; ``scale`` multiplies the volume."""
    rng = np.random.default_rng(seed)
    rows = []
    for m in range(int(hours * 60)):
        for identity in ("shop/web", "shop/cart"):
            ws = start + timedelta(minutes=m)
            row = dict.fromkeys(FEATURES, 0.0)
            row.update(
                identity=identity,
                namespace="shop",
                workload=identity.split("/")[1],
                window_start=ws,
                window_end=ws + timedelta(minutes=1),
                egress_flows=float(rng.poisson(40 * scale)),
                egress_new_conns=float(rng.poisson(10 * scale)),
                egress_distinct_peers=float(rng.integers(2, 4)),
                egress_distinct_dst_ports=float(rng.integers(1, 3)),
                egress_bytes_sent=float(rng.normal(4e4, 4e3) * scale),
                ingress_flows=float(rng.poisson(30 * scale)),
                ingress_bytes_received=float(rng.normal(3e4, 3e3) * scale),
                score=0.5,
                threshold=1.0,
                anomalous=False,
                model_anomalous=False,
                model="identity:" + identity,
                model_version="v0",
                incident="",
                new_edges=0,
            )
            rows.append(row)
    return rows


@pytest.fixture
def setup(tmp_path: Path) -> dict:
    """A first model on 6 h of steady traffic; a history of 12 h in which the volume triples
    after 4 h (a surge that stays: a change people accepted)."""
    key_file = tmp_path / "model-signing.key"
    key = ensure_key(key_file)
    first = train(
        _rows(6, start=T0 - timedelta(hours=6), seed=1),
        config=TrainConfig(n_estimators=40, min_windows=16),
    )
    model_dir = tmp_path / "models"
    save_bundle(first, model_dir, key=key)
    history = tmp_path / "history"
    before = _rows(4, start=T0, seed=2)
    after = _rows(8, start=T0 + timedelta(hours=4), seed=3, scale=3.0)
    write_rows(history / "windows", before + after)
    return {
        "key": key,
        "key_file": key_file,
        "model_dir": model_dir,
        "history": history,
        "first": current_version(model_dir),
        "after": after,
    }


def test_retrain_learns_the_change_and_the_gate_promotes_it(setup: dict) -> None:
    result = retrain(
        setup["model_dir"],
        history=setup["history"],
        days=0.5,
        validation_days=2 / 24,
        signing_key=setup["key_file"],
        min_windows=16,
        console=_console(),
    )
    assert result.promoted and result.report.promoted
    assert current_version(setup["model_dir"]) == result.version != setup["first"]
    report = result.report
    assert report.current.false_alerts > report.candidate.false_alerts
    gate = read_gate(setup["model_dir"], result.version)
    assert gate["decision"] == "promote" and gate["promoted"] is True
    assert gate["training"]["rows"] == result.trained_rows == 10 * 60 * 2
    # the surge scored by both versions: the first alerts on it, the promoted one does not
    held_out = setup["after"][-120 * 2 :]
    first = load_bundle(setup["model_dir"], key=setup["key"], version=setup["first"])
    new = load_bundle(setup["model_dir"], key=setup["key"])
    assert np.mean(score_rows(first, held_out) > 1.0) > 0.5
    assert np.mean(score_rows(new, held_out) > 1.0) < 0.05
    entry = promotions(setup["model_dir"])[-1]
    assert entry["action"] == "promote" and entry["previous"] == setup["first"]


def test_confirmed_and_unreviewed_windows_stay_out_expected_ones_go_in(setup: dict) -> None:
    history = setup["history"]
    # three flagged runs in the training part: one confirmed (and its incident partner),
    # one expected, one nobody looked at
    extra = []
    for minute, identity, incident in (
        (60, "shop/web", "inc-1"),
        (90, "shop/cart", ""),
        (120, "shop/web", ""),
    ):
        for k in range(5):
            ws = T0 + timedelta(minutes=minute + k, seconds=30)  # no clash with the rows
            row = _rows(1 / 60, start=ws, seed=minute + k)[0]
            row.update(identity=identity, anomalous=True, incident=incident)
            extra.append(row)
    write_rows(history / "windows", extra)
    end = T0 + timedelta(minutes=65)
    write_labels(
        history,
        Labels(
            anomalies=[
                AnomalyLabel(
                    1, "shop/web", T0 + timedelta(minutes=60), end, "resolved", "confirmed", "inc-1"
                ),
                AnomalyLabel(2, "shop/cart", T0 + timedelta(minutes=58), end, "open", "", "inc-1"),
                AnomalyLabel(
                    3,
                    "shop/cart",
                    T0 + timedelta(minutes=90),
                    T0 + timedelta(minutes=95),
                    "suppressed",
                    "expected",
                ),
            ]
        ),
    )
    result = retrain(
        setup["model_dir"],
        history=history,
        days=0.5,
        validation_days=2 / 24,
        signing_key=setup["key_file"],
        min_windows=16,
        console=_console(),
    )
    # the incident's minutes [58, 65) of both its identities: shop/web's 7 ordinary windows
    # and 5 flagged ones, shop/cart's 7
    assert result.excluded["confirmed_or_rejected"] == 7 + 5 + 7
    assert result.excluded["flagged_unreviewed"] == 5
    assert result.excluded["expected_included"] == 5
    assert result.report.confirmed == 1


def test_retrain_refuses_bad_input(setup: dict, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no window history"):
        retrain(setup["model_dir"], history=tmp_path / "none", console=_console())
    with pytest.raises(UserError, match="validation"):
        retrain(
            setup["model_dir"],
            history=setup["history"],
            days=1,
            validation_days=2,
            console=_console(),
        )


def test_rollback_restores_the_previous_scores_exactly(setup: dict) -> None:
    rows = setup["after"][:200]
    key = setup["key"]
    before = score_rows(load_bundle(setup["model_dir"], key=key), rows)
    result = retrain(
        setup["model_dir"],
        history=setup["history"],
        days=0.5,
        validation_days=2 / 24,
        signing_key=setup["key_file"],
        min_windows=16,
        console=_console(),
    )
    assert result.promoted
    changed = score_rows(load_bundle(setup["model_dir"], key=key), rows)
    assert not np.array_equal(before, changed)
    previous, now = rollback(setup["model_dir"], actor="alice", key=key)
    assert (previous, now) == (result.version, setup["first"])
    after = score_rows(load_bundle(setup["model_dir"], key=key), rows)
    assert np.array_equal(before, after)
    assert promotions(setup["model_dir"])[-1]["action"] == "rollback"
    # promote by hand goes forward again; a second rollback goes back again
    promote(setup["model_dir"], result.version, actor="alice", key=key)
    assert rollback_target(setup["model_dir"]) == setup["first"]
    with pytest.raises(UserError, match="no version"):
        promote(setup["model_dir"], "v-nope", actor="alice", key=key)


def _candidate(setup: dict, seed: int) -> Path:
    """A version saved beside the current one (as retraining saves a candidate)."""
    bundle = train(
        _rows(2, start=T0, seed=10 + seed), config=TrainConfig(n_estimators=10, min_windows=16)
    )
    return save_bundle(bundle, setup["model_dir"], key=setup["key"], current=False)


def test_a_tampered_version_is_not_made_current(setup: dict) -> None:
    folder = _candidate(setup, 0)
    assert current_version(setup["model_dir"]) == setup["first"]
    manifest = folder / "manifest.json"
    data = json.loads(manifest.read_text())
    data["models"][0]["forest_threshold"] *= 2
    manifest.write_text(json.dumps(data))
    with pytest.raises(UserError, match="cannot be made current"):
        promote(setup["model_dir"], folder.name, actor="eve", key=setup["key"])
    assert current_version(setup["model_dir"]) == setup["first"]


def test_prune_keeps_current_and_its_rollback_target(setup: dict) -> None:
    import time

    names = []
    for seed in range(3):
        time.sleep(1.1)  # version names are stamped to the second
        names.append(_candidate(setup, seed).name)
    promote(setup["model_dir"], names[0], actor="alice", key=setup["key"])
    assert len(list_versions(setup["model_dir"])) == 4
    deleted = prune_versions(setup["model_dir"], keep=1)
    kept = {v.version for v in list_versions(setup["model_dir"])}
    # the newest, the current one and what a rollback returns to
    assert kept == {names[2], names[0], setup["first"]}
    assert deleted == [names[1]]


def test_labels_from_the_store(tmp_path: Path) -> None:
    from netwarden.detector.results import ScoredWindow

    url = f"sqlite:///{tmp_path / 's.db'}"
    store, changes = AnomalyStore(url), ChangeStore(url)
    for i, identity in enumerate(("a/x", "a/y", "a/z")):
        ws = T0 + timedelta(minutes=10 * i)
        store.record(
            [
                ScoredWindow(
                    identity,
                    "a",
                    identity[2:],
                    ws,
                    ws + timedelta(minutes=1),
                    score=3.0,
                    threshold=1.0,
                    anomalous=True,
                    model="global",
                    fallback=True,
                )
            ]
        )
    store.set_verdict(1, "confirmed", actor="alice", note="a real scan")
    store.suppress(2, actor="bob", until=datetime.now(UTC) + timedelta(days=1), reason="load test")
    store.suppress(3, actor="bob", until=datetime.now(UTC) + timedelta(days=1), reason="looked odd")
    store.set_verdict(3, "confirmed", actor="carol")
    with pytest.raises(ValueError, match="verdict must be"):
        store.set_verdict(1, "maybe", actor="alice")
    labels = labels_of(store, changes)
    verdicts = {a.identity: (a.verdict, a.note) for a in labels.anomalies}
    assert verdicts == {
        "a/x": ("confirmed", "a real scan"),
        "a/y": ("expected", "load test"),
        "a/z": ("confirmed", ""),
    }
    assert [e.action for e in store.events(1)] == ["open", "verdict"]
    store.close()
    changes.close()


def test_schedule_runs_retrain_and_counts(setup: dict, tmp_path: Path) -> None:
    registry = CollectorRegistry()
    logged: list[str] = []
    alerts: list[tuple[bool, str]] = []
    now = [datetime(2026, 3, 3, 2, 59, 30, tzinfo=UTC).timestamp()]
    args = [
        "retrain",
        "--model-dir",
        str(setup["model_dir"]),
        "--history",
        str(setup["history"]),
        "--days",
        "0.5",
        "--validation-days",
        "0.0833",
        "--min-windows",
        "16",
        "--signing-key",
        str(setup["key_file"]),
    ]
    schedule = RetrainSchedule(
        "0 3 * * *",
        args,
        registry,
        log=logged.append,
        alert=lambda firing, text: alerts.append((firing, text)),
        clock=lambda: now[0],
    )
    assert schedule.next_run(now[0]) - now[0] == 30
    assert schedule.run_once() == "promoted"
    assert "scheduled retraining promoted" in logged[-1] and "gate: PROMOTE" in logged[-1]
    value = registry.get_sample_value
    assert value("netwarden_retrain_runs_total", {"result": "promoted"}) == 1
    assert value("netwarden_retrain_last_success_timestamp_seconds") == now[0]
    # a failing run fires the alert; the next success resolves it
    bad = RetrainSchedule(
        "0 3 * * *",
        [*args[:4], str(tmp_path / "none"), *args[5:]],
        CollectorRegistry(),
        log=logged.append,
        alert=lambda firing, text: alerts.append((firing, text)),
        clock=lambda: now[0],
    )
    assert bad.run_once() == "failed"
    assert alerts[-1][0] is True and "no window history" in alerts[-1][1]
    # two periods without a success: overdue
    now[0] += 2 * 86400 + 60
    assert schedule.check_overdue() and alerts[-1] == (True, alerts[-1][1])
    assert "no scheduled retraining succeeded" in alerts[-1][1]


def test_schedule_thread_fires_at_the_cron_time(setup: dict) -> None:
    """The worker thread, on a clock that runs a minute per look, starts a run at 03:00."""
    base = datetime(2026, 3, 3, 2, 58, tzinfo=UTC).timestamp()
    looks = [0]

    def clock() -> float:
        looks[0] += 1
        return base + 20 * looks[0]

    logged: list[str] = []
    registry = CollectorRegistry()
    schedule = RetrainSchedule(
        "0 3 * * *",
        ["models", "list", "--model-dir", str(setup["model_dir"])],  # a quick stand-in run
        registry,
        log=logged.append,
        clock=clock,
    )
    schedule.start()
    deadline = datetime.now(UTC) + timedelta(seconds=60)
    while not logged and datetime.now(UTC) < deadline:
        subprocess.run([sys.executable, "-c", "pass"], check=True)  # let time pass
    schedule.stop()
    assert logged and logged[0].startswith("scheduled retraining kept")
    assert registry.get_sample_value("netwarden_retrain_runs_total", {"result": "kept"}) >= 1


# -- a generated cluster ----------------------------------------------------------------------


@pytest.mark.slow
def test_generated_change_is_learned_and_an_attack_stays_caught(tmp_path: Path) -> None:
    """Generated traffic: a first model on 2 h; then 8 h in which a surge and a new service
    arrive and a port scan is confirmed by people. Retraining learns the change (the gate
    promotes it and the model alerts on it stop) and keeps the attack caught; a candidate
    trained on the attack windows is refused."""
    from netwarden.commands.detection import train as train_command
    from netwarden.generator import generate
    from netwarden.ingest.windows import WindowConfig
    from netwarden.models.gate import evaluate
    from netwarden.storage.history import read_labels

    console = _console()
    key_file = tmp_path / "key"
    key = ensure_key(key_file)
    start = datetime(2026, 1, 5, tzinfo=UTC)
    first = generate(tmp_path / "a", hours=2, seed=1, start=start, rate=0.2)
    week = generate(
        tmp_path / "b",
        hours=8,
        seed=2,
        start=start + timedelta(hours=2),
        rate=0.2,
        changes=["surge", "new_service"],
        attacks=["port_scan"],
    )
    model_dir, history, db = tmp_path / "models", tmp_path / "history", tmp_path / "s.db"
    train_command(
        [str(first.flows_path)],
        model_dir,
        window_config=WindowConfig(),
        expected_rate=2e-4,
        min_windows=60,
        seed=0,
        console=console,
        signing_key=key_file,
    )
    v1 = current_version(model_dir)
    backfill(
        [str(week.flows_path)],
        model_dir,
        history,
        db=db,
        edges=tmp_path / "e.json",
        signing_key=key_file,
        console=console,
    )
    # people: the scan's anomalies are confirmed, everything else flagged is expected
    attack = week.labels[0]
    url = f"sqlite:///{db}"
    store, changes = AnomalyStore(url), ChangeStore(url)
    for record in store.list(limit=10_000):
        hit = record.first_window_start < attack.end and record.last_window_end > attack.start
        verdict = "confirmed" if hit and record.identity == attack.identity else "expected"
        store.set_verdict(record.id, verdict, actor="alice")
    write_labels(history, labels_of(store, changes))
    store.close()
    changes.close()
    assert read_labels(history).confirmed()
    result = retrain(
        model_dir,
        history=history,
        days=10 / 24,
        validation_days=2 / 24,
        signing_key=key_file,
        min_windows=60,
        console=console,
    )
    assert result.promoted, result.report.reasons
    report = result.report
    assert report.candidate.false_alerts <= report.current.false_alerts
    assert not report.lost
    # the change's windows in the held-out hours: fewer model alerts by the promoted model
    frame = read_windows(history, start=start + timedelta(hours=8))
    rows = frame.to_dict("records")
    v2 = load_bundle(model_dir, key=key)
    old = load_bundle(model_dir, key=key, version=v1)
    assert np.sum(score_rows(v2, rows) > 1.5) <= np.sum(score_rows(old, rows) > 1.5)
    # a candidate trained on the attack windows (and little else) is refused
    labels = read_labels(history)
    confirmed = {}
    everything = read_windows(history)
    for a in labels.confirmed():
        m = everything[
            (everything["identity"] == a.identity)
            & (everything["window_start"] >= a.start)
            & (everything["window_start"] < a.end)
        ]
        confirmed[str(a.anomaly_id)] = m.to_dict("records")
    attack_rows = [r for rs in confirmed.values() for r in rs]
    assert attack_rows
    worse = train(
        attack_rows * 20 + rows[:100], config=TrainConfig(n_estimators=40, min_windows=16)
    )
    refused = evaluate(worse, v2, rows, confirmed=confirmed)
    assert not refused.promoted


# -- the service ------------------------------------------------------------------------------


def test_service_keeps_its_history_and_schedules_retraining(tmp_path: Path) -> None:
    """``serve`` writes the windows it judged (and the labels) into <data_dir>/history at stop,
    and with retrain.schedule set it exposes the retraining metrics."""
    import io
    import time

    from netwarden.config import ServiceConfig
    from netwarden.generator import generate
    from netwarden.service import build_service, retrain_command

    key = ensure_key(tmp_path / "signing.key")
    model_dir = tmp_path / "models"
    bundle = train(_rows(2, start=T0, seed=1), config=TrainConfig(n_estimators=10, min_windows=16))
    save_bundle(bundle, model_dir, key=key)
    flows = generate(tmp_path / "gen", hours=0.25, seed=3, start=T0, rate=0.2).flows_path
    config = ServiceConfig(
        data_dir=tmp_path / "data",
        source={"spec": str(flows), "from_start": True},
        models={"dir": model_dir, "bootstrap": False, "signing_key_file": tmp_path / "signing.key"},
        windows={"idle_close": 0.5},
        history={"retention_days": 3650},
        retrain={"schedule": "0 3 * * 0", "days": 7},
        remediation={"propose_containment": False},
    )
    registry = CollectorRegistry()
    service, _ = build_service(config, Console(file=io.StringIO()), registry=registry)
    assert service.retraining is not None
    assert retrain_command(config)[:3] == ["retrain", "--model-dir", str(model_dir)]
    service.start()
    try:
        deadline = time.monotonic() + 60
        while service.builder.stats.windows_closed < 20 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        service.shutdown()
        service.store.close()
    frame = read_windows(config.history_dir)
    assert len(frame) == service.windows_recorded > 0
    assert set(frame["model_version"]) == {current_version(model_dir)}
    assert (config.history_dir / "labels" / "anomalies.parquet").is_file()
    value = registry.get_sample_value
    assert value("netwarden_retrain_runs_total", {"result": "failed"}) == 0
    assert value("netwarden_retrain_last_success_timestamp_seconds") == 0


def test_failing_retraining_alerts_through_alertmanager(tmp_path: Path) -> None:
    """The schedule's alert goes through the outbox to a real Alertmanager, and resolves."""
    import httpx

    from netwarden.commands.retraining import ALERT_NAME
    from netwarden.detector.alerts.alerting import Alerter, AlertSettings
    from netwarden.service import Service
    from tests.servers import start_alertmanager

    with start_alertmanager(tmp_path / "am") as am:
        store = AnomalyStore(f"sqlite:///{tmp_path / 's.db'}")
        settings = AlertSettings(alertmanager_url=am.url, public_url="http://nw.example")
        alerter = Alerter(store, settings)

        class Holder:  # the service's members _retrain_alert reads
            pass

        holder = Holder()
        holder.alerter = alerter  # type: ignore[attr-defined]

        def active() -> list[dict]:
            alerts = httpx.get(f"{am.url}/api/v2/alerts", params={"active": "true"}).json()
            return [a for a in alerts if a["labels"].get("alertname") == ALERT_NAME]

        Service._retrain_alert(holder, True, "scheduled retraining failed: disk full")  # type: ignore[arg-type]
        assert alerter.deliver() == 1
        (firing,) = active()
        assert firing["annotations"]["summary"] == "scheduled retraining failed: disk full"
        assert firing["labels"]["severity"] == "warning"
        Service._retrain_alert(holder, False, "scheduled retraining succeeded again")  # type: ignore[arg-type]
        assert alerter.deliver() == 1
        assert active() == []
        alerter.close()
        store.close()

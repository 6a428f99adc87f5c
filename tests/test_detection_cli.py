"""`netwarden train` and `netwarden score` as other tools use them."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from netwarden.generator import generate

START = datetime(2026, 3, 2, tzinfo=UTC)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "netwarden", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("cli")
    train = generate(out / "train", hours=4, seed=8, start=START)
    proc = _run("train", "--flows", str(train.flows_path), "--model-dir", str(out / "models"))
    assert proc.returncode == 0, proc.stderr
    assert "trained" in proc.stderr and "now current" in proc.stderr
    return out / "models", out


@pytest.mark.slow
def test_score_writes_the_documented_lines(model, tmp_path) -> None:
    model_dir, out = model
    test = generate(
        out / "test",
        hours=1,
        seed=9,
        start=datetime(2026, 3, 2, 4, tzinfo=UTC),
        attacks=["port_scan"],
    )
    result = tmp_path / "scores.jsonl"
    db = tmp_path / "anomalies.db"
    proc = _run(
        "score",
        "--model-dir",
        str(model_dir),
        "--flows",
        str(test.flows_path),
        "--out",
        str(result),
        "--db",
        str(db),
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in result.read_text().splitlines()]
    assert lines
    for obj in lines:
        assert {
            "identity",
            "window_start",
            "window_end",
            "score",
            "threshold",
            "anomalous",
            "reasons",
        } <= set(obj)
        assert "/" in obj["identity"] and obj["window_start"].endswith("Z")
        assert isinstance(obj["score"], float) and isinstance(obj["anomalous"], bool)
        # past the threshold: the model's verdict; anomalous: the judge's (a clear model
        # verdict or a novelty rule, whose strength raises the score)
        assert obj["model_anomalous"] or not obj["anomalous"] or obj["reasons"]
        assert (obj["model_anomalous"] or obj["anomalous"]) == (obj["score"] > obj["threshold"])
        for reason in obj["reasons"]:
            assert {"feature", "value", "baseline"} <= set(reason)
    (label,) = test.labels
    hits = [o for o in lines if o["anomalous"] and o["identity"] == label.identity]
    assert hits and hits[0]["reasons"] and hits[0]["summary"]
    assert f": {label.identity} -> " in proc.stderr  # the incident names the attacker
    assert "    e.g. to " in proc.stderr  # ... and shows example flows behind the anomaly
    with sqlite3.connect(db) as conn:
        (n,) = conn.execute("select count(*) from scored_windows").fetchone()
        (a,) = conn.execute("select count(*) from anomalies").fetchone()
    assert n == len(lines) and a >= 1


@pytest.mark.slow
def test_unseen_identity_is_scored_by_a_fallback(model, tmp_path) -> None:
    import orjson

    from tests.flowfactory import flow, pod

    model_dir, _ = model
    newcomer = pod("shop", "brand-new-app", 45678, "10.244.9.9")
    db = pod("db", "postgres", 39869, "10.244.3.24", replica="")
    lines = [flow(newcomer, db, seconds=s, sport=40000 + s, dport=5432) for s in range(0, 180, 5)]
    path = tmp_path / "new.json"
    path.write_bytes(b"\n".join(orjson.dumps(x) for x in lines))
    result = tmp_path / "s.jsonl"
    proc = _run("score", "--model-dir", str(model_dir), "--flows", str(path), "--out", str(result))
    assert proc.returncode == 0, proc.stderr
    scored = [json.loads(x) for x in result.read_text().splitlines()]
    mine = [o for o in scored if o["identity"] == "shop/brand-new-app"]
    assert mine and all(o["fallback"] and o["model"] in ("namespace:shop", "global") for o in mine)


def test_too_little_training_data(tmp_path, hubble_samples) -> None:
    path = next(p for p in hubble_samples if "400-tcp" in p.name)
    proc = _run("train", "--flows", str(path), "--model-dir", str(tmp_path / "m"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "not enough training data" in proc.stderr and "need at least 120" in proc.stderr


@pytest.mark.slow
def test_missing_and_tampered_models(model, tmp_path, hubble_samples) -> None:
    flows = str(hubble_samples[0])
    proc = _run(
        "score",
        "--model-dir",
        str(tmp_path / "none"),
        "--flows",
        flows,
        "--out",
        str(tmp_path / "s.jsonl"),
    )
    assert proc.returncode == 2 and "no such model folder" in proc.stderr
    model_dir, _ = model
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(model_dir, copy)
    version = (copy / "CURRENT").read_text().strip()
    victim = sorted((copy / version / "models").glob("*.skops"))[-1]
    victim.write_bytes(victim.read_bytes()[:-10])
    proc = _run(
        "score", "--model-dir", str(copy), "--flows", flows, "--out", str(tmp_path / "s.jsonl")
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "changed since it was written" in proc.stderr and victim.name in proc.stderr


def test_unwritable_model_dir_fails_before_reading_flows(tmp_path, hubble_samples) -> None:
    """Checked first: not after minutes of reading and training (here the input is too small
    to train on, so a late check would report that instead)."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    path = next(p for p in hubble_samples if "400-tcp" in p.name)
    proc = _run("train", "--flows", str(path), "--model-dir", str(blocker / "models"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"--model-dir {blocker / 'models'}: cannot write" in proc.stderr, proc.stderr
    assert "lines:" not in proc.stderr and "not enough training data" not in proc.stderr


def test_train_creates_the_model_dir_and_leaves_no_probe(tmp_path, hubble_samples) -> None:
    path = next(p for p in hubble_samples if "400-tcp" in p.name)
    model_dir = tmp_path / "a" / "models"
    proc = _run("train", "--flows", str(path), "--model-dir", str(model_dir))
    assert "not enough training data" in proc.stderr  # it got past the check
    assert model_dir.is_dir() and list(model_dir.iterdir()) == []


def test_train_without_a_valid_flow(tmp_path) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(b"not json\n")
    proc = _run("train", "--flows", str(path), "--model-dir", str(tmp_path / "m"))
    assert proc.returncode == 2
    assert f"no valid flows in {path}: 1 lines, 1 skipped as bad" in proc.stderr


def test_time_spans_show_dates_when_they_cross_a_day() -> None:
    from netwarden.commands.common import time_span

    day = datetime(2026, 1, 5, tzinfo=UTC)
    assert time_span(day, day.replace(day=6)) == "2026-01-05 00:00 - 2026-01-06 00:00"
    assert time_span(day.replace(hour=10), day.replace(hour=10, minute=15)) == (
        "2026-01-05 10:00-10:15"
    )


def test_score_summary_prints_a_day_long_incident_with_its_dates() -> None:
    import io
    from datetime import timedelta

    from rich.console import Console

    from netwarden.commands.detection import _print_incidents
    from netwarden.detector.incidents import Incident
    from netwarden.detector.results import ScoredWindow

    start = datetime(2026, 1, 5, tzinfo=UTC)
    minute = timedelta(minutes=1)
    run = [
        ScoredWindow(
            identity="shop/cart",
            namespace="shop",
            workload="cart",
            window_start=start + i * minute,
            window_end=start + (i + 1) * minute,
            score=1.0,
            threshold=0.5,
            anomalous=True,
            model="identity:shop/cart",
            fallback=False,
            summary="cart sent [many] flows",
            incident="inc-1",
            role="attacker" if i < 24 * 60 - 1 else "victim",
        )
        for i in range(24 * 60)
    ]
    incident = Incident(
        "inc-1",
        "shop/cart",
        run[0].window_start.timestamp(),
        run[-1].window_start.timestamp(),
        victims={"db/redis"},
        peak_score=1.0,
    )
    buffer = io.StringIO()
    _print_incidents([incident], {"shop/cart": run}, Console(file=buffer, width=200, markup=False))
    text = buffer.getvalue()
    assert (
        "incident inc-1: shop/cart -> db/redis, 2026-01-05 00:00 - 2026-01-06 00:00, "
        "peak score 1.00" in text
    )
    assert "  cart sent [many] flows" in text


@pytest.mark.slow
def test_signed_models_from_the_command_line(tmp_path) -> None:
    """train --signing-key signs; score --signing-key verifies: the right key scores, an edited
    manifest, an unsigned version and a foreign key are refused with one line (exit 2)."""
    key = tmp_path / "model.key"
    key.write_text("a" * 64 + "\n")
    train = generate(tmp_path / "train", hours=4, seed=8, start=START)
    models = tmp_path / "models"
    proc = _run("train", "--flows", str(train.flows_path), "--model-dir", str(models),
                "--signing-key", str(key))  # fmt: skip
    assert proc.returncode == 0, proc.stderr

    def score(*extra: str) -> subprocess.CompletedProcess[str]:
        return _run("score", "--model-dir", str(models), "--flows", str(train.flows_path),
                    "--out", str(tmp_path / "s.jsonl"), *extra)  # fmt: skip

    assert score("--signing-key", str(key)).returncode == 0
    other = tmp_path / "other.key"
    other.write_text("b" * 64)
    refused = score("--signing-key", str(other))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    missing = score("--signing-key", str(tmp_path / "nope.key"))
    assert missing.returncode == 2 and "--signing-key" in missing.stderr
    # an edited threshold in a signed manifest is refused
    manifest = models / (models / "CURRENT").read_text().strip() / "manifest.json"
    data = json.loads(manifest.read_text())
    data["models"][0]["forest_threshold"] = 1e9
    manifest.write_text(json.dumps(data))
    edited = score("--signing-key", str(key))
    assert edited.returncode == 2 and "Traceback" not in edited.stderr
    # an unsigned version is refused when a key is given
    unsigned = tmp_path / "unsigned"
    assert _run("train", "--flows", str(train.flows_path), "--model-dir",
                str(unsigned)).returncode == 0  # fmt: skip
    proc = _run("score", "--model-dir", str(unsigned), "--flows", str(train.flows_path),
                "--out", str(tmp_path / "u.jsonl"), "--signing-key", str(key))  # fmt: skip
    assert proc.returncode == 2 and "unsigned" in proc.stderr

"""The promotion gate: no more false alerts, no confirmed anomaly lost, decision recorded."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from netwarden.models.gate import GateConfig, evaluate, score_rows
from netwarden.models.spec import MODEL_COLUMNS, TIME_COLUMNS
from netwarden.models.training import ModelBundle, TrainConfig, train

T0 = datetime(2026, 3, 2, tzinfo=UTC)
FEATURES = [c for c in MODEL_COLUMNS if c not in TIME_COLUMNS]
IDENTITIES = ("shop/web", "shop/cart")


def _rows(n: int, *, seed: int, attack: bool = False, offset: int = 0) -> list[dict]:
    """Windows of two identities: steady service traffic, or a port scan (attack)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        identity = IDENTITIES[i % 2]
        start = T0 + timedelta(minutes=offset + i // 2)
        row = dict.fromkeys(FEATURES, 0.0)
        row.update(
            identity=identity,
            namespace="shop",
            window_start=start,
            window_end=start + timedelta(minutes=1),
            egress_flows=float(rng.poisson(40)),
            egress_new_conns=float(rng.poisson(10)),
            egress_distinct_peers=float(rng.integers(2, 4)),
            egress_distinct_dst_ports=float(rng.integers(1, 3)),
            egress_bytes_sent=float(rng.normal(4e4, 4e3)),
            ingress_flows=float(rng.poisson(30)),
            ingress_bytes_received=float(rng.normal(3e4, 3e3)),
        )
        if attack:
            row.update(
                egress_flows=float(rng.poisson(900)),
                egress_distinct_dst_ports=float(rng.integers(300, 600)),
                egress_distinct_peers=float(rng.integers(20, 40)),
                egress_unanswered_syns=float(rng.poisson(500)),
                egress_tcp_resets=float(rng.poisson(200)),
            )
        rows.append(row)
    return rows


def _train(rows: list[dict], seed: int = 0) -> ModelBundle:
    return train(rows, config=TrainConfig(n_estimators=40, min_windows=16, seed=seed))


@pytest.fixture(scope="module")
def world() -> dict:
    normal = _rows(800, seed=1)
    validation = _rows(480, seed=2, offset=600)
    attack = _rows(20, seed=3, attack=True, offset=900)
    return {
        "current": _train(normal),
        "validation": validation,
        "confirmed": {"17": attack},
        "normal": normal,
        "attack": attack,
    }


def test_scores_are_in_threshold_units(world: dict) -> None:
    scores = score_rows(world["current"], world["validation"])
    assert scores.shape == (480,)
    assert np.mean(scores > 1.0) < 0.05  # normal windows: below the threshold
    assert np.all(score_rows(world["current"], world["attack"]) > 1.0)


def test_a_comparable_candidate_is_promoted(world: dict) -> None:
    candidate = _train(_rows(800, seed=4), seed=1)
    report = evaluate(
        candidate,
        world["current"],
        world["validation"],
        confirmed=world["confirmed"],
        candidate_version="v2",
        current_version="v1",
    )
    assert report.promoted, report.reasons
    assert report.identity_days == 2
    assert report.candidate.confirmed_caught == ("17",) == report.current.confirmed_caught
    assert not report.lost
    record = json.loads(json.dumps(report.to_json()))
    assert record["decision"] == "promote"
    assert record["current"]["version"] == "v1" and record["candidate"]["version"] == "v2"
    assert record["tolerance"] == {"max_ratio": 1.1, "tolerance": 0.05}


def test_a_candidate_trained_on_attack_windows_is_refused(world: dict) -> None:
    worse = _train(world["attack"] * 3 + world["normal"][:200], seed=2)
    report = evaluate(
        worse,
        world["current"],
        world["validation"],
        confirmed=world["confirmed"],
    )
    assert not report.promoted
    assert report.lost == ["17"]
    assert any("loses 1 confirmed anomaly" in r for r in report.reasons)
    assert "REFUSE" in report.lines()[0]


def test_more_false_alerts_are_refused_within_the_tolerance(world: dict) -> None:
    # a candidate trained on a fifth of today's volume: today's ordinary windows look like
    # floods to it, so its false alerts per identity-day exceed the current model's
    quiet = [dict(r) for r in world["normal"]]
    for row in quiet:
        for name in (
            "egress_flows",
            "egress_bytes_sent",
            "ingress_flows",
            "ingress_bytes_received",
        ):
            row[name] /= 5
    narrow = _train(quiet)
    strict = evaluate(narrow, world["current"], world["validation"])
    cur, cand = strict.current, strict.candidate
    assert cand.per_identity_day > cur.per_identity_day * 1.1 + 0.05
    assert not strict.promoted and any("more false alerts" in r for r in strict.reasons)
    lenient = evaluate(
        narrow,
        world["current"],
        world["validation"],
        config=GateConfig(max_ratio=1.0, tolerance=cand.per_identity_day + 1),
    )
    assert lenient.promoted


def test_without_a_current_model_the_candidate_is_promoted(world: dict) -> None:
    report = evaluate(world["current"], None, world["validation"])
    assert report.promoted and report.current is None
    assert "no current model" in report.reasons[0]
    empty = evaluate(world["current"], world["current"], [])
    assert not empty.promoted


def test_expected_windows_count_as_false_alerts(world: dict) -> None:
    # windows people called expected that the current model alerts on: a candidate that
    # learned them raises fewer
    surge = _rows(60, seed=9, offset=2000)
    for row in surge:
        row["egress_flows"] *= 8
        row["egress_bytes_sent"] *= 8
    learned = _train(world["normal"] + surge * 4, seed=3)
    report = evaluate(learned, world["current"], world["validation"], expected=surge)
    assert report.windows == len(world["validation"]) + len(surge)
    assert report.current.false_alerts > report.candidate.false_alerts
    assert report.promoted


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="max_ratio"):
        GateConfig(max_ratio=0.5)

"""Drift: training references, PSI, the live monitor, its alert, metrics and API.

The live scenario: three hours of generated traffic; the even minutes train the models, the odd
minutes are the live traffic (the same population, independently sampled windows). In a copy
of the live minutes one workload (shop/catalog) sends and receives three times as much; one
workload (shop/mailer) is left out of training, so it is a newcomer scored by its namespace's
model.
"""

from __future__ import annotations

import json
import math
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from netwarden.detector.alerts.alerting import Alerter, AlertSettings
from netwarden.detector.alerts.drift import DRIFT_ALERTNAME
from netwarden.detector.drift import (
    DRIFTED,
    FALLBACK,
    FITS,
    SHIFTING,
    UNAVAILABLE,
    DriftConfig,
    DriftMonitor,
)
from netwarden.detector.judge import WindowJudge
from netwarden.detector.scorer import Scorer
from netwarden.detector.store import AnomalyStore
from netwarden.generator import generate
from netwarden.ingest.features import feature_columns
from netwarden.ingest.pipeline import build_windows
from netwarden.ingest.windows import ClosedWindow, WindowBuilder, WindowConfig, windows_to_rows
from netwarden.models.artifact import ArtifactError, load_bundle, save_bundle
from netwarden.models.drift import (
    DRIFT_COLUMNS,
    DriftReference,
    DriftReferenceError,
    build_group,
    psi,
    psi_noise,
)
from netwarden.models.edges import EdgeMemory
from netwarden.models.registry import CurrentModel
from netwarden.models.spec import MODEL_COLUMNS
from netwarden.models.training import TrainConfig, train
from tests.servers import Server, require, start_alertmanager
from tests.test_api import make_api

T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)
SHIFTED = "shop/catalog"
UNCHANGED = "checkout/cart"
NEWCOMER = "shop/mailer"
KEY = b"drift-test-signing-key-0123456789abcdef"
CONFIG = DriftConfig(min_windows=60)  # 90 live windows per identity in the scenario
DAY = 86400.0

# ------------------------------------------------------------------------------- PSI by hand


def test_psi_matches_a_hand_computation() -> None:
    # shares after half a window per bin: (50.5, 30.5, 20.5) and (20.5, 30.5, 50.5) of 101.5
    by_hand = 2 * (30 / 101.5) * math.log(50.5 / 20.5)
    assert psi(np.array([50, 30, 20]), np.array([20, 30, 50])) == pytest.approx(by_hand, rel=1e-12)
    assert by_hand == pytest.approx(0.53294, abs=1e-5)
    # large counts: the textbook value, 0.25 ln 2 + 0.25 ln 2 (the middle bin does not move)
    expected = np.array([250_000, 250_000, 500_000])
    actual = np.array([500_000, 250_000, 250_000])
    assert psi(expected, actual) == pytest.approx(0.5 * math.log(2), rel=1e-5)
    assert psi(expected, expected) == 0.0


def test_psi_rows_ignore_their_padding() -> None:
    expected = np.array([[50, 30, 20, 0], [10, 90, 0, 0]])
    actual = np.array([[20, 30, 50, 0], [90, 10, 0, 0]])
    rows = psi(expected, actual, np.array([3, 2]))
    assert rows[0] == pytest.approx(psi(np.array([50, 30, 20]), np.array([20, 30, 50])))
    assert rows[1] == pytest.approx(psi(np.array([10, 90]), np.array([90, 10])))


def test_psi_noise_bounds_same_population_samples() -> None:
    """The noise level is the 99.9th percentile of PSI between two samples of one population:
    chi-square(9) at 0.999 is 27.877, and sampled PSIs pass the level about one time in 1,000."""
    assert psi_noise(10, 100, 100) == pytest.approx(27.877 * (2 / 100), rel=0.01)
    rng = np.random.default_rng(7)
    shares = np.full(10, 0.1)
    for n in (120, 400):
        live = rng.multinomial(n, shares, size=4000)
        training = rng.multinomial(n, shares, size=4000)
        values = psi(training, live)
        assert np.mean(values > psi_noise(10, n, n)) < 0.004
    # with an own model's minimum of 120 windows on both sides, the plain 0.25 band alone
    # would call one same-population sample in 20 a significant shift
    assert np.mean(values > 0.25) < 0.001  # (n = 400 here)
    small = psi(rng.multinomial(120, shares, size=4000), rng.multinomial(120, shares, size=4000))
    assert np.mean(small > 0.25) > 0.05


def test_a_mostly_zero_feature_keeps_a_bin_of_its_own() -> None:
    rng = np.random.default_rng(1)
    raw = np.zeros((200, len(MODEL_COLUMNS)))
    drops = MODEL_COLUMNS.index("egress_drops")
    raw[170:, drops] = rng.integers(1, 20, 30)  # 85% zero
    flows = MODEL_COLUMNS.index("egress_flows")
    raw[:, flows] = rng.uniform(10, 1000, 200)
    scores = rng.uniform(0.2, 0.6, 200)
    scores[:2] = 1.5
    group = build_group(raw, scores, 1.0)
    h = group.features[DRIFT_COLUMNS.index("egress_drops")]
    assert h.edges[0] == 0.0 and h.counts[0] == 170 and h.counts.sum() == 200
    assert h.bins < 10  # tied deciles merged
    f = group.features[DRIFT_COLUMNS.index("egress_flows")]
    assert f.bins == 10 and all(abs(c - 20) <= 1 for c in f.counts)  # deciles: a tenth each
    assert group.features[DRIFT_COLUMNS.index("egress_icmp")].bins == 2  # always zero: 0, > 0
    assert group.above == 2 and group.above_share == 0.01
    # a live window with drops lands above the zero bin
    edges = group.padded_edges()
    assert (np.array([3.0]) > edges[DRIFT_COLUMNS.index("egress_drops")]).sum() >= 1


# ------------------------------------------------------------------------- the live scenario


def _minute_is_odd(w: ClosedWindow) -> bool:
    return int(w.start // 60) % 2 == 1


def _scale(source: Path, target: Path, namespace: str, workload: str, factor: int) -> None:
    """Copy a flow file, with every flow from or to the workload in odd minutes ``factor``
    times (the workload's traffic scaled, as a campaign or a new client would)."""
    needle = f'"name":"{workload}"'.encode()
    with source.open("rb") as src, target.open("wb") as out:
        for line in src:
            out.write(line)
            if needle not in line:
                continue
            flow = orjson.loads(line)["flow"]
            ends = [flow.get("source") or {}, flow.get("destination") or {}]
            if int(flow["time"][14:16]) % 2 == 1 and any(
                e.get("namespace") == namespace
                and any(w.get("name") == workload for w in e.get("workloads") or [])
                for e in ends
            ):
                out.write(line * (factor - 1))


def _windows(path: Path) -> list[ClosedWindow]:
    windows: list[ClosedWindow] = []
    build_windows([path], windows.extend, builder=WindowBuilder())
    return windows


@dataclass
class Scenario:
    model_dir: Path
    normal: list[ClosedWindow]  # the live (odd) minutes as they were
    shifted: list[ClosedWindow]  # the same minutes with shop/catalog's traffic tripled


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    out = tmp_path_factory.mktemp("drift")
    result = generate(out / "generated", hours=3, seed=5, start=T0, rate=0.5)
    _scale(result.flows_path, out / "shifted.jsonl", "shop", "catalog", 3)
    normal = _windows(result.flows_path)
    learn = [w for w in normal if not _minute_is_odd(w) and w.subject.id != NEWCOMER]
    bundle = train(
        windows_to_rows(learn),
        config=TrainConfig(n_estimators=30, min_windows=60, seed=3),
        windows=WindowConfig(),
    )
    bundle.edges = EdgeMemory.from_windows(learn)
    save_bundle(bundle, out / "models", key=KEY)
    shifted = [w for w in _windows(out / "shifted.jsonl") if _minute_is_odd(w)]
    return Scenario(out / "models", [w for w in normal if _minute_is_odd(w)], shifted)


class Live:
    """The live half as the service composes it: the current model, a judge, the monitor."""

    def __init__(self, model_dir: Path, config: DriftConfig = CONFIG, **kwargs: Any) -> None:
        self.model = CurrentModel(model_dir, windows=WindowConfig(), key=KEY)
        assert self.model.refresh(), self.model.error
        assert self.model.loaded is not None
        memory = EdgeMemory()
        memory.merge(self.model.loaded.bundle.edges)
        self.judge = WindowJudge(Scorer(self.model.loaded.bundle), memory)
        self.registry = CollectorRegistry()
        self.monitor = DriftMonitor(self.model, config, registry=self.registry, **kwargs)

    def feed(self, windows: list[ClosedWindow], *, later: float = 0.0) -> None:
        """Judge and count ``windows`` (moved ``later`` seconds on) in batches of 500."""
        moved = [replace(w, start=w.start + later, end=w.end + later) for w in windows]
        moved.sort(key=lambda w: w.start)
        for i in range(0, len(moved), 500):
            batch = moved[i : i + 500]
            self.monitor.observe(batch, self.judge.judge(batch))


@pytest.fixture(scope="module")
def am(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with start_alertmanager(tmp_path_factory.mktemp("alertmanager")) as server:
        yield server


def _active(server: Server) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{server.url}/api/v2/alerts",
        params={"filter": f'alertname="{DRIFT_ALERTNAME}"'},
        timeout=5,
    )
    response.raise_for_status()
    return response.json()


@pytest.mark.slow
def test_a_shifted_identity_drifts_alerts_and_resolves(scenario, am, tmp_path) -> None:
    live = Live(scenario.model_dir)
    live.feed(scenario.shifted)
    shifted = live.monitor.report(SHIFTED)
    assert shifted is not None and shifted.state == DRIFTED, shifted
    assert shifted.scored_by == "own" and shifted.windows == 90
    assert {"egress_flows", "egress_new_conns"} & {f.feature for f in shifted.top}
    assert shifted.above_share is not None and shifted.above_share >= 0.01
    unchanged = live.monitor.report(UNCHANGED)
    assert unchanged is not None and unchanged.state in (FITS, SHIFTING), unchanged

    store = AnomalyStore(f"sqlite:///{tmp_path / 'netwarden.db'}")
    settings = AlertSettings(alertmanager_url=am.url, public_url="http://nw.test")
    with store, Alerter(store, settings) as alerter:
        alerter.follow_drift(live.monitor)
        alerter.sync()
        assert alerter.deliver() >= 1
        firing = {a["labels"]["identity"]: a for a in _active(am)}
        assert SHIFTED in firing and UNCHANGED not in firing
        alert = firing[SHIFTED]
        assert alert["labels"]["severity"] == "warning"
        assert alert["labels"]["model"] == f"identity:{SHIFTED}"
        assert "egress_" in alert["annotations"]["description"]
        assert alert["generatorURL"] == "http://nw.test/api/v1/identities/shop/catalog/drift"
        alerter.sync()
        assert not [i for i in alerter.outbox.items() if i.status == "pending"]  # no resend yet

        # a day later the traffic is back to normal: the horizon forgets the shift
        live.feed(scenario.normal, later=DAY)
        again = live.monitor.report(SHIFTED)
        assert again is not None and again.state in (FITS, SHIFTING), again
        alerter.sync()
        alerter.deliver()
        assert SHIFTED not in {a["labels"]["identity"] for a in _active(am)}


@pytest.mark.slow
def test_unchanged_traffic_does_not_drift(scenario) -> None:
    live = Live(scenario.model_dir)
    live.feed(scenario.normal)
    reports = live.monitor.reports()
    own = [r for r in reports if r.scored_by == "own"]
    assert len(own) >= 8 and all(r.windows >= 60 for r in own)
    assert [r.identity for r in own if r.state == DRIFTED] == []
    assert live.monitor.drifted() == []
    # same population: every score PSI within what sampling explains
    assert all(r.score_psi is not None and r.score_psi < r.score_noise for r in own)


@pytest.mark.slow
def test_a_newcomer_is_reported_as_scored_by_a_fallback(scenario) -> None:
    live = Live(scenario.model_dir)
    live.feed(scenario.normal)
    r = live.monitor.report(NEWCOMER)
    assert r is not None
    assert (r.state, r.scored_by, r.model) == (FALLBACK, "namespace", "namespace:shop")
    assert r.own_model_windows == 60 and r.windows_seen > 0
    assert "model of its own comes with the next retraining" in r.reason
    assert NEWCOMER not in {d.identity for d in live.monitor.drifted()}  # never alerted


@pytest.mark.slow
def test_metrics_are_bounded(scenario) -> None:
    config = replace(CONFIG, metric_identities=2, top_features=3)
    live = Live(scenario.model_dir, config)
    live.feed(scenario.shifted)
    get = live.registry.get_sample_value
    assert get("netwarden_drift_identities", {"state": DRIFTED}) >= 1
    tracked = sum(
        get("netwarden_drift_identities", {"state": s}) for s in (FITS, SHIFTING, DRIFTED, FALLBACK)
    )
    assert tracked == len(live.monitor.reports())
    families = {m.name: m for m in live.registry.collect()}
    score_series = families["netwarden_drift_score_psi"].samples
    feature_series = families["netwarden_drift_psi"].samples
    assert len(score_series) == 2 and len(feature_series) <= 6
    assert {"namespace": "shop", "workload": "catalog"} in [s.labels for s in score_series]
    exposition = generate_latest(live.registry)
    checked = subprocess.run(
        [require("promtool", "prometheus"), "check", "metrics"],
        input=exposition,
        capture_output=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # memory per identity: a fixed ring of counts
    assert live.monitor.memory_bytes() / len(live.monitor.reports()) < 16_000


# ----------------------------------------------------------------------- the saved reference


def _small_model(model_dir: Path, *, drift: bool = True) -> Path:
    """A quick model on synthetic windows of two identities (one namespace)."""
    rng = np.random.default_rng(3)
    rows = []
    for identity in ("shop/cart", "shop/web"):
        for i in range(130):
            start = T0 + timedelta(minutes=i)
            row: dict[str, Any] = dict.fromkeys(feature_columns(), 0.0)
            row.update(egress_flows=float(rng.poisson(40)), ingress_flows=float(rng.poisson(9)))
            row.update(identity=identity, namespace="shop", window_start=start,
                       window_end=start + timedelta(minutes=1))  # fmt: skip
            rows.append(row)
    bundle = train(rows, config=TrainConfig(n_estimators=10, min_windows=120))
    if not drift:
        bundle.drift = None  # as netwarden wrote versions before drift references
    return save_bundle(bundle, model_dir, key=KEY)


def test_the_reference_is_saved_signed_and_checked(tmp_path) -> None:
    folder = _small_model(tmp_path / "models")
    bundle = load_bundle(tmp_path / "models", key=KEY)
    assert bundle.drift is not None
    assert set(bundle.drift.groups) == set(bundle.models) == {
        "identity:shop/cart", "identity:shop/web", "namespace:shop", "global"
    }  # fmt: skip
    cart = bundle.drift.groups["identity:shop/cart"]
    assert cart.windows == 130 and cart.features[DRIFT_COLUMNS.index("egress_flows")].bins > 5
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["drift"]["file"] == "drift.json"
    again = DriftReference.from_json(bundle.drift.to_json())  # the file round-trips
    assert again.to_json() == bundle.drift.to_json()
    # an edited reference is refused: its digest is in the signed manifest
    data = json.loads((folder / "drift.json").read_text())
    data["groups"]["global"]["above"] += 1
    (folder / "drift.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="drift.json: changed since it was written"):
        load_bundle(tmp_path / "models", key=KEY)
    # and a malformed one is named, field by field
    with pytest.raises(
        DriftReferenceError, match=r"drift.groups\['global'\].above: expected a count"
    ):
        DriftReference.from_json(
            {**data, "groups": {"global": {**data["groups"]["global"], "above": -1}}}
        )


def test_a_version_without_a_reference_says_drift_is_unavailable(tmp_path) -> None:
    folder = _small_model(tmp_path / "old", drift=False)
    assert not (folder / "drift.json").exists()
    assert "drift" not in json.loads((folder / "manifest.json").read_text())
    assert load_bundle(tmp_path / "old", key=KEY).drift is None
    model = CurrentModel(tmp_path / "old", windows=WindowConfig(), key=KEY)
    assert model.refresh(), model.error
    monitor = DriftMonitor(model)
    assert not monitor.available and monitor.reports() == []
    r = monitor.report("shop/cart")
    assert r is not None and r.state == UNAVAILABLE and "no drift reference" in r.reason
    api = make_api(tmp_path)
    try:
        api.service.drift = monitor  # type: ignore[attr-defined]
        for url in ("/api/v1/drift", "/api/v1/identities/shop/cart/drift"):
            response = api.get(url)
            assert response.status_code == 409
            assert "has no drift reference" in response.json()["detail"]
            assert "retrain" in response.json()["detail"]
    finally:
        api.service.store.close()


# ------------------------------------------------------------------------------------ API


@pytest.mark.slow
def test_drift_api(scenario, tmp_path) -> None:
    live = Live(scenario.model_dir)
    live.feed(scenario.shifted)
    api = make_api(tmp_path)
    try:
        assert api.get("/api/v1/drift").status_code == 404  # this service measures none
        api.service.drift = live.monitor  # type: ignore[attr-defined]
        one = api.get("/api/v1/identities/shop/catalog/drift")
        assert one.status_code == 200, one.text
        body = one.json()
        assert body["state"] == "drifted" and body["scored_by"] == "own"
        assert body["windows"] == 90 and body["training_windows"] == 90
        assert len(body["features"]) == len(DRIFT_COLUMNS)
        psis = [f["psi"] for f in body["features"]]
        assert psis == sorted(psis, reverse=True)
        assert body["above_threshold"]["live"] >= 0.01
        assert body["above_threshold"]["training"] < 0.01
        assert body["own_model"] is None
        newcomer = api.get("/api/v1/identities/shop/mailer/drift").json()
        assert newcomer["scored_by"] == "namespace" and newcomer["state"] == "fallback"
        assert newcomer["own_model"]["windows_needed"] == 60
        assert (
            "gets its own at the next retraining with 60 windows"
            in newcomer["own_model"]["message"]
        )
        listing = api.get("/api/v1/drift").json()
        assert listing["items"][0]["state"] == "drifted"
        assert listing["total"] == len(live.monitor.reports())
        assert listing["counts"]["drifted"] >= 1
        drifted = api.get("/api/v1/drift", params={"state": "drifted"}).json()["items"]
        assert SHIFTED in [i["identity"] for i in drifted]
        assert UNCHANGED not in [i["identity"] for i in drifted]
        missing = api.get("/api/v1/identities/shop/nothing/drift")
        assert missing.status_code == 404 and "unknown" in missing.json()["detail"]
        assert api.get("/api/v1/drift", params={"state": "bogus"}).status_code == 422
    finally:
        api.service.store.close()


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="min_windows must be between"):
        DriftConfig(min_windows=5)
    with pytest.raises(ValueError, match="psi_clear"):
        DriftConfig(psi_alert=0.2, psi_clear=0.3)

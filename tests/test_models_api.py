"""``/api/v1/models`` lifecycle (candidate report, promote, rollback: admin) and
``/api/v1/anomalies/{id}/verdict``, with the service's own switch and a real model folder."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from rich.console import Console

from netwarden.api.app import create_app
from netwarden.api.auth import Role, TokenTable, new_token
from netwarden.commands.lifecycle import retrain
from netwarden.detector.results import ScoredWindow
from netwarden.detector.store import AnomalyStore
from netwarden.ingest.sources import SourceStatus
from netwarden.ingest.windows import WindowConfig
from netwarden.models.artifact import ModelVersion, save_bundle
from netwarden.models.gate import score_rows
from netwarden.models.registry import CurrentModel
from netwarden.models.signing import ensure_key
from netwarden.models.training import TrainConfig, train
from netwarden.service import Service
from netwarden.storage.history import write_rows
from tests.test_retrain import _rows

with warnings.catch_warnings():  # Starlette now prefers httpx2; the project installs httpx
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

T0 = datetime(2026, 3, 2, tzinfo=UTC)


@dataclass
class LifecycleState:
    """The API's view of a service, with the service's own model switch and gate reader."""

    store: AnomalyStore
    model: CurrentModel
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    logged: list[str] = field(default_factory=list)

    switch_model = Service.switch_model
    model_gate = Service.model_gate

    def log(self, line: str) -> None:
        self.logged.append(line)

    def source_status(self) -> SourceStatus:
        return SourceStatus(kind="file", name="flows.json", up=True, flows=1, last_flow_at=T0)

    def model_versions(self) -> list[ModelVersion]:
        return self.model.versions()

    def current_model(self) -> ModelVersion | None:
        return self.model.current()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One model folder for the module (retraining is the slow part); the tests leave the
    first version current, as they found it."""
    tmp_path = tmp_path_factory.mktemp("models_api")
    key_file = tmp_path / "key"
    key = ensure_key(key_file)
    model_dir = tmp_path / "models"
    first = train(
        _rows(4, start=T0 - timedelta(hours=4), seed=1),
        config=TrainConfig(n_estimators=30, min_windows=16),
    )
    save_bundle(first, model_dir, key=key)
    history = tmp_path / "history"
    write_rows(
        history / "windows",
        _rows(2, start=T0, seed=2) + _rows(4, start=T0 + timedelta(hours=2), seed=3, scale=3),
    )
    result = retrain(
        model_dir,
        history=history,
        days=0.25,
        validation_days=1 / 24,
        signing_key=key_file,
        min_windows=16,
        promote=False,
        console=Console(stderr=True, width=200),
    )
    model = CurrentModel(model_dir, windows=WindowConfig(), key=key)
    model.refresh()
    store = AnomalyStore(f"sqlite:///{tmp_path / 'netwarden.db'}")
    state = LifecycleState(store=store, model=model)
    tokens, entries = {}, []
    for role in Role:
        tokens[role], entry = new_token(f"{role.name}-bot", role)
        entries.append(entry)
    client = TestClient(create_app(state, TokenTable(entries)), raise_server_exceptions=False)

    def call(method: str, url: str, role: Role = Role.viewer, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {tokens[role]}"}
        return client.request(method, "/api/v1" + url, headers=headers, **kwargs)

    yield {
        "call": call,
        "state": state,
        "candidate": result.version,
        "rows": _rows(1, start=T0, seed=5),
    }
    store.close()


def test_list_and_candidate_report(api: Any) -> None:
    call, state = api["call"], api["state"]
    first = state.model.loaded.version
    items = call("GET", "/models").json()["items"]
    assert [i["version"] for i in items] == [api["candidate"], first]
    assert [i["current"] for i in items] == [False, True]
    response = call("GET", "/models/candidate")
    assert response.status_code == 200
    body = response.json()
    assert body["version"] == api["candidate"]
    assert body["gate"]["decision"] == "promote" and body["gate"]["promoted"] is False
    assert body["gate"]["current"]["version"] == first
    assert "path" not in body
    assert call("GET", f"/models/{first}").json()["gate"] is None  # trained by hand
    assert call("GET", "/models/v-nope").status_code == 404


def test_promote_and_rollback_need_admin_and_switch_at_once(api: Any) -> None:
    call, state, candidate = api["call"], api["state"], api["candidate"]
    first = state.model.loaded.version
    before = score_rows(state.model.loaded.bundle, api["rows"])
    assert call("POST", f"/models/{candidate}/promote", Role.operator).status_code == 403
    response = call("POST", f"/models/{candidate}/promote", Role.admin, json={"reason": "ok"})
    assert response.status_code == 200, response.text
    assert response.json() == {"current": candidate, "previous": first}
    assert state.model.loaded.version == candidate  # loaded at once: the next batch uses it
    assert call("GET", "/models/current").json()["version"] == candidate
    assert call("GET", "/models/candidate").status_code == 404  # the newest is scoring
    promoted = score_rows(state.model.loaded.bundle, api["rows"])
    assert not np.array_equal(before, promoted)
    assert call("POST", "/models/rollback", Role.operator).status_code == 403
    response = call("POST", "/models/rollback", Role.admin)
    assert response.json() == {"current": first, "previous": candidate}
    assert np.array_equal(before, score_rows(state.model.loaded.bundle, api["rows"]))
    assert any("made current by admin-bot (rollback" in line for line in state.logged)
    assert call("POST", "/models/v-nope/promote", Role.admin).status_code == 404
    response = call("POST", "/models/rollback", Role.admin, json={"version": "v-nope"})
    assert response.status_code == 409
    assert state.model.loaded.version == first


def test_verdict_on_an_anomaly(api: Any) -> None:
    call, store = api["call"], api["state"].store
    start = T0
    store.record(
        [
            ScoredWindow(
                "shop/web",
                "shop",
                "web",
                start,
                start + timedelta(minutes=1),
                score=4.0,
                threshold=1.0,
                anomalous=True,
                model="global",
                fallback=True,
            )
        ]
    )
    url = "/anomalies/1/verdict"
    assert call("POST", url, Role.viewer, json={"verdict": "confirmed"}).status_code == 403
    assert call("POST", url, Role.operator, json={"verdict": "perhaps"}).status_code == 422
    response = call("POST", url, Role.operator, json={"verdict": "confirmed", "note": "scan"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["state"] == "open"  # a verdict leaves the state alone
    assert body["events"][-1]["action"] == "verdict" and body["events"][-1]["note"] == "scan"
    assert [v for _, v, _ in store.verdicts()] == ["confirmed"]
    assert (
        call(
            "POST", "/anomalies/99/verdict", Role.operator, json={"verdict": "expected"}
        ).status_code
        == 404
    )

"""The HTTP API in-process (TestClient) against a real anomaly store on an SQLite file: filters,
pagination, the lifecycle actions and their audit trail, identities, models, probes, metrics,
and the shape of every problem document."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, get_args
from urllib.parse import parse_qs, urlsplit

import pytest
from prometheus_client import CollectorRegistry, Counter

from netwarden.api.app import create_app
from netwarden.api.auth import Role, TokenTable, new_token
from netwarden.api.schemas import State
from netwarden.detector.lifecycle import STATES
from netwarden.detector.results import Reason, ScoredWindow
from netwarden.detector.store import AnomalyStore
from netwarden.ingest.sources import SourceStatus
from netwarden.models.artifact import ModelVersion

with warnings.catch_warnings():  # Starlette now prefers httpx2; the project installs httpx
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
STEP = timedelta(seconds=60)
PROBLEM = "application/problem+json"


def window(i: int, identity: str, score: float = 0.1, threshold: float = 1.0) -> ScoredWindow:
    """Window number ``i`` (T0 + i minutes) of ``identity``; anomalous when score > threshold."""
    namespace, workload = identity.split("/")
    start = T0 + i * STEP
    reason = Reason(
        feature="egress_distinct_dst_ports",
        value=40.0 + i,
        baseline=3.0,
        spread=1.0,
        contribution=score / 2,
        text=f"contacted {40 + i} destination ports (baseline 3)",
    )
    return ScoredWindow(
        identity=identity,
        namespace=namespace,
        workload=workload,
        window_start=start,
        window_end=start + STEP,
        score=score,
        threshold=threshold,
        anomalous=score > threshold,
        model=f"identity:{identity}",
        fallback=False,
        reasons=(reason,),
        examples={"peers": [f"10.0.0.{i}"], "ports": [1000 + i]},
        summary=f"{identity} window {i}",
    )


class Clock:
    """The store's clock, moved by hand."""

    def __init__(self) -> None:
        self.t = T0 + timedelta(days=1)

    def __call__(self) -> datetime:
        return self.t


def version(name: str, created: datetime, *, current: bool = False) -> ModelVersion:
    return ModelVersion(
        version=name,
        created=created,
        current=current,
        format="netwarden-models/3",
        window_seconds=60.0,
        rows=1200,
        models=3,
        identities=("shop/cart",),
        training_start=T0 - timedelta(days=2),
        training_end=T0 - timedelta(days=1),
        data_hash="ab" * 32,
        libraries={"scikit-learn": "1.5.0"},
        path=Path("/secret/models") / name,
    )


@dataclass
class FakeService:
    """The ServiceState the API reads, without a running service."""

    store: AnomalyStore
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    status: SourceStatus = field(
        default_factory=lambda: SourceStatus(
            kind="file", name="/data/flows.json", up=True, flows=1234, last_flow_at=T0
        )
    )
    versions: list[ModelVersion] = field(default_factory=list)

    def source_status(self) -> SourceStatus:
        return self.status

    def model_versions(self) -> list[ModelVersion]:
        return list(self.versions)

    def current_model(self) -> ModelVersion | None:
        return next((v for v in self.versions if v.current), None)


@dataclass
class Api:
    """A client of one app, with a token per role."""

    client: TestClient
    service: FakeService
    clock: Clock
    tokens: dict[Role, str]

    def auth(self, role: Role = Role.viewer) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def get(self, url: str, role: Role = Role.viewer, **kwargs: Any) -> Any:
        return self.client.get(url, headers=self.auth(role), **kwargs)

    def post(self, url: str, role: Role = Role.operator, **kwargs: Any) -> Any:
        return self.client.post(url, headers=self.auth(role), **kwargs)


def make_api(
    tmp_path: Path, *, public_url: str | None = None, listing_cache_seconds: float = 0.0
) -> Api:
    clock = Clock()
    store = AnomalyStore(f"sqlite:///{tmp_path / 'netwarden.db'}", now=clock)
    service = FakeService(
        store=store,
        versions=[version("v2", T0, current=True), version("v1", T0 - timedelta(days=1))],
    )
    tokens, entries = {}, []
    for role in Role:
        tokens[role], entry = new_token(f"{role.name}-bot", role)
        entries.append(entry)
    app = create_app(
        service,
        TokenTable(entries),
        public_url=public_url,
        listing_cache_seconds=listing_cache_seconds,
    )
    return Api(TestClient(app, raise_server_exceptions=False), service, clock, tokens)


@pytest.fixture
def api(tmp_path):
    api = make_api(tmp_path)
    yield api
    api.service.store.close()


def record(api: Api, *windows: ScoredWindow) -> None:
    api.service.store.record(list(windows))


@pytest.fixture
def filled(api) -> dict[str, int]:
    """Four anomalies: cart (critical, then warning), pay (critical), pg (warning)."""
    record(
        api,
        window(0, "shop/cart", 1.5),
        window(1, "shop/cart", 2.5),
        window(2, "shop/cart"),
        window(3, "shop/cart", 1.2),
        window(0, "shop/pay", 3.0),
        window(1, "shop/pay"),
        *(window(i, "db/pg") for i in range(3)),
        window(3, "db/pg", 1.1),
    )
    store = api.service.store
    ids = {(a.identity, (a.first_window_start - T0) // STEP): a.id for a in store.list()}
    return {
        "cart-critical": ids["shop/cart", 0],
        "cart-warning": ids["shop/cart", 3],
        "pay": ids["shop/pay", 0],
        "pg": ids["db/pg", 3],
    }


def assert_problem(response: Any, status: int, *, type: str | None = None) -> dict[str, Any]:
    """The response is an RFC 9457 problem with every member; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert {"type", "title", "status", "detail", "instance"} <= set(body)
    assert body["status"] == status
    assert body["instance"] == urlsplit(str(response.request.url)).path
    assert body["title"] and body["detail"]
    if type is not None:
        assert body["type"] == type
    return body


def ids_of(response: Any) -> list[int]:
    assert response.status_code == 200, response.text
    return [a["id"] for a in response.json()["items"]]


# -------------------------------------------------------------------------- anomaly list


def test_list_everything_newest_first(api, filled) -> None:
    r = api.get("/api/v1/anomalies")
    assert r.headers["content-type"] == "application/json"
    page = r.json()
    assert (page["total"], page["limit"], page["offset"], page["next"]) == (4, 50, 0, None)
    ends = [a["last_window_end"] for a in page["items"]]
    assert ends == sorted(ends, reverse=True)
    first = page["items"][0]
    assert "reasons" not in first and "events" not in first  # the list stays lean
    by_id = {a["id"]: a for a in page["items"]}
    pay = by_id[filled["pay"]]
    assert (pay["identity"], pay["namespace"], pay["workload"], pay["state"]) == (
        "shop/pay",
        "shop",
        "pay",
        "open",
    )
    assert (pay["severity"], pay["peak_score"], pay["window_count"]) == ("critical", 3.0, 1)
    assert pay["first_window_start"] == "2026-03-01T12:00:00Z"  # RFC 3339, UTC


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("identity=shop/cart", ["cart-critical", "cart-warning"]),
        ("namespace=shop", ["cart-critical", "cart-warning", "pay"]),
        ("namespace=db", ["pg"]),
        ("severity=critical", ["cart-critical", "pay"]),
        ("severity=warning", ["cart-warning", "pg"]),
        ("namespace=shop&severity=warning", ["cart-warning"]),
        ("state=open", ["cart-critical", "cart-warning", "pay", "pg"]),
        ("state=resolved", []),
        # overlap with [since, until): cart-critical covers minutes [0, 2), the others [0, 1)/[3, 4)
        ("since=2026-03-01T12:01:00Z", ["cart-critical", "cart-warning", "pg"]),
        ("until=2026-03-01T12:03:00Z", ["cart-critical", "pay"]),
        ("since=2026-03-01T12:01:00Z&until=2026-03-01T12:03:00Z", ["cart-critical"]),
        ("since=2026-03-01T14:01:00%2B02:00", ["cart-critical", "cart-warning", "pg"]),  # offsets
        ("identity=nobody/here", []),
    ],
)
def test_list_filters(api, filled, query, expected) -> None:
    r = api.get(f"/api/v1/anomalies?{query}")
    assert sorted(ids_of(r)) == sorted(filled[name] for name in expected)
    assert r.json()["total"] == len(expected)


def test_state_filter_follows_the_lifecycle(api, filled) -> None:
    api.post(f"/api/v1/anomalies/{filled['pg']}/acknowledge")
    api.post(f"/api/v1/anomalies/{filled['pay']}/resolve")
    api.post(
        f"/api/v1/anomalies/{filled['cart-warning']}/suppress",
        json={"reason": "load test", "duration_seconds": 600},
    )
    for state, name in [
        ("acknowledged", "pg"),
        ("resolved", "pay"),
        ("suppressed", "cart-warning"),
        ("open", "cart-critical"),
    ]:
        assert ids_of(api.get(f"/api/v1/anomalies?state={state}")) == [filled[name]]
    r = api.get("/api/v1/anomalies?state=open&severity=critical&namespace=shop")
    assert ids_of(r) == [filled["cart-critical"]]


@pytest.mark.parametrize(
    ("query", "where"),
    [
        ("state=closed", ["query", "state"]),
        ("severity=fatal", ["query", "severity"]),
        ("limit=0", ["query", "limit"]),
        ("limit=501", ["query", "limit"]),
        ("offset=-1", ["query", "offset"]),
        ("since=2026-03-01T12:00:00", ["query", "since"]),  # no offset: not RFC 3339
        ("until=yesterday", ["query", "until"]),
        ("stat=open", ["query", "stat"]),  # a misspelt filter is refused, not ignored
    ],
)
def test_list_rejects_bad_parameters(api, filled, query, where) -> None:
    body = assert_problem(
        api.get(f"/api/v1/anomalies?{query}"), 422, type="urn:netwarden:problem:validation-error"
    )
    assert where in [e["loc"] for e in body["errors"]]
    assert all(set(e) == {"loc", "msg", "type"} for e in body["errors"])
    assert ".".join(where) in body["detail"]


def test_list_rejects_an_empty_time_range(api, filled) -> None:
    r = api.get("/api/v1/anomalies?since=2026-03-01T12:05:00Z&until=2026-03-01T12:05:00Z")
    body = assert_problem(r, 422)
    assert "must be before until" in body["detail"]


@pytest.fixture
def many(api) -> list[int]:
    """Twelve anomalies of one identity (every other window), newest first."""
    record(api, *(window(i, "batch/job", 1.5 if i % 2 == 0 else 0.1) for i in range(24)))
    record(api, window(0, "other/x", 1.5))
    return [a.id for a in api.service.store.list(identity="batch/job")]


def test_pagination_follows_next_links(api, many) -> None:
    url: str | None = "/api/v1/anomalies?identity=batch/job&limit=5"
    seen, offsets = [], []
    while url is not None:
        page = api.get(url).json()
        assert (page["total"], page["limit"]) == (12, 5)
        offsets.append(page["offset"])
        seen += [a["id"] for a in page["items"]]
        url = page["next"]
        if url is not None:  # relative, and keeps the filters
            assert url.startswith("/api/v1/anomalies?")
            assert parse_qs(urlsplit(url).query)["identity"] == ["batch/job"]
    assert offsets == [0, 5, 10]
    assert seen == many


def test_offset_past_the_end(api, many) -> None:
    page = api.get("/api/v1/anomalies?offset=100").json()
    assert (page["items"], page["total"], page["next"]) == ([], 13, None)
    page = api.get("/api/v1/anomalies?limit=13").json()
    assert (len(page["items"]), page["next"]) == (13, None)


def test_next_link_under_the_public_url(tmp_path) -> None:
    api = make_api(tmp_path, public_url="https://nw.example.com/netwarden/")
    try:
        record(api, *(window(i, "batch/job", 1.5 if i % 2 == 0 else 0.1) for i in range(6)))
        page = api.get("/api/v1/anomalies?limit=2&severity=warning").json()
        parts = urlsplit(page["next"])
        assert (parts.scheme, parts.netloc, parts.path) == (
            "https",
            "nw.example.com",
            "/netwarden/api/v1/anomalies",
        )
        assert parse_qs(parts.query) == {"severity": ["warning"], "limit": ["2"], "offset": ["2"]}
    finally:
        api.service.store.close()


@pytest.mark.parametrize("url", ["ftp://x", "nw.example.com", "https://x/?a=1", ""])
def test_public_url_must_be_an_http_url(tmp_path, url) -> None:
    with pytest.raises(ValueError, match="public_url"):
        create_app(FakeService(store=None), TokenTable(), public_url=url)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- one anomaly


def test_get_one_with_reasons_examples_and_events(api, filled) -> None:
    a = api.get(f"/api/v1/anomalies/{filled['cart-critical']}").json()
    assert (a["severity"], a["peak_score"], a["window_count"]) == ("critical", 2.5, 2)
    assert a["peak_window_start"] == "2026-03-01T12:01:00Z"  # the peak window explains it
    assert a["reasons"] == [
        {
            "feature": "egress_distinct_dst_ports",
            "value": 41.0,
            "baseline": 3.0,
            "spread": 1.0,
            "contribution": 1.25,
            "text": "contacted 41 destination ports (baseline 3)",
        }
    ]
    assert a["examples"] == {"peers": ["10.0.0.1"], "ports": [1001]}
    assert a["summary"] == "shop/cart window 1"
    (opened,) = a["events"]
    assert (opened["action"], opened["actor"], opened["from_state"], opened["to_state"]) == (
        "open",
        "netwarden",
        None,
        "open",
    )


def test_get_unknown_anomaly(api, filled) -> None:
    body = assert_problem(api.get("/api/v1/anomalies/999"), 404, type="about:blank")
    assert body["detail"] == "no anomaly with id 999"
    assert_problem(api.get("/api/v1/anomalies/abc"), 422)


# -------------------------------------------------------------------------------- actions


def test_acknowledge_records_the_token_name(api, filled) -> None:
    aid = filled["pg"]
    api.clock.t += timedelta(minutes=1)
    r = api.post(f"/api/v1/anomalies/{aid}/acknowledge", json={"note": "  on it  "})
    assert r.status_code == 200, r.text
    a = r.json()
    assert (a["state"], a["state_actor"], a["state_note"]) == (
        "acknowledged",
        "operator-bot",
        "on it",
    )
    last = a["events"][-1]
    assert (
        last["action"],
        last["actor"],
        last["from_state"],
        last["to_state"],
        last["note"],
        last["at"],
    ) == ("acknowledge", "operator-bot", "open", "acknowledged", "on it", "2026-03-02T12:01:00Z")
    assert api.get(f"/api/v1/anomalies/{aid}").json()["events"] == a["events"]


def test_higher_roles_act_under_their_own_name(api, filled) -> None:
    a = api.post(f"/api/v1/anomalies/{filled['pg']}/acknowledge", Role.admin).json()
    assert a["events"][-1]["actor"] == "admin-bot"


@pytest.mark.parametrize("action", ["acknowledge", "resolve"])
def test_note_is_optional(api, filled, action) -> None:
    a = api.post(f"/api/v1/anomalies/{filled['pg']}/{action}").json()  # no body at all
    assert a["events"][-1]["note"] == ""
    a = api.post(f"/api/v1/anomalies/{filled['pay']}/{action}", json={}).json()
    assert a["events"][-1]["action"] == action


def test_acknowledging_twice_is_a_conflict(api, filled) -> None:
    aid = filled["pg"]
    api.post(f"/api/v1/anomalies/{aid}/acknowledge")
    body = assert_problem(
        api.post(f"/api/v1/anomalies/{aid}/acknowledge"),
        409,
        type="urn:netwarden:problem:lifecycle-conflict",
    )
    assert body["detail"].startswith(f"anomaly {aid} is acknowledged: cannot acknowledge")
    assert (body["state"], body["action"]) == ("acknowledged", "acknowledge")
    assert len(api.get(f"/api/v1/anomalies/{aid}").json()["events"]) == 2  # nothing written


def test_resolve_then_every_action_conflicts(api, filled) -> None:
    aid = filled["pay"]
    a = api.post(f"/api/v1/anomalies/{aid}/resolve", json={"note": "fixed the cron job"}).json()
    assert (a["state"], a["ongoing"], a["state_note"]) == ("resolved", False, "fixed the cron job")
    assert [e["action"] for e in a["events"]] == ["open", "resolve"]
    for action, body in [
        ("resolve", None),
        ("acknowledge", None),
        ("suppress", {"reason": "x", "duration_seconds": 60}),
    ]:
        problem = assert_problem(api.post(f"/api/v1/anomalies/{aid}/{action}", json=body), 409)
        assert problem["state"] == "resolved" and f"cannot {action}" in problem["detail"]


def test_suppress_for_a_duration_uses_the_store_clock(api, filled) -> None:
    aid = filled["cart-warning"]
    r = api.post(
        f"/api/v1/anomalies/{aid}/suppress",
        json={"reason": "deploy window", "duration_seconds": 900},
    )
    a = r.json()
    assert (a["state"], a["state_note"], a["state_actor"]) == (
        "suppressed",
        "deploy window",
        "operator-bot",
    )
    assert a["suppressed_until"] == "2026-03-02T12:15:00Z"  # store clock + 15 minutes
    last = a["events"][-1]
    assert (last["action"], last["from_state"], last["to_state"], last["note"]) == (
        "suppress",
        "open",
        "suppressed",
        "deploy window",
    )
    api.clock.t += timedelta(minutes=15)  # expiry reopens it, with the system as actor
    a = api.get(f"/api/v1/anomalies/{aid}").json()
    assert (a["state"], a["events"][-1]["action"], a["events"][-1]["actor"]) == (
        "open",
        "unsuppress",
        "netwarden",
    )


def test_suppress_until_a_time(api, filled) -> None:
    aid = filled["pg"]
    api.post(f"/api/v1/anomalies/{aid}/acknowledge")
    a = api.post(
        f"/api/v1/anomalies/{aid}/suppress",
        json={"reason": "known batch job", "until": "2026-03-02T15:30:00+02:00"},
    ).json()
    assert (a["state"], a["suppressed_until"]) == ("suppressed", "2026-03-02T13:30:00Z")
    assert a["events"][-1]["from_state"] == "acknowledged"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"duration_seconds": 60}, "reason"),
        ({"reason": "   ", "duration_seconds": 60}, "reason"),
        ({"reason": "x"}, "exactly one of until"),
        ({"reason": "x", "duration_seconds": 60, "until": "2026-03-02T13:00:00Z"}, "exactly one"),
        ({"reason": "x", "duration_seconds": 0}, "duration_seconds"),
        ({"reason": "x", "duration_seconds": 400 * 86400}, "duration_seconds"),
        ({"reason": "x", "until": "2026-03-02T13:00:00"}, "until"),  # naive
        ({"reason": "x", "until": "2026-03-02T11:00:00Z"}, "not in the future"),  # store clock
        ({"reason": "x", "duration_seconds": 60, "for": 3}, "for"),
        ({"reason": "x" * 2001, "duration_seconds": 60}, "reason"),
    ],
)
def test_suppress_rejects_bad_requests(api, filled, body, fragment) -> None:
    aid = filled["pg"]
    problem = assert_problem(
        api.post(f"/api/v1/anomalies/{aid}/suppress", json=body),
        422,
        type="urn:netwarden:problem:validation-error",
    )
    assert fragment in problem["detail"]
    assert problem["errors"]
    assert api.get(f"/api/v1/anomalies/{aid}").json()["state"] == "open"


def test_malformed_json_body(api, filled) -> None:
    r = api.client.post(
        f"/api/v1/anomalies/{filled['pg']}/suppress",
        content=b"{not json",
        headers={**api.auth(Role.operator), "Content-Type": "application/json"},
    )
    assert_problem(r, 422)


@pytest.mark.parametrize(
    ("action", "body"),
    [
        ("acknowledge", None),
        ("resolve", None),
        ("suppress", {"reason": "x", "duration_seconds": 60}),
    ],
)
def test_actions_on_an_unknown_anomaly(api, filled, action, body) -> None:
    problem = assert_problem(api.post(f"/api/v1/anomalies/999/{action}", json=body), 404)
    assert problem["detail"] == "no anomaly with id 999"


# ----------------------------------------------------------------------------- identities


def test_identities_list(api, filled) -> None:
    api.post(f"/api/v1/anomalies/{filled['cart-critical']}/acknowledge")
    page = api.get("/api/v1/identities").json()
    assert (page["total"], page["next"]) == (3, None)
    by = {i["identity"]: i for i in page["items"]}
    assert list(by) == ["db/pg", "shop/cart", "shop/pay"]
    assert by["shop/cart"] == {
        "identity": "shop/cart",
        "namespace": "shop",
        "workload": "cart",
        "windows": 4,
        "first_window_start": "2026-03-01T12:00:00Z",
        "last_window_end": "2026-03-01T12:04:00Z",
        "last_score": 1.2,
        "last_threshold": 1.0,
        "last_anomalous": True,
        "open_anomalies": 1,
    }
    assert (by["shop/pay"]["last_anomalous"], by["shop/pay"]["open_anomalies"]) == (False, 1)
    assert by["db/pg"]["windows"] == 4
    shop = api.get("/api/v1/identities?namespace=shop").json()
    assert [i["identity"] for i in shop["items"]] == ["shop/cart", "shop/pay"]


def test_identities_pagination(api, filled) -> None:
    first = api.get("/api/v1/identities?limit=2").json()
    assert [i["identity"] for i in first["items"]] == ["db/pg", "shop/cart"]
    second = api.get(first["next"]).json()
    assert ([i["identity"] for i in second["items"]], second["offset"], second["next"]) == (
        ["shop/pay"],
        2,
        None,
    )
    assert_problem(api.get("/api/v1/identities?limit=501"), 422)


def test_identity_windows_newest_first(api, filled) -> None:
    r = api.get("/api/v1/identities/shop/cart/windows")
    body = r.json()
    assert (body["identity"], body["namespace"], body["workload"], body["limit"]) == (
        "shop/cart",
        "shop",
        "cart",
        100,
    )
    starts = [w["window_start"] for w in body["items"]]
    assert starts == [
        "2026-03-01T12:03:00Z",
        "2026-03-01T12:02:00Z",
        "2026-03-01T12:01:00Z",
        "2026-03-01T12:00:00Z",
    ]
    latest, normal = body["items"][0], body["items"][1]
    assert (latest["score"], latest["anomalous"], latest["severity"]) == (1.2, True, "warning")
    assert (normal["anomalous"], normal["severity"]) == (False, None)
    assert latest["reasons"][0]["text"] == "contacted 43 destination ports (baseline 3)"
    assert body["items"][2]["severity"] == "critical"


def test_identity_windows_range_and_limit(api, filled) -> None:
    url = "/api/v1/identities/shop/cart/windows"
    assert [w["window_start"] for w in api.get(f"{url}?limit=2").json()["items"]] == [
        "2026-03-01T12:03:00Z",
        "2026-03-01T12:02:00Z",
    ]
    r = api.get(f"{url}?since=2026-03-01T12:01:00Z&until=2026-03-01T12:03:00Z")
    assert [w["window_start"] for w in r.json()["items"]] == [
        "2026-03-01T12:02:00Z",
        "2026-03-01T12:01:00Z",
    ]
    assert api.get(f"{url}?since=2026-03-02T00:00:00Z").json()["items"] == []  # known, quiet
    assert_problem(api.get(f"{url}?limit=1001"), 422)
    assert_problem(api.get(f"{url}?since=2026-03-01T12:03:00Z&until=2026-03-01T12:01:00Z"), 422)


def test_identity_windows_of_an_unknown_identity(api, filled) -> None:
    body = assert_problem(api.get("/api/v1/identities/shop/nothing/windows"), 404)
    assert "shop/nothing" in body["detail"]


def test_identity_with_a_fallback_workload_name(api) -> None:
    record(api, window(0, "unknown/ip:10.244.1.7", 1.5))
    r = api.get("/api/v1/identities/unknown/ip:10.244.1.7/windows")
    assert r.status_code == 200 and r.json()["identity"] == "unknown/ip:10.244.1.7"


# --------------------------------------------------------------------------------- models


def test_models_list_newest_first_without_paths(api) -> None:
    body = api.get("/api/v1/models").json()
    assert [(m["version"], m["current"]) for m in body["items"]] == [("v2", True), ("v1", False)]
    v2 = body["items"][0]
    assert "path" not in v2 and "/secret" not in str(body)
    assert (v2["rows"], v2["models"], v2["identities"], v2["window_seconds"]) == (
        1200,
        3,
        ["shop/cart"],
        60.0,
    )
    assert (v2["created"], v2["data_hash"], v2["libraries"]) == (
        "2026-03-01T12:00:00Z",
        "ab" * 32,
        {"scikit-learn": "1.5.0"},
    )


def test_current_model(api) -> None:
    assert api.get("/api/v1/models/current").json()["version"] == "v2"
    api.service.versions = [replace(v, current=False) for v in api.service.versions]
    body = assert_problem(api.get("/api/v1/models/current"), 404)
    assert body["detail"].startswith("no model loaded")
    api.service.versions = []
    assert api.get("/api/v1/models").json() == {"items": []}


# ------------------------------------------------------------------- health and metrics


def test_healthz_answers_without_a_token(api) -> None:
    api.service.versions, api.service.status = [], SourceStatus("file", "x", up=False)
    r = api.client.get("/healthz")
    assert (r.status_code, r.json()) == (200, {"status": "ok"})


def test_readyz_when_ready(api) -> None:
    r = api.client.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {
        "status": "ready",
        "model": "v2",
        "source": "file",
        "flows": 1234,
        "last_flow_at": "2026-03-01T12:00:00Z",
    }
    assert "/data/flows.json" not in r.text  # public: no paths


@pytest.mark.parametrize(
    ("model", "source", "missing"),
    [
        (False, SourceStatus("file", "f", up=True), ["no model loaded"]),
        (
            True,
            SourceStatus("hubble", "relay:4245", up=False, error="connection refused"),
            ["source down: connection refused"],
        ),
        (True, SourceStatus("file", "f", up=False), ["source down: no reason given"]),
        (
            False,
            SourceStatus("file", "f", up=False, error="file vanished"),
            ["no model loaded", "source down: file vanished"],
        ),
    ],
)
def test_readyz_names_what_is_missing(api, model, source, missing) -> None:
    if not model:
        api.service.versions = []
    api.service.status = source
    body = assert_problem(api.client.get("/readyz"), 503, type="urn:netwarden:problem:not-ready")
    assert body["missing"] == missing
    assert body["detail"] == "; ".join(missing)


def test_metrics_exposition(api) -> None:
    flows = Counter("netwarden_flows", "Flows read.", ["source"], registry=api.service.registry)
    flows.labels(source="file").inc(42)
    r = api.client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=")
    assert 'netwarden_flows_total{source="file"} 42.0' in r.text
    assert "# HELP netwarden_flows_total Flows read." in r.text
    om = api.client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    assert om.text.rstrip().endswith("# EOF")


# ------------------------------------------------------------------------------- problems


def test_unknown_route_is_a_problem(api) -> None:
    body = assert_problem(api.get("/api/v1/nothing"), 404, type="about:blank")
    assert (body["title"], body["detail"]) == ("Not Found", "no resource at /api/v1/nothing")


def test_wrong_method_is_a_problem(api) -> None:
    r = api.client.delete("/api/v1/anomalies", headers=api.auth())
    body = assert_problem(r, 405)
    assert body["detail"] == "DELETE is not allowed on /api/v1/anomalies"
    assert r.headers["allow"] == "GET"
    assert_problem(api.client.post("/healthz"), 405)  # a public path: no token needed to learn


def test_internal_errors_leak_nothing(api) -> None:
    def broken(**kwargs: Any) -> Any:
        raise RuntimeError("database at /var/lib/secret.db is corrupt")

    api.service.store.page = broken  # type: ignore[method-assign]
    r = api.get("/api/v1/anomalies")
    body = assert_problem(r, 500, type="about:blank")
    assert body["title"] == "Internal Server Error"
    assert "secret" not in r.text and "RuntimeError" not in r.text


def test_problem_details_for_auth_errors(api) -> None:
    body = assert_problem(api.client.get("/api/v1/anomalies"), 401)
    assert body["title"] == "Unauthorized"
    body = assert_problem(api.post("/api/v1/anomalies/1/resolve", Role.viewer), 403)
    assert body["detail"] == "token 'viewer-bot' has role viewer; this needs operator or higher"


def test_states_match_the_lifecycle() -> None:
    assert get_args(State) == STATES

"""netwarden.client against the real API in-process (TestClient, an httpx client) on a real
SQLite store: DataFrames, paging by links and by time, incidents, problems as ClientError."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pandas as pd
import pytest

from netwarden.api.auth import Role
from netwarden.client import Client, ClientError, read_history
from netwarden.storage.history import write_rows
from tests.servers import free_port
from tests.test_api import STEP, T0, Api, make_api, window
from tests.test_proposals import _cart_flows, _close, _create, _record_anomaly, _review_api


def _client(api: Api, role: Role = Role.viewer, **kwargs: Any) -> Client:
    return Client("http://testserver", token=api.tokens[role], http=api.client, **kwargs)


@pytest.fixture
def api(tmp_path):
    api = make_api(tmp_path)
    yield api
    api.service.store.close()


def _incident(w: Any, incident: str, role: str, attacker: str) -> Any:
    return replace(w, incident=incident, role=role, attacker=attacker)


def test_anomalies_are_read_through_every_page(api) -> None:
    """Seven anomalies read two at a time: every one, once, newest first, times as UTC
    Timestamps; filters go to the API."""
    windows = []
    for k in range(7):  # one anomalous window each, separated by a normal one
        windows += [window(2 * k, "shop/cart", 1.5 + k / 10), window(2 * k + 1, "shop/cart")]
    api.service.store.record(windows)
    expected = [a.id for a in api.service.store.list()]
    nw = _client(api, page_size=2)
    frame = nw.anomalies()
    assert list(frame["id"]) == expected and len(expected) == 7
    assert str(frame["first_window_start"].dtype).startswith("datetime64")
    assert frame["first_window_start"].iloc[-1] == pd.Timestamp(T0)
    assert len(nw.anomalies(max_rows=3)) == 3
    assert len(nw.anomalies(identity="db/pg")) == 0
    assert len(nw.anomalies(since=T0 + 10 * STEP)) == 2  # windows 10 and 12
    assert nw.anomalies(state="resolved").empty
    reasons = nw.reasons(int(frame["id"].iloc[0]))
    assert list(reasons["feature"]) == ["egress_distinct_dst_ports"]


def test_windows_are_read_back_in_time_oldest_first(api) -> None:
    api.service.store.record([window(i, "shop/cart", 2.0 if i == 17 else 0.1) for i in range(30)])
    nw = _client(api, page_size=7)
    frame = nw.windows("shop/cart", max_rows=None)
    assert len(frame) == 30 and frame["window_start"].is_monotonic_increasing
    assert frame["window_start"].iloc[0] == pd.Timestamp(T0)
    assert list(frame.index[frame["anomalous"]]) == [17]
    latest = nw.windows("shop/cart", max_rows=10)
    assert list(latest["window_start"]) == list(frame["window_start"].iloc[-10:])
    part = nw.windows("shop/cart", since=T0 + 5 * STEP, until=T0 + 9 * STEP)
    assert len(part) == 4
    with pytest.raises(ValueError, match="namespace/workload"):
        nw.windows("cart")


def test_identities_models_and_png(api) -> None:
    api.service.store.record([window(0, "shop/cart"), window(0, "db/pg", 3.0)])
    nw = _client(api)
    ids = nw.identities()
    assert list(ids["identity"]) == ["db/pg", "shop/cart"]
    assert list(nw.identities(namespace="db")["identity"]) == ["db/pg"]
    models = nw.models()
    assert list(models["version"]) == ["v2", "v1"] and list(models["current"]) == [True, False]
    assert nw.score_png("db/pg").startswith(b"\x89PNG\r\n\x1a\n")


def test_incidents_name_the_attacker_and_its_victims(api) -> None:
    """An attacker with two victims is one incident; victims whose attacker was never seen
    (a witness alerting for it) name that attacker too."""
    scan = "inc-aaaaaaaaaaaa"
    outside = "inc-bbbbbbbbbbbb"
    api.service.store.record(
        [
            _incident(window(0, "shop/cart", 2.5), scan, "attacker", "shop/cart"),
            _incident(window(0, "db/pg", 1.5), scan, "victim", "shop/cart"),
            _incident(window(1, "shop/pay", 1.4), scan, "victim", "shop/cart"),
            _incident(window(5, "db/redis", 1.8), outside, "witness", "ext/scanner"),
            window(8, "shop/web", 1.3),  # an anomaly with no incident: not listed
        ]
    )
    nw = _client(api, page_size=1)
    frame = nw.incidents()
    assert list(frame["id"]) == [outside, scan]
    row = frame.set_index("id").loc[scan]
    assert row["attacker"] == "shop/cart" and row["victims"] == ["db/pg", "shop/pay"]
    assert row["anomalies"] == 3 and row["peak_score"] == 2.5 and row["severity"] == "critical"
    assert frame.set_index("id").loc[outside, "attacker"] == "ext/scanner"
    assert list(nw.incidents(until=T0 + 2 * STEP)["id"]) == [scan]
    detail = nw.incident(scan)
    assert {a["identity"] for a in detail["items"]} == {"shop/cart", "db/pg", "shop/pay"}
    with pytest.raises(ClientError) as err:
        nw.incident("inc-cccccccccccc")
    assert err.value.status == 404 and "inc-cccccccccccc" in err.value.detail


def test_problems_become_client_errors(api) -> None:
    with pytest.raises(ClientError) as err:
        Client("http://testserver", token="wrong", http=api.client).anomalies()
    assert err.value.status == 401 and "not valid" in err.value.detail
    assert err.value.problem["status"] == 401
    nw = _client(api)
    with pytest.raises(ClientError) as err:
        nw.anomaly(12345)
    assert err.value.status == 404 and "12345" in str(err.value)
    with pytest.raises(ClientError) as err:
        nw.anomalies(state="nope")
    assert err.value.status == 422 and "state" in err.value.detail
    with pytest.raises(ClientError) as err:
        nw.windows("db/none")
    assert err.value.status == 404
    down = Client(f"http://127.0.0.1:{free_port()}", token="t", timeout=2)  # nothing listens
    with down, pytest.raises(ClientError) as err:
        down.identities()
    assert err.value.status == 0 and "ConnectError" in err.value.detail
    with pytest.raises(ValueError, match="http"):
        Client("127.0.0.1:8080")


def test_proposals_and_their_simulation(tmp_path) -> None:
    api = _review_api(tmp_path, applier=None, flows=_cart_flows())
    try:
        baseline = _create(api, {"identity": "shop/cart"})
        containment = _create(api, {"anomaly_id": _record_anomaly(api)})
        nw = _client(api)
        frame = nw.proposals()
        assert list(frame["id"]) == [containment["id"], baseline["id"]]
        assert list(nw.proposals(kind="baseline")["id"]) == [baseline["id"]]
        assert "cart-baseline" in nw.proposal(baseline["id"])["yaml"]
        dropped = nw.simulation(containment["id"])
        assert dropped.attrs["dropped"] == int(dropped["flows"].sum()) > 0
        assert dropped["peer"].iloc[0] == "world:192.0.2.10"
        assert "would drop" in dropped.attrs["text"]
        assert nw.simulation(baseline["id"]).empty
    finally:
        _close(api)


def test_changes_are_listed(tmp_path) -> None:
    """An empty list is still a frame with the columns a notebook selects."""
    api = make_api(tmp_path)
    try:
        frame = _client(api).changes(since=T0 - timedelta(days=1))
        assert frame.empty and {"id", "kind", "subject", "status"} <= set(frame.columns)
    finally:
        api.service.store.close()


def test_read_history_offline(tmp_path) -> None:
    """The Parquet history a service wrote, read without it: a day range prunes, identities
    filter, and DuckDB reads the same rows."""
    duckdb = pytest.importorskip("duckdb")
    rows = [
        {
            "identity": ident,
            "namespace": ident.split("/")[0],
            "workload": ident.split("/")[1],
            "window_start": T0 + timedelta(hours=12 * i),
            "window_end": T0 + timedelta(hours=12 * i) + STEP,
            "score": 0.1 * i,
            "anomalous": False,
        }
        for i in range(4)  # 12:00, 00:00, 12:00, 00:00: three days
        for ident in ("shop/cart", "db/pg")
    ]
    write_rows(tmp_path / "history" / "windows", rows)
    frame = read_history(tmp_path / "history")
    assert len(frame) == 8 and frame["window_start"].is_monotonic_increasing
    assert len(read_history(tmp_path / "history", start=T0 + timedelta(hours=24))) == 4
    assert set(read_history(tmp_path / "history", identities=["db/pg"])["identity"]) == {"db/pg"}
    files = str(tmp_path / "history" / "windows" / "*" / "*.parquet")
    days = duckdb.sql(
        f"SELECT date, count(*) AS n FROM read_parquet('{files}', hive_partitioning = 1) "
        "GROUP BY date ORDER BY date"
    ).fetchall()
    assert [n for _, n in days] == [2, 4, 2]
    with pytest.raises(FileNotFoundError, match="no history"):
        read_history(tmp_path / "nowhere")

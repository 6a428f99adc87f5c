"""Cluster mode's API: `netwarden serve` reading no flows, over the store the shards record into.

In cluster mode the shards (``netwarden shard``) judge the merged windows and record them in
the shared PostgreSQL store (:class:`netwarden.cluster.sinks.ScoringSink` calls
``AnomalyStore.record``); the API Deployment runs `netwarden serve` with a source that never
yields a flow (``file:/dev/null``), so its alerter, which follows the store's anomalies by their
update time, is what tells Alertmanager and Slack. Here another process's records (this test's,
through the same ``record`` call) reach a real Alertmanager and a Slack webhook from two API
replicas at once, each anomaly told to Slack once, and the API lists them.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from netwarden.api.auth import new_token
from netwarden.detector.store import AnomalyStore
from tests.servers import WebhookReceiver, start_alertmanager
from tests.storage_backends import postgres, postgres_url  # noqa: F401 (fixtures)
from tests.test_alerts import STEP, win
from tests.test_service_apply import start_serve, stop_serve


def recent(i: int, identity: str, now: datetime) -> Any:
    """Window ``i`` of a run whose window 0 ends at ``now`` (Alertmanager judges firing by its
    own clock; one ``now`` for all windows, so consecutive ones are consecutive)."""
    w = win(0, identity)
    start = now - STEP + i * STEP
    return replace(w, window_start=start, window_end=start + STEP)


def api_config(folder: Path, store_url: str, am_url: str, slack_url: str) -> dict[str, Any]:
    """What the chart's API Deployment runs: no flows, the shared store, both sinks."""
    return {
        "data_dir": str(folder / "data"),
        "source": {"spec": "file:/dev/null"},
        "models": {"bootstrap": False},
        "store": {"url": store_url},
        "alerts": {
            "alertmanager_url": am_url,
            "slack_webhook_url": slack_url,
            "group_wait": 0,
            "resend_interval": 60,
            "backoff_initial": 0.5,
            "backoff_max": 2,
        },
    }


@pytest.mark.slow
def test_api_replicas_alert_once_on_what_the_shards_record(
    tmp_path: Path,
    postgres_url: str,  # noqa: F811 (the fixture)
) -> None:
    token, entry = new_token("vera", "viewer")
    with (
        start_alertmanager(tmp_path / "alertmanager") as am,
        WebhookReceiver() as slack,
    ):
        replicas = []
        try:
            for k in (0, 1):
                folder = tmp_path / f"api{k}"
                folder.mkdir()
                config = api_config(folder, postgres_url, am.url, slack.url)
                replicas.append(start_serve(folder, config, {"NETWARDEN_API_TOKENS": entry.line}))
            # a shard records (another process, the same store): three anomalous windows of
            # one workload, one of another
            now = datetime.now(UTC).replace(microsecond=0)
            with AnomalyStore(postgres_url) as store:
                (cart,) = store.record([recent(-2, "shop/cart", now), recent(-1, "shop/cart", now)])
                store.record([recent(0, "shop/cart", now)])
                (pay,) = store.record([recent(0, "pay/ledger", now)])

            def firing(alerts: list[dict[str, Any]]) -> set[str]:
                return {a["labels"]["anomaly_id"] for a in alerts}

            deadline = time.monotonic() + 60
            got: set[str] = set()
            while time.monotonic() < deadline:
                got = firing(httpx.get(f"{am.url}/api/v2/alerts", timeout=5).json())
                if got == {str(cart.id), str(pay.id)}:
                    break
                time.sleep(0.2)
            assert got == {str(cart.id), str(pay.id)}, (got, slack.notifications)
            links = [f"/api/v1/anomalies/{a.id}|" for a in (cart, pay)]
            slack.wait_for(lambda seen: all(link in str(seen) for link in links))
            _, base = replicas[1]
            headers = {"Authorization": f"Bearer {token}"}
            listed = httpx.get(f"{base}/api/v1/anomalies", headers=headers, timeout=10)
            assert listed.status_code == 200, listed.text
            assert {a["id"] for a in listed.json()["items"]} == {cart.id, pay.id}
            # both replicas' alerters pass every second over the same outbox: give them a few
            # more passes to tell anything twice
            time.sleep(5)
            told = list(slack.notifications)
        finally:
            codes = [stop_serve(proc) for proc, _ in replicas]
    assert codes == [0] * len(replicas)
    texts = [str(m) for m in told]
    for link in links:  # each anomaly in one Slack message, once
        assert sum(t.count(link) for t in texts) == 1, (link, texts)

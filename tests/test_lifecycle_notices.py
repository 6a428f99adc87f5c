"""The model lifecycle's settings and notices: the ``drift:`` section of the configuration, and
drift and failing retraining told to Slack (as anomalies are) through the outbox.

Slack is tests/test_alerts.py's loopback stand-in (it checks Block Kit like Slack and fails on
cue), Alertmanager the real one (tests/servers.py); the alerter's clock is injected where
backoffs matter.
"""

from __future__ import annotations

import io
import json
import random
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from netwarden.commands.retraining import ALERT_KEY as KEY
from netwarden.commands.retraining import retrain_alert
from netwarden.config import ConfigError, ServiceConfig, load_config
from netwarden.detector.alerts import slack
from netwarden.detector.alerts.alerting import ALERTMANAGER, SLACK, Alerter, AlertSettings
from netwarden.detector.drift import DriftConfig
from netwarden.detector.store import AnomalyStore
from netwarden.models.artifact import save_bundle
from netwarden.models.signing import ensure_key
from netwarden.models.training import TrainConfig, train
from netwarden.service import build_service
from tests.servers import Server, start_alertmanager
from tests.test_alerts import Clock, SlackStandIn, block_kit_problems
from tests.test_drift import DAY, SHIFTED, UNCHANGED, Live, scenario  # noqa: F401 (fixture)
from tests.test_retrain import T0, _rows

PUBLIC = "https://netwarden.example.org"


@pytest.fixture
def slack_in() -> Iterator[SlackStandIn]:
    stand_in = SlackStandIn()
    yield stand_in
    stand_in.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AnomalyStore]:
    with AnomalyStore(f"sqlite:///{tmp_path / 'netwarden.db'}") as s:
        yield s


def _settings(slack_url: str, **kwargs: object) -> AlertSettings:
    return AlertSettings(
        slack_webhook_url=slack_url,
        public_url=PUBLIC,
        backoff_initial=1,
        backoff_max=8,
        request_timeout=0.5,
        **kwargs,  # type: ignore[arg-type]
    )


# --------------------------------------------------------------------- the drift: section


def test_the_drift_section_is_drift_config_s(monkeypatch: pytest.MonkeyPatch) -> None:
    """Defaults, ranges and the pair rule come from DriftConfig; the environment overrides."""
    assert ServiceConfig().drift_config == DriftConfig()
    assert DriftConfig().min_windows == 240 and DriftConfig().horizon_seconds == 86400
    monkeypatch.setenv("NETWARDEN_DRIFT__MIN_WINDOWS", "120")
    monkeypatch.setenv("NETWARDEN_DRIFT__PSI_ALERT", "0.3")
    assert load_config(None).drift_config == DriftConfig(min_windows=120, psi_alert=0.3)
    for option, value, message in [
        ("MIN_WINDOWS", "5", "drift.min_windows: .*min_windows must be between 30 and"),
        ("PSI_CLEAR", "0.5", r"drift: .*psi_clear \(0.5\) must not be above psi_alert \(0.3\)"),
        ("BUCKETS", "two", "drift.buckets: .*valid integer"),
        ("ABOVE_SHARE_ALERT", "2", "drift.above_share_alert: .*between 0.0001 and 1"),
    ]:
        monkeypatch.setenv(f"NETWARDEN_DRIFT__{option}", value)
        with pytest.raises(ConfigError, match=message):
            load_config(None)
        monkeypatch.delenv(f"NETWARDEN_DRIFT__{option}")


def test_the_service_measures_drift_as_configured_and_tells_slack_of_retraining(
    tmp_path: Path, slack_in: SlackStandIn
) -> None:
    """``serve`` hands its drift section to the monitor, and its failing-retraining alert
    reaches Slack (no Alertmanager configured) through the outbox."""
    key = ensure_key(tmp_path / "signing.key")
    bundle = train(_rows(2, start=T0, seed=1), config=TrainConfig(n_estimators=10, min_windows=16))
    save_bundle(bundle, tmp_path / "models", key=key)
    (tmp_path / "flows.jsonl").touch()
    config = ServiceConfig(
        data_dir=tmp_path / "data",
        source={"spec": str(tmp_path / "flows.jsonl")},
        models={"dir": tmp_path / "models", "signing_key_file": tmp_path / "signing.key"},
        drift={"min_windows": 120, "psi_alert": 0.3, "metric_identities": 7},
        alerts={"slack_webhook_url": slack_in.url},
        api={"public_url": PUBLIC},
        remediation={"propose_containment": False},
    )
    service, _ = build_service(config, Console(file=io.StringIO()))
    try:
        assert service.drift.config == config.drift_config
        assert service.drift.config.min_windows == 120 and service.drift.config.psi_alert == 0.3
        assert service.alerter is not None
        service._retrain_alert(True, "scheduled retraining failed: disk full")
        assert service.alerter.deliver() == 1
    finally:
        service.shutdown(5.0)
        service.store.close()
    (msg,) = slack_in.messages
    assert block_kit_problems(msg) == []
    assert msg["text"] == "scheduled retraining failed: disk full"
    assert "Scheduled retraining is failing" in msg["blocks"][0]["text"]["text"]
    assert f"<{PUBLIC}/api/v1/models|Models>" in json.dumps(msg)


# ------------------------------------------------------------------------- conditions


def _failing(store: AnomalyStore, settings: AlertSettings, clock: Clock) -> Alerter:
    return Alerter(store, settings, now=clock, rng=random.Random(3))


def _alert(firing: bool) -> dict[str, object]:
    return retrain_alert(
        firing=firing, summary="retraining", now=datetime.now(UTC), public_url=PUBLIC
    )


def _message(text: str) -> dict[str, object]:
    return slack.notice(title=text, text=text, lines=[text], link=None, footer="test")


def test_a_condition_is_told_once_when_it_starts_and_once_when_it_ends(
    store: AnomalyStore, slack_in: SlackStandIn
) -> None:
    """Repeated failures are one Slack message; the recovery waits for the failure's delivery
    (Slack down: retried with backoff, never dropped), then follows it."""
    clock = Clock()
    slack_in.failures.extend([500, "timeout"])
    with _failing(store, _settings(slack_in.url), clock) as alerter:
        fail = _message("retraining failed: disk full")
        assert alerter.condition(KEY, firing=True, alert=_alert(True), slack_message=fail) == {
            SLACK: 1
        }
        again = _message("retraining failed: still")
        assert alerter.condition(KEY, firing=True, alert=_alert(True), slack_message=again) == {}
        assert alerter.deliver() == 0  # 500
        ok = _message("retraining succeeds again")
        # its start is not delivered yet: the end waits
        assert alerter.condition(KEY, firing=False, alert=_alert(False), slack_message=ok) == {}
        assert alerter.sync() == {}
        clock.advance(seconds=2)
        assert alerter.deliver() == 0  # timeout
        clock.advance(seconds=8)
        assert alerter.deliver() == 1  # the failure, at last
        assert alerter.sync() == {SLACK: 1}  # now the recovery
        assert alerter.deliver() == 1
        assert alerter.sync() == {} and alerter.notices.announced() == set()
    assert [m["text"] for m in slack_in.messages] == [
        "retraining failed: disk full",
        "retraining succeeds again",
    ]
    assert slack_in.requests == 4


def test_a_condition_back_before_its_end_was_sent_is_still_on(
    store: AnomalyStore, slack_in: SlackStandIn
) -> None:
    clock = Clock()
    slack_in.failures.append(500)
    with _failing(store, _settings(slack_in.url), clock) as alerter:
        alerter.condition(KEY, firing=True, alert=_alert(True), slack_message=_message("on"))
        assert alerter.deliver() == 0
        alerter.condition(KEY, firing=False, alert=_alert(False), slack_message=_message("off"))
        assert alerter.condition(
            KEY, firing=True, alert=_alert(True), slack_message=_message("on again")
        ) == {}  # fmt: skip
        clock.advance(seconds=10)
        assert alerter.deliver() == 1
        assert alerter.sync() == {} and alerter.notices.announced() == {KEY}
    assert [m["text"] for m in slack_in.messages] == ["on"]


def test_a_condition_goes_to_alertmanager_in_its_every_state(
    store: AnomalyStore, am: Server
) -> None:
    """Without Slack, Alertmanager gets each state of the condition."""
    settings = AlertSettings(alertmanager_url=am.url, public_url=PUBLIC)
    now = datetime.now(UTC)  # Alertmanager judges active alerts by its own clock
    firing = retrain_alert(firing=True, summary="failed", now=now, public_url=PUBLIC)
    done = retrain_alert(firing=False, summary="ok", now=now, public_url=PUBLIC)
    with Alerter(store, settings) as alerter:
        told = alerter.condition(KEY, firing=True, alert=firing, slack_message=_message("x"))
        assert told == {ALERTMANAGER: 1}
        assert alerter.deliver() == 1
        assert _active(am, "NetwardenRetrainingFailing")
        alerter.condition(KEY, firing=False, alert=done, slack_message=_message("y"))
        assert alerter.deliver() == 1
        assert not _active(am, "NetwardenRetrainingFailing")


def _active(server: Server, alertname: str) -> list[dict[str, object]]:
    response = httpx.get(
        f"{server.url}/api/v2/alerts",
        params={"filter": f'alertname="{alertname}"', "active": "true"},
        timeout=5,
    )
    response.raise_for_status()
    return response.json()


# ------------------------------------------------------------------------------ drift


@pytest.fixture(scope="module")
def am(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with start_alertmanager(tmp_path_factory.mktemp("alertmanager")) as server:
        yield server


@pytest.mark.slow
def test_drift_reaches_slack_when_it_starts_and_when_it_ends(
    scenario,  # noqa: F811 (tests/test_drift.py's fixture)
    am: Server,
    slack_in: SlackStandIn,
    store: AnomalyStore,
) -> None:
    """Drifted identities: Alertmanager's alerts as before, and in Slack one message when the
    model stops fitting and one when it fits again, in that order although Slack failed."""
    live = Live(scenario.model_dir)
    live.feed(scenario.shifted)
    drifted = {r.identity for r in live.monitor.drifted()}
    assert SHIFTED in drifted and UNCHANGED not in drifted  # (its peers may drift too)
    # Alertmanager judges alerts by its own clock: the test's stays behind it
    clock = Clock(datetime.now(UTC) - timedelta(seconds=90))
    slack_in.failures.append(500)
    settings = replace(_settings(slack_in.url), alertmanager_url=am.url)
    with Alerter(store, settings, now=clock, rng=random.Random(1)) as alerter:
        alerter.follow_drift(live.monitor)
        n = len(drifted)
        assert alerter.sync() == {ALERTMANAGER: n, SLACK: n}
        assert alerter.deliver() == 2 * n - 1  # one Slack message failed
        assert drifted == {a["labels"]["identity"] for a in _active(am, "NetwardenModelDrift")}
        clock.advance(seconds=30)
        assert alerter.sync() == {}  # no new Slack message while it lasts
        # a day later the traffic is back to normal: the alerts resolve, and Slack hears
        live.feed(scenario.normal, later=DAY)
        assert alerter.sync()[ALERTMANAGER] == n
        for _ in range(3):  # the failed message's retry, then the ends that waited for it
            clock.advance(seconds=10)
            alerter.deliver()
            alerter.sync()
        assert alerter.deliver() == 0 and alerter.notices.announced() == set()
        assert not _active(am, "NetwardenModelDrift")
    assert slack_in.requests == 2 * n + 1  # every message once, and one retry
    assert all(block_kit_problems(m) == [] for m in slack_in.messages)
    told = [m["text"] for m in slack_in.messages]
    for identity in drifted:  # each: "no longer fits", then "fits again"
        mine = [t for t in told if f" {identity}" in t]
        assert [t.split(":")[0] for t in mine] == [
            f"Model drift in {identity}",
            f"Model fits {identity} again",
        ]
    (start,) = [m for m in slack_in.messages if m["text"].startswith(f"Model drift in {SHIFTED}")]
    assert start["text"].startswith(f"Model drift in {SHIFTED}: the model no longer fits: score")
    assert "Model no longer fits shop/catalog" in start["blocks"][0]["text"]["text"]
    body = json.dumps(start)
    assert re.search(r"top drifting features: (e|in)gress_\w+ \(PSI \d", body), body
    assert f"{PUBLIC}/api/v1/identities/shop/catalog/drift|Drift report" in body

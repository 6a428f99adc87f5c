"""`netwarden serve`: the live pipeline in process, and the whole service as a user runs it."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from rich.console import Console

from netwarden.config import ServiceConfig
from netwarden.detector.results import Reason, ScoredWindow
from netwarden.detector.store import AnomalyStore
from netwarden.generator import generate
from netwarden.ingest.sources import FollowFile
from netwarden.ingest.windows import WindowConfig
from netwarden.models.artifact import save_bundle
from netwarden.models.registry import CurrentModel
from netwarden.models.signing import ensure_key
from netwarden.remediation.containment import peer_rules
from netwarden.remediation.proposals import simulate_proposal
from netwarden.service import Service, build_service
from tests.modelfactory import train_on_generated
from tests.servers import free_port, require, start_alertmanager

T0 = datetime(2026, 4, 6, 8, tzinfo=UTC)


def _wait(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """Three hours of normal traffic, trained with the service's window length and signed with
    the key next to the folder (the service refuses unsigned models: see _config)."""
    out = tmp_path_factory.mktemp("svc-model")
    bundle, _ = train_on_generated(out / "history", hours=3, seed=31, start=T0, train_seed=1)
    save_bundle(bundle, out / "models", key=ensure_key(out / "signing.key"))
    return out / "models"


def _config(tmp_path: Path, model_dir: Path, source: Path, **extra: Any) -> ServiceConfig:
    return ServiceConfig(
        data_dir=tmp_path / "data",
        source={"spec": str(source)},
        models={
            "dir": model_dir,
            "bootstrap": False,
            "reload_interval": 0.2,
            "signing_key_file": model_dir.parent / "signing.key",
        },
        windows={"idle_close": 0.5},
        **extra,
    )


def _attacker_window(
    minute: int, to: list[tuple[str, str]], features: list[str], incident: str
) -> ScoredWindow:
    """An anomalous window of shop/mailer, the attacker of ``incident``, whose egress went
    ``to`` (peer, port) pairs ``minute`` minutes after T0."""
    start = T0 + timedelta(minutes=minute)
    return ScoredWindow(
        identity="shop/mailer",
        namespace="shop",
        workload="mailer",
        window_start=start,
        window_end=start + timedelta(minutes=1),
        score=0.9,
        threshold=0.5,
        anomalous=True,
        model="identity:shop/mailer",
        fallback=False,
        reasons=tuple(
            Reason(feature=f, value=50.0, baseline=1.0, spread=1.0, contribution=1.0, text=f)
            for f in features
        ),
        examples={"egress": {"to": [{"peer": p, "port": port, "flows": 5} for p, port in to]}},
        summary="mailer did something",
        incident=incident,
        role="attacker",
    )


def test_a_later_anomaly_of_an_incident_is_proposed_when_it_names_a_new_peer(
    tmp_path, model_dir
) -> None:
    """One attacker, one incident: lateral movement to another namespace's database, more of
    it on another port (the same peer: the incident's proposal already names it), then an
    exfiltration to an internet address 12 minutes later (a peer no proposal names): two
    proposals, and the middle anomaly says why it has none."""
    log = io.StringIO()
    service, _ = build_service(
        _config(tmp_path, model_dir, tmp_path / "none.jsonl"), Console(file=log, width=300)
    )
    try:
        lateral = ["egress_new_peers", "egress_distinct_dst_ports"]
        windows = [
            _attacker_window(0, [("db/postgres", "TCP/5432")], lateral, "inc-1"),
            _attacker_window(3, [("db/postgres", "TCP/5433")], lateral, "inc-1"),
            _attacker_window(
                15, [("world:192.0.2.77", "TCP/443")], ["egress_world_flows"], "inc-1"
            ),
        ]
        records = [r for w in windows for r in service.store.record([w])]
        assert len({r.id for r in records}) == 3 and {r.incident for r in records} == {"inc-1"}
        for record in records:
            service.propose_containment(record)
        made = {p.anomaly_id: p for p in service.proposal_store.list(limit=10)}
        assert sorted(made) == [records[0].id, records[2].id], log.getvalue()
        assert "db" in str(made[records[0].id].policy["spec"]["egressDeny"])
        assert "192.0.2.77" in str(made[records[2].id].policy["spec"]["egressDeny"])
        assert (
            f"no containment proposed for anomaly {records[1].id}: incident inc-1" in log.getvalue()
        )
        # another incident of the same attacker is its own decision
        again = service.store.record(
            [_attacker_window(40, [("db/postgres", "TCP/5432")], lateral, "inc-2")]
        )
        service.propose_containment(again[0])
        assert service.proposal_store.list(anomaly_id=again[0].id)
    finally:
        service.store.close()


def test_followed_file_to_anomalies_in_the_store(tmp_path, model_dir) -> None:
    """Flows appended to a followed file become windows, scores and an anomaly; windows of a
    quiet stream close on the wall clock; the metrics count it all."""
    attack = generate(
        tmp_path / "attack",
        hours=0.5,
        seed=32,
        start=T0 + timedelta(hours=3),
        attacks=["port_scan"],
    )
    lines = attack.flows_path.read_bytes().splitlines(keepends=True)
    followed = tmp_path / "flows.jsonl"
    followed.write_bytes(b"".join(lines[: len(lines) // 2]))
    log = io.StringIO()
    console = Console(file=log, soft_wrap=True)
    service, _ = build_service(_config(tmp_path, model_dir, followed), console)
    assert service.model.loaded is not None
    service.start()
    try:
        with followed.open("ab") as f:  # the rest arrives while the service runs
            f.write(b"".join(lines[len(lines) // 2 :]) + b"{not json\n")
        _wait(lambda: service.source.status().flows == len(lines), 30, "every flow read")
        (label,) = attack.labels
        found = _wait(
            lambda: service.store.list(identity=label.identity),
            30,
            f"an anomaly of {label.identity}",
        )
        assert found[0].reasons and found[0].summary
        # every new anomaly comes with a containment proposal, waiting for review
        proposals = _wait(
            lambda: service.proposal_store.list(anomaly_id=found[-1].id),
            10,
            "a containment proposal",
        )
        assert proposals[0].kind == "containment" and proposals[0].state == "proposed"
        assert not proposals[0].problems  # a valid policy
        # a reviewer simulates it against the service's recent flows (a read: nothing kept)
        flows = service.recent_flows() or []
        assert len(flows) > 0
        report = simulate_proposal(service.proposal_store, proposals[0], flows, actor="rita")
        assert report.flows_judged > 0
        # the last window closes without new flows (idle_close), so every flow is scored
        _wait(lambda: service.builder.open_windows == 0, 30, "the last windows to close")
        _wait(
            lambda: service.windows_recorded == service.builder.stats.windows_closed,
            30,
            "every closed window recorded",
        )
        # Every incident is answered by a proposal for the workload that misbehaved, made for
        # its attacker's (or a subject's) anomaly, and by more only for peers the first did
        # not name (see the test above): the victims of the scan are linked to
        # the scanner's incident, get no proposal of their own, and alert nothing of their own.
        # No proposal is refused for its target; an incident without one says why.
        anomalies = {a.id: a for a in service.store.list(limit=1000)}
        own = [a for a in anomalies.values() if a.role != "victim"]

        def answered() -> list[Any]:
            made = service.proposal_store.list(limit=1000)
            told = log.getvalue()
            done = {p.anomaly_id for p in made} | {
                i for i in anomalies if f"no containment proposed for anomaly {i}: " in told
            }
            incidents = {anomalies[i].incident for i in done if i in anomalies}
            return made if all(a.id in done or a.incident in incidents for a in own) else []

        made = _wait(answered, 60, "a proposal (or the reason for none) for every incident")
        assert "does not target" not in log.getvalue()
        assert all(
            anomalies[p.anomaly_id].role != "victim" for p in made if p.anomaly_id in anomalies
        )
        # a later proposal of an incident names a peer the earlier ones for that workload do not
        offered: dict[tuple[str, str], frozenset[str]] = {}
        for p in sorted(made, key=lambda p: p.id):
            key = (anomalies[p.anomaly_id].incident, p.identity)
            assert key not in offered or peer_rules(p.policy) - offered[key], p.note
            offered[key] = offered.get(key, frozenset()) | peer_rules(p.policy)
        (scanner,) = {
            a.incident
            for a in anomalies.values()
            if a.identity == label.identity
            and a.role == "attacker"
            and a.first_window_start < label.end
        }
        victims = {a.identity for a in anomalies.values() if a.incident == scanner} - {
            label.identity
        }
        assert len(victims) >= 3 and all(
            a.role == "victim"
            for a in anomalies.values()
            if a.identity in victims and a.incident == scanner
        )
        of_scan = min(
            (p for p in made if anomalies[p.anomaly_id].incident == scanner), key=lambda p: p.id
        )
        assert of_scan.identity == label.identity, of_scan.note
        assert of_scan.policy["metadata"]["annotations"]["netwarden.io/identity"] == label.identity
        assert of_scan.kind == "containment" and not of_scan.problems

        def sampled() -> str:
            text = _metrics(service.registry)
            return (
                text if 'netwarden_ingest_parse_errors_total{reason="not_json"} 1.0' in text else ""
            )

        text = _wait(sampled, 10, "the bad line in the metrics (sampled each second)")
        assert 'netwarden_flows_total{source="file",verdict="FORWARDED"}' in text
        assert "netwarden_windows_scored_total" in text and "netwarden_model_info{" in text
    finally:
        service.shutdown()
        service.store.close()


def _metrics(registry: CollectorRegistry) -> str:
    from prometheus_client import generate_latest

    return generate_latest(registry).decode()


def test_backpressure_bounds_the_queue(tmp_path, model_dir) -> None:
    """A pipeline that falls behind makes the source wait: the queue never grows past its
    bound and nothing is lost."""
    attack = generate(tmp_path / "burst", hours=0.25, seed=33, start=T0 + timedelta(hours=3))
    config = _config(tmp_path, model_dir, attack.flows_path)
    model = CurrentModel(model_dir, windows=WindowConfig(window_seconds=60))
    model.refresh()
    store = AnomalyStore(f"sqlite:///{tmp_path / 'db.sqlite'}")
    source = FollowFile(attack.flows_path, poll_interval=0.05)
    service = Service(
        config, source, model, store, CollectorRegistry(), queue_batches=4, log=lambda _: None
    )
    gate = threading.Event()
    add = service.detector.add
    sizes: list[int] = []

    def slow_add(batch: list[Any], **kwargs: Any) -> Any:
        sizes.append(service.queue.qsize())
        gate.wait()
        return add(batch, **kwargs)

    service.detector.add = slow_add  # type: ignore[method-assign]
    service.start()
    try:
        time.sleep(0.5)
        assert service.queue.qsize() == 4  # full: the source is waiting, not buffering
        gate.set()
        _wait(lambda: source.status().flows == attack.flows, 30, "every flow through")
        assert max(sizes) <= 4
        _wait(lambda: service.builder.stats.flows_seen == attack.flows, 30, "every flow counted")
    finally:
        service.shutdown()
        store.close()


def test_new_model_version_is_picked_up_and_a_bad_one_refused(tmp_path, model_dir) -> None:
    import shutil

    models = tmp_path / "models"
    shutil.copytree(model_dir, models)
    current = CurrentModel(models, windows=WindowConfig(window_seconds=60))
    assert current.refresh() and current.loaded is not None
    first = current.loaded.version
    assert not current.refresh()  # unchanged
    bundle = current.loaded.bundle
    bundle.windows = WindowConfig(window_seconds=30.0)
    second = save_bundle(bundle, models)
    assert not current.refresh()
    assert current.loaded.version == first and "30 s windows" in (current.error or "")
    bundle.windows = WindowConfig(window_seconds=60.0)
    third = save_bundle(bundle, models)
    assert current.refresh() and current.loaded.version == third.name != second.name
    assert current.error is None


def test_api_tokens_come_from_the_configuration(tmp_path, monkeypatch) -> None:
    """NETWARDEN_API_TOKENS reaches the API through the service's configuration; without any
    configured token the embedded default makes its admin token."""
    from netwarden.api.auth import ENV_VAR, new_token
    from netwarden.config import load_config
    from netwarden.service import _tokens

    console = Console(quiet=True)
    monkeypatch.setenv("NETWARDEN_DATA_DIR", str(tmp_path / "env"))
    _, entry = new_token("ci", "operator")
    monkeypatch.setenv(ENV_VAR, entry.line)
    config = load_config(None)
    assert config.api_tokens == entry.line
    assert list(_tokens(config, console)) == [entry]
    assert not (tmp_path / "env" / "admin.token").exists()
    monkeypatch.delenv(ENV_VAR)
    config = load_config(None)
    (made,) = _tokens(config, console)
    assert made.name == "local-admin" and made.role.name == "admin"
    assert (tmp_path / "env" / "admin.token").exists()


@pytest.mark.slow
def test_embedded_default_as_a_user_runs_it(tmp_path) -> None:
    """`netwarden serve` with no configuration (sped up): it trains a first model on generated
    history, streams the generator, detects the injected attack, alerts Alertmanager, serves the
    API with the token it made, and its /metrics passes promtool; SIGTERM stops it cleanly."""
    promtool = require("promtool", "prometheus")
    with start_alertmanager(tmp_path / "am") as am:
        port = free_port()
        env = {
            **os.environ,
            "NETWARDEN_DATA_DIR": str(tmp_path / "data"),
            "NETWARDEN_API__PORT": str(port),
            "NETWARDEN_GENERATOR__SPEED": "20",
            "NETWARDEN_GENERATOR__HISTORY_HOURS": "3",
            "NETWARDEN_GENERATOR__ATTACKS": '["port_scan"]',
            "NETWARDEN_ALERTS__ALERTMANAGER_URL": am.url,
            "NETWARDEN_ALERTS__RESEND_INTERVAL": "2",
        }
        env.pop("NETWARDEN_API_TOKENS", None)
        log = (tmp_path / "serve.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "netwarden", "serve"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            with httpx.Client(timeout=5.0) as http:

                def ready() -> bool:
                    assert proc.poll() is None, (tmp_path / "serve.log").read_text()
                    try:
                        return http.get(base + "/readyz").status_code == 200
                    except httpx.HTTPError:
                        return False

                _wait(ready, 240, "/readyz", interval=0.5)
                token = (tmp_path / "data" / "admin.token").read_text().strip()
                auth = {"Authorization": f"Bearer {token}"}
                assert http.get(base + "/api/v1/anomalies").status_code == 401

                def anomalies() -> list[dict[str, Any]]:
                    return http.get(base + "/api/v1/anomalies", headers=auth).json()["items"]

                items = _wait(anomalies, 120, "a live detection", interval=0.5)
                anomaly = http.get(
                    f"{base}/api/v1/anomalies/{items[-1]['id']}", headers=auth
                ).json()
                assert anomaly["reasons"] and anomaly["summary"] and anomaly["examples"]

                def alerted() -> list[dict[str, Any]]:
                    alerts = http.get(am.url + "/api/v2/alerts").json()
                    return [a for a in alerts if a["labels"].get("detector") == "netwarden"]

                alerts = _wait(alerted, 60, "the alert in Alertmanager", interval=0.5)
                assert {a["labels"]["identity"] for a in alerts} & {i["identity"] for i in items}
                metrics = http.get(base + "/metrics").text
                check = subprocess.run(
                    [promtool, "check", "metrics"],
                    input=metrics,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                assert check.returncode == 0, check.stdout + check.stderr
                assert "netwarden_anomalies{" in metrics
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
            log.close()
        output = (tmp_path / "serve.log").read_text()
        assert code == 0, output
        assert "training a first one" in output and "netwarden is serving" in output
        assert (tmp_path / "data" / "models" / "CURRENT").read_text().strip()


def test_hubble_source_to_anomalies(tmp_path, model_dir) -> None:
    """The service reading Hubble's gRPC API (netwarden's own Observer server replaying
    generated traffic with an attack) finds the attack, as from a file."""
    from tests.test_hubble_live import OLD, Observer

    attack = generate(
        tmp_path / "attack",
        hours=0.5,
        seed=32,
        start=T0 + timedelta(hours=3),
        attacks=["port_scan"],
    )
    lines = attack.flows_path.read_bytes().splitlines()
    port = free_port()
    observer = Observer(tmp_path, port, "--max-flows", str(len(lines) + 10))
    try:
        observer.wait_ready()
        observer.feed(lines)
        config = _config(
            tmp_path, model_dir, Path("unused"), hubble={"since": OLD, "backoff_initial": 0.1}
        )
        config.source.spec = f"hubble:127.0.0.1:{port}"
        service, _ = build_service(config, Console(quiet=True))
        assert service.source.kind == "hubble"
        service.start()
        try:
            _wait(lambda: service.source.status().flows == len(lines), 60, "every flow read")
            (label,) = attack.labels
            found = _wait(
                lambda: service.store.list(identity=label.identity),
                30,
                f"an anomaly of {label.identity}",
            )
            assert found[0].reasons
            proposals = _wait(
                lambda: service.proposal_store.list(anomaly_id=found[-1].id),
                10,
                "a containment proposal",
            )
            assert not proposals[0].problems
            text = _wait(
                lambda: (
                    (t := _metrics(service.registry))
                    and 'netwarden_hubble_connected{server="127.0.0.1:' in t
                    and t
                ),
                10,
                "the hubble metrics",
            )
            assert f'netwarden_hubble_connected{{server="127.0.0.1:{port}"}} 1.0' in text
            assert 'netwarden_flows_total{source="hubble",verdict="FORWARDED"}' in text
        finally:
            service.shutdown()
            service.store.close()
    finally:
        observer.stop()


def _api_client(service: Service, tokens: Any) -> Any:
    import warnings

    from netwarden.api.app import create_app

    with warnings.catch_warnings():  # Starlette now prefers httpx2; the project installs httpx
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
        from fastapi.testclient import TestClient
    return TestClient(create_app(service, tokens), raise_server_exceptions=False)


def test_benign_changes_are_reviewed_through_the_api(tmp_path, model_dir) -> None:
    """A new service and a new SaaS vendor in a followed file: each is one change in the API,
    announced to the real Alertmanager as information; they survive a restart without being
    reported again; accepting the service proposes its policy amendments and, once the pipeline
    applied it, its edges are no longer new; rejecting the vendor records an anomaly (proposed a
    containment) and its traffic is not reported as a change again."""
    from netwarden.api.auth import new_token

    changed = generate(
        tmp_path / "changed",
        hours=1.5,
        seed=31,  # the cluster the model learned
        start=T0 + timedelta(hours=3),
        changes=["new_service", "new_saas_vendor"],
    )
    lines = changed.flows_path.read_bytes().splitlines(keepends=True)
    split = (T0 + timedelta(hours=4, minutes=20)).strftime("%Y-%m-%dT%H:%M:%S").encode()
    assert lines[0].startswith(b'{"flow":{"time":"'), lines[0][:40]
    cut = next(i for i, line in enumerate(lines) if line[17:36] >= split)
    followed = tmp_path / "flows.jsonl"
    followed.write_bytes(b"".join(lines[:cut]))
    operator, entry = new_token("olga", "operator")
    _, reviewer = new_token("rita", "reviewer")
    with start_alertmanager(tmp_path / "alertmanager") as am:
        config = _config(
            tmp_path,
            model_dir,
            followed,
            api_tokens=f"{entry.line},{reviewer.line}",
            alerts={"alertmanager_url": am.url, "backoff_initial": 0.1, "backoff_max": 1},
        )
        auth = {"Authorization": f"Bearer {operator}"}

        # -- first run: the changes appear, once, and are announced ---------------------------
        service, tokens = build_service(config, Console(file=io.StringIO()))
        service.start()
        try:
            client = _api_client(service, tokens)

            def listed() -> list[dict[str, Any]]:
                r = client.get("/api/v1/changes", headers=auth)
                assert r.status_code == 200, r.text
                items = r.json()["items"]
                return items if len(items) >= 2 else []

            found = _wait(listed, 60, "both changes in the API")
            by_kind = {c["kind"]: c for c in found}
            assert len(found) == 2 and set(by_kind) == {"workload", "vendor"}
            workload, vendor = by_kind["workload"], by_kind["vendor"]
            assert workload["subject"] == "checkout/fraud-check"
            assert vendor["subject"] == "postmarkapp.com" and vendor["identities"] == [
                "shop/mailer"
            ]
            assert all(c["status"] == "open" for c in found)

            def announced() -> list[dict[str, Any]]:
                got = httpx.get(
                    f"{am.url}/api/v2/alerts",
                    params={"filter": 'alertname="NetwardenChange"'},
                    timeout=5,
                ).json()
                return got if len(got) == 2 else []

            notices = _wait(announced, 30, "the changes announced to Alertmanager")
            assert {n["labels"]["change_id"] for n in notices} == {workload["id"], vendor["id"]}
            assert {n["labels"]["severity"] for n in notices} == {"info"}
        finally:
            assert service.shutdown()
            service.store.close()

        # -- after a restart: restored, decided, applied ----------------------------------------
        log = io.StringIO()
        again = config.model_copy(
            update={"source": config.source.model_copy(update={"from_start": False})}
        )
        service, tokens = build_service(again, Console(file=log, soft_wrap=True))
        service.start()
        try:
            assert "2 open changes restored" in log.getvalue()
            client = _api_client(service, tokens)
            r = client.post(
                f"/api/v1/changes/{workload['id']}/accept", headers=auth, json={"note": "ours"}
            )
            assert r.status_code == 200, r.text
            accepted = r.json()
            assert accepted["status"] == "accepted" and len(accepted["proposal_ids"]) == 4
            for pid in accepted["proposal_ids"]:
                p = client.get(f"/api/v1/proposals/{pid}", headers=auth).json()
                assert p["valid"] and p["kind"] == "baseline" and p["state"] == "proposed"
                assert p["identity"] in workload["identities"]
            r = client.post(f"/api/v1/changes/{vendor['id']}/reject", headers=auth)
            assert r.status_code == 200, r.text
            (anomaly_id,) = r.json()["anomaly_ids"]

            def applied() -> bool:
                return all(
                    client.get(f"/api/v1/changes/{c['id']}", headers=auth).json()["applied"]
                    for c in (workload, vendor)
                )

            _wait(applied, 15, "the decisions applied by the pipeline")
            anomaly = client.get(f"/api/v1/anomalies/{anomaly_id}", headers=auth).json()
            assert (anomaly["identity"], anomaly["role"], anomaly["state"]) == (
                "shop/mailer",
                "subject",
                "open",
            )
            assert "olga rejected change" in anomaly["summary"]
            # the rejection is contained like any anomaly (or says why not)
            _wait(
                lambda: (
                    service.proposal_store.list(anomaly_id=anomaly_id)
                    or f"no containment proposed for anomaly {anomaly_id}" in log.getvalue()
                ),
                30,
                "the rejection's containment proposal",
            )
            # the rest of the traffic: the accepted edges are known, the rejected ones held
            with followed.open("ab") as f:
                f.write(b"".join(lines[cut:]))
            _wait(lambda: service.source.status().flows == len(lines) - cut, 30, "every flow read")
            _wait(lambda: service.builder.open_windows == 0, 30, "the last windows to close")
            after = T0 + timedelta(hours=4, minutes=21)  # windows judged after the decisions
            # the builder closes them, then the pipeline thread scores and records them
            _wait(
                lambda: all(service.store.windows(i, since=after) for i in workload["identities"]),
                30,
                "the last windows recorded",
            )
            for identity in workload["identities"]:
                later = service.store.windows(identity, since=after)
                assert later, identity
                assert all(w.new_edges == 0 and not w.changes for w in later), identity
            mailer = service.store.windows("shop/mailer", since=after)
            assert any(w.changes == (vendor["id"],) for w in mailer)  # its record, held
            page = client.get("/api/v1/changes", headers=auth).json()
            assert page["total"] == 2  # nothing reported twice, nothing new
            rejected = client.get(f"/api/v1/changes/{vendor['id']}", headers=auth).json()
            assert rejected["status"] == "rejected"
            assert rejected["last_seen"] > vendor["last_seen"]  # still seen, still rejected
            text = _metrics(service.registry)
            assert 'netwarden_changes{status="accepted"} 1.0' in text
            assert 'netwarden_changes{status="rejected"} 1.0' in text
        finally:
            assert service.shutdown()
            service.store.close()

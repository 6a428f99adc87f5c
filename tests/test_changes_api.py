"""``/api/v1/changes`` in-process (TestClient) on a real SQLite store: listing and filters,
accepting (policy amendments proposed, reviewed and applied to the Kubernetes stand-in like any
proposal), rejecting (an anomaly recorded), and incidents in the anomaly schema."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, get_args
from urllib.parse import parse_qs, urlsplit

import kubernetes.client as k8s
import pytest

from netwarden.api.app import create_app
from netwarden.api.auth import Role, TokenTable, new_token
from netwarden.api.schemas import ChangeKind, ChangeStatus
from netwarden.detector.change_store import KINDS, STATES, ChangeStore
from netwarden.detector.results import ScoredWindow
from netwarden.detector.store import AnomalyStore
from netwarden.remediation.apply import PolicyApplier
from netwarden.remediation.proposals import ProposalStore
from netwarden.remediation.propose import DNS_SELECTOR
from netwarden.remediation.target import target_problems
from tests.k8s_standin import K8sStandIn
from tests.test_api import Api, Clock, FakeService, TestClient, assert_problem
from tests.test_change_store import T0, new_workload_change, vendor_change

CNPS = "ciliumnetworkpolicies"
MINUTE = timedelta(seconds=60)
WORKLOAD = "chg-0123456789ab"
VENDOR = "chg-aaaaaaaaaaaa"


@dataclass
class ChangeService(FakeService):
    """The test service, with what changes and policy review use."""

    proposal_store: ProposalStore | None = None
    change_store: ChangeStore | None = None
    applier: PolicyApplier | None = None

    def policy_applier(self) -> PolicyApplier | None:
        return self.applier

    def recent_flows(self) -> list[Any] | None:
        return None


def _client(url: str) -> k8s.ApiClient:
    config = k8s.Configuration(host=url)
    config.retries = 0
    return k8s.ApiClient(config)


def _api(tmp_path: Path, applier: PolicyApplier | None = None) -> Api:
    clock = Clock()
    url = f"sqlite:///{tmp_path / 'netwarden.db'}"
    service = ChangeService(
        store=AnomalyStore(url, now=clock),
        proposal_store=ProposalStore(url, now=clock),
        change_store=ChangeStore(url, now=clock),
        applier=applier,
    )
    tokens, entries = {}, []
    for role in Role:
        tokens[role], entry = new_token(f"{role.name}-bot", role)
        entries.append(entry)
    app = create_app(service, TokenTable(entries))
    return Api(TestClient(app, raise_server_exceptions=False), service, clock, tokens)


@pytest.fixture
def standin() -> Iterator[K8sStandIn]:
    with K8sStandIn() as server:
        yield server


@pytest.fixture
def api(tmp_path, standin) -> Iterator[Api]:
    api = _api(tmp_path, PolicyApplier(_client(standin.url), timeout=5))
    service: Any = api.service
    service.change_store.upsert([new_workload_change(WORKLOAD), vendor_change(VENDOR)])
    yield api
    for s in (service.store, service.proposal_store, service.change_store):
        s.close()


def test_the_schema_names_the_stores_states_and_kinds() -> None:
    assert get_args(ChangeStatus) == STATES and get_args(ChangeKind) == KINDS


def test_list_filter_page_and_read(api) -> None:
    r = api.get("/api/v1/changes")
    assert r.status_code == 200, r.text
    page = r.json()
    assert [c["id"] for c in page["items"]] == [VENDOR, WORKLOAD] and page["total"] == 2
    workload = page["items"][1]
    assert workload == workload | {
        "kind": "workload",
        "subject": "checkout/fraud-check",
        "status": "open",
        "identities": [
            "checkout/fraud-check",
            "checkout/payments",
            "db/redis",
            "monitoring/prometheus",
        ],
        "windows": 3,
        "edge_count": 7,
        "applied": False,
        "proposal_ids": [],
        "anomaly_ids": [],
        "decided_at": None,
        "state_actor": "netwarden",
    }
    assert workload["first_seen"] == "2026-03-01T12:00:00Z"
    assert "new workload checkout/fraud-check" in workload["description"]

    def ids(query: str) -> list[str]:
        r = api.get(f"/api/v1/changes?{query}")
        assert r.status_code == 200, r.text
        return [c["id"] for c in r.json()["items"]]

    assert ids("status=open") == [VENDOR, WORKLOAD]
    assert ids("identity=db/redis") == [WORKLOAD] and ids("kind=vendor") == [VENDOR]
    assert ids("since=2026-03-01T12:05:00Z") == [VENDOR]
    assert ids("until=2026-03-01T12:05:00Z") == [WORKLOAD]
    first = api.get("/api/v1/changes?limit=1").json()
    assert first["next"] is not None
    assert parse_qs(urlsplit(first["next"]).query) == {"limit": ["1"], "offset": ["1"]}
    assert [c["id"] for c in api.get(first["next"]).json()["items"]] == [WORKLOAD]
    assert_problem(api.get("/api/v1/changes?status=maybe"), 422)
    assert_problem(api.get("/api/v1/changes?since=2026-03-01T12:00:00"), 422)  # naive
    # one change: its edges and its audit trail
    detail = api.get(f"/api/v1/changes/{WORKLOAD}").json()
    assert detail["edges"][0] == {
        "identity": "checkout/fraud-check",
        "direction": "ingress",
        "peer": "checkout/payments",
        "port": "TCP/8080",
        "flows": 32,
    }
    assert len(detail["edges"]) == 7 and detail["edges_omitted"] == 0
    assert [(e["action"], e["actor"], e["to_state"]) for e in detail["events"]] == [
        ("open", "netwarden", "open")
    ]
    assert_problem(api.get("/api/v1/changes/chg-ffffffffffff"), 404)
    assert_problem(api.get("/api/v1/changes/42"), 422)  # not a change id


def _applied_payments_baseline(api: Api) -> dict[str, Any]:
    """The baseline of checkout/payments, proposed, approved and applied to the cluster."""
    policy = {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {
            "name": "payments-baseline",
            "namespace": "checkout",
            "labels": {"app.kubernetes.io/managed-by": "netwarden"},
            "annotations": {"netwarden.io/identity": "checkout/payments"},
        },
        "spec": {
            "endpointSelector": {"matchLabels": {"k8s:app": "payments"}},
            "egress": [
                {
                    "toEndpoints": [{"matchLabels": dict(DNS_SELECTOR)}],
                    "toPorts": [
                        {
                            "ports": [
                                {"port": "53", "protocol": "UDP"},
                                {"port": "53", "protocol": "TCP"},
                            ],
                            "rules": {"dns": [{"matchName": "api.stripe.com"}]},
                        }
                    ],
                },
                {"toFQDNs": [{"matchName": "api.stripe.com"}],
                 "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}]},
            ],
            "ingress": [{}],
        },
    }  # fmt: skip
    body = {"identity": "checkout/payments", "policy": policy}
    r = api.post("/api/v1/proposals", Role.admin, json=body)
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    assert api.post(f"/api/v1/proposals/{pid}/approve", Role.reviewer).status_code == 200
    r = api.post(f"/api/v1/proposals/{pid}/apply", Role.admin)
    assert r.status_code == 200, r.text
    return policy


def test_accept_proposes_the_amendments_reviewed_like_any_proposal(api, standin) -> None:
    before = _applied_payments_baseline(api)
    r = api.post(f"/api/v1/changes/{WORKLOAD}/accept", json={"note": "the fraud team's service"})
    assert r.status_code == 200, r.text
    change = r.json()
    assert (change["status"], change["state_actor"], change["state_note"]) == (
        "accepted",
        "operator-bot",
        "the fraud team's service",
    )
    assert change["applied"] is False  # the service's pipeline applies it, not the API
    assert [e["action"] for e in change["events"]] == ["open", "accept", "amend"]
    changes: ChangeStore = api.service.change_store  # type: ignore[attr-defined]
    assert changes.decided.is_set() and [c.change_id for c in changes.unapplied()] == [WORKLOAD]
    # one proposal per workload it touched, by netwarden, valid, targeting that workload alone
    proposals = {}
    for proposal_id in change["proposal_ids"]:
        p = api.get(f"/api/v1/proposals/{proposal_id}").json()
        assert (p["kind"], p["state"], p["valid"]) == ("baseline", "proposed", True), p
        assert target_problems(p["policy"], p["identity"]) == []
        assert p["events"][0]["actor"] == "netwarden"
        assert f"accepted change {WORKLOAD}" in p["events"][0]["note"]
        proposals[p["identity"]] = p
    assert set(proposals) == {
        "checkout/fraud-check",
        "checkout/payments",
        "db/redis",
        "monitoring/prometheus",
    }
    # payments: its baseline in the cluster, amended with the call to the new workload
    payments = proposals["checkout/payments"]
    assert payments["name"] == "payments-baseline" and payments["current"] is not None
    assert payments["current"]["spec"] == before["spec"]
    assert payments["policy"]["spec"]["egress"][:2] == before["spec"]["egress"]
    assert payments["policy"]["spec"]["egress"][2] == {
        "toEndpoints": [{"matchLabels": {"k8s:app": "fraud-check"}}],
        "toPorts": [{"ports": [{"port": "8080", "protocol": "TCP"}]}],
    }
    assert payments["patch"] == [
        {"op": "add", "path": "/spec/egress/2", "value": payments["policy"]["spec"]["egress"][2]}
    ]
    assert payments["policy"]["spec"]["ingress"] == [{}]  # not touched
    # the new workload: no baseline yet, so a policy of its own that only adds allows
    new = proposals["checkout/fraud-check"]
    assert new["name"] == "fraud-check-change-0123456789ab" and new["current"] is None
    spec = new["policy"]["spec"]
    assert spec["enableDefaultDeny"] == {"egress": False, "ingress": False}
    assert spec["endpointSelector"] == {"matchLabels": {"k8s:app": "fraud-check"}}
    dns, redis = spec["egress"]
    assert dns["toEndpoints"] == [{"matchLabels": DNS_SELECTOR}]  # lookups through the proxy
    assert redis == {
        "toEndpoints": [
            {"matchLabels": {"k8s:app": "redis", "k8s:io.kubernetes.pod.namespace": "db"}}
        ],
        "toPorts": [{"ports": [{"port": "6379", "protocol": "TCP"}]}],
    }
    (callers,) = spec["ingress"]
    assert callers["fromEndpoints"] == [
        {"matchLabels": {"k8s:app": "payments"}},
        {"matchLabels": {"k8s:app": "prometheus", "k8s:io.kubernetes.pod.namespace": "monitoring"}},
    ]
    assert new["policy"]["metadata"]["annotations"]["netwarden.io/change"] == WORKLOAD
    # reviewed and applied like any proposal: the cluster's baseline now allows the call
    pid = payments["id"]
    assert api.post(f"/api/v1/proposals/{pid}/approve", Role.reviewer).status_code == 200
    r = api.post(f"/api/v1/proposals/{pid}/apply", Role.admin)
    assert r.status_code == 200, r.text
    live = standin.stored(CNPS, "checkout", "payments-baseline")
    assert live is not None and live["spec"]["egress"][2]["toEndpoints"] == [
        {"matchLabels": {"k8s:app": "fraud-check"}}
    ]
    # decided once: a second decision is a conflict naming the state
    for action in ("accept", "reject"):
        body = assert_problem(api.post(f"/api/v1/changes/{WORKLOAD}/{action}"), 409)
        assert body["state"] == "accepted" and "is accepted: cannot" in body["detail"]
    assert_problem(api.post("/api/v1/changes/chg-ffffffffffff/accept"), 404)


def test_a_vendor_amendment_allows_its_names_in_the_dns_rule(api, standin) -> None:
    r = api.post(f"/api/v1/changes/{VENDOR}/accept")
    assert r.status_code == 200, r.text
    (pid,) = r.json()["proposal_ids"]
    p = api.get(f"/api/v1/proposals/{pid}").json()
    assert p["identity"] == "shop/mailer" and p["valid"]
    dns, vendor = p["policy"]["spec"]["egress"]
    assert dns["toPorts"][0]["rules"]["dns"] == [{"matchPattern": "*"}]  # it only adds allows
    assert vendor == {
        "toFQDNs": [{"matchName": "api.postmarkapp.com"}],
        "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}],
    }


def _windows(api: Api, identity: str, change_id: str) -> None:
    namespace, workload = identity.split("/")
    api.service.store.record(
        [
            ScoredWindow(
                identity=identity,
                namespace=namespace,
                workload=workload,
                window_start=T0 + i * MINUTE,
                window_end=T0 + (i + 1) * MINUTE,
                score=0.3,
                threshold=1.0,
                anomalous=False,
                model=f"identity:{identity}",
                fallback=False,
                changes=(change_id,),
                new_edges=1,
            )
            for i in range(10, 14)
        ]
    )


def test_reject_records_an_anomaly_that_alerts_like_any(api) -> None:
    _windows(api, "shop/mailer", VENDOR)
    r = api.post(f"/api/v1/changes/{VENDOR}/reject", json={"note": "nobody signed up for it"})
    assert r.status_code == 200, r.text
    change = r.json()
    assert change["status"] == "rejected" and len(change["anomaly_ids"]) == 1
    assert change["events"][-1]["details"] == {"anomaly_ids": change["anomaly_ids"]}
    anomaly = api.get(f"/api/v1/anomalies/{change['anomaly_ids'][0]}").json()
    assert anomaly == anomaly | {
        "identity": "shop/mailer",
        "state": "open",
        "severity": "warning",
        "role": "subject",
        "incident": "",
        "first_window_start": "2026-03-01T12:10:00Z",  # the first window that showed it
        "window_count": 1,
    }
    assert anomaly["summary"].startswith(
        f"operator-bot rejected change {VENDOR} (nobody signed up for it): new internet service"
    )
    assert [x["text"] for x in anomaly["reasons"][1:]] == [
        "rejected edge to fqdn:api.postmarkapp.com TCP/443 (9 flows)"
    ]
    assert anomaly["examples"]["egress"]["to"] == [
        {"peer": "fqdn:api.postmarkapp.com", "port": "TCP/443", "flows": 9}
    ]
    body = assert_problem(api.post(f"/api/v1/changes/{VENDOR}/accept"), 409)
    assert body["state"] == "rejected"
    assert api.post(f"/api/v1/changes/{VENDOR}/reject", Role.viewer).status_code == 403


def test_anomalies_name_their_incident_and_role(api) -> None:
    def win(identity: str, role: str) -> ScoredWindow:
        namespace, workload = identity.split("/")
        return ScoredWindow(
            identity=identity,
            namespace=namespace,
            workload=workload,
            window_start=T0,
            window_end=T0 + MINUTE,
            score=2.5,
            threshold=1.0,
            anomalous=True,
            model="global",
            fallback=True,
            incident="inc-0123456789ab",
            role=role,
        )

    api.service.store.record([win("shop/recs", "attacker"), win("checkout/payments", "victim")])
    items = api.get("/api/v1/anomalies").json()["items"]
    assert {(a["identity"], a["incident"], a["role"]) for a in items} == {
        ("shop/recs", "inc-0123456789ab", "attacker"),
        ("checkout/payments", "inc-0123456789ab", "victim"),
    }
    plain = replace(win("shop/cart", ""), incident="")
    (a,) = api.service.store.record([plain])
    assert api.get(f"/api/v1/anomalies/{a.id}").json() | {"incident": "", "role": ""} == (
        api.get(f"/api/v1/anomalies/{a.id}").json()
    )

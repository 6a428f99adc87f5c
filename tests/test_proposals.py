"""Policy review: the proposal store's lifecycle and audit log, and the proposals API end to end
(TestClient) against the Kubernetes stand-in (``tests/k8s_standin.py``) through the real
``PolicyApplier`` and the ``kubernetes`` client."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, get_args

import pytest
from kubernetes import client as k8s

from netwarden.api.app import create_app
from netwarden.api.auth import Role, TokenTable, new_token
from netwarden.api.schemas import ProposalKind, ProposalState
from netwarden.detector.results import Reason, ScoredWindow
from netwarden.detector.store import AnomalyStore
from netwarden.remediation.apply import PolicyApplier
from netwarden.remediation.proposals import (
    ACTIONS,
    KINDS,
    STATES,
    ApplyRefused,
    InvalidProposal,
    ProposalLifecycleError,
    ProposalNotFound,
    ProposalStore,
    SecondApproverRequired,
    TargetMismatch,
    apply_proposal,
    rollback_proposal,
)
from tests.flowfactory import connection, decode, pod, world
from tests.k8s_standin import K8sStandIn
from tests.policyfactory import ccnp, cnp
from tests.test_api import T0, Api, Clock, FakeService, TestClient, make_api

CNPS = "ciliumnetworkpolicies"
PROBLEM = "application/problem+json"


# ------------------------------------------------------------------------------- fixtures


def _client(url: str) -> k8s.ApiClient:
    config = k8s.Configuration(host=url)
    config.retries = 0  # fail fast when nothing listens
    return k8s.ApiClient(config)


@dataclass
class ReviewService(FakeService):
    """The test service, plus what policy review uses: a proposal store, an applier, flows."""

    proposal_store: ProposalStore | None = None
    applier: PolicyApplier | None = None
    flows: list[Any] | None = None

    def policy_applier(self) -> PolicyApplier | None:
        return self.applier

    def recent_flows(self) -> list[Any] | None:
        return self.flows


@pytest.fixture
def standin() -> Iterator[K8sStandIn]:
    with K8sStandIn() as server:
        yield server


def _review_api(
    tmp_path: Path, applier: PolicyApplier | None, flows: list[Any] | None = None
) -> Api:
    clock = Clock()
    url = f"sqlite:///{tmp_path / 'netwarden.db'}"
    service = ReviewService(
        store=AnomalyStore(url, now=clock),
        proposal_store=ProposalStore(url, now=clock),
        applier=applier,
        flows=flows,
    )
    tokens, entries = {}, []
    for role in Role:
        tokens[role], entry = new_token(f"{role.name}-bot", role)
        entries.append(entry)
    app = create_app(service, TokenTable(entries))
    client = TestClient(app, raise_server_exceptions=False)
    return Api(client, service, clock, tokens)


def _close(api: Api) -> None:
    api.service.store.close()
    proposals = getattr(api.service, "proposal_store", None)
    if proposals is not None:
        proposals.close()


@pytest.fixture
def api(tmp_path, standin) -> Iterator[Api]:
    api = _review_api(tmp_path, PolicyApplier(_client(standin.url), timeout=5))
    yield api
    _close(api)


def _record_anomaly(
    api: Api, identity: str = "shop/cart", *, peer: str = "world:192.0.2.10", port: str = "TCP/443"
) -> int:
    """One anomaly whose example flows show egress to ``peer`` on ``port``."""
    namespace, workload = identity.split("/")
    reason = Reason(
        feature="egress_world_flows",
        value=40.0,
        baseline=2.0,
        spread=1.0,
        contribution=0.5,
        text="40 flows to the internet (baseline 2)",
    )
    start = T0
    window = ScoredWindow(
        identity=identity,
        namespace=namespace,
        workload=workload,
        window_start=start,
        window_end=start + timedelta(seconds=60),
        score=2.5,
        threshold=1.0,
        anomalous=True,
        model="global",
        fallback=True,
        reasons=(reason,),
        examples={"egress": {"to": [{"peer": peer, "port": port, "flows": 40}]}},
        summary=f"{identity} talked to {peer}",
    )
    (anomaly,) = api.service.store.record([window])
    return anomaly.id


def _baseline(
    name: str = "cart-baseline", peer_app: str = "frontend", *, identity: str = "shop/cart"
) -> dict[str, Any]:
    namespace, workload = identity.split("/")
    return cnp(
        {"k8s:app": workload},
        name=name,
        namespace=namespace,
        ingress=[{"fromEndpoints": [{"matchLabels": {"k8s:app": peer_app}}]}],
        egress=[
            {
                "toEndpoints": [{"matchLabels": {"k8s:app": "db"}}],
                "toPorts": [{"ports": [{"port": "5432", "protocol": "TCP"}]}],
            }
        ],
    )


def _create(api: Api, body: dict[str, Any], role: Role = Role.admin) -> dict[str, Any]:
    """Propose as ``role`` (admin-bot by default: reviewer-bot, another person, approves)."""
    r = api.post("/api/v1/proposals", role, json=body)
    assert r.status_code == 201, r.text
    assert r.headers["location"].endswith(f"/api/v1/proposals/{r.json()['id']}")
    return r.json()


def _act(api: Api, proposal_id: int, action: str, role: Role, **kwargs: Any) -> Any:
    return api.post(f"/api/v1/proposals/{proposal_id}/{action}", role, **kwargs)


def _problem(r: Any, status: int, type_: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body = r.json()
    if type_ is not None:
        assert body["type"] == f"urn:netwarden:problem:{type_}", body
    return body


def _applied_baseline(api: Api) -> dict[str, Any]:
    created = _create(api, {"identity": "shop/cart", "policy": _baseline()})
    assert _act(api, created["id"], "approve", Role.reviewer).status_code == 200
    r = _act(api, created["id"], "apply", Role.admin)
    assert r.status_code == 200, r.text
    return r.json()


# ------------------------------------------------------------------------------ the store


@pytest.fixture(params=["memory", "postgresql"])
def store(request) -> Iterator[ProposalStore]:
    """In SQLite's memory, then in a PostgreSQL database (row locks guard the claims there)."""
    url = "sqlite://" if request.param == "memory" else request.getfixturevalue("postgres_url")
    with ProposalStore(url) as s:
        yield s


def test_lifecycle_table_and_audit_log(store) -> None:
    p = store.create(kind="baseline", identity="shop/cart", policy=_baseline(), actor="rita")
    assert (p.state, p.valid, p.problems, p.name, p.namespace) == (
        "proposed",
        True,
        [],
        "cart-baseline",
        "shop",
    )
    approved = store.approve(p.id, actor="sam", note="looks right")
    assert approved.state == "approved"
    with pytest.raises(
        ProposalLifecycleError,
        match="proposal 1 is approved: cannot approve "
        r"\(approve is allowed from: proposed\)",
    ):
        store.approve(p.id, actor="sam")
    with pytest.raises(ProposalLifecycleError, match="cannot rollback"):
        store.mark_rolled_back(p.id, actor="ada")
    events = store.events(p.id)
    assert [(e.actor, e.action, e.from_state, e.to_state) for e in events] == [
        ("rita", "propose", None, "proposed"),
        ("sam", "approve", "proposed", "approved"),
    ]
    assert events[1].note == "looks right" and events[1].at.tzinfo is not None
    with pytest.raises(ProposalNotFound):
        store.events(99)
    with pytest.raises(ProposalNotFound):
        store.approve(99, actor="sam")


def test_only_a_proposed_proposal_can_be_rejected_and_rejection_is_final(store) -> None:
    p = store.create(kind="baseline", identity="shop/cart", policy=_baseline(), actor="rita")
    assert store.reject(p.id, actor="rita", note="too wide").state == "rejected"
    for act in (store.approve, store.reject):
        with pytest.raises(ProposalLifecycleError, match="is rejected"):
            act(p.id, actor="rita")


def test_an_invalid_policy_is_kept_with_its_problems_and_never_approved(store) -> None:
    policy = _baseline()
    policy["spec"]["egres"] = []  # misspelt
    p = store.create(kind="baseline", identity="shop/cart", policy=policy, actor="rita")
    assert not p.valid and any(
        "egres" in problem["path"] + problem["message"] for problem in p.problems
    )
    with pytest.raises(InvalidProposal, match="invalid policy"):
        store.approve(p.id, actor="sam")
    assert store.get(p.id).state == "proposed"  # type: ignore[union-attr]
    assert store.events(p.id)[0].details["problems"] == p.problems


def test_list_filters_count_and_newest_first(store) -> None:
    for i, (kind, identity) in enumerate(
        [("baseline", "shop/cart"), ("containment", "shop/cart"), ("baseline", "db/pg")]
    ):
        store.create(
            kind=kind,
            identity=identity,
            policy=_baseline(f"p{i}", identity=identity),
            actor="rita",
            anomaly_id=7 if kind == "containment" else None,
        )
    assert [p.id for p in store.list()] == [3, 2, 1]
    assert [p.id for p in store.list(identity="shop/cart")] == [2, 1]
    assert [p.id for p in store.list(kind="containment")] == [2]
    assert store.count(kind="baseline") == 2 and store.count(state="approved") == 0
    assert [p.id for p in store.list(limit=1, offset=1)] == [2]
    with pytest.raises(ValueError, match="unknown state"):
        store.list(state="done")
    with pytest.raises(ValueError, match="unknown kind"):
        store.create(kind="magic", identity="a/b", policy=_baseline(), actor="rita")


def test_states_and_kinds_match_the_api_schema() -> None:
    assert get_args(ProposalState) == STATES
    assert get_args(ProposalKind) == KINDS
    assert set(ACTIONS["simulate"]) == set(STATES)


def test_apply_and_rollback_through_the_store(store, standin) -> None:
    applier = PolicyApplier(_client(standin.url), timeout=5)
    p = store.create(kind="baseline", identity="shop/cart", policy=_baseline(), actor="rita")
    with pytest.raises(ProposalLifecycleError, match="cannot apply"):
        apply_proposal(store, applier, p.id, actor="ada")
    assert standin.writes() == []
    store.approve(p.id, actor="sam")
    applied = apply_proposal(store, applier, p.id, actor="ada")
    assert applied.state == "applied" and applied.dry_run["passed"]  # type: ignore[index]
    assert applied.change["previous"] is None  # type: ignore[index]
    assert standin.stored(CNPS, "shop", "cart-baseline") is not None
    assert store.latest_applied("shop", "cart-baseline").id == p.id  # type: ignore[union-attr]
    done = rollback_proposal(store, applier, p.id, actor="ada")
    assert done.state == "rolled_back"
    assert standin.stored(CNPS, "shop", "cart-baseline") is None  # it created it: deleted
    assert store.latest_applied("shop", "cart-baseline") is None
    assert [(e.action, e.from_state, e.to_state) for e in store.events(p.id)] == [
        ("propose", None, "proposed"),
        ("approve", "proposed", "approved"),
        ("start_apply", "approved", "applying"),  # the claim, before any request
        ("dry_run", "applying", "applying"),
        ("apply", "applying", "applied"),
        ("start_rollback", "applied", "rolling_back"),
        ("rollback", "rolling_back", "rolled_back"),
    ]


def test_an_unreachable_cluster_leaves_the_proposal_approved(store) -> None:
    applier = PolicyApplier(_client("http://127.0.0.1:9"), timeout=2)  # discard port: refused
    p = store.create(kind="baseline", identity="shop/cart", policy=_baseline(), actor="rita")
    store.approve(p.id, actor="sam")
    with pytest.raises(ApplyRefused) as info:
        apply_proposal(store, applier, p.id, actor="ada")
    assert info.value.record.state == "approved"
    last = store.events(p.id)[-1]
    assert (last.action, last.from_state, last.to_state) == (
        "dry_run_error",
        "applying",
        "approved",  # the claim released: it can be retried
    )


# -------------------------------------------------------------------------------- the API


def test_review_and_apply_a_containment_end_to_end(api, standin) -> None:
    baseline = _applied_baseline(api)
    assert baseline["state"] == "applied" and baseline["diff"] is None
    live_before = standin.stored(CNPS, "shop", "cart-baseline")
    anomaly_id = _record_anomaly(api)

    created = _create(api, {"anomaly_id": anomaly_id})
    pid = created["id"]
    assert (
        created["kind"],
        created["identity"],
        created["anomaly_id"],
        created["state"],
        created["valid"],
    ) == ("containment", "shop/cart", anomaly_id, "proposed", True)
    assert created["name"] == "cart-baseline"  # a patch of the baseline in the cluster

    shown = api.get(f"/api/v1/proposals/{pid}").json()
    assert shown["yaml"].startswith("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\n")
    assert shown["current"]["spec"] == _baseline()["spec"]
    assert "--- current/shop/cart-baseline" in shown["diff"]
    assert "+  egressDeny:" in shown["diff"] and "192.0.2.10/32" in shown["diff"]
    assert shown["patch"] and all(
        op["path"].startswith(("/spec", "/metadata/annotations")) for op in shown["patch"]
    )
    assert shown["problems"] == [] and shown["dry_run"] is None and shown["applied"] is None
    assert [(e["actor"], e["action"]) for e in shown["events"]] == [("admin-bot", "propose")]

    for role in (Role.viewer, Role.operator):  # below reviewer: may look, not approve
        _problem(_act(api, pid, "approve", role), 403)
    _problem(_act(api, pid, "apply", Role.admin), 409, "lifecycle-conflict")  # not approved
    r = _act(api, pid, "approve", Role.reviewer, json={"note": "contain it"})
    assert r.status_code == 200 and r.json()["state"] == "approved"
    _problem(_act(api, pid, "apply", Role.reviewer), 403)
    assert standin.stored(CNPS, "shop", "cart-baseline") == live_before

    r = _act(api, pid, "apply", Role.admin)
    assert r.status_code == 200, r.text
    applied = r.json()
    assert applied["state"] == "applied" and applied["dry_run"]["passed"] is True
    assert applied["applied"]["previous"]["spec"] == _baseline()["spec"]
    live = standin.stored(CNPS, "shop", "cart-baseline")
    assert live["spec"]["egressDeny"] == [
        {
            "toCIDRSet": [{"cidr": "192.0.2.10/32"}],
            "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}],
        }
    ]
    dry_runs = [w for w in standin.writes() if w.query.get("dryRun") == "All"]
    assert dry_runs  # the dry-run went to the server before the apply

    _problem(_act(api, pid, "rollback", Role.reviewer), 403)
    r = _act(api, pid, "rollback", Role.admin, json={"note": "false alarm"})
    assert r.status_code == 200 and r.json()["state"] == "rolled_back"
    restored = standin.stored(CNPS, "shop", "cart-baseline")
    assert restored["spec"] == live_before["spec"] and "egressDeny" not in restored["spec"]
    _problem(_act(api, pid, "rollback", Role.admin), 409, "lifecycle-conflict")

    events = api.get(f"/api/v1/proposals/{pid}").json()["events"]
    assert [(e["actor"], e["action"], e["from_state"], e["to_state"]) for e in events] == [
        ("admin-bot", "propose", None, "proposed"),
        ("reviewer-bot", "approve", "proposed", "approved"),
        ("admin-bot", "start_apply", "approved", "applying"),
        ("admin-bot", "dry_run", "applying", "applying"),
        ("admin-bot", "apply", "applying", "applied"),
        ("admin-bot", "start_rollback", "applied", "rolling_back"),
        ("admin-bot", "rollback", "rolling_back", "rolled_back"),
    ]
    assert events[1]["note"] == "contain it" and events[-1]["note"] == "false alarm"


def test_a_standalone_containment_has_no_diff(api) -> None:
    created = _create(api, {"anomaly_id": _record_anomaly(api)})
    assert created["name"] == "cart-containment-1"
    assert (created["current"], created["diff"], created["patch"]) == (None, None, None)
    assert "egressDeny" in created["yaml"]


def test_a_failed_dry_run_leaves_the_proposal_failed_and_nothing_applied(api, standin) -> None:
    other = _baseline(peer_app="frontend")
    k8s.CustomObjectsApi(_client(standin.url)).patch_namespaced_custom_object(
        "cilium.io",
        "v2",
        "shop",
        CNPS,
        "cart-baseline",
        body=other,
        field_manager="platform-team",
        _content_type="application/apply-patch+yaml",
    )
    before = standin.stored(CNPS, "shop", "cart-baseline")
    pid = _create(api, {"identity": "shop/cart", "policy": _baseline(peer_app="checkout")})["id"]
    assert _act(api, pid, "approve", Role.reviewer).status_code == 200

    body = _problem(_act(api, pid, "apply", Role.admin), 409, "apply-failed")
    assert body["state"] == "failed" and "platform-team" in body["detail"]
    assert "nothing was applied" in body["detail"]
    assert standin.stored(CNPS, "shop", "cart-baseline") == before
    ours = [w for w in standin.writes() if w.query.get("fieldManager") == "netwarden"]
    assert ours and all(w.query.get("dryRun") == "All" for w in ours)

    shown = api.get(f"/api/v1/proposals/{pid}").json()
    assert shown["state"] == "failed" and shown["applied"] is None
    assert shown["dry_run"]["passed"] is False
    assert shown["dry_run"]["managers"] == {"platform-team": [".spec.ingress"]}
    assert shown["events"][-1]["action"] == "fail"
    _problem(_act(api, pid, "apply", Role.admin), 409, "lifecycle-conflict")


def test_an_invalid_policy_cannot_be_approved(api) -> None:
    policy = _baseline()
    policy["spec"]["ingress"][0]["fromEndpoints"] = "frontend"  # not a list
    created = _create(api, {"identity": "shop/cart", "policy": policy})
    assert created["valid"] is False and created["problems"]
    body = _problem(_act(api, created["id"], "approve", Role.reviewer), 422, "invalid-policy")
    assert body["problems"] == created["problems"]
    assert api.get(f"/api/v1/proposals/{created['id']}").json()["state"] == "proposed"
    _problem(_act(api, created["id"], "simulate", Role.viewer), 422, "invalid-policy")


def test_reject_is_final(api) -> None:
    pid = _create(api, {"identity": "shop/cart", "policy": _baseline()})["id"]
    _problem(_act(api, pid, "reject", Role.operator), 403)
    r = _act(api, pid, "reject", Role.reviewer, json={"note": "too wide"})
    assert r.status_code == 200 and r.json()["state"] == "rejected"
    _problem(_act(api, pid, "approve", Role.reviewer), 409, "lifecycle-conflict")


def test_list_with_filters_and_pages(api) -> None:
    anomaly_id = _record_anomaly(api)
    _create(api, {"identity": "shop/cart", "policy": _baseline()})
    _create(api, {"anomaly_id": anomaly_id})
    _create(api, {"identity": "db/pg", "policy": _baseline("pg-baseline", identity="db/pg")})
    page = api.get("/api/v1/proposals", params={"limit": 2}).json()
    assert [p["id"] for p in page["items"]] == [3, 2] and page["total"] == 3
    assert page["next"] is not None and "offset=2" in page["next"]
    assert [p["id"] for p in api.get(page["next"]).json()["items"]] == [1]
    assert [
        p["id"]
        for p in api.get("/api/v1/proposals", params={"kind": "containment"}).json()["items"]
    ] == [2]
    assert api.get("/api/v1/proposals", params={"identity": "shop/cart"}).json()["total"] == 2
    assert api.get("/api/v1/proposals", params={"state": "applied"}).json()["total"] == 0
    _problem(api.get("/api/v1/proposals", params={"state": "done"}), 422)
    _problem(api.get("/api/v1/proposals/99"), 404)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({}, 422),
        ({"anomaly_id": 1, "identity": "shop/cart"}, 422),
        ({"identity": "not-an-identity", "policy": {}}, 422),
        ({"anomaly_id": 99}, 404),
        ({"identity": "shop/cart"}, 409),  # no policy and no flow history
    ],
)
def test_create_refuses_bad_requests(api, body, status) -> None:
    r = api.post("/api/v1/proposals", Role.reviewer, json=body)
    _problem(r, status)
    if status == 409:
        assert r.json()["type"] == "urn:netwarden:problem:no-flow-history"


def test_create_needs_a_reviewer(api) -> None:
    _problem(api.post("/api/v1/proposals", Role.operator, json={"anomaly_id": 1}), 403)


def test_simulate_without_flow_history(api) -> None:
    pid = _create(api, {"identity": "shop/cart", "policy": _baseline()})["id"]
    body = _problem(_act(api, pid, "simulate", Role.viewer), 409, "no-flow-history")
    assert body["detail"].startswith("no flow history")


def test_apply_without_a_kubernetes_api(tmp_path) -> None:
    api = _review_api(tmp_path, applier=None)
    try:
        pid = _create(api, {"identity": "shop/cart", "policy": _baseline()})["id"]
        assert _act(api, pid, "approve", Role.reviewer).status_code == 200
        body = _problem(_act(api, pid, "apply", Role.admin), 503, "no-kubernetes-api")
        assert body["detail"].startswith("no Kubernetes API configured")
        assert api.get(f"/api/v1/proposals/{pid}").json()["state"] == "approved"
    finally:
        _close(api)


def _cart_flows() -> list[Any]:
    cart = pod("shop", "cart", 3001, "10.0.1.5")
    db = pod("shop", "db", 3002, "10.0.1.9")
    lines = []
    for i in range(5):
        lines += connection(cart, db, seconds=i, dport=5432, sport=41000 + i)
        lines += connection(
            cart, world("192.0.2.10"), seconds=i + 0.5, dport=443, sport=42000 + i, both_ends=False
        )
    return decode(lines)


def test_baseline_from_recent_flows_and_simulate(tmp_path) -> None:
    api = _review_api(tmp_path, applier=None, flows=_cart_flows())
    try:
        created = _create(api, {"identity": "shop/cart"})
        assert created["kind"] == "baseline" and created["valid"]
        assert created["name"] == "cart-baseline" and "5432" in created["yaml"]
        r = _act(api, created["id"], "simulate", Role.viewer)
        assert r.status_code == 200, r.text
        report = r.json()
        assert report["flows_seen"] == len(api.service.recent_flows())  # type: ignore[attr-defined]
        assert report["dropped"] == 0 and report["allowed"] > 0  # learned from these flows
        assert "would drop: 0 flows" in report["text"]
        # A simulation is a read: no audit event, however often a viewer runs it.
        assert _act(api, created["id"], "simulate", Role.viewer).json() == report
        events = api.get(f"/api/v1/proposals/{created['id']}").json()["events"]
        assert [e["action"] for e in events] == ["propose"]

        anomaly_id = _record_anomaly(api)
        containment = _create(api, {"anomaly_id": anomaly_id})
        report = _act(api, containment["id"], "simulate", Role.viewer).json()
        assert report["dropped"] == report["dropped_by_deny_rule"] > 0
        assert report["groups"][0]["peer"] == "world:192.0.2.10"

        _problem(
            api.post("/api/v1/proposals", Role.reviewer, json={"identity": "db/none"}),
            422,
            "no-flows-for-identity",
        )
    finally:
        _close(api)


def test_a_service_without_a_proposal_store_gets_one_on_its_database(tmp_path) -> None:
    api = make_api(tmp_path)  # the plain test service: no proposal_store, applier or flows
    try:
        pid = _create(api, {"identity": "shop/cart", "policy": _baseline()})["id"]
        assert api.get(f"/api/v1/proposals/{pid}").status_code == 200
        _problem(_act(api, pid, "simulate", Role.viewer), 409, "no-flow-history")
        assert _act(api, pid, "approve", Role.reviewer).status_code == 200
        _problem(_act(api, pid, "apply", Role.admin), 503, "no-kubernetes-api")
        with ProposalStore(api.service.store.url) as same_database:
            assert same_database.get(pid).state == "approved"  # type: ignore[union-attr]
    finally:
        api.service.store.close()
        for opened in api.client.app.state.proposal_stores.values():  # type: ignore[attr-defined]
            opened.close()


def test_a_refused_rollback_keeps_the_proposal_applied(api, standin) -> None:
    _applied_baseline(api)
    pid = _create(api, {"identity": "shop/cart", "policy": _baseline(peer_app="checkout")})["id"]
    assert _act(api, pid, "approve", Role.reviewer).status_code == 200
    assert _act(api, pid, "apply", Role.admin).status_code == 200
    standin.before = lambda request: (  # someone else keeps changing it under the rollback
        standin.touch(
            CNPS,
            "shop",
            "cart-baseline",
            {"metadata": {"annotations": {"n": str(len(standin.requests))}}},
        )
        if request.method == "PUT"
        else None
    )

    body = _problem(_act(api, pid, "rollback", Role.admin), 409, "policy-changed")
    assert body["state"] == "applied" and "rollback" in body["detail"]
    shown = api.get(f"/api/v1/proposals/{pid}").json()
    assert shown["state"] == "applied" and shown["events"][-1]["action"] == "rollback_error"
    assert shown["events"][-1]["from_state"] == "rolling_back"

    # The other writer stopped, but the policy is no longer what netwarden applied: rolling
    # back would undo their change, so it stays refused until a person sorts it out.
    standin.before = None
    live = standin.stored(CNPS, "shop", "cart-baseline")
    body = _problem(_act(api, pid, "rollback", Role.admin), 409, "policy-changed")
    assert "annotations changed" in body["detail"] and "someone-else" in body["detail"]
    assert body["reason"] == "ChangedSinceApply"
    assert standin.stored(CNPS, "shop", "cart-baseline") == live
    assert api.get(f"/api/v1/proposals/{pid}").json()["state"] == "applied"


def test_apply_in_audit_mode_needs_cilium_in_audit_mode(api, standin) -> None:
    """?audit=true rolls out only where Cilium is in policy audit mode; elsewhere nothing is
    applied and the proposal stays approved (the cluster, not the policy, said no)."""
    pid = _create(api, {"identity": "shop/cart", "policy": _baseline()})["id"]
    assert _act(api, pid, "approve", Role.reviewer).status_code == 200
    refused = _problem(
        _act(api, pid, "apply", Role.admin, params={"audit": "true"}), 409, "audit-mode-unavailable"
    )
    assert refused["state"] == "approved" and "cilium-config" in refused["detail"]
    assert standin.stored(CNPS, "shop", "cart-baseline") is None
    standin.put_configmap("kube-system", "cilium-config", {"policy-audit-mode": "true"})
    r = _act(api, pid, "apply", Role.admin, params={"audit": "true"})
    assert r.status_code == 200 and r.json()["state"] == "applied", r.text
    assert standin.stored(CNPS, "shop", "cart-baseline") is not None


# ----------------------------------------------------------------- races, two people, target


def _threads(*actions: Any) -> list[Any]:
    """Run ``actions`` at once in threads (released together by a barrier); each one's result
    or exception."""
    start = threading.Barrier(len(actions))
    results: list[Any] = [None] * len(actions)

    def run(i: int) -> None:
        start.wait(timeout=5)
        try:
            results[i] = actions[i]()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(actions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def _writes_meet(standin: K8sStandIn, parties: int) -> None:
    """Hold each real (not dry-run) write until ``parties`` of them arrived (or 1 s passed), so
    that concurrent appliers have all read and dry-run before any of them writes."""
    barrier = threading.Barrier(parties)

    def arrive(request: Any) -> None:
        if request.method != "GET" and not request.query.get("dryRun"):
            try:
                barrier.wait(timeout=1)
            except threading.BrokenBarrierError:
                pass

    standin.arrive = arrive


def _approved(store: ProposalStore, policy: dict[str, Any], identity: str = "shop/cart") -> int:
    p = store.create(kind="baseline", identity=identity, policy=policy, actor="rita")
    return store.approve(p.id, actor="sam").id


def test_one_proposal_applied_twice_at_once_reaches_the_cluster_once(store, standin) -> None:
    pid = _approved(store, _baseline())
    _writes_meet(standin, 2)
    appliers = [PolicyApplier(_client(standin.url), timeout=5) for _ in range(2)]
    results = _threads(*(lambda a=a: apply_proposal(store, a, pid, actor="ada") for a in appliers))
    [won] = [r for r in results if not isinstance(r, Exception)]
    [lost] = [r for r in results if isinstance(r, Exception)]
    assert won.state == "applied"
    assert isinstance(lost, ProposalLifecycleError) and lost.state in ("applying", "applied")
    writes = standin.writes()
    assert [(w.method, w.query.get("dryRun")) for w in writes if w.method != "PUT"] == [
        ("POST", "All"),
        ("POST", None),
    ]
    assert [e.action for e in store.events(pid)].count("start_apply") == 1


def test_two_proposals_creating_one_policy_at_once_one_wins(store, standin) -> None:
    first = _approved(store, _baseline(peer_app="frontend"))
    second = _approved(store, _baseline(peer_app="checkout"))
    _writes_meet(standin, 2)
    appliers = [PolicyApplier(_client(standin.url), timeout=5) for _ in range(2)]
    results = _threads(
        lambda: apply_proposal(store, appliers[0], first, actor="ada"),
        lambda: apply_proposal(store, appliers[1], second, actor="bob"),
    )
    [won] = [r for r in results if not isinstance(r, Exception)]
    [lost] = [r for r in results if isinstance(r, Exception)]
    assert isinstance(lost, ApplyRefused) and lost.cause.reason == "AlreadyExists"
    assert lost.record.state == "approved"  # the claim released: nothing decided on the policy
    assert store.events(lost.record.id)[-1].action == "apply_error"
    assert won.state == "applied" and won.change["previous"] is None  # type: ignore[index]
    live = standin.stored(CNPS, "shop", "cart-baseline")
    assert live["spec"] == won.policy["spec"]

    rollback_proposal(store, PolicyApplier(_client(standin.url)), won.id, actor="ada")
    assert standin.stored(CNPS, "shop", "cart-baseline") is None  # nothing was there before


def test_two_proposals_updating_one_policy_at_once_one_wins_and_rollback_is_true(
    store, standin
) -> None:
    applier = PolicyApplier(_client(standin.url), timeout=5)
    original = apply_proposal(store, applier, _approved(store, _baseline()), actor="ada")
    before = standin.stored(CNPS, "shop", "cart-baseline")
    first = _approved(store, _baseline(peer_app="checkout"))
    second = _approved(store, _baseline(peer_app="payments"))
    _writes_meet(standin, 2)
    appliers = [PolicyApplier(_client(standin.url), timeout=5) for _ in range(2)]
    results = _threads(
        lambda: apply_proposal(store, appliers[0], first, actor="ada"),
        lambda: apply_proposal(store, appliers[1], second, actor="bob"),
    )
    [won] = [r for r in results if not isinstance(r, Exception)]
    [lost] = [r for r in results if isinstance(r, Exception)]
    assert isinstance(lost, ApplyRefused) and lost.cause.stale
    assert lost.record.state == "approved"
    previous = won.change["previous"]  # type: ignore[index]
    assert previous["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]

    standin.arrive = None
    rollback_proposal(store, applier, won.id, actor="ada")
    restored = standin.stored(CNPS, "shop", "cart-baseline")
    assert restored["spec"] == original.policy["spec"] == before["spec"]


def test_a_claimed_proposal_is_a_lifecycle_conflict_without_a_request(api, standin) -> None:
    pid = _create(api, {"identity": "shop/cart", "policy": _baseline()})["id"]
    assert _act(api, pid, "approve", Role.reviewer).status_code == 200
    store: ProposalStore = api.service.proposal_store  # type: ignore[attr-defined]
    store.claim(pid, "apply", actor="someone-else")  # an apply under way elsewhere
    sent = len(standin.requests)
    body = _problem(_act(api, pid, "apply", Role.admin), 409, "lifecycle-conflict")
    assert body["state"] == "applying" and "cannot apply" in body["detail"]
    assert standin.requests[sent:] == []


def test_the_author_cannot_approve_their_own_proposal(api, standin) -> None:
    pid = _create(api, {"identity": "shop/cart", "policy": _baseline()}, role=Role.reviewer)["id"]
    body = _problem(_act(api, pid, "approve", Role.reviewer), 403, "second-approver-required")
    assert body["author"] == "reviewer-bot" and "another person" in body["detail"]
    assert api.get(f"/api/v1/proposals/{pid}").json()["state"] == "proposed"
    r = _act(api, pid, "approve", Role.admin)  # someone else
    assert r.status_code == 200 and r.json()["state"] == "approved"


def test_second_approver_rules_in_the_store(tmp_path) -> None:
    with ProposalStore("sqlite://") as store:
        mine = store.create(kind="baseline", identity="shop/cart", policy=_baseline(), actor="rita")
        with pytest.raises(SecondApproverRequired, match="another person"):
            store.approve(mine.id, actor=" Rita ")  # the same name, however written
        assert store.author(mine.id) == "rita"
        auto = store.create(
            kind="baseline", identity="shop/cart", policy=_baseline(), actor="netwarden"
        )
        with pytest.raises(SecondApproverRequired, match="netwarden itself"):
            store.approve(auto.id, actor="netwarden")
        assert store.approve(auto.id, actor="rita").state == "approved"  # one person suffices
    with ProposalStore("sqlite://", require_second_approver=False) as lab:
        mine = lab.create(kind="baseline", identity="shop/cart", policy=_baseline(), actor="rita")
        assert lab.approve(mine.id, actor="rita").state == "approved"


def test_the_setting_defaults_to_two_people() -> None:
    from netwarden.config import RemediationConfig

    assert RemediationConfig().require_second_approver is True
    assert RemediationConfig(require_second_approver=False).require_second_approver is False


def test_a_clusterwide_deny_all_under_an_unrelated_identity_is_refused(api, standin) -> None:
    """The reporter's proposal: deny all egress cluster-wide, filed under shop/cart."""
    deny_all = ccnp({}, name="deny-all-egress", egressDeny=[{"toEntities": ["all"]}])
    r = api.post(
        "/api/v1/proposals", Role.reviewer, json={"identity": "shop/cart", "policy": deny_all}
    )
    body = _problem(r, 422, "target-mismatch")
    assert body["identity"] == "shop/cart"
    assert any("CiliumClusterwideNetworkPolicy" in p for p in body["problems"])
    assert any("empty" in p for p in body["problems"])
    assert api.get("/api/v1/proposals").json()["total"] == 0  # nothing stored


@pytest.mark.parametrize(
    ("policy", "fragment"),
    [
        (cnp({}, name="x", egressDeny=[{"toEntities": ["all"]}]), "empty"),
        (cnp({"k8s:app": "cart"}, name="x", namespace="db", ingress=[{}]), "namespace"),
        (cnp({"k8s:app": "payments"}, name="x", ingress=[{}]), "does not pin"),
        (cnp({"k8s:tier": "web"}, name="x", ingress=[{}]), "does not pin"),
        (cnp({"reserved:host": ""}, name="x", ingress=[{}]), "does not pin"),
        (
            {**cnp({"k8s:app": "cart"}, name="x", ingress=[{}]), "spec": None,
             "specs": [{"endpointSelector": {"matchLabels": {"app": "cart"}}},
                       {"endpointSelector": {}, "ingress": [{}]}]},
            "specs[1]",
        ),
    ],
)  # fmt: skip
def test_a_policy_that_selects_more_than_its_identity_is_refused(store, policy, fragment) -> None:
    if policy.get("spec") is None:  # a copy: the parameter is shared by each store's run
        policy = {k: v for k, v in policy.items() if k != "spec"}
    with pytest.raises(TargetMismatch, match=re.escape(fragment)):
        store.create(kind="baseline", identity="shop/cart", policy=policy, actor="rita")
    assert store.count() == 0


def test_target_selectors_that_pin_the_workload_are_accepted(store) -> None:
    for selector in (
        {"app": "cart"},
        {"any:app.kubernetes.io/name": "cart", "k8s:tier": "web"},  # narrower is fine
    ):
        store.create(kind="baseline", identity="shop/cart", policy=cnp(selector, ingress=[{}]),
                     actor="rita")  # fmt: skip
    learned = {"k8s:app.kubernetes.io/name": "cart-ui"}  # named by its owner, labelled otherwise
    store.create(kind="baseline", identity="shop/cart", policy=cnp(learned, ingress=[{}]),
                 actor="rita", workload_labels=learned)  # fmt: skip
    with pytest.raises(TargetMismatch, match="selects another workload"):
        store.create(kind="baseline", identity="shop/cart", actor="rita",
                     policy=cnp({"k8s:app.kubernetes.io/name": "pay"}, ingress=[{}]),
                     workload_labels=learned)  # fmt: skip
    annotated = cnp({"k8s:app": "cart"}, ingress=[{}])
    annotated["metadata"]["annotations"] = {"netwarden.io/identity": "db/pg"}
    with pytest.raises(TargetMismatch, match="names 'db/pg'"):
        store.create(kind="baseline", identity="shop/cart", policy=annotated, actor="rita")


def test_a_proposal_s_warnings_are_in_the_api(api) -> None:
    """What a containment's replay found it would drop is shown with the proposal, in the list
    and in the detail; a proposal without any shows an empty list."""
    warning = "would drop 12 normal flows (not part of the anomaly): shop/cart -> db/redis TCP/6379"
    store = api.service.proposal_store
    warned = store.create(
        kind="baseline", identity="shop/cart", policy=_baseline(), actor="rita", warnings=[warning]
    )
    quiet = store.create(kind="baseline", identity="shop/cart", policy=_baseline(), actor="rita")
    assert (warned.warnings, quiet.warnings) == ([warning], [])
    detail = api.get(f"/api/v1/proposals/{warned.id}").json()
    assert detail["warnings"] == [warning]
    listed = {p["id"]: p["warnings"] for p in api.get("/api/v1/proposals").json()["items"]}
    assert listed == {warned.id: [warning], quiet.id: []}


def test_a_containment_asked_for_through_the_api_uses_the_services_inputs(tmp_path) -> None:
    """POST /proposals {anomaly_id} builds the containment from what the service's proposer
    uses (normal edges, recent flows, labels), asked for the anomaly's first window."""
    from netwarden.remediation.normal import NormalEdges

    api = _review_api(tmp_path, None)
    asked: list[datetime] = []

    def containment_inputs(before: datetime) -> dict[str, Any]:
        asked.append(before)
        return {"normal": NormalEdges(), "flows": None, "selectors": None}

    api.service.containment_inputs = containment_inputs  # type: ignore[attr-defined]
    try:
        anomaly_id = _record_anomaly(api)
        created = _create(api, {"anomaly_id": anomaly_id})
        assert created["kind"] == "containment" and created["anomaly_id"] == anomaly_id
        assert asked == [T0]
    finally:
        _close(api)


# ------------------------------------------------------------------ the app, and its bodies


def test_building_the_app_warns_of_nothing(tmp_path) -> None:
    """Importing the API and building the app (routes, dependencies, the OpenAPI document)
    emits no warning: pydantic once warned of the ``alias`` of a ``Body()`` the action routes
    shared. In a fresh interpreter, since the routes are built when their modules load."""
    script = textwrap.dedent(f"""\
        import warnings
        warnings.simplefilter("always")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            from netwarden.api.app import create_app
            from netwarden.api.auth import TokenTable
            from netwarden.detector.store import AnomalyStore

            class Service:
                store = AnomalyStore({f"sqlite:///{tmp_path / 'db.sqlite'}"!r})

            app = create_app(Service(), TokenTable([]))
            app.openapi()
        for w in caught:
            print(f"{{w.category.__name__}}: {{w.message}} ({{w.filename}}:{{w.lineno}})")
        """)
    done = subprocess.run(
        [sys.executable, "-W", "always", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == "", done.stdout + done.stderr


def test_an_action_s_note_is_an_optional_json_body(api) -> None:
    """approve, reject, apply, rollback and recover take ``{"note": ...}`` or nothing."""
    first = _create(api, {"identity": "shop/cart", "policy": _baseline()})["id"]
    second = _create(api, {"identity": "shop/cart", "policy": _baseline()})["id"]
    assert _act(api, first, "approve", Role.reviewer).json()["state"] == "approved"  # no body
    r = _act(api, second, "reject", Role.reviewer, json={"note": "too wide"})
    assert r.status_code == 200 and r.json()["events"][-1]["note"] == "too wide"
    assert api.get(f"/api/v1/proposals/{first}").json()["events"][-1]["note"] == ""
    _problem(_act(api, first, "apply", Role.admin, json={"nope": 1}), 422)  # members checked
    _problem(_act(api, first, "apply", Role.admin, json={"note": 7}), 422)
    assert api.get(f"/api/v1/proposals/{first}").json()["state"] == "approved"
    document = api.get("/openapi.json", Role.viewer).json()
    for action in ("approve", "reject", "apply", "rollback", "recover"):
        body = document["paths"][f"/api/v1/proposals/{{proposal_id}}/{action}"]["post"]
        assert body["requestBody"].get("required", False) is False
        assert body["requestBody"]["content"]["application/json"]["schema"]["anyOf"] == [
            {"$ref": "#/components/schemas/ProposalActionRequest"},
            {"type": "null"},
        ]

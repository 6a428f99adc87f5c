"""Apply and rollback of Cilium policies through the official ``kubernetes`` client.

The cluster is a stand-in (``tests/k8s_standin.py``), not a Kubernetes API server: an HTTP server
on 127.0.0.1 that speaks the API server's wire format for the two Cilium policy resources and
models server-side apply field ownership (per leaf field; lists atomic), ``dryRun=All``,
``resourceVersion`` conflicts, ``AlreadyExists`` and DELETE preconditions, CRD schema validation (with ``remediation.schema``), Status
errors and bearer-token RBAC. It does not model watch, discovery, admission webhooks, finalizers
or graceful deletion, ``x-kubernetes-map-type: atomic`` maps, unknown-field pruning and
``Warning`` headers, or JSON/strategic-merge patch; and it is the same validator on both sides
unless a test configures a different CRD version on the server.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client as k8s

from netwarden.remediation.apply import (
    AppliedChange,
    AuditModeUnavailable,
    ChangedSinceApply,
    Conflict,
    Forbidden,
    Invalid,
    PolicyApplier,
    Unreachable,
)
from tests.k8s_standin import K8sStandIn, Request, Token
from tests.policyfactory import ccnp, cnp
from tests.servers import free_port

CNPS = "ciliumnetworkpolicies"
CCNPS = "ciliumclusterwidenetworkpolicies"


def _client(url: str, token: str | None = None) -> k8s.ApiClient:
    config = k8s.Configuration(host=url)
    config.retries = 0  # fail fast when nothing listens
    if token is not None:
        config.api_key = {"BearerToken": token}
        config.api_key_prefix = {"BearerToken": "Bearer"}
    return k8s.ApiClient(config)


@pytest.fixture
def server() -> Iterator[K8sStandIn]:
    with K8sStandIn() as standin:
        yield standin


@pytest.fixture
def applier(server: K8sStandIn) -> PolicyApplier:
    return PolicyApplier(_client(server.url), timeout=5)


def _web(peer: str = "frontend", **meta: Any) -> dict[str, Any]:
    policy = cnp({"app": "web"}, name="web",
                 ingress=[{"fromEndpoints": [{"matchLabels": {"app": peer}}]}])  # fmt: skip
    policy["metadata"].update(meta)
    return policy


def _content(obj: dict[str, Any]) -> tuple[Any, Any, Any]:
    meta = obj["metadata"]
    return obj.get("spec"), meta.get("labels"), meta.get("annotations")


def _other_manager_creates(server: K8sStandIn, policy: dict[str, Any], manager: str) -> None:
    """Another client (e.g. ``kubectl apply --server-side``) owns the object first."""
    api = k8s.CustomObjectsApi(_client(server.url))
    meta = policy["metadata"]
    api.patch_namespaced_custom_object(
        "cilium.io", "v2", meta["namespace"], CNPS, meta["name"], body=policy,
        field_manager=manager, _content_type="application/apply-patch+yaml",
    )  # fmt: skip


# --------------------------------------------------------------------------- apply


def test_dry_run_stores_nothing_and_apply_stores_it(
    server: K8sStandIn, applier: PolicyApplier
) -> None:
    result = applier.dry_run(_web())
    assert result.dry_run and result.created and result.changed
    assert result.object["spec"] == _web()["spec"]
    assert server.stored(CNPS, "shop", "web") is None

    change = applier.apply(_web())

    stored = server.stored(CNPS, "shop", "web")
    assert stored is not None and stored["spec"] == _web()["spec"]
    assert change.previous is None and change.applied["spec"] == stored["spec"]
    # Absent, so created: a POST, which fails if someone created it meanwhile (never an apply).
    writes = server.writes()
    assert [(r.method, r.query.get("dryRun")) for r in writes] == [
        ("POST", "All"),
        ("POST", "All"),  # dry-run first
        ("POST", None),
        ("PUT", None),  # its fields handed to netwarden's Apply identity, nothing else changed
    ]
    for request in writes:
        assert request.query["fieldManager"] == "netwarden"
    assert all(r.query["fieldValidation"] == "Strict" for r in writes[:3])
    assert (
        writes[3].body["metadata"]["resourceVersion"]
        == writes[3].body["metadata"]["resourceVersion"]
    )
    [owner] = stored["metadata"]["managedFields"]
    assert (owner["manager"], owner["operation"]) == ("netwarden", "Apply")
    assert change.applied["metadata"]["resourceVersion"] == stored["metadata"]["resourceVersion"]


def test_an_update_is_an_apply_pinned_to_the_resource_version_read(
    server: K8sStandIn, applier: PolicyApplier
) -> None:
    first = applier.apply(_web())
    applier.apply(_web("checkout"))
    patches = [r for r in server.writes() if r.method == "PATCH"]
    assert patches and all(r.content_type == "application/apply-patch+yaml" for r in patches)
    assert {r.body["metadata"]["resourceVersion"] for r in patches} == {
        first.applied["metadata"]["resourceVersion"]
    }
    assert all(r.query["force"] == "false" for r in patches)


def test_only_its_own_update_operation_fields_are_forced(server: K8sStandIn) -> None:
    """Fields created under netwarden's name by a plain create (operation Update: e.g. the
    create's ownership hand-over failed) conflict with its apply (kubernetes#107417): those
    alone are forced, with the resourceVersion pinned."""
    api = k8s.CustomObjectsApi(_client(server.url))
    api.create_namespaced_custom_object("cilium.io", "v2", "shop", CNPS, _web(),
                                        field_manager="netwarden")  # fmt: skip
    applier = PolicyApplier(_client(server.url))
    with_egress = _web("checkout")
    applier.apply(with_egress)
    patches = [r for r in server.writes() if r.method == "PATCH"]
    assert [r.query["force"] for r in patches] == ["false", "true", "false", "true"]
    assert server.stored(CNPS, "shop", "web")["spec"] == with_egress["spec"]

    shared = _web("frontend")  # netwarden (Update) and platform-team (Apply) co-own its fields
    shared["metadata"]["name"] = "api"
    api.create_namespaced_custom_object("cilium.io", "v2", "shop", CNPS, shared,
                                        field_manager="netwarden")  # fmt: skip
    _other_manager_creates(server, shared, manager="platform-team")
    changed = _web("db")
    changed["metadata"]["name"] = "api"
    with pytest.raises(Conflict) as info:
        applier.apply(changed)
    assert set(info.value.managers) == {"netwarden", "platform-team"}
    assert server.writes()[-1].query["force"] == "false"


def test_update_records_the_previous_object(server: K8sStandIn, applier: PolicyApplier) -> None:
    first = applier.apply(_web())
    second = applier.apply(_web("checkout", labels={"netwarden.io/proposal": "p-7"}))

    stored = server.stored(CNPS, "shop", "web")
    assert stored["spec"]["ingress"][0]["fromEndpoints"][0]["matchLabels"] == {"app": "checkout"}
    assert stored["metadata"]["labels"] == {"netwarden.io/proposal": "p-7"}
    assert second.previous == first.applied
    assert int(stored["metadata"]["resourceVersion"]) > int(
        first.applied["metadata"]["resourceVersion"]
    )
    assert applier.get("shop", "web") == stored


def test_invalid_policy_never_reaches_the_server(
    server: K8sStandIn, applier: PolicyApplier
) -> None:
    bad = _web()
    bad["spec"]["ingress"][0]["toPorts"] = [{"ports": [{"port": "80", "protocol": "HTTP"}]}]

    for action in (applier.apply, applier.dry_run):
        with pytest.raises(Invalid) as info:
            action(bad)
        assert info.value.by == "netwarden"
        assert any("protocol" in cause.field for cause in info.value.causes)
        assert "Nothing was sent" in str(info.value)
    assert server.requests == []


def test_policy_without_namespace_is_refused_locally(
    server: K8sStandIn, applier: PolicyApplier
) -> None:
    with pytest.raises(Invalid, match="no namespace"):
        applier.apply(cnp({"app": "web"}, namespace=None, ingress=[{}]))
    assert server.requests == []


def test_field_owned_by_another_manager_is_a_conflict_not_forced(
    server: K8sStandIn, applier: PolicyApplier
) -> None:
    _other_manager_creates(server, _web("frontend"), manager="platform-team")
    before = server.stored(CNPS, "shop", "web")

    with pytest.raises(Conflict) as info:
        applier.apply(_web("checkout"))

    assert info.value.managers == {"platform-team": [".spec.ingress"]}
    assert "platform-team" in str(info.value) and ".spec.ingress" in str(info.value)
    assert server.stored(CNPS, "shop", "web") == before
    ours = [r for r in server.writes() if r.query.get("fieldManager") == "netwarden"]
    assert ours and all(r.query.get("force") == "false" for r in ours)
    assert all(r.query.get("dryRun") == "All" for r in ours)  # stopped at the dry run


def test_same_value_as_another_manager_is_shared_not_a_conflict(
    server: K8sStandIn, applier: PolicyApplier
) -> None:
    _other_manager_creates(server, _web("frontend"), manager="platform-team")
    applier.apply(_web("frontend", annotations={"netwarden.io/why": "anomaly 42"}))
    managers = {
        e["manager"] for e in server.stored(CNPS, "shop", "web")["metadata"]["managedFields"]
    }
    assert managers == {"platform-team", "netwarden"}


def test_a_change_between_read_and_apply_is_a_conflict_not_overwritten(
    server: K8sStandIn, applier: PolicyApplier
) -> None:
    applier.apply(_web("frontend"))
    touched: list[Request] = []

    def someone_labels_it(request: Request) -> None:
        if request.method == "PATCH" and request.query.get("dryRun") is None and not touched:
            touched.append(request)
            server.touch(CNPS, "shop", "web", {"metadata": {"labels": {"team": "shop"}}})

    server.before = someone_labels_it
    with pytest.raises(Conflict) as info:
        applier.apply(_web("checkout"))

    assert info.value.stale and info.value.concurrent
    stored = server.stored(CNPS, "shop", "web")
    assert stored["metadata"]["labels"] == {"team": "shop"}  # their change stands
    assert stored["spec"] == _web("frontend")["spec"]  # and ours did not go over it
    real = [r for r in server.writes() if r.method == "PATCH" and not r.query.get("dryRun")]
    assert len(real) == 1  # reported, not retried


def test_a_dry_run_result_pins_the_apply_to_the_object_it_saw(
    server: K8sStandIn, applier: PolicyApplier
) -> None:
    applier.apply(_web("frontend"))
    checked = applier.dry_run(_web("checkout"))
    server.touch(CNPS, "shop", "web", {"metadata": {"annotations": {"x": "y"}}})
    with pytest.raises(Conflict, match="changed since it was read"):
        applier.apply(_web("checkout"), checked=checked)
    assert server.stored(CNPS, "shop", "web")["spec"] == _web("frontend")["spec"]


def _race(server: K8sStandIn, *actions: Callable[[], Any]) -> list[Any]:
    """Run ``actions`` in threads whose real (not dry-run) writes reach the stand-in together:
    each waits for the others at a barrier first, after its reads and dry-run. Returns each
    action's result or exception."""
    barrier = threading.Barrier(len(actions))

    def arrive(request: Request) -> None:
        if request.method != "GET" and not request.query.get("dryRun"):
            try:
                barrier.wait(timeout=2)
            except threading.BrokenBarrierError:
                pass  # the others never got this far: go on alone

    server.arrive = arrive
    results: list[Any] = [None] * len(actions)

    def run(i: int) -> None:
        try:
            results[i] = actions[i]()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(actions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    server.arrive = None
    return results


def test_two_creates_at_once_one_wins_the_other_is_told(server: K8sStandIn) -> None:
    """The reporter's race: both read "absent"; with an apply both would "create" it, the
    second silently over the first, both recording previous=None."""
    appliers = [PolicyApplier(_client(server.url), timeout=5) for _ in range(2)]
    a, b = _race(
        server, lambda: appliers[0].apply(_web("frontend")), lambda: appliers[1].apply(_web("db"))
    )
    [won] = [r for r in (a, b) if not isinstance(r, Exception)]
    [lost] = [r for r in (a, b) if isinstance(r, Exception)]
    assert isinstance(lost, Conflict) and lost.reason == "AlreadyExists" and lost.concurrent
    assert won.previous is None
    assert server.stored(CNPS, "shop", "web")["spec"] == won.applied["spec"]
    appliers[0].rollback(won)  # it created it: deleted, nothing else was there
    assert server.stored(CNPS, "shop", "web") is None


def test_two_updates_at_once_one_wins_and_its_rollback_restores_the_original(
    server: K8sStandIn, applier: PolicyApplier
) -> None:
    original = applier.apply(_web("frontend", labels={"team": "shop"})).applied
    appliers = [PolicyApplier(_client(server.url), timeout=5) for _ in range(2)]
    a, b = _race(
        server, lambda: appliers[0].apply(_web("checkout")), lambda: appliers[1].apply(_web("db"))
    )
    [won] = [r for r in (a, b) if not isinstance(r, Exception)]
    [lost] = [r for r in (a, b) if isinstance(r, Exception)]
    assert isinstance(lost, Conflict) and lost.stale
    assert won.previous["metadata"]["resourceVersion"] == original["metadata"]["resourceVersion"]
    applier.rollback(won)
    assert _content(server.stored(CNPS, "shop", "web")) == _content(original)


# --------------------------------------------------------------------------- rollback


def test_rollback_of_an_update_restores_the_previous_object_exactly(
    server: K8sStandIn, applier: PolicyApplier
) -> None:
    original = _web("frontend", labels={"team": "shop", "tier": "web"},
                    annotations={"owner": "alice@example.com"})  # fmt: skip
    applier.apply(original)
    previous = server.stored(CNPS, "shop", "web")
    change = applier.apply(
        _web("checkout", labels={"team": "shop", "netwarden.io/proposal": "p-9"},
             annotations={"owner": "alice@example.com", "netwarden.io/why": "anomaly"})
    )  # fmt: skip
    assert _content(server.stored(CNPS, "shop", "web")) != _content(previous)

    applier.rollback(change)

    restored = server.stored(CNPS, "shop", "web")
    assert _content(restored) == _content(previous)
    assert restored["metadata"]["uid"] == previous["metadata"]["uid"]  # replaced, not re-created


def test_rollback_of_a_create_deletes_it(server: K8sStandIn, applier: PolicyApplier) -> None:
    change = applier.apply(_web())
    applier.rollback(change)
    assert server.stored(CNPS, "shop", "web") is None
    assert applier.get("shop", "web") is None
    applier.rollback(change)  # already gone: nothing to do


def test_a_write_during_the_rollback_is_reported_not_overwritten(
    server: K8sStandIn, applier: PolicyApplier
) -> None:
    applier.apply(_web("frontend"))
    change = applier.apply(_web("checkout"))
    puts: list[Request] = []

    def concurrent_writer(request: Request) -> None:
        if request.method == "PUT":
            puts.append(request)
            if len(puts) == 1:  # between the rollback's read and its replace
                server.touch(CNPS, "shop", "web", {"metadata": {"annotations": {"x": "y"}}})

    server.before = concurrent_writer
    with pytest.raises(Conflict) as info:
        applier.rollback(change)
    assert info.value.stale and len(puts) == 1
    stored = server.stored(CNPS, "shop", "web")
    assert stored["metadata"]["annotations"] == {"x": "y"}
    assert stored["spec"] == _web("checkout")["spec"]
    with pytest.raises(ChangedSinceApply, match="annotations changed"):
        applier.rollback(change)  # and a retry sees that it changed since the apply
    assert len(puts) == 1


def test_rollback_refuses_once_someone_else_changed_the_policy(
    server: K8sStandIn, applier: PolicyApplier
) -> None:
    applier.apply(_web("frontend"))
    change = applier.apply(_web("checkout"))
    server.touch(CNPS, "shop", "web", {"spec": {"description": "tightened by the platform team"}},
                 manager="platform-team")  # fmt: skip
    before = server.stored(CNPS, "shop", "web")
    with pytest.raises(ChangedSinceApply) as info:
        applier.rollback(change)
    assert "spec changed" in str(info.value) and "platform-team" in str(info.value)
    assert info.value.concurrent and not info.value.stale
    assert server.stored(CNPS, "shop", "web") == before
    assert [r.method for r in server.requests[-1:]] == ["GET"]  # nothing written


def test_rollback_of_a_create_deletes_only_that_object_unchanged(
    server: K8sStandIn, applier: PolicyApplier
) -> None:
    change = applier.apply(_web())
    server.touch(CNPS, "shop", "web", {"metadata": {"labels": {"team": "shop"}}})
    with pytest.raises(ChangedSinceApply, match="labels changed"):
        applier.rollback(change)
    assert server.stored(CNPS, "shop", "web") is not None

    # Deleted and re-created under the same name with the same content: another object.
    recreated = PolicyApplier(_client(server.url))
    k8s.CustomObjectsApi(_client(server.url)).delete_namespaced_custom_object(
        "cilium.io", "v2", "shop", CNPS, "web"
    )
    recreated.apply(_web())
    with pytest.raises(ChangedSinceApply, match="another uid"):
        applier.rollback(change)
    assert server.stored(CNPS, "shop", "web") is not None


def test_rollback_of_an_update_refuses_when_the_policy_was_deleted(
    server: K8sStandIn, applier: PolicyApplier
) -> None:
    applier.apply(_web("frontend"))
    change = applier.apply(_web("checkout"))
    k8s.CustomObjectsApi(_client(server.url)).delete_namespaced_custom_object(
        "cilium.io", "v2", "shop", CNPS, "web"
    )
    with pytest.raises(ChangedSinceApply, match="deleted after netwarden applied it"):
        applier.rollback(change)
    assert server.stored(CNPS, "shop", "web") is None  # not resurrected


def test_rollback_deletes_with_uid_and_resource_version_preconditions(
    server: K8sStandIn, applier: PolicyApplier
) -> None:
    change = applier.apply(_web())
    applier.rollback(change)
    [delete] = [r for r in server.writes() if r.method == "DELETE"]
    assert delete.body["preconditions"] == {
        "uid": change.applied["metadata"]["uid"],
        "resourceVersion": change.applied["metadata"]["resourceVersion"],
    }


def test_rollback_reports_a_conflict_that_persists(
    server: K8sStandIn, applier: PolicyApplier
) -> None:
    applier.apply(_web("frontend"))
    change = applier.apply(_web("checkout"))
    server.before = lambda request: (
        server.touch(CNPS, "shop", "web", {"metadata": {"annotations": {"n": str(len(server.requests))}}})
        if request.method == "PUT" else None
    )  # fmt: skip

    with pytest.raises(Conflict) as info:
        applier.rollback(change)
    assert info.value.stale
    assert "rollback of CiliumNetworkPolicy shop/web" in str(info.value)
    assert "modified" in str(info.value)


def test_rollback_from_a_stored_change(server: K8sStandIn, applier: PolicyApplier) -> None:
    first = applier.apply(_web("frontend", labels={"a": "1"}))
    change = applier.apply(_web("checkout"))
    stored = AppliedChange.from_dict(copy.deepcopy(change.to_dict()))
    PolicyApplier(_client(server.url)).rollback(stored)
    assert _content(server.stored(CNPS, "shop", "web")) == _content(first.applied)


def test_clusterwide_policy_apply_and_rollback(server: K8sStandIn, applier: PolicyApplier) -> None:
    policy = ccnp({"app": "web"}, name="deny-world",
                  egressDeny=[{"toEntities": ["world"]}])  # fmt: skip
    change = applier.apply(policy)
    assert server.stored(CCNPS, None, "deny-world")["spec"] == policy["spec"]
    assert applier.get(None, "deny-world") is not None
    applier.rollback(change)
    assert server.stored(CCNPS, None, "deny-world") is None


# --------------------------------------------------------------------------- failures


def test_server_down_is_unreachable_with_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    applier = PolicyApplier(_client(url), timeout=2)
    with pytest.raises(Unreachable) as info:
        applier.apply(_web())
    assert info.value.url == url
    assert url in str(info.value)


def test_invalid_from_the_server_surfaces_its_causes() -> None:
    # netwarden checks against Cilium 1.19, the cluster runs a newer CRD without Kafka rules.
    kafka = _web()
    kafka["spec"]["ingress"][0]["toPorts"] = [
        {"ports": [{"port": "9092", "protocol": "TCP"}], "rules": {"kafka": [{"topic": "orders"}]}}
    ]
    with K8sStandIn(schema_version="main-2026-05-29") as server:
        applier = PolicyApplier(_client(server.url))
        with pytest.raises(Invalid) as info:
            applier.apply(kafka)
        assert server.stored(CNPS, "shop", "web") is None
    assert info.value.by == "server"
    assert info.value.status["reason"] == "Invalid"
    assert any(
        cause.field.startswith("spec.ingress[0].toPorts[0].rules") for cause in info.value.causes
    )
    assert "spec.ingress[0].toPorts[0].rules" in str(info.value)


def test_missing_rights_are_forbidden() -> None:
    tokens = {"reader": Token("system:serviceaccount:netwarden:netwarden", frozenset({"get"}))}
    with K8sStandIn(tokens=tokens) as server:
        applier = PolicyApplier(_client(server.url, token="reader"))
        with pytest.raises(Forbidden) as info:
            applier.apply(_web())
        assert server.stored(CNPS, "shop", "web") is None
    assert "cannot create" in str(info.value) and "ciliumnetworkpolicies" in str(info.value)


# --------------------------------------------------------------------------- audit mode


def test_audit_mode_needs_cilium_in_audit_mode(server: K8sStandIn, applier: PolicyApplier) -> None:
    with pytest.raises(AuditModeUnavailable, match="not found"):
        applier.apply(_web(), audit=True)
    server.put_configmap("kube-system", "cilium-config", {"policy-audit-mode": "false"})
    with pytest.raises(AuditModeUnavailable, match="policyAuditMode"):
        applier.apply(_web(), audit=True)
    assert server.writes() == []

    server.put_configmap("kube-system", "cilium-config", {"policy-audit-mode": "true"})
    change = applier.apply(_web(), audit=True)
    assert change.audit_mode
    assert server.stored(CNPS, "shop", "web")["spec"] == _web()["spec"]  # the policy unchanged


# --------------------------------------------------------------------------- the stand-in itself


def test_standin_refuses_a_stale_or_missing_resource_version(
    server: K8sStandIn, applier: PolicyApplier
) -> None:
    applier.apply(_web())
    api = k8s.CustomObjectsApi(_client(server.url))
    current = api.get_namespaced_custom_object("cilium.io", "v2", "shop", CNPS, "web")
    stale = copy.deepcopy(current)
    api.replace_namespaced_custom_object("cilium.io", "v2", "shop", CNPS, "web", current)
    with pytest.raises(k8s.ApiException) as info:
        api.replace_namespaced_custom_object("cilium.io", "v2", "shop", CNPS, "web", stale)
    assert info.value.status == 409
    del stale["metadata"]["resourceVersion"]
    with pytest.raises(k8s.ApiException) as info:
        api.replace_namespaced_custom_object("cilium.io", "v2", "shop", CNPS, "web", stale)
    assert info.value.status == 422


def test_standin_apply_drops_fields_the_manager_no_longer_applies(
    server: K8sStandIn, applier: PolicyApplier
) -> None:
    with_egress = _web()
    with_egress["spec"]["egress"] = [{"toEntities": ["world"]}]
    applier.apply(with_egress)
    applier.apply(_web())
    assert "egress" not in server.stored(CNPS, "shop", "web")["spec"]


def test_standin_delete_preconditions(server: K8sStandIn, applier: PolicyApplier) -> None:
    applied = applier.apply(_web()).applied
    api = k8s.CustomObjectsApi(_client(server.url))
    for pre in ({"uid": "another"}, {"resource_version": "999"}):
        body = k8s.V1DeleteOptions(preconditions=k8s.V1Preconditions(**pre))
        with pytest.raises(k8s.ApiException) as info:
            api.delete_namespaced_custom_object("cilium.io", "v2", "shop", CNPS, "web", body=body)
        assert info.value.status == 409 and "Precondition failed" in info.value.body
    meta = applied["metadata"]
    pre = k8s.V1Preconditions(uid=meta["uid"], resource_version=meta["resourceVersion"])
    api.delete_namespaced_custom_object("cilium.io", "v2", "shop", CNPS, "web",
                                        body=k8s.V1DeleteOptions(preconditions=pre))  # fmt: skip
    assert server.stored(CNPS, "shop", "web") is None


def test_standin_create_of_an_existing_object_is_already_exists(
    server: K8sStandIn, applier: PolicyApplier
) -> None:
    applier.apply(_web())
    api = k8s.CustomObjectsApi(_client(server.url))
    for dry_run in ("All", None):
        with pytest.raises(k8s.ApiException) as info:
            api.create_namespaced_custom_object("cilium.io", "v2", "shop", CNPS, _web(),
                                                dry_run=dry_run)  # fmt: skip
        assert info.value.status == 409 and '"AlreadyExists"' in info.value.body

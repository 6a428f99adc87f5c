"""Recovering a claim whose holder died: an apply or rollback killed between its write and its
record leaves the proposal ``applying``/``rolling_back``, and ``recover`` finishes it from what
the cluster holds (the Kubernetes API stand-in, ``tests/k8s_standin.py``), through the store and
through ``POST /api/v1/proposals/{id}/recover``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from netwarden.api.auth import Role
from netwarden.config import ServiceConfig, load_config
from netwarden.remediation.apply import AppliedChange, PolicyApplier
from netwarden.remediation.proposals import (
    DEFAULT_CLAIM_GRACE_SECONDS,
    PROPOSAL_ANNOTATION,
    ApplyRefused,
    ClaimInProgress,
    ProposalLifecycleError,
    ProposalStore,
    RecoveryRefused,
    apply_proposal,
    marked,
    recover_proposal,
    rollback_proposal,
)
from tests.k8s_standin import K8sStandIn, Request
from tests.test_api import Api, Clock
from tests.test_proposals import _act, _baseline, _client, _close, _problem, _review_api

CNPS = "ciliumnetworkpolicies"
GRACE = DEFAULT_CLAIM_GRACE_SECONDS


@pytest.fixture
def standin() -> Iterator[K8sStandIn]:
    with K8sStandIn() as server:
        yield server


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Iterator[ProposalStore]:
    with ProposalStore(f"sqlite:///{tmp_path / 'netwarden.db'}", now=clock) as s:
        yield s


@pytest.fixture
def applier(standin: K8sStandIn) -> PolicyApplier:
    return PolicyApplier(_client(standin.url), timeout=5)


def _approved(store: ProposalStore, policy: dict[str, Any]) -> int:
    p = store.create(kind="baseline", identity="shop/cart", policy=policy, actor="rita")
    return store.approve(p.id, actor="sam").id


def _platform_team_creates(standin: K8sStandIn, policy: dict[str, Any]) -> dict[str, Any]:
    """The policy as another team put it there first (kubectl apply --server-side)."""
    k8s.CustomObjectsApi(_client(standin.url)).patch_namespaced_custom_object(
        "cilium.io", "v2", "shop", CNPS, "cart-baseline", body=policy,
        field_manager="platform-team", _content_type="application/apply-patch+yaml",
    )  # fmt: skip
    stored = standin.stored(CNPS, "shop", "cart-baseline")
    assert stored is not None
    return stored


def _applied_before(store: ProposalStore, applier: PolicyApplier, standin: K8sStandIn) -> Any:
    """The workload's baseline as an earlier proposal applied it: what the next one replaces."""
    apply_proposal(store, applier, _approved(store, _baseline()), actor="ada")
    return standin.stored(CNPS, "shop", "cart-baseline")


def _content(obj: dict[str, Any] | None) -> Any:
    assert obj is not None
    meta = obj["metadata"]
    return obj["spec"], meta.get("labels") or {}, meta.get("annotations") or {}


def _trail(store: ProposalStore, pid: int) -> list[tuple[str, str | None, str]]:
    return [(e.action, e.from_state, e.to_state) for e in store.events(pid)]


def _killed_after_the_write(store: ProposalStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The process dies once the cluster has the policy, before the store records it."""

    def killed(*args: Any, **kwargs: Any) -> Any:
        raise SystemExit("killed")

    monkeypatch.setattr(store, "mark_applied", killed)


def _dry_run_recorded(store: ProposalStore, applier: PolicyApplier, pid: int) -> None:
    """An apply's steps up to the moment before its write: the claim, the dry-run and its
    record (what the cluster held), then the process dies."""
    record = store.claim(pid, "apply", actor="ada")
    checked = applier.dry_run(marked(record.policy, pid))
    before = {"ref": {"kind": checked.ref.kind, "name": checked.ref.name,
                      "namespace": checked.ref.namespace}, "object": checked.previous}  # fmt: skip
    store.record_dry_run(pid, actor="ada", result={"passed": True}, before=before)


# ------------------------------------------------------------------------------- applying


def test_killed_between_the_write_and_its_record_recovers_applied_and_rolls_back(
    store, applier, standin, clock, monkeypatch
) -> None:
    original = _applied_before(store, applier, standin)
    pid = _approved(store, _baseline(peer_app="checkout"))
    _killed_after_the_write(store, monkeypatch)
    with pytest.raises(SystemExit):
        apply_proposal(store, applier, pid, actor="ada")
    monkeypatch.undo()

    stuck = store.get(pid)
    assert stuck is not None and stuck.state == "applying" and stuck.change is None
    assert stuck.claim is not None and stuck.claim["actor"] == "ada"
    assert stuck.claim["before"]["object"] == original  # recorded before the write
    live = standin.stored(CNPS, "shop", "cart-baseline")
    assert live is not None and live["metadata"]["annotations"][PROPOSAL_ANNOTATION] == str(pid)
    assert live["spec"] == _baseline(peer_app="checkout")["spec"]
    # Every other action is refused: without recover, this is where it ended.
    for act in (store.approve, store.reject):
        with pytest.raises(ProposalLifecycleError):
            act(pid, actor="sam")
    with pytest.raises(ProposalLifecycleError):
        apply_proposal(store, applier, pid, actor="ada")

    clock.t += timedelta(seconds=GRACE)
    recovered = recover_proposal(store, applier, pid, actor="root")
    assert recovered.state == "applied" and recovered.claim is None
    assert recovered.change is not None
    assert recovered.change["previous"] == original  # so rollback can put it back
    assert recovered.change["applied"]["metadata"]["uid"] == live["metadata"]["uid"]
    last = store.events(pid)[-1]
    assert (last.actor, last.action, last.from_state, last.to_state) == (
        "root",
        "recover_applied",
        "applying",
        "applied",
    )
    assert "the apply reached the cluster" in last.note
    assert last.details["found"]["proposal"] == str(pid)
    assert last.details["claimed_at"] == stuck.claim["at"]

    rolled = rollback_proposal(store, applier, pid, actor="root")
    assert rolled.state == "rolled_back"
    assert _content(standin.stored(CNPS, "shop", "cart-baseline")) == _content(original)
    assert _trail(store, pid)[2:] == [
        ("start_apply", "approved", "applying"),
        ("dry_run", "applying", "applying"),
        ("recover_applied", "applying", "applied"),
        ("start_rollback", "applied", "rolling_back"),
        ("rollback", "rolling_back", "rolled_back"),
    ]


def test_a_process_killed_mid_create_is_recovered(tmp_path, standin) -> None:
    """A real kill -9: another process applies, and dies as its create reaches the cluster
    (before the ownership hand-over that follows it, and before the store hears of it)."""
    url = f"sqlite:///{tmp_path / 'netwarden.db'}"
    with ProposalStore(url) as store:
        pid = _approved(store, _baseline())
    child: list[subprocess.Popen[bytes]] = []

    def kill_at_the_create(request: Request) -> None:
        if request.method == "POST" and not request.query.get("dryRun") and child:
            os.kill(child[0].pid, signal.SIGKILL)

    standin.before = kill_at_the_create
    script = textwrap.dedent(f"""\
        from kubernetes import client
        from netwarden.remediation.apply import PolicyApplier
        from netwarden.remediation.proposals import ProposalStore, apply_proposal
        config = client.Configuration(host={standin.url!r})
        store = ProposalStore({url!r})
        apply_proposal(store, PolicyApplier(client.ApiClient(config)), {pid}, actor="ada")
        print("not killed")
        """)
    child.append(subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE))
    out, _ = child[0].communicate(timeout=60)
    assert child[0].returncode == -signal.SIGKILL, out
    standin.before = None
    live = standin.stored(CNPS, "shop", "cart-baseline")
    assert live is not None and live["metadata"]["annotations"][PROPOSAL_ANNOTATION] == str(pid)

    later = datetime.now(UTC) + timedelta(seconds=GRACE + 1)
    with ProposalStore(url, now=lambda: later) as store:
        assert store.get(pid).state == "applying"  # type: ignore[union-attr]
        assert [r.id for r in store.stuck(GRACE)] == [pid]
        applier = PolicyApplier(_client(standin.url), timeout=5)
        recovered = recover_proposal(store, applier, pid, actor="root")
        assert recovered.state == "applied"
        assert recovered.change["previous"] is None  # type: ignore[index]  # it created it
        assert store.stuck() == []
        rollback_proposal(store, applier, pid, actor="root")
    assert standin.stored(CNPS, "shop", "cart-baseline") is None


@pytest.mark.parametrize("existing", [False, True], ids=["absent", "present"])
def test_a_claim_whose_write_never_reached_the_cluster_is_released(
    store, applier, standin, clock, existing
) -> None:
    original = _applied_before(store, applier, standin) if existing else None
    pid = _approved(store, _baseline(peer_app="checkout"))
    _dry_run_recorded(store, applier, pid)
    assert standin.stored(CNPS, "shop", "cart-baseline") == original

    clock.t += timedelta(seconds=GRACE + 1)
    recovered = recover_proposal(store, applier, pid, actor="root", note="pod was OOM-killed")
    assert recovered.state == "approved" and recovered.claim is None
    last = store.events(pid)[-1]
    assert (last.action, last.from_state, last.to_state) == (
        "recover_approved",
        "applying",
        "approved",
    )
    assert last.note == "pod was OOM-killed"
    assert "the apply never reached the cluster" in last.details["finding"]
    assert last.details["found"]["present"] is existing

    applied = apply_proposal(store, applier, pid, actor="ada")  # the claim is free again
    assert applied.state == "applied" and applied.change["previous"] == original  # type: ignore[index]


def test_a_claim_that_died_before_its_dry_run_is_released(store, applier, standin, clock) -> None:
    pid = _approved(store, _baseline())
    store.claim(pid, "apply", actor="ada")  # then the process died: nothing was sent
    clock.t += timedelta(seconds=GRACE)
    recovered = recover_proposal(store, applier, pid, actor="root")
    assert recovered.state == "approved"
    assert "nothing was written" in store.events(pid)[-1].note
    assert standin.writes() == []


def test_someone_else_s_change_is_refused_and_the_claim_stays(
    store, applier, standin, clock
) -> None:
    _applied_before(store, applier, standin)
    pid = _approved(store, _baseline(peer_app="checkout"))
    _dry_run_recorded(store, applier, pid)
    standin.touch(CNPS, "shop", "cart-baseline",
                  {"spec": {"description": "tightened by hand"}}, manager="platform-team")  # fmt: skip
    before = standin.stored(CNPS, "shop", "cart-baseline")
    clock.t += timedelta(seconds=GRACE)
    writes = len(standin.writes())

    with pytest.raises(RecoveryRefused) as info:
        recover_proposal(store, applier, pid, actor="root")

    text = str(info.value)
    assert "neither this proposal's policy nor what netwarden recorded before the apply" in text
    assert "spec changed" in text and "platform-team" in text
    assert info.value.record.state == "applying"
    assert info.value.found["present"] and info.value.found["proposal"] == "1"  # the earlier
    assert standin.stored(CNPS, "shop", "cart-baseline") == before
    assert len(standin.writes()) == writes  # recover only reads
    stuck = store.get(pid)
    assert stuck is not None and stuck.state == "applying" and stuck.claim is not None
    last = store.events(pid)[-1]
    assert (last.actor, last.action, last.from_state, last.to_state) == (
        "root",
        "recover_refused",
        "applying",
        "applying",
    )
    assert last.details["found"]["managers"] == ["netwarden", "platform-team"]


def test_recover_waits_for_the_grace_period(store, applier, standin, clock) -> None:
    pid = _approved(store, _baseline())
    store.claim(pid, "apply", actor="ada")
    events = len(store.events(pid))
    clock.t += timedelta(seconds=42)
    with pytest.raises(ClaimInProgress, match=r"claimed by ada 42 s ago, still in progress\?"):
        recover_proposal(store, applier, pid, actor="root")
    with pytest.raises(ClaimInProgress, match="at least 60 s old"):
        recover_proposal(store, applier, pid, actor="root", grace_seconds=60)
    assert len(store.events(pid)) == events and standin.requests == []  # nothing done
    assert store.stuck(GRACE) == [] and [r.id for r in store.stuck(30)] == [pid]
    assert recover_proposal(store, applier, pid, actor="root", grace_seconds=40).state == (
        "approved"
    )


def test_a_claim_that_moves_on_while_recover_looks_is_left_to_its_holder(
    store, applier, standin, clock
) -> None:
    pid = _approved(store, _baseline())
    store.claim(pid, "apply", actor="ada")
    clock.t += timedelta(seconds=GRACE)

    def holder_wakes_up(request: Request) -> None:  # while recover reads the cluster
        standin.before = None
        store.release(pid, actor="ada", action="dry_run", message="cluster unreachable")

    standin.before = holder_wakes_up
    with pytest.raises(ClaimInProgress, match="changed while recover looked"):
        recover_proposal(store, applier, pid, actor="root")
    assert store.get(pid).state == "approved"  # type: ignore[union-attr]
    assert [e.action for e in store.events(pid)][-1] == "dry_run_error"


def test_only_a_claimed_proposal_is_recovered(store, applier, standin) -> None:
    pid = _approved(store, _baseline())
    with pytest.raises(ProposalLifecycleError) as info:
        recover_proposal(store, applier, pid, actor="root")
    assert "is approved: cannot recover (recover is allowed from: applying, rolling_back)" in str(
        info.value
    )
    assert standin.requests == []


# ---------------------------------------------------------------------------- rolling back


def test_a_rollback_that_never_reached_the_cluster_is_applied_again(
    store, applier, standin, clock
) -> None:
    pid = _approved(store, _baseline())
    apply_proposal(store, applier, pid, actor="ada")
    live = standin.stored(CNPS, "shop", "cart-baseline")
    store.claim(pid, "rollback", actor="ada")  # and died before its request
    clock.t += timedelta(seconds=GRACE)
    recovered = recover_proposal(store, applier, pid, actor="root")
    assert recovered.state == "applied" and recovered.change is not None
    assert standin.stored(CNPS, "shop", "cart-baseline") == live
    assert _trail(store, pid)[-2:] == [
        ("start_rollback", "applied", "rolling_back"),
        ("recover_applied", "rolling_back", "applied"),
    ]
    assert rollback_proposal(store, applier, pid, actor="ada").state == "rolled_back"


@pytest.mark.parametrize("existing", [False, True], ids=["created", "updated"])
def test_a_rollback_killed_after_its_write_is_rolled_back(
    store, applier, standin, clock, existing
) -> None:
    original = _applied_before(store, applier, standin) if existing else None
    pid = _approved(store, _baseline(peer_app="checkout"))
    applied = apply_proposal(store, applier, pid, actor="ada")
    claimed = store.claim(pid, "rollback", actor="ada")
    assert claimed.change == applied.change
    applier.rollback(AppliedChange.from_dict(applied.change))  # type: ignore[arg-type]
    # ... and the process died before mark_rolled_back
    clock.t += timedelta(seconds=GRACE)
    recovered = recover_proposal(store, applier, pid, actor="root")
    assert recovered.state == "rolled_back"
    live = standin.stored(CNPS, "shop", "cart-baseline")
    if existing:
        assert _content(live) == _content(original)
        assert "restored what the apply had replaced" in store.events(pid)[-1].note
    else:
        assert live is None
        assert "deleted" in store.events(pid)[-1].note
    assert _trail(store, pid)[-1] == ("recover_rolled_back", "rolling_back", "rolled_back")


def test_a_rollback_over_someone_else_s_change_is_refused(store, applier, standin, clock) -> None:
    pid = _approved(store, _baseline())
    apply_proposal(store, applier, pid, actor="ada")
    store.claim(pid, "rollback", actor="ada")
    standin.touch(CNPS, "shop", "cart-baseline", {"spec": {"description": "by hand"}})
    clock.t += timedelta(seconds=GRACE)
    with pytest.raises(RecoveryRefused, match="spec changed") as info:
        recover_proposal(store, applier, pid, actor="root")
    assert "neither what netwarden applied" in str(info.value)
    assert info.value.record.state == "rolling_back"
    assert _trail(store, pid)[-1] == ("recover_refused", "rolling_back", "rolling_back")


def test_a_rollback_under_someone_else_s_label_is_applied_again(
    store, applier, standin, clock
) -> None:
    """Its object is still there, with a label someone added: the rollback never ran, and the
    next one refuses to undo their change, as it always did."""
    pid = _approved(store, _baseline())
    apply_proposal(store, applier, pid, actor="ada")
    store.claim(pid, "rollback", actor="ada")
    standin.touch(CNPS, "shop", "cart-baseline", {"metadata": {"labels": {"team": "shop"}}})
    clock.t += timedelta(seconds=GRACE)
    assert recover_proposal(store, applier, pid, actor="root").state == "applied"
    with pytest.raises(ApplyRefused, match="labels changed"):
        rollback_proposal(store, applier, pid, actor="ada")


# --------------------------------------------------------------------------------- the API


@pytest.fixture
def api(tmp_path, standin) -> Iterator[Api]:
    api = _review_api(tmp_path, PolicyApplier(_client(standin.url), timeout=5))
    yield api
    _close(api)


def _claimed_api(api: Api, *, dry_run: bool = False) -> int:
    """A proposal approved by a reviewer and left ``applying`` by a dead apply (after its
    dry-run was recorded, with ``dry_run``)."""
    store: ProposalStore = api.service.proposal_store  # type: ignore[attr-defined]
    pid = store.create(kind="baseline", identity="shop/cart", policy=_baseline(), actor="rita").id
    store.approve(pid, actor="reviewer-bot")
    if dry_run:
        _dry_run_recorded(store, api.service.applier, pid)  # type: ignore[attr-defined]
    else:
        store.claim(pid, "apply", actor="admin-bot")
    return pid


def test_recover_through_the_api(api, standin) -> None:
    pid = _claimed_api(api)
    for role in (Role.viewer, Role.operator, Role.reviewer):
        _problem(_act(api, pid, "recover", role), 403)
    body = _problem(_act(api, pid, "recover", Role.admin), 409, "claim-in-progress")
    assert "claimed by admin-bot 0 s ago, still in progress?" in body["detail"]
    assert body["state"] == "applying" and body["claimed_seconds_ago"] == 0

    api.clock.t += timedelta(seconds=GRACE)
    r = _act(api, pid, "recover", Role.admin, json={"note": "netwarden was OOM-killed"})
    assert r.status_code == 200, r.text
    shown = r.json()
    assert shown["state"] == "approved"
    last = shown["events"][-1]
    assert (last["actor"], last["action"], last["from_state"], last["to_state"]) == (
        "admin-bot",
        "recover_approved",
        "applying",
        "approved",
    )
    assert last["note"] == "netwarden was OOM-killed" and last["details"]["finding"]
    body = _problem(_act(api, pid, "recover", Role.admin), 409, "lifecycle-conflict")
    assert body["state"] == "approved" and "cannot recover" in body["detail"]
    _problem(_act(api, 999, "recover", Role.admin), 404)

    assert _act(api, pid, "apply", Role.admin).status_code == 200
    assert standin.stored(CNPS, "shop", "cart-baseline") is not None


def test_recover_through_the_api_refuses_someone_else_s_change(api, standin) -> None:
    pid = _claimed_api(api, dry_run=True)
    _platform_team_creates(standin, _baseline(peer_app="db"))  # it was absent
    api.clock.t += timedelta(seconds=GRACE)
    body = _problem(_act(api, pid, "recover", Role.admin), 409, "recovery-refused")
    assert body["state"] == "applying" and body["proposal_id"] == pid
    assert body["found"]["present"] and body["found"]["managers"] == ["platform-team"]
    assert "is in the cluster at resourceVersion" in body["detail"]
    assert "it was absent then" in body["detail"]
    shown = api.get(f"/api/v1/proposals/{pid}").json()
    assert shown["state"] == "applying" and shown["events"][-1]["action"] == "recover_refused"


def test_recover_through_the_api_without_a_kubernetes_api(tmp_path) -> None:
    api = _review_api(tmp_path, applier=None)
    try:
        pid = _claimed_api(api)
        api.clock.t += timedelta(seconds=GRACE)
        body = _problem(_act(api, pid, "recover", Role.admin), 503, "no-kubernetes-api")
        assert body["detail"].startswith("no Kubernetes API configured")
        assert api.get(f"/api/v1/proposals/{pid}").json()["state"] == "applying"
    finally:
        _close(api)


def test_the_api_uses_the_service_s_grace_period(api, standin) -> None:
    pid = _claimed_api(api)
    api.service.config = ServiceConfig(  # type: ignore[attr-defined]
        remediation={"claim_grace_seconds": 30}
    )
    api.clock.t += timedelta(seconds=29)
    body = _problem(_act(api, pid, "recover", Role.admin), 409, "claim-in-progress")
    assert "at least 30 s old" in body["detail"]
    api.clock.t += timedelta(seconds=1)
    assert _act(api, pid, "recover", Role.admin).json()["state"] == "approved"


def test_the_grace_period_setting(tmp_path, monkeypatch) -> None:
    assert ServiceConfig().remediation.claim_grace_seconds == DEFAULT_CLAIM_GRACE_SECONDS
    monkeypatch.setenv("NETWARDEN_REMEDIATION__CLAIM_GRACE_SECONDS", "45")
    assert load_config(None).remediation.claim_grace_seconds == 45
    monkeypatch.setenv("NETWARDEN_REMEDIATION__CLAIM_GRACE_SECONDS", "-1")
    with pytest.raises(ValueError, match="remediation.claim_grace_seconds"):
        load_config(None)


@pytest.mark.parametrize("landed", [True, False])
def test_an_unanswered_write_keeps_the_claim_for_recover(
    store, applier, standin, clock, monkeypatch, landed
) -> None:
    """The write was sent and no answer came (the API server timed out or the connection
    dropped): it may have landed, so the claim stays ``applying`` (``apply_uncertain``) and
    recover decides from what the cluster holds; a retried apply would have taken
    netwarden's own object for what was there before."""
    from netwarden.remediation.apply import Unreachable

    pid = _approved(store, _baseline(peer_app="checkout"))
    real_apply = applier.apply

    def unanswered(policy: Any, **kwargs: Any) -> Any:
        if landed:
            real_apply(policy, **kwargs)
        raise Unreachable("timed out waiting for the API server", url=standin.url)

    monkeypatch.setattr(applier, "apply", unanswered)
    with pytest.raises(ApplyRefused, match="stays 'applying'"):
        apply_proposal(store, applier, pid, actor="ada")
    assert store.get(pid).state == "applying"
    assert store.events(pid)[-1].action == "apply_uncertain"
    with pytest.raises(ProposalLifecycleError):
        apply_proposal(store, applier, pid, actor="ada")  # the claim is held
    monkeypatch.undo()
    clock.t += timedelta(seconds=GRACE + 1)
    recovered = recover_proposal(store, applier, pid, actor="root")
    assert recovered.state == ("applied" if landed else "approved")
    if landed:
        assert recovered.change["previous"] is None  # type: ignore[index]  # nothing before

"""``/api/v1/proposals``: review policy proposals (viewer reads and simulates, reviewer proposes,
approves and rejects, admin applies and rolls back).

Errors map to problems here, once: an unknown id is a 404; an action the proposal's state does
not allow (see :mod:`netwarden.remediation.proposals`) a 409 naming the state; an invalid
policy (which can never be approved) a 422 listing its problems; no flow history a 409; no
Kubernetes API a 503. A dry-run or apply the cluster refuses leaves the proposal ``failed`` and
answers 409 with the server's message. The actor recorded for an action is the token's name.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Annotated, Any

import jsonpatch
from fastapi import APIRouter, Body, Depends, Query, Request, Response

from netwarden.api.auth import RequireRole, Role, TokenEntry
from netwarden.api.problems import ProblemError, problem_responses, problem_type
from netwarden.api.routes import ServiceDep, next_page
from netwarden.api.schemas import (
    PolicyProblemPublic,
    ProposalActionRequest,
    ProposalCreateRequest,
    ProposalDetailPublic,
    ProposalEventPublic,
    ProposalPagePublic,
    ProposalPublic,
    ProposalQuery,
    SimulationPublic,
)
from netwarden.api.state import (
    ServiceState,
    policy_applier_of,
    proposal_store_of,
    recent_flows_of,
)
from netwarden.remediation.apply import (
    ApplyError,
    AuditModeUnavailable,
    Forbidden,
    PolicyApplier,
    Unreachable,
    restorable,
)
from netwarden.remediation.proposals import (
    BASELINE,
    ApplyRefused,
    InvalidProposal,
    ProposalLifecycleError,
    ProposalNotFound,
    ProposalRecord,
    ProposalStore,
    apply_proposal,
    next_state,
    propose_containment,
    rollback_proposal,
)
from netwarden.remediation.proposals import simulate_proposal as replay_proposal
from netwarden.remediation.propose import policy_name, policy_yaml, propose_baselines
from netwarden.remediation.schema import InvalidPolicy

__all__ = ["router"]

router = APIRouter(
    prefix="/proposals",
    tags=["proposals"],
    dependencies=[Depends(RequireRole(Role.viewer))],
    responses=problem_responses(401, 403, 422),
)

Viewer = Annotated[TokenEntry, Depends(RequireRole(Role.viewer))]
Reviewer = Annotated[TokenEntry, Depends(RequireRole(Role.reviewer))]
Admin = Annotated[TokenEntry, Depends(RequireRole(Role.admin))]
NoteBody = Annotated[ProposalActionRequest | None, Body()]


def get_proposals(request: Request, service: ServiceDep) -> ProposalStore:
    return proposal_store_of(service, request.app.state.proposal_stores)


ProposalsDep = Annotated[ProposalStore, Depends(get_proposals)]


# --------------------------------------------------------------------------------- errors


def _invalid(problems: list[dict[str, str]], detail: str) -> ProblemError:
    return ProblemError(
        422, detail, type=problem_type("invalid-policy"), title="Invalid policy", problems=problems
    )


def _no_flow_history() -> ProblemError:
    return ProblemError(
        409,
        "no flow history: this service keeps no recorded flows to "
        "replay or learn from (give a baseline's policy in the request)",
        type=problem_type("no-flow-history"),
        title="No flow history",
    )


@contextmanager
def _errors(proposal_id: int | None = None) -> Iterator[None]:
    """The store's and the cluster's refusals as problems (specific errors first: several are
    ValueErrors)."""
    try:
        yield
    except ProposalNotFound as exc:
        raise ProblemError(404, str(exc)) from None
    except ProposalLifecycleError as exc:
        raise ProblemError(
            409,
            str(exc),
            type=problem_type("lifecycle-conflict"),
            title="Lifecycle conflict",
            state=exc.state,
            action=exc.action,
        ) from None
    except InvalidProposal as exc:
        raise _invalid(exc.problems, str(exc)) from None
    except InvalidPolicy as exc:
        problems = [{"path": p.path, "message": p.message} for p in exc.problems]
        raise _invalid(problems, str(exc)) from None
    except ApplyRefused as exc:
        if isinstance(exc.cause, Unreachable):
            raise ProblemError(
                503,
                str(exc),
                type=problem_type("kubernetes-unreachable"),
                title="Kubernetes API unreachable",
                state=exc.record.state,
            ) from None
        if isinstance(exc.cause, AuditModeUnavailable):
            raise ProblemError(
                409,
                str(exc),
                type=problem_type("audit-mode-unavailable"),
                title="Cilium is not in policy audit mode",
                state=exc.record.state,
            ) from None
        if isinstance(exc.cause, Forbidden):
            raise ProblemError(
                502,
                str(exc),
                type=problem_type("kubernetes-forbidden"),
                title="Kubernetes API refused access",
                state=exc.record.state,
            ) from None
        raise ProblemError(
            409,
            str(exc),
            type=problem_type("apply-failed"),
            title="The cluster refused the change",
            state=exc.record.state,
            proposal_id=exc.record.id,
        ) from None
    except ApplyError as exc:
        raise ProblemError(
            503 if isinstance(exc, Unreachable) else 502,
            str(exc),
            type=problem_type("kubernetes-error"),
            title="Kubernetes API error",
        ) from None
    except ValueError as exc:
        raise ProblemError(
            422,
            str(exc),
            type=problem_type("validation-error"),
            title="Request validation failed",
            errors=[{"loc": ["body"], "msg": str(exc), "type": "value_error"}],
        ) from None


def _found(proposals: ProposalStore, proposal_id: int) -> ProposalRecord:
    record = proposals.get(proposal_id)
    if record is None:
        raise ProblemError(404, f"no proposal with id {proposal_id}")
    return record


def _applier(service: ServiceState) -> PolicyApplier:
    applier = policy_applier_of(service)
    if applier is None:
        raise ProblemError(
            503,
            "no Kubernetes API configured: this service cannot apply or roll back policies",
            type=problem_type("no-kubernetes-api"),
            title="No Kubernetes API configured",
        )
    return applier


# --------------------------------------------------------------------------------- detail


def _diff(current: Mapping[str, Any] | None, policy: Mapping[str, Any], text: str) -> str | None:
    if current is None:
        return None
    meta = policy.get("metadata") or {}
    where = f"{meta.get('namespace', '')}/{meta.get('name', '')}".lstrip("/")
    return "".join(
        difflib.unified_diff(
            policy_yaml(current).splitlines(keepends=True),
            text.splitlines(keepends=True),
            fromfile=f"current/{where}",
            tofile=f"proposed/{where}",
        )
    )


def _detail(proposals: ProposalStore, record: ProposalRecord) -> ProposalDetailPublic:
    with _errors(record.id):
        events = proposals.events(record.id)
    text = policy_yaml(record.policy)
    return ProposalDetailPublic(
        **ProposalPublic._fields_of(record),
        policy=record.policy,
        yaml=text,
        current=record.current,
        diff=_diff(record.current, record.policy, text),
        patch=record.patch,
        problems=[PolicyProblemPublic(**p) for p in record.problems],
        dry_run=record.dry_run,
        applied=record.change,
        events=[ProposalEventPublic.from_event(e) for e in events],
    )


# ------------------------------------------------------------------------- current policy


def _current_policy(
    service: ServiceState, proposals: ProposalStore, namespace: str | None, name: str
) -> tuple[dict[str, Any] | None, str]:
    """The policy ``namespace/name`` as it is now, and where that came from: the cluster when
    there is an applier, else netwarden's record of what it applied."""
    applier = policy_applier_of(service)
    source = "current policy from netwarden's records"
    if applier is not None:
        try:
            live = applier.get(namespace, name)
        except ApplyError as exc:  # still worth proposing: say where the current one came from
            source = f"the cluster could not be read ({exc}); {source}"
        else:
            return (
                (restorable(live) if live is not None else None),
                "current policy from the cluster",
            )
    applied = proposals.latest_applied(namespace, name)
    return (applied.policy if applied is not None else None), source


def _metadata(policy: Mapping[str, Any]) -> tuple[str | None, str | None]:
    meta = policy.get("metadata")
    if not isinstance(meta, Mapping) or not isinstance(meta.get("name"), str):
        return None, None
    namespace = meta.get("namespace")
    return (namespace if isinstance(namespace, str) else None), meta["name"]


# --------------------------------------------------------------------------------- routes


@router.get("", response_model=ProposalPagePublic)
def read_proposals(
    request: Request, proposals: ProposalsDep, query: Annotated[ProposalQuery, Query()]
) -> ProposalPagePublic:
    """Proposals matching every filter given, newest first, one page at a time."""
    filters = {"identity": query.identity, "state": query.state, "kind": query.kind}
    items = proposals.list(**filters, limit=query.limit, offset=query.offset)
    total = proposals.count(**filters)
    return ProposalPagePublic(
        items=[ProposalPublic.from_record(p) for p in items],
        total=total,
        limit=query.limit,
        offset=query.offset,
        next=next_page(
            request, limit=query.limit, offset=query.offset, returned=len(items), total=total
        ),
    )


@router.get("/{proposal_id}", response_model=ProposalDetailPublic, responses=problem_responses(404))
def read_proposal(proposal_id: int, proposals: ProposalsDep) -> ProposalDetailPublic:
    """One proposal: its policy as JSON and YAML, the diff against the current policy, its
    patch, validation problems, last dry-run and audit log."""
    return _detail(proposals, _found(proposals, proposal_id))


@router.post(
    "", response_model=ProposalDetailPublic, status_code=201, responses=problem_responses(404, 409)
)
def create_proposal(
    request: Request,
    response: Response,
    service: ServiceDep,
    proposals: ProposalsDep,
    token: Reviewer,
    body: ProposalCreateRequest,
) -> ProposalDetailPublic:
    """Propose a containment for an anomaly, or a baseline for an identity (learned from the
    service's recent flows, or given). The policy is validated now; an invalid one is kept
    with its problems but can never be approved."""
    with _errors():
        if body.anomaly_id is not None:
            record = _propose_containment(
                service, proposals, body.anomaly_id, token.name, body.note
            )
        else:
            assert body.identity is not None  # the request model requires one of both
            record = _propose_baseline(
                service, proposals, body.identity, body.policy, token.name, body.note
            )
    response.headers["Location"] = str(request.url_for("read_proposal", proposal_id=record.id))
    return _detail(proposals, record)


def _propose_containment(
    service: ServiceState, proposals: ProposalStore, anomaly_id: int, actor: str, note: str
) -> ProposalRecord:
    anomaly = service.store.get(anomaly_id)
    if anomaly is None:
        raise ProblemError(404, f"no anomaly with id {anomaly_id}")
    current, source = _current_policy(
        service, proposals, anomaly.namespace, policy_name(anomaly.workload, "baseline")
    )
    return propose_containment(
        proposals, anomaly, current=current, source=source, actor=actor, note=note
    )


def _propose_baseline(
    service: ServiceState,
    proposals: ProposalStore,
    identity: str,
    policy: dict[str, Any] | None,
    actor: str,
    note: str,
) -> ProposalRecord:
    if policy is None:
        flows = recent_flows_of(service)
        if flows is None:
            raise _no_flow_history()
        learned = propose_baselines(flows)
        if identity not in learned:
            raise ProblemError(
                422,
                f"the recorded flows hold no normal traffic of {identity}: "
                "nothing to learn a baseline from",
                type=problem_type("no-flows-for-identity"),
                title="No flows for this identity",
            )
        policy = learned[identity]
    namespace, name = _metadata(policy)
    current, source = (
        _current_policy(service, proposals, namespace, name) if name is not None else (None, "")
    )
    patch = jsonpatch.make_patch(current, policy).patch if current is not None else None
    return proposals.create(
        kind=BASELINE,
        identity=identity,
        policy=policy,
        patch=patch,
        current=current,
        actor=actor,
        note=note or (f"baseline ({source})" if current is not None else ""),
    )


@router.post(
    "/{proposal_id}/simulate",
    response_model=SimulationPublic,
    responses=problem_responses(404, 409),
)
def simulate_proposal(
    proposal_id: int, service: ServiceDep, proposals: ProposalsDep, token: Viewer
) -> SimulationPublic:
    """Replay the service's recent flows against the proposed policy: what it would drop."""
    record = _found(proposals, proposal_id)
    if record.problems:
        raise _invalid(record.problems, str(InvalidProposal(record.id, record.problems)))
    flows = recent_flows_of(service)
    if flows is None:
        raise _no_flow_history()
    with _errors(proposal_id):
        report = replay_proposal(proposals, record, flows, actor=token.name)
    return SimulationPublic.from_report(record.id, report)


_ACTION_ERRORS = problem_responses(404, 409)


@router.post(
    "/{proposal_id}/approve", response_model=ProposalDetailPublic, responses=_ACTION_ERRORS
)
def approve_proposal(
    proposal_id: int, proposals: ProposalsDep, token: Reviewer, body: NoteBody = None
) -> ProposalDetailPublic:
    """proposed -> approved: a reviewer vouches for it (only a valid policy can be approved)."""
    with _errors(proposal_id):
        record = proposals.approve(proposal_id, actor=token.name, note=body.note if body else "")
    return _detail(proposals, record)


@router.post("/{proposal_id}/reject", response_model=ProposalDetailPublic, responses=_ACTION_ERRORS)
def reject_proposal(
    proposal_id: int, proposals: ProposalsDep, token: Reviewer, body: NoteBody = None
) -> ProposalDetailPublic:
    """proposed -> rejected, for good; the note says why."""
    with _errors(proposal_id):
        record = proposals.reject(proposal_id, actor=token.name, note=body.note if body else "")
    return _detail(proposals, record)


@router.post(
    "/{proposal_id}/apply",
    response_model=ProposalDetailPublic,
    responses=problem_responses(404, 409, 502, 503),
)
def apply_proposal_route(
    proposal_id: int,
    service: ServiceDep,
    proposals: ProposalsDep,
    token: Admin,
    body: NoteBody = None,
    audit: Annotated[
        bool,
        Query(
            description=(
                "roll out while Cilium runs in policy audit mode (verdicts logged, "
                "not enforced); refused where the cluster is not in audit mode"
            )
        ),
    ] = False,
) -> ProposalDetailPublic:
    """approved -> applied, after a passing validation and server-side dry-run (recorded);
    a refused dry-run or apply leaves it failed with the server's message, nothing applied."""
    record = _found(proposals, proposal_id)
    with _errors(proposal_id):
        next_state(record.id, record.state, "apply")
        if record.problems:
            raise InvalidProposal(record.id, record.problems)
        record = apply_proposal(
            proposals,
            _applier(service),
            proposal_id,
            actor=token.name,
            note=body.note if body else "",
            audit=audit,
        )
    return _detail(proposals, record)


@router.post(
    "/{proposal_id}/rollback",
    response_model=ProposalDetailPublic,
    responses=problem_responses(404, 409, 502, 503),
)
def rollback_proposal_route(
    proposal_id: int,
    service: ServiceDep,
    proposals: ProposalsDep,
    token: Admin,
    body: NoteBody = None,
) -> ProposalDetailPublic:
    """applied -> rolled_back: the object it replaced is restored (or the one it created is
    deleted)."""
    record = _found(proposals, proposal_id)
    with _errors(proposal_id):
        next_state(record.id, record.state, "rollback")
        record = rollback_proposal(
            proposals,
            _applier(service),
            proposal_id,
            actor=token.name,
            note=body.note if body else "",
        )
    return _detail(proposals, record)

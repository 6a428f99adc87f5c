"""``/api/v1/proposals``: review policy proposals (viewer reads and simulates, reviewer proposes,
approves and rejects, admin applies, rolls back and recovers).

Errors map to problems here, once: an unknown id is a 404; an action the proposal's state does
not allow (see :mod:`netwarden.remediation.proposals`) a 409 naming the state, and so is an
apply or rollback while another one of the same proposal is under way (state ``applying`` or
``rolling_back``); an invalid policy (which can never be approved) a 422 listing its problems; a
policy that does not target the proposal's identity alone a 422 ``target-mismatch``; an
approval by the proposal's own author a 403 ``second-approver-required``; no flow history a 409;
no Kubernetes API a 503. A dry-run or apply the cluster refuses leaves the proposal ``failed``
and answers 409 with the server's message; another writer that changed the policy first (or
since it was applied, for a rollback) is a 409 ``policy-changed``, the proposal back where it
was. Recover (an apply or rollback whose process died) is a 409 ``lifecycle-conflict`` for a
proposal that is not claimed, a 409 ``claim-in-progress`` for a claim younger than
``remediation.claim_grace_seconds``, and a 409 ``recovery-refused`` saying what the cluster holds
when someone else changed the policy (the proposal stays claimed). The actor recorded for an
action is the token's name; a simulation records nothing.

The optional note of an action is its JSON body, ``{"note": "..."}``: a plain
``ProposalActionRequest | None = None`` parameter, which FastAPI takes as an optional body, with
no ``Body()`` marker (a module-level ``Annotated[..., Body()]`` shared by every action route was
reported to make pydantic warn about its ``alias`` when the app was built).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Annotated, Any, Final

import jsonpatch
from fastapi import APIRouter, Query, Request, Response

from netwarden.api.deps import AdminDep, PagerDep, Review, ReviewDep, ReviewerDep, ViewerDep
from netwarden.api.problems import (
    ProblemError,
    found,
    problem_responses,
    problem_type,
    store_refusals,
)
from netwarden.api.schemas import (
    ProposalActionRequest,
    ProposalCreateRequest,
    ProposalDetailPublic,
    ProposalPagePublic,
    ProposalPublic,
    ProposalQuery,
    RecordId,
    SimulationPublic,
    note_of,
)
from netwarden.remediation.apply import (
    ApplyError,
    AuditModeUnavailable,
    Conflict,
    Forbidden,
    PolicyApplier,
    Unreachable,
    restorable,
)
from netwarden.remediation.proposals import (
    BASELINE,
    ApplyRefused,
    ClaimInProgress,
    InvalidProposal,
    ProposalLifecycleError,
    ProposalNotFound,
    ProposalRecord,
    RecoveryRefused,
    SecondApproverRequired,
    TargetMismatch,
    apply_proposal,
    check_claim,
    check_recover,
    propose_containment,
    recover_proposal,
    rollback_proposal,
)
from netwarden.remediation.proposals import simulate_proposal as replay_proposal
from netwarden.remediation.propose import Proposer, policy_name, policy_yaml, propose_baselines
from netwarden.remediation.schema import InvalidPolicy

__all__ = ["router"]

router = APIRouter(
    prefix="/proposals", tags=["proposals"], responses=problem_responses(401, 403, 422)
)

# --------------------------------------------------------------------------------- errors


def _invalid(problems: list[dict[str, str]], detail: str) -> ProblemError:
    return ProblemError(
        422, detail, type=problem_type("invalid-policy"), title="Invalid policy", problems=problems
    )


def _recent_flows(review: Review) -> Iterable[Any]:
    flows = review.recent_flows()
    if flows is None:
        raise ProblemError(
            409,
            "no flow history: this service keeps no recorded flows to "
            "replay or learn from (give a baseline's policy in the request)",
            type=problem_type("no-flow-history"),
            title="No flow history",
        )
    return flows


#: A refused dry-run or apply, by its cause: status, problem type and title. Any other cause
#: is a 409 ``apply-failed``.
_REFUSALS: Final = (
    (Unreachable, 503, "kubernetes-unreachable", "Kubernetes API unreachable"),
    (AuditModeUnavailable, 409, "audit-mode-unavailable", "Cilium is not in policy audit mode"),
    (Forbidden, 502, "kubernetes-forbidden", "Kubernetes API refused access"),
)


def _refused(exc: ApplyRefused) -> ProblemError:
    if isinstance(exc.cause, Conflict) and exc.cause.concurrent:
        return ProblemError(
            409,
            str(exc),
            type=problem_type("policy-changed"),
            title="Someone else changed the policy in the cluster",
            state=exc.record.state,
            proposal_id=exc.record.id,
            reason=exc.cause.reason,
        )
    for cause, status, name, title in _REFUSALS:
        if isinstance(exc.cause, cause):
            return ProblemError(
                status, str(exc), type=problem_type(name), title=title, state=exc.record.state
            )
    return ProblemError(
        409,
        str(exc),
        type=problem_type("apply-failed"),
        title="The cluster refused the change",
        state=exc.record.state,
        proposal_id=exc.record.id,
    )


@contextmanager
def _errors() -> Iterator[None]:
    """The store's and the cluster's refusals as problems (specific errors first: several are
    ValueErrors)."""
    with store_refusals(ProposalNotFound, ProposalLifecycleError):
        try:
            yield
        except InvalidProposal as exc:
            raise _invalid(exc.problems, str(exc)) from None
        except TargetMismatch as exc:
            raise ProblemError(
                422,
                str(exc),
                type=problem_type("target-mismatch"),
                title="The policy does not target the proposal's identity",
                identity=exc.identity,
                problems=exc.problems,
            ) from None
        except SecondApproverRequired as exc:
            raise ProblemError(
                403,
                str(exc),
                type=problem_type("second-approver-required"),
                title="A second person must approve",
                author=exc.author,
            ) from None
        except InvalidPolicy as exc:
            problems = [{"path": p.path, "message": p.message} for p in exc.problems]
            raise _invalid(problems, str(exc)) from None
        except ApplyRefused as exc:
            raise _refused(exc) from None
        except ClaimInProgress as exc:
            raise ProblemError(
                409,
                str(exc),
                type=problem_type("claim-in-progress"),
                title="The claim may still be in progress",
                state=exc.state,
                proposal_id=exc.proposal_id,
                claimed_seconds_ago=round(exc.age, 1),
            ) from None
        except RecoveryRefused as exc:
            raise ProblemError(
                409,
                str(exc),
                type=problem_type("recovery-refused"),
                title="The cluster holds someone else's change",
                state=exc.record.state,
                proposal_id=exc.record.id,
                found=exc.found,
            ) from None
        except ApplyError as exc:
            raise ProblemError(
                503 if isinstance(exc, Unreachable) else 502,
                str(exc),
                type=problem_type("kubernetes-error"),
                title="Kubernetes API error",
            ) from None


def _found(review: Review, proposal_id: int) -> ProposalRecord:
    return found(review.proposals.get(proposal_id), "proposal", proposal_id)


def _applier(review: Review) -> PolicyApplier:
    applier = review.applier()
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


def _act(review: Review, action: Callable[[], ProposalRecord]) -> ProposalDetailPublic:
    """Run ``action`` (it changes one proposal and returns it); its refusals as problems, the
    proposal after."""
    with _errors():
        record = action()
    return _detail(review, record)


def _detail(review: Review, record: ProposalRecord) -> ProposalDetailPublic:
    with _errors():
        events = review.proposals.events(record.id)
    text = policy_yaml(record.policy)
    return ProposalDetailPublic.from_record_and_events(
        record, events, yaml=text, diff=_diff(record.current, record.policy, text)
    )


# ------------------------------------------------------------------------- current policy


def _current_policy(
    review: Review, namespace: str | None, name: str
) -> tuple[dict[str, Any] | None, str]:
    """The policy ``namespace/name`` as it is now, and where that came from: the cluster when
    there is an applier, else netwarden's record of what it applied."""
    applier = review.applier()
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
    applied = review.proposals.latest_applied(namespace, name)
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
    review: ReviewDep, pager: PagerDep, query: Annotated[ProposalQuery, Query()]
) -> Response:
    """Proposals matching every filter given, newest first, one page at a time."""
    filters = query.filters()

    def fetch() -> tuple[list[ProposalPublic], int]:
        items = review.proposals.list(**filters, limit=query.limit, offset=query.offset)
        return [ProposalPublic.from_record(p) for p in items], review.proposals.count(**filters)

    return pager.page(ProposalPagePublic, fetch, query=query)


@router.get("/{proposal_id}", response_model=ProposalDetailPublic, responses=problem_responses(404))
def read_proposal(proposal_id: RecordId, review: ReviewDep) -> ProposalDetailPublic:
    """One proposal: its policy as JSON and YAML, the diff against the current policy, its
    patch, validation problems, last dry-run and audit log."""
    return _detail(review, _found(review, proposal_id))


@router.post(
    "", response_model=ProposalDetailPublic, status_code=201, responses=problem_responses(404, 409)
)
def create_proposal(
    request: Request,
    response: Response,
    review: ReviewDep,
    token: ReviewerDep,
    body: ProposalCreateRequest,
) -> ProposalDetailPublic:
    """Propose a containment for an anomaly, or a baseline for an identity (learned from the
    service's recent flows, or given). The policy is validated now; an invalid one is kept
    with its problems but can never be approved."""
    with _errors():
        if body.anomaly_id is not None:
            record = _propose_containment(review, body.anomaly_id, token.name, body.note)
        else:
            assert body.identity is not None  # the request model requires one of both
            record = _propose_baseline(review, body.identity, body.policy, token.name, body.note)
    response.headers["Location"] = str(request.url_for("read_proposal", proposal_id=record.id))
    return _detail(review, record)


def _propose_containment(review: Review, anomaly_id: int, actor: str, note: str) -> ProposalRecord:
    anomaly = found(review.state.store.get(anomaly_id), "anomaly", anomaly_id)
    current, source = _current_policy(
        review, anomaly.namespace, policy_name(anomaly.workload, "baseline")
    )
    return propose_containment(
        review.proposals,
        anomaly,
        current=current,
        source=source,
        actor=actor,
        note=note,
        **review.containment_inputs(anomaly.first_window_start),
    )


def _propose_baseline(
    review: Review, identity: str, policy: dict[str, Any] | None, actor: str, note: str
) -> ProposalRecord:
    if policy is None:
        learned = propose_baselines(_recent_flows(review))
        if identity not in learned:
            raise ProblemError(
                422,
                f"the recorded flows hold no normal traffic of {identity}: "
                "nothing to learn a baseline from",
                type=problem_type("no-flows-for-identity"),
                title="No flows for this identity",
            )
        policy = learned[identity]
        labels = _selector(policy)  # learned for this identity from its flows
    else:
        labels = _learned_labels(review, identity)
    namespace, name = _metadata(policy)
    current, source = _current_policy(review, namespace, name) if name is not None else (None, "")
    patch = jsonpatch.make_patch(current, policy).patch if current is not None else None
    return review.proposals.create(
        kind=BASELINE,
        identity=identity,
        policy=policy,
        patch=patch,
        current=current,
        actor=actor,
        note=note or (f"baseline ({source})" if current is not None else ""),
        workload_labels=labels,
    )


def _selector(policy: Mapping[str, Any]) -> dict[str, str] | None:
    labels = ((policy.get("spec") or {}).get("endpointSelector") or {}).get("matchLabels")
    return dict(labels) if isinstance(labels, Mapping) and labels else None


def _learned_labels(review: Review, identity: str) -> dict[str, str] | None:
    """The stable labels of ``identity``'s pods in the recorded flows, if it is in them: what
    a given policy's selector is checked against (else the labels identities are named by)."""
    flows = review.recent_flows()
    if not flows:
        return None
    return Proposer().add_all(flows).selectors().get(identity) or None


@router.post(
    "/{proposal_id}/simulate",
    response_model=SimulationPublic,
    responses=problem_responses(404, 409),
)
def simulate_proposal(
    proposal_id: RecordId, review: ReviewDep, token: ViewerDep
) -> SimulationPublic:
    """Replay the service's recent flows against the proposed policy: what it would drop."""
    record = _found(review, proposal_id)
    if record.problems:
        raise _invalid(record.problems, str(InvalidProposal(record.id, record.problems)))
    flows = _recent_flows(review)
    with _errors():
        report = replay_proposal(review.proposals, record, flows, actor=token.name)
    return SimulationPublic.from_report(record.id, report)


_ACTION_ERRORS = problem_responses(404, 409)
_CLUSTER_ERRORS = problem_responses(404, 409, 502, 503)


@router.post(
    "/{proposal_id}/approve", response_model=ProposalDetailPublic, responses=_ACTION_ERRORS
)
def approve_proposal(
    proposal_id: RecordId,
    review: ReviewDep,
    token: ReviewerDep,
    body: ProposalActionRequest | None = None,
) -> ProposalDetailPublic:
    """proposed -> approved: a reviewer vouches for it (only a valid policy can be approved)."""
    return _act(
        review, lambda: review.proposals.approve(proposal_id, actor=token.name, note=note_of(body))
    )


@router.post("/{proposal_id}/reject", response_model=ProposalDetailPublic, responses=_ACTION_ERRORS)
def reject_proposal(
    proposal_id: RecordId,
    review: ReviewDep,
    token: ReviewerDep,
    body: ProposalActionRequest | None = None,
) -> ProposalDetailPublic:
    """proposed -> rejected, for good; the note says why."""
    return _act(
        review, lambda: review.proposals.reject(proposal_id, actor=token.name, note=note_of(body))
    )


@router.post("/{proposal_id}/apply", response_model=ProposalDetailPublic, responses=_CLUSTER_ERRORS)
def apply_proposal_route(
    proposal_id: RecordId,
    review: ReviewDep,
    token: AdminDep,
    body: ProposalActionRequest | None = None,
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

    def apply(record: ProposalRecord) -> ProposalRecord:
        if record.problems:
            raise InvalidProposal(record.id, record.problems)
        return apply_proposal(
            review.proposals,
            _applier(review),
            record.id,
            actor=token.name,
            note=note_of(body),
            audit=audit,
        )

    return _change_cluster(review, proposal_id, "apply", apply)


@router.post(
    "/{proposal_id}/rollback", response_model=ProposalDetailPublic, responses=_CLUSTER_ERRORS
)
def rollback_proposal_route(
    proposal_id: RecordId,
    review: ReviewDep,
    token: AdminDep,
    body: ProposalActionRequest | None = None,
) -> ProposalDetailPublic:
    """applied -> rolled_back: the object it replaced is restored (or the one it created is
    deleted)."""

    def rollback(record: ProposalRecord) -> ProposalRecord:
        return rollback_proposal(
            review.proposals, _applier(review), record.id, actor=token.name, note=note_of(body)
        )

    return _change_cluster(review, proposal_id, "rollback", rollback)


@router.post(
    "/{proposal_id}/recover", response_model=ProposalDetailPublic, responses=_CLUSTER_ERRORS
)
def recover_proposal_route(
    proposal_id: RecordId,
    review: ReviewDep,
    token: AdminDep,
    body: ProposalActionRequest | None = None,
) -> ProposalDetailPublic:
    """Finish an apply or rollback whose process died (the proposal stuck ``applying`` or
    ``rolling_back`` for longer than ``remediation.claim_grace_seconds``), from what the cluster
    holds: this proposal's object -> applied (rollback restores what it replaced); what was
    there before -> approved (apply again); after a rollback, the replaced object back (or the
    created one gone) -> rolled_back. Anything else is someone else's change: a 409 saying what
    is there, the proposal left as it is. Every decision is in the audit log."""
    record = _found(review, proposal_id)
    with _errors():
        check_recover(record.id, record.state)  # 409 before a 503 for no cluster
        record = recover_proposal(
            review.proposals,
            _applier(review),
            record.id,
            actor=token.name,
            note=note_of(body),
            grace_seconds=review.claim_grace_seconds(),
        )
    return _detail(review, record)


def _change_cluster(
    review: Review,
    proposal_id: int,
    action: str,
    change: Callable[[ProposalRecord], ProposalRecord],
) -> ProposalDetailPublic:
    """Apply or roll back: 404 for an unknown proposal, a 409 unless its state allows
    ``action``, then ``change`` it (which claims the proposal first: of concurrent requests one
    goes ahead, the others get a 409); the cluster's refusals as problems."""
    record = _found(review, proposal_id)
    with _errors():
        check_claim(record.id, record.state, action)  # 409 before a 503 for no cluster
        record = change(record)
    return _detail(review, record)

"""Policy proposals under review: their lifecycle, their audit log, and the guarded apply.

A proposal is one CiliumNetworkPolicy that netwarden suggests (a ``baseline`` for a workload, or
a ``containment`` for an anomaly), with what it would replace (``current``, for the diff), the
RFC 6902 ``patch`` from it, the problems :func:`~netwarden.remediation.schema.validate_policy`
found when it was stored, the last dry-run and, once applied, the change that rollback needs.

Lifecycle (the one place the rules live is :data:`ACTIONS`)::

    action          from          to
    approve         proposed      approved      (reviewer; only a valid policy; see below)
    reject          proposed      rejected      (reviewer; final)
    start_apply     approved      applying      (admin: the claim, before the cluster is asked)
    dry_run         applying      applying      (the server-side dry-run passed)
    apply           applying      applied       (the apply passed)
    fail            applying      failed        (the cluster refused the policy)
    dry_run_error   applying      approved      (no verdict on the policy: claim released)
    apply_error     applying      approved      (no verdict on the policy: claim released)
    start_rollback  applied       rolling_back  (admin: the claim)
    rollback        rolling_back  rolled_back   (final)
    rollback_error  rolling_back  applied       (refused: claim released)
    apply_uncertain applying      applying      (the write got no answer: the claim stays for recover)
    rollback_uncertain rolling_back rolling_back (likewise for a rollback)

    recover_applied      applying      applied       (admin, a dead claim: the cluster holds this
                         rolling_back  applied        proposal's object)
    recover_approved     applying      approved      (admin: the cluster holds what it held before)
    recover_rolled_back  rolling_back  rolled_back   (admin: the replaced object is back, or the
                                                      created one gone, as the rollback intended)
    recover_refused      applying      applying      (admin: someone else changed the object: the
                         rolling_back  rolling_back   claim stays, the finding is logged)

"No verdict on the policy" is a cluster out of reach, netwarden lacking RBAC, audit mode
unavailable, or another writer that got to the policy first (it was created or changed since it
was read): the proposal goes back to ``approved`` to be looked at and retried.

**One apply per proposal.** :meth:`ProposalStore.claim` moves a proposal to ``applying`` (or
``rolling_back``) in one transaction that holds the row (``SELECT ... FOR UPDATE`` on
PostgreSQL; SQLite's write lock, taken at ``BEGIN IMMEDIATE``), before any request reaches the
cluster: of two concurrent applies of one proposal, the second sees ``applying`` and is refused
(:class:`ProposalLifecycleError`) without a request. Two proposals for the same policy are kept
apart by the cluster instead: see :mod:`netwarden.remediation.apply` (create-if-absent, and
updates conditional on the ``resourceVersion`` read).

**Recovery.** A claim whose holder died (the process killed mid-apply) stays ``applying`` (or
``rolling_back``) until a person asks :func:`recover_proposal` to finish it from facts, not
guesses. For that the claim is written down as it goes (:attr:`ProposalRecord.claim`): when,
by whom and, before the real write is sent, what the cluster held (the object the dry-run read,
or its absence; a rollback has what it needs in ``change`` already); and every object netwarden
applies carries the annotation ``netwarden.io/proposal-id: <id>`` (:data:`PROPOSAL_ANNOTATION`).
Recover reads the object and decides: this proposal's object there (its annotation and its
spec) is ``applied``, with the recorded object as what it replaced; what was there before (or
nothing, as before) is ``approved`` again; for a rollback, the applied object unchanged is
``applied`` and the replaced object back (or the created one gone) is ``rolled_back``; anything
else is someone else's change, refused (:class:`RecoveryRefused`) and left as it is. A claim
younger than the grace period (``remediation.claim_grace_seconds``) may still be at work and is
not touched (:class:`ClaimInProgress`). Each recover that reads the cluster is one audit event.

**Two people.** With ``require_second_approver`` (the default; ``remediation.
require_second_approver``) a proposal's author, the actor of its ``propose`` event, cannot approve
it (:class:`SecondApproverRequired`): a person's proposal needs another person's approval; an
automatic one (author ``netwarden``) needs one human's.

**Target.** :meth:`ProposalStore.create` refuses a policy that does not select exactly the
proposal's identity (:class:`TargetMismatch`, see :mod:`netwarden.remediation.target`): a
clusterwide policy, or one that selects more than that workload, is never reviewed under its name.

Every action writes one audit event (who, when, from, to, a note and details), and so does the
creation (``propose``, from no state): the rules are a
:class:`netwarden.storage.lifecycle.AuditedLifecycle` (:data:`LIFECYCLE`) and the events go to
the shared ``audit_events`` table (subject kind ``proposal``), in the transaction of the change.
A simulation is a read and writes nothing (older versions logged ``simulate`` events; they stay).

:func:`apply_proposal` is the only way to ``applied``: it claims, re-validates, dry-runs on the
API server and records that, and applies only if both pass, against the object the dry-run saw.

The store shares the anomaly store's database URL, engine settings and ORM base
(:mod:`netwarden.storage`); its ``proposals`` table is its own, so either store can run without
the other. The schema is migrated on open (:mod:`netwarden.storage.migrate`), which also copies
the events of a database from before ``audit_events`` (``proposal_events``) over once. Callers
get frozen dataclasses, never ORM objects.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import JSON, ColumnElement, Index, Integer, String, Text, func, select, text
from sqlalchemy.orm import Mapped, Session, mapped_column

from netwarden.detector.store import AnomalyRecord
from netwarden.remediation.apply import (
    AppliedChange,
    ApplyError,
    AuditModeUnavailable,
    Conflict,
    Forbidden,
    Invalid,
    PolicyApplier,
    PolicyRef,
    Unreachable,
    diverged,
)
from netwarden.remediation.normal import NormalEdges, RecentFlows
from netwarden.remediation.propose import Proposer, policy_name
from netwarden.remediation.schema import validate_policy
from netwarden.remediation.simulate import SimulationReport
from netwarden.remediation.target import IDENTITY_ANNOTATION, target_problems
from netwarden.storage.audit import AuditEventRow
from netwarden.storage.base import Base, record_of
from netwarden.storage.database import SqlStore, required_text
from netwarden.storage.database import UTCDateTime as _UTCDateTime
from netwarden.storage.lifecycle import AuditedLifecycle, SubjectNotFound, TransitionError

if TYPE_CHECKING:
    from netwarden.remediation.containment import Containment

__all__ = [
    "ACTIONS",
    "CLAIMED",
    "CLAIMS",
    "DEFAULT_CLAIM_GRACE_SECONDS",
    "KINDS",
    "LIFECYCLE",
    "PROPOSAL_ANNOTATION",
    "RECOVERIES",
    "STATES",
    "AlreadyProposed",
    "ApplyRefused",
    "ClaimInProgress",
    "InvalidProposal",
    "ProposalEvent",
    "ProposalLifecycleError",
    "ProposalNotFound",
    "ProposalRecord",
    "ProposalStore",
    "RecoveryRefused",
    "SecondApproverRequired",
    "TargetMismatch",
    "apply_proposal",
    "built_for",
    "check_claim",
    "check_recover",
    "marked",
    "next_state",
    "recover_proposal",
    "rollback_proposal",
]

BASELINE: Final = "baseline"
CONTAINMENT: Final = "containment"
KINDS: Final[tuple[str, ...]] = (BASELINE, CONTAINMENT)

PROPOSED: Final = "proposed"
APPROVED: Final = "approved"
REJECTED: Final = "rejected"
APPLYING: Final = "applying"
APPLIED: Final = "applied"
ROLLING_BACK: Final = "rolling_back"
ROLLED_BACK: Final = "rolled_back"
FAILED: Final = "failed"
#: Every state, in lifecycle order.
STATES: Final[tuple[str, ...]] = (
    PROPOSED, APPROVED, REJECTED, APPLYING, APPLIED, ROLLING_BACK, ROLLED_BACK, FAILED
)  # fmt: skip

#: action -> {from_state: to_state}; the one place the valid transitions are declared.
ACTIONS: Final[dict[str, dict[str, str]]] = {
    "approve": {PROPOSED: APPROVED},
    "reject": {PROPOSED: REJECTED},
    "start_apply": {APPROVED: APPLYING},
    "dry_run": {APPLYING: APPLYING},
    "apply": {APPLYING: APPLIED},
    "fail": {APPLYING: FAILED},
    "dry_run_error": {APPLYING: APPROVED},
    "apply_error": {APPLYING: APPROVED},
    "start_rollback": {APPLIED: ROLLING_BACK},
    "rollback": {ROLLING_BACK: ROLLED_BACK},
    "rollback_error": {ROLLING_BACK: APPLIED},
    # the write was sent and no answer came (timeout, lost connection, interrupt): it may have
    # landed, so the claim stays for recover, which looks at what the cluster holds
    "apply_uncertain": {APPLYING: APPLYING},
    "rollback_uncertain": {ROLLING_BACK: ROLLING_BACK},
    # a claim whose holder is gone, finished by a person from what the cluster holds
    "recover_applied": {APPLYING: APPLIED, ROLLING_BACK: APPLIED},
    "recover_approved": {APPLYING: APPROVED},
    "recover_rolled_back": {ROLLING_BACK: ROLLED_BACK},
    "recover_refused": {APPLYING: APPLYING, ROLLING_BACK: ROLLING_BACK},
    # written by netwarden before simulations became reads; kept so old trails stay readable
    "simulate": {state: state for state in STATES},
}
#: The actions that change the cluster, as people ask for them, and the transition claiming each.
CLAIMS: Final[dict[str, str]] = {"apply": "start_apply", "rollback": "start_rollback"}
#: The author of automatic proposals.
SYSTEM_ACTOR: Final = "netwarden"
#: The states of a claim: under way, or left behind by a holder that died.
CLAIMED: Final[tuple[str, ...]] = (APPLYING, ROLLING_BACK)
#: The actions :func:`recover_proposal` ends a claim with (or logs a refusal as).
RECOVERIES: Final[tuple[str, ...]] = (
    "recover_applied", "recover_approved", "recover_rolled_back", "recover_refused"
)  # fmt: skip
#: On every policy object netwarden applies: the proposal it came from (recover reads it).
PROPOSAL_ANNOTATION: Final = "netwarden.io/proposal-id"
#: Seconds a claim is left to its holder before recover may end it (``remediation.
#: claim_grace_seconds``): an apply takes a few requests of at most the applier's timeout each.
DEFAULT_CLAIM_GRACE_SECONDS: Final = 300.0


# --------------------------------------------------------------------------------- errors


class ProposalLifecycleError(TransitionError):
    """An action the proposal's state does not allow (approving twice, applying unapproved, or
    applying while another apply of it is under way)."""

    def __init__(self, proposal_id: int, state: str, action: str) -> None:
        if action == "recover":
            allowed: Iterable[str] = CLAIMED
        else:
            allowed = LIFECYCLE.sources(CLAIMS.get(action, action))
        super().__init__("proposal", proposal_id, state, action, allowed)
        self.proposal_id = proposal_id


class ClaimInProgress(Exception):
    """Recover of a claim that may still be at work: younger than the grace period, or one
    that moved on while recover looked at the cluster. Nothing is changed or logged."""

    def __init__(self, proposal_id: int, state: str, message: str, *, age: float) -> None:
        super().__init__(message)
        self.proposal_id = proposal_id
        self.state = state
        self.age = age


class RecoveryRefused(Exception):
    """Recover found neither this proposal's object nor the one it expected to replace (or to
    restore): someone else changed it. The proposal stays claimed (``record``, with the finding
    logged as ``recover_refused``); ``found`` says what the cluster holds."""

    def __init__(self, message: str, record: ProposalRecord, found: dict[str, Any]) -> None:
        super().__init__(message)
        self.record = record
        self.found = found


class SecondApproverRequired(PermissionError):
    """The proposal's author tried to approve it while a second person's approval is required."""

    def __init__(self, proposal_id: int, author: str) -> None:
        who = "netwarden itself" if author == SYSTEM_ACTOR else repr(author)
        super().__init__(
            f"proposal {proposal_id} was proposed by {who}: its approval must come from "
            "another person (remediation.require_second_approver)"
        )
        self.proposal_id = proposal_id
        self.author = author


class TargetMismatch(ValueError):
    """The policy does not select exactly the proposal's identity (see
    :mod:`netwarden.remediation.target`); such a proposal is never stored."""

    def __init__(self, identity: str, problems: list[str]) -> None:
        super().__init__(f"the policy does not target {identity} alone: {'; '.join(problems)}")
        self.identity = identity
        self.problems = problems


class AlreadyProposed(ValueError):
    """The containment adds nothing a reviewer has not been offered already (see
    :func:`propose_containment`'s ``novel``); it is not stored."""


class InvalidProposal(ValueError):
    """The proposal's policy fails validation, so it can never be approved or applied."""

    def __init__(self, proposal_id: int, problems: list[dict[str, str]]) -> None:
        listed = "; ".join(f"{p['path'] or '<policy>'}: {p['message']}" for p in problems)
        super().__init__(
            f"proposal {proposal_id} has an invalid policy "
            f"({len(problems)} problem{'s' * (len(problems) != 1)}): {listed}"
        )
        self.proposal_id = proposal_id
        self.problems = problems


class ProposalNotFound(SubjectNotFound):
    """No proposal has this id."""

    def __init__(self, proposal_id: int) -> None:
        super().__init__("proposal", proposal_id)
        self.proposal_id = proposal_id


class ApplyRefused(Exception):
    """The cluster refused the dry-run or the apply; ``record`` is the proposal afterwards
    (``failed``, or still ``approved``/``applied`` when the API server was out of reach)."""

    def __init__(self, message: str, record: ProposalRecord, cause: ApplyError) -> None:
        super().__init__(message)
        self.record = record
        self.cause = cause


#: The proposal lifecycle: created ``proposed`` (action ``propose``).
LIFECYCLE: Final = AuditedLifecycle(
    kind="proposal",
    states=STATES,
    actions=ACTIONS,
    error=ProposalLifecycleError,
    initial=PROPOSED,
    create_action="propose",
)


def next_state(proposal_id: int, state: str, action: str) -> str:
    """The state ``action`` leads to from ``state``; :class:`ProposalLifecycleError` if none."""
    return LIFECYCLE.next_state(proposal_id, state, action)


def check_claim(proposal_id: int, state: str, action: str) -> None:
    """Refuse (:class:`ProposalLifecycleError`) ``apply``/``rollback`` from ``state``: a check
    before anything else, the claim itself is :meth:`ProposalStore.claim`."""
    if not LIFECYCLE.allows(state, CLAIMS[action]):
        raise ProposalLifecycleError(proposal_id, state, action)


def check_recover(proposal_id: int, state: str) -> None:
    """Refuse (:class:`ProposalLifecycleError`) to recover a proposal that is not claimed."""
    if state not in CLAIMED:
        raise ProposalLifecycleError(proposal_id, state, "recover")


# -------------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class ProposalRecord:
    """One proposal as stored. ``problems`` is empty for a valid policy; ``warnings`` are what
    normal traffic its policy would drop, found when it was proposed (a containment replayed
    against the recent flows); ``dry_run`` is the last dry-run (``passed``, ``message``, ...);
    ``change`` is :meth:`AppliedChange.to_dict` once applied (what rollback restores);
    ``claim`` is the claim under way (``applying``/``rolling_back``; None otherwise): its
    ``action``, ``at`` (ISO time), ``actor``, for an apply ``audit`` and, once the dry-run has
    read it, ``before`` (``ref`` and ``object``, None when absent: what the write replaces)."""

    id: int
    kind: str
    identity: str
    anomaly_id: int | None
    policy: dict[str, Any]
    patch: list[dict[str, Any]] | None
    current: dict[str, Any] | None
    state: str
    problems: list[dict[str, str]]
    warnings: list[str]
    dry_run: dict[str, Any] | None
    change: dict[str, Any] | None
    note: str
    created_at: datetime
    updated_at: datetime
    claim: dict[str, Any] | None = None

    @property
    def valid(self) -> bool:
        return not self.problems

    @property
    def claimed_at(self) -> datetime | None:
        """When the claim under way was made (None when not claimed); for a claim made by a
        netwarden that did not record it, the proposal's last change."""
        if self.state not in CLAIMED:
            return None
        at = (self.claim or {}).get("at")
        return datetime.fromisoformat(at) if isinstance(at, str) else self.updated_at

    @property
    def name(self) -> str:
        return str((self.policy.get("metadata") or {}).get("name", ""))

    @property
    def namespace(self) -> str | None:
        namespace = (self.policy.get("metadata") or {}).get("namespace")
        return str(namespace) if namespace is not None else None


@dataclass(frozen=True, slots=True)
class ProposalEvent:
    """One audit entry: who did what to which proposal, when, from which state to which."""

    id: int
    proposal_id: int
    at: datetime
    actor: str
    action: str
    from_state: str | None
    to_state: str
    note: str
    details: dict[str, Any]


# --------------------------------------------------------------------------------- schema


class _ProposalRow(Base):
    __tablename__ = "proposals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    identity: Mapped[str] = mapped_column(String(512))
    anomaly_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    policy: Mapped[dict[str, Any]] = mapped_column(JSON)
    patch: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    current: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    state: Mapped[str] = mapped_column(String(16))
    problems: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    # added after the first release (server_default: the rows already there get [])
    warnings: Mapped[list[str]] = mapped_column(JSON, server_default=text("'[]'"))
    dry_run: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    change: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    note: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(_UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(_UTCDateTime())
    # added with recover (nullable: older rows have none)
    claim: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)

    __table_args__ = (
        Index("ix_proposals_identity", "identity", "id"),
        Index("ix_proposals_state", "state", "id"),
    )


def _to_record(row: _ProposalRow) -> ProposalRecord:
    return record_of(
        ProposalRecord,
        row,
        policy=dict(row.policy),
        patch=list(row.patch) if row.patch is not None else None,
        current=dict(row.current) if row.current is not None else None,
        problems=list(row.problems or []),
        warnings=[str(w) for w in row.warnings or ()],
        claim=dict(row.claim) if row.claim is not None else None,
    )


def _to_event(row: AuditEventRow) -> ProposalEvent:
    return record_of(
        ProposalEvent, row, proposal_id=row.subject_id, details=dict(row.details or {})
    )


def problems_of(policy: Any) -> list[dict[str, str]]:
    """The validation problems of ``policy`` as JSON (path, message); empty when valid."""
    return [{"path": p.path, "message": p.message} for p in validate_policy(policy)]


# ---------------------------------------------------------------------------------- store


class ProposalStore(SqlStore):
    """Persist proposals and run their lifecycle, one short transaction per call.

    ``url`` is a SQLAlchemy URL (normally the anomaly store's), migrated on open.
    ``now`` is the clock, injected by tests. ``require_second_approver``: a proposal's author
    cannot approve it (see the module docstring).
    """

    def __init__(self, url: str, *, now: Callable[[], datetime] | None = None,
                 require_second_approver: bool = True) -> None:  # fmt: skip
        super().__init__(url, now=now)
        self.require_second_approver = require_second_approver

    _transaction = SqlStore._begin

    # ---------------------------------------------------------------------------- create

    def create(
        self,
        *,
        kind: str,
        identity: str,
        policy: Mapping[str, Any],
        actor: str,
        anomaly_id: int | None = None,
        patch: list[dict[str, Any]] | None = None,
        current: Mapping[str, Any] | None = None,
        note: str = "",
        workload_labels: Mapping[str, str] | None = None,
        warnings: Iterable[str] = (),
    ) -> ProposalRecord:
        """Store a new proposal in state ``proposed``, validated now: an invalid policy is kept
        with its problems (so the reviewer sees why) but can never be approved.

        A policy that does not target ``identity`` alone is refused (:class:`TargetMismatch`)
        and not stored; ``workload_labels`` are the workload's labels it was built for, when
        known (:func:`~netwarden.remediation.target.target_problems`)."""
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}: expected one of {', '.join(KINDS)}")
        identity = required_text(identity, "identity")
        actor = required_text(actor, "actor")
        mismatch = target_problems(policy, identity, workload_labels=workload_labels)
        if mismatch:
            raise TargetMismatch(identity, mismatch)
        problems = problems_of(policy)
        with self._transaction() as (session, now):
            row = _ProposalRow(
                kind=kind,
                identity=identity,
                anomaly_id=anomaly_id,
                policy=dict(policy),
                patch=patch,
                current=dict(current) if current is not None else None,
                state=PROPOSED,
                problems=problems,
                warnings=[str(w) for w in warnings],
                dry_run=None,
                change=None,
                note=note,
                created_at=now,
                updated_at=now,
            )
            session.add(row)
            session.flush()
            summary = "valid" if not problems else f"{len(problems)} validation problem(s)"
            LIFECYCLE.created(
                session,
                row.id,
                actor=actor,
                note=note or f"{kind} proposal: {summary}",
                at=now,
                details={"problems": problems} if problems else {},
            )
            return _to_record(row)

    # ------------------------------------------------------------------------------ read

    def get(self, proposal_id: int) -> ProposalRecord | None:
        with self._transaction() as (session, _):
            row = session.get(_ProposalRow, proposal_id)
            return _to_record(row) if row is not None else None

    def list(
        self,
        *,
        identity: str | None = None,
        state: str | None = None,
        kind: str | None = None,
        anomaly_id: int | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[ProposalRecord]:
        """Proposals matching every filter given, newest first."""
        conditions = _conditions(identity, state, kind)
        if anomaly_id is not None:
            conditions.append(_ProposalRow.anomaly_id == anomaly_id)
        stmt = (
            select(_ProposalRow)
            .where(*conditions)
            .order_by(_ProposalRow.id.desc())
            .limit(limit)
            .offset(offset)
        )
        with self._transaction() as (session, _):
            return [_to_record(r) for r in session.scalars(stmt)]

    def count(
        self, *, identity: str | None = None, state: str | None = None, kind: str | None = None
    ) -> int:
        stmt = (
            select(func.count())
            .select_from(_ProposalRow)
            .where(*_conditions(identity, state, kind))
        )
        with self._transaction() as (session, _):
            return int(session.scalar(stmt) or 0)

    def events(self, proposal_id: int) -> list[ProposalEvent]:
        """The audit log of one proposal, oldest first."""
        with self._transaction() as (session, _):
            if session.get(_ProposalRow, proposal_id) is None:
                raise ProposalNotFound(proposal_id)
            return [_to_event(r) for r in LIFECYCLE.events(session, proposal_id)]

    def latest_applied(self, namespace: str | None, name: str) -> ProposalRecord | None:
        """The most recently applied (still applied, or being rolled back) proposal of the
        policy ``namespace/name``: what the cluster holds as far as netwarden knows, when it
        cannot ask the cluster."""
        with self._transaction() as (session, _):
            for row in session.scalars(
                select(_ProposalRow)
                .where(_ProposalRow.state.in_((APPLIED, ROLLING_BACK)))
                .order_by(_ProposalRow.updated_at.desc(), _ProposalRow.id.desc())
            ):
                meta = row.policy.get("metadata") or {}
                if meta.get("name") == name and meta.get("namespace") == namespace:
                    return _to_record(row)
        return None

    # ------------------------------------------------------------------------- lifecycle

    def approve(self, proposal_id: int, *, actor: str, note: str = "") -> ProposalRecord:
        """proposed -> approved; :class:`InvalidProposal` if its policy has problems,
        :class:`SecondApproverRequired` if ``actor`` proposed it (unless that is switched off)."""
        return self._act(proposal_id, "approve", actor=actor, note=note)

    def reject(self, proposal_id: int, *, actor: str, note: str = "") -> ProposalRecord:
        """proposed -> rejected, for good."""
        return self._act(proposal_id, "reject", actor=actor, note=note)

    def author(self, proposal_id: int) -> str | None:
        """Who proposed it: the actor of its ``propose`` event (None if it has none)."""
        with self._transaction() as (session, _):
            return _author(session, self._row(session, proposal_id).id)

    def claim(
        self, proposal_id: int, action: str, *, actor: str, note: str = "", audit: bool = False
    ) -> ProposalRecord:
        """Claim the proposal for ``action`` (``apply``: approved -> applying; ``rollback``:
        applied -> rolling_back) in one transaction holding its row, so exactly one of several
        concurrent callers gets it; the others get :class:`ProposalLifecycleError`. Call before
        any request reaches the cluster; end with :meth:`record_dry_run`, :meth:`mark_applied`,
        :meth:`mark_failed`, :meth:`mark_rolled_back` or :meth:`release`. The claim is kept on
        the proposal (:attr:`ProposalRecord.claim`: when, by whom, ``audit`` for an apply), so
        that one whose holder died can be recovered (:func:`recover_proposal`)."""
        if action not in CLAIMS:
            raise ValueError(f"unknown claim {action!r}: expected one of {', '.join(CLAIMS)}")
        actor = required_text(actor, "actor")
        with self._transaction() as (session, now):
            row = self._row(session, proposal_id)
            check_claim(row.id, row.state, action)
            if action == "apply" and row.problems:
                raise InvalidProposal(row.id, list(row.problems))
            LIFECYCLE.transition(
                session, row, CLAIMS[action], actor=actor, note=note or f"{action} started",
                at=now,
            )  # fmt: skip
            row.updated_at = now
            claim: dict[str, Any] = {"action": action, "at": now.isoformat(), "actor": actor}
            if action == "apply":
                claim["audit"] = audit
            row.claim = claim
            return _to_record(row)

    def stuck(self, older_than: float = 0.0) -> list[ProposalRecord]:
        """The proposals claimed (``applying``, ``rolling_back``) at least ``older_than``
        seconds ago by the store's clock, oldest claim first: with the grace period, those
        whose holder is presumably gone (:func:`recover_proposal` finishes them)."""
        with self._transaction() as (session, now):
            rows = session.scalars(select(_ProposalRow).where(_ProposalRow.state.in_(CLAIMED)))
            records = [_to_record(row) for row in rows]
        old = [r for r in records if _age(r, now) >= older_than]
        return sorted(old, key=lambda r: (r.claimed_at or r.updated_at, r.id))

    def finish_claim(
        self,
        proposal_id: int,
        action: str,
        *,
        actor: str,
        note: str,
        seen: ProposalRecord,
        details: dict[str, Any],
        change: dict[str, Any] | None = None,
    ) -> ProposalRecord:
        """End (or, ``recover_refused``, keep) a claim whose holder is gone with ``action``, one
        of :data:`RECOVERIES`, as :func:`recover_proposal` decided from the cluster and
        ``seen``, the proposal as it read it. Refused with :class:`ClaimInProgress` when the
        proposal changed since (its holder was at work after all), so that a decision is never
        made on a claim that moved on."""
        if action not in RECOVERIES:
            raise ValueError(
                f"unknown recovery {action!r}: expected one of {', '.join(RECOVERIES)}"
            )
        actor = required_text(actor, "actor")
        with self._transaction() as (session, now):
            row = self._row(session, proposal_id)
            if row.state != seen.state or row.claim != seen.claim:
                raise ClaimInProgress(
                    row.id,
                    row.state,
                    f"proposal {row.id} changed while recover looked at the cluster (it is "
                    f"{row.state} now): its claim's holder is at work; look again",
                    age=_age(seen, now),
                )
            LIFECYCLE.transition(session, row, action, actor=actor, note=note, at=now,
                                 details=details)  # fmt: skip
            row.updated_at = now
            if change is not None:
                row.change = change
            if row.state not in CLAIMED:
                row.claim = None
            return _to_record(row)

    def release(
        self,
        proposal_id: int,
        *,
        actor: str,
        action: str,
        message: str,
        details: dict[str, Any] | None = None,
    ) -> ProposalRecord:
        """Give a claim back after an attempt that got no verdict on the policy (API server out
        of reach, a concurrent writer, a refused rollback): logged as ``<action>_error``
        (``dry_run``, ``apply`` or ``rollback``) and back to ``approved``/``applied``, so that
        it can be looked at and retried."""
        return self._act(proposal_id, f"{action}_error", actor=actor, note=message, details=details)

    def keep_claim(
        self,
        proposal_id: int,
        *,
        actor: str,
        action: str,
        message: str,
        details: dict[str, Any] | None = None,
    ) -> ProposalRecord:
        """Log a write whose outcome is unknown (sent, no answer) as ``<action>_uncertain``
        and keep the claim: only :func:`recover_proposal` may end it, from what the cluster
        holds, so a re-apply can never record netwarden's own object as what was there."""
        return self._act(
            proposal_id, f"{action}_uncertain", actor=actor, note=message, details=details
        )

    def record_dry_run(
        self,
        proposal_id: int,
        *,
        actor: str,
        result: dict[str, Any],
        before: dict[str, Any] | None = None,
    ) -> ProposalRecord:
        """Keep the dry-run ``result`` (with ``passed``) of a claimed proposal and log it: a
        failed one moves it to ``failed``; a passed one leaves it ``applying`` for
        :meth:`mark_applied`, with ``before`` (``ref``, and ``object``: what the dry-run read,
        None when absent) on its claim, committed before the write it precedes is sent."""
        action = "dry_run" if result.get("passed") else "fail"
        return self._act(
            proposal_id,
            action,
            actor=actor,
            note=str(result.get("message", "")),
            details={"dry_run": result},
            dry_run=result,
            claim={"before": before} if before is not None else None,
        )

    def mark_applied(
        self, proposal_id: int, *, actor: str, change: dict[str, Any], note: str = ""
    ) -> ProposalRecord:
        """applying -> applied, with what rollback needs (a passing dry-run came first)."""
        return self._act(
            proposal_id,
            "apply",
            actor=actor,
            note=note,
            change=change,
            details={"ref": change.get("ref"), "created": change.get("previous") is None},
        )

    def mark_failed(
        self, proposal_id: int, *, actor: str, message: str, details: dict[str, Any] | None = None
    ) -> ProposalRecord:
        """applying -> failed: the cluster refused the apply after its dry-run passed."""
        return self._act(proposal_id, "fail", actor=actor, note=message, details=details)

    def mark_rolled_back(self, proposal_id: int, *, actor: str, note: str = "") -> ProposalRecord:
        """rolling_back -> rolled_back: the object it replaced is back (or it was deleted)."""
        return self._act(proposal_id, "rollback", actor=actor, note=note)

    def _row(self, session: Session, proposal_id: int) -> _ProposalRow:
        row = session.get(_ProposalRow, proposal_id, with_for_update=True)
        if row is None:
            raise ProposalNotFound(proposal_id)
        return row

    def _act(
        self,
        proposal_id: int,
        action: str,
        *,
        actor: str,
        note: str,
        details: dict[str, Any] | None = None,
        dry_run: dict[str, Any] | None = None,
        change: dict[str, Any] | None = None,
        claim: dict[str, Any] | None = None,
    ) -> ProposalRecord:
        actor = required_text(actor, "actor")
        with self._transaction() as (session, now):
            row = self._row(session, proposal_id)
            next_state(row.id, row.state, action)  # a refused action outranks a bad policy
            if action in ("approve", "dry_run", "apply") and row.problems:
                raise InvalidProposal(row.id, list(row.problems))
            if action == "approve" and self.require_second_approver:
                author = _author(session, row.id)
                if author is not None and _same_person(author, actor):
                    raise SecondApproverRequired(row.id, author)
            LIFECYCLE.transition(
                session, row, action, actor=actor, note=note, at=now, details=details
            )
            row.updated_at = now
            if dry_run is not None:
                row.dry_run = dry_run
            if change is not None:
                row.change = change
            if row.state not in CLAIMED:
                row.claim = None  # the claim is over
            elif claim is not None:
                row.claim = {**(row.claim or {}), **claim}  # a new dict: JSON is not tracked
            return _to_record(row)


def _age(record: ProposalRecord, now: datetime) -> float:
    """Seconds since ``record`` was claimed (0 when it is not)."""
    at = record.claimed_at
    return (now - at).total_seconds() if at is not None else 0.0


def _author(session: Session, proposal_id: int) -> str | None:
    return session.scalar(
        select(AuditEventRow.actor)
        .where(
            AuditEventRow.subject_kind == LIFECYCLE.kind,
            AuditEventRow.subject_id == proposal_id,
            AuditEventRow.action == LIFECYCLE.create_action,
        )
        .order_by(AuditEventRow.id)
        .limit(1)
    )


def _same_person(a: str, b: str) -> bool:
    """Actor names as token names: case and surrounding blanks do not make another person."""
    return a.strip().casefold() == b.strip().casefold()


def _conditions(
    identity: str | None, state: str | None, kind: str | None
) -> list[ColumnElement[bool]]:
    if state is not None and state not in STATES:
        raise ValueError(f"unknown state {state!r}: expected one of {', '.join(STATES)}")
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}: expected one of {', '.join(KINDS)}")
    conditions: list[ColumnElement[bool]] = []
    if identity is not None:
        conditions.append(_ProposalRow.identity == identity)
    if state is not None:
        conditions.append(_ProposalRow.state == state)
    if kind is not None:
        conditions.append(_ProposalRow.kind == kind)
    return conditions


# ------------------------------------------------------------------------ apply / rollback


def _error_details(exc: ApplyError) -> dict[str, Any]:
    details: dict[str, Any] = {"error": type(exc).__name__}
    if isinstance(exc, Invalid):
        details["causes"] = [{"field": c.field, "message": c.message} for c in exc.causes]
        details["by"] = exc.by
    if isinstance(exc, Conflict):
        details["managers"] = exc.managers
        details["reason"] = exc.reason
    return details


def _no_verdict(exc: ApplyError) -> bool:
    """The attempt said nothing about the policy itself: the cluster out of reach, netwarden
    lacking RBAC, audit mode off, or another writer first (created or changed it meanwhile)."""
    if isinstance(exc, Conflict):
        return exc.concurrent
    return isinstance(exc, Unreachable | Forbidden | AuditModeUnavailable)


def apply_proposal(
    store: ProposalStore,
    applier: PolicyApplier,
    proposal_id: int,
    *,
    actor: str,
    note: str = "",
    audit: bool = False,
) -> ProposalRecord:
    """Apply an approved, valid proposal: claim it, dry-run (recorded, with the object it read),
    then the real apply against the object the dry-run saw. The object applied is the policy
    with :data:`PROPOSAL_ANNOTATION` naming the proposal (:func:`marked`).

    ``audit``: only where Cilium runs in policy audit mode (its verdicts are logged, not
    enforced; see :meth:`PolicyApplier.apply`).

    A concurrent apply of the same proposal gets :class:`ProposalLifecycleError` from the claim
    and sends nothing. A dry-run or apply the cluster refuses moves the proposal to ``failed``
    and raises :class:`ApplyRefused`; an attempt without a verdict on the policy (see
    :func:`_no_verdict`) releases the claim (``approved`` again, the error logged) and raises it
    too. A real apply that timed out may have reached the cluster: the release says so.
    """
    record = store.claim(proposal_id, "apply", actor=actor, audit=audit)
    policy = marked(record.policy, record.id)
    step = "dry_run"
    try:
        try:
            checked = applier.dry_run(policy)
        except ApplyError as exc:
            if _no_verdict(exc):
                raise
            result = {
                "passed": False,
                "at": store.now().isoformat(),
                "message": str(exc),
                **_error_details(exc),
            }
            after = store.record_dry_run(record.id, actor=actor, result=result)
            raise ApplyRefused(
                f"the dry-run failed, nothing was applied: {exc}", after, exc
            ) from exc
        effect = "created" if checked.created else "changed" if checked.changed else "unchanged"
        store.record_dry_run(  # committed before the write: what recover compares with
            record.id,
            actor=actor,
            result={
                "passed": True,
                "at": store.now().isoformat(),
                "message": f"the API server accepts {checked.ref} ({effect})",
                "created": checked.created,
                "changed": checked.changed,
            },
            before={"ref": _ref_dict(checked.ref), "object": checked.previous},
        )
        step = "apply"
        try:
            change: AppliedChange = applier.apply(policy, audit=audit, checked=checked)
        except ApplyError as exc:
            if _no_verdict(exc):
                raise
            after = store.mark_failed(
                record.id, actor=actor, message=str(exc), details=_error_details(exc)
            )
            raise ApplyRefused(f"the apply failed: {exc}", after, exc) from exc
    except ApplyRefused:
        raise
    except ApplyError as exc:
        message = str(exc)
        if step == "apply" and isinstance(exc, Unreachable):
            message += (
                "; the request may have reached the cluster: the proposal stays 'applying' "
                f"until POST /api/v1/proposals/{record.id}/recover looks at what is there"
            )
            after = store.keep_claim(
                record.id, actor=actor, action=step, message=message, details=_error_details(exc)
            )
        else:
            after = store.release(
                record.id, actor=actor, action=step, message=message, details=_error_details(exc)
            )
        raise ApplyRefused(message, after, exc) from exc
    except BaseException as exc:  # a bug or an interrupt: leave a claim only if a write went
        message = f"{type(exc).__name__}: {exc}"
        if step == "apply":
            store.keep_claim(record.id, actor=actor, action=step, message=message)
        else:
            store.release(record.id, actor=actor, action=step, message=message)
        raise
    return store.mark_applied(
        record.id, actor=actor, change=change.to_dict(), note=note or f"applied {change.ref}"
    )


def rollback_proposal(
    store: ProposalStore, applier: PolicyApplier, proposal_id: int, *, actor: str, note: str = ""
) -> ProposalRecord:
    """Put back what an applied proposal replaced (or delete what it created): claim it, then
    :meth:`PolicyApplier.rollback`, which refuses when the policy changed since it was applied.

    A refused rollback is logged and raises :class:`ApplyRefused`; the proposal goes back to
    ``applied``. A concurrent rollback of it gets :class:`ProposalLifecycleError`.
    """
    record = store.claim(proposal_id, "rollback", actor=actor)
    assert record.change is not None, "an applied proposal always holds its change"
    change = AppliedChange.from_dict(record.change)
    try:
        applier.rollback(change)
    except ApplyError as exc:
        uncertain = isinstance(exc, Unreachable)  # sent, unanswered: it may have landed
        end_claim = store.keep_claim if uncertain else store.release
        after = end_claim(
            record.id, actor=actor, action="rollback", message=str(exc),
            details=_error_details(exc),
        )  # fmt: skip
        tail = (
            f"; the proposal stays 'rolling_back' until POST /api/v1/proposals/{record.id}/"
            "recover looks at what the cluster holds"
            if uncertain
            else ""
        )
        raise ApplyRefused(f"the rollback failed: {exc}{tail}", after, exc) from exc
    except BaseException as exc:
        store.keep_claim(
            record.id, actor=actor, action="rollback", message=f"{type(exc).__name__}: {exc}"
        )
        raise
    what = "deleted" if change.previous is None else "restored the previous"
    return store.mark_rolled_back(record.id, actor=actor, note=note or f"{what} {change.ref}")


def marked(policy: Mapping[str, Any], proposal_id: int) -> dict[str, Any]:
    """``policy`` as netwarden applies it for proposal ``proposal_id``: with the annotation
    :data:`PROPOSAL_ANNOTATION` set to that id (replacing one copied from another proposal's
    object), so that the object in the cluster says which proposal wrote it."""
    out = copy.deepcopy(dict(policy))
    meta = dict(out.get("metadata") or {})
    meta["annotations"] = {**(meta.get("annotations") or {}), PROPOSAL_ANNOTATION: str(proposal_id)}
    out["metadata"] = meta
    return out


def _ref_dict(ref: PolicyRef) -> dict[str, Any]:
    return {"kind": ref.kind, "name": ref.name, "namespace": ref.namespace}


# ------------------------------------------------------------------------------- recovery


@dataclass(frozen=True, slots=True)
class _Finding:
    """What recover found in the cluster: the action it takes, why, and for ``applied`` the
    change rollback needs."""

    action: str
    text: str
    change: dict[str, Any] | None = None


def recover_proposal(
    store: ProposalStore,
    applier: PolicyApplier,
    proposal_id: int,
    *,
    actor: str,
    note: str = "",
    grace_seconds: float = DEFAULT_CLAIM_GRACE_SECONDS,
) -> ProposalRecord:
    """Finish a claim whose holder is gone (the process killed mid-apply or mid-rollback) from
    what the cluster holds now (see "Recovery" in the module docstring).

    Raises :class:`ProposalNotFound`; :class:`ProposalLifecycleError` when the proposal is not
    claimed; :class:`ClaimInProgress` when it was claimed less than ``grace_seconds`` ago (or
    moved on meanwhile); :class:`~netwarden.remediation.apply.ApplyError` when the cluster
    cannot be read (nothing decided, nothing logged); :class:`RecoveryRefused` when someone else
    changed the object (logged as ``recover_refused``, the claim left as it is). Otherwise the
    proposal ends ``applied`` (with what its object replaced, for rollback), ``approved`` or
    ``rolled_back``, the finding logged with the note."""
    record = store.get(proposal_id)
    if record is None:
        raise ProposalNotFound(proposal_id)
    check_recover(record.id, record.state)
    age = _age(record, store.now())
    if age < grace_seconds:
        claim = record.claim or {}
        who = f" by {claim['actor']}" if claim.get("actor") else ""
        raise ClaimInProgress(
            record.id,
            record.state,
            f"proposal {record.id} was claimed{who} {age:.0f} s ago, still in progress? recover "
            f"finishes only claims at least {grace_seconds:g} s old "
            "(remediation.claim_grace_seconds)",
            age=age,
        )
    if record.state == ROLLING_BACK:
        assert record.change is not None, "an applied proposal always holds its change"
        ref = PolicyRef(**record.change["ref"])
    else:
        ref = PolicyRef.of(record.policy)
    current = applier.get(ref.namespace, ref.name, kind=ref.kind)
    if record.state == ROLLING_BACK:
        finding = _rollback_finding(record, ref, current)
    else:
        finding = _apply_finding(record, ref, current)
    found = _found(ref, current)
    after = store.finish_claim(
        record.id,
        finding.action,
        actor=actor,
        note=note or finding.text,
        seen=record,
        details={"finding": finding.text, "found": found, "claimed_at": _iso(record.claimed_at)},
        change=finding.change,
    )
    if finding.action == "recover_refused":
        raise RecoveryRefused(finding.text, after, found)
    return after


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def _marker(obj: Mapping[str, Any] | None) -> str | None:
    if obj is None:
        return None
    value = ((obj.get("metadata") or {}).get("annotations") or {}).get(PROPOSAL_ANNOTATION)
    return str(value) if value is not None else None


def _uid(obj: Mapping[str, Any]) -> Any:
    return (obj.get("metadata") or {}).get("uid")


def _body(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What a policy enforces: everything but its identity, metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata", "status")}


def _ours(record: ProposalRecord, obj: Mapping[str, Any] | None) -> bool:
    """``obj`` is this proposal's object: its annotation names the proposal, its spec is the
    proposal's."""
    return obj is not None and _marker(obj) == str(record.id) and _body(obj) == _body(record.policy)


def _found(ref: PolicyRef, obj: Mapping[str, Any] | None) -> dict[str, Any]:
    """The object recover read, in brief (for the audit log and the 409)."""
    if obj is None:
        return {"ref": str(ref), "present": False}
    meta = obj.get("metadata") or {}
    entries = meta.get("managedFields") or []
    return {
        "ref": str(ref),
        "present": True,
        "uid": meta.get("uid"),
        "resourceVersion": meta.get("resourceVersion"),
        "proposal": _marker(obj),
        "managers": sorted({str(e.get("manager", "?")) for e in entries if isinstance(e, dict)}),
    }


def _there(ref: PolicyRef, obj: Mapping[str, Any] | None) -> str:
    """What the cluster holds at ``ref``, in words."""
    found = _found(ref, obj)
    if not found["present"]:
        return f"{ref} is not in the cluster"
    marker = found["proposal"]
    by = f"annotated {PROPOSAL_ANNOTATION}: {marker}" if marker else "not marked by netwarden"
    managers = ", ".join(found["managers"]) or "none"
    return (
        f"{ref} is in the cluster at resourceVersion {found['resourceVersion']} (uid "
        f"{found['uid']}; {by}; field managers: {managers})"
    )


def _unlike(expected: Mapping[str, Any] | None, obj: Mapping[str, Any] | None) -> str:
    """How ``obj`` differs from ``expected``, read or written before (either may be absent)."""
    if expected is None:
        return "it was absent then"
    if obj is None:
        return "it has been deleted since"
    return f"since then {diverged(expected, obj) or 'nothing changed'}"


def _apply_finding(
    record: ProposalRecord, ref: PolicyRef, current: dict[str, Any] | None
) -> _Finding:
    claim = record.claim or {}
    before = claim.get("before")
    there = _there(ref, current)
    if _ours(record, current):
        if before is None:  # netwarden writes only after recording what it replaces
            return _Finding(
                "recover_refused",
                f"{there}: this proposal's policy, but netwarden recorded nothing of what it "
                "replaced, so a rollback could not put that back. Check the policy in the "
                "cluster: delete it, or restore what it replaced, then recover again",
            )
        previous = before.get("object")
        change = AppliedChange(ref, previous, current, audit_mode=bool(claim.get("audit")))
        what = "nothing (it created it)" if previous is None else (
            f"resourceVersion {previous['metadata'].get('resourceVersion')}, recorded before the "
            "write"
        )  # fmt: skip
        return _Finding(
            "recover_applied",
            f"the apply reached the cluster: {there}, this proposal's policy; it replaced {what}",
            change.to_dict(),
        )
    if before is not None:
        previous = before.get("object")
        if previous is None and current is None:
            return _Finding(
                "recover_approved",
                f"the apply never reached the cluster: {ref} is still absent, as before it; "
                "the claim is released",
            )
        if previous is not None and current is not None and not diverged(previous, current):
            return _Finding(
                "recover_approved",
                f"the apply never reached the cluster: {there}, as before it (the object the "
                "dry-run read); the claim is released",
            )
        return _Finding(
            "recover_refused",
            f"{there}. That is neither this proposal's policy nor what netwarden recorded before "
            f"the apply ({_unlike(previous, current)}): someone else changed it. Review the "
            "policy in the cluster, put back either of them, then recover again",
        )
    if claim:
        return _Finding(
            "recover_approved",
            f"the claim ended before netwarden recorded what the cluster held, and it writes "
            f"only after that: nothing was written ({there}); the claim is released",
        )
    # claimed by a netwarden that recorded neither the object read nor marked its writes
    if current is not None and _body(current) == _body(record.policy):
        return _Finding(
            "recover_refused",
            f"{there}, with this proposal's spec, but the claim was made by a netwarden that "
            "recorded nothing of what an apply replaces: whether it wrote the policy, and over "
            "what, cannot be told. Check the policy in the cluster: restore what it replaced "
            "or delete it, then recover again",
        )
    return _Finding(
        "recover_approved",
        f"the cluster does not hold this proposal's policy ({there}); the claim is released",
    )


def _rollback_finding(
    record: ProposalRecord, ref: PolicyRef, current: dict[str, Any] | None
) -> _Finding:
    assert record.change is not None
    applied: dict[str, Any] = record.change["applied"]
    previous: dict[str, Any] | None = record.change["previous"]
    there = _there(ref, current)
    # what netwarden applied; or its object (same uid, annotation, spec) with labels or
    # annotations of others added since, which the next rollback refuses over, as it always did
    if current is not None and (
        not diverged(applied, current)
        or (
            _uid(current) == _uid(applied)
            and _marker(current) == str(record.id)
            and _body(current) == _body(applied)
        )
    ):
        return _Finding(
            "recover_applied",
            f"the rollback never reached the cluster: {there}, this proposal's object as "
            "netwarden applied it; the claim is released",
        )
    if previous is None and current is None:
        return _Finding(
            "recover_rolled_back",
            f"the rollback deleted {ref}, which the apply had created",
        )
    if previous is not None and current is not None and not diverged(previous, current):
        return _Finding(
            "recover_rolled_back",
            f"the rollback restored what the apply had replaced: {there}",
        )
    meant = "no policy" if previous is None else "the object the apply replaced"
    return _Finding(
        "recover_refused",
        f"{there}. That is neither what netwarden applied ({_unlike(applied, current)}) nor "
        f"what the rollback meant to leave ({meant}): someone else changed it. Review the "
        "policy in the cluster, put back either of them, then recover again",
    )


def propose_containment(
    store: ProposalStore,
    anomaly: AnomalyRecord,
    *,
    current: Mapping[str, Any] | None,
    source: str = "",
    actor: str,
    note: str = "",
    normal: NormalEdges | None = None,
    flows: Iterable[Any] | None = None,
    selectors: Mapping[str, Mapping[str, str]] | None = None,
    current_for: Callable[[str], Mapping[str, Any] | None] | None = None,
    novel: Callable[[Containment], str] | None = None,
) -> ProposalRecord:
    """Store the containment of ``anomaly`` (see :mod:`netwarden.remediation.containment`) as a
    proposal for the workload it contains: the anomaly's own for what it did (egress), the
    attacking workload's for what was done to it (ingress), linked to the anomaly
    (``anomaly_id``) either way, with the warnings of what normal traffic it would drop.

    ``current`` is the policy of the anomaly's workload now (found at ``source``);
    ``current_for(identity)`` gives another workload's (default: its baseline as netwarden last
    applied it, :meth:`ProposalStore.latest_applied`), for when the attacker is contained. The
    patch is against the contained workload's current policy, when it has one. ``normal`` are
    the edges never to deny; ``flows`` the recent flows (what the anomaly did, and what the
    policy is replayed against); ``selectors`` the workloads' stable labels
    (:meth:`~netwarden.remediation.propose.Proposer.selectors`, learned from ``flows`` when not
    given). The labels the target check holds the policy to: the selector of a current policy
    netwarden built for the workload, else the workload's stable labels from the flows.
    Raises :class:`ValueError` when there is nothing to contain, :class:`TargetMismatch` when
    the policy would not select the contained workload alone. ``novel(containment)`` (the
    service's, for a later anomaly of an incident) says why the containment is not worth a
    proposal of its own, or ``""`` when it is; :class:`AlreadyProposed` is raised then."""
    from netwarden.remediation.containment import containment

    flow_list: list[Any] | RecentFlows | None = (
        flows if isinstance(flows, RecentFlows) or flows is None else list(flows)
    )
    if selectors is None and flow_list:
        selectors = Proposer().add_all(flow_list).selectors()
    lookup = current_for or (lambda identity: _applied_baseline(store, identity))
    looked_up: dict[str, Mapping[str, Any] | None] = {}

    def other_current(identity: str) -> Mapping[str, Any] | None:
        if identity not in looked_up:
            looked_up[identity] = lookup(identity)
        return looked_up[identity]

    change = containment(
        anomaly,
        dict(current) if current is not None else None,
        selectors=selectors,
        normal=normal,
        flows=flow_list,
        current_for=other_current,
    )
    if novel is not None and (why := novel(change)):
        raise AlreadyProposed(why)
    identity = change.identity or anomaly.identity
    if identity != anomaly.identity:
        current = other_current(identity)
        source = "" if current_for else "its current policy from netwarden's records"
    summary = f"{change.action}: {'; '.join(change.notes)}" if change.notes else change.action
    if current is not None and source:
        summary += f" ({source})"
    learned = (selectors or {}).get(identity)
    return store.create(
        kind=CONTAINMENT,
        identity=identity,
        anomaly_id=anomaly.id,
        policy=change.policy,
        patch=change.patch,
        current=current,
        actor=actor,
        note=note or summary,
        workload_labels=built_for(current, identity) or (dict(learned) if learned else None),
        warnings=change.warnings,
    )


def _applied_baseline(store: ProposalStore, identity: str) -> dict[str, Any] | None:
    """The baseline policy of ``identity`` as netwarden last applied it (None if never)."""
    namespace, _, workload = identity.partition("/")
    record = store.latest_applied(namespace, policy_name(workload, "baseline"))
    return record.policy if record is not None else None


def built_for(policy: Mapping[str, Any] | None, identity: str) -> dict[str, str] | None:
    """The workload labels ``policy`` selects when netwarden built it for ``identity`` (its
    ``netwarden.io/identity`` annotation says so), else None."""
    if policy is None:
        return None
    meta = policy.get("metadata") or {}
    if (meta.get("annotations") or {}).get(IDENTITY_ANNOTATION) != identity:
        return None
    labels = ((policy.get("spec") or {}).get("endpointSelector") or {}).get("matchLabels")
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, Mapping) else None


def simulate_proposal(
    store: ProposalStore, record: ProposalRecord, flows: Iterable[Any], *, actor: str
) -> SimulationReport:
    """Replay ``flows`` through the proposal's policy: the numbers a reviewer sees next to the
    proposal. A read: nothing is written (``store`` and ``actor`` are kept for callers)."""
    from netwarden.remediation.simulate import simulate

    del store, actor  # a simulation is not an action on the proposal: no audit event
    return simulate([record.policy], flows)

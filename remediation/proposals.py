"""Policy proposals under review: their lifecycle, their audit log, and the guarded apply.

A proposal is one CiliumNetworkPolicy that netwarden suggests (a ``baseline`` for a workload, or
a ``containment`` for an anomaly), with what it would replace (``current``, for the diff), the
RFC 6902 ``patch`` from it, the problems :func:`~netwarden.remediation.schema.validate_policy`
found when it was stored, the last dry-run and, once applied, the change that rollback needs.

Lifecycle (the one place the rules live is :data:`ACTIONS`)::

    action     from                      to
    approve    proposed                  approved      (reviewer; only a valid policy)
    reject     proposed                  rejected      (reviewer; final)
    dry_run    approved                  approved      (recorded by apply before it applies)
    apply      approved                  applied       (admin; after a passing dry-run)
    fail       approved                  failed        (the dry-run or the apply was refused)
    rollback   applied                   rolled_back   (admin; final)
    simulate   any                       unchanged     (a replay against recorded flows)

An attempt that gets no verdict on the policy (the API server out of reach, a refused rollback)
is logged as ``<action>_error`` and leaves the state alone, so it can be retried.

Every action writes one audit event (who, when, from, to, a note and details), and so does the
creation (``propose``, from no state): the rules are a
:class:`netwarden.storage.lifecycle.AuditedLifecycle` (:data:`LIFECYCLE`) and the events go to
the shared ``audit_events`` table (subject kind ``proposal``), in the transaction of the change.

:func:`apply_proposal` is the only way to ``applied``: it re-validates, dry-runs on the API
server and records that, and applies only if both pass; a refused dry-run leaves the proposal
``failed`` with the server's message and nothing applied.

The store shares the anomaly store's database URL, engine settings and ORM base
(:mod:`netwarden.storage`); its ``proposals`` table is its own, so either store can run without
the other. A database of an older netwarden, whose proposal events are in ``proposal_events``,
has them copied to ``audit_events`` once on open. Callers get frozen dataclasses, never ORM
objects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import JSON, ColumnElement, Index, Integer, String, Text, func, select
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
    Unreachable,
)
from netwarden.remediation.schema import validate_policy
from netwarden.remediation.simulate import SimulationReport
from netwarden.storage.audit import AuditEventRow
from netwarden.storage.base import Base, record_of
from netwarden.storage.database import SqlStore, required_text
from netwarden.storage.database import UTCDateTime as _UTCDateTime
from netwarden.storage.lifecycle import AuditedLifecycle, SubjectNotFound, TransitionError

__all__ = [
    "ACTIONS",
    "KINDS",
    "LIFECYCLE",
    "STATES",
    "ApplyRefused",
    "InvalidProposal",
    "ProposalEvent",
    "ProposalLifecycleError",
    "ProposalNotFound",
    "ProposalRecord",
    "ProposalStore",
    "apply_proposal",
    "next_state",
    "rollback_proposal",
]

BASELINE: Final = "baseline"
CONTAINMENT: Final = "containment"
KINDS: Final[tuple[str, ...]] = (BASELINE, CONTAINMENT)

PROPOSED: Final = "proposed"
APPROVED: Final = "approved"
REJECTED: Final = "rejected"
APPLIED: Final = "applied"
ROLLED_BACK: Final = "rolled_back"
FAILED: Final = "failed"
#: Every state, in lifecycle order.
STATES: Final[tuple[str, ...]] = (PROPOSED, APPROVED, REJECTED, APPLIED, ROLLED_BACK, FAILED)

#: action -> {from_state: to_state}; the one place the valid transitions are declared.
ACTIONS: Final[dict[str, dict[str, str]]] = {
    "approve": {PROPOSED: APPROVED},
    "reject": {PROPOSED: REJECTED},
    "dry_run": {APPROVED: APPROVED},
    "apply": {APPROVED: APPLIED},
    "fail": {APPROVED: FAILED},
    "rollback": {APPLIED: ROLLED_BACK},
    "simulate": {state: state for state in STATES},
}


# --------------------------------------------------------------------------------- errors


class ProposalLifecycleError(TransitionError):
    """An action the proposal's state does not allow (approving twice, applying unapproved)."""

    def __init__(self, proposal_id: int, state: str, action: str) -> None:
        super().__init__("proposal", proposal_id, state, action, LIFECYCLE.sources(action))
        self.proposal_id = proposal_id


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


#: The proposal lifecycle: created ``proposed`` (action ``propose``); databases of netwarden
#: before the shared audit table kept these events in ``proposal_events``.
LIFECYCLE: Final = AuditedLifecycle(
    kind="proposal",
    states=STATES,
    actions=ACTIONS,
    error=ProposalLifecycleError,
    initial=PROPOSED,
    create_action="propose",
    legacy_table="proposal_events",
    legacy_subject="proposal_id",
)


def next_state(proposal_id: int, state: str, action: str) -> str:
    """The state ``action`` leads to from ``state``; :class:`ProposalLifecycleError` if none."""
    return LIFECYCLE.next_state(proposal_id, state, action)


# -------------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class ProposalRecord:
    """One proposal as stored. ``problems`` is empty for a valid policy; ``dry_run`` is the last
    dry-run (``passed``, ``message``, ...); ``change`` is :meth:`AppliedChange.to_dict` once
    applied (what rollback restores)."""

    id: int
    kind: str
    identity: str
    anomaly_id: int | None
    policy: dict[str, Any]
    patch: list[dict[str, Any]] | None
    current: dict[str, Any] | None
    state: str
    problems: list[dict[str, str]]
    dry_run: dict[str, Any] | None
    change: dict[str, Any] | None
    note: str
    created_at: datetime
    updated_at: datetime

    @property
    def valid(self) -> bool:
        return not self.problems

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
    dry_run: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    change: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    note: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(_UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(_UTCDateTime())

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

    ``url`` is a SQLAlchemy URL (normally the anomaly store's); tables are created if missing.
    ``now`` is the clock, injected by tests.
    """

    def __init__(self, url: str, *, now: Callable[[], datetime] | None = None) -> None:
        super().__init__(url, now=now)
        with self._begin() as (session, _):
            LIFECYCLE.adopt_legacy(session)

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
    ) -> ProposalRecord:
        """Store a new proposal in state ``proposed``, validated now: an invalid policy is kept
        with its problems (so the reviewer sees why) but can never be approved."""
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}: expected one of {', '.join(KINDS)}")
        identity = required_text(identity, "identity")
        actor = required_text(actor, "actor")
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
        """The most recently applied (still applied) proposal of the policy ``namespace/name``:
        what the cluster holds as far as netwarden knows, when it cannot ask the cluster."""
        with self._transaction() as (session, _):
            for row in session.scalars(
                select(_ProposalRow)
                .where(_ProposalRow.state == APPLIED)
                .order_by(_ProposalRow.updated_at.desc(), _ProposalRow.id.desc())
            ):
                meta = row.policy.get("metadata") or {}
                if meta.get("name") == name and meta.get("namespace") == namespace:
                    return _to_record(row)
        return None

    # ------------------------------------------------------------------------- lifecycle

    def approve(self, proposal_id: int, *, actor: str, note: str = "") -> ProposalRecord:
        """proposed -> approved; :class:`InvalidProposal` if its policy has problems."""
        return self._act(proposal_id, "approve", actor=actor, note=note)

    def reject(self, proposal_id: int, *, actor: str, note: str = "") -> ProposalRecord:
        """proposed -> rejected, for good."""
        return self._act(proposal_id, "reject", actor=actor, note=note)

    def record_simulation(
        self, proposal_id: int, *, actor: str, note: str, details: dict[str, Any]
    ) -> ProposalRecord:
        """Log that someone replayed flows against the proposal (its state does not change)."""
        return self._act(proposal_id, "simulate", actor=actor, note=note, details=details)

    def record_dry_run(
        self, proposal_id: int, *, actor: str, result: dict[str, Any]
    ) -> ProposalRecord:
        """Keep the dry-run ``result`` (with ``passed``) and log it: a failed one moves the
        proposal to ``failed``; a passed one leaves it ``approved`` for :meth:`mark_applied`."""
        action = "dry_run" if result.get("passed") else "fail"
        return self._act(
            proposal_id,
            action,
            actor=actor,
            note=str(result.get("message", "")),
            details={"dry_run": result},
            dry_run=result,
        )

    def record_error(
        self,
        proposal_id: int,
        *,
        actor: str,
        action: str,
        message: str,
        details: dict[str, Any] | None = None,
    ) -> ProposalRecord:
        """Log an attempt that did not get a verdict on the policy (API server out of reach, a
        refused rollback) as ``<action>_error``; the state stays as it was, so it can be retried."""
        with self._transaction() as (session, now):
            row = self._row(session, proposal_id)
            LIFECYCLE.record(
                session,
                row.id,
                action=f"{action}_error",
                from_state=row.state,
                to_state=row.state,
                actor=required_text(actor, "actor"),
                note=message,
                at=now,
                details=details,
            )
            return _to_record(row)

    def mark_applied(
        self, proposal_id: int, *, actor: str, change: dict[str, Any], note: str = ""
    ) -> ProposalRecord:
        """approved -> applied, with what rollback needs (a passing dry-run came first)."""
        return self._act(
            proposal_id,
            "apply",
            actor=actor,
            note=note,
            change=change,
            details={"ref": change.get("ref"), "created": change.get("previous") is None},
        )

    def mark_failed(self, proposal_id: int, *, actor: str, message: str) -> ProposalRecord:
        """approved -> failed: the cluster refused the apply after its dry-run passed."""
        return self._act(proposal_id, "fail", actor=actor, note=message)

    def mark_rolled_back(self, proposal_id: int, *, actor: str, note: str = "") -> ProposalRecord:
        """applied -> rolled_back: the object it replaced is back (or it was deleted)."""
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
    ) -> ProposalRecord:
        actor = required_text(actor, "actor")
        with self._transaction() as (session, now):
            row = self._row(session, proposal_id)
            next_state(row.id, row.state, action)  # a refused action outranks a bad policy
            if action in ("approve", "dry_run", "apply") and row.problems:
                raise InvalidProposal(row.id, list(row.problems))
            LIFECYCLE.transition(
                session, row, action, actor=actor, note=note, at=now, details=details
            )
            row.updated_at = now
            if dry_run is not None:
                row.dry_run = dry_run
            if change is not None:
                row.change = change
            return _to_record(row)


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


def apply_proposal(
    store: ProposalStore,
    applier: PolicyApplier,
    proposal_id: int,
    *,
    actor: str,
    note: str = "",
    audit: bool = False,
) -> ProposalRecord:
    """Apply an approved, valid proposal: dry-run first (recorded), then the real apply.

    ``audit``: only where Cilium runs in policy audit mode (its verdicts are logged, not
    enforced; see :meth:`PolicyApplier.apply`); elsewhere nothing is applied and the proposal
    stays approved, since the policy itself was not refused.

    A dry-run or apply the cluster refuses moves the proposal to ``failed`` and raises
    :class:`ApplyRefused`; an unreachable API server (or netwarden lacking RBAC) is logged and
    raises it too, but leaves the proposal ``approved``: nothing was decided about the policy.
    """
    record = store.get(proposal_id)
    if record is None:
        raise ProposalNotFound(proposal_id)
    next_state(record.id, record.state, "apply")  # refuse before talking to the cluster
    if record.problems:
        raise InvalidProposal(record.id, record.problems)
    try:
        checked = applier.dry_run(record.policy)
    except (Unreachable, Forbidden) as exc:  # no verdict on the policy: retry later
        after = store.record_error(
            record.id, actor=actor, action="dry_run", message=str(exc), details=_error_details(exc)
        )
        raise ApplyRefused(str(exc), after, exc) from exc
    except ApplyError as exc:
        result = {
            "passed": False,
            "at": store.now().isoformat(),
            "message": str(exc),
            **_error_details(exc),
        }
        after = store.record_dry_run(record.id, actor=actor, result=result)
        raise ApplyRefused(f"the dry-run failed, nothing was applied: {exc}", after, exc) from exc
    effect = "created" if checked.created else "changed" if checked.changed else "unchanged"
    store.record_dry_run(
        record.id,
        actor=actor,
        result={
            "passed": True,
            "at": store.now().isoformat(),
            "message": f"the API server accepts {checked.ref} ({effect})",
            "created": checked.created,
            "changed": checked.changed,
        },
    )
    try:
        change: AppliedChange = applier.apply(record.policy, audit=audit)
    except (Unreachable, Forbidden, AuditModeUnavailable) as exc:  # no verdict on the policy
        after = store.record_error(
            record.id, actor=actor, action="apply", message=str(exc), details=_error_details(exc)
        )
        raise ApplyRefused(str(exc), after, exc) from exc
    except ApplyError as exc:
        after = store.mark_failed(record.id, actor=actor, message=str(exc))
        raise ApplyRefused(f"the apply failed: {exc}", after, exc) from exc
    return store.mark_applied(
        record.id, actor=actor, change=change.to_dict(), note=note or f"applied {change.ref}"
    )


def rollback_proposal(
    store: ProposalStore, applier: PolicyApplier, proposal_id: int, *, actor: str, note: str = ""
) -> ProposalRecord:
    """Put back what an applied proposal replaced (or delete what it created).

    A refused rollback is logged and raises :class:`ApplyRefused`; the proposal stays
    ``applied`` so that it can be retried.
    """
    record = store.get(proposal_id)
    if record is None:
        raise ProposalNotFound(proposal_id)
    next_state(record.id, record.state, "rollback")
    assert record.change is not None, "an applied proposal always holds its change"
    change = AppliedChange.from_dict(record.change)
    try:
        applier.rollback(change)
    except ApplyError as exc:
        after = store.record_error(
            record.id, actor=actor, action="rollback", message=str(exc), details=_error_details(exc)
        )
        raise ApplyRefused(f"the rollback failed: {exc}", after, exc) from exc
    what = "deleted" if change.previous is None else "restored the previous"
    return store.mark_rolled_back(record.id, actor=actor, note=note or f"{what} {change.ref}")


def propose_containment(
    store: ProposalStore,
    anomaly: AnomalyRecord,
    *,
    current: Mapping[str, Any] | None,
    source: str = "",
    actor: str,
    note: str = "",
) -> ProposalRecord:
    """Store the containment of ``anomaly`` (see :mod:`netwarden.remediation.containment`) as a
    proposal, with its JSON patch against ``current`` (the workload's policy now, found at
    ``source``) when there is one."""
    from netwarden.remediation.containment import containment

    change = containment(anomaly, dict(current) if current is not None else None)
    summary = f"{change.action}: {'; '.join(change.notes)}" if change.notes else change.action
    if current is not None and source:
        summary += f" ({source})"
    return store.create(
        kind=CONTAINMENT,
        identity=anomaly.identity,
        anomaly_id=anomaly.id,
        policy=change.policy,
        patch=change.patch,
        current=current,
        actor=actor,
        note=note or summary,
    )


def simulate_proposal(
    store: ProposalStore, record: ProposalRecord, flows: Iterable[Any], *, actor: str
) -> SimulationReport:
    """Replay ``flows`` through the proposal's policy and log it in its audit trail (its state
    does not change): the numbers a reviewer sees next to the proposal."""
    from netwarden.remediation.simulate import simulate

    report = simulate([record.policy], flows)
    store.record_simulation(
        record.id,
        actor=actor,
        note=f"would drop {report.dropped} of {report.flows_judged} judged flows",
        details={
            "flows_seen": report.flows_seen,
            "flows_judged": report.flows_judged,
            "dropped": report.dropped,
            "groups": len(report.groups),
        },
    )
    return report

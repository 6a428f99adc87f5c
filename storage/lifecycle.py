"""Lifecycle state machines, one generic shape for anomalies, proposals and outbox messages.

A :class:`StateMachine` is the rules alone: ``actions`` maps each action to ``{from: to}``, the
one place a subject's valid transitions are declared, and an action from a state it does not
list raises the subject's :class:`TransitionError`. An :class:`AuditedLifecycle` adds the audit
trail: its subjects are rows with an ``id`` and a ``state``, and :meth:`~AuditedLifecycle.
transition` checks the action, writes one ``audit_events`` row and sets the new state in the
caller's session, so a state and its history commit (or roll back) together.

The domain modules instantiate them with their own tables: the anomaly lifecycle
(:mod:`netwarden.detector.lifecycle`), the proposal lifecycle
(:mod:`netwarden.remediation.proposals`) and the outbox's message statuses
(:mod:`netwarden.detector.alerts.outbox`, rules only: see there why it keeps no audit trail).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from netwarden.storage.audit import AuditEventRow

__all__ = [
    "AuditedLifecycle",
    "StateMachine",
    "Stateful",
    "SubjectNotFound",
    "TransitionError",
]


class TransitionError(ValueError):
    """An action that the subject's current state does not allow (e.g. approving twice)."""

    def __init__(
        self, kind: str, subject_id: int, state: str, action: str, allowed: Iterable[str]
    ) -> None:
        listed = sorted(allowed)
        hint = f"{action} is allowed from: {', '.join(listed)}" if listed else "unknown action"
        super().__init__(f"{kind} {subject_id} is {state}: cannot {action} ({hint})")
        self.kind = kind
        self.subject_id = subject_id
        self.state = state
        self.action = action


class SubjectNotFound(KeyError):
    """No subject of this kind has this id. A ``KeyError`` so that mapping-style callers can
    catch it."""

    def __init__(self, kind: str, subject_id: int) -> None:
        super().__init__(subject_id)
        self.kind = kind
        self.subject_id = subject_id

    def __str__(self) -> str:  # KeyError would print the repr of its argument only
        return f"no {self.kind} with id {self.subject_id}"


@dataclass(frozen=True, slots=True, kw_only=True)
class StateMachine:
    """The states of one kind of subject and the actions between them.

    ``error`` builds the exception for a refused action from ``(subject_id, state, action)``
    (a domain subclass of :class:`TransitionError`); without it a plain one is raised.
    """

    kind: str  # what the subject is called in messages (and in the audit trail)
    states: tuple[str, ...]
    actions: Mapping[str, Mapping[str, str]]
    error: Callable[[int, str, str], Exception] | None = None

    def __post_init__(self) -> None:
        for action, table in self.actions.items():
            unknown = {s for pair in table.items() for s in pair} - set(self.states)
            if unknown:
                raise ValueError(f"{self.kind} action {action} names unknown states {unknown}")

    def next_state(self, subject_id: int, state: str, action: str) -> str:
        """The state ``action`` leads to from ``state``; the subject's error if none."""
        try:
            return self.actions[action][state]
        except KeyError:
            if self.error is not None:
                raise self.error(subject_id, state, action) from None
            raise TransitionError(
                self.kind, subject_id, state, action, self.sources(action)
            ) from None

    def sources(self, action: str) -> tuple[str, ...]:
        """The states ``action`` is allowed from (none for an unknown action)."""
        return tuple(self.actions.get(action, {}))

    def allows(self, state: str, action: str) -> bool:
        return state in self.actions.get(action, {})


class Stateful(Protocol):
    """A row an :class:`AuditedLifecycle` moves: its id, and its state (which it sets)."""

    id: int
    state: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditedLifecycle(StateMachine):
    """A state machine whose every transition is recorded in ``audit_events``.

    ``initial`` is the state a subject is created in and ``create_action`` the action of that
    first event (from no state).
    """

    initial: str
    create_action: str

    def __post_init__(self) -> None:
        StateMachine.__post_init__(self)
        if self.initial not in self.states:
            raise ValueError(f"{self.kind} initial state {self.initial!r} is not one of its states")

    def created(
        self,
        session: Session,
        subject_id: int,
        *,
        actor: str,
        note: str,
        at: datetime,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Record the creation of a subject (flushed, so that it has its id)."""
        self.record(
            session,
            subject_id,
            action=self.create_action,
            from_state=None,
            to_state=self.initial,
            actor=actor,
            note=note,
            at=at,
            details=details,
        )

    def transition(
        self,
        session: Session,
        row: Stateful,
        action: str,
        *,
        actor: str,
        note: str,
        at: datetime,
        details: dict[str, Any] | None = None,
    ) -> str:
        """Apply ``action`` to ``row``: check it, record its event, set and return the new
        state. A refused action raises before anything is written."""
        to_state = self.next_state(row.id, row.state, action)
        self.record(
            session,
            row.id,
            action=action,
            from_state=row.state,
            to_state=to_state,
            actor=actor,
            note=note,
            at=at,
            details=details,
        )
        row.state = to_state
        return to_state

    def record(
        self,
        session: Session,
        subject_id: int,
        *,
        action: str,
        from_state: str | None,
        to_state: str,
        actor: str,
        note: str,
        at: datetime,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Write one event as given, unchecked: for events that are no transition of the
        table (a creation, a logged attempt that left the state alone)."""
        session.add(
            AuditEventRow(
                subject_kind=self.kind,
                subject_id=subject_id,
                at=at,
                actor=actor,
                action=action,
                from_state=from_state,
                to_state=to_state,
                note=note,
                details=details or {},
            )
        )

    def events(self, session: Session, subject_id: int) -> list[AuditEventRow]:
        """The events of one subject, oldest first."""
        return list(
            session.scalars(
                select(AuditEventRow)
                .where(
                    AuditEventRow.subject_kind == self.kind,
                    AuditEventRow.subject_id == subject_id,
                )
                .order_by(AuditEventRow.id)
            )
        )

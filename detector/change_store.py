"""The service's change records: what the pipeline's change tracker found, and who decided.

A *change* (:mod:`netwarden.detector.changes`) is ordinary-looking new traffic, one record per
new thing. The pipeline thread writes every change created or touched to the ``changes`` table
after each judged batch (:meth:`ChangeStore.upsert`); people decide through the API; the
pipeline applies their decisions (it owns the edge memory) and the alerter announces new
changes once, as information.

Lifecycle (the one place the rules live is :data:`ACTIONS`)::

    action     from    to
    accept     open    accepted    (a person: its edges become normal; a policy amendment is
                                    proposed)
    reject     open    rejected    (a person: it becomes an anomaly of its subject)
    escalate   open    escalated   (netwarden: its edges failed, swept or beaconed)
    close      open    closed      (netwarden: not seen for the tracker's merge gap, then again:
                                    the return is a new change)

Every transition, and the creation (``open``, by netwarden), is one event in the shared
``audit_events`` table (subject kind ``change``, subject id the row's integer ``id``); so are
the links added afterwards (``amend``: the amendment proposals of an accepted change), which
leave the state as it is.

**Decisions reach the pipeline through the store.** :meth:`ChangeStore.accept` and
:meth:`ChangeStore.reject` record the decision at once (``decided_at``) and leave
``applied_at`` empty; the pipeline thread reads :meth:`ChangeStore.unapplied` (at once when
:attr:`ChangeStore.decided` is set by a decision of this process, else every few seconds, and on
start), applies each to its tracker and edge memory, and marks it applied. A decision made
while the service was down, or by another process on the same database, is applied all the
same.

Rows are updated from the tracker only while open: a person's decision is never overwritten by
what the tracker says afterwards (an accepted change whose edges then failed stays accepted;
the failures are an anomaly of their own).

``change_identities`` indexes the identities a change touched (the ``identity`` filter).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sqlalchemy import (
    JSON,
    ColumnElement,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    func,
    select,
)
from sqlalchemy.orm import Mapped, Session, mapped_column, synonym

from netwarden.detector.changes import Change
from netwarden.detector.results import Reason, ScoredWindow
from netwarden.detector.store import AnomalyRecord, AnomalyStore
from netwarden.models.edges import namespace_of
from netwarden.storage.audit import AuditEventRow
from netwarden.storage.base import Base, record_of
from netwarden.storage.database import SqlStore, required_text
from netwarden.storage.database import UTCDateTime as _UTCDateTime
from netwarden.storage.database import utc as _utc
from netwarden.storage.lifecycle import AuditedLifecycle, SubjectNotFound, TransitionError

__all__ = [
    "ACCEPTED",
    "ACTIONS",
    "CLOSED",
    "ESCALATED",
    "KINDS",
    "LIFECYCLE",
    "OPEN",
    "REJECTED",
    "REJECTION_SCORE",
    "STATES",
    "ChangeEvent",
    "ChangeLifecycleError",
    "ChangeNotFound",
    "ChangeRecord",
    "ChangeStore",
    "record_rejection",
    "subject_identities",
]

OPEN: Final = "open"
ACCEPTED: Final = "accepted"
REJECTED: Final = "rejected"
ESCALATED: Final = "escalated"
CLOSED: Final = "closed"
#: Every state, in lifecycle order.
STATES: Final[tuple[str, ...]] = (OPEN, ACCEPTED, REJECTED, ESCALATED, CLOSED)
#: The kinds of change (netwarden.detector.changes.change_key).
KINDS: Final[tuple[str, ...]] = ("workload", "vendor", "internet", "edge")
#: The actor of what netwarden does itself.
SYSTEM_ACTOR: Final = "netwarden"
#: action -> {from_state: to_state}; the one place the valid transitions are declared.
ACTIONS: Final[dict[str, dict[str, str]]] = {
    "accept": {OPEN: ACCEPTED},
    "reject": {OPEN: REJECTED},
    "escalate": {OPEN: ESCALATED},
    "close": {OPEN: CLOSED},
}
#: The tracker's statuses that end an open change, and the action recorded for each.
_BY_NETWARDEN: Final = {ESCALATED: "escalate", CLOSED: "close"}
#: The score (in thresholds) of the anomaly a rejected change becomes: past the threshold,
#: a warning (a person already knows; it alerts the others and is contained like any anomaly).
REJECTION_SCORE: Final = 1.5
#: Edges named one by one in a rejection anomaly's reasons.
_REASON_EDGES: Final = 8
_IN_CHUNK: Final = 500


class ChangeLifecycleError(TransitionError):
    """An action the change's state does not allow (accepting it twice, rejecting an accepted
    one)."""

    def __init__(self, change_id: str, state: str, action: str) -> None:
        allowed = ", ".join(LIFECYCLE.sources(action)) or "nowhere"
        ValueError.__init__(
            self,
            f"change {change_id} is {state}: cannot {action} ({action} is allowed from: {allowed})",
        )
        self.kind, self.subject_id, self.state, self.action = "change", 0, state, action
        self.change_id = change_id


class ChangeNotFound(SubjectNotFound):
    """No change has this id."""

    def __init__(self, change_id: str) -> None:
        SubjectNotFound.__init__(self, "change", 0)
        self.change_id = change_id

    def __str__(self) -> str:
        return f"no change with id {self.change_id}"


#: The change lifecycle: created ``open`` (action ``open``, by netwarden).
LIFECYCLE: Final = AuditedLifecycle(
    kind="change", states=STATES, actions=ACTIONS, initial=OPEN, create_action="open"
)


# --------------------------------------------------------------------------------------- schema


class _ChangeRow(Base):
    __tablename__ = "changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    change_id: Mapped[str] = mapped_column(String(32), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(String(512))
    status: Mapped[str] = mapped_column(String(16))
    first_seen: Mapped[datetime] = mapped_column(_UTCDateTime())
    last_seen: Mapped[datetime] = mapped_column(_UTCDateTime())
    windows: Mapped[int] = mapped_column(Integer)
    identities: Mapped[list[str]] = mapped_column(JSON)
    edges: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    edges_omitted: Mapped[int] = mapped_column(Integer)
    description: Mapped[str] = mapped_column(Text)
    state_actor: Mapped[str] = mapped_column(String(256))
    state_note: Mapped[str] = mapped_column(Text)
    decided_at: Mapped[datetime | None] = mapped_column(_UTCDateTime(), nullable=True)
    applied_at: Mapped[datetime | None] = mapped_column(_UTCDateTime(), nullable=True)
    proposal_ids: Mapped[list[int]] = mapped_column(JSON)
    anomaly_ids: Mapped[list[int]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(_UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(_UTCDateTime())

    #: What the generic lifecycle moves (netwarden.storage.lifecycle.Stateful).
    state = synonym("status")

    __table_args__ = (
        Index("ix_changes_status_last_seen", "status", "last_seen"),
        Index("ix_changes_last_seen", "last_seen", "id"),
        Index("ix_changes_created", "created_at", "id"),
        Index("ix_changes_decided", "decided_at", "applied_at"),
    )


class _ChangeIdentityRow(Base):
    __tablename__ = "change_identities"

    change_row: Mapped[int] = mapped_column(ForeignKey("changes.id"), primary_key=True)
    identity: Mapped[str] = mapped_column(String(512), primary_key=True)

    __table_args__ = (Index("ix_change_identities_identity", "identity", "change_row"),)


# ------------------------------------------------------------------------------ public records


@dataclass(frozen=True, slots=True)
class ChangeRecord:
    """One change as stored. ``id`` is the row's number (its audit events' subject id),
    ``change_id`` the tracker's id (``chg-...``) that windows and the API name it by. ``edges``
    are :meth:`Change.to_json`'s (identity, direction, peer, port, flows). ``decided_at`` is
    when a person accepted or rejected it, ``applied_at`` when the pipeline applied that;
    ``proposal_ids`` the amendment proposals of an accepted change, ``anomaly_ids`` the
    anomalies a rejected one became."""

    id: int
    change_id: str
    kind: str
    subject: str
    status: str
    first_seen: datetime
    last_seen: datetime
    windows: int
    identities: tuple[str, ...]
    edges: tuple[dict[str, Any], ...]
    edges_omitted: int
    description: str
    state_actor: str
    state_note: str
    decided_at: datetime | None
    applied_at: datetime | None
    proposal_ids: tuple[int, ...]
    anomaly_ids: tuple[int, ...]
    created_at: datetime
    updated_at: datetime

    def to_change(self) -> Change:
        """The tracker's record of it (:meth:`Change.from_json`)."""
        return Change.from_json(
            {
                "id": self.change_id,
                "kind": self.kind,
                "subject": self.subject,
                "status": self.status,
                "first_seen": self.first_seen.isoformat(),
                "last_seen": self.last_seen.isoformat(),
                "identities": list(self.identities),
                "windows": self.windows,
                "edges": list(self.edges),
                "edges_omitted": self.edges_omitted,
            }
        )


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One audit entry of a change: who did what, when, from which state to which, why."""

    id: int
    change_id: str
    at: datetime
    actor: str
    action: str
    from_state: str | None
    to_state: str
    note: str
    details: dict[str, Any]


def _to_record(row: _ChangeRow) -> ChangeRecord:
    return record_of(
        ChangeRecord,
        row,
        identities=tuple(row.identities or ()),
        edges=tuple(dict(e) for e in row.edges or ()),
        proposal_ids=tuple(int(i) for i in row.proposal_ids or ()),
        anomaly_ids=tuple(int(i) for i in row.anomaly_ids or ()),
    )


def _datetime(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def _fill(row: _ChangeRow, change: Change) -> None:
    """The tracker's view of ``change`` on ``row`` (everything but the lifecycle)."""
    data = change.to_json()
    row.kind, row.subject = change.kind, change.subject
    row.first_seen, row.last_seen = _datetime(change.first_seen), _datetime(change.last_seen)
    row.windows = change.windows
    row.identities = data["identities"]
    row.edges = data["edges"]
    row.edges_omitted = change.edges_omitted
    row.description = data["description"]


# ------------------------------------------------------------------------------------- store


class ChangeStore(SqlStore):
    """Persist changes and run their lifecycle, one short transaction per call.

    ``url`` is a SQLAlchemy URL (normally the anomaly store's: tables of one metadata); ``now``
    the clock, injected by tests. :attr:`decided` is set by every decision made through this
    store, for the pipeline thread of the same process to apply it at once.
    """

    def __init__(self, url: str, *, now: Callable[[], datetime] | None = None) -> None:
        super().__init__(url, now=now)
        self.decided = threading.Event()

    _transaction = SqlStore._begin

    # ------------------------------------------------------------------------ from the tracker

    def upsert(self, changes: Iterable[Change]) -> list[ChangeRecord]:
        """Write the tracker's changes (created or touched since last time) in one
        transaction; returns those that are new here. An open row takes the tracker's status
        when it ended the change (escalated, closed: an event by netwarden); a decided one
        keeps its decision."""
        wanted = {c.id: c for c in changes}
        if not wanted:
            return []
        created: list[_ChangeRow] = []
        with self._transaction() as (session, now):
            rows = self._rows(session, wanted, lock=True)
            for change_id, change in wanted.items():
                row = rows.get(change_id)
                if row is None:
                    row = _ChangeRow(
                        change_id=change_id,
                        status=OPEN,
                        state_actor=SYSTEM_ACTOR,
                        state_note="",
                        proposal_ids=[],
                        anomaly_ids=[],
                        created_at=now,
                    )
                    _fill(row, change)
                    row.updated_at = now
                    session.add(row)
                    session.flush()
                    LIFECYCLE.created(
                        session,
                        row.id,
                        actor=SYSTEM_ACTOR,
                        note=change.description(),
                        at=now,
                        details={"kind": change.kind, "subject": change.subject},
                    )
                    created.append(row)
                else:
                    _fill(row, change)
                    row.updated_at = now
                self._identities(session, row)
                action = _BY_NETWARDEN.get(change.status)
                if action is not None and row.status == OPEN:
                    note = (
                        "its edges became evidence of an anomaly (failing, sweeping or beaconing)"
                        if action == "escalate"
                        else "not seen for the tracker's merge gap; seen again as a new change"
                    )
                    LIFECYCLE.transition(
                        session, row, action, actor=SYSTEM_ACTOR, note=note, at=now
                    )
                    row.state_actor, row.state_note = SYSTEM_ACTOR, note
            session.flush()
            return [_to_record(r) for r in created]

    @staticmethod
    def _rows(session: Session, ids: Iterable[str], *, lock: bool = False) -> dict[str, _ChangeRow]:
        """The rows of these changes; with ``lock``, locked until the transaction ends (a
        decision and the pipeline's update of one change then follow each other on PostgreSQL,
        as SQLite's one writer makes them)."""
        wanted = sorted(ids)
        found: dict[str, _ChangeRow] = {}
        for i in range(0, len(wanted), _IN_CHUNK):
            stmt = select(_ChangeRow).where(_ChangeRow.change_id.in_(wanted[i : i + _IN_CHUNK]))
            if lock:
                stmt = stmt.order_by(_ChangeRow.id).with_for_update()
            for row in session.scalars(stmt):
                found[row.change_id] = row
        return found

    @staticmethod
    def _identities(session: Session, row: _ChangeRow) -> None:
        have = set(
            session.scalars(
                select(_ChangeIdentityRow.identity).where(_ChangeIdentityRow.change_row == row.id)
            )
        )
        for identity in sorted(set(row.identities) - have):
            session.add(_ChangeIdentityRow(change_row=row.id, identity=identity))

    # ------------------------------------------------------------------------------ reads

    def get(self, change_id: str) -> ChangeRecord | None:
        with self._transaction() as (session, _):
            row = self._rows(session, [change_id]).get(change_id)
            return None if row is None else _to_record(row)

    def list(
        self,
        *,
        status: str | None = None,
        identity: str | None = None,
        kind: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[ChangeRecord]:
        """Changes matching every filter given, the most recently seen first. ``identity``:
        one of the identities it touched; ``since``/``until``: seen (a window starting) at or
        after ``since``, first seen before ``until``."""
        if limit < 0 or offset < 0:
            raise ValueError(f"limit and offset must be >= 0, got limit={limit}, offset={offset}")
        stmt = (
            select(_ChangeRow)
            .where(*_conditions(status, identity, kind, since, until))
            .order_by(_ChangeRow.last_seen.desc(), _ChangeRow.id.desc())
            .limit(limit)
            .offset(offset)
        )
        with self._transaction() as (session, _):
            return [_to_record(r) for r in session.scalars(stmt)]

    def count(
        self,
        *,
        status: str | None = None,
        identity: str | None = None,
        kind: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> int:
        """How many changes :meth:`list` would return with these filters and no limit."""
        stmt = (
            select(func.count())
            .select_from(_ChangeRow)
            .where(*_conditions(status, identity, kind, since, until))
        )
        with self._transaction() as (session, _):
            return int(session.scalar(stmt) or 0)

    def counts(self) -> dict[str, int]:
        """Changes by status (every status, zero included): the ``netwarden_changes`` gauge."""
        with self._transaction() as (session, _):
            found = dict(
                session.execute(
                    select(_ChangeRow.status, func.count()).group_by(_ChangeRow.status)
                ).all()
            )
        return {s: int(found.get(s, 0)) for s in STATES}

    def by_status(self, *statuses: str) -> list[ChangeRecord]:
        """Every change in one of ``statuses``, oldest first (what a restart restores)."""
        stmt = (
            select(_ChangeRow)
            .where(_ChangeRow.status.in_(statuses))
            .order_by(_ChangeRow.first_seen, _ChangeRow.id)
        )
        with self._transaction() as (session, _):
            return [_to_record(r) for r in session.scalars(stmt)]

    def created_since(
        self, since: datetime, *, after_id: int = 0, limit: int = 500
    ) -> list[ChangeRecord]:
        """Changes recorded after ``(since, after_id)``, oldest first (the alerter follows
        new changes this way; page with the last record's ``created_at`` and ``id``)."""
        since = _utc(since, "since")
        after = (_ChangeRow.created_at > since) | (
            (_ChangeRow.created_at == since) & (_ChangeRow.id > after_id)
        )
        stmt = (
            select(_ChangeRow)
            .where(after)
            .order_by(_ChangeRow.created_at, _ChangeRow.id)
            .limit(limit)
        )
        with self._transaction() as (session, _):
            return [_to_record(r) for r in session.scalars(stmt)]

    def events(self, change_id: str) -> list[ChangeEvent]:
        """The audit trail of one change, oldest first; ChangeNotFound for an unknown id."""
        with self._transaction() as (session, _):
            row = self._row(session, change_id)
            return [_to_event(change_id, e) for e in LIFECYCLE.events(session, row.id)]

    def unapplied(self) -> list[ChangeRecord]:
        """Decisions the pipeline has not applied yet, oldest first."""
        stmt = (
            select(_ChangeRow)
            .where(_ChangeRow.decided_at.is_not(None), _ChangeRow.applied_at.is_(None))
            .order_by(_ChangeRow.decided_at, _ChangeRow.id)
        )
        with self._transaction() as (session, _):
            return [_to_record(r) for r in session.scalars(stmt)]

    # ------------------------------------------------------------------------- lifecycle

    def accept(self, change_id: str, *, actor: str, note: str = "") -> ChangeRecord:
        """open -> accepted: its edges are to become normal (the pipeline applies it)."""
        return self._decide(change_id, "accept", actor=actor, note=note)

    def reject(
        self, change_id: str, *, actor: str, note: str = "", anomaly_ids: Sequence[int] = ()
    ) -> ChangeRecord:
        """open -> rejected, with the anomalies it became (recorded before, see
        :func:`record_rejection`)."""
        return self._decide(change_id, "reject", actor=actor, note=note, anomaly_ids=anomaly_ids)

    def check(self, change_id: str, action: str) -> ChangeRecord:
        """The change, if ``action`` is allowed now; ChangeNotFound or ChangeLifecycleError."""
        with self._transaction() as (session, _):
            row = self._row(session, change_id)
            if not LIFECYCLE.allows(row.status, action):
                raise ChangeLifecycleError(change_id, row.status, action)
            return _to_record(row)

    def _decide(
        self,
        change_id: str,
        action: str,
        *,
        actor: str,
        note: str,
        anomaly_ids: Sequence[int] = (),
    ) -> ChangeRecord:
        actor = required_text(actor, "actor")
        with self._transaction() as (session, now):
            row = self._row(session, change_id)
            if not LIFECYCLE.allows(row.status, action):
                raise ChangeLifecycleError(change_id, row.status, action)
            details = {"anomaly_ids": list(anomaly_ids)} if anomaly_ids else None
            LIFECYCLE.transition(session, row, action, actor=actor, note=note, at=now,
                                 details=details)  # fmt: skip
            row.state_actor, row.state_note = actor, note
            row.decided_at, row.applied_at, row.updated_at = now, None, now
            if anomaly_ids:
                row.anomaly_ids = [*row.anomaly_ids, *anomaly_ids]
            record = _to_record(row)
        self.decided.set()
        return record

    def link_proposals(
        self, change_id: str, proposal_ids: Sequence[int], *, notes: Sequence[str] = ()
    ) -> ChangeRecord:
        """Record the amendment proposals of an accepted change (an ``amend`` event that
        leaves the state as it is; ``notes`` say what could not be proposed)."""
        with self._transaction() as (session, now):
            row = self._row(session, change_id)
            row.proposal_ids = [*row.proposal_ids, *proposal_ids]
            row.updated_at = now
            listed = ", ".join(str(i) for i in proposal_ids) or "none"
            LIFECYCLE.record(
                session,
                row.id,
                action="amend",
                from_state=row.status,
                to_state=row.status,
                actor=SYSTEM_ACTOR,
                note=f"policy amendment proposals: {listed}"
                + (f"; {'; '.join(notes)}" if notes else ""),
                at=now,
                details={"proposal_ids": list(proposal_ids), "notes": list(notes)},
            )
            return _to_record(row)

    def mark_applied(self, change_id: str) -> ChangeRecord:
        """The pipeline applied the decision to its tracker and edge memory."""
        with self._transaction() as (session, now):
            row = self._row(session, change_id)
            row.applied_at = now
            return _to_record(row)

    def _row(self, session: Session, change_id: str) -> _ChangeRow:
        row = self._rows(session, [change_id], lock=True).get(change_id)
        if row is None:
            raise ChangeNotFound(change_id)
        return row


def _to_event(change_id: str, row: AuditEventRow) -> ChangeEvent:
    return record_of(ChangeEvent, row, change_id=change_id, details=dict(row.details or {}))


def _conditions(
    status: str | None,
    identity: str | None,
    kind: str | None,
    since: datetime | None,
    until: datetime | None,
) -> list[ColumnElement[bool]]:
    if status is not None and status not in STATES:
        raise ValueError(f"unknown status {status!r}: expected one of {', '.join(STATES)}")
    conditions: list[ColumnElement[bool]] = []
    if status is not None:
        conditions.append(_ChangeRow.status == status)
    if kind is not None:
        conditions.append(_ChangeRow.kind == kind)
    if identity is not None:
        conditions.append(
            _ChangeRow.id.in_(
                select(_ChangeIdentityRow.change_row).where(_ChangeIdentityRow.identity == identity)
            )
        )
    if since is not None:
        conditions.append(_ChangeRow.last_seen >= _utc(since, "since"))
    if until is not None:
        conditions.append(_ChangeRow.first_seen < _utc(until, "until"))
    return conditions


# ------------------------------------------------------------------------ rejected changes


def subject_identities(change: ChangeRecord) -> list[str]:
    """The workloads a rejected change is held against: the new workload (else the workloads
    that reached it), the client of a new connection, the identity of a new internet network,
    the workloads that reached a new vendor."""
    with_edges = {e["identity"] for e in change.edges}
    egress = sorted({e["identity"] for e in change.edges if e["direction"] == "egress"})
    if change.kind == "workload":
        if change.subject in with_edges:
            found = [change.subject]
        else:
            found = sorted({e["identity"] for e in change.edges if e["peer"] == change.subject})
    elif change.kind == "edge":
        client, _, server = change.subject.partition(" -> ")
        found = [client] if client in with_edges else [server]
    elif change.kind == "internet":
        found = [change.subject.split(" ", 1)[0]]
    else:
        found = egress
    return [i for i in found if namespace_of(i)] or [
        i for i in sorted(change.identities) if namespace_of(i)
    ][:1]


def _rejection_window(
    anomalies: AnomalyStore, change: ChangeRecord, identity: str, window_seconds: float
) -> ScoredWindow:
    """The window of ``identity`` to record as anomalous: its first scored window that showed
    the change (so a containment, built from what the workload did then against what it did
    before, sees the change's edges as the new ones), else its first window while the change
    was seen, else one at the change's first sighting."""
    width = timedelta(seconds=window_seconds)
    seen = anomalies.windows(
        identity, since=change.first_seen, until=change.last_seen + width, limit=1000
    )
    for w in seen:
        if change.change_id in w.changes:
            return w
    if seen:
        return seen[0]
    namespace, _, workload = identity.partition("/")
    return ScoredWindow(
        identity=identity,
        namespace=namespace,
        workload=workload,
        window_start=change.first_seen,
        window_end=change.first_seen + width,
        score=0.0,
        threshold=1.0,
        anomalous=False,
        model="netwarden:change",
        fallback=False,
    )


def _examples(base: dict[str, Any], edges: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The window's example flows with the change's edges of this identity in front."""
    out = {side: dict(value) for side, value in (base or {}).items() if isinstance(value, dict)}
    for side, key in (("egress", "to"), ("ingress", "from")):
        mine = [
            {"peer": e["peer"], "port": e["port"], "flows": e["flows"]}
            for e in edges
            if e["direction"] == side
        ]
        if not mine:
            continue
        part = out.setdefault(side, {})
        known = {(p.get("peer"), p.get("port")) for p in part.get(key) or ()}
        part[key] = [p for p in mine if (p["peer"], p["port"]) not in known] + list(
            part.get(key) or ()
        )
    return out


def record_rejection(
    anomalies: AnomalyStore,
    change: ChangeRecord,
    *,
    actor: str,
    note: str = "",
    window_seconds: float = 60.0,
) -> list[AnomalyRecord]:
    """Record a rejected change as an anomaly of each of its subject identities
    (:func:`subject_identities`): their window that first showed it, scored
    :data:`REJECTION_SCORE` (a warning), role ``subject``, with the rejection and the change's
    edges as reasons. It then alerts, and is contained, like any anomaly."""
    out: list[AnomalyRecord] = []
    why = f"{actor} rejected change {change.change_id}" + (f" ({note})" if note else "")
    for identity in subject_identities(change):
        window = _rejection_window(anomalies, change, identity, window_seconds)
        edges = [e for e in change.edges if e["identity"] == identity]
        egress = sum(e["direction"] == "egress" for e in edges)
        side = "egress" if egress * 2 >= len(edges) else "ingress"
        reasons = [
            Reason(
                feature=f"{side}_rejected_change",
                value=float(len(edges)),
                baseline=0.0,
                spread=0.0,
                contribution=REJECTION_SCORE,
                text=f"{why}: {change.description}",
            )
        ]
        for e in sorted(edges, key=lambda e: -int(e["flows"]))[:_REASON_EDGES]:
            arrow = "to" if e["direction"] == "egress" else "from"
            port = f" {e['port']}" if e["port"] else ""
            reasons.append(
                Reason(
                    feature=f"{e['direction']}_rejected_edge",
                    value=float(e["flows"]),
                    baseline=0.0,
                    spread=0.0,
                    contribution=0.0,
                    text=f"rejected edge {arrow} {e['peer']}{port} ({e['flows']} flows)",
                )
            )
        rescored = ScoredWindow(
            identity=identity,
            namespace=window.namespace,
            workload=window.workload,
            window_start=window.window_start,
            window_end=window.window_end,
            score=max(window.score, REJECTION_SCORE * window.threshold),
            threshold=window.threshold,
            anomalous=True,
            model=window.model,
            fallback=window.fallback,
            reasons=tuple(reasons),
            examples=_examples(window.examples, edges),
            summary=f"{why}: {change.description}",
            evidence=(
                {
                    "rule": "rejected_change",
                    "text": why,
                    "edges": [
                        f"{'to' if e['direction'] == 'egress' else 'from'} {e['peer']}"
                        + (f" {e['port']}" if e["port"] else "")
                        for e in edges
                    ],
                    "peer": "",
                },
            ),
            changes=tuple(dict.fromkeys((*window.changes, change.change_id))),
            new_edges=window.new_edges,
            model_anomalous=window.model_anomalous,
            incident="",
            role="subject",
        )
        out += [
            a
            for a in anomalies.record([rescored])
            if a.identity == identity
            and a.first_window_start <= window.window_start < a.last_window_end
        ]
    return list({a.id: a for a in out}.values())

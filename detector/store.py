"""The embedded anomaly store: every scored window, the anomalies they form, and their audit trail.

One SQLAlchemy ORM schema on an embedded SQLite file (``sqlite:///path/netwarden.db``, or
``sqlite://`` in memory); the same schema runs on PostgreSQL in cluster mode
(``postgresql+psycopg://...``), so only portable types and ORM statements are used (SQLite only
gets connection settings: WAL, busy timeout, ``BEGIN IMMEDIATE``). Callers get frozen
dataclasses, never ORM objects or sessions.

Two tables of its own, on the one :class:`netwarden.storage.base.Base`:

- ``scored_windows``: every window the detector scored, anomalous or not, unique on
  ``(identity, window_start)``. Recording a window again (re-scoring) updates the row.
- ``anomalies``: runs of anomalous windows of one identity, with the peak window's explanation
  and a lifecycle state (see :mod:`netwarden.detector.lifecycle`).

The audit trail, one event per lifecycle transition (and one for creation), is in the shared
``audit_events`` table (:mod:`netwarden.storage.audit`, subject kind ``anomaly``). The schema is
migrated on open (:mod:`netwarden.storage.migrate`), which also copies the events of a database
from before that table (``anomaly_events``) over once.

Merging rule (strict)
---------------------
Windows are recorded in event-time order per identity (a batch may mix identities; it is sorted
by ``window_start`` before use). An anomalous window **extends** an anomaly of its identity only
when it is *directly consecutive*: its ``window_start`` equals that anomaly's ``last_window_end``
and that anomaly is not resolved. Otherwise it **starts a new anomaly**. So a normal window in
between, or a gap with no window at all (an identity without traffic has no window), splits.
A resolved anomaly is never extended or reopened; a suppressed one is extended and stays
suppressed. The window with the highest score (the earliest on ties) is the *peak*: it supplies
the anomaly's score, threshold, model, reasons, examples and summary.

``ongoing`` is true for at most one anomaly per identity: the one holding the identity's latest
recorded window, unless resolved. A normal window that is the identity's latest ends the run.

Re-scoring: a re-recorded window that is still anomalous stays in its anomaly, whose count,
bounds and peak are recomputed. One that is now normal leaves its anomaly (recomputed from the
windows left; anomalies are never split); an anomaly left with no window is resolved by
``netwarden``. A re-recorded window that was normal and is now anomalous follows the rule above.

Lifecycle and time
------------------
Suppression expiry (``suppressed`` -> ``open`` once ``suppressed_until`` has passed) is applied
lazily at the start of every call, with the event dated at ``suppressed_until``. The clock is
injectable (``now=``) for tests. All timestamps are stored as UTC and returned timezone-aware;
naive datetimes are refused rather than guessed.

Concurrency: one store may be shared by threads. Each call is one short transaction from a
``sessionmaker``; on SQLite the calls of one store are serialized by a lock and every
transaction starts with ``BEGIN IMMEDIATE`` (so other processes wait on the busy timeout instead
of failing on a lock upgrade).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    JSON,
    Boolean,
    ColumnElement,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    and_,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from netwarden.detector.lifecycle import (
    LIFECYCLE,
    OPEN,
    RESOLVED,
    STATES,
    SUPPRESSED,
    SYSTEM_ACTOR,
    AnomalyNotFound,
    LifecycleError,
)
from netwarden.detector.results import Reason, ScoredWindow
from netwarden.storage.audit import AuditEventRow
from netwarden.storage.base import Base, record_of
from netwarden.storage.database import BigId, SqlStore, required_text
from netwarden.storage.database import UTCDateTime as _UTCDateTime
from netwarden.storage.database import utc as _utc

__all__ = [
    "CONFIRMED",
    "EXPECTED",
    "VERDICTS",
    "AnomalyNotFound",
    "AnomalyRecord",
    "AnomalyStore",
    "IdentitySummary",
    "LifecycleError",
    "LifecycleEvent",
]

#: What a person may say an anomaly is (:meth:`AnomalyStore.set_verdict`).
CONFIRMED: Final = "confirmed"
EXPECTED: Final = "expected"
VERDICTS: Final = (CONFIRMED, EXPECTED)
_IN_CHUNK: Final = 500  # values per IN (...) list: far below every backend's parameter limit


# --------------------------------------------------------------------------------------- schema


class _AnomalyRow(Base):
    __tablename__ = "anomalies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    identity: Mapped[str] = mapped_column(String(512))
    namespace: Mapped[str] = mapped_column(String(253))
    workload: Mapped[str] = mapped_column(String(253))
    state: Mapped[str] = mapped_column(String(16))
    ongoing: Mapped[bool] = mapped_column(Boolean)
    first_window_start: Mapped[datetime] = mapped_column(_UTCDateTime())
    last_window_end: Mapped[datetime] = mapped_column(_UTCDateTime())
    window_count: Mapped[int] = mapped_column(Integer)
    peak_window_start: Mapped[datetime] = mapped_column(_UTCDateTime())
    peak_score: Mapped[float] = mapped_column(Float)
    peak_threshold: Mapped[float] = mapped_column(Float)
    model: Mapped[str] = mapped_column(String(512))
    fallback: Mapped[bool] = mapped_column(Boolean)
    reasons: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    examples: Mapped[dict[str, Any]] = mapped_column(JSON)
    summary: Mapped[str] = mapped_column(Text)
    suppressed_until: Mapped[datetime | None] = mapped_column(_UTCDateTime(), nullable=True)
    state_note: Mapped[str] = mapped_column(Text)
    state_actor: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(_UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(_UTCDateTime())
    # The peak window's incident and role (netwarden.detector.incidents); nullable: older rows.
    incident: Mapped[str | None] = mapped_column(String(64), nullable=True)
    role: Mapped[str | None] = mapped_column(String(16), nullable=True)

    __table_args__ = (
        Index("ix_anomalies_last_window_end", "last_window_end"),
        Index("ix_anomalies_updated", "updated_at", "id"),
        Index("ix_anomalies_ongoing_end", "ongoing", "last_window_end"),
        Index("ix_anomalies_identity_end", "identity", "last_window_end"),
        Index("ix_anomalies_namespace_end", "namespace", "last_window_end"),
        Index("ix_anomalies_state_end", "state", "last_window_end"),
        Index("ix_anomalies_state_suppressed_until", "state", "suppressed_until"),
    )


class _WindowRow(Base):
    __tablename__ = "scored_windows"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    identity: Mapped[str] = mapped_column(String(512))
    namespace: Mapped[str] = mapped_column(String(253))
    workload: Mapped[str] = mapped_column(String(253))
    window_start: Mapped[datetime] = mapped_column(_UTCDateTime())
    window_end: Mapped[datetime] = mapped_column(_UTCDateTime())
    score: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    anomalous: Mapped[bool] = mapped_column(Boolean)
    model: Mapped[str] = mapped_column(String(512))
    fallback: Mapped[bool] = mapped_column(Boolean)
    reasons: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    examples: Mapped[dict[str, Any]] = mapped_column(JSON)
    summary: Mapped[str] = mapped_column(Text)
    # Added with detection under change (nullable: rows of older databases have none).
    evidence: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    changes: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    new_edges: Mapped[int | None] = mapped_column(Integer, nullable=True)
    model_anomalous: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    incident: Mapped[str | None] = mapped_column(String(64), nullable=True)
    role: Mapped[str | None] = mapped_column(String(16), nullable=True)
    attacker: Mapped[str | None] = mapped_column(String(512), nullable=True)
    anomaly_id: Mapped[int | None] = mapped_column(
        ForeignKey("anomalies.id"), nullable=True, index=True
    )
    anomaly: Mapped[_AnomalyRow | None] = relationship()

    __table_args__ = (
        UniqueConstraint("identity", "window_start", name="uq_scored_windows_identity_start"),
    )


# ------------------------------------------------------------------------------ public records


@dataclass(frozen=True, slots=True)
class AnomalyRecord:
    """One anomaly as callers see it: a run of consecutive anomalous windows of one identity.

    ``peak_*``, ``model``, ``fallback``, ``reasons``, ``examples`` and ``summary`` come from the
    peak window (highest score). ``state_note`` says why it is in its state (the suppression
    reason, or the note given to acknowledge/resolve) and ``state_actor`` who put it there.
    """

    id: int
    identity: str
    namespace: str
    workload: str
    state: str
    ongoing: bool  # still growing: it holds the identity's latest window
    first_window_start: datetime
    last_window_end: datetime
    window_count: int
    peak_window_start: datetime
    peak_score: float
    peak_threshold: float
    model: str
    fallback: bool
    reasons: tuple[Reason, ...]
    examples: dict[str, Any]
    summary: str
    suppressed_until: datetime | None
    state_note: str
    state_actor: str
    created_at: datetime
    updated_at: datetime
    #: The incident of its peak window and the identity's role in it ("attacker", "victim",
    #: "witness", "subject"; "" for anomalies recorded before incidents existed).
    incident: str = ""
    role: str = ""


@dataclass(frozen=True, slots=True)
class LifecycleEvent:
    """One audit entry: who moved which anomaly from which state to which, when and why.

    ``action`` is ``open`` (created by netwarden, ``from_state`` None), ``acknowledge``,
    ``suppress``, ``resolve`` or ``unsuppress`` (suppression expired).
    """

    id: int
    anomaly_id: int
    at: datetime
    actor: str
    action: str
    from_state: str | None
    to_state: str
    note: str


@dataclass(frozen=True, slots=True)
class IdentitySummary:
    """One identity as the detector knows it: how much of it was scored, how it looks now.

    ``namespace``/``workload`` and ``last_*`` come from the identity's latest window;
    ``open_anomalies`` counts its anomalies in state ``open`` (nobody has acted on them yet).
    """

    identity: str
    namespace: str
    workload: str
    windows: int  # scored windows recorded
    first_window_start: datetime
    last_window_end: datetime
    last_score: float
    last_threshold: float
    last_anomalous: bool
    open_anomalies: int


def _reasons_json(reasons: Iterable[Reason]) -> list[dict[str, Any]]:
    return [asdict(r) for r in reasons]


def _reasons_from_json(data: Iterable[dict[str, Any]] | None) -> tuple[Reason, ...]:
    return tuple(Reason(**d) for d in data or ())


def _explanation(row: _AnomalyRow | _WindowRow) -> dict[str, Any]:
    """The JSON columns of a row as a record holds them (reasons, examples)."""
    return {"reasons": _reasons_from_json(row.reasons), "examples": dict(row.examples or {})}


def _to_record(row: _AnomalyRow) -> AnomalyRecord:
    return record_of(
        AnomalyRecord, row, incident=row.incident or "", role=row.role or "", **_explanation(row)
    )


def _to_window(row: _WindowRow) -> ScoredWindow:
    return record_of(
        ScoredWindow,
        row,
        evidence=tuple(row.evidence or ()),
        changes=tuple(row.changes or ()),
        new_edges=row.new_edges or 0,
        model_anomalous=bool(row.model_anomalous),
        incident=row.incident or "",
        role=row.role or "",
        attacker=row.attacker or "",
        **_explanation(row),
    )


def _to_event(row: AuditEventRow) -> LifecycleEvent:
    return record_of(LifecycleEvent, row, anomaly_id=row.subject_id)


# -------------------------------------------------------------------------------- validation


def _checked_window(w: ScoredWindow) -> ScoredWindow:
    """``w`` with UTC times, or a ValueError naming the window (once per window, at the edge)."""
    if not w.identity:
        raise ValueError(f"scored window without identity: {w!r}")
    start = _utc(w.window_start, f"window_start of {w.identity}")
    end = _utc(w.window_end, f"window_end of {w.identity}")
    if end <= start:
        raise ValueError(
            f"window of {w.identity} ends ({end.isoformat()}) before it starts "
            f"({start.isoformat()})"
        )
    if math.isnan(w.score) or math.isnan(w.threshold):
        raise ValueError(f"window {w.identity}@{start.isoformat()} has a NaN score or threshold")
    if start is w.window_start and end is w.window_end:
        return w
    return replace(w, window_start=start, window_end=end)


def _newest_first(conditions: list[ColumnElement[bool]]) -> Any:
    """The anomalies matching ``conditions``, most recent first (list and page)."""
    stmt = select(_AnomalyRow).where(*conditions)
    return stmt.order_by(_AnomalyRow.last_window_end.desc(), _AnomalyRow.id.desc())


def _counted(conditions: list[ColumnElement[bool]]) -> Any:
    """How many anomalies match ``conditions`` (count and page)."""
    return select(func.count()).select_from(_AnomalyRow).where(*conditions)


#: The filters of an anomaly query (:func:`_anomaly_conditions`), each None when not given.
_FILTERS: Final = ("identity", "namespace", "state", "since", "until", "min_score", "max_score")


def _anomaly_conditions(
    *,
    identity: str | None,
    namespace: str | None,
    state: str | None,
    since: datetime | None,
    until: datetime | None,
    min_score: float | None,
    max_score: float | None,
) -> list[ColumnElement[bool]]:
    """The WHERE clauses of an anomaly query, shared by ``list`` and ``count`` so that a page
    and its total always mean the same filter."""
    if state is not None and state not in STATES:
        raise ValueError(f"unknown state {state!r}: expected one of {', '.join(STATES)}")
    for name, score in (("min_score", min_score), ("max_score", max_score)):
        if score is not None and math.isnan(score):
            raise ValueError(f"{name} must be a number, got NaN")
    conditions: list[ColumnElement[bool]] = []
    if identity is not None:
        conditions.append(_AnomalyRow.identity == identity)
    if namespace is not None:
        conditions.append(_AnomalyRow.namespace == namespace)
    if state is not None:
        conditions.append(_AnomalyRow.state == state)
    if since is not None:
        conditions.append(_AnomalyRow.last_window_end > _utc(since, "since"))
    if until is not None:
        conditions.append(_AnomalyRow.first_window_start < _utc(until, "until"))
    if min_score is not None and min_score != -math.inf:  # -inf: no lower bound
        conditions.append(_AnomalyRow.peak_score >= min_score)
    if max_score is not None and max_score != math.inf:  # +inf: no upper bound
        conditions.append(_AnomalyRow.peak_score < max_score)
    return conditions


def _chunks(values: Sequence[str]) -> Iterator[Sequence[str]]:
    for i in range(0, len(values), _IN_CHUNK):
        yield values[i : i + _IN_CHUNK]


# ------------------------------------------------------------------------------------- store


class AnomalyStore(SqlStore):
    """Persist scored windows, merge them into anomalies, and run the anomaly lifecycle.

    Parameters
    ----------
    url : str
        SQLAlchemy database URL: ``sqlite:///path/netwarden.db`` (embedded default),
        ``sqlite://`` (in memory, for tests) or, in cluster mode, a PostgreSQL URL.
        The database is upgraded to the newest migration on open.
    now : callable, optional
        The clock, returning an aware datetime; injected by tests to expire suppressions.

    Examples
    --------
    >>> from datetime import datetime, timedelta, timezone
    >>> store = AnomalyStore("sqlite://")
    >>> t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> w = ScoredWindow("shop/cart", "shop", "cart", t0, t0 + timedelta(seconds=60), score=0.9,
    ...                  threshold=0.6, anomalous=True, model="global", fallback=True)
    >>> [a.window_count for a in store.record([w])]
    [1]
    >>> store.acknowledge(1, actor="alice").state
    'acknowledged'
    >>> store.close()
    """

    # ------------------------------------------------------------------------ transactions

    @contextmanager
    def _transaction(self) -> Iterator[tuple[Session, datetime]]:
        """One short transaction, with due suppression expiries applied first."""
        with self._begin() as (session, now):
            self._expire_suppressions(session, now)
            yield session, now

    @contextmanager
    def _snapshot(self) -> Iterator[tuple[Session, datetime]]:
        """A read: without the write lock (:meth:`SqlStore._read`), unless a suppression is due
        to expire, when that is written first, in a transaction of its own (rare: a person's
        suppression ran out), so what is read never shows an expired suppression."""
        with self._read() as (session, now):
            due = session.scalar(
                select(_AnomalyRow.id)
                .where(_AnomalyRow.state == SUPPRESSED, _AnomalyRow.suppressed_until <= now)
                .limit(1)
            )
            if due is None:
                yield session, now
                return
        with self._transaction() as (session, now):
            yield session, now

    def _expire_suppressions(self, session: Session, now: datetime) -> None:
        # Locked: of two transactions finding one expiry due, the second waits and then, on
        # PostgreSQL, no longer finds it (its row is open by then): one event, not two.
        due = session.scalars(
            select(_AnomalyRow)
            .where(_AnomalyRow.state == SUPPRESSED, _AnomalyRow.suppressed_until <= now)
            .order_by(_AnomalyRow.id)
            .with_for_update()
        ).all()
        for row in due:
            until = row.suppressed_until
            assert until is not None
            _transition(
                session,
                row,
                "unsuppress",
                actor=SYSTEM_ACTOR,
                at=until,
                now=now,
                note=f"suppression until {until.isoformat()} expired",
            )

    # ----------------------------------------------------------------------------- record

    def record(self, windows: Sequence[ScoredWindow]) -> list[AnomalyRecord]:
        """Store scored windows and merge the anomalous ones into anomalies, in one transaction.

        Returns the anomalies this batch created or changed (extended, re-scored), in the order
        first touched. Re-recording a window updates it in place, so retrying a batch is safe.
        The merging rule is in the module docstring.
        """
        batch = sorted((_checked_window(w) for w in windows), key=lambda w: w.window_start)
        if not batch:
            return []
        with self._transaction() as (session, now):
            return [_to_record(row) for row in _BatchRecorder(session, now).run(batch)]

    def end_silent_runs(self, until: datetime) -> list[AnomalyRecord]:
        """End the runs of identities that went quiet: an ongoing anomaly whose last window
        ended before ``until`` (the end of the newest windows the detector has closed) got no
        window since, so it is no longer ongoing. A live service calls this after each group of
        windows; without it, an attacker that stops sending would keep its alert firing."""
        until = _utc(until, "until")
        with self._transaction() as (session, now):
            rows = list(
                session.scalars(
                    select(_AnomalyRow).where(
                        _AnomalyRow.ongoing.is_(True), _AnomalyRow.last_window_end < until
                    )
                )
            )
            for row in rows:
                row.ongoing = False
                row.updated_at = now
            session.flush()
            return [_to_record(row) for row in rows]

    def purge_windows(self, before: datetime) -> int:
        """Delete normal scored windows that ended before ``before``; windows that belong to an
        anomaly stay as its evidence. Returns how many were deleted. The service calls it with
        its retention, so the store does not grow without bound."""
        before = _utc(before, "before")
        with self._transaction() as (session, _):
            result = session.execute(
                delete(_WindowRow)
                .where(_WindowRow.window_end < before, _WindowRow.anomaly_id.is_(None))
                .execution_options(synchronize_session=False)
            )
            return int(result.rowcount or 0)

    # ------------------------------------------------------------------------------ reads

    def get(self, anomaly_id: int) -> AnomalyRecord | None:
        """The anomaly with this id, or None."""
        with self._snapshot() as (session, _):
            row = session.get(_AnomalyRow, anomaly_id)
            return None if row is None else _to_record(row)

    def list(
        self,
        *,
        identity: str | None = None,
        namespace: str | None = None,
        state: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
        min_score: float | None = None,
        max_score: float | None = None,
    ) -> list[AnomalyRecord]:
        """Anomalies matching every given filter, most recent (latest ``last_window_end``) first.

        ``since``/``until`` select anomalies that overlap ``[since, until)``: ending after
        ``since`` and starting before ``until``. ``min_score``/``max_score`` select peak scores
        in ``[min_score, max_score)``, the shape of
        :func:`netwarden.detector.severity.score_range`. ``limit``/``offset`` paginate.
        """
        conditions = _anomaly_conditions(
            identity=identity,
            namespace=namespace,
            state=state,
            since=since,
            until=until,
            min_score=min_score,
            max_score=max_score,
        )
        if limit < 0 or offset < 0:
            raise ValueError(f"limit and offset must be >= 0, got limit={limit}, offset={offset}")
        stmt = _newest_first(conditions).limit(limit).offset(offset)
        with self._snapshot() as (session, _):
            return [_to_record(r) for r in session.scalars(stmt)]

    def windows(
        self,
        identity: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
        newest_first: bool = False,
    ) -> list[ScoredWindow]:
        """The scored windows of one identity, oldest first (normal ones included).

        ``since``/``until`` select windows that overlap ``[since, until)``. ``newest_first``
        returns the latest ``limit`` windows, latest first (what "recent windows" means).
        """
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        stmt = select(_WindowRow).where(_WindowRow.identity == identity)
        if since is not None:
            stmt = stmt.where(_WindowRow.window_end > _utc(since, "since"))
        if until is not None:
            stmt = stmt.where(_WindowRow.window_start < _utc(until, "until"))
        order = _WindowRow.window_start.desc() if newest_first else _WindowRow.window_start
        stmt = stmt.order_by(order).limit(limit)
        with self._snapshot() as (session, _):
            return [_to_window(r) for r in session.scalars(stmt)]

    def count(
        self,
        *,
        identity: str | None = None,
        namespace: str | None = None,
        state: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        min_score: float | None = None,
        max_score: float | None = None,
    ) -> int:
        """How many anomalies :meth:`list` would return with these filters and no limit."""
        conditions = _anomaly_conditions(
            identity=identity,
            namespace=namespace,
            state=state,
            since=since,
            until=until,
            min_score=min_score,
            max_score=max_score,
        )
        with self._snapshot() as (session, _):
            return int(session.scalar(_counted(conditions)) or 0)

    def page(
        self, *, limit: int = 100, offset: int = 0, **filters: Any
    ) -> tuple[list[AnomalyRecord], int]:
        """One page of :meth:`list` and what :meth:`count` says of the same ``filters`` (those
        of :meth:`list`), read from one snapshot: the API's listing, one transaction not two."""
        if limit < 0 or offset < 0:
            raise ValueError(f"limit and offset must be >= 0, got limit={limit}, offset={offset}")
        unknown = sorted(set(filters) - set(_FILTERS))
        if unknown:
            raise TypeError(f"page() got unknown filters: {', '.join(unknown)}")
        conditions = _anomaly_conditions(**{name: filters.get(name) for name in _FILTERS})
        stmt = _newest_first(conditions).limit(limit).offset(offset)
        with self._snapshot() as (session, _):
            items = [_to_record(r) for r in session.scalars(stmt)]
            return items, int(session.scalar(_counted(conditions)) or 0)

    def identities(self, *, namespace: str | None = None) -> list[IdentitySummary]:
        """Every identity with a scored window (of ``namespace`` if given), sorted by identity.

        One query: a GROUP BY over ``scored_windows`` joined to each identity's latest window
        (by the unique ``(identity, window_start)`` index) and to its count of open anomalies.
        """
        per = select(
            _WindowRow.identity.label("identity"),
            func.count().label("windows"),
            func.min(_WindowRow.window_start).label("first_start"),
            func.max(_WindowRow.window_start).label("last_start"),
        )
        if namespace is not None:
            per = per.where(_WindowRow.namespace == namespace)
        agg = per.group_by(_WindowRow.identity).subquery()
        opened = (
            select(_AnomalyRow.identity.label("identity"), func.count().label("n"))
            .where(_AnomalyRow.state == OPEN)
            .group_by(_AnomalyRow.identity)
            .subquery()
        )
        stmt = (
            select(
                _WindowRow.identity,
                _WindowRow.namespace,
                _WindowRow.workload,
                agg.c.windows,
                agg.c.first_start,
                _WindowRow.window_end,
                _WindowRow.score,
                _WindowRow.threshold,
                _WindowRow.anomalous,
                func.coalesce(opened.c.n, 0),
            )
            .join(
                agg,
                and_(
                    _WindowRow.identity == agg.c.identity,
                    _WindowRow.window_start == agg.c.last_start,
                ),
            )
            .outerjoin(opened, opened.c.identity == _WindowRow.identity)
            .order_by(_WindowRow.identity)
        )
        with self._snapshot() as (session, _):
            return [
                IdentitySummary(
                    identity=ident,
                    namespace=ns,
                    workload=wl,
                    windows=int(n),
                    first_window_start=first,
                    last_window_end=end,
                    last_score=float(score),
                    last_threshold=float(threshold),
                    last_anomalous=bool(anomalous),
                    open_anomalies=int(n_open),
                )
                for ident, ns, wl, n, first, end, score, threshold, anomalous, n_open in session.execute(
                    stmt
                )
            ]

    def events(self, anomaly_id: int) -> list[LifecycleEvent]:
        """The audit trail of one anomaly, oldest first; AnomalyNotFound for an unknown id."""
        with self._snapshot() as (session, _):
            if session.get(_AnomalyRow, anomaly_id) is None:
                raise AnomalyNotFound(anomaly_id)
            return [_to_event(r) for r in LIFECYCLE.events(session, anomaly_id)]

    def updated_since(
        self, since: datetime, *, after_id: int = 0, limit: int = 500
    ) -> list[AnomalyRecord]:
        """Anomalies changed after ``(since, after_id)``, oldest change first.

        The order is ``(updated_at, id)`` and the bound is exclusive on that pair, so a caller
        pages through one batch's many equal ``updated_at`` values by passing the last record's
        ``updated_at`` and ``id`` back (the alerter follows changes this way).
        """
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        since = _utc(since, "since")
        after = (_AnomalyRow.updated_at > since) | (
            (_AnomalyRow.updated_at == since) & (_AnomalyRow.id > after_id)
        )
        stmt = (
            select(_AnomalyRow)
            .where(after)
            .order_by(_AnomalyRow.updated_at, _AnomalyRow.id)
            .limit(limit)
        )
        with self._snapshot() as (session, _):
            return [_to_record(r) for r in session.scalars(stmt)]

    def get_many(self, ids: Iterable[int]) -> list[AnomalyRecord]:
        """The anomalies with these ids, by id; unknown ids are left out."""
        wanted = sorted(set(ids))
        found: list[AnomalyRecord] = []
        with self._snapshot() as (session, _):
            for i in range(0, len(wanted), _IN_CHUNK):
                stmt = (
                    select(_AnomalyRow)
                    .where(_AnomalyRow.id.in_(wanted[i : i + _IN_CHUNK]))
                    .order_by(_AnomalyRow.id)
                )
                found.extend(_to_record(r) for r in session.scalars(stmt))
        return found

    # ------------------------------------------------------------ verdicts (feedback)

    def set_verdict(
        self, anomaly_id: int, verdict: str, *, actor: str, note: str = ""
    ) -> AnomalyRecord:
        """Record what a person says the anomaly is: ``confirmed`` (real: kept out of training,
        a positive of the promotion gate) or ``expected`` (normal: trained on). An audit event
        (action ``verdict``) that leaves the state alone; the latest verdict counts."""
        if verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}, got {verdict!r}")
        actor = required_text(actor, "actor")
        with self._transaction() as (session, now):
            row = session.get(_AnomalyRow, anomaly_id)
            if row is None:
                raise AnomalyNotFound(anomaly_id)
            LIFECYCLE.record(
                session,
                anomaly_id,
                action="verdict",
                from_state=row.state,
                to_state=row.state,
                actor=actor,
                note=note,
                at=now,
                details={"verdict": verdict},
            )
            return _to_record(row)

    def verdicts(self) -> list[tuple[AnomalyRecord, str, str]]:
        """Every anomaly with its verdict and the note that came with it: the latest
        ``verdict`` event's, else ``expected`` for one ever suppressed (a suppression states
        why it is not worth an alert), else "" (nobody said)."""
        with self._snapshot() as (session, _):
            said: dict[int, tuple[str, str]] = {}
            events = session.execute(
                select(
                    AuditEventRow.subject_id,
                    AuditEventRow.action,
                    AuditEventRow.details,
                    AuditEventRow.note,
                )
                .where(
                    AuditEventRow.subject_kind == LIFECYCLE.kind,
                    AuditEventRow.action.in_(("verdict", "suppress")),
                )
                .order_by(AuditEventRow.id)
            )
            for subject, action, details, note in events:
                if action == "verdict":
                    said[subject] = (str((details or {}).get("verdict", "")), note)
                else:  # a suppression, unless a verdict says otherwise
                    said.setdefault(subject, (EXPECTED, note))
            rows = session.scalars(select(_AnomalyRow).order_by(_AnomalyRow.id))
            return [(_to_record(r), *said.get(r.id, ("", ""))) for r in rows]

    # -------------------------------------------------------------------------- lifecycle

    def acknowledge(self, anomaly_id: int, *, actor: str, note: str = "") -> AnomalyRecord:
        """Someone has seen it and is on it (open -> acknowledged); alerts stay quiet."""
        return self._act(anomaly_id, "acknowledge", actor=actor, note=note)

    def suppress(
        self, anomaly_id: int, *, actor: str, until: datetime, reason: str
    ) -> AnomalyRecord:
        """Silence it until ``until`` (future, aware), for a stated reason; it reopens after.

        New consecutive windows still merge into a suppressed anomaly, which stays suppressed.
        """
        reason = required_text(reason, "suppression reason")
        until = _utc(until, "until")
        return self._act(anomaly_id, "suppress", actor=actor, note=reason, until=until)

    def resolve(self, anomaly_id: int, *, actor: str, note: str = "") -> AnomalyRecord:
        """Close it for good; a later anomalous window of the identity starts a new anomaly."""
        return self._act(anomaly_id, "resolve", actor=actor, note=note)

    def _act(
        self, anomaly_id: int, action: str, *, actor: str, note: str, until: datetime | None = None
    ) -> AnomalyRecord:
        actor = required_text(actor, "actor")
        with self._transaction() as (session, now):
            if until is not None and until <= now:
                raise ValueError(
                    f"cannot suppress anomaly {anomaly_id} until "
                    f"{until.isoformat()}: that is not in the future "
                    f"(now {now.isoformat()})"
                )
            row = session.get(_AnomalyRow, anomaly_id, with_for_update=True)
            if row is None:
                raise AnomalyNotFound(anomaly_id)
            _transition(session, row, action, actor=actor, note=note, at=now, now=now)
            if until is not None:
                row.suppressed_until = until
            return _to_record(row)


def _transition(
    session: Session,
    row: _AnomalyRow,
    action: str,
    *,
    actor: str,
    note: str,
    at: datetime,
    now: datetime,
) -> None:
    """Apply ``action`` and record its event (dated ``at``), then what the new state implies."""
    to_state = LIFECYCLE.transition(session, row, action, actor=actor, note=note, at=at)
    row.state_actor, row.state_note, row.updated_at = actor, note, now
    if to_state != SUPPRESSED:
        row.suppressed_until = None
    if to_state == RESOLVED:
        row.ongoing = False  # a resolved anomaly never grows again


class _BatchRecorder:
    """Merges one sorted batch of windows inside one session (see the module docstring).

    It loads what the batch can touch in a few queries per 500 identities (existing rows of
    these windows, candidate anomalies to extend, each identity's latest window), not per window.
    """

    def __init__(self, session: Session, now: datetime) -> None:
        self.session = session
        self.now = now
        self.touched: dict[int, _AnomalyRow] = {}  # id(row) -> row, in first-touch order
        self.opened: list[tuple[_AnomalyRow, ScoredWindow]] = []  # new, awaiting their event
        self.rescored: dict[int, _AnomalyRow] = {}  # anomalies whose windows were re-scored
        #: New normal windows, inserted as plain rows after the ORM's flush: most of a batch,
        #: and nothing refers to them (no anomaly, no relationship to load), so the unit of
        #: work's per-object bookkeeping is skipped for them.
        self.plain: dict[tuple[str, datetime], dict[str, Any]] = {}

    def run(self, batch: Sequence[ScoredWindow]) -> list[_AnomalyRow]:
        session = self.session
        identities = sorted({w.identity for w in batch})
        lo, hi = batch[0].window_start, batch[-1].window_start
        existing: dict[tuple[str, datetime], _WindowRow] = {}
        # (identity, last_window_end) -> the anomaly a window starting there would extend
        extendable: dict[tuple[str, datetime], _AnomalyRow] = {}
        latest: dict[str, datetime] = {}
        for chunk in _chunks(identities):
            for row in session.scalars(
                select(_WindowRow).where(
                    _WindowRow.identity.in_(chunk),
                    _WindowRow.window_start >= lo,
                    _WindowRow.window_start <= hi,
                )
            ):
                existing[row.identity, row.window_start] = row
            for a in session.scalars(
                select(_AnomalyRow)
                .where(
                    _AnomalyRow.identity.in_(chunk),
                    _AnomalyRow.state != RESOLVED,
                    _AnomalyRow.last_window_end >= lo,
                    _AnomalyRow.last_window_end <= hi,
                )
                .order_by(_AnomalyRow.id)
                .with_for_update()  # a resolve through the API waits, or is seen (PostgreSQL)
            ):
                extendable[a.identity, a.last_window_end] = a  # the newest wins a (rare) tie
            for ident, start in session.execute(
                select(_WindowRow.identity, func.max(_WindowRow.window_start))
                .where(_WindowRow.identity.in_(chunk))
                .group_by(_WindowRow.identity)
            ):
                latest[ident] = start

        # identity -> the anomaly holding its latest window (None: the latest is normal)
        run_of: dict[str, _AnomalyRow | None] = {}
        for w in batch:
            key = (w.identity, w.window_start)
            row = existing.get(key)
            if row is None and key in self.plain:  # twice in one batch: the ORM's way after all
                row = existing[key] = _WindowRow(**self.plain.pop(key))
                session.add(row)
            anomaly: _AnomalyRow | None = None
            if row is None and not w.anomalous:
                self.plain[key] = _window_values(w)
            else:
                if row is None:
                    row = existing[key] = _WindowRow(identity=w.identity)
                    session.add(row)
                anomaly = self._merge(row, w, extendable)
            if w.identity not in latest or w.window_start >= latest[w.identity]:
                latest[w.identity] = w.window_start
                run_of[w.identity] = anomaly

        session.flush()  # ids for new anomalies, anomaly_id for windows
        if self.plain:
            session.execute(insert(_WindowRow), list(self.plain.values()))
        for anomaly, w in self.opened:
            LIFECYCLE.created(
                session,
                anomaly.id,
                actor=SYSTEM_ACTOR,
                note=f"first anomalous window {w.window_start.isoformat()}",
                at=self.now,
            )
        for anomaly in self.rescored.values():
            self._recompute(anomaly)
        self._set_ongoing(run_of)
        session.flush()
        return list(self.touched.values())

    def _merge(
        self,
        row: _WindowRow,
        w: ScoredWindow,
        extendable: dict[tuple[str, datetime], _AnomalyRow],
    ) -> _AnomalyRow | None:
        """Write ``w`` into its ORM ``row`` and into the anomaly it opens, extends or stays in
        (or leaves, re-scored as normal); returns the anomaly now holding it."""
        previous = row.anomaly
        _fill_window(row, w)
        if not w.anomalous:
            if previous is not None:  # re-scored as normal: leaves its anomaly
                row.anomaly = None
                self._touch(previous, rescored=True)
            return None
        if previous is not None:  # re-scored, still anomalous: stays where it was
            anomaly = previous
            self._touch(previous, rescored=True)
        else:
            anomaly = extendable.get((w.identity, w.window_start))
            if anomaly is None:
                anomaly = self._open(w)
            else:
                self._extend(anomaly, w)
            row.anomaly = anomaly
        if anomaly.state != RESOLVED and w.window_end >= anomaly.last_window_end:
            extendable[w.identity, w.window_end] = anomaly
        return anomaly

    def _touch(self, anomaly: _AnomalyRow, *, rescored: bool = False) -> None:
        self.touched.setdefault(id(anomaly), anomaly)
        if rescored:
            self.rescored.setdefault(id(anomaly), anomaly)
        anomaly.updated_at = self.now

    def _open(self, w: ScoredWindow) -> _AnomalyRow:
        anomaly = _AnomalyRow(
            identity=w.identity,
            namespace=w.namespace,
            workload=w.workload,
            state=OPEN,
            ongoing=False,
            first_window_start=w.window_start,
            last_window_end=w.window_end,
            window_count=1,
            suppressed_until=None,
            state_note="",
            state_actor=SYSTEM_ACTOR,
            created_at=self.now,
            updated_at=self.now,
        )
        _set_peak(anomaly, w)
        self.session.add(anomaly)
        self.opened.append((anomaly, w))
        self._touch(anomaly)
        return anomaly

    def _extend(self, anomaly: _AnomalyRow, w: ScoredWindow) -> None:
        anomaly.last_window_end = max(anomaly.last_window_end, w.window_end)
        anomaly.window_count += 1
        if w.score > anomaly.peak_score:
            _set_peak(anomaly, w)
        self._touch(anomaly)

    def _recompute(self, anomaly: _AnomalyRow) -> None:
        """Count, bounds and peak from the anomaly's windows, after some were re-scored."""
        rows = self.session.scalars(
            select(_WindowRow)
            .where(_WindowRow.anomaly_id == anomaly.id)
            .order_by(_WindowRow.window_start)
        ).all()
        anomaly.window_count = len(rows)
        if not rows:  # every window was re-scored as normal: nothing is left to look at
            if anomaly.state != RESOLVED:
                _transition(
                    self.session,
                    anomaly,
                    "resolve",
                    actor=SYSTEM_ACTOR,
                    at=self.now,
                    now=self.now,
                    note="re-scored: none of its windows is anomalous any more",
                )
            return
        anomaly.first_window_start = rows[0].window_start
        anomaly.last_window_end = max(r.window_end for r in rows)
        peak = max(rows, key=lambda r: r.score)  # max() keeps the first (earliest) on ties
        _set_peak(anomaly, _to_window(peak))

    def _set_ongoing(self, run_of: dict[str, _AnomalyRow | None]) -> None:
        """Only the anomaly holding an identity's latest window is ongoing (none if normal)."""
        for anomaly in self.touched.values():
            if anomaly.identity in run_of:
                anomaly.ongoing = False
        keep: dict[str, int] = {}
        for identity, anomaly in run_of.items():
            if anomaly is not None and anomaly.state != RESOLVED:
                anomaly.ongoing = True
                keep[identity] = anomaly.id
        self.session.flush()
        for chunk in _chunks(sorted(run_of)):
            stmt = (
                update(_AnomalyRow)
                .where(_AnomalyRow.identity.in_(chunk), _AnomalyRow.ongoing.is_(True))
                .values(ongoing=False, updated_at=self.now)
                .execution_options(synchronize_session=False)
            )
            kept = [keep[i] for i in chunk if i in keep]
            if kept:
                stmt = stmt.where(_AnomalyRow.id.not_in(kept))
            self.session.execute(stmt)


def _window_values(w: ScoredWindow) -> dict[str, Any]:
    """The columns of ``w``'s row (its anomaly aside): one place for both ways of writing it."""
    return {
        "identity": w.identity,
        "namespace": w.namespace,
        "workload": w.workload,
        "window_start": w.window_start,
        "window_end": w.window_end,
        "score": float(w.score),
        "threshold": float(w.threshold),
        "anomalous": bool(w.anomalous),
        "model": w.model,
        "fallback": bool(w.fallback),
        "summary": w.summary,
        "reasons": _reasons_json(w.reasons),
        "examples": dict(w.examples),
        "evidence": list(w.evidence),
        "changes": list(w.changes),
        "new_edges": int(w.new_edges),
        "model_anomalous": bool(w.model_anomalous),
        "incident": w.incident or None,
        "role": w.role or None,
        "attacker": w.attacker or None,
    }


def _fill_window(row: _WindowRow, w: ScoredWindow) -> None:
    for name, value in _window_values(w).items():
        setattr(row, name, value)


def _set_peak(anomaly: _AnomalyRow, w: ScoredWindow) -> None:
    anomaly.peak_window_start = w.window_start
    anomaly.peak_score, anomaly.peak_threshold = float(w.score), float(w.threshold)
    anomaly.model, anomaly.fallback, anomaly.summary = w.model, bool(w.fallback), w.summary
    anomaly.reasons, anomaly.examples = _reasons_json(w.reasons), dict(w.examples)
    anomaly.incident, anomaly.role = w.incident or None, w.role or None

"""The alert outbox: every message to a sink is a database row before anyone tries to send it.

Two tables live next to the anomaly store's, in the same database (on the one ORM base of
:mod:`netwarden.storage`, with their own engine and the store's SQLite settings):

- ``alert_outbox``: one row per message (sink, payload, attempts, next attempt, last error,
  delivered time). A worker claims due rows, sends them and marks each delivered or failed;
  a failed row is retried with capped exponential backoff and jitter, never dropped. Because the
  rows are in the database, a new process on the same file carries on where the last one
  stopped. Delivery is at least once: a process that dies between sending and marking sends
  that row again.
- ``alert_state``: what the alerter last decided per anomaly (Alertmanager labels and whether
  the alert is firing, when it was last sent, the Slack message state), so deciding twice
  enqueues nothing twice; plus ``alert_cursor``, how far the alerter has followed the store,
  and ``alert_change_notices``, the changes (:mod:`netwarden.detector.change_store`) already
  announced, written in the transaction that enqueues their notice so each is told once.

A row with a ``key`` (Alertmanager: one key per anomaly) carries the whole current state of what
it describes, so enqueueing a newer one for the same key *supersedes* a pending older one: the
new payload is the old merged with the new (``coalesce``), and the old row is kept, marked
superseded. Only the newest state of an alert is ever pending, so a backlog after an outage
stays one row per alert and cannot deliver an old "firing" after a newer "resolved". That the
merged "resolved" does not cost the receiver its "firing" is the sender's business: a delivered
row keeps the payload as it was actually sent (:meth:`Outbox.mark_delivered`), so the sender can
tell what a receiver was told (:meth:`Outbox.delivered`) and schedule a follow-up row.

A message's status follows :data:`STATUSES`, an instance of the generic
:class:`netwarden.storage.lifecycle.StateMachine` (``pending`` -> ``delivered`` or
``superseded``; a superseded row that was in flight may still be reported delivered). It is
the rules only, not an :class:`~netwarden.storage.lifecycle.AuditedLifecycle`: a status is
changed by netwarden alone, many rows at a time in one UPDATE (a whole batch delivered, older
rows superseded), with no actor or reason to record; the row itself carries its history
(``attempts``, ``last_error``, ``delivered_at``, ``superseded_by``), and delivered rows are
purged. An audit event per message would double the writes of the busiest table for nothing a
person reviews.

The sinks share :func:`post_json` and :class:`DeliveryError`: what sending a row means, and
what a failed attempt records.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import httpx
from sqlalchemy import (
    JSON,
    Boolean,
    Index,
    Integer,
    String,
    Text,
    delete,
    func,
    select,
    text,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from netwarden.storage.base import Base, record_of
from netwarden.storage.database import SqlStore
from netwarden.storage.database import UTCDateTime as _UTCDateTime
from netwarden.storage.database import utc as _utc
from netwarden.storage.lifecycle import StateMachine

__all__ = [
    "DELIVERED",
    "PENDING",
    "SLACK_CLOSED",
    "SLACK_CLOSING",
    "SLACK_NONE",
    "SLACK_SENT",
    "SLACK_WAITING",
    "STATUSES",
    "SUPERSEDED",
    "AlertState",
    "DeliveryError",
    "FollowUp",
    "Outbox",
    "OutboxItem",
    "OutboxTransaction",
    "backoff_delay",
    "post_json",
]

PENDING: Final = "pending"
DELIVERED: Final = "delivered"
SUPERSEDED: Final = "superseded"

#: The statuses of a message and the actions between them (see the module docstring).
STATUSES: Final = StateMachine(
    kind="outbox message",
    states=(PENDING, DELIVERED, SUPERSEDED),
    actions={
        "claim": {PENDING: PENDING},  # leased to a worker until next_attempt_at
        "retry": {PENDING: PENDING},  # a failed attempt: due again after the backoff
        "supersede": {PENDING: SUPERSEDED},  # a newer message of the same key carries it
        # The receiver accepted it: even once superseded meanwhile, or reported twice.
        "deliver": {PENDING: DELIVERED, SUPERSEDED: DELIVERED, DELIVERED: DELIVERED},
    },
)

SLACK_NONE: Final = "none"  # no Slack message (yet): not eligible, or never needed
SLACK_WAITING: Final = "waiting"  # will go out with the next group / digest
SLACK_SENT: Final = "sent"  # its message is in the outbox; never another "firing" one
SLACK_CLOSING: Final = "closing"  # it ended after its message: an "is over" notice is owed
SLACK_CLOSED: Final = "closed"  # its end was told (in its message, or in an "is over" notice)

_ERROR_CHARS: Final = 2000
#: The advisory lock (PostgreSQL) that serializes alerter passes of several processes: b"nwalerts".
_PASS_LOCK: Final = int.from_bytes(b"nwalerts", "big")


class DeliveryError(Exception):
    """A message could not be delivered; it stays in the outbox and is retried.

    ``status`` is the HTTP status if the receiver answered; ``retry_after`` its own wish
    (HTTP 429 ``Retry-After``), in seconds.
    """

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after

    @property
    def rejected(self) -> bool:
        """The receiver refused this payload (4xx other than 429): sending it again as it is
        will not help, though the receiver's configuration might change."""
        return self.status is not None and 400 <= self.status < 500 and self.status != 429


def post_json(http: httpx.Client, url: str, payload: Any, *, timeout: float) -> httpx.Response:
    """POST ``payload`` as JSON; any transport error or non-2xx answer is a DeliveryError."""
    try:
        response = http.post(url, json=payload, timeout=timeout)
    except httpx.HTTPError as exc:
        raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc
    if response.is_success:
        return response
    retry_after: float | None = None
    if response.status_code == 429:
        try:
            retry_after = float(response.headers.get("retry-after", ""))
        except ValueError:
            retry_after = None
    raise DeliveryError(
        f"HTTP {response.status_code}: {response.text[:500]}",
        status=response.status_code,
        retry_after=retry_after,
    )


def backoff_delay(attempts: int, *, initial: float, cap: float, rng: random.Random) -> float:
    """Seconds to wait after the ``attempts``-th failure: ``initial * 2**(attempts-1)``, capped
    at ``cap``, then "equal jitter" (a uniform draw in its upper half) so that many rows failing
    together do not retry in lockstep, yet none retries much sooner than the schedule says."""
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    base = min(cap, initial * 2.0 ** min(attempts - 1, 60))
    return rng.uniform(base / 2, base)


# --------------------------------------------------------------------------------------- schema


class _OutboxRow(Base):
    __tablename__ = "alert_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sink: Mapped[str] = mapped_column(String(32))
    key: Mapped[str | None] = mapped_column(String(128), nullable=True)
    payload: Mapped[Any] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(_UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime] = mapped_column(_UTCDateTime())
    last_error: Mapped[str] = mapped_column(Text)
    delivered_at: Mapped[datetime | None] = mapped_column(_UTCDateTime(), nullable=True)
    superseded_by: Mapped[int | None] = mapped_column(Integer, nullable=True)

    __table_args__ = (
        Index("ix_alert_outbox_status_next", "status", "next_attempt_at"),
        Index("ix_alert_outbox_sink_key_status", "sink", "key", "status"),
        Index("ix_alert_outbox_sink_created", "sink", "created_at"),
        Index("ix_alert_outbox_created", "created_at"),
    )


class _StateRow(Base):
    __tablename__ = "alert_state"

    anomaly_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    am_labels: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)
    am_firing: Mapped[bool] = mapped_column(Boolean, index=True)
    am_sent_at: Mapped[datetime | None] = mapped_column(_UTCDateTime(), nullable=True)
    slack: Mapped[str] = mapped_column(String(16), index=True)
    slack_since: Mapped[datetime | None] = mapped_column(_UTCDateTime(), nullable=True)
    slack_message: Mapped[int | None] = mapped_column(Integer, nullable=True)


class _CursorRow(Base):
    __tablename__ = "alert_cursor"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    at: Mapped[datetime] = mapped_column(_UTCDateTime())


class _NoticeRow(Base):
    __tablename__ = "alert_change_notices"

    change_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    at: Mapped[datetime] = mapped_column(_UTCDateTime(), index=True)


# ------------------------------------------------------------------------------ public records


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One message in the outbox, as a caller sees it."""

    id: int
    sink: str
    key: str | None
    payload: Any
    status: str  # pending, delivered or superseded
    created_at: datetime
    attempts: int  # failed attempts so far
    next_attempt_at: datetime
    last_error: str
    delivered_at: datetime | None
    superseded_by: int | None


@dataclass(frozen=True, slots=True)
class FollowUp:
    """A message to enqueue when a delivery is recorded (a "resolved" after its "firing"), due
    at ``due``; dropped if a newer message of the same key is pending (that one carries it)."""

    sink: str
    key: str
    payload: Any
    due: datetime


@dataclass(frozen=True, slots=True)
class AlertState:
    """What the alerter has done about one anomaly so far.

    ``am_labels`` are the labels of the Alertmanager alert last sent (the alert's identity
    there), ``am_firing`` whether it was last sent firing and ``am_sent_at`` when. ``slack`` is
    ``none``, ``waiting`` (since ``slack_since``), ``sent`` (in message ``slack_message``),
    ``closing`` (ended since ``slack_since``, after message ``slack_message``) or ``closed``.
    """

    anomaly_id: int
    am_labels: dict[str, str] | None = None
    am_firing: bool = False
    am_sent_at: datetime | None = None
    slack: str = SLACK_NONE
    slack_since: datetime | None = None
    slack_message: int | None = None


def _item(row: _OutboxRow) -> OutboxItem:
    return record_of(OutboxItem, row)


def _state(row: _StateRow) -> AlertState:
    return record_of(AlertState, row)


# -------------------------------------------------------------------------------- transaction


class OutboxTransaction:
    """The decisions of one alerter pass, committed together: new state and new messages."""

    def __init__(self, session: Session, now: datetime) -> None:
        self._session = session
        self.now = now
        self.superseded: list[str] = []  # sinks of rows superseded in this transaction

    def states(self, ids: Iterable[int]) -> dict[int, AlertState]:
        """The stored state of these anomalies (absent: never seen)."""
        wanted = sorted(set(ids))
        found: dict[int, AlertState] = {}
        for i in range(0, len(wanted), 500):
            for row in self._session.scalars(
                select(_StateRow).where(_StateRow.anomaly_id.in_(wanted[i : i + 500]))
            ):
                found[row.anomaly_id] = _state(row)
        return found

    def put(self, state: AlertState) -> None:
        """Store ``state`` (insert or replace)."""
        self._session.merge(_StateRow(**asdict(state)))

    def slack_waiting(self, status: str = SLACK_WAITING) -> list[AlertState]:
        """Anomalies in Slack state ``status`` (waiting for a message, or closing: waiting for
        an "is over" notice), longest waiting first."""
        rows = self._session.scalars(
            select(_StateRow)
            .where(_StateRow.slack == status)
            .order_by(_StateRow.slack_since, _StateRow.anomaly_id)
        )
        return [_state(r) for r in rows]

    def pending_among(self, item_ids: Iterable[int]) -> set[int]:
        """Those of these messages not delivered yet (a purged row was delivered long ago)."""
        ids = sorted(set(item_ids))
        found: set[int] = set()
        for i in range(0, len(ids), 500):
            found.update(
                self._session.scalars(
                    select(_OutboxRow.id).where(
                        _OutboxRow.id.in_(ids[i : i + 500]), _OutboxRow.status == PENDING
                    )
                )
            )
        return found

    def created_since(self, sink: str, since: datetime, *, unkeyed: bool = False) -> int:
        """How many messages for ``sink`` were enqueued after ``since`` (rate limits); with
        ``unkeyed``, only those without a key (Slack's anomaly messages: change notices carry
        a key and are not rate-limited)."""
        stmt = (
            select(func.count())
            .select_from(_OutboxRow)
            .where(_OutboxRow.sink == sink, _OutboxRow.created_at > _utc(since, "since"))
        )
        if unkeyed:
            stmt = stmt.where(_OutboxRow.key.is_(None))
        return int(self._session.scalar(stmt) or 0)

    def noticed(self, change_ids: Iterable[str]) -> set[str]:
        """Those of these changes already announced."""
        ids = sorted(set(change_ids))
        found: set[str] = set()
        for i in range(0, len(ids), 500):
            found.update(
                self._session.scalars(
                    select(_NoticeRow.change_id).where(_NoticeRow.change_id.in_(ids[i : i + 500]))
                )
            )
        return found

    def mark_noticed(self, change_ids: Iterable[str]) -> None:
        """These changes are announced (their notices are in this transaction)."""
        for change_id in sorted(set(change_ids)):
            self._session.merge(_NoticeRow(change_id=change_id, at=self.now))

    def enqueue(
        self,
        sink: str,
        payload: Any,
        *,
        key: str | None = None,
        coalesce: Callable[[Any, Any], Any] | None = None,
    ) -> int:
        """Add a message, due now; returns its id.

        With ``key``, a pending message of the same sink and key is superseded: the new row's
        payload is ``coalesce(old_payload, payload)`` (or ``payload`` without ``coalesce``).
        """
        if key is not None:
            older = self._session.scalars(
                select(_OutboxRow)
                .where(
                    _OutboxRow.sink == sink,
                    _OutboxRow.key == key,
                    _OutboxRow.status.in_(STATUSES.sources("supersede")),
                )
                .order_by(_OutboxRow.id)
            ).all()
            for old in older:
                payload = coalesce(old.payload, payload) if coalesce else payload
        row = _OutboxRow(
            sink=sink,
            key=key,
            payload=payload,
            status=PENDING,
            created_at=self.now,
            attempts=0,
            next_attempt_at=self.now,
            last_error="",
            delivered_at=None,
            superseded_by=None,
        )
        self._session.add(row)
        self._session.flush()
        if key is not None:
            for old in older:
                old.status = STATUSES.next_state(old.id, old.status, "supersede")
                old.superseded_by = row.id
                self.superseded.append(sink)
        return row.id

    def cursor(self, name: str) -> datetime | None:
        """A named position (how far the store's changes were followed), or None."""
        row = self._session.get(_CursorRow, name)
        return None if row is None else row.at

    def set_cursor(self, name: str, at: datetime) -> None:
        self._session.merge(_CursorRow(name=name, at=_utc(at, "cursor")))


# ------------------------------------------------------------------------------------- outbox


class Outbox(SqlStore):
    """The outbox and alert-state tables in the database at ``url`` (created if missing).

    Every method is one short transaction; on SQLite a lock serializes the calls of one outbox
    and transactions take the write lock up front, as in the anomaly store.
    """

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._shared = self._engine.dialect.name == "postgresql"

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with self._begin() as (session, _):
            yield session

    @contextmanager
    def transaction(self, now: datetime) -> Iterator[OutboxTransaction]:
        """One transaction for a whole alerter pass (no other database calls inside it).

        Several processes may alert over one database (the API Deployment's replicas in cluster
        mode). On SQLite the write lock, taken here at the start, serializes their passes; on
        PostgreSQL (read committed) two passes could read the same alert state and both enqueue,
        so each pass first takes a transaction-scoped advisory lock: passes run one after
        another, each deciding on what the last one committed.
        """
        with self._session() as session:
            session.connection()  # begin now (SQLite: BEGIN IMMEDIATE), not at the first query
            if self._shared:
                session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PASS_LOCK})
            yield OutboxTransaction(session, _utc(now, "now"))

    def due(
        self,
        now: datetime,
        *,
        lease: timedelta,
        limit: int = 100,
        sinks: Collection[str] | None = None,
    ) -> list[OutboxItem]:
        """Claim up to ``limit`` pending messages due at ``now``, oldest first.

        A claimed row is not due again until ``now + lease``, so a second worker does not send
        it too; if this one dies mid-send, the row comes back when the lease runs out.
        """
        now = _utc(now, "now")
        stmt = select(_OutboxRow).where(
            _OutboxRow.status.in_(STATUSES.sources("claim")), _OutboxRow.next_attempt_at <= now
        )
        if sinks is not None:
            stmt = stmt.where(_OutboxRow.sink.in_(sorted(sinks)))
        stmt = stmt.order_by(_OutboxRow.next_attempt_at, _OutboxRow.id).limit(limit)
        # another process claiming at the same moment skips the rows this one locks (PostgreSQL;
        # on SQLite the write lock taken up front already serializes the claims)
        stmt = stmt.with_for_update(skip_locked=True)
        with self._session() as session:
            rows = session.scalars(stmt).all()
            for row in rows:
                row.next_attempt_at = now + lease
            return [_item(r) for r in rows]

    def mark_delivered(
        self,
        item_ids: Iterable[int],
        now: datetime,
        *,
        sent: Mapping[int, Any] | None = None,
        follow_ups: Iterable[FollowUp] = (),
    ) -> None:
        """The receiver accepted these messages (even one a newer message superseded
        meanwhile: it was delivered all the same).

        ``sent`` maps a message to the payload actually sent when the sender changed it (the
        row then records what the receiver was told); ``follow_ups`` are enqueued in the same
        transaction, so a crash cannot record the one without the other.
        """
        ids = sorted(set(item_ids))
        now = _utc(now, "now")
        with self._session() as session:
            for i in range(0, len(ids), 500):
                session.execute(
                    update(_OutboxRow)
                    .where(
                        _OutboxRow.id.in_(ids[i : i + 500]),
                        _OutboxRow.status.in_(STATUSES.sources("deliver")),
                    )
                    .values(status=DELIVERED, delivered_at=now)
                )
            for item_id, payload in (sent or {}).items():
                session.execute(
                    update(_OutboxRow).where(_OutboxRow.id == item_id).values(payload=payload)
                )
            for f in follow_ups:
                newer = session.scalar(
                    select(func.count())
                    .select_from(_OutboxRow)
                    .where(
                        _OutboxRow.sink == f.sink,
                        _OutboxRow.key == f.key,
                        _OutboxRow.status == PENDING,
                    )
                )
                if newer:
                    continue  # a newer state of the same alert is pending: it carries this one
                session.add(
                    _OutboxRow(
                        sink=f.sink,
                        key=f.key,
                        payload=f.payload,
                        status=PENDING,
                        created_at=now,
                        attempts=0,
                        next_attempt_at=_utc(f.due, "due"),
                        last_error="",
                        delivered_at=None,
                        superseded_by=None,
                    )
                )

    def delivered(
        self, sink: str, key: str, *, before_id: int | None = None, limit: int = 200
    ) -> list[OutboxItem]:
        """Delivered messages of ``sink`` and ``key``, newest first (page with ``before_id``):
        what the receiver was told about one alert, as far as the retention keeps it."""
        stmt = select(_OutboxRow).where(
            _OutboxRow.sink == sink, _OutboxRow.key == key, _OutboxRow.status == DELIVERED
        )
        if before_id is not None:
            stmt = stmt.where(_OutboxRow.id < before_id)
        with self._session() as session:
            rows = session.scalars(stmt.order_by(_OutboxRow.id.desc()).limit(limit))
            return [_item(r) for r in rows]

    def mark_failed(
        self,
        item_id: int,
        now: datetime,
        error: str,
        *,
        initial: float,
        cap: float,
        rng: random.Random,
        retry_after: float | None = None,
    ) -> datetime | None:
        """Count a failed attempt and schedule the next one after the backoff (or the
        receiver's ``retry_after``, whichever is later); returns when, or None if the row is no
        longer pending (superseded meanwhile: its newer row carries it)."""
        now = _utc(now, "now")
        with self._session() as session:
            row = session.get(_OutboxRow, item_id)
            if row is None or not STATUSES.allows(row.status, "retry"):
                return None
            row.attempts += 1
            delay = backoff_delay(row.attempts, initial=initial, cap=cap, rng=rng)
            if retry_after is not None:
                delay = max(delay, min(retry_after, cap))
            row.next_attempt_at = now + timedelta(seconds=delay)
            row.last_error = error[:_ERROR_CHARS]
            return row.next_attempt_at

    def purge(self, before: datetime) -> int:
        """Delete delivered and superseded messages created before ``before`` (pending ones
        are kept whatever their age), and the record of changes announced before it (the
        alerter follows changes from a cursor far younger); returns how many messages were
        deleted."""
        before = _utc(before, "before")
        with self._session() as session:
            result = session.execute(
                delete(_OutboxRow).where(
                    _OutboxRow.status.in_([DELIVERED, SUPERSEDED]),
                    _OutboxRow.created_at < before,
                )
            )
            session.execute(delete(_NoticeRow).where(_NoticeRow.at < before))
            return int(getattr(result, "rowcount", 0) or 0)

    def pending(self) -> dict[str, int]:
        """Messages waiting to be delivered, by sink."""
        with self._session() as session:
            return {
                sink: int(n)
                for sink, n in session.execute(
                    select(_OutboxRow.sink, func.count())
                    .where(_OutboxRow.status == PENDING)
                    .group_by(_OutboxRow.sink)
                )
            }

    def items(self, sink: str | None = None) -> list[OutboxItem]:
        """Every message (of ``sink``), oldest first: for inspection and tests."""
        stmt = select(_OutboxRow).order_by(_OutboxRow.id)
        if sink is not None:
            stmt = stmt.where(_OutboxRow.sink == sink)
        with self._session() as session:
            return [_item(r) for r in session.scalars(stmt)]

    def tracked(self) -> list[int]:
        """Anomalies the alerter must look at even if unchanged: firing, or awaiting Slack."""
        with self._session() as session:
            return list(
                session.scalars(
                    select(_StateRow.anomaly_id)
                    .where(
                        _StateRow.am_firing.is_(True)
                        | _StateRow.slack.in_([SLACK_WAITING, SLACK_CLOSING])
                    )
                    .order_by(_StateRow.anomaly_id)
                )
            )

    def state(self, anomaly_id: int) -> AlertState | None:
        """The alert state of one anomaly, or None if the alerter never saw it."""
        with self._session() as session:
            row = session.get(_StateRow, anomaly_id)
            return None if row is None else _state(row)

"""The one audit trail: every lifecycle event of every subject (an anomaly, a proposal) is a row
of ``audit_events``, keyed by the subject's kind and id.

Each row says who (``actor``) did what (``action``) to which subject, when (``at``), from which
state to which (``from_state`` is None for the creation), why (``note``) and with which
``details`` (JSON; ``{}`` when there are none). Rows are written only by
:class:`netwarden.storage.lifecycle.AuditedLifecycle`, in the transaction that changes the state.

Databases written before this table kept one table per subject (``anomaly_events`` with
``anomaly_id``, ``proposal_events`` with ``proposal_id`` and ``details``). :func:`adopt_legacy`
copies such a table over, once: when it exists and ``audit_events`` holds no event of that kind
yet. The old table stays as it was (an older netwarden can still open the file).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    JSON,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    insert,
    inspect,
    literal,
    select,
    text,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from netwarden.storage.base import Base
from netwarden.storage.database import UTCDateTime

__all__ = ["AuditEventRow", "adopt_legacy"]

#: The columns a legacy event table shares with ``audit_events`` (besides its subject id).
_SHARED: Final = ("at", "actor", "action", "from_state", "to_state", "note")


class AuditEventRow(Base):
    """One lifecycle event of one subject (see the module docstring)."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject_kind: Mapped[str] = mapped_column(String(16))
    subject_id: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(String(256))
    action: Mapped[str] = mapped_column(String(32))
    from_state: Mapped[str | None] = mapped_column(String(16), nullable=True)
    to_state: Mapped[str] = mapped_column(String(16))
    note: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)

    __table_args__ = (Index("ix_audit_events_subject", "subject_kind", "subject_id", "id"),)


def _has_events(session: Session, kind: str) -> bool:
    found = session.scalar(
        select(AuditEventRow.id).where(AuditEventRow.subject_kind == kind).limit(1)
    )
    return found is not None


def adopt_legacy(session: Session, kind: str, table: str, subject_column: str) -> int:
    """Copy the legacy event ``table`` (subject id in ``subject_column``) into ``audit_events``
    as events of ``kind``, in their original order, unless it is absent or events of ``kind``
    are already there. Returns how many rows were copied.

    The values go over in one ``INSERT ... SELECT``, untouched (both tables store timestamps
    alike). On PostgreSQL the table is locked first, so two processes opening the same
    database cannot both copy; SQLite transactions here already start with the write lock.
    """
    connection = session.connection()
    if not inspect(connection).has_table(table) or _has_events(session, kind):
        return 0
    if connection.dialect.name == "postgresql":
        session.execute(text("LOCK TABLE audit_events IN SHARE ROW EXCLUSIVE MODE"))
        if _has_events(session, kind):  # another process copied it while we waited
            return 0
    legacy = Table(table, MetaData(), autoload_with=connection)
    details = legacy.c.details if "details" in legacy.c else literal({}, JSON)
    source = select(
        literal(kind, String),
        legacy.c[subject_column],
        *(legacy.c[name] for name in _SHARED),
        details,
    ).order_by(legacy.c.id)
    target = ["subject_kind", "subject_id", *_SHARED, "details"]
    result = session.execute(insert(AuditEventRow).from_select(target, source))
    return int(getattr(result, "rowcount", 0) or 0)

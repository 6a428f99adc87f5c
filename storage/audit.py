"""The one audit trail: every lifecycle event of every subject (an anomaly, a proposal) is a row
of ``audit_events``, keyed by the subject's kind and id.

Each row says who (``actor``) did what (``action``) to which subject, when (``at``), from which
state to which (``from_state`` is None for the creation), why (``note``) and with which
``details`` (JSON; ``{}`` when there are none). Rows are written only by
:class:`netwarden.storage.lifecycle.AuditedLifecycle`, in the transaction that changes the state.

Databases written before this table kept one table per subject (``anomaly_events``,
``proposal_events``): migrating such a database copies them here once
(:mod:`netwarden.storage.migrations.legacy`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from netwarden.storage.base import Base
from netwarden.storage.database import BigId, UTCDateTime

__all__ = ["AuditEventRow"]


class AuditEventRow(Base):
    """One lifecycle event of one subject (see the module docstring)."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
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

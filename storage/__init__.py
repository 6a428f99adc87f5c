"""Storage shared by anomalies, proposals and the alert outbox: engine, sessions and types
(:mod:`.database`), the one ORM base (:mod:`.base`), the one audit-event table (:mod:`.audit`),
the generic lifecycle state machine (:mod:`.lifecycle`) and the schema migrations
(:mod:`.migrate`, with Alembic's revisions in ``migrations/``)."""

from netwarden.storage.audit import AuditEventRow
from netwarden.storage.base import Base, record_of
from netwarden.storage.database import SqlStore, UTCDateTime, required_text, utc
from netwarden.storage.lifecycle import (
    AuditedLifecycle,
    StateMachine,
    SubjectNotFound,
    TransitionError,
)

__all__ = [
    "AuditEventRow",
    "AuditedLifecycle",
    "Base",
    "SqlStore",
    "StateMachine",
    "SubjectNotFound",
    "TransitionError",
    "UTCDateTime",
    "record_of",
    "required_text",
    "utc",
]

"""The schema of the first migration (``0001``): every table as netwarden wrote it when Alembic
took over, as a :class:`~sqlalchemy.MetaData` of its own.

It is a snapshot, never edited: the models change through later revisions. Two things build on
it: revision ``0001`` creates it in an empty database, and
:func:`netwarden.storage.migrate.upgrade` brings a database an earlier release wrote (tables
there, no ``alembic_version``) to exactly this shape (missing tables, columns and indexes
added) before stamping it ``0001``. Timestamps are plain ``DateTime(timezone=True)`` here: the
models' :class:`~netwarden.storage.database.UTCDateTime` only converts values, its DDL is this.
"""

from __future__ import annotations

from functools import cache
from typing import Final

import sqlalchemy as sa

__all__ = ["REVISION", "TABLES", "baseline_metadata"]

#: The revision whose schema this is.
REVISION: Final = "0001"
#: The names of its tables.
TABLES: Final = frozenset(
    {
        "alert_change_notices",
        "alert_cursor",
        "alert_outbox",
        "alert_state",
        "anomalies",
        "audit_events",
        "change_identities",
        "changes",
        "proposals",
        "scored_windows",
    }
)

_TIME = sa.DateTime(timezone=True)


@cache
def baseline_metadata() -> sa.MetaData:
    """The tables of revision ``0001`` (built once: every store opening a new database needs
    them, and nothing changes them)."""
    metadata = sa.MetaData()
    sa.Table(
        "alert_change_notices",
        metadata,
        sa.Column("change_id", sa.String(length=32), nullable=False),
        sa.Column("at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("change_id"),
        sa.Index("ix_alert_change_notices_at", "at"),
    )
    sa.Table(
        "alert_cursor",
        metadata,
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    sa.Table(
        "alert_outbox",
        metadata,
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sink", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", _TIME, nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("delivered_at", _TIME, nullable=True),
        sa.Column("superseded_by", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.Index("ix_alert_outbox_created", "created_at"),
        sa.Index("ix_alert_outbox_sink_created", "sink", "created_at"),
        sa.Index("ix_alert_outbox_sink_key_status", "sink", "key", "status"),
        sa.Index("ix_alert_outbox_status_next", "status", "next_attempt_at"),
    )
    sa.Table(
        "alert_state",
        metadata,
        sa.Column("anomaly_id", sa.Integer(), nullable=False),
        sa.Column("am_labels", sa.JSON(), nullable=True),
        sa.Column("am_firing", sa.Boolean(), nullable=False),
        sa.Column("am_sent_at", _TIME, nullable=True),
        sa.Column("slack", sa.String(length=16), nullable=False),
        sa.Column("slack_since", _TIME, nullable=True),
        sa.Column("slack_message", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("anomaly_id"),
        sa.Index("ix_alert_state_am_firing", "am_firing"),
        sa.Index("ix_alert_state_slack", "slack"),
    )
    sa.Table(
        "anomalies",
        metadata,
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("identity", sa.String(length=512), nullable=False),
        sa.Column("namespace", sa.String(length=253), nullable=False),
        sa.Column("workload", sa.String(length=253), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("ongoing", sa.Boolean(), nullable=False),
        sa.Column("first_window_start", _TIME, nullable=False),
        sa.Column("last_window_end", _TIME, nullable=False),
        sa.Column("window_count", sa.Integer(), nullable=False),
        sa.Column("peak_window_start", _TIME, nullable=False),
        sa.Column("peak_score", sa.Float(), nullable=False),
        sa.Column("peak_threshold", sa.Float(), nullable=False),
        sa.Column("model", sa.String(length=512), nullable=False),
        sa.Column("fallback", sa.Boolean(), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("examples", sa.JSON(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("suppressed_until", _TIME, nullable=True),
        sa.Column("state_note", sa.Text(), nullable=False),
        sa.Column("state_actor", sa.String(length=256), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.Column("incident", sa.String(length=64), nullable=True),
        sa.Column("role", sa.String(length=16), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.Index("ix_anomalies_identity_end", "identity", "last_window_end"),
        sa.Index("ix_anomalies_last_window_end", "last_window_end"),
        sa.Index("ix_anomalies_namespace_end", "namespace", "last_window_end"),
        sa.Index("ix_anomalies_ongoing_end", "ongoing", "last_window_end"),
        sa.Index("ix_anomalies_state_end", "state", "last_window_end"),
        sa.Index("ix_anomalies_state_suppressed_until", "state", "suppressed_until"),
        sa.Index("ix_anomalies_updated", "updated_at", "id"),
    )
    sa.Table(
        "audit_events",
        metadata,
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subject_kind", sa.String(length=16), nullable=False),
        sa.Column("subject_id", sa.Integer(), nullable=False),
        sa.Column("at", _TIME, nullable=False),
        sa.Column("actor", sa.String(length=256), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("from_state", sa.String(length=16), nullable=True),
        sa.Column("to_state", sa.String(length=16), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.Index("ix_audit_events_subject", "subject_kind", "subject_id", "id"),
    )
    sa.Table(
        "changes",
        metadata,
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("change_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("subject", sa.String(length=512), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("first_seen", _TIME, nullable=False),
        sa.Column("last_seen", _TIME, nullable=False),
        sa.Column("windows", sa.Integer(), nullable=False),
        sa.Column("identities", sa.JSON(), nullable=False),
        sa.Column("edges", sa.JSON(), nullable=False),
        sa.Column("edges_omitted", sa.Integer(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("state_actor", sa.String(length=256), nullable=False),
        sa.Column("state_note", sa.Text(), nullable=False),
        sa.Column("decided_at", _TIME, nullable=True),
        sa.Column("applied_at", _TIME, nullable=True),
        sa.Column("proposal_ids", sa.JSON(), nullable=False),
        sa.Column("anomaly_ids", sa.JSON(), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("change_id"),
        sa.Index("ix_changes_created", "created_at", "id"),
        sa.Index("ix_changes_decided", "decided_at", "applied_at"),
        sa.Index("ix_changes_last_seen", "last_seen", "id"),
        sa.Index("ix_changes_status_last_seen", "status", "last_seen"),
    )
    sa.Table(
        "proposals",
        metadata,
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("identity", sa.String(length=512), nullable=False),
        sa.Column("anomaly_id", sa.Integer(), nullable=True),
        sa.Column("policy", sa.JSON(), nullable=False),
        sa.Column("patch", sa.JSON(), nullable=True),
        sa.Column("current", sa.JSON(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("problems", sa.JSON(), nullable=False),
        sa.Column("warnings", sa.JSON(), server_default=sa.text("'[]'"), nullable=False),
        sa.Column("dry_run", sa.JSON(), nullable=True),
        sa.Column("change", sa.JSON(), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.Column("claim", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.Index("ix_proposals_identity", "identity", "id"),
        sa.Index("ix_proposals_state", "state", "id"),
    )
    sa.Table(
        "change_identities",
        metadata,
        sa.Column("change_row", sa.Integer(), nullable=False),
        sa.Column("identity", sa.String(length=512), nullable=False),
        sa.ForeignKeyConstraint(["change_row"], ["changes.id"]),
        sa.PrimaryKeyConstraint("change_row", "identity"),
        sa.Index("ix_change_identities_identity", "identity", "change_row"),
    )
    sa.Table(
        "scored_windows",
        metadata,
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("identity", sa.String(length=512), nullable=False),
        sa.Column("namespace", sa.String(length=253), nullable=False),
        sa.Column("workload", sa.String(length=253), nullable=False),
        sa.Column("window_start", _TIME, nullable=False),
        sa.Column("window_end", _TIME, nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("anomalous", sa.Boolean(), nullable=False),
        sa.Column("model", sa.String(length=512), nullable=False),
        sa.Column("fallback", sa.Boolean(), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("examples", sa.JSON(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=True),
        sa.Column("changes", sa.JSON(), nullable=True),
        sa.Column("new_edges", sa.Integer(), nullable=True),
        sa.Column("model_anomalous", sa.Boolean(), nullable=True),
        sa.Column("incident", sa.String(length=64), nullable=True),
        sa.Column("role", sa.String(length=16), nullable=True),
        sa.Column("attacker", sa.String(length=512), nullable=True),
        sa.Column("anomaly_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["anomaly_id"], ["anomalies.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("identity", "window_start", name="uq_scored_windows_identity_start"),
        sa.Index("ix_scored_windows_anomaly_id", "anomaly_id"),
    )
    return metadata

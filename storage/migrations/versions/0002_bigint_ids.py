"""64-bit ids for the tables that grow without bound (``scored_windows``, ``audit_events``).

On PostgreSQL ``0001`` made them ``SERIAL``: a 32-bit column and a sequence that stops at
2,147,483,647, which a large cluster scoring every identity every minute reaches within months
even with retention (ids are never reused). Both become ``bigint``; PostgreSQL rewrites each
table once, holding its lock for that time. SQLite needs nothing: an ``INTEGER PRIMARY KEY`` is
its 64-bit rowid already.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("scored_windows", "audit_events")


def _retype(old: sa.types.TypeEngine, new: sa.types.TypeEngine, sequence_type: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in _TABLES:
        op.alter_column(table, "id", type_=new, existing_type=old, existing_nullable=False)
        sequence = op.get_bind().scalar(
            sa.text("SELECT pg_get_serial_sequence(:table, 'id')"), {"table": table}
        )
        if sequence is not None:  # AS moves the sequence's bounds along with its type
            op.execute(f"ALTER SEQUENCE {sequence} AS {sequence_type}")


def upgrade() -> None:
    _retype(sa.Integer(), sa.BigInteger(), "bigint")


def downgrade() -> None:
    _retype(sa.BigInteger(), sa.Integer(), "integer")

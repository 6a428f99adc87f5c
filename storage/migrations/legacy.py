"""A database that netwarden wrote before it had migrations: brought to the schema of revision
``0001`` (:mod:`.baseline`) so that it can be stamped and upgraded like any other.

Such a database has some of netwarden's tables and no ``alembic_version``. Earlier releases
created missing tables on open and added columns introduced later (always nullable or with a
``server_default``, so the rows already there get a value); a file one of them wrote may lack
any of those. :func:`adopt_unversioned` adds, in the caller's transaction, every table, column
and index of ``0001`` that is missing; nothing is changed or dropped, so every row stays.

Databases older still kept one event table per subject (``anomaly_events`` with
``anomaly_id``, ``proposal_events`` with ``proposal_id`` and ``details``): their rows are copied
into ``audit_events`` in their original order, once (when ``audit_events`` holds no event of
that kind yet). The old tables stay as they were.
"""

from __future__ import annotations

from typing import Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.schema import CreateColumn

from netwarden.storage.migrations.baseline import TABLES, baseline_metadata

__all__ = ["LEGACY_EVENT_TABLES", "adopt_unversioned", "include_name", "is_unversioned"]

#: (subject kind, legacy table, its subject column) of the per-subject event tables.
LEGACY_EVENT_TABLES: Final = (
    ("anomaly", "anomaly_events", "anomaly_id"),
    ("proposal", "proposal_events", "proposal_id"),
)
_LEGACY_NAMES: Final = frozenset(table for _, table, _ in LEGACY_EVENT_TABLES)
#: The columns a legacy event table shares with ``audit_events`` (besides its subject id).
_SHARED: Final = ("at", "actor", "action", "from_state", "to_state", "note")


def include_name(name: str | None, type_: str, _parent_names: object) -> bool:
    """Alembic's ``include_name`` hook: the legacy event tables, kept for older releases but
    no model's any more, are not to be dropped by a new revision."""
    return not (type_ == "table" and name in _LEGACY_NAMES)


def is_unversioned(connection: Connection) -> bool:
    """Whether the database holds netwarden tables but no ``alembic_version``."""
    present = set(sa.inspect(connection).get_table_names())
    if "alembic_version" in present:
        return False
    return bool(present & (TABLES | _LEGACY_NAMES))


def adopt_unversioned(connection: Connection) -> list[str]:
    """Bring the database to revision ``0001``'s schema and copy the legacy event tables;
    returns what was done, one line per change (empty: it had that schema already)."""
    done: list[str] = []
    baseline = baseline_metadata()
    for table in baseline.sorted_tables:  # referenced tables first
        inspector = sa.inspect(connection)  # a fresh one: nothing cached from before a change
        if not inspector.has_table(table.name):
            table.create(connection)
            done.append(f"created table {table.name}")
            continue
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present:
                _add_column(connection, table, column)
                done.append(f"added column {table.name}.{column.name}")
        indexes = {index["name"] for index in inspector.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in indexes:
                index.create(connection)
                done.append(f"created index {index.name}")
    audit = baseline.tables["audit_events"]
    for kind, table, subject in LEGACY_EVENT_TABLES:
        copied = _copy_events(connection, audit, kind, table, subject)
        if copied:
            done.append(f"copied {copied} events from {table} to audit_events")
    return done


def _add_column(connection: Connection, table: sa.Table, column: sa.Column) -> None:
    if not column.nullable and column.server_default is None:
        raise ValueError(
            f"cannot add column {table.name}.{column.name} to an existing table: it needs a "
            "server_default or to be nullable"
        )
    dialect = connection.dialect
    ddl = CreateColumn(column).compile(dialect=dialect)
    name = dialect.identifier_preparer.format_table(table)
    connection.exec_driver_sql(f"ALTER TABLE {name} ADD COLUMN {ddl}")


def _copy_events(
    connection: Connection, audit: sa.Table, kind: str, table: str, subject: str
) -> int:
    """Copy ``table`` into ``audit`` as events of ``kind`` in one ``INSERT ... SELECT`` (both
    store timestamps alike), unless it is absent or ``audit`` has events of ``kind``."""
    if not sa.inspect(connection).has_table(table):
        return 0
    has_kind = connection.scalar(sa.select(audit.c.id).where(audit.c.subject_kind == kind).limit(1))
    if has_kind is not None:
        return 0
    legacy = sa.Table(table, sa.MetaData(), autoload_with=connection)
    details = legacy.c.details if "details" in legacy.c else sa.literal({}, sa.JSON)
    source = sa.select(
        sa.literal(kind, sa.String),
        legacy.c[subject],
        *(legacy.c[name] for name in _SHARED),
        details,
    ).order_by(legacy.c.id)
    target = ["subject_kind", "subject_id", *_SHARED, "details"]
    result = connection.execute(sa.insert(audit).from_select(target, source))
    return int(result.rowcount or 0)

"""Columns a table gained after databases were written with it: added to those on open.

``Base.metadata.create_all`` creates missing tables, never missing columns, so a database an
older netwarden wrote (or one that an older netwarden still shares) lacks a column added since.
:func:`add_missing_columns` adds each with ``ALTER TABLE ... ADD COLUMN``, which both SQLite and
PostgreSQL run without rewriting existing rows when the column has a constant default: such a
column must be nullable or have a ``server_default``, so the rows already there get a value.
Nothing else is migrated: a column is never changed or dropped (an older netwarden opening the
file afterwards ignores the new one).
"""

from __future__ import annotations

from sqlalchemy import Table, inspect
from sqlalchemy.orm import Session
from sqlalchemy.schema import CreateColumn

__all__ = ["add_missing_columns"]


def _missing(session: Session, table: Table) -> list[str]:
    inspector = inspect(session.connection())  # a fresh inspector: nothing cached
    if not inspector.has_table(table.name):
        return []
    present = {column["name"] for column in inspector.get_columns(table.name)}
    return [column.name for column in table.columns if column.name not in present]


def add_missing_columns(session: Session, table: Table) -> list[str]:
    """Add the columns of ``table`` that its database table lacks, in ``session``'s
    transaction; returns their names (none when the table is current or not there yet).

    On PostgreSQL the table is locked first and looked at again, so two processes opening the
    same database add each column once; SQLite transactions here already hold the write lock.
    A missing column that is neither nullable nor has a ``server_default`` is a
    :class:`ValueError` (the existing rows would have no value for it).
    """
    missing = _missing(session, table)
    if not missing:
        return []
    connection = session.connection()
    dialect = connection.dialect
    preparer = dialect.identifier_preparer
    if dialect.name == "postgresql":
        connection.exec_driver_sql(f"LOCK TABLE {preparer.format_table(table)} IN EXCLUSIVE MODE")
        missing = _missing(session, table)  # another process may have added them meanwhile
    for name in missing:
        column = table.columns[name]
        if not column.nullable and column.server_default is None:
            raise ValueError(
                f"cannot add column {table.name}.{name} to an existing table: it needs a "
                "server_default or to be nullable"
            )
        ddl = CreateColumn(column).compile(dialect=dialect)
        connection.exec_driver_sql(f"ALTER TABLE {preparer.format_table(table)} ADD COLUMN {ddl}")
    return missing

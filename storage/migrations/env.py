"""Alembic's environment for netwarden: migrations run on the connection that
:mod:`netwarden.storage.migrate` passes in ``config.attributes["connection"]``, inside the
transaction (and under the lock) it holds, never on a URL of their own.

SQLite runs in batch mode (``render_as_batch``): it cannot ``ALTER`` most of a table, so Alembic
copies the table instead. Offline (``--sql``) mode is not supported: the legacy adoption and the
PostgreSQL sequence changes read the database.
"""

from __future__ import annotations

from alembic import context

from netwarden.storage.base import Base
from netwarden.storage.migrations.legacy import include_name

config = context.config
if context.is_offline_mode():
    raise RuntimeError("netwarden's migrations run online only (netwarden db upgrade)")
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "netwarden's migrations run through netwarden.storage.migrate or `netwarden db`, "
        "which pass the connection"
    )
context.configure(
    connection=connection,
    target_metadata=config.attributes.get("target_metadata", Base.metadata),
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    include_name=include_name,
)
with context.begin_transaction():
    context.run_migrations()

"""Schema migrations with Alembic: bring a database to the newest revision, say where it is.

Every store runs :func:`upgrade` when it opens, so a new netwarden upgrades the database it is
given, SQLite or PostgreSQL, before it reads a row. Operators can do it beforehand, and look,
with ``netwarden db upgrade|current|history``. The revisions are in ``migrations/versions``
(shipped with the package); ``0001`` is the schema as it was when migrations began.

One upgrade at a time: on PostgreSQL a transaction-scoped advisory lock (several detector
replicas and the API may start together), on SQLite the write lock every transaction here
takes first (``BEGIN IMMEDIATE``). The whole upgrade is one transaction (both databases have
transactional DDL): it commits entirely or not at all. On SQLite, foreign keys are off while
it runs (batch mode rebuilds a table by copying it, which a referencing row would otherwise
block) and checked before it commits.

A database written before migrations (netwarden's tables, no ``alembic_version``) is first
brought to the schema of ``0001`` (:mod:`netwarden.storage.migrations.legacy`), stamped
``0001``, then upgraded: no row is lost.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final

from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection, Engine

from netwarden.storage.migrations.baseline import REVISION as BASELINE
from netwarden.storage.migrations.legacy import adopt_unversioned, include_name, is_unversioned

__all__ = [
    "BASELINE",
    "Revision",
    "Upgrade",
    "current",
    "head",
    "history",
    "schema_diff",
    "upgrade",
]

_SCRIPTS: Final = Path(__file__).resolve().parent / "migrations"
#: The key of the PostgreSQL advisory lock held while migrating (any constant of our own).
_LOCK_KEY: Final = 0x6E657477_61726465  # "netwarde"


@dataclass(frozen=True, slots=True)
class Revision:
    """One migration: its id, the one it follows (None for the first) and what it does."""

    revision: str
    down_revision: str | None
    doc: str


@dataclass(frozen=True, slots=True)
class Upgrade:
    """What :func:`upgrade` did: the revision before (None: an empty or unversioned database)
    and after, and the changes that brought an unversioned database to ``0001``."""

    before: str | None
    after: str | None
    adopted: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return self.before != self.after or bool(self.adopted)


def _config(connection: Connection | None = None, metadata: MetaData | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    config.attributes["connection"] = connection
    if metadata is not None:
        config.attributes["target_metadata"] = metadata
    return config


@cache
def _scripts() -> ScriptDirectory:
    """The revisions (read once: they are files of the installed package)."""
    return ScriptDirectory.from_config(_config())


def head() -> str:
    """The newest revision."""
    revision = _scripts().get_current_head()
    assert revision is not None, f"no migrations in {_SCRIPTS}"
    return revision


def history() -> list[Revision]:
    """Every revision, oldest first."""
    return [
        Revision(
            script.revision,
            _single(script.down_revision),
            (script.doc or "").strip(),
        )
        for script in reversed(list(_scripts().walk_revisions()))
    ]


def _single(down: Any) -> str | None:
    if down is None or isinstance(down, str):
        return down
    return ",".join(down)  # a merge revision (none yet)


def current(engine: Engine) -> str | None:
    """The revision the database is at (None: empty, or written before migrations)."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


@contextmanager
def _foreign_keys_off(connection: Connection) -> Iterator[None]:
    """SQLite: foreign keys off for the migration (a PRAGMA only works outside a transaction);
    a no-op elsewhere."""
    if connection.dialect.name != "sqlite":
        yield
        return
    raw = connection.connection.driver_connection
    assert raw is not None
    raw.execute("PRAGMA foreign_keys=OFF")
    try:
        yield
    finally:
        raw.execute("PRAGMA foreign_keys=ON")


def _lock(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})


def _check_foreign_keys(connection: Connection) -> None:
    if connection.dialect.name == "sqlite":
        broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise RuntimeError(f"the migration left rows with broken foreign keys: {broken[:5]}")


def _run(connection: Connection, target: str) -> None:
    """Alembic's ``upgrade`` command on ``connection``, with the revisions read once."""
    scripts = _scripts()

    def steps(revision: Any, _context: MigrationContext) -> Any:
        # what alembic.command.upgrade passes (it reads every revision file on each call)
        return scripts._upgrade_revs(target, revision)

    with EnvironmentContext(
        _config(connection), scripts, fn=steps, starting_rev=None, destination_rev=target
    ):
        scripts.run_env()


def upgrade(engine: Engine, target: str = "head") -> Upgrade:
    """Upgrade the database of ``engine`` to ``target`` (the newest by default); nothing is
    done when it is there already. See the module docstring."""
    with engine.connect() as connection, _foreign_keys_off(connection), connection.begin():
        _lock(connection)
        context = MigrationContext.configure(connection)
        before = after = context.get_current_revision()
        adopted: list[str] = []
        if before is None and is_unversioned(connection):
            adopted = adopt_unversioned(connection)
            context.stamp(_scripts(), BASELINE)
            after = BASELINE
        wanted = head() if target == "head" else target
        if after != wanted:
            _run(connection, target)
            after = MigrationContext.configure(connection).get_current_revision()
        _check_foreign_keys(connection)
    return Upgrade(before, after, tuple(adopted))


def schema_diff(engine: Engine, metadata: MetaData) -> list[Any]:
    """What autogenerate would put in a new revision: the differences between ``metadata``
    (import every module that declares tables first) and the database, leaving out the legacy
    event tables kept for older releases. Empty when the models and the migrations agree,
    which the tests check on SQLite and PostgreSQL."""
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={
                "compare_type": True,
                "target_metadata": metadata,
                "include_name": include_name,
            },
        )
        return list(compare_metadata(context, metadata))

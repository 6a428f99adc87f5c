"""The ``db`` commands: upgrade a store's database, say which migration it is at, list the
migrations, and check that the models and the migrations agree.

Stores upgrade their database when they open; operators run ``netwarden db upgrade`` to do it
beforehand (one job before a rollout, not every replica at once) and ``current`` to see where a
database is. ``check`` is for developers and CI: a model changed without a migration shows up
as the changes a new revision would need.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic.util import CommandError
from rich.console import Console
from sqlalchemy import MetaData
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from netwarden.errors import UserError
from netwarden.storage import migrate
from netwarden.storage.database import make_engine

__all__ = ["all_tables", "check", "current", "history", "upgrade"]


def all_tables() -> MetaData:
    """The metadata of every netwarden table: the modules declaring them imported first (a
    module with a new table belongs here, or ``check`` cannot see it)."""
    import netwarden.detector.alerts.outbox
    import netwarden.detector.change_store
    import netwarden.detector.store
    import netwarden.remediation.proposals  # noqa: F401 - imported for their tables
    from netwarden.storage.base import Base

    return Base.metadata


def _shown(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def _sqlite_file(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    if parsed.database == ":memory:" or parsed.database.startswith("file:"):
        return None
    return Path(parsed.database)


@contextmanager
def _engine(url: str, *, create: bool = False) -> Iterator[Engine]:
    """The engine of ``url``; a bad URL, a missing driver or a database that cannot be reached
    is a :class:`UserError` naming the URL (its password hidden). A SQLite file that is not
    there is one too, unless ``create`` (SQLite would silently make an empty one)."""
    try:
        path = _sqlite_file(url)
    except ArgumentError as exc:
        raise UserError(f"not a database URL: {url!r} ({exc})") from None
    if path is not None and not path.exists():
        if not create:
            raise UserError(f"no database at {path} (the SQLite file of {_shown(url)})")
        if not path.parent.is_dir():
            raise UserError(f"no folder {path.parent} for the SQLite file of {_shown(url)}")
    try:
        engine, _ = make_engine(url)
    except (ArgumentError, ValueError) as exc:
        raise UserError(f"not a database URL: {url!r} ({exc})") from None
    except (NoSuchModuleError, ModuleNotFoundError) as exc:
        raise UserError(f"no database driver for {_shown(url)}: {exc}") from None
    try:
        yield engine
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise UserError(f"database {_shown(url)}: {reason}") from None
    finally:
        engine.dispose()


def upgrade(url: str, target: str, console: Console) -> int:
    """Upgrade the database at ``url`` to ``target`` (a revision, or ``head``)."""
    order = [r.revision for r in migrate.history()]
    if target != "head" and target not in order:
        raise UserError(f"unknown revision {target!r}: one of {', '.join(order)}, or head")
    with _engine(url, create=True) as engine:
        at = migrate.current(engine)
        if target != "head" and at in order and order.index(at) > order.index(target):
            raise UserError(
                f"{_shown(url)} is at {at}, past {target}: netwarden does not downgrade "
                "(restore a backup to go back)"
            )
        try:
            done = migrate.upgrade(engine, target)
        except CommandError as exc:  # e.g. --to a revision the database is past
            at = migrate.current(engine)
            raise UserError(f"cannot upgrade {_shown(url)} (at {at}) to {target}: {exc}") from None
    for line in done.adopted:
        console.print(f"  {line}")
    if done.adopted:
        console.print(f"brought a database from before migrations to {migrate.BASELINE}")
    if done.before == done.after:
        console.print(f"{_shown(url)}: at {done.after}, nothing to do")
    else:
        console.print(f"{_shown(url)}: upgraded from {done.before or 'nothing'} to {done.after}")
    return 0


def current(url: str, console: Console) -> int:
    """Print the revision of the database at ``url`` and whether it is the newest."""
    with _engine(url) as engine:
        revision = migrate.current(engine)
    head = migrate.head()
    if revision is None:
        console.print(f"{_shown(url)}: no migration applied (empty, or written before migrations)")
    elif revision == head:
        console.print(f"{_shown(url)}: {revision} (head)")
    else:
        console.print(f"{_shown(url)}: {revision} (head is {head}: run `netwarden db upgrade`)")
    return 0 if revision == head else 1


def history(console: Console) -> int:
    """Print every migration, oldest first, with the first line of its description."""
    head = migrate.head()
    for r in migrate.history():
        first = " ".join(r.doc.split("\n\n")[0].split())
        mark = " (head)" if r.revision == head else ""
        console.print(f"{r.down_revision or '<base>'} -> {r.revision}{mark}: {first}")
    return 0


def _describe(diff: Any) -> str:
    if isinstance(diff, list):  # column changes come as a list of modifications
        return "; ".join(_describe(d) for d in diff)
    return " ".join(str(part) for part in diff[:3]) if isinstance(diff, tuple) else str(diff)


def check(url: str, console: Console) -> int:
    """Upgrade the database at ``url``, then compare it with the models: status 1 and the
    differences when a model changed without a migration."""
    with _engine(url, create=True) as engine:
        migrate.upgrade(engine)
        diffs = migrate.schema_diff(engine, all_tables())
    if not diffs:
        console.print(f"the models match the migrations (head {migrate.head()})")
        return 0
    console.print("the models differ from the migrations; a new revision needs:")
    for diff in diffs:
        console.print(f"  {_describe(diff)}")
    return 1

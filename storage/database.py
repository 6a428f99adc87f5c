"""The database plumbing every netwarden store shares: engines, UTC timestamps, transactions.

SQLite is the embedded default (one file, WAL, a busy timeout, ``BEGIN IMMEDIATE`` so that a
read-then-write transaction never fails to upgrade its lock; the calls of one store are
serialized by a lock); PostgreSQL (``postgresql+psycopg://...``) replaces it in cluster mode, so
stores use only portable types and statements: JSON (kept as text, key order and all: not
JSONB), :data:`BigId` for ids of tables that grow without bound, row locks
(``with_for_update``: claims, decisions, suppression expiries; SQLite's one writer needs none).
Timestamps are stored in UTC and read back timezone-aware; naive datetimes are refused.
The schema is Alembic's (:mod:`netwarden.storage.migrate`): every store upgrades the database
to the newest revision when it opens.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from typing import Any, Final, Self

import orjson
from sqlalchemy import BigInteger, DateTime, Integer, create_engine, event
from sqlalchemy.engine import Dialect, Engine, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool
from sqlalchemy.types import TypeDecorator

from netwarden.storage.migrate import upgrade

__all__ = [
    "BigId",
    "SqlStore",
    "UTCDateTime",
    "make_engine",
    "required_text",
    "system_clock",
    "utc",
]

_SQLITE_BUSY_TIMEOUT_S: Final = 30.0

#: The id type of a table that grows without bound: ``BIGINT`` (``BIGSERIAL``) on PostgreSQL,
#: whose ``SERIAL`` would stop at 2**31 - 1; on SQLite ``INTEGER``, which as a primary key is
#: the 64-bit rowid (a ``BIGINT`` primary key would not be, and would get no automatic ids).
BigId: Final = BigInteger().with_variant(Integer(), "sqlite")


def utc(value: datetime, what: str) -> datetime:
    """``value`` in UTC; a naive datetime is an error (its zone would be a guess)."""
    if not isinstance(value, datetime):
        raise TypeError(f"{what} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (UTC), got naive {value.isoformat()}")
    return value.astimezone(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and read back timezone-aware, on SQLite as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = utc(value, "timestamp")
        # SQLite keeps no offset: store every value as naive UTC so that text order is time order.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:  # SQLite: stored naive, always UTC
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _is_memory_sqlite(database: str | None, query: dict[str, Any]) -> bool:
    return (
        not database
        or database == ":memory:"
        or database.startswith("file::memory:")
        or query.get("mode") == "memory"
    )


def _sqlite_on_connect(dbapi_connection: Any, _record: Any, *, wal: bool) -> None:
    # Let SQLAlchemy's "begin" hook emit BEGIN (pysqlite would otherwise defer it to the first
    # write, so a read-then-write transaction could fail to upgrade its lock).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        if wal:
            _journal_mode_wal(cursor)  # readers do not block the writer
            cursor.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; safe with WAL
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _journal_mode_wal(cursor: Any) -> None:
    """Put the database in WAL mode (kept in the file: later openers find it set). Switching
    needs a lock SQLite takes without its busy handler, so processes opening a new database
    together can be told "database is locked" at once, timeout or not: wait and ask again, for
    as long as the busy timeout would have waited."""
    deadline = time.monotonic() + _SQLITE_BUSY_TIMEOUT_S
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                return
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


#: Set on a connection's info for its next transaction: a read (SqlStore._read).
_READ: Final = "netwarden_read_only"


def _sqlite_on_begin(connection: Any) -> None:
    if connection.info.pop(_READ, False):
        # a read: a deferred transaction is a snapshot (WAL) that neither waits for the writer
        # nor holds it up
        connection.exec_driver_sql("BEGIN")
    else:
        connection.exec_driver_sql("BEGIN IMMEDIATE")  # take the write lock up front (see above)


def _json_loads(text: str | bytes) -> Any:
    """JSON columns read with orjson (several times faster than the standard library: an
    anomaly listing decodes two JSON columns a row); text it refuses (``NaN``, which the
    standard library writes for a float that is not a number) falls back to ``json``."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def make_engine(url: str) -> tuple[Engine, bool]:
    """The engine for ``url`` and whether it is SQLite (whose calls are then serialized)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True, json_deserializer=_json_loads), False
    memory = _is_memory_sqlite(parsed.database, dict(parsed.query))
    connect_args: dict[str, Any] = {"check_same_thread": False}
    if memory:  # one shared connection, or every thread would see its own empty database
        engine = create_engine(
            parsed, connect_args=connect_args, poolclass=StaticPool, json_deserializer=_json_loads
        )
    else:
        connect_args["timeout"] = _SQLITE_BUSY_TIMEOUT_S
        engine = create_engine(parsed, connect_args=connect_args, json_deserializer=_json_loads)
    event.listen(
        engine, "connect", lambda conn, record: _sqlite_on_connect(conn, record, wal=not memory)
    )
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine, True


def system_clock() -> datetime:
    return datetime.now(UTC)


class SqlStore:
    """A store on a SQLAlchemy URL: the database upgraded to the newest migration on open
    (:func:`netwarden.storage.migrate.upgrade`: every table of every store, which share one
    schema), one short transaction per call (:meth:`_begin`), an injectable clock, and
    :meth:`close`."""

    def __init__(self, url: str, *, now: Callable[[], datetime] | None = None) -> None:
        self.url = url
        self._clock = now or system_clock
        self._engine, sqlite = make_engine(url)
        self._lock: AbstractContextManager[Any] = threading.RLock() if sqlite else nullcontext()
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)
        self._closed = False
        try:
            upgrade(self._engine)
        except BaseException:
            self._engine.dispose()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._engine.url.render_as_string(hide_password=True)!r})"

    @contextmanager
    def _begin(self) -> Iterator[tuple[Session, datetime]]:
        """One transaction and the clock's time (UTC) for it; commits on success."""
        if self._closed:
            raise RuntimeError(f"the {type(self).__name__} is closed")
        with self._lock, self._sessions.begin() as session:
            yield session, self.now()

    @contextmanager
    def _read(self) -> Iterator[tuple[Session, datetime]]:
        """One read-only transaction and the clock's time: on SQLite a snapshot that does not
        take the write lock (a busy writer in another process, the pipeline recording windows,
        holds up no reader, and no reader holds it up); rolled back at the end. On PostgreSQL
        an ordinary transaction (readers never wait there)."""
        if self._closed:
            raise RuntimeError(f"the {type(self).__name__} is closed")
        with self._lock, self._engine.connect() as connection:
            connection.info[_READ] = True
            try:
                with Session(bind=connection, expire_on_commit=False) as session:
                    yield session, self.now()
            finally:
                connection.info.pop(_READ, None)  # never begun (nothing was read)
                connection.rollback()

    def now(self) -> datetime:
        """The store's clock (UTC): the time its transactions stamp, so a caller turning "for
        an hour" into an ``until`` uses the same time the store does."""
        return utc(self._clock(), "the store clock's time")

    def close(self) -> None:
        """Release the database connections; the store cannot be used afterwards."""
        self._closed = True
        self._engine.dispose()


def required_text(value: str, what: str) -> str:
    """``value`` stripped; a ValueError naming ``what`` when it is not a non-empty string."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string")
    return value.strip()

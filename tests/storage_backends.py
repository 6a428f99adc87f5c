"""Fixtures that run a store test on each backend: SQLite (a file in tmp_path) and PostgreSQL
(a fresh schema per test on one server per session, started by :func:`tests.servers.
start_postgres`; the PostgreSQL cases skip in one line where it is not installed, unless
NETWARDEN_TEST_REQUIRE_POSTGRES is set)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.servers import PostgresServer, start_postgres

__all__ = ["BACKENDS", "backend_url", "postgres", "postgres_url"]

#: The backends a parametrized store test runs on.
BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session, stopped (and its data removed) at the end."""
    with start_postgres() as server:
        yield server


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> Iterator[str]:
    """The URL of an empty place of its own (a schema first on the search path: as isolated
    as a new database, and quicker to make), dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    url = postgres.create_schema(name)
    yield url
    postgres.drop_schema(name)


@pytest.fixture(params=BACKENDS)
def backend_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """An empty database on each backend in turn: a SQLite file, a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'netwarden.db'}"
    return str(request.getfixturevalue("postgres_url"))

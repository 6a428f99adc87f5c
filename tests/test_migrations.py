"""Schema migrations (netwarden.storage.migrate, `netwarden db`): a new database on SQLite and
PostgreSQL is at the newest revision and matches the models (what `alembic check` checks); a
database an earlier release wrote is upgraded without losing a row; upgrades are all or
nothing and happen once when several processes open a database together."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa

from netwarden.cli import main
from netwarden.commands.db import all_tables
from netwarden.detector.change_store import ChangeStore
from netwarden.detector.results import ScoredWindow
from netwarden.detector.store import AnomalyStore
from netwarden.remediation.proposals import ProposalStore
from netwarden.storage import migrate
from netwarden.storage.database import make_engine
from netwarden.storage.migrations.baseline import baseline_metadata

DATA = Path(__file__).resolve().parent / "data" / "storage"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LATER = T0 + timedelta(days=1)


def _window(i: int, identity: str = "shop/cart", score: float = 0.9) -> ScoredWindow:
    namespace, workload = identity.split("/")
    return ScoredWindow(
        identity=identity,
        namespace=namespace,
        workload=workload,
        window_start=T0 + timedelta(minutes=i),
        window_end=T0 + timedelta(minutes=i + 1),
        score=score,
        threshold=0.5,
        anomalous=score > 0.5,
        model="global",
        fallback=True,
        summary=f"window {i}",
    )


def _engine(url: str) -> sa.Engine:
    engine, _ = make_engine(url)
    return engine


def _at_head_and_as_the_models(url: str) -> None:
    engine = _engine(url)
    try:
        assert migrate.current(engine) == migrate.head()
        assert migrate.schema_diff(engine, all_tables()) == []
    finally:
        engine.dispose()


# ------------------------------------------------------------------------ a new database


def test_the_revisions_form_one_line_from_the_baseline() -> None:
    revisions = migrate.history()
    assert [r.revision for r in revisions][:2] == ["0001", "0002"]
    assert revisions[0].down_revision is None
    assert [r.down_revision for r in revisions[1:]] == [r.revision for r in revisions[:-1]]
    assert revisions[-1].revision == migrate.head()
    assert all(r.doc for r in revisions)


def test_a_new_database_is_at_head_and_matches_the_models(backend_url) -> None:
    """What `alembic check` checks: autogenerate finds nothing to add, on either backend. A
    model changed without a revision fails here, with the changes the revision needs."""
    AnomalyStore(backend_url).close()
    _at_head_and_as_the_models(backend_url)


def test_the_baseline_is_the_schema_before_the_later_revisions() -> None:
    """0001 is a snapshot: the models differ from it only by what later revisions change."""
    engine = _engine("sqlite://")
    try:
        assert migrate.upgrade(engine, "0001").after == "0001"
        assert migrate.schema_diff(engine, baseline_metadata()) == []
    finally:
        engine.dispose()


def test_ids_that_grow_without_bound_are_64_bit_on_postgresql(postgres_url) -> None:
    """PostgreSQL's SERIAL stops at 2**31 - 1; scored windows and audit events go past it."""
    with AnomalyStore(postgres_url, now=lambda: LATER) as store:
        engine = _engine(postgres_url)
        with engine.begin() as connection:
            for table in ("scored_windows", "audit_events"):
                (column,) = (
                    c for c in sa.inspect(connection).get_columns(table) if c["name"] == "id"
                )
                assert isinstance(column["type"], sa.BigInteger), table
                sequence = connection.scalar(
                    sa.text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": table}
                )
                connection.execute(sa.text(f"ALTER SEQUENCE {sequence} RESTART WITH 3000000000"))
        engine.dispose()
        (anomaly,) = store.record([_window(0)])
        assert [e.id for e in store.events(anomaly.id)] == [3_000_000_000]
        assert store.windows("shop/cart") == [_window(0)]


# ---------------------------------------------------------- a database of an earlier release


def _load(sql: Path, path: Path) -> None:
    with sqlite3.connect(path) as raw:
        raw.executescript(sql.read_text())
    raw.close()


def _rows(path: Path) -> dict[str, list[tuple]]:
    with sqlite3.connect(path) as raw:
        tables = [
            r[0]
            for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if r[0] != "alembic_version"
        ]
        rows = {t: raw.execute(f'SELECT * FROM "{t}" ORDER BY 1').fetchall() for t in tables}
    raw.close()
    return rows


def test_a_database_of_release_b4bb581_is_upgraded_with_every_row(tmp_path) -> None:
    path = tmp_path / "netwarden.db"
    _load(DATA / "netwarden-b4bb581.sql", path)
    before = _rows(path)
    assert "alembic_version" not in before and "changes" not in before
    assert sum(len(rows) for rows in before.values()) == 14  # README: 5 windows, 2 + 1, 6 events
    url = f"sqlite:///{path}"
    engine = _engine(url)
    done = migrate.upgrade(engine)
    engine.dispose()
    assert (done.before, done.after) == (None, migrate.head())
    assert "created table changes" in done.adopted
    assert "added column scored_windows.evidence" in done.adopted
    assert "added column proposals.claim" in done.adopted
    after = _rows(path)
    for table, rows in before.items():  # every row kept, its old columns unchanged
        assert [row[: len(rows[0])] for row in after[table]] == rows, table
    _at_head_and_as_the_models(url)
    with (
        AnomalyStore(url, now=lambda: LATER) as store,
        ProposalStore(url, now=lambda: LATER) as review,
        ChangeStore(url, now=lambda: LATER) as changes,
    ):
        cart, pg = store.get(1), store.get(2)
        assert cart is not None and pg is not None
        assert (cart.state, cart.window_count, cart.state_actor, cart.incident) == (
            "acknowledged",
            2,
            "alice",
            "",
        )
        assert (pg.state, pg.suppressed_until) == (
            "suppressed",
            datetime(2026, 3, 31, 12, tzinfo=UTC),
        )
        assert [e.action for e in store.events(1)] == ["open", "acknowledge"]
        (proposal,) = review.list()
        assert (proposal.state, proposal.warnings) == ("rejected", [])
        assert [(e.actor, e.action) for e in review.events(proposal.id)] == [
            ("rita", "propose"),
            ("sam", "reject"),
        ]
        assert changes.list() == []
        # and it carries on: the next window of the cart extends its run
        (extended,) = store.record([_window(2, score=0.97)])
        assert (extended.id, extended.window_count, extended.peak_score) == (1, 3, 0.97)


def _unversioned(url: str) -> None:
    """A database as releases before migrations wrote it, older still: the baseline without
    the columns added later and without the changes tables, plus the per-subject event table
    of the anomalies, with a few rows."""
    baseline = baseline_metadata()
    metadata = sa.MetaData()
    late = {("scored_windows", c) for c in ("evidence", "changes", "incident", "attacker")}
    late |= {("anomalies", "incident"), ("anomalies", "role"), ("proposals", "warnings")}
    kept = [
        t for t in baseline.sorted_tables
        if t.name not in ("changes", "change_identities", "audit_events")
    ]  # fmt: skip
    sa.Table(
        "anomaly_events",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("anomaly_id", sa.Integer, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("from_state", sa.String(16)),
        sa.Column("to_state", sa.String(16), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
    )
    at = T0.replace(tzinfo=None) if url.startswith("sqlite") else T0
    common = {"namespace": "shop", "workload": "cart", "model": "global", "fallback": True}
    anomaly = {
        **common,
        "identity": "shop/cart",
        "state": "resolved",
        "ongoing": False,
        "first_window_start": at,
        "last_window_end": at + timedelta(minutes=1),
        "window_count": 1,
        "peak_window_start": at,
        "peak_score": 0.9,
        "peak_threshold": 0.5,
        "reasons": [],
        "examples": {},
        "summary": "port scan",
        "state_note": "done",
        "state_actor": "bob",
        "created_at": at,
        "updated_at": at,
    }
    window = {
        **common,
        "identity": "shop/cart",
        "window_start": at,
        "window_end": at + timedelta(minutes=1),
        "score": 0.9,
        "threshold": 0.5,
        "anomalous": True,
        "reasons": [],
        "examples": {},
        "summary": "port scan",
        "anomaly_id": 1,
    }
    events = [
        {"anomaly_id": 1, "at": at, "actor": "netwarden", "action": "open",
         "from_state": None, "to_state": "open", "note": "first"},
        {"anomaly_id": 1, "at": at + timedelta(minutes=5), "actor": "bob",
         "action": "resolve", "from_state": "open", "to_state": "resolved", "note": "done"},
    ]  # fmt: skip
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        baseline.create_all(connection, tables=kept)
        for table, column in sorted(late):
            connection.execute(sa.text(f"ALTER TABLE {table} DROP COLUMN {column}"))
        metadata.create_all(connection)
        old = sa.MetaData()
        for name in ("anomalies", "scored_windows"):  # as they are now, without the late ones
            sa.Table(name, old, autoload_with=connection)
        connection.execute(old.tables["anomalies"].insert(), [anomaly])
        connection.execute(old.tables["scored_windows"].insert(), [window])
        connection.execute(metadata.tables["anomaly_events"].insert(), events)
    engine.dispose()


def test_an_unversioned_database_is_upgraded_on_open(backend_url) -> None:
    _unversioned(backend_url)
    with AnomalyStore(backend_url, now=lambda: LATER) as store:
        anomaly = store.get(1)
        assert anomaly is not None and (anomaly.state, anomaly.role) == ("resolved", "")
        assert [(e.actor, e.action, e.at) for e in store.events(1)] == [
            ("netwarden", "open", T0),
            ("bob", "resolve", T0 + timedelta(minutes=5)),
        ]
        (window,) = store.windows("shop/cart")
        assert (window.summary, window.evidence, window.incident) == ("port scan", (), "")
        (new,) = store.record([_window(3, score=0.8)])  # ids carry on after the old ones
        assert new.id == 2 and store.events(2)[0].id == 3
    _at_head_and_as_the_models(backend_url)
    engine = _engine(backend_url)
    with engine.connect() as connection:  # the old event table is left as it was
        assert connection.scalar(sa.text("SELECT count(*) FROM anomaly_events")) == 2
    engine.dispose()


def test_a_failed_upgrade_changes_nothing(backend_url) -> None:
    """All or nothing: a column the old rows would have no value for stops the upgrade, which
    names it, and leaves no table, column or version behind."""
    _unversioned(backend_url)
    engine = _engine(backend_url)
    with engine.begin() as connection:
        connection.execute(sa.text("ALTER TABLE alert_outbox DROP COLUMN last_error"))
    tables = set(sa.inspect(engine).get_table_names())
    with pytest.raises(ValueError, match=r"alert_outbox\.last_error"):
        migrate.upgrade(engine)
    assert set(sa.inspect(engine).get_table_names()) == tables
    assert "role" not in {c["name"] for c in sa.inspect(engine).get_columns("anomalies")}
    engine.dispose()


# ------------------------------------------------------------------------------ concurrency


T = TypeVar("T")


def _together(url: str, n: int, use: Callable[[sa.Engine], T]) -> list[T]:
    """``use`` on ``n`` engines of ``url`` at once (threads released together, as replicas
    that start together); what they returned, or the first error any of them raised."""
    errors: list[BaseException] = []
    results: list[T] = []
    start = threading.Barrier(n)

    def run() -> None:
        engine = _engine(url)
        try:
            start.wait()
            results.append(use(engine))
        except BaseException as exc:  # raised below
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    if errors:
        raise errors[0]
    return results


def test_processes_opening_a_new_database_together_migrate_it_once(backend_url) -> None:
    """Replicas start together: one upgrades (under PostgreSQL's advisory lock, or SQLite's
    write lock), the others find it done."""
    results = _together(backend_url, 4, migrate.upgrade)
    assert sorted(r.changed for r in results) == [False, False, False, True]
    _at_head_and_as_the_models(backend_url)


def test_connections_opening_a_new_sqlite_file_together_all_get_in(tmp_path: Path) -> None:
    """The first connections to a new SQLite file each switch it to WAL; SQLite can answer that
    switch "database is locked" at once, busy timeout or not (CI met it once in the test above:
    about one round in twenty here). Every connection must get in; 300 rounds of 8."""

    def journal_mode(engine: sa.Engine) -> Any:
        with engine.connect() as connection:
            return connection.exec_driver_sql("PRAGMA journal_mode").scalar()

    for round_ in range(300):
        url = f"sqlite:///{tmp_path / f'{round_}.db'}"
        assert _together(url, 8, journal_mode) == ["wal"] * 8, f"round {round_}"


# ------------------------------------------------------------------------------------ `db`


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        main(["db", *argv])
    out, err = capsys.readouterr()
    return int(exit_.value.code or 0), out, err


def test_the_db_commands(tmp_path, capsys) -> None:
    path = tmp_path / "netwarden.db"
    url = f"sqlite:///{path}"
    code, out, err = _run(capsys, "current", "--url", url)
    assert (code, out) == (2, "") and f"no database at {path}" in err  # not made by a look
    _load(DATA / "netwarden-b4bb581.sql", path)
    code, out, _ = _run(capsys, "current", "--url", url)
    assert code == 1 and "no migration applied" in out
    code, out, _ = _run(capsys, "upgrade", "--url", url, "--to", "0001")
    assert code == 0 and "created table changes" in out and "upgraded from nothing to 0001" in out
    code, out, _ = _run(capsys, "current", "--url", url)
    assert code == 1 and f"0001 (head is {migrate.head()}" in out
    code, out, _ = _run(capsys, "upgrade", "--url", url)
    assert code == 0 and f"upgraded from 0001 to {migrate.head()}" in out
    code, out, _ = _run(capsys, "upgrade", "--url", url)
    assert code == 0 and "nothing to do" in out
    code, out, _ = _run(capsys, "check", "--url", url)
    assert code == 0 and "the models match the migrations" in out
    code, out, _ = _run(capsys, "history")
    assert code == 0 and out.splitlines()[0].startswith("<base> -> 0001: ")
    assert f"-> {migrate.head()} (head): " in out
    code, _, err = _run(capsys, "upgrade", "--url", url, "--to", "0001")
    assert code == 2 and "past 0001: netwarden does not downgrade" in err
    code, _, err = _run(capsys, "upgrade", "--url", url, "--to", "9999")
    assert code == 2 and "unknown revision '9999'" in err
    code, _, err = _run(capsys, "upgrade", "--url", "not a url")
    assert code == 2 and "not a database URL" in err


def test_db_takes_the_store_url_from_the_configuration(tmp_path, capsys, monkeypatch) -> None:
    config = tmp_path / "netwarden.yaml"
    config.write_text(f"data_dir: {tmp_path / 'data'}\n")
    (tmp_path / "data").mkdir()
    code, out, _ = _run(capsys, "upgrade", "--config", str(config))
    assert code == 0 and f"sqlite:///{tmp_path / 'data' / 'netwarden.db'}" in out
    monkeypatch.setenv("NETWARDEN_STORE__URL", f"sqlite:///{tmp_path / 'other.db'}")
    code, out, _ = _run(capsys, "upgrade", "--config", str(config))
    assert code == 0 and "other.db: upgraded from nothing" in out


def test_db_on_postgresql_hides_the_password(postgres, postgres_url, capsys) -> None:
    code, out, _ = _run(capsys, "upgrade", "--url", postgres_url)
    assert code == 0 and f"upgraded from nothing to {migrate.head()}" in out
    wrong = f"postgresql+psycopg://someone:s3cret@127.0.0.1:{postgres.port}/nowhere"
    code, _, err = _run(capsys, "current", "--url", wrong)
    assert code == 2 and "someone:***@" in err and "s3cret" not in err


# ------------------------------------------------------------------------------- packaging


@pytest.mark.slow
def test_the_wheel_ships_the_migrations(tmp_path) -> None:
    import subprocess
    import sys
    import zipfile

    root = Path(__file__).resolve().parents[1]
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path), str(root)],
        check=True,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("netwarden-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in (
        "netwarden/storage/migrations/env.py",
        "netwarden/storage/migrations/script.py.mako",
        "netwarden/storage/migrations/baseline.py",
        "netwarden/storage/migrations/versions/0001_baseline.py",
        "netwarden/storage/migrations/versions/0002_bigint_ids.py",
    ):
        assert name in names, name


# --------------------------------------------------------------------- without PostgreSQL


def test_without_postgresql_its_tests_skip_unless_required(monkeypatch) -> None:
    from tests import servers

    monkeypatch.setattr(servers, "postgres_bindir", lambda: None)
    monkeypatch.delenv(servers.REQUIRE_POSTGRES_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install postgresql"):
        servers.require_postgres()
    monkeypatch.setenv(servers.REQUIRE_POSTGRES_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="apt-get install postgresql"):
        servers.require_postgres()

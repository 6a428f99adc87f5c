"""Real servers for integration tests, started on free loopback ports and stopped afterwards.

Each server is a Debian package that CI installs (``.ci/run``); a missing binary fails the test
with the command that installs it (a silent skip would hide that nothing was tested). To add a
server, write a ``start_<name>()`` that builds its command line and calls :func:`start`.
PostgreSQL (:func:`start_postgres`) skips with one line where it is not installed, so that the
store tests still run on SQLite there; CI sets NETWARDEN_TEST_REQUIRE_POSTGRES to fail instead.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any, Final, Self

import httpx
import pytest

__all__ = [
    "REQUIRE_POSTGRES_ENV",
    "PostgresServer",
    "Server",
    "WebhookReceiver",
    "free_port",
    "postgres_bindir",
    "require",
    "require_postgres",
    "start",
    "start_alertmanager",
    "start_postgres",
]

_READY_TIMEOUT_S: Final = 30.0
_STOP_TIMEOUT_S: Final = 10.0

ALERTMANAGER_CONFIG: Final = """\
route:
  receiver: "null"
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: "null"
"""

#: The same route, notifying a webhook (Alertmanager's generic receiver) of firing and resolved.
ALERTMANAGER_WEBHOOK_CONFIG: Final = """\
route:
  receiver: "hook"
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: "hook"
    webhook_configs:
      - url: "{url}"
        send_resolved: true
"""


@dataclass
class Server:
    """A running server process and where to reach it."""

    name: str
    url: str  # base URL, e.g. http://127.0.0.1:40123
    port: int
    process: subprocess.Popen[bytes]
    workdir: Path
    log: Path
    _log_file: IO[bytes] | None = field(repr=False, default=None)

    def stop(self) -> None:
        """Terminate (then kill if it hangs) and wait; safe to call twice."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=_STOP_TIMEOUT_S)
        if self._log_file is not None:
            self._log_file.close()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require(binary: str, package: str) -> str:
    """The path of ``binary``, or fail saying which Debian package to install."""
    path = shutil.which(binary)
    if path is None:
        pytest.fail(
            f"{binary} not found on PATH: apt-get install {package} (CI installs it in .ci/run)",
            pytrace=False,
        )
    return path


def start(name: str, argv: list[str], *, port: int, workdir: Path, ready_path: str) -> Server:
    """Run ``argv`` (logging to ``workdir/<name>.log``) and wait until ``GET ready_path`` on
    ``port`` answers 200; fail with the log's tail if it exits or never gets ready."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"{name}.log"
    log_file = log.open("wb")
    process = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, cwd=workdir)
    server = Server(
        name=name,
        url=f"http://127.0.0.1:{port}",
        port=port,
        process=process,
        workdir=workdir,
        log=log,
        _log_file=log_file,
    )
    deadline = time.monotonic() + _READY_TIMEOUT_S
    with httpx.Client(timeout=1.0) as http:
        while True:
            if process.poll() is not None:
                server.stop()
                pytest.fail(f"{name} exited with {process.returncode}:\n{server.log_tail()}")
            try:
                if http.get(server.url + ready_path).status_code == 200:
                    return server
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                server.stop()
                pytest.fail(
                    f"{name} not ready after {_READY_TIMEOUT_S:.0f} s:\n{server.log_tail()}"
                )
            time.sleep(0.05)


class WebhookReceiver:
    """A loopback HTTP endpoint that keeps every JSON body POSTed to it: what Alertmanager's
    webhook receiver notifies, i.e. what a person would be told."""

    def __init__(self) -> None:
        self.notifications: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver._lock:
                    receiver.notifications.append(json.loads(body))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def wait_for(self, predicate: Any, timeout: float = 30.0) -> list[dict[str, Any]]:
        """The notifications once ``predicate(notifications)`` holds; fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                seen = list(self.notifications)
            if predicate(seen):
                return seen
            if time.monotonic() > deadline:
                pytest.fail(f"webhook: expected notifications not seen in {timeout} s: {seen}")
            time.sleep(0.05)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def start_alertmanager(
    workdir: Path, *, port: int | None = None, webhook_url: str | None = None
) -> Server:
    """Alertmanager with its own storage, no clustering, on loopback; it notifies nobody (a
    null receiver), or the webhook at ``webhook_url`` of firing and resolved alerts."""
    binary = require("prometheus-alertmanager", "prometheus-alertmanager")
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "alertmanager.yml"
    config.write_text(
        ALERTMANAGER_WEBHOOK_CONFIG.format(url=webhook_url) if webhook_url else ALERTMANAGER_CONFIG
    )
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
        "--log.level=warn",
    ]
    return start("alertmanager", argv, port=port, workdir=workdir, ready_path="/-/ready")


#: Set (to anything but "" or "0") where PostgreSQL must be tested: its tests fail, not skip,
#: when the server is missing (.ci/run sets it).
REQUIRE_POSTGRES_ENV: Final = "NETWARDEN_TEST_REQUIRE_POSTGRES"


def postgres_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` with ``initdb`` and ``postgres`` (Debian
    keeps them off PATH), or None."""
    found = [
        d
        for d in Path("/usr/lib/postgresql").glob("*/bin")
        if (d / "initdb").is_file() and (d / "postgres").is_file() and d.parent.name.isdigit()
    ]
    return max(found, key=lambda d: int(d.parent.name), default=None)


def require_postgres() -> Path:
    """The PostgreSQL binaries, or skip in one line (fail where :data:`REQUIRE_POSTGRES_ENV`
    is set) saying how to install them."""
    import os

    bindir = postgres_bindir()
    if bindir is None:
        message = "PostgreSQL not installed: apt-get install postgresql (CI installs it in .ci/run)"
        if os.environ.get(REQUIRE_POSTGRES_ENV, "") not in ("", "0"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return bindir


@dataclass
class PostgresServer:
    """A throw-away PostgreSQL cluster: its server process, port and data folder."""

    bindir: Path
    port: int
    process: subprocess.Popen[bytes]
    workdir: Path
    log: Path
    user: str | None  # the system user it runs as (None: this process's)
    _log_file: IO[bytes] | None = field(repr=False, default=None)

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL of ``database`` (psycopg 3; trust authentication on loopback)."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_schema(self, name: str, database: str = "postgres") -> str:
        """Create the empty schema ``name``; returns the URL of ``database`` with ``name`` first
        on its search path (what netwarden creates goes there): a fresh, isolated place for one
        test in milliseconds, where a new database takes about a second."""
        import psycopg

        with psycopg.connect(self._dsn(database), autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{name}"')
        return f"{self.url(database)}?options=-csearch_path%3D{name}"

    def drop_schema(self, name: str, database: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self._dsn(database), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')

    def create_database(self, name: str) -> str:
        """Create the empty database ``name``; returns its URL."""
        import psycopg

        with psycopg.connect(self._dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self._dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _dsn(self, database: str) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={database}"

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Fast shutdown (SIGINT: clients are disconnected), then the data folder is removed;
        safe to call twice."""
        import signal

        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=_STOP_TIMEOUT_S)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_postgres(*, port: int | None = None) -> PostgresServer:
    """``initdb`` a new cluster in a fresh folder under the system temp dir and run
    ``postgres`` on a loopback port, without fsync (a test database need not survive a crash).

    PostgreSQL refuses to run as root: as root the folder is given to the ``postgres`` system
    user (which Debian's package creates) and both programs run as that user. The folder is not
    under pytest's tmp_path, whose parents are root's alone. Skips (or fails, see
    :func:`require_postgres`) when PostgreSQL is not installed.
    """
    import os
    import pwd
    import tempfile

    bindir = require_postgres()
    port = port or free_port()
    workdir = Path(tempfile.mkdtemp(prefix="netwarden-pg-"))
    user: str | None = None
    if os.geteuid() == 0:
        try:
            entry = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(workdir, ignore_errors=True)
            pytest.fail("running as root and no postgres user to run PostgreSQL as", pytrace=False)
        user = "postgres"
        os.chown(workdir, entry.pw_uid, entry.pw_gid)
    data, log = workdir / "data", workdir / "postgres.log"
    as_user: dict[str, Any] = {"user": user, "group": user} if user else {}
    init = subprocess.run(
        [
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ],
        capture_output=True,
        cwd=workdir,
        check=False,
        **as_user,
    )
    if init.returncode != 0:
        shutil.rmtree(workdir, ignore_errors=True)
        pytest.fail(f"initdb failed ({init.returncode}):\n{init.stderr.decode(errors='replace')}")
    log_file = log.open("wb")
    if user:
        os.chown(log, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
    argv = [
        str(bindir / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port),
        "-k", str(workdir), "-c", "fsync=off", "-c", "synchronous_commit=off",
        "-c", "full_page_writes=off", "-c", "max_connections=200",
    ]  # fmt: skip
    process = subprocess.Popen(
        argv, stdout=log_file, stderr=subprocess.STDOUT, cwd=workdir, **as_user
    )
    server = PostgresServer(bindir, port, process, workdir, log, user, log_file)
    _wait_for_postgres(server)
    return server


def _wait_for_postgres(server: PostgresServer) -> None:
    import psycopg

    deadline = time.monotonic() + _READY_TIMEOUT_S
    while True:
        if server.process.poll() is not None:
            tail = server.log_tail()
            server.stop()
            pytest.fail(f"postgres exited with {server.process.returncode}:\n{tail}")
        try:
            with psycopg.connect(server._dsn("postgres"), connect_timeout=1):
                return
        except psycopg.OperationalError:
            pass
        if time.monotonic() > deadline:
            tail = server.log_tail()
            server.stop()
            pytest.fail(f"postgres not ready after {_READY_TIMEOUT_S:.0f} s:\n{tail}")
        time.sleep(0.05)

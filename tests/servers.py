"""Real servers for integration tests, started on free loopback ports and stopped afterwards.

Each server is a Debian package that CI installs (``.ci/run``); a missing binary fails the test
with the command that installs it (a silent skip would hide that nothing was tested). To add a
server, write a ``start_<name>()`` that builds its command line and calls :func:`start`.
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

__all__ = ["Server", "WebhookReceiver", "free_port", "require", "start", "start_alertmanager"]

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

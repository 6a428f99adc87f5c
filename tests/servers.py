"""Real servers for integration tests, started on free loopback ports and stopped afterwards.

Each server is a Debian package that CI installs (``.ci/run``); a missing binary fails the test
with the command that installs it (a silent skip would hide that nothing was tested). To add a
server, write a ``start_<name>()`` that builds its command line and calls :func:`start`.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final, Self

import httpx
import pytest

__all__ = ["Server", "free_port", "require", "start", "start_alertmanager"]

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


def start_alertmanager(workdir: Path, *, port: int | None = None) -> Server:
    """Alertmanager with a null receiver, its own storage, no clustering, on loopback."""
    binary = require("prometheus-alertmanager", "prometheus-alertmanager")
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "alertmanager.yml"
    config.write_text(ALERTMANAGER_CONFIG)
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
        "--log.level=warn",
    ]
    return start("alertmanager", argv, port=port, workdir=workdir, ready_path="/-/ready")

"""Stand-in pods for the privileged eBPF tests: two network namespaces joined by a veth pair
(with a macvlan device stacked on each end), and the skip-or-fail rule for hosts that cannot
run the probes. Shared by tests/test_bpf_probes.py and tests/test_bpf_agent.py."""

from __future__ import annotations

import functools
import json
import os
import secrets
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from netwarden.bpf import preflight

__all__ = ["Pods", "pods", "run", "skip_unless_root"]


@functools.cache
def _preflight_problem() -> str | None:
    try:
        preflight.check()
    except preflight.AgentUnavailable as exc:
        return str(exc)
    return None


#: Set by .ci/run: there every piece the probes need is installed, so a host that cannot run
#: them is a failure, not a skip.
REQUIRE_EBPF = os.environ.get("NETWARDEN_TEST_REQUIRE_EBPF") == "1"


def skip_unless_root() -> None:
    """Skip with the preflight message, one line saying what to install, when this host cannot
    run the probes (not root, no bcc, no kernel headers, no tracefs); a failure instead where CI
    asked for every eBPF test to run (``NETWARDEN_TEST_REQUIRE_EBPF=1``)."""
    problem = _preflight_problem()
    if problem is None:
        return
    if REQUIRE_EBPF:
        pytest.fail(f"NETWARDEN_TEST_REQUIRE_EBPF=1 but the probes cannot run here: {problem}")
    pytest.skip(f"eBPF tests need: {problem}")


def run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=30)


@dataclass
class Pods:
    """Two namespaces ("client" and "server") joined by a veth pair."""

    client: str
    server: str
    client_ip: str
    server_ip: str
    client_ip6: str
    server_ip6: str
    client_stacked_ip: str  # on a macvlan device stacked on the veth
    server_stacked_ip: str
    client_netns: int
    server_netns: int

    def spawn(self, ns: str, code: str) -> subprocess.Popen[str]:
        """Run Python ``code`` inside namespace ``ns``; it talks JSON lines on stdout."""
        return subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", textwrap.dedent(code)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self, ns: str, code: str, timeout: float = 30) -> dict:
        p = self.spawn(ns, code)
        out, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, err
        return {"pid": p.pid, **json.loads(out.strip().splitlines()[-1])}


@pytest.fixture
def pods() -> Iterator[Pods]:
    skip_unless_root()
    tag = secrets.token_hex(3)
    client, server = f"nwtest-{tag}-c", f"nwtest-{tag}-s"
    net = f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(250)}"
    vnet = f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(250)}"
    while vnet == net:
        vnet = f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(250)}"
    net6 = f"fd00:6e77:{secrets.randbelow(0xFFFF):x}"
    try:
        run("ip", "netns", "add", client)
        run("ip", "netns", "add", server)
        run(
            "ip",
            "-n",
            client,
            "link",
            "add",
            "nw0",
            "type",
            "veth",
            "peer",
            "name",
            "nw1",
            "netns",
            server,
        )
        for ns, dev, ip, ip6 in (
            (client, "nw0", f"{net}.1", f"{net6}::1"),
            (server, "nw1", f"{net}.2", f"{net6}::2"),
        ):
            run("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            run("ip", "-n", ns, "addr", "add", f"{ip6}/64", "dev", dev, "nodad")
            run("ip", "-n", ns, "link", "set", dev, "up")
            run("ip", "-n", ns, "link", "set", "lo", "up")
        for ns, dev, ip in ((client, "nw0", f"{vnet}.1"), (server, "nw1", f"{vnet}.2")):
            run("ip", "-n", ns, "link", "add", "link", dev, "name", "mv0", "type", "macvlan")
            run("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "mv0")
            run("ip", "-n", ns, "link", "set", "mv0", "up")
        inode = {
            ns: int(run("stat", "-L", "-c", "%i", f"/run/netns/{ns}").stdout)
            for ns in (client, server)
        }
        yield Pods(
            client,
            server,
            f"{net}.1",
            f"{net}.2",
            f"{net6}::1",
            f"{net6}::2",
            f"{vnet}.1",
            f"{vnet}.2",
            inode[client],
            inode[server],
        )
    finally:
        for ns in (client, server):
            run("ip", "netns", "del", ns, check=False)

"""`netwarden agent` as a user runs it (root), and the `ebpf` source of the service.

Stand-in pods are network namespaces joined by a veth pair (tests/netns.py's
``pods`` fixture); an identity map names them. The agent's JSON lines, its Observer gRPC server
(read by netwarden's Hubble source) and the service's pipeline must all show the connection
with its identities, direction and byte counts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from rich.console import Console

from netwarden.ingest.compact import CompactFlow
from netwarden.ingest.reader import FlowReader
from netwarden.ingest.sources.hubble import HubbleSource
from netwarden.ingest.windows import WindowBuilder
from tests.netns import Pods
from tests.servers import free_port
from tests.test_hubble_source import Collect, run_source, stop_source

UP, DOWN = 100_000, 5_000

SERVER = """
import json, socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("{ip}", {port})); s.listen(); print(json.dumps({{"ready": True}}), flush=True)
c, _ = s.accept(); got = 0
while got < {up}:
    got += len(c.recv(65536))
c.sendall(b"y" * {down}); c.close(); s.close()
print(json.dumps({{"got": got}}), flush=True)
"""
CLIENT = """
import json, socket
c = socket.create_connection(("{ip}", {port})); c.sendall(b"x" * {up}); got = 0
while got < {down}:
    chunk = c.recv(65536)
    if not chunk: break
    got += len(chunk)
c.close(); print(json.dumps({{"got": got}}))
"""


def identity_map(tmp: Path, pods: Pods) -> Path:
    path = tmp / "identities.yaml"
    path.write_text(f"""
entries:
  - netns: {pods.client}
    namespace: shop
    pod: web-0
    labels: {{app: web}}
    workload: {{name: web, kind: Deployment}}
  - netns: {pods.server}
    namespace: db
    pod: redis-0
    labels: {{app: redis}}
    workload: {{name: redis, kind: StatefulSet}}
  - ips: [{pods.client_ip}]
    namespace: shop
    pod: web-0
    labels: {{app: web}}
    workload: {{name: web, kind: Deployment}}
  - ips: [{pods.server_ip}]
    namespace: db
    pod: redis-0
    labels: {{app: redis}}
    workload: {{name: redis, kind: StatefulSet}}
""")
    return path


def exchange(pods: Pods, port: int) -> None:
    """One TCP connection client -> server: UP bytes up, DOWN bytes back."""
    server = pods.spawn(pods.server, SERVER.format(ip=pods.server_ip, port=port, up=UP, down=DOWN))
    assert server.stdout is not None
    assert "ready" in server.stdout.readline()
    result = pods.run(pods.client, CLIENT.format(ip=pods.server_ip, port=port, up=UP, down=DOWN))
    assert result["got"] == DOWN
    _out, err = server.communicate(timeout=30)
    assert server.returncode == 0, err


def start_agent(tmp: Path, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp / "agent.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "netwarden", "agent", "--kubernetes", "off", *args],
        stdout=subprocess.DEVNULL,
        stderr=open(log, "wb"),
    )
    deadline = time.monotonic() + 90
    while "probes attached" not in log.read_text():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"agent did not start: {log.read_text()}"
        time.sleep(0.2)
    return proc, log


def wait_for_lines(path: Path, predicate: Any, timeout: float = 20) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        lines = [orjson.loads(x) for x in path.read_bytes().splitlines()] if path.exists() else []
        if predicate(lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.2)


def closes(lines: list[dict], pods: Pods, port: int) -> list[dict]:
    return [
        e["flow"]
        for e in lines
        if e["flow"].get("l4", {}).get("TCP", {}).get("destination_port") == port
        and e["flow"]["l4"]["TCP"].get("flags", {}).get("FIN")
        and e["flow"]["IP"]["source"] == pods.client_ip
    ]


@pytest.mark.privileged
@pytest.mark.slow
def test_agent_reports_a_connection_at_both_ends_with_identities_and_bytes(
    tmp_path: Path, pods: Pods
) -> None:
    out = tmp_path / "flows.jsonl"
    grpc_port = free_port()
    proc, log = start_agent(
        tmp_path,
        "--out",
        str(out),
        "--identity-map",
        str(identity_map(tmp_path, pods)),
        "--observer-listen",
        f"127.0.0.1:{grpc_port}",
        "--node-name",
        "node-a",
    )
    try:
        source = HubbleSource(
            f"127.0.0.1:{grpc_port}", since="2000-01-01T00:00:00Z", log=lambda _: None
        )
        emit = Collect()
        thread, stop = run_source(source, emit)
        port = 7000 + os.getpid() % 1000
        exchange(pods, port)
        lines = wait_for_lines(out, lambda ls: len(closes(ls, pods, port)) >= 2)
        fins = closes(lines, pods, port)
        assert len(fins) == 2, lines[-10:]
        by_direction = {f["traffic_direction"]: f for f in fins}
        client_view, server_view = by_direction["EGRESS"], by_direction["INGRESS"]
        for view in (client_view, server_view):
            assert view["source"]["namespace"] == "shop"
            assert "k8s:app=web" in view["source"]["labels"]
            assert view["destination"]["pod_name"] == "redis-0"
            assert view["node_name"] == "node-a"
            stats = view["netwarden"]
            assert abs(stats["bytes_sent"] - UP) <= UP * 0.02, stats
            assert abs(stats["bytes_received"] - DOWN) <= DOWN * 0.02, stats
            assert stats["duration_ns"] > 0
        assert server_view["netwarden"]["netns"] == pods.server_netns
        assert client_view["netwarden"]["netns"] == pods.client_netns
        # the same flows through Hubble's gRPC API, read by netwarden's Hubble source
        got = emit.wait_for(
            len(
                [
                    e
                    for e in lines
                    if e["flow"].get("IP", {}).get("source") in (pods.client_ip, pods.server_ip)
                ]
            )
        )
        stop_source(thread, stop)
        grpc_fins = [
            f
            for f in got
            if f.netwarden is not None and f.netwarden.bytes_sent and f.IP.source == pods.client_ip
        ]
        assert len(grpc_fins) >= 2
        # and into windows: each stand-in pod has its own identity and byte features
        reader = FlowReader(flow_type=CompactFlow)
        builder = WindowBuilder()
        builder.add(reader.decode_lines(out.read_bytes().splitlines(), 1, str(out)))
        windows = {w.identity: w.features() for w in builder.flush()}
        assert windows["shop/web"]["egress_bytes_sent"] >= UP * 0.98
        assert windows["db/redis"]["ingress_bytes_received"] >= UP * 0.98
        assert windows["shop/web"]["egress_new_conns"] >= 1
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0, log.read_text()
    assert "kernel events" in log.read_text()


@pytest.mark.privileged
@pytest.mark.slow
def test_service_with_the_ebpf_source(tmp_path: Path, pods: Pods) -> None:
    from netwarden.bpf.cgroups import find_cgroup2_mount
    from netwarden.config import ServiceConfig
    from netwarden.service import build_service

    cgroup_root = find_cgroup2_mount()
    config = ServiceConfig(
        data_dir=tmp_path / "data",
        source={"spec": "ebpf"},
        ebpf={
            "identity_map": identity_map(tmp_path, pods),
            "kubernetes": "off",
            "node_name": "node-b",
            "udp_peers": False,
            "cgroup_root": cgroup_root,
        },
        models={"dir": tmp_path / "models", "bootstrap": False},
        windows={"idle_close": 0.5},
    )
    service, _ = build_service(config, Console(quiet=True))
    assert service.source.kind == "ebpf"
    assert service.source.options.cgroup_root == cgroup_root
    service.start()
    try:
        deadline = time.monotonic() + 60
        while not service.source.status().up:
            assert time.monotonic() < deadline, service.source.status()
            time.sleep(0.2)
        assert not service.source.agent.probes.udp_peer_hooks  # the section's udp_peers: false
        port = 8000 + os.getpid() % 1000
        exchange(pods, port)
        deadline = time.monotonic() + 30
        while True:
            flows = [
                f
                for f in service.recent_flows() or []
                if f.IP is not None
                and f.IP.source == pods.client_ip
                and f.netwarden is not None
                and f.netwarden.bytes_sent
            ]
            if len(flows) >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert len(flows) >= 2
        assert {f.source.namespace for f in flows} == {"shop"}
    finally:
        service.shutdown()
        service.store.close()


def test_without_root_the_agent_says_what_is_missing(tmp_path: Path) -> None:
    """As an unprivileged user: one line naming the problem, exit status 2, no traceback."""
    if os.geteuid() != 0:
        cmd = [sys.executable, "-m", "netwarden", "agent", "--kubernetes", "off"]
    else:
        setpriv = "/usr/bin/setpriv"
        if not os.path.exists(setpriv):
            pytest.fail("setpriv (util-linux) is needed to drop root for this test")
        cmd = [
            setpriv,
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            sys.executable,
            "-m",
            "netwarden",
            "agent",
            "--kubernetes",
            "off",
        ]
    result = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HOME": str(tmp_path)},
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "root" in result.stderr.lower() or "cap_bpf" in result.stderr.lower(), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr

"""netwarden's Hubble source reading netwarden's Observer server, over real gRPC on loopback.

The server is the `netwarden observer` command, run as a user runs it, replaying the real
Hubble samples in shared/data/hubble from its standard input at a set rate; the test kills it
mid-stream and starts it again, and the client must deliver every flow exactly once.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import msgspec
import orjson
import pytest
import trustme

from netwarden.hubble import observer_pb2
from netwarden.ingest.compact import CompactFlow
from netwarden.ingest.reader import FlowReader
from netwarden.ingest.sources.hubble import HubbleSource
from tests.servers import free_port
from tests.test_hubble_proto import _normalised, sample_files
from tests.test_hubble_source import Collect, run_source, running, stop_source

OLD = "2000-01-01T00:00:00Z"  # since: everything the server holds


def sample_lines() -> list[bytes]:
    """Every real sample flow line, in event-time order (as a Hubble server sends them)."""
    lines = [
        line for path in sample_files() for line in path.read_bytes().splitlines() if line.strip()
    ]
    return sorted(lines, key=lambda line: orjson.loads(line)["flow"]["time"])


def expected(lines: list[bytes]) -> Counter[bytes]:
    flows = FlowReader(flow_type=CompactFlow).decode_lines(lines, 1, "samples")
    return Counter(_key(f) for f in flows)


def _key(flow: CompactFlow) -> bytes:
    return msgspec.json.encode(_normalised(flow))


class Observer:
    """`netwarden observer -` on a fixed loopback port, fed lines on its standard input."""

    def __init__(self, tmp: Path, port: int, *extra: str, rate: float = 0) -> None:
        self.port = port
        self.log = open(tmp / f"observer-{port}-{time.monotonic_ns()}.log", "wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "netwarden",
                "observer",
                "-",
                "--listen",
                f"127.0.0.1:{port}",
                "--rate",
                str(rate),
                *extra,
            ],
            stdin=subprocess.PIPE,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.writer: threading.Thread | None = None

    def wait_ready(
        self,
        channel_credentials: grpc.ChannelCredentials | None = None,
        server_name: str | None = None,
        timeout: float = 30,
    ) -> None:
        deadline = time.monotonic() + timeout
        target = f"127.0.0.1:{self.port}"
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output()
            if channel_credentials is None:
                channel = grpc.insecure_channel(target)
            else:
                channel = grpc.secure_channel(
                    target,
                    channel_credentials,
                    options=[("grpc.ssl_target_name_override", server_name)],
                )
            try:
                channel.unary_unary(
                    "/observer.Observer/ServerStatus",
                    request_serializer=None,
                    response_deserializer=None,
                )(observer_pb2.ServerStatusRequest().SerializeToString(), timeout=1)
                return
            except grpc.RpcError:
                time.sleep(0.1)
            finally:
                channel.close()
        raise AssertionError(f"observer did not answer:\n{self.output()}")

    def feed(self, lines: list[bytes]) -> None:
        """Write ``lines`` to its standard input from a thread (the replay paces the reading)."""

        def write() -> None:
            assert self.proc.stdin is not None
            try:
                for line in lines:
                    self.proc.stdin.write(line + b"\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, ValueError):
                pass  # killed while feeding

        self.writer = threading.Thread(target=write, daemon=True)
        self.writer.start()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-3000:]


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def observers(tmp_path: Path) -> Iterator[list[Observer]]:
    started: list[Observer] = []
    yield started
    for observer in started:
        observer.stop()


@pytest.mark.slow
def test_server_killed_and_restarted_mid_stream_loses_nothing_and_doubles_nothing(
    tmp_path: Path, observers: list[Observer]
) -> None:
    lines = sample_lines()
    want = expected(lines)
    total = sum(want.values())
    port = free_port()
    first = Observer(tmp_path, port, rate=800)
    observers.append(first)
    first.wait_ready()
    first.feed(lines)
    logs: list[str] = []
    source = HubbleSource(
        f"127.0.0.1:{port}",
        since=OLD,
        backoff_initial=0.1,
        backoff_max=0.5,
        resume_overlap=2.0,
        log=logs.append,
    )
    with running(source) as emit:
        emit.wait_for(total // 3)
        first.kill()  # mid-stream, no goodbye
        got_before = len(emit.flows)
        assert got_before < total
        second = Observer(tmp_path, port, rate=800)  # same address, replays from the start
        observers.append(second)
        second.wait_ready()
        second.feed(lines)
        emit.wait_for(total, timeout=60)
        time.sleep(1.0)  # anything doubled would arrive now
    got = Counter(_key(f) for f in emit.flows)
    assert len(emit.flows) == total, (len(emit.flows), total, "\n".join(logs[-5:]))
    assert got == want
    assert source.hubble.reconnects >= 1 and source.hubble.duplicates > 0
    assert source.stats.errors == {}
    assert any("reconnecting in" in line for line in logs)
    # the server restarted, but its buffer reaches back (it replays from the start): no flow
    # was lost, and the log must not say otherwise
    assert source.hubble.server_restarts >= 1
    assert source.hubble.gaps == 0
    assert not any("are lost" in line for line in logs), logs


@pytest.mark.slow
def test_a_client_slower_than_the_stream_is_told_what_it_lost(
    tmp_path: Path, observers: list[Observer]
) -> None:
    """The server keeps a small ring and the client reads slowly: Hubble's answer is
    lost_events for what the ring overwrote; delivered + reported lost = everything."""
    lines = sample_lines() * 5  # more than gRPC's transport windows can hold in flight
    total = len(lines)
    port = free_port()
    server = Observer(tmp_path, port, "--max-flows", "64")
    observers.append(server)
    server.wait_ready()
    source = HubbleSource(
        f"127.0.0.1:{port}", since=OLD, batch_lines=8, pending_flows=16, log=lambda _: None
    )
    emit = Collect(delay=0.01)  # about 800 flows/s: far slower than the replay
    thread, stop = run_source(source, emit)
    try:
        wait_until(lambda: source.hubble.connected, 10, "the stream")
        time.sleep(0.3)
        server.feed(lines)

        def accounted() -> int:
            return len(emit.flows) + source.stats.events_lost["HUBBLE_RING_BUFFER"]

        wait_until(lambda: accounted() >= total, 90, "every flow delivered or reported lost")
        time.sleep(0.5)
    finally:
        stop_source(thread, stop)
    lost = source.stats.events_lost["HUBBLE_RING_BUFFER"]
    assert lost > 0 and len(emit.flows) > 0
    assert len(emit.flows) + lost == total
    assert source.hubble.max_waiting <= 16  # the client itself never buffered more


def test_our_client_reads_our_server_with_namespace_and_verdict_filters(
    tmp_path: Path, observers: list[Observer]
) -> None:
    lines = sample_lines()
    flows = [orjson.loads(line)["flow"] for line in lines]

    def namespaces(flow: dict) -> tuple[str, str]:
        return (
            flow.get("source", {}).get("namespace", ""),
            flow.get("destination", {}).get("namespace", ""),
        )

    in_ns = sum(1 for f in flows if "kube-system" in namespaces(f))
    redirected = sum(1 for f in flows if f.get("verdict") == "REDIRECTED")
    both = sum(
        1 for f in flows if f.get("verdict") == "REDIRECTED" and "kube-system" in namespaces(f)
    )
    assert 0 < both < in_ns < len(flows) and both < redirected
    port = free_port()
    server = Observer(tmp_path, port)
    observers.append(server)
    server.wait_ready()
    server.feed(lines)
    for options, count in (
        ({"namespaces": ["kube-system"]}, in_ns),
        ({"verdicts": ["REDIRECTED"]}, redirected),
        ({"namespaces": ["kube-system"], "verdicts": ["REDIRECTED"]}, both),
    ):
        source = HubbleSource(f"127.0.0.1:{port}", since=OLD, log=lambda _: None, **options)
        with running(source) as emit:
            emit.wait_for(count)
            time.sleep(0.3)
        assert len(emit.flows) == count, options
        if "namespaces" in options:
            assert all(
                "kube-system" in (f.source.namespace, f.destination.namespace) for f in emit.flows
            )
        if "verdicts" in options:
            assert {f.verdict for f in emit.flows} == {"REDIRECTED"}


def test_tls_between_our_client_and_our_server(tmp_path: Path, observers: list[Observer]) -> None:
    """Server-authenticated TLS, as Relay is often run: the client checks the server's name."""
    ca = trustme.CA()
    name = "ui.hubble-relay.cilium.io"
    cert = ca.issue_cert(name)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "server.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    port = free_port()
    server = Observer(
        tmp_path,
        port,
        "--tls-cert",
        str(tmp_path / "server.pem"),
        "--tls-key",
        str(tmp_path / "server.key"),
    )
    observers.append(server)
    server.wait_ready(grpc.ssl_channel_credentials((tmp_path / "ca.pem").read_bytes()), name)
    server.feed(sample_lines()[:20])
    source = HubbleSource(
        f"127.0.0.1:{port}",
        since=OLD,
        tls_ca=tmp_path / "ca.pem",
        tls_server_name=name,
        log=lambda _: None,
    )
    with running(source) as emit:
        assert len(emit.wait_for(20)) == 20
    # the wrong name in the certificate: refused, never read
    wrong = HubbleSource(
        f"127.0.0.1:{port}",
        since=OLD,
        tls_ca=tmp_path / "ca.pem",
        tls_server_name="other.example",
        backoff_initial=0.05,
        connect_timeout=2,
        log=lambda _: None,
    )
    with running(wrong) as emit:
        wait_until(lambda: wrong.hubble.failures.total() >= 1, 20, "a refused connection")
    assert not emit.flows and wrong.hubble.connects == 0


def test_mutual_tls_between_our_client_and_our_server(
    tmp_path: Path, observers: list[Observer]
) -> None:
    ca = trustme.CA()
    server_cert = ca.issue_cert("kind-worker.default.hubble-grpc.cilium.io")
    client_cert = ca.issue_cert("netwarden.hubble-relay.cilium.io")
    files = {}
    for name, blob in (
        ("ca.pem", ca.cert_pem),
        ("server.pem", server_cert.cert_chain_pems[0]),
        ("server.key", server_cert.private_key_pem),
        ("client.pem", client_cert.cert_chain_pems[0]),
        ("client.key", client_cert.private_key_pem),
    ):
        files[name] = tmp_path / name
        blob.write_to_path(str(files[name]))
    port = free_port()
    server = Observer(
        tmp_path,
        port,
        "--tls-cert",
        str(files["server.pem"]),
        "--tls-key",
        str(files["server.key"]),
        "--tls-client-ca",
        str(files["ca.pem"]),
    )
    observers.append(server)
    credentials = grpc.ssl_channel_credentials(
        files["ca.pem"].read_bytes(),
        files["client.key"].read_bytes(),
        files["client.pem"].read_bytes(),
    )
    name = "kind-worker.default.hubble-grpc.cilium.io"
    server.wait_ready(credentials, name)
    lines = sample_lines()[:50]
    server.feed(lines)
    source = HubbleSource(
        f"127.0.0.1:{port}",
        since=OLD,
        tls_ca=files["ca.pem"],
        tls_cert=files["client.pem"],
        tls_key=files["client.key"],
        tls_server_name=name,
        log=lambda _: None,
    )
    with running(source) as emit:
        assert len(emit.wait_for(50)) == 50
    # without a client certificate the server refuses the handshake: counted, retried
    anonymous = HubbleSource(
        f"127.0.0.1:{port}",
        since=OLD,
        tls_ca=files["ca.pem"],
        tls_server_name=name,
        backoff_initial=0.05,
        connect_timeout=2,
        log=lambda _: None,
    )
    with running(anonymous) as emit:
        wait_until(lambda: anonymous.hubble.failures.total() >= 1, 20, "a refused connection")
    assert not emit.flows and anonymous.hubble.connects == 0

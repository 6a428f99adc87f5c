"""The Hubble gRPC source against real gRPC servers on loopback.

Here a scripted Observer server (a real grpcio server that sends exactly the bytes a test gives
it, malformed ones included); tests/test_hubble_live.py runs the source against netwarden's own
Observer server, killed and restarted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from netwarden.hubble import flow_pb2, observer_pb2, relay_pb2
from netwarden.ingest.sources import open_source
from netwarden.ingest.sources.hubble import HubbleSource

S = 1_000_000_000


def flow_message(
    t_ns: int, uuid: str = "", *, namespace: str = "shop", pod: str = "web-1", port: int = 80
) -> bytes:
    response = observer_pb2.GetFlowsResponse(node_name="kind-worker")
    flow = response.flow
    flow.time.seconds, flow.time.nanos = divmod(t_ns, S)
    response.time.CopyFrom(flow.time)
    flow.uuid = uuid
    flow.verdict = flow_pb2.FORWARDED
    flow.IP.source, flow.IP.destination = "10.0.0.1", "10.0.0.2"
    flow.l4.TCP.destination_port = port
    flow.l4.TCP.source_port = 40000
    flow.l4.TCP.flags.SYN = True
    flow.source.namespace, flow.source.pod_name = namespace, pod
    flow.source.labels.extend(
        [f"k8s:app={pod.split('-')[0]}", f"k8s:io.kubernetes.pod.namespace={namespace}"]
    )
    flow.source.identity = 1234
    flow.destination.namespace, flow.destination.pod_name = namespace, "db-0"
    flow.destination.identity = 5678
    flow.traffic_direction = flow_pb2.EGRESS
    flow.is_reply.value = False
    flow.event_type.type = 4
    flow.Type = flow_pb2.L3_L4
    return response.SerializeToString()


@dataclass
class Session:
    """What one GetFlows call sends: these messages, then end (``then``) or stay open."""

    messages: list[bytes]
    then: grpc.StatusCode | None = None  # end with this status; None: keep the stream open


@dataclass
class ScriptedObserver:
    """A real gRPC server speaking observer.Observer from a script of sessions."""

    sessions: list[Session]
    uptime_ns: int = 3_600 * S
    num_flows: int = 10  # ServerStatus: flows held now, of max_flows
    max_flows: int = 4095
    status_down: frozenset[int] = frozenset()  # ServerStatus calls (0-based) answered UNAVAILABLE
    restarted_at_call: int | None = None  # report uptime since this ServerStatus call came
    status_calls: list[float] = field(default_factory=list)  # monotonic time of each call
    listen: str = "127.0.0.1:0"  # or unix:///path
    requests: list[Any] = field(default_factory=list)
    server: grpc.Server | None = None
    port: int = 0

    def start(self) -> ScriptedObserver:
        def get_flows(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
            self.requests.append(observer_pb2.GetFlowsRequest.FromString(request))
            index = len(self.requests) - 1
            session = self.sessions[min(index, len(self.sessions) - 1)]
            yield from session.messages
            if session.then is not None:
                context.abort(session.then, "scripted end")
            while context.is_active():
                time.sleep(0.02)

        def server_status(request: bytes, context: grpc.ServicerContext) -> bytes:
            call = len(self.status_calls)
            self.status_calls.append(time.monotonic())
            if call in self.status_down:
                context.abort(grpc.StatusCode.UNAVAILABLE, "scripted: not up yet")
            uptime_ns = self.uptime_ns
            if self.restarted_at_call is not None and call > self.restarted_at_call:
                uptime_ns = int((time.monotonic() - self.status_calls[self.restarted_at_call]) * S)
            return observer_pb2.ServerStatusResponse(
                num_flows=self.num_flows,
                max_flows=self.max_flows,
                seen_flows=10,
                uptime_ns=uptime_ns,
                version="scripted 1.0",
                flows_rate=2.5,
            ).SerializeToString()

        handlers = {
            "GetFlows": grpc.unary_stream_rpc_method_handler(get_flows),
            "ServerStatus": grpc.unary_unary_rpc_method_handler(server_status),
        }
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler("observer.Observer", handlers)]
        )
        self.port = self.server.add_insecure_port(self.listen)
        self.server.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(grace=None)


@pytest.fixture
def scripted() -> Iterator[Callable[..., ScriptedObserver]]:
    servers: list[ScriptedObserver] = []

    def make(sessions: list[Session], **kw: Any) -> ScriptedObserver:
        servers.append(ScriptedObserver(sessions, **kw).start())
        return servers[-1]

    yield make
    for server in servers:
        server.stop()


class Collect:
    """An ``emit`` that keeps what it gets; ``wait_for`` n flows."""

    def __init__(self, delay: float = 0.0) -> None:
        self.flows: list[Any] = []
        self.batches = 0
        self.delay = delay
        self.cond = threading.Condition()

    def __call__(self, batch: list[Any]) -> None:
        if self.delay:
            time.sleep(self.delay)
        with self.cond:
            self.flows.extend(batch)
            self.batches += 1
            self.cond.notify_all()

    def wait_for(self, n: int, timeout: float = 20.0) -> list[Any]:
        with self.cond:
            self.cond.wait_for(lambda: len(self.flows) >= n, timeout)
            return list(self.flows)


def run_source(source: HubbleSource, emit: Collect) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=source.run, args=(emit, stop), daemon=True)
    thread.start()
    return thread, stop


def stop_source(thread: threading.Thread, stop: threading.Event) -> None:
    stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive(), "the source did not stop"


@contextmanager
def running(source: HubbleSource, emit: Collect | None = None) -> Iterator[Collect]:
    """The source running in a thread while the block runs; yields what it emits."""
    emit = emit if emit is not None else Collect()
    thread, stop = run_source(source, emit)
    try:
        yield emit
    finally:
        stop_source(thread, stop)


def lost_message(n: int) -> bytes:
    response = observer_pb2.GetFlowsResponse(node_name="kind-worker")
    response.lost_events.source = flow_pb2.PERF_EVENT_RING_BUFFER
    response.lost_events.num_events_lost = n
    return response.SerializeToString()


def node_status_message() -> bytes:
    response = observer_pb2.GetFlowsResponse()
    response.node_status.state_change = relay_pb2.NODE_UNAVAILABLE
    response.node_status.node_names.extend(["kind-worker2"])
    response.node_status.message = "connection refused"
    return response.SerializeToString()


def test_flows_arrive_and_other_events_are_counted_not_dropped(scripted) -> None:
    server = scripted(
        [
            Session(
                [
                    flow_message(10 * S, "a"),
                    b"\xff\xff\xff not protobuf",
                    lost_message(7),
                    node_status_message(),
                    flow_message(11 * S, "b"),
                ]
            )
        ]
    )
    registry = CollectorRegistry()
    logs: list[str] = []
    source = open_source(
        f"hubble:127.0.0.1:{server.port}",
        registry=registry,
        log=logs.append,
        namespaces=["shop"],
        verdicts=["FORWARDED"],
    )
    assert isinstance(source, HubbleSource) and source.kind == "hubble"
    with running(source) as emit:
        flows = emit.wait_for(2)
        assert [f.time.timestamp() for f in flows] == [10.0, 11.0]
        assert flows[0].verdict == "FORWARDED" and flows[0].l4.TCP.destination_port == 80
        assert flows[0].source.pod_name == "web-1" and flows[0].is_reply is False
        assert source.status().up and source.status().flows == 2
    stats = source.stats
    assert stats.flows == 2 and stats.errors == {"bad_message": 1}
    assert stats.examples[0].reason == "bad_message" and stats.examples[0].line == 2
    assert stats.events_lost == {"PERF_EVENT_RING_BUFFER": 7} and stats.node_status_lines == 1
    assert source.hubble.node_status == {"NODE_UNAVAILABLE": 1}
    # the request is the one `hubble observe --follow -n shop --verdict FORWARDED` sends
    request = server.requests[0]
    assert request.follow and not request.HasField("since")
    assert [list(f.source_pod) or list(f.destination_pod) for f in request.whitelist] == [
        ["shop/"],
        ["shop/"],
    ]
    assert all(list(f.verdict) == [flow_pb2.FORWARDED] for f in request.whitelist)
    text = "\n".join(logs)
    assert "server scripted 1.0" in text and "2.5 flows/s" in text
    assert "lost 7 events (PERF_EVENT_RING_BUFFER, node kind-worker)" in text
    assert "NODE_UNAVAILABLE kind-worker2: connection refused" in text
    metrics = generate_latest(registry).decode()
    assert 'netwarden_hubble_node_status_events_total{server="127.0.0.1:' in metrics
    assert "netwarden_hubble_connected" in metrics
    assert source.status().up is False and source.status().error == "stopped"


def test_reconnect_resumes_from_the_last_flow_without_duplicates(scripted) -> None:
    first = [flow_message(t * S, f"u{t}") for t in (100, 101, 102, 103)]
    # after the failure the server sends everything since the resume point, then more
    again = [flow_message(t * S, f"u{t}") for t in (101, 102, 103, 104, 105)]
    server = scripted([Session(first, then=grpc.StatusCode.UNAVAILABLE), Session(again)])
    logs: list[str] = []
    source = HubbleSource(
        f"127.0.0.1:{server.port}",
        backoff_initial=0.05,
        backoff_max=0.1,
        resume_overlap=2.0,
        log=logs.append,
        registry=CollectorRegistry(),
    )
    with running(source) as emit:
        flows = emit.wait_for(6)
        time.sleep(0.2)  # nothing more may come
    assert [int(f.time.timestamp()) for f in emit.flows] == [100, 101, 102, 103, 104, 105]
    assert len(flows) == 6 and source.hubble.duplicates == 3
    assert source.hubble.reconnects == 1 and source.hubble.failures == {"UNAVAILABLE": 1}
    resume = server.requests[1].since
    assert (resume.seconds, resume.nanos) == (101, 0)  # newest (103 s) minus 2 s overlap
    assert any("reconnecting in" in line for line in logs)


def test_flows_without_uuid_are_told_apart_by_content(scripted) -> None:
    """Older Cilium sends no uuid: identical flows count twice, re-sent ones once."""
    twin = flow_message(50 * S)
    other = flow_message(50 * S, port=443)
    server = scripted(
        [
            Session([twin, twin, other], then=grpc.StatusCode.UNAVAILABLE),
            Session([twin, twin, other, flow_message(51 * S)]),
        ]
    )
    source = HubbleSource(f"127.0.0.1:{server.port}", backoff_initial=0.05, log=lambda _: None)
    with running(source) as emit:
        emit.wait_for(4)
        time.sleep(0.2)
    ports = sorted(f.l4.TCP.destination_port for f in emit.flows)
    assert ports == [80, 80, 80, 443] and source.hubble.duplicates == 3


def test_configured_since_is_sent_on_the_first_connect(scripted) -> None:
    server = scripted([Session([flow_message(7 * S, "x")])])
    source = HubbleSource(
        f"127.0.0.1:{server.port}", since="2026-11-26T10:00:00.5Z", log=lambda _: None
    )
    with running(source) as emit:
        emit.wait_for(1)
    since = server.requests[0].since
    assert (since.seconds, since.nanos) == (1_795_687_200, 500_000_000)


def test_a_server_that_restarted_while_away_is_reported(scripted) -> None:
    server = scripted(
        [
            Session([flow_message(1 * S, "a")], then=grpc.StatusCode.UNAVAILABLE),
            Session([flow_message(2 * S, "b")]),
        ],
        uptime_ns=1,
    )
    logs: list[str] = []
    source = HubbleSource(f"127.0.0.1:{server.port}", backoff_initial=0.05, log=logs.append)
    with running(source) as emit:
        emit.wait_for(2)
    assert source.hubble.server_restarts == 1
    assert any("restarted while we were away" in line for line in logs)


@pytest.mark.parametrize(
    ("case", "status", "resent", "lost"),
    [
        # a restarted Relay (or a server replaying its capture) still holds what we had:
        # it re-sends flows since the resume point, so nothing is lost
        ("restart, buffer reaches back", {"uptime_ns": 1}, (1, 2, 3), False),
        ("restart, buffer starts later", {"uptime_ns": 1}, (5, 6), True),
        ("full ring overwrote the gap", {"num_flows": 4095}, (5, 6), True),
        ("full ring still holds ours", {"num_flows": 4095}, (2, 3), False),
        # ring not full and no restart: nothing was overwritten, the quiet gap had no flows
        ("ring not full, no restart", {}, (5, 6), False),
    ],
)
def test_gap_is_reported_only_when_the_buffer_does_not_reach_back(
    scripted, case: str, status: dict[str, int], resent: tuple[int, ...], lost: bool
) -> None:
    server = scripted(
        [
            Session(
                [flow_message(t * S, f"u{t}") for t in (1, 2)], then=grpc.StatusCode.UNAVAILABLE
            ),
            Session([flow_message(t * S, f"u{t}") for t in resent]),
        ],
        **status,
    )
    logs: list[str] = []
    source = HubbleSource(
        f"127.0.0.1:{server.port}", backoff_initial=0.05, resume_overlap=2.0, log=logs.append
    )
    delivered = sorted({1, 2, *resent})
    with running(source) as emit:
        emit.wait_for(len(delivered))
        time.sleep(0.1)
    assert [int(f.time.timestamp()) for f in emit.flows] == delivered, case
    gap_lines = [line for line in logs if "flows of that gap" in line]
    assert source.hubble.gaps == len(gap_lines) == (1 if lost else 0), (case, logs)
    if lost:
        assert "after the newest flow we had (1970-01-01T00:00:02.000+00:00)" in gap_lines[0]
        assert "starts at 1970-01-01T00:00:05.000+00:00" in gap_lines[0]
    assert source.hubble.server_restarts == (1 if "uptime_ns" in status else 0)


def test_restart_counts_from_the_break_not_from_the_last_failed_attempt(scripted) -> None:
    """The server came back between two failed reconnect attempts: its uptime is longer than
    the time since the last attempt but shorter than our absence, so it did restart."""
    server = scripted(
        [
            Session([flow_message(1 * S, "a")], then=grpc.StatusCode.UNAVAILABLE),
            Session([flow_message(5 * S, "b")]),
        ],
        status_down=frozenset({1, 2}),  # two attempts find it down
        restarted_at_call=1,  # it "started" at the first of them
    )
    logs: list[str] = []
    source = HubbleSource(
        f"127.0.0.1:{server.port}", backoff_initial=0.2, backoff_max=0.4, log=logs.append
    )
    with running(source) as emit:
        emit.wait_for(2)
    assert len(server.status_calls) == 4 and source.hubble.failures["UNAVAILABLE"] == 3
    assert source.hubble.server_restarts == 1, logs
    assert source.hubble.gaps == 1  # and its buffer starts after our newest flow


def test_unix_socket_as_on_a_cilium_node(scripted, tmp_path) -> None:
    sock = tmp_path / "hubble.sock"
    scripted([Session([flow_message(3 * S, "s")])], listen=f"unix://{sock}")
    source = open_source(f"hubble:{sock}", log=lambda _: None)
    assert source.target == f"unix://{sock}"
    with running(source) as emit:
        assert len(emit.wait_for(1)) == 1


def test_unreachable_server_is_retried_with_backoff_and_reported() -> None:
    logs: list[str] = []
    source = HubbleSource(
        "unix:///nonexistent/hubble.sock",
        backoff_initial=0.02,
        backoff_max=0.05,
        connect_timeout=0.5,
        log=logs.append,
    )
    emit = Collect()
    thread, stop = run_source(source, emit)
    deadline = time.monotonic() + 10
    while source.hubble.failures.total() < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    status = source.status()
    stop_source(thread, stop)
    assert source.hubble.failures.total() >= 3 and not emit.flows
    assert status.up is False and "reconnecting in" in (status.error or "")
    assert source.stats.flows == 0


def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    source = HubbleSource(
        "127.0.0.1:4245", backoff_initial=0.5, backoff_max=8.0, log=lambda _: None
    )
    for attempt, ceiling in ((0, 0.5), (1, 1.0), (3, 4.0), (4, 8.0), (10, 8.0)):
        delays = [source._backoff(attempt) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > ceiling / 10  # jittered, not fixed


def test_bad_options_fail_at_once_with_a_clear_message(tmp_path) -> None:
    with pytest.raises(ValueError, match="tls_ca .*cannot read"):
        HubbleSource("relay:4245", tls_ca=tmp_path / "missing.pem")
    with pytest.raises(ValueError, match="needs both tls_cert and tls_key"):
        (tmp_path / "c.pem").write_text("x")
        HubbleSource("relay:4245", tls_cert=tmp_path / "c.pem")
    with pytest.raises(ValueError, match="unknown verdict"):
        HubbleSource("relay:4245", verdicts=["DENY"])
    with pytest.raises(ValueError, match="no option follow"):
        open_source("hubble", follow=True)

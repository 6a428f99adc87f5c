"""Kernel events to Hubble flows: the shapes, and what the window builder makes of them."""

from __future__ import annotations

from dataclasses import dataclass, replace

import orjson
import pytest
from google.protobuf import json_format

from netwarden.bpf.events import (
    Conn,
    ConnectionClosed,
    ConnectionOpened,
    PacketDropped,
    TcpReset,
    UdpTraffic,
)
from netwarden.bpf.flows import FlowMapper
from netwarden.hubble import observer_pb2
from netwarden.ingest.compact import CompactFlow
from netwarden.ingest.reader import FlowReader
from netwarden.ingest.windows import WindowBuilder

T = 1_795_687_200 * 1_000_000_000  # 2026-11-26T10:00:00Z
NS_CLIENT, NS_SERVER = 4026532001, 4026532002
CLIENT_IP, SERVER_IP = "10.200.0.1", "10.200.0.2"


@dataclass(frozen=True)
class Info:
    identity: int = 0
    namespace: str = ""
    pod_name: str = ""
    labels: tuple[str, ...] = ()
    workloads: tuple[tuple[str, str], ...] = ()


def pod(ns: str, app: str) -> Info:
    return Info(
        0,
        ns,
        f"{app}-0",
        (f"k8s:app={app}", f"k8s:io.kubernetes.pod.namespace={ns}"),
        ((app, "Deployment"),),
    )


class Resolver:
    """Two stand-in pods by network namespace and address; everything else is world."""

    pods = {NS_CLIENT: pod("shop", "web"), NS_SERVER: pod("db", "redis")}
    by_ip = {CLIENT_IP: pods[NS_CLIENT], SERVER_IP: pods[NS_SERVER]}

    def local(self, netns: int, cgroup_id: int, pid: int) -> Info:
        return self.pods[netns]

    def remote(self, ip: str) -> Info:
        return self.by_ip.get(ip, Info(2, labels=("reserved:world",)))


def _conn(local_is_client: bool, protocol: str = "TCP") -> Conn:
    if local_is_client:
        return Conn(protocol, 4, CLIENT_IP, 41000, SERVER_IP, 6379)
    return Conn(protocol, 4, SERVER_IP, 6379, CLIENT_IP, 41000)


def connection_events() -> list:
    """One TCP connection seen at both ends: opened and closed, 100,000 bytes up, 5,000 down."""
    return [
        ConnectionOpened(T, NS_CLIENT, 11, 100, "client", _conn(True), "client"),
        ConnectionOpened(T + 1000, NS_SERVER, 0, 0, "", _conn(False), "server"),
        ConnectionClosed(
            T + 5_000_000,
            NS_CLIENT,
            11,
            100,
            "client",
            _conn(True),
            "client",
            True,
            5_000_000,
            100_000,
            5_000,
            2,
            False,
        ),
        ConnectionClosed(
            T + 5_001_000,
            NS_SERVER,
            12,
            200,
            "redis",
            _conn(False),
            "server",
            True,
            5_000_000,
            5_000,
            100_000,
            0,
            False,
        ),
    ]


def decode(envelopes: list[dict]) -> list[CompactFlow]:
    reader = FlowReader(flow_type=CompactFlow)
    flows = reader.decode_lines([orjson.dumps(e) for e in envelopes], 1, "agent")
    assert reader.stats.error_lines == 0, reader.stats.examples
    return flows


def test_a_connection_at_both_ends_counts_once_per_end_with_its_bytes() -> None:
    mapper = FlowMapper(Resolver(), "node-1")
    envelopes = [f for e in connection_events() for f in mapper.flows(e)]
    assert len(envelopes) == 6  # SYN + SYN-ACK at each end, FIN at each end
    syn = envelopes[0]["flow"]
    assert syn["IP"] == {"source": CLIENT_IP, "destination": SERVER_IP, "ipVersion": "IPv4"}
    assert syn["l4"] == {
        "TCP": {"source_port": 41000, "destination_port": 6379, "flags": {"SYN": True}}
    }
    assert syn["traffic_direction"] == "EGRESS" and syn["source"]["namespace"] == "shop"
    assert syn["time"] == "2026-11-26T10:00:00.000000000Z" and syn["node_name"] == "node-1"
    server_fin = envelopes[5]["flow"]
    assert server_fin["traffic_direction"] == "INGRESS"
    assert server_fin["IP"]["source"] == CLIENT_IP  # initiator -> responder, at either end
    assert server_fin["netwarden"]["bytes_sent"] == 100_000  # client to server
    assert server_fin["netwarden"]["bytes_received"] == 5_000
    assert server_fin["netwarden"]["comm"] == "redis"

    builder = WindowBuilder()
    builder.add(decode(envelopes))
    windows = {w.identity: w.features() for w in builder.flush()}
    web, redis = windows["shop/web"], windows["db/redis"]
    assert web["egress_new_conns"] == 1 and web["egress_unanswered_syns"] == 0
    assert (web["egress_bytes_sent"], web["egress_bytes_received"]) == (100_000, 5_000)
    assert (redis["ingress_bytes_sent"], redis["ingress_bytes_received"]) == (5_000, 100_000)
    assert redis["ingress_new_conns"] == 1 and web["ingress_flows"] == 0


def test_refused_connect_reset_and_drop() -> None:
    mapper = FlowMapper(Resolver(), "node-1")
    refused = ConnectionClosed(
        T, NS_CLIENT, 11, 100, "curl", _conn(True), "client", False, 1_000_000, 0, 0, 0, True
    )
    reset_in = TcpReset(T + 10, NS_CLIENT, 11, 100, "curl", _conn(True), "received")
    reset_out = TcpReset(T + 5, NS_SERVER, 0, 0, "", _conn(False), "sent")
    drop = PacketDropped(
        T + 20,
        NS_SERVER,
        "NETFILTER_DROP",
        6,
        Conn("TCP", 4, CLIENT_IP, 41001, SERVER_IP, 9999),
        6,
        "nf_hook_slow",
    )
    envelopes = [f for e in (refused, reset_out, reset_in, drop) for f in mapper.flows(e)]
    flows = decode(envelopes)
    attempt, rst_sent, rst_received, dropped = flows
    assert attempt.l4.TCP.flags.SYN and not attempt.l4.TCP.flags.ACK
    assert rst_sent.is_reply and rst_sent.IP.source == SERVER_IP  # the kernel answered the SYN
    assert rst_received.is_reply and rst_received.IP.destination == CLIENT_IP
    assert dropped.verdict == "DROPPED" and dropped.netwarden.kernel_drop_reason == "NETFILTER_DROP"
    assert envelopes[3]["flow"]["netwarden"]["kernel_drop_location"] == "nf_hook_slow"
    builder = WindowBuilder()
    builder.add(flows)
    windows = {w.identity: w for w in builder.flush()}
    web = windows["shop/web"].features()
    assert web["egress_new_conns"] == 1 and web["egress_unanswered_syns"] == 1
    assert web["egress_tcp_resets"] >= 1 and web["egress_drops"] == 1
    assert dict(windows["db/redis"].server.drop_reasons) == {"NETFILTER_DROP": 1}


def test_udp_orientation_and_world_peers() -> None:
    mapper = FlowMapper(Resolver(), "node-1")
    dns = UdpTraffic(
        T,
        T - 1000,
        NS_CLIENT,
        11,
        100,
        "web",
        Conn("UDP", 4, CLIENT_IP, 53000, "8.8.8.8", 53),
        120,
        480,
        2,
        2,
        True,
    )
    (envelope,) = mapper.flows(dns)
    body = envelope["flow"]
    assert body["l4"] == {"UDP": {"source_port": 53000, "destination_port": 53}}
    assert body["destination"] == {"identity": 2, "labels": ["reserved:world"]}
    assert body["netwarden"]["packets_sent"] == 2 and body["netwarden"]["bytes_received"] == 480
    served = UdpTraffic(
        T,
        T,
        NS_SERVER,
        12,
        200,
        "dnsd",
        Conn("UDP", 4, SERVER_IP, 53, CLIENT_IP, 53000),
        480,
        120,
        2,
        2,
        False,
    )
    (envelope,) = mapper.flows(served)
    assert envelope["flow"]["traffic_direction"] == "INGRESS"
    assert envelope["flow"]["netwarden"]["bytes_sent"] == 120  # client -> server


def test_agent_flows_are_valid_hubble_protobuf_with_our_field() -> None:
    """Hubble's own JSON parser (protojson rules, as json_format applies them) reads them, and
    the byte counts survive into protobuf and back into the pipeline's record."""
    mapper = FlowMapper(Resolver(), "node-1")
    from netwarden.ingest.protoflow import compact_flow

    for envelope in (f for e in connection_events() for f in mapper.flows(e)):
        message = json_format.Parse(orjson.dumps(envelope), observer_pb2.GetFlowsResponse())
        record = compact_flow(message.flow)
        (from_json,) = decode([envelope])
        assert record.netwarden == from_json.netwarden
        assert record.IP == from_json.IP and record.traffic_direction == from_json.traffic_direction


class Awkward(Resolver):
    """Names that JSON and %-formatting must both survive."""

    def local(self, netns: int, cgroup_id: int, pid: int) -> Info:
        return Info(0, "we%ird", 'p"o\\d%s', ('k8s:a="%d\\n"', "k8s:ünï=☃"), (("w%", "Job"),))


def test_lines_are_the_flows_as_json_whatever_the_names_hold() -> None:
    mapper = FlowMapper(Awkward(), 'node-"%s')
    for event in connection_events():
        lines = mapper.lines(event)
        assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for line in lines)
        envelopes = [orjson.loads(line) for line in lines]
        body = envelopes[0]["flow"]
        local = body["source"] if body["traffic_direction"] == "EGRESS" else body["destination"]
        assert local == {
            "namespace": "we%ird",
            "labels": ['k8s:a="%d\\n"', "k8s:ünï=☃"],
            "pod_name": 'p"o\\d%s',
            "workloads": [{"name": "w%", "kind": "Job"}],
        }
        assert body["node_name"] == envelopes[0]["node_name"] == 'node-"%s'
    again = [f for e in connection_events() for f in FlowMapper(Awkward(), "n").flows(e)]
    assert len({e["flow"]["uuid"] for e in again}) == len(again) == 6


def test_an_endpoint_that_changes_is_picked_up_the_next_second() -> None:
    """Flows of one kind between the same ends share a template; it is re-made every second
    of event time, with the endpoints."""
    resolver = Resolver()
    mapper = FlowMapper(resolver, "n")
    close = connection_events()[2]
    assert mapper.flows(close)[0]["flow"]["source"]["namespace"] == "shop"
    resolver.pods = {**Resolver.pods, NS_CLIENT: pod("shop", "web-v2")}
    same_second = mapper.flows(close)[0]["flow"]
    assert same_second["source"]["pod_name"] == "web-0"  # cached within the second
    later = replace(close, time_ns=close.time_ns + 1_000_000_000)
    assert mapper.flows(later)[0]["flow"]["source"]["pod_name"] == "web-v2-0"


def test_a_name_that_looks_like_a_template_hole_is_refused_not_misfilled() -> None:
    class Sneaky(Resolver):
        def remote(self, ip: str) -> Info:
            return Info(2, labels=("\x00sport",))

    mapper = FlowMapper(Sneaky(), "n")
    with pytest.raises(ValueError, match="holes"):
        mapper.lines(connection_events()[2])

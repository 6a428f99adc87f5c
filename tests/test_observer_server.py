"""The Hubble-compatible Observer server: real gRPC on loopback and unix sockets, real captures.

Expected results are computed from the JSON files directly (json.loads, not the server's
parser), so the server is checked against the file, not against itself.
"""

from __future__ import annotations

import gzip
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf import field_mask_pb2, json_format, timestamp_pb2

from netwarden.hubble import flow_pb2, observer_pb2, observer_pb2_grpc
from netwarden.observer.filters import FilterError, compile_filters
from netwarden.observer.replay import Replay, decode_line
from netwarden.observer.ring import FlowRing
from netwarden.observer.server import (
    ObserverServer,
    ObserverServerError,
    TLSFiles,
    parse_listen,
)
from tests.conftest import DATA

OTEL = DATA / "hubble" / "hubble-otel"
TCP_400 = OTEL / "basic-sample-400-tcp-flows.json"
DOCS_DROPS = DATA / "hubble" / "cilium-docs" / "export-rst-exporter-fieldmask-drops.jsonl"

Request = observer_pb2.GetFlowsRequest
Filter = flow_pb2.FlowFilter


def _require(*paths: Path) -> None:
    missing = [p for p in paths if not p.exists()]
    if missing:
        pytest.skip(f"reference samples not found: {missing[0]}")


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _all_samples() -> list[Path]:
    paths = [*sorted(OTEL.glob("*.json")), DOCS_DROPS]
    _require(*paths)
    return paths


def _replayed(*paths: Path, capacity: int = 4095) -> FlowRing:
    ring = FlowRing(capacity, node_name="test-node")
    for path in paths:
        stats = Replay(ring, path).run()
        assert stats.error_lines == 0, stats.summary_lines()
    return ring


def _flow(obj: dict) -> flow_pb2.Flow:
    """The flow of a JSON line, parsed by protobuf (for message equality with served flows)."""
    return json_format.ParseDict(obj["flow"], flow_pb2.Flow(), ignore_unknown_fields=True)


def _ts(text: str) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromJsonString(text)
    return ts


@pytest.fixture
def serve():
    """serve(ring, **server options) -> (stub, server), on 127.0.0.1 and a free port."""
    servers: list[ObserverServer] = []
    channels: list[grpc.Channel] = []

    def start(ring: FlowRing, listen: str = "127.0.0.1:0", **options):
        server = ObserverServer(ring, listen, **options)
        address = server.start()
        servers.append(server)
        channel = grpc.insecure_channel(address)
        channels.append(channel)
        return observer_pb2_grpc.ObserverStub(channel), server

    yield start
    for channel in channels:
        channel.close()
    for server in servers:
        server.stop(grace=0)


def _flows(stub, request: Request) -> list[flow_pb2.Flow]:
    responses = list(stub.GetFlows(request, timeout=20))
    assert all(r.HasField("flow") for r in responses)
    return [r.flow for r in responses]


# -- number / first / since / until -----------------------------------------------------------------
def test_number_first_since_until_match_the_file(serve) -> None:
    _require(TCP_400)
    lines = _lines(TCP_400)
    expected = [_flow(obj) for obj in lines]
    stub, _ = serve(_replayed(TCP_400))

    assert _flows(stub, Request(number=10)) == expected[-10:]
    assert _flows(stub, Request(number=7, first=True)) == expected[:7]
    assert _flows(stub, Request()) == expected  # number 0, not following: everything held
    assert _flows(stub, Request(number=10_000)) == expected

    since, until = lines[100]["flow"]["time"], lines[199]["flow"]["time"]
    in_range = [
        f for obj, f in zip(lines, expected) if since <= obj["flow"]["time"] <= until
    ]  # RFC3339 nanos compare as text
    assert in_range == expected[100:200]  # both ends inclusive
    assert _flows(stub, Request(since=_ts(since), until=_ts(until))) == in_range
    assert _flows(stub, Request(since=_ts(since))) == expected[100:]
    assert _flows(stub, Request(until=_ts(until))) == expected[:200]
    # as Hubble: since sets where reading starts, number limits how many follow
    assert _flows(stub, Request(since=_ts(since), number=5)) == expected[100:105]


def test_until_stops_at_the_first_later_flow_as_hubble(serve) -> None:
    """Hubble's reader ends the stream at the first flow later than ``until``, following or not
    and matching the filters or not; flows held after it are not served even if older."""
    ring = FlowRing(64, node_name="n")
    order = [0, 1, 2, 6, 3, 4]  # flow 6 arrived before 3 and 4 (a Relay merging nodes)
    ring.write_many(_flow_response(i) for i in order)
    stub, _ = serve(ring)
    until = _flow_response(4).flow.time
    assert [_index(r) for r in stub.GetFlows(Request(until=until), timeout=20)] == [0, 1, 2]
    assert [_index(r) for r in stub.GetFlows(Request(number=2, until=until), timeout=20)] == [
        1,
        2,
    ]
    # the later flow ends the stream even when the filters would not have served it
    shop = Request(until=until, whitelist=[Filter(source_pod=["shop/"])])
    assert [_index(r) for r in stub.GetFlows(shop, timeout=20)] == [1]
    call = stub.GetFlows(Request(number=10, follow=True, until=until), timeout=20)
    assert [_index(r) for r in call] == [0, 1, 2]  # a follower ends there too


def test_field_mask_response_time_and_node_name_come_from_the_masked_flow(serve) -> None:
    ring = FlowRing(8, node_name="n")
    response = _flow_response(3)
    response.flow.node_name = "kind-worker"
    ring.write(response)
    stub, _ = serve(ring)

    def masked(*paths: str) -> observer_pb2.GetFlowsResponse:
        mask = field_mask_pb2.FieldMask(paths=list(paths))
        (only,) = list(stub.GetFlows(Request(field_mask=mask), timeout=20))
        return only

    bare = masked("verdict")
    assert bare.flow.verdict == flow_pb2.FORWARDED
    assert not bare.HasField("time") and bare.node_name == ""  # as Hubble: not asked for
    full = masked("verdict", "time", "node_name")
    assert full.time == full.flow.time == response.flow.time
    assert full.node_name == full.flow.node_name == "kind-worker"


def test_responses_carry_node_name_and_time_like_hubble(serve) -> None:
    _require(TCP_400)
    stub, _ = serve(_replayed(TCP_400))
    for response in stub.GetFlows(Request(number=20), timeout=20):
        assert response.node_name == response.flow.node_name == "kind-control-plane"
        assert response.time == response.flow.time and response.time.seconds > 0


def test_bad_requests_are_invalid_argument(serve) -> None:
    stub, _ = serve(FlowRing(16))
    bad = {
        "first cannot be specified with follow": Request(first=True, follow=True),
        "since": Request(since=timestamp_pb2.Timestamp(seconds=0, nanos=2_000_000_000)),
        "field_mask": Request(field_mask=field_mask_pb2.FieldMask(paths=["no_such_field"])),
    }
    for needle, request in bad.items():
        with pytest.raises(grpc.RpcError) as err:
            list(stub.GetFlows(request, timeout=10))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert needle in err.value.details()


def test_field_mask_keeps_only_the_listed_fields(serve) -> None:
    _require(TCP_400)
    stub, _ = serve(_replayed(TCP_400))
    mask = field_mask_pb2.FieldMask(paths=["verdict", "source.identity"])
    flows = _flows(stub, Request(number=3, field_mask=mask))
    expected = [_flow(obj) for obj in _lines(TCP_400)[-3:]]
    assert [(f.verdict, f.source.identity) for f in flows] == [
        (e.verdict, e.source.identity) for e in expected
    ]
    assert all(not f.HasField("IP") and not f.source.labels for f in flows)

    # hubble CLIs up to 1.16 send the mask as experimental.field_mask (field 1, reserved here)
    inner = field_mask_pb2.FieldMask(paths=["verdict"]).SerializeToString()
    experimental = b"\x0a" + _varint(len(inner)) + inner
    legacy = Request.FromString(
        Request(number=3).SerializeToString()
        + _varint(999 << 3 | 2)
        + _varint(len(experimental))
        + experimental
    )
    flows = _flows(stub, legacy)
    assert [f.verdict for f in flows] == [e.verdict for e in expected]
    assert all(not f.HasField("source") for f in flows)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


# -- filters against counts computed from the JSON ------------------------------------------------
def _namespaces(obj: dict) -> tuple[str, str]:
    flow = obj["flow"]
    return (
        flow.get("source", {}).get("namespace", ""),
        flow.get("destination", {}).get("namespace", ""),
    )


@pytest.mark.parametrize("namespace", ["bookinfo", "kube-system", "jaeger"])
def test_namespace_filter_in_hubble_observe_shape(serve, namespace: str) -> None:
    paths = _all_samples()
    objs = [obj for path in paths for obj in _lines(path)]
    expected = sum(1 for obj in objs if namespace in _namespaces(obj))
    assert expected > 0
    stub, _ = serve(_replayed(*paths))
    # exactly what `hubble observe --namespace X` sends
    request = Request(
        whitelist=[Filter(source_pod=[f"{namespace}/"]), Filter(destination_pod=[f"{namespace}/"])]
    )
    flows = _flows(stub, request)
    assert len(flows) == expected
    assert all(namespace in (f.source.namespace, f.destination.namespace) for f in flows)


def test_pod_prefix_filter(serve) -> None:
    _require(TCP_400)
    objs = _lines(TCP_400)
    expected = sum(
        1
        for obj in objs
        if obj["flow"].get("source", {}).get("namespace") == "bookinfo"
        and obj["flow"]["source"].get("pod_name", "").startswith("reviews-")
    )
    assert expected > 0
    stub, _ = serve(_replayed(TCP_400))
    assert (
        len(_flows(stub, Request(whitelist=[Filter(source_pod=["bookinfo/reviews-"])]))) == expected
    )


def test_verdict_filters_and_blacklist(serve) -> None:
    paths = _all_samples()
    objs = [obj for path in paths for obj in _lines(path)]
    verdicts = [obj["flow"].get("verdict", "VERDICT_UNKNOWN") for obj in objs]
    stub, _ = serve(_replayed(*paths))

    dropped = _flows(stub, Request(whitelist=[Filter(verdict=[flow_pb2.DROPPED])]))
    assert len(dropped) == verdicts.count("DROPPED") == 2
    assert {flow_pb2.DropReason.Name(f.drop_reason_desc) for f in dropped} == {
        "INVALID_SOURCE_IP",
        "POLICY_DENIED",
    }

    redirected = _flows(stub, Request(whitelist=[Filter(verdict=[flow_pb2.REDIRECTED])]))
    assert len(redirected) == verdicts.count("REDIRECTED") > 0

    not_forwarded = _flows(stub, Request(blacklist=[Filter(verdict=[flow_pb2.FORWARDED])]))
    assert len(not_forwarded) == len(objs) - verdicts.count("FORWARDED")

    # whitelist minus blacklist: bookinfo flows that are not REDIRECTED
    request = Request(
        whitelist=[Filter(source_pod=["bookinfo/"]), Filter(destination_pod=["bookinfo/"])],
        blacklist=[Filter(verdict=[flow_pb2.REDIRECTED])],
    )
    expected = sum(
        1 for obj, v in zip(objs, verdicts) if "bookinfo" in _namespaces(obj) and v != "REDIRECTED"
    )
    assert len(_flows(stub, request)) == expected
    # within one filter, fields AND: DROPPED *and* destination port 80
    both = _flows(
        stub, Request(whitelist=[Filter(verdict=[flow_pb2.DROPPED], destination_port=["80"])])
    )
    assert [f.l4.TCP.destination_port for f in both] == [80]


def test_unsupported_or_invalid_filters_fail_naming_the_field(serve) -> None:
    ring = FlowRing(16)
    stub, _ = serve(ring)
    unknown = Filter.FromString(
        Filter(verdict=[flow_pb2.DROPPED]).SerializeToString() + bytes([0xC8, 0x03, 0x01])
    )  # field 57 = 1, not in flow.proto
    cases = {
        "http_url": Filter(http_url=["/x"]),
        "destination_cluster_name": Filter(destination_cluster_name=["c1"]),
        "experimental.cel_expression": Filter(
            experimental=Filter.Experimental(cel_expression=["true"])
        ),
        "#57": unknown,
        "source_ip": Filter(source_ip=["10.0.0.0/33"]),
        "destination_port": Filter(destination_port=["http"]),
        "source_pod": Filter(source_pod=[""]),
        "source_label": Filter(source_label=["app in (a"]),
        "protocol": Filter(protocol=["carrier-pigeon"]),
        "node_name": Filter(node_name=["a/b/c"]),
    }
    for field, bad in cases.items():
        for request in (Request(whitelist=[bad]), Request(blacklist=[bad])):
            with pytest.raises(grpc.RpcError) as err:
                list(stub.GetFlows(request, timeout=10))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
            assert field in err.value.details()


# -- filter semantics on single flows (Hubble's rules) ----------------------------------------------
_FLOW = {
    "time": "2026-01-05T00:00:00Z",
    "uuid": "u-1",
    "verdict": "DROPPED",
    "drop_reason_desc": "POLICY_DENIED",
    "node_name": "kind-worker",
    "IP": {"source": "10.244.1.60", "destination": "10.96.0.10", "ipVersion": "IPv4"},
    "l4": {"TCP": {"source_port": 44916, "destination_port": 80, "flags": {"SYN": True}}},
    "source": {
        "identity": 3418,
        "namespace": "shop",
        "pod_name": "cart-7d9f-x",
        "labels": ["k8s:app=cart", "k8s:tier=backend", "reserved:host"],
        "workloads": [{"name": "cart", "kind": "Deployment"}],
    },
    "destination": {
        "identity": 2,
        "namespace": "default",
        "pod_name": "db-0",
        "labels": ["reserved:world"],
    },
    "destination_names": ["api.example.com"],
    "event_type": {"type": 1, "sub_type": 133},
    "traffic_direction": "EGRESS",
}


@pytest.mark.parametrize(
    ("flow_filter", "matches"),
    [
        ({"source_pod": ["shop/"]}, True),
        ({"source_pod": ["shop/cart-"]}, True),
        ({"source_pod": ["shop/db"]}, False),
        ({"source_pod": ["cart-"]}, False),  # no namespace means "default"
        ({"destination_pod": ["db-"]}, True),
        ({"destination_pod": ["/db-"]}, True),  # "/x": any namespace (v1.19, --all-namespaces)
        ({"destination_pod": ["/cart-"]}, False),
        ({"source_ip": ["10.244.0.0/16"]}, True),
        ({"source_ip": ["10.244.1.61", "10.244.1.60"]}, True),
        ({"destination_ip": ["10.244.0.0/16"]}, False),
        ({"source_label": ["k8s:app=cart"]}, True),
        ({"source_label": ["app=cart,tier=backend"]}, True),
        ({"source_label": ["app=cart,tier=frontend"]}, False),
        ({"source_label": ["app in (web, cart)"]}, True),
        ({"source_label": ["app notin (cart)"]}, False),
        ({"source_label": ["reserved:host"]}, True),
        ({"source_label": ["!reserved:world"]}, True),
        ({"source_label": ["container:app=cart"]}, False),  # a source prefix must match
        ({"source_label": ["reserved.host"]}, False),  # no reserved. shortcut in filter keys
        ({"source_label": ["k8s:app==cart,tier!=frontend,!debug"]}, True),
        ({"destination_label": ["reserved:world"]}, True),
        ({"source_identity": [3418]}, True),
        ({"destination_identity": [3418]}, False),
        ({"verdict": ["FORWARDED", "DROPPED"]}, True),
        ({"drop_reason_desc": ["POLICY_DENY"]}, False),
        ({"traffic_direction": ["EGRESS"]}, True),
        ({"uuid": ["u-2"]}, False),
        ({"event_type": [{"type": 1}]}, True),
        ({"event_type": [{"type": 1, "match_sub_type": True, "sub_type": 181}]}, False),
        ({"protocol": ["TCP"]}, True),
        ({"protocol": ["udp", "dns"]}, False),
        ({"destination_port": ["80"]}, True),
        ({"source_port": ["80"]}, False),
        ({"reply": [False]}, True),  # unknown is_reply counts as false on drops only
        ({"reply": [True]}, False),
        ({"node_name": ["kind-*"]}, True),
        ({"node_name": ["default/kind-worker"]}, True),  # bare node names are in cluster "default"
        ({"node_name": ["other/kind-worker"]}, False),
        ({"tcp_flags": [{"SYN": True}]}, True),
        ({"tcp_flags": [{"SYN": True, "ACK": True}]}, False),
        ({"source_workload": [{"kind": "Deployment"}]}, True),
        ({"destination_fqdn": ["*.example.com"]}, True),
        ({"ip_version": ["IPv6"]}, False),
        ({"source_pod": ["shop/"], "verdict": ["FORWARDED"]}, False),  # fields AND
        ({}, True),  # an empty filter matches everything
    ],
)
def test_filter_semantics(flow_filter: dict, matches: bool) -> None:
    flow = json_format.ParseDict(_FLOW, flow_pb2.Flow())
    ff = json_format.ParseDict(flow_filter, Filter())
    assert compile_filters([ff])(flow) is matches
    assert compile_filters([], [ff])(flow) is not matches


def test_all_namespaces_pod_filter_as_hubble_observe_A_sends_it(serve) -> None:
    """``hubble observe -A`` sends ``source_pod: ["/"]`` OR ``destination_pod: ["/"]``: any pod
    in any namespace on either side; only the empty string is refused."""
    pod = json_format.ParseDict(_FLOW, flow_pb2.Flow())
    world = flow_pb2.Flow(verdict=flow_pb2.FORWARDED)  # no pod on either side
    world.source.identity, world.destination.identity = 2, 1
    everywhere = [Filter(source_pod=["/"]), Filter(destination_pod=["/"])]
    keep = compile_filters(everywhere)
    assert keep(pod) and not keep(world)
    assert compile_filters([Filter(destination_pod=["/"])])(pod)  # destination: default/db-0
    with pytest.raises(FilterError, match="source_pod"):
        compile_filters([Filter(source_pod=[""])])

    ring = FlowRing(8, node_name="n")
    for flow in (pod, world):
        ring.write(observer_pb2.GetFlowsResponse(flow=flow))
    stub, _ = serve(ring)
    assert _flows(stub, Request(whitelist=everywhere)) == [pod]


def test_drop_reason_filter_only_selects_dropped_flows() -> None:
    """As Hubble: a drop reason means nothing on a flow that was not dropped."""
    dropped = json_format.ParseDict(_FLOW, flow_pb2.Flow())
    forwarded = json_format.ParseDict({**_FLOW, "verdict": "FORWARDED"}, flow_pb2.Flow())
    by_reason = compile_filters([Filter(drop_reason_desc=[flow_pb2.POLICY_DENIED])])
    assert by_reason(dropped) and not by_reason(forwarded)
    unknown = flow_pb2.Flow(verdict=flow_pb2.FORWARDED)  # drop_reason_desc 0 = DROP_REASON_UNKNOWN
    assert not compile_filters([Filter(drop_reason_desc=[flow_pb2.DROP_REASON_UNKNOWN])])(unknown)
    # blacklisting a reason keeps every forwarded flow
    assert compile_filters([], [Filter(drop_reason_desc=[flow_pb2.POLICY_DENIED])])(forwarded)


def test_protocol_filter_knows_vrrp_and_igmp() -> None:
    vrrp = flow_pb2.Flow()
    vrrp.l4.VRRP.vrid, vrrp.l4.VRRP.priority = 51, 100
    igmp = flow_pb2.Flow()
    igmp.l4.IGMP.group_address = "239.1.1.1"
    assert compile_filters([Filter(protocol=["VRRP"])])(vrrp)
    assert not compile_filters([Filter(protocol=["vrrp"])])(igmp)
    assert compile_filters([Filter(protocol=["igmp"])])(igmp)
    assert not compile_filters([Filter(protocol=["tcp", "udp", "icmp"])])(igmp)


def test_empty_uuid_selects_flows_without_one() -> None:
    """As Hubble: ``uuid: [""]`` matches flows that carry no uuid (older agents, captures)."""
    with_uuid = json_format.ParseDict(_FLOW, flow_pb2.Flow())
    without = json_format.ParseDict(
        {k: v for k, v in _FLOW.items() if k != "uuid"}, flow_pb2.Flow()
    )
    assert compile_filters([Filter(uuid=[""])])(without)
    assert not compile_filters([Filter(uuid=[""])])(with_uuid)
    assert compile_filters([Filter(uuid=["", "u-1"])])(with_uuid)


def test_reply_filter_needs_is_reply_on_forwarded_flows() -> None:
    flow = json_format.ParseDict({**_FLOW, "verdict": "FORWARDED"}, flow_pb2.Flow())
    for wanted in (True, False):
        assert not compile_filters([Filter(reply=[wanted])])(flow)
    flow.is_reply.value = True
    assert compile_filters([Filter(reply=[True])])(flow)


def test_http_filters_refuse_non_l7_event_types() -> None:
    with pytest.raises(FilterError, match="http_status_code"):
        compile_filters(
            [Filter(http_status_code=["5+"], event_type=[flow_pb2.EventTypeFilter(type=4)])]
        )
    http = json_format.ParseDict(
        {
            "time": "2026-01-05T00:00:00Z",
            "l7": {
                "type": "RESPONSE",
                "http": {"code": 503, "method": "GET", "url": "http://a/b/c?x=1"},
            },
        },
        flow_pb2.Flow(),
    )
    assert compile_filters(
        [Filter(http_status_code=["5+"], http_method=["get"], http_path=["^/b/"])]
    )(http)
    assert not compile_filters([Filter(http_status_code=["200"])])(http)


# -- following -------------------------------------------------------------------------------------
def _flow_response(i: int, *, pad: int = 0) -> observer_pb2.GetFlowsResponse:
    response = observer_pb2.GetFlowsResponse()
    flow = response.flow
    flow.uuid = f"flow-{i}"
    flow.time.FromNanoseconds(1_767_571_200_000_000_000 + i * 1_000_000)
    flow.verdict = flow_pb2.FORWARDED
    flow.source.namespace = "shop" if i % 2 else "bank"
    if pad:
        flow.Summary = "x" * pad
    return response


def _index(response: observer_pb2.GetFlowsResponse) -> int:
    return int(response.flow.uuid.removeprefix("flow-"))


def test_follow_delivers_flows_written_after_the_call(serve) -> None:
    ring = FlowRing(64, node_name="n")
    ring.write_many(_flow_response(i) for i in range(10))
    stub, _ = serve(ring)
    call = stub.GetFlows(
        Request(number=2, follow=True, whitelist=[Filter(source_pod=["shop/"])]), timeout=30
    )
    try:
        history = [_index(next(call)) for _ in range(2)]
        assert history == [7, 9]  # last 2 matching, oldest first
        ring.write_many(_flow_response(i) for i in range(10, 20))
        live = [_index(next(call)) for _ in range(5)]
        assert live == [11, 13, 15, 17, 19]
    finally:
        call.cancel()


def test_follow_stops_at_until_and_when_the_server_stops(serve) -> None:
    ring = FlowRing(64)
    ring.write(_flow_response(0))
    stub, server = serve(ring)
    until = _flow_response(5).flow.time
    call = stub.GetFlows(Request(number=1, follow=True, until=until), timeout=30)
    assert _index(next(call)) == 0
    ring.write_many(_flow_response(i) for i in range(1, 10))
    assert [_index(r) for r in call] == [1, 2, 3, 4, 5]  # the stream ends after `until`

    call = stub.GetFlows(Request(number=1, follow=True), timeout=30)
    assert _index(next(call)) == 9
    threading.Timer(0.2, server.stop, kwargs={"grace": 1.0}).start()
    with pytest.raises(grpc.RpcError) as err:
        next(call)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_slow_follower_gets_lost_events_and_nothing_is_lost_silently(serve) -> None:
    ring = FlowRing(16, node_name="n")
    ring.write(_flow_response(0))
    stub, server = serve(ring)
    channel = grpc.insecure_channel(server.address, options=[("grpc.http2.bdp_probe", 0)])
    stub = observer_pb2_grpc.ObserverStub(channel)
    call = stub.GetFlows(Request(number=1, follow=True), timeout=60)
    try:
        assert _index(next(call)) == 0
        total = 5000
        for i in range(1, total):  # ~5 MB while the client reads nothing: the server blocks
            ring.write(_flow_response(i, pad=1000))
        expected_next, lost_events, lost_total = 1, 0, 0
        pending_lost = 0
        while expected_next < total:
            response = next(call)
            if response.HasField("lost_events"):
                lost = response.lost_events
                assert lost.source == flow_pb2.HUBBLE_RING_BUFFER
                assert response.node_name == "n" and response.time.seconds > 0
                pending_lost += lost.num_events_lost
                lost_events += 1
                continue
            index = _index(response)
            # every gap is announced, with its exact size, right before it
            assert index - expected_next == pending_lost, (index, expected_next, pending_lost)
            lost_total += pending_lost
            pending_lost = 0
            expected_next = index + 1
        assert lost_events >= 1 and lost_total > 0
        assert server.servicer.stats.events_lost == lost_total
    finally:
        call.cancel()
        channel.close()


def test_stream_limit_refuses_extra_calls(serve) -> None:
    ring = FlowRing(16)
    ring.write(_flow_response(0))
    stub, _ = serve(ring, max_streams=1)
    call = stub.GetFlows(Request(number=1, follow=True), timeout=30)
    try:
        assert _index(next(call)) == 0
        with pytest.raises(grpc.RpcError) as err:
            list(stub.GetFlows(Request(number=1), timeout=10))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert stub.ServerStatus(observer_pb2.ServerStatusRequest(), timeout=10).num_flows == 1
    finally:
        call.cancel()


# -- the ring --------------------------------------------------------------------------------------
class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_ring_reports_what_a_lapped_reader_lost() -> None:
    ring = FlowRing(4)
    reader = ring.reader(0)
    ring.write_many(_flow_response(i) for i in range(10))
    batch = reader.next_batch(100, timeout=0)
    assert batch.lost == 6 and [_index(r) for r in batch.entries] == [6, 7, 8, 9]
    assert (len(ring), ring.seen_flows, ring.oldest, ring.head) == (4, 10, 6, 10)


def test_ring_waiters_wake_on_write_and_close() -> None:
    ring = FlowRing(4)
    got: list[int] = []

    def follow() -> None:
        reader = ring.reader()
        while True:
            batch = reader.next_batch(timeout=10)
            got.extend(_index(r) for r in batch.entries)
            if batch.closed and not batch.entries:
                return

    thread = threading.Thread(target=follow)
    thread.start()
    time.sleep(0.05)
    ring.write(_flow_response(1))
    ring.close()
    thread.join(5)
    assert not thread.is_alive() and got == [1]
    with pytest.raises(RuntimeError):
        ring.write(_flow_response(2))


def test_flows_rate_over_the_last_minute() -> None:
    clock = _Clock()
    ring = FlowRing(1000, clock=clock)
    for i in range(120):  # 1 flow/s for two minutes
        ring.write(_flow_response(i))
        clock.now += 1
    assert ring.flows_rate() == pytest.approx(60 / 60)
    small = FlowRing(10, clock=clock)  # holds 10 s of a 2 flows/s stream
    for i in range(100):
        small.write(_flow_response(i))
        clock.now += 0.5
    assert small.flows_rate() == pytest.approx(10 / 5.0)


def test_server_status_numbers(serve) -> None:
    clock = _Clock()
    ring = FlowRing(100, node_name="n", clock=clock)
    for i in range(150):
        ring.write(_flow_response(i))
        clock.now += 0.1
    ring.write(
        observer_pb2.GetFlowsResponse(
            lost_events=flow_pb2.LostEvent(
                source=flow_pb2.PERF_EVENT_RING_BUFFER, num_events_lost=3
            )
        )
    )
    stub, _ = serve(ring)
    status = stub.ServerStatus(observer_pb2.ServerStatusRequest(), timeout=10)
    assert (status.num_flows, status.max_flows, status.seen_flows) == (100, 100, 150)
    assert status.num_connected_nodes.value == 1 and status.HasField("num_connected_nodes")
    assert re.fullmatch(r"netwarden \d+\.\d+\.\d+.*", status.version)
    assert status.uptime_ns > 0
    # the ring holds 99 flows written 0.1 s apart (+ the lost event), the oldest 9.9 s ago
    assert status.flows_rate == pytest.approx(99 / 9.9)


# -- TLS and mTLS ----------------------------------------------------------------------------------
@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_cert = ca.issue_cert("localhost", "127.0.0.1")
    client_cert = ca.issue_cert("netwarden-client")
    other_client = trustme.CA().issue_cert("intruder")
    files = {"ca": tmp_path / "ca.pem"}
    ca.cert_pem.write_to_path(files["ca"])
    for name, issued in (
        ("server", server_cert),
        ("client", client_cert),
        ("intruder", other_client),
    ):
        files[name] = tmp_path / f"{name}.pem"
        files[f"{name}-key"] = tmp_path / f"{name}-key.pem"
        issued.cert_chain_pems[0].write_to_path(files[name])
        issued.private_key_pem.write_to_path(files[f"{name}-key"])
    return files


def _secure_stub(address: str, ca: Path, client: Path | None = None):
    key = chain = None
    if client is not None:
        chain = client.read_bytes()
        key = client.with_name(client.stem + "-key.pem").read_bytes()
    creds = grpc.ssl_channel_credentials(ca.read_bytes(), key, chain)
    channel = grpc.secure_channel(address, creds)
    return channel, observer_pb2_grpc.ObserverStub(channel)


def test_tls_and_mutual_tls(pki: dict[str, Path]) -> None:
    ring = FlowRing(16)
    ring.write(_flow_response(0))
    with ObserverServer(
        ring, "127.0.0.1:0", tls=TLSFiles(pki["server"], pki["server-key"])
    ) as server:
        channel, stub = _secure_stub(server.address, pki["ca"])
        assert len(_flows(stub, Request())) == 1
        channel.close()
        plain = grpc.insecure_channel(server.address)
        with pytest.raises(grpc.RpcError):
            list(observer_pb2_grpc.ObserverStub(plain).GetFlows(Request(), timeout=5))
        plain.close()

    tls = TLSFiles(pki["server"], pki["server-key"], client_ca=pki["ca"])
    with ObserverServer(ring, "127.0.0.1:0", tls=tls) as server:
        channel, stub = _secure_stub(server.address, pki["ca"], pki["client"])
        assert len(_flows(stub, Request())) == 1
        channel.close()
        for client in (None, pki["intruder"]):  # no certificate; one from another CA
            channel, stub = _secure_stub(server.address, pki["ca"], client)
            with pytest.raises(grpc.RpcError) as err:
                stub.ServerStatus(observer_pb2.ServerStatusRequest(), timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            channel.close()


def test_unusable_tls_files_fail_at_start(pki: dict[str, Path], tmp_path: Path) -> None:
    ring = FlowRing(4)
    with pytest.raises(ObserverServerError, match="matching private key"):
        ObserverServer(ring, "127.0.0.1:0", tls=TLSFiles(pki["ca"], pki["server-key"])).start()
    with pytest.raises(ObserverServerError, match="no such file"):
        ObserverServer(
            ring, "127.0.0.1:0", tls=TLSFiles(pki["server"], tmp_path / "missing.pem")
        ).start()


# -- addresses -------------------------------------------------------------------------------------
def test_unix_socket_folder_stale_socket_and_refusals(tmp_path: Path) -> None:
    path = tmp_path / "run" / "hubble.sock"
    ring = FlowRing(4)
    ring.write(_flow_response(0))
    server = ObserverServer(ring, f"unix://{path}")
    assert server.start() == f"unix://{path}"
    try:
        channel = grpc.insecure_channel(f"unix://{path}")
        assert len(_flows(observer_pb2_grpc.ObserverStub(channel), Request())) == 1
        channel.close()
        with pytest.raises(ObserverServerError, match="another server is listening"):
            ObserverServer(ring, f"unix://{path}").start()
    finally:
        server.stop(grace=0)
    assert not path.exists()

    stale = socket.socket(socket.AF_UNIX)  # a socket file nobody listens on any more
    stale.bind(str(path))
    stale.close()
    with ObserverServer(ring, f"unix://{path}") as again:
        assert again.address == f"unix://{path}"

    path.write_text("not a socket")
    with pytest.raises(ObserverServerError, match="not a socket"):
        ObserverServer(ring, f"unix://{path}").start()
    assert path.read_text() == "not a socket"


def test_listen_addresses_and_port_in_use() -> None:
    assert parse_listen("127.0.0.1:4244").grpc_target == "127.0.0.1:4244"
    assert parse_listen("[::1]:0").grpc_target == "[::1]:0"
    assert parse_listen(":4244").grpc_target == "[::]:4244"
    assert parse_listen("unix:///var/run/x.sock").unix_path == Path("/var/run/x.sock")
    for bad in ("localhost", "host:port", "1.2.3.4:70000", "unix://"):
        with pytest.raises(ObserverServerError):
            parse_listen(bad)
    with ObserverServer(FlowRing(4), "127.0.0.1:0") as first:
        assert first.port > 0 and first.address == f"127.0.0.1:{first.port}"
        with pytest.raises(ObserverServerError, match="cannot listen"):
            ObserverServer(FlowRing(4), first.address).start()


# -- replay ----------------------------------------------------------------------------------------
def test_bad_lines_are_counted_and_the_replay_goes_on(tmp_path: Path, serve) -> None:
    _require(TCP_400)
    good = TCP_400.read_text().splitlines()[:3]
    lines = [
        good[0],
        "{not json",
        "[1, 2]",
        '{"flow": {"time": "2021-11-10T10:40:56Z", "IP": {"source": 7}}}',
        '{"flow": {"verdict": "FORWARDED"}}',
        "",
        (
            '{"lost_events": {"source": "PERF_EVENT_RING_BUFFER", "num_events_lost": "7"}, '
            '"node_name": "n1", "time": "2021-11-10T10:40:57Z"}'
        ),
        '{"agent_event": {"type": "AGENT_STARTED"}}',
        '{"hello": "world"}',
        good[1],
        json.dumps(json.loads(good[2])["flow"]),  # a legacy bare flow
    ]
    path = tmp_path / "mixed.json"
    path.write_text("\n".join(lines) + "\n")
    ring = FlowRing(64, node_name="replayer")
    stats = Replay(ring, path).run()
    assert stats.flows == 3 and stats.lines == len(lines)
    assert dict(stats.errors) == {
        "not_json": 1,
        "not_a_flow": 2,
        "wrong_type": 1,
        "missing_time": 1,
    }
    assert [(str(b.source), b.line) for b in stats.examples] == [
        (str(path), n) for n in (2, 3, 4, 5, 9)
    ]
    assert stats.blank_lines == 1 and stats.agent_event_lines == 1
    assert stats.lost_event_lines == 1 and stats.events_lost == {"PERF_EVENT_RING_BUFFER": 7}

    stub, _ = serve(ring)
    responses = list(stub.GetFlows(Request(), timeout=10))
    kinds = [r.WhichOneof("response_types") for r in responses]
    assert kinds == ["flow", "lost_events", "flow", "flow"]
    assert responses[1].lost_events.num_events_lost == 7
    assert [r.flow for r in responses if r.HasField("flow")] == [
        _flow(json.loads(line)) for line in good
    ]
    assert responses[3].node_name == "kind-control-plane"


def test_replay_gzip_equals_plain(tmp_path: Path) -> None:
    _require(TCP_400)
    gz = tmp_path / "flows.json.gz"
    gz.write_bytes(gzip.compress(TCP_400.read_bytes()))
    plain, packed = _replayed(TCP_400), _replayed(gz)
    assert list(packed.snapshot()[1]) == list(plain.snapshot()[1])
    truncated = tmp_path / "cut.json.gz"
    truncated.write_bytes(gz.read_bytes()[: len(gz.read_bytes()) // 2])
    ring = FlowRing(4095)
    stats = Replay(ring, truncated).run()
    assert stats.errors["unreadable_input"] == 1 and 0 < stats.flows < 400


def test_replay_follows_a_growing_file(tmp_path: Path) -> None:
    _require(TCP_400)
    lines = TCP_400.read_text().splitlines(keepends=True)
    path = tmp_path / "growing.json"
    path.write_text("".join(lines[:5]))
    ring = FlowRing(64)
    replay = Replay(ring, path, follow=True, poll_interval=0.02)
    replay.start()
    try:
        _wait(lambda: ring.seen_flows == 5)
        with path.open("a") as f:
            f.write(lines[5] + lines[6][:50])  # a line and half of the next
            f.flush()
            _wait(lambda: ring.seen_flows == 6)
            time.sleep(0.1)
            assert ring.seen_flows == 6  # the partial line waits for its newline
            f.write(lines[6][50:])
        _wait(lambda: ring.seen_flows == 7)
        assert replay.stats.error_lines == 0
    finally:
        replay.stop()


def test_replay_follow_survives_truncation_and_rotation(tmp_path: Path) -> None:
    _require(TCP_400)
    lines = TCP_400.read_text().splitlines(keepends=True)
    path = tmp_path / "events.log"
    path.write_text("".join(lines[:4]))
    ring = FlowRing(64)
    replay = Replay(ring, path, follow=True, poll_interval=0.02)
    replay.start()
    try:
        _wait(lambda: ring.seen_flows == 4)
        path.write_text("".join(lines[4:6]))  # truncated and rewritten shorter
        _wait(lambda: ring.seen_flows == 6)
        path.rename(tmp_path / "events.log.1")  # rotated: a new file takes the name
        path.write_text("".join(lines[6:9]))
        _wait(lambda: ring.seen_flows == 9)
        served = [r.flow for r in ring.snapshot()[1]]
        assert served == [_flow(json.loads(line)) for line in lines[:9]]
        assert replay.stats.error_lines == 0
    finally:
        replay.stop()


def test_replay_rate_paces_flows(tmp_path: Path) -> None:
    _require(TCP_400)
    path = tmp_path / "few.json"
    path.write_text("".join(TCP_400.read_text().splitlines(keepends=True)[:11]))
    started = time.monotonic()
    Replay(FlowRing(64), path, rate=100).run()
    assert time.monotonic() - started >= 0.09  # 11 flows at 100/s: the last is due at 0.1 s


def test_decode_line_shapes() -> None:
    lost = decode_line(b'{"lost_events":{"source":"HUBBLE_RING_BUFFER","num_events_lost":"2"}}')
    assert lost.response is not None and lost.response.lost_events.num_events_lost == 2
    assert decode_line(
        b'{"node_status":{"state_change":"NODE_ERROR","node_names":["a"]}}'
    ).response.node_status.node_names == ["a"]
    assert decode_line(b'{"debug_event":{}}').skipped == "debug_event"
    assert decode_line(b'{"flow":null}').error == "not_a_flow"


def _wait(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


# -- the command -----------------------------------------------------------------------------------
def _cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "netwarden", "observer", *args],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _listening_address(proc: subprocess.Popen[str]) -> str:
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        match = re.search(r"listening on (\S+)", line)
        if match:
            return match.group(1)
    proc.kill()
    raise AssertionError(f"the observer command did not say where it listens: {line!r}")


def test_observer_command_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    _require(TCP_400)
    sock = tmp_path / "obs.sock"
    for listen in ("127.0.0.1:0", f"unix://{sock}"):
        proc = _cli(str(TCP_400), "--listen", listen, "--max-flows", "100", "--node-name", "n9")
        try:
            address = _listening_address(proc)
            channel = grpc.insecure_channel(address)
            stub = observer_pb2_grpc.ObserverStub(channel)
            _wait(
                lambda stub=stub: (
                    stub.ServerStatus(observer_pb2.ServerStatusRequest(), timeout=10).seen_flows
                    == 400
                )
            )
            status = stub.ServerStatus(observer_pb2.ServerStatusRequest(), timeout=10)
            assert (status.num_flows, status.max_flows) == (100, 100)
            expected = [_flow(obj) for obj in _lines(TCP_400)[-3:]]
            assert _flows(stub, Request(number=3)) == expected
            channel.close()
            proc.send_signal(signal.SIGTERM)
            _out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, err
        assert "stopped: replayed 400 flows (0 bad lines); served 3 flows" in err
        assert "Traceback" not in err
    assert not sock.exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--tls-cert", "c.pem"], "--tls-cert and --tls-key go together"),
        (["--tls-client-ca", "ca.pem"], "--tls-client-ca needs --tls-cert"),
        (["--listen", "nowhere"], "expected HOST:PORT"),
        (["--max-flows", "0"], "--max-flows: must be at least 1"),
        (["--tls-cert", "missing.pem", "--tls-key", "missing.pem"], "no such file"),
    ],
)
def test_observer_command_refuses_unusable_options(args: list[str], needle: str) -> None:
    _require(TCP_400)
    proc = _cli(str(TCP_400), "--listen", "127.0.0.1:0", *args)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    assert needle in err and "Traceback" not in err


def test_observer_command_missing_file(tmp_path: Path) -> None:
    proc = _cli(str(tmp_path / "nope.json"), "--listen", "127.0.0.1:0")
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "no such file" in err and "Traceback" not in err

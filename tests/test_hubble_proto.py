"""The Hubble .proto definitions, their committed stubs, and protobuf -> Flow conversion."""

from __future__ import annotations

import filecmp
from pathlib import Path

import msgspec
import pytest
from google.protobuf import descriptor_pb2, json_format

from netwarden.hubble import flow_pb2, observer_pb2, relay_pb2
from netwarden.hubble.generate import HERE, generate
from netwarden.ingest import leanproto, protoflow
from netwarden.ingest.compact import CompactFlow
from netwarden.ingest.flow import (
    DROP_REASONS,
    LOST_EVENT_SOURCES,
    TRACE_OBSERVATION_POINTS,
    VERDICTS,
)
from netwarden.ingest.identity import _first_workload, _label_list
from netwarden.ingest.protoflow import compact_flow
from netwarden.ingest.reader import FlowReader
from netwarden.ingest.sources.hubble import HubbleSource
from tests.conftest import DATA

SAMPLES = DATA / "hubble"


def sample_files() -> list[Path]:
    files = sorted(SAMPLES.glob("*/*.json")) + sorted(SAMPLES.glob("*/*.jsonl"))
    assert files, f"no Hubble samples under {SAMPLES}"
    return files


def test_committed_stubs_match_the_proto_files(tmp_path: Path) -> None:
    written = generate(tmp_path)
    names = sorted(p.name for p in written)
    assert names == sorted(
        [
            "flow_pb2.py",
            "flow_pb2.pyi",
            "relay_pb2.py",
            "relay_pb2.pyi",
            "netwarden_pb2.py",
            "netwarden_pb2.pyi",
            "observer_pb2.py",
            "observer_pb2.pyi",
            "observer_pb2_grpc.py",
        ]
    )
    _, mismatch, errors = filecmp.cmpfiles(tmp_path, HERE, names, shallow=False)
    assert not mismatch and not errors, (
        f"stubs out of date with the .proto files: {mismatch + errors}; run `make proto`"
    )


def test_names_and_numbers_are_hubbles() -> None:
    """Spot checks against shared/data/INTERFACES.md section 1 (cilium v1.19.4)."""
    flow = flow_pb2.Flow.DESCRIPTOR.fields_by_name
    numbers = {
        "time": 1,
        "uuid": 34,
        "emitter": 41,
        "verdict": 2,
        "drop_reason": 3,
        "IP": 5,
        "l4": 6,
        "source": 8,
        "destination": 9,
        "Type": 10,
        "node_name": 11,
        "source_names": 13,
        "l7": 15,
        "reply": 16,
        "event_type": 19,
        "traffic_direction": 22,
        "trace_observation_point": 24,
        "drop_reason_desc": 25,
        "is_reply": 26,
        "interface": 28,
        "Summary": 100000,
        "egress_denied_by": 21004,
        "policy_log": 21006,
        "aggregate": 21007,
    }
    assert {name: flow[name].number for name in numbers} == numbers
    assert flow_pb2.Flow.DESCRIPTOR.full_name == "flow.Flow"
    assert observer_pb2.DESCRIPTOR.services_by_name["Observer"].full_name == "observer.Observer"
    response = observer_pb2.GetFlowsResponse.DESCRIPTOR.fields_by_name
    assert [
        response[n].number for n in ("flow", "node_status", "lost_events", "node_name", "time")
    ] == [1, 2, 3, 1000, 1001]
    request = observer_pb2.GetFlowsRequest.DESCRIPTOR.fields_by_name
    assert [
        request[n].number
        for n in (
            "number",
            "first",
            "follow",
            "blacklist",
            "whitelist",
            "since",
            "until",
            "field_mask",
        )
    ] == [1, 9, 3, 5, 6, 7, 8, 10]
    filt = flow_pb2.FlowFilter.DESCRIPTOR.fields_by_name
    assert (
        filt["source_pod"].number,
        filt["destination_pod"].number,
        filt["verdict"].number,
        filt["uuid"].number,
    ) == (2, 4, 5, 29)
    # the enums agree with the tables the JSON path uses
    assert {v.name: v.number for v in flow_pb2.Verdict.DESCRIPTOR.values} == VERDICTS
    assert {v.number: v.name for v in flow_pb2.DropReason.DESCRIPTOR.values} == DROP_REASONS
    assert {
        v.name: v.number for v in flow_pb2.TraceObservationPoint.DESCRIPTOR.values
    } == TRACE_OBSERVATION_POINTS
    assert {
        v.name: v.number for v in flow_pb2.LostEventSource.DESCRIPTOR.values
    } == LOST_EVENT_SOURCES
    assert relay_pb2.NodeState.Value("NODE_UNAVAILABLE") == 2


def test_wire_bytes_of_a_known_message() -> None:
    """Field numbers and types on the wire, byte for byte (tag = number << 3 | wire type)."""
    response = observer_pb2.GetFlowsResponse(node_name="n")
    response.flow.verdict = flow_pb2.DROPPED
    response.flow.drop_reason_desc = flow_pb2.POLICY_DENIED
    response.flow.l4.TCP.destination_port = 80
    response.flow.is_reply.value = False
    # flow (1, len): verdict (2) = 2; l4 (6) { TCP (1) { destination_port (2) = 80 } };
    # drop_reason_desc (25, varint: tag 0xc8 0x01) = 133; is_reply (26) = BoolValue{} (empty)
    flow = b"\x10\x02" + b"\x32\x04\x0a\x02\x10\x50" + b"\xc8\x01\x85\x01" + b"\xd2\x01\x00"
    assert response.SerializeToString() == (
        b"\x0a" + bytes([len(flow)]) + flow + b"\xc2\x3e\x01n"
    )  # node_name (1000, len)


def _replaced_below(value: object) -> None:
    """Raw JSON labels (JSON path) and protobuf repeated fields: compared as lists below."""


def _normalised(flow: CompactFlow) -> dict:
    data = msgspec.to_builtins(flow, builtin_types=(type(flow.time),), enc_hook=_replaced_below)
    for side in ("source", "destination"):
        endpoint = getattr(flow, side)
        if endpoint is not None:
            data[side]["labels"] = list(_label_list(endpoint.labels))
            data[side]["workloads"] = _first_workload(endpoint.workloads)
    return data


def _source() -> HubbleSource:
    return HubbleSource("localhost:4245", log=lambda _: None)


def _responses(lines: list[bytes]) -> list[bytes]:
    """Hubble JSON lines as the serialized GetFlowsResponse messages a server sends."""
    return [
        json_format.Parse(
            line, observer_pb2.GetFlowsResponse(), ignore_unknown_fields=True
        ).SerializeToString()
        for line in lines
    ]


def _from_json(lines: list[bytes]) -> list[dict]:
    return [
        _normalised(f) for f in FlowReader(flow_type=CompactFlow).decode_lines(lines, 1, "json")
    ]


@pytest.mark.parametrize("path", sample_files(), ids=lambda p: p.name)
def test_protobuf_flows_equal_json_flows(path: Path) -> None:
    """Every real sample: JSON -> protobuf bytes -> record equals JSON -> record, through the
    Hubble source (twice: the second pass comes from the decoder's caches) and through
    compact_flow (a full flow_pb2.Flow)."""
    lines = path.read_bytes().splitlines()
    expected = _from_json(lines)
    assert expected
    source = _source()
    for _ in range(2):
        from_source = [source._message(data) for data in _responses(lines)]
        assert [_normalised(f) for f in from_source if f is not None] == expected
    source.tracker = _source().tracker  # forget the flows' uuids: deliver them again
    messages = [observer_pb2.GetFlowsResponse.FromString(data) for data in _responses(lines)]
    from_full = [compact_flow(m.flow) for m in messages if m.HasField("flow")]
    assert [_normalised(f) for f in from_full] == expected


def test_caches_are_bounded_and_do_not_change_records(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [line for path in sample_files() for line in path.read_bytes().splitlines()]
    expected = _from_json(lines)
    monkeypatch.setattr(protoflow, "CACHE_LIMIT", 3)
    source = _source()
    got = [source._message(data) for data in _responses(lines)]
    assert [_normalised(f) for f in got if f is not None] == expected
    decoder = source._decoder
    caches = (decoder.rests, decoder.endpoints, decoder.ips, decoder.event_types, decoder.flags)
    assert all(0 < len(c) <= 3 for c in caches), [len(c) for c in caches]


def _one_way_and_other(response: observer_pb2.GetFlowsResponse) -> tuple[dict, dict]:
    """A response through the Hubble source, and its protojson through the JSON reader."""
    record = _source()._message(response.SerializeToString())
    assert record is not None
    line = json_format.MessageToJson(
        response, indent=None, preserving_proto_field_name=True
    ).encode()
    (from_json,) = FlowReader(flow_type=CompactFlow).decode_lines([line], 1, "json")
    return _normalised(record), _normalised(from_json)


def test_present_but_empty_messages_differ_from_absent_ones() -> None:
    """Sub-messages the lean schema reads as bytes: empty (``{}`` in JSON) is not absent."""
    response = observer_pb2.GetFlowsResponse()
    flow = response.flow
    flow.time.seconds = 1_767_614_400
    flow.IP.SetInParent()
    flow.source.SetInParent()
    flow.event_type.SetInParent()
    flow.is_reply.SetInParent()  # present and false
    flow.l4.TCP.flags.SetInParent()
    flow.l7.SetInParent()
    got, expected = _one_way_and_other(response)
    assert got == expected
    assert got["IP"] == {"source": "", "destination": ""} and got["is_reply"] is False
    assert got["l4"]["TCP"]["flags"] is not None and got["destination"] is None
    assert got["netwarden"] is None
    flow.ClearField("is_reply")
    flow.l4.Clear()
    flow.l4.UDP.destination_port = 53
    flow.netwarden.bytes_sent = 7
    flow.netwarden.kernel_drop_reason = "NETFILTER_DROP"
    got, expected = _one_way_and_other(response)
    assert got == expected and got["is_reply"] is None
    assert got["l4"]["UDP"]["destination_port"] == 53 and got["netwarden"]["bytes_sent"] == 7


def test_the_responses_time_stands_in_for_a_missing_flow_time() -> None:
    response = observer_pb2.GetFlowsResponse()
    response.flow.verdict = flow_pb2.FORWARDED
    response.time.seconds, response.time.nanos = 1_767_614_400, 999_999_600  # rounds up
    record = _source()._message(response.SerializeToString())
    assert record is not None
    assert record.time.isoformat() == "2026-01-05T12:00:01+00:00"


def test_a_malformed_sub_message_is_a_bad_message_and_the_stream_goes_on() -> None:
    """The lean parse skips the bytes of sub-messages it reads later (an endpoint): a bad one
    is still a bad message, not an error that ends the stream."""
    good = observer_pb2.GetFlowsResponse()
    good.flow.time.seconds = 1_767_614_400
    good.flow.uuid = "a"
    good.flow.source.namespace = "shop"
    data = good.SerializeToString()
    endpoint = good.flow.source.SerializeToString()
    assert endpoint == b"\x1a\x04shop"  # namespace (3), 4 bytes
    broken = data.replace(endpoint, b"\x1a\x05shop")  # claims 5: overruns the endpoint
    assert protoflow.parse_response(broken).flow.uuid == "a"  # the lean parse accepts it
    source = _source()
    assert source._message(broken) is None
    good.flow.uuid = "b"
    assert source._message(good.SerializeToString()) is not None
    assert source.stats.errors == {"bad_message": 1} and source.stats.flows == 1


_COMPATIBLE = {  # lean wire type -> full types with the same wire type and meaning here
    descriptor_pb2.FieldDescriptorProto.TYPE_BYTES: {"TYPE_MESSAGE", "TYPE_BYTES"},
    descriptor_pb2.FieldDescriptorProto.TYPE_INT32: {"TYPE_INT32", "TYPE_ENUM"},
}


def test_the_lean_schema_reads_hubbles_fields() -> None:
    """Every lean field is the full message's field of that number: same name, repeated or
    not, same oneof, and a type with the same wire format (bytes for a sub-message, int32 for
    an enum)."""
    pools = [flow_pb2.DESCRIPTOR.pool, observer_pb2.DESCRIPTOR.pool]
    names = descriptor_pb2.FieldDescriptorProto.Type.Name
    checked = 0
    for lean_name, full_names in leanproto.FULL_TYPES.items():
        for full_name in full_names:
            full = next(
                p.FindMessageTypeByName(full_name) for p in pools if _has_message(p, full_name)
            )
            for name, number, kind, repeated, oneof in leanproto.SCHEMA[lean_name]:
                other = full.fields_by_number[number]
                assert other.name == name, (lean_name, full_name, number)
                assert other.is_repeated == repeated, (full_name, name)
                assert (other.containing_oneof.name if other.containing_oneof else None) == (
                    oneof
                ), (full_name, name)
                full_type = names(other.type)
                if isinstance(kind, str):
                    assert full_type == "TYPE_MESSAGE", (full_name, name)
                    assert full_name.split(".")[-1] != kind or other.message_type.name == kind
                else:
                    assert full_type in _COMPATIBLE.get(kind, {names(kind)}), (full_name, name)
                checked += 1
    assert checked > 40


def _has_message(pool: object, name: str) -> bool:
    try:
        pool.FindMessageTypeByName(name)  # type: ignore[attr-defined]
    except KeyError:
        return False
    return True


def test_unknown_enum_numbers_stay_numbers() -> None:
    """A newer Hubble may send a verdict or drop reason this definition does not know."""
    flow = flow_pb2.Flow(verdict=42, drop_reason_desc=250)
    flow.time.seconds = 1
    converted = compact_flow(flow)
    assert converted.verdict == 42 and converted.drop_reason_desc == 250
    assert converted.IP is None and converted.l4 is None and converted.is_reply is None

"""The Hubble .proto definitions, their committed stubs, and protobuf -> Flow conversion."""

from __future__ import annotations

import filecmp
from pathlib import Path

import msgspec
import pytest
from google.protobuf import json_format

from netwarden.hubble import flow_pb2, observer_pb2, relay_pb2
from netwarden.hubble.generate import HERE, generate
from netwarden.ingest.compact import CompactFlow
from netwarden.ingest.flow import (
    DROP_REASONS,
    LOST_EVENT_SOURCES,
    TRACE_OBSERVATION_POINTS,
    VERDICTS,
)
from netwarden.ingest.identity import _first_workload, _label_list
from netwarden.ingest.protoflow import compact_flow, parse_response
from netwarden.ingest.reader import FlowReader
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


@pytest.mark.parametrize("path", sample_files(), ids=lambda p: p.name)
def test_protobuf_flows_equal_json_flows(path: Path) -> None:
    """Every real sample: JSON -> protobuf bytes -> record equals JSON -> record."""
    lines = path.read_bytes().splitlines()
    from_json = FlowReader(flow_type=CompactFlow).decode_lines(lines, 1, path.name)
    from_proto = []
    for line in lines:
        message = json_format.Parse(
            line, observer_pb2.GetFlowsResponse(), ignore_unknown_fields=True
        )
        decoded = parse_response(message.SerializeToString())
        if decoded.WhichOneof("response_types") == "flow":
            from_proto.append(compact_flow(decoded.flow))
    assert len(from_proto) == len(from_json) > 0
    assert [_normalised(f) for f in from_proto] == [_normalised(f) for f in from_json]


def test_unknown_enum_numbers_stay_numbers() -> None:
    """A newer Hubble may send a verdict or drop reason this definition does not know."""
    flow = flow_pb2.Flow(verdict=42, drop_reason_desc=250)
    flow.time.seconds = 1
    converted = compact_flow(
        parse_response(observer_pb2.GetFlowsResponse(flow=flow).SerializeToString()).flow
    )
    assert converted.verdict == 42 and converted.drop_reason_desc == 250
    assert converted.IP is None and converted.l4 is None and converted.is_reply is None

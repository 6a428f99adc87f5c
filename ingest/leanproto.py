"""A lean protobuf schema for ``observer.GetFlowsResponse``: only what the windows read.

Parsing a message builds nothing in Python; what costs is every field read afterwards (each a
call into upb, each sub-message a new wrapper object, each value a new Python object). These
messages declare the same field numbers and wire types as Hubble's ``flow.Flow`` and
``observer.GetFlowsResponse`` (:mod:`netwarden.hubble.flow_pb2`), but only fields the pipeline
needs, so the decoder (:mod:`netwarden.ingest.protoflow`) reads few of them per flow:

* A response is parsed twice. As :data:`LeanResponse`, its flow is :data:`FlowVarying`: the
  fields that differ from one flow to the next (time, uuid, layer 4 with its ports, layer 7,
  netwarden's byte counts). As :data:`RestResponse`, its flow is :data:`FlowRest`: the other
  fields windows read, which repeat (the same endpoints, verdict, direction...); with the
  unknown fields discarded (the varying ones, and those windows do not read), serializing it
  gives a key for all of them. The decoder turns each distinct key into record fields once.
* Sub-messages that repeat (endpoints, IPs, the event type, ``is_reply``, TCP flags) are
  ``bytes``, parsed once per distinct value with the full ``flow_pb2`` type and cached the same
  way (so a new combination of known endpoints costs little).
* Layer 4 and layer 7 are lean messages: about half the layer 4 values are new (ports), and
  measured, a cache keyed by their bytes saved nothing.
* Enums are ``int32`` (what they are on the wire): the decoder maps numbers to names itself,
  and a number this definition does not know stays a number, as protojson writes it.

Edition 2023 gives every field explicit presence (an empty ``bytes`` sub-message is told apart
from an absent one, as a message field would be) and verifies UTF-8 in strings, as Hubble's
proto3 definition does. One difference from parsing the full type: a sub-message declared
``bytes`` that occurs twice in one message is not merged (the last occurrence counts). Protobuf
encoders (Go's, which Hubble uses, upb, the C++ one) never split a message that way. And
fields no schema here declares are skipped unchecked: a flow whose unread parts are malformed,
which the full type would reject, still decodes (its read parts are checked as before).

``tests/test_hubble_proto.py`` checks every field here against ``flow_pb2`` (number, wire type)
and decodes every real sample both ways.
"""

from __future__ import annotations

from typing import Any, Final

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

__all__ = [
    "FULL_TYPES",
    "SCHEMA",
    "FlowRest",
    "FlowVarying",
    "LeanResponse",
    "RestResponse",
]

_F = descriptor_pb2.FieldDescriptorProto
INT32: Final = _F.TYPE_INT32
INT64: Final = _F.TYPE_INT64
UINT32: Final = _F.TYPE_UINT32
BOOL: Final = _F.TYPE_BOOL
STRING: Final = _F.TYPE_STRING
BYTES: Final = _F.TYPE_BYTES
_PACKAGE: Final = "netwarden.lean"

#: message -> fields: (name, number, scalar type or message name, repeated, oneof or None).
#: Names are Hubble's, so the decoder reads the same attribute names as on ``flow_pb2``.
SCHEMA: Final[dict[str, list[tuple[str, int, int | str, bool, str | None]]]] = {
    "Timestamp": [("seconds", 1, INT64, False, None), ("nanos", 2, INT32, False, None)],
    "GetFlowsResponse": [
        ("flow", 1, "FlowVarying", False, "response_types"),
        ("node_status", 2, BYTES, False, "response_types"),
        ("lost_events", 3, BYTES, False, "response_types"),
        ("time", 1001, "Timestamp", False, None),
    ],
    # the same bytes again, for the rest of the flow (see above)
    "RestResponse": [
        ("flow", 1, "FlowRest", False, "response_types"),
        ("node_status", 2, BYTES, False, "response_types"),
        ("lost_events", 3, BYTES, False, "response_types"),
    ],
    # what changes from flow to flow; every other field stays unknown to it
    "FlowVarying": [
        ("time", 1, "Timestamp", False, None),
        ("l4", 6, "Layer4", False, None),
        ("l7", 15, "Layer7", False, None),
        ("uuid", 34, STRING, False, None),
        ("netwarden", 536870000, BYTES, False, None),
    ],
    # the rest that windows read (the fields that repeat from flow to flow)
    "FlowRest": [
        ("verdict", 2, INT32, False, None),
        ("drop_reason", 3, UINT32, False, None),
        ("IP", 5, BYTES, False, None),
        ("source", 8, BYTES, False, None),
        ("destination", 9, BYTES, False, None),
        ("Type", 10, INT32, False, None),
        ("source_names", 13, STRING, True, None),
        ("destination_names", 14, STRING, True, None),
        ("reply", 16, BOOL, False, None),
        ("event_type", 19, BYTES, False, None),
        ("traffic_direction", 22, INT32, False, None),
        ("trace_observation_point", 24, INT32, False, None),
        ("drop_reason_desc", 25, INT32, False, None),
        ("is_reply", 26, BYTES, False, None),
    ],
    "Layer4": [
        ("TCP", 1, "TCP", False, "protocol"),
        ("UDP", 2, "Ports", False, "protocol"),
        ("ICMPv4", 3, "ICMP", False, "protocol"),
        ("ICMPv6", 4, "ICMP", False, "protocol"),
        ("SCTP", 5, "Ports", False, "protocol"),
        ("VRRP", 6, BYTES, False, "protocol"),
        ("IGMP", 7, BYTES, False, "protocol"),
    ],
    "TCP": [
        ("source_port", 1, UINT32, False, None),
        ("destination_port", 2, UINT32, False, None),
        ("flags", 3, BYTES, False, None),
    ],
    "Ports": [
        ("source_port", 1, UINT32, False, None),
        ("destination_port", 2, UINT32, False, None),
    ],
    "ICMP": [("type", 1, UINT32, False, None), ("code", 2, UINT32, False, None)],
    "Layer7": [
        ("type", 1, INT32, False, None),
        ("dns", 100, "DNS", False, "record"),
        ("http", 101, "HTTP", False, "record"),
        ("kafka", 102, BYTES, False, "record"),
    ],
    "DNS": [("query", 1, STRING, False, None), ("rcode", 6, UINT32, False, None)],
    "HTTP": [("code", 1, UINT32, False, None)],
}

#: lean message -> the full messages it reads (for the schema test).
FULL_TYPES: Final[dict[str, tuple[str, ...]]] = {
    "Timestamp": ("google.protobuf.Timestamp",),
    "GetFlowsResponse": ("observer.GetFlowsResponse",),
    "RestResponse": ("observer.GetFlowsResponse",),
    "FlowVarying": ("flow.Flow",),
    "FlowRest": ("flow.Flow",),
    "Layer4": ("flow.Layer4",),
    "TCP": ("flow.TCP",),
    "Ports": ("flow.UDP", "flow.SCTP"),
    "ICMP": ("flow.ICMPv4", "flow.ICMPv6"),
    "Layer7": ("flow.Layer7",),
    "DNS": ("flow.DNS",),
    "HTTP": ("flow.HTTP",),
}


def _file() -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto(
        name="netwarden/lean.proto",
        package=_PACKAGE,
        syntax="editions",
        edition=descriptor_pb2.EDITION_2023,
    )
    for name, fields in SCHEMA.items():
        message = proto.message_type.add(name=name)
        oneofs: dict[str, int] = {}
        for field_name, number, kind, repeated, oneof in fields:
            field = message.field.add(
                name=field_name,
                number=number,
                json_name=field_name,
                label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL,
            )
            if isinstance(kind, str):
                field.type = _F.TYPE_MESSAGE
                field.type_name = f".{_PACKAGE}.{kind}"
            else:
                field.type = kind  # type: ignore[assignment]
            if oneof is not None:
                if oneof not in oneofs:
                    oneofs[oneof] = len(message.oneof_decl)
                    message.oneof_decl.add(name=oneof)
                field.oneof_index = oneofs[oneof]
    return proto


_pool = descriptor_pool.DescriptorPool()
_pool.Add(_file())


def _class(name: str) -> Any:
    return message_factory.GetMessageClass(_pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))


LeanResponse: Final = _class("GetFlowsResponse")
RestResponse: Final = _class("RestResponse")
FlowVarying: Final = _class("FlowVarying")
FlowRest: Final = _class("FlowRest")

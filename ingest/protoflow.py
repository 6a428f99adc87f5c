"""Hubble protobuf flows (``flow.Flow`` from the gRPC Observer API) as netwarden Flow records.

The pipeline reads msgspec records whose fields carry Hubble's protojson names and values
(:class:`~netwarden.ingest.compact.CompactFlow` on the hot path). A flow that arrives as
protobuf is turned into the same record the JSON reader makes of the same flow printed by
``hubble observe -o json``: enums as their names (a number Hubble's enum does not know stays a
number, as protojson writes it; zero stays 0, as an omitted field decodes), absent messages as
``None``, ``is_reply`` ``None`` when unset, times in UTC with microsecond precision (rounded
half up, like the JSON decoder). Endpoint labels and workloads are passed through as the
protobuf's repeated fields, unread: identity resolution reads them only for endpoints it has
not seen before.

Values the JSON reader rejects are rejected here too (:class:`OutOfRange`, with the reader's
reason): an event time outside the range windows can represent (protobuf allows up to year
9999), an L4 port above 65535 (protobuf carries ports in a uint32; protobuf has no negative
uint32).

The tests decode every real sample both ways and compare.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Final

from google.protobuf.message import DecodeError

from netwarden.hubble import flow_pb2, observer_pb2
from netwarden.ingest.compact import (
    CompactDNS,
    CompactEndpoint,
    CompactFlow,
    CompactHTTP,
    CompactIP,
    CompactLayer7,
    CompactStats,
)
from netwarden.ingest.flow import (
    EARLIEST_EVENT_TIME,
    ICMP,
    LATEST_EVENT_TIME,
    SCTP,
    TCP,
    UDP,
    CiliumEventType,
    Layer4,
    TCPFlags,
)
from netwarden.ingest.reader import ErrorReason

__all__ = [
    "DecodeError",
    "OutOfRange",
    "compact_flow",
    "enum_names",
    "flow_time_ns",
    "parse_response",
]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_EARLIEST_SECONDS: Final = int(EARLIEST_EVENT_TIME.timestamp())
_LATEST_SECONDS: Final = int(LATEST_EVENT_TIME.timestamp())
_MAX_PORT: Final = 0xFFFF


class OutOfRange(ValueError):
    """A protobuf flow with a value the JSON reader would reject; ``reason`` is the reader's
    :class:`~netwarden.ingest.reader.ErrorReason` for it."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _check_ports(kind: str, ports: Any) -> None:
    if ports.source_port > _MAX_PORT or ports.destination_port > _MAX_PORT:
        raise OutOfRange(
            ErrorReason.OUT_OF_RANGE,
            f"{kind} port outside 0..65535 (source {ports.source_port}, destination "
            f"{ports.destination_port})",
        )


def enum_names(enum: Any) -> dict[int, str]:
    """Number -> name of a generated protobuf enum, without the zero value (protojson omits
    zero, so the JSON reader sees the field's default, 0)."""
    return {v.number: v.name for v in enum.DESCRIPTOR.values if v.number != 0}


_VERDICT: Final = enum_names(flow_pb2.Verdict)
_DROP_REASON: Final = enum_names(flow_pb2.DropReason)
_FLOW_TYPE: Final = enum_names(flow_pb2.FlowType)
_DIRECTION: Final = enum_names(flow_pb2.TrafficDirection)
_POINT: Final = enum_names(flow_pb2.TraceObservationPoint)
_L7_TYPE: Final = enum_names(flow_pb2.L7FlowType)


def _time(ts: Any) -> datetime:
    """A protobuf Timestamp as an aware UTC datetime, rounded to microseconds half up (as
    msgspec decodes RFC 3339 text)."""
    return _EPOCH + timedelta(0, ts.seconds, (ts.nanos + 500) // 1000)


def flow_time_ns(flow: Any) -> int:
    """The flow's event time in nanoseconds since the epoch (0 when unset)."""
    t = flow.time
    return t.seconds * 1_000_000_000 + t.nanos


def _endpoint(ep: Any) -> CompactEndpoint:
    return CompactEndpoint(ep.identity, ep.namespace, ep.labels, ep.pod_name, ep.workloads)


#: Serialized TCPFlags -> the shared record (a handful of combinations occur; records are
#: never modified, so flows can share them).
_FLAGS: dict[bytes, TCPFlags] = {}


def _flags(f: Any) -> TCPFlags:
    key = f.SerializeToString()
    found = _FLAGS.get(key)
    if found is None:
        found = TCPFlags(f.FIN, f.SYN, f.RST, f.PSH, f.ACK, f.URG, f.ECE, f.CWR, f.NS)
        if len(_FLAGS) < 512:
            _FLAGS[key] = found
    return found


def _layer4(l4: Any) -> Layer4 | None:
    kind = l4.WhichOneof("protocol")
    if kind == "TCP":
        tcp = l4.TCP
        _check_ports(kind, tcp)
        return Layer4(
            TCP=TCP(
                tcp.source_port,
                tcp.destination_port,
                _flags(tcp.flags) if tcp.HasField("flags") else None,
            )
        )
    if kind == "UDP":
        _check_ports(kind, l4.UDP)
        return Layer4(UDP=UDP(l4.UDP.source_port, l4.UDP.destination_port))
    if kind == "ICMPv4":
        return Layer4(ICMPv4=ICMP(l4.ICMPv4.type, l4.ICMPv4.code))
    if kind == "ICMPv6":
        return Layer4(ICMPv6=ICMP(l4.ICMPv6.type, l4.ICMPv6.code))
    if kind == "SCTP":
        _check_ports(kind, l4.SCTP)
        return Layer4(SCTP=SCTP(l4.SCTP.source_port, l4.SCTP.destination_port))
    return Layer4()  # VRRP, IGMP or an empty l4: present, no port protocol netwarden counts


def _layer7(l7: Any) -> CompactLayer7:
    kind = l7.WhichOneof("record")
    dns = http = None
    if kind == "dns":
        dns = CompactDNS(l7.dns.query, l7.dns.rcode)
    elif kind == "http":
        http = CompactHTTP(l7.http.code)
    t = l7.type
    return CompactLayer7(_L7_TYPE.get(t, t), dns, http)


def compact_flow(pb: Any) -> CompactFlow:
    """The :class:`CompactFlow` the JSON reader makes of the same flow (``flow_pb2.Flow``).

    The caller checks that the flow has a time (``pb.HasField("time")``): the pipeline
    orders flows by it. Raises :class:`OutOfRange` for a time or port the reader would reject.
    """
    seconds = pb.time.seconds
    if not _EARLIEST_SECONDS <= seconds < _LATEST_SECONDS:
        raise OutOfRange(
            ErrorReason.TIME_OUT_OF_RANGE,
            f"event time {seconds} s since the epoch is outside "
            f"{EARLIEST_EVENT_TIME:%Y-%m-%d} .. {LATEST_EVENT_TIME:%Y-%m-%d}",
        )
    has = pb.HasField
    verdict = pb.verdict
    desc = pb.drop_reason_desc
    kind = pb.Type
    direction = pb.traffic_direction
    point = pb.trace_observation_point
    ip = pb.IP
    et = pb.event_type
    return CompactFlow(
        _time(pb.time),
        _VERDICT.get(verdict, verdict),
        pb.drop_reason,
        _DROP_REASON.get(desc, desc),
        CompactIP(ip.source, ip.destination) if has("IP") else None,
        _layer4(pb.l4) if has("l4") else None,
        _endpoint(pb.source) if has("source") else None,
        _endpoint(pb.destination) if has("destination") else None,
        _FLOW_TYPE.get(kind, kind),
        tuple(pb.source_names) if pb.source_names else (),
        tuple(pb.destination_names) if pb.destination_names else (),
        _layer7(pb.l7) if has("l7") else None,
        pb.reply,
        CiliumEventType(et.type, et.sub_type) if has("event_type") else None,
        _DIRECTION.get(direction, direction),
        _POINT.get(point, point),
        pb.is_reply.value if has("is_reply") else None,
        _stats(pb.netwarden) if has("netwarden") else None,
    )


def _stats(nw: Any) -> CompactStats:
    return CompactStats(nw.bytes_sent, nw.bytes_received, nw.kernel_drop_reason)


def parse_response(data: bytes) -> Any:
    """Decode one serialized ``observer.GetFlowsResponse``; raises :class:`DecodeError`."""
    response = observer_pb2.GetFlowsResponse()
    response.ParseFromString(data)
    return response

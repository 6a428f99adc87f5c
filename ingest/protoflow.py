"""Hubble protobuf flows (``flow.Flow`` from the gRPC Observer API) as netwarden Flow records.

The pipeline reads msgspec records whose fields carry Hubble's protojson names and values
(:class:`~netwarden.ingest.compact.CompactFlow` on the hot path). A flow that arrives as
protobuf is turned into the same record the JSON reader makes of the same flow printed by
``hubble observe -o json``: enums as their names (a number Hubble's enum does not know stays a
number, as protojson writes it; zero stays 0, as an omitted field decodes), absent messages as
``None``, ``is_reply`` ``None`` when unset, times in UTC with microsecond precision (rounded
half up, like the JSON decoder). Endpoint labels and workloads are tuples (identity resolution
reads them only for endpoints it has not seen before).

Speed: Python code that reads a protobuf message pays for every field it touches (each read
a call into upb and a new object): turning every flow into a record field by field cost about
three times what msgspec takes to decode the same flow from JSON. So the lean schema
(:mod:`netwarden.ingest.leanproto`) reads per flow only what differs between flows (time,
uuid, layer 4, layer 7, netwarden's counters). The rest that windows read (endpoints, IPs,
verdict, direction, names...) repeats: its bytes, re-serialized without everything else, key a
bounded cache of the record fields they give, made once per distinct key (from sub-messages
cached by their bytes in turn). Flows share those (never modified) records. A
:class:`FlowDecoder` holds the caches; one per stream.

Values the JSON reader rejects are rejected here too (:class:`OutOfRange`, with the reader's
reason): an event time outside the range windows can represent (protobuf allows up to year
9999), an L4 port above 65535 (protobuf carries ports in a uint32; protobuf has no negative
uint32).

The tests decode every real sample both ways and compare.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar

from google.protobuf.message import DecodeError
from google.protobuf.wrappers_pb2 import BoolValue

from netwarden.hubble import flow_pb2, netwarden_pb2, observer_pb2
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
    Workload,
)
from netwarden.ingest.leanproto import LeanResponse, RestResponse
from netwarden.ingest.reader import ErrorReason

__all__ = [
    "DecodeError",
    "FlowDecoder",
    "OutOfRange",
    "compact_flow",
    "enum_names",
    "full_response",
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


def _port_error(kind: str, source: int, destination: int) -> OutOfRange:
    return OutOfRange(
        ErrorReason.OUT_OF_RANGE,
        f"{kind} port outside 0..65535 (source {source}, destination {destination})",
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


# present but empty sub-messages (records are never modified, so flows share them)
_NO_ENDPOINT: Final = CompactEndpoint(0, "", (), "", ())  # type: ignore[arg-type]
_NO_IP: Final = CompactIP()
_NO_EVENT_TYPE: Final = CiliumEventType()
_NO_FLAGS: Final = TCPFlags()
#: Entries each cache holds before it is emptied. Generated clusters have about 1,100 distinct
#: rests (keys of about 700 bytes) in 4 hours, 49 endpoints, 800 IP pairs: a full cache of rests
#: is a few MB.
CACHE_LIMIT: Final = 4096

V = TypeVar("V")


def _cached(cache: dict[bytes, V], data: bytes, make: Callable[[bytes], V]) -> V:
    """``make(data)``, remembered (a cache miss: parse once with the full type)."""
    if len(cache) >= CACHE_LIMIT:
        cache.clear()
    value = cache[data] = make(data)
    return value


def _endpoint(data: bytes) -> CompactEndpoint:
    ep = flow_pb2.Endpoint.FromString(data)
    return CompactEndpoint(
        ep.identity,
        ep.namespace,
        tuple(ep.labels),  # type: ignore[arg-type]
        ep.pod_name,
        tuple(Workload(w.name, w.kind) for w in ep.workloads),  # type: ignore[arg-type]
    )


def _ip(data: bytes) -> CompactIP:
    ip = flow_pb2.IP.FromString(data)
    return CompactIP(ip.source, ip.destination)


def _event_type(data: bytes) -> CiliumEventType:
    et = flow_pb2.CiliumEventType.FromString(data)
    return CiliumEventType(et.type, et.sub_type)


def _flags(data: bytes) -> TCPFlags:
    f = flow_pb2.TCPFlags.FromString(data)
    return TCPFlags(f.FIN, f.SYN, f.RST, f.PSH, f.ACK, f.URG, f.ECE, f.CWR, f.NS)


def _bool_value(data: bytes) -> bool:
    return BoolValue.FromString(data).value


def _stats(data: bytes) -> CompactStats:
    nw = netwarden_pb2.ConnectionStats.FromString(data)
    return CompactStats(nw.bytes_sent, nw.bytes_received, nw.kernel_drop_reason)


def _layer4(l4: Any, flags_cache: dict[bytes, TCPFlags]) -> Layer4:
    """A lean ``flow.Layer4`` as the record."""
    kind = l4.WhichOneof("protocol")
    if kind == "TCP":
        tcp = l4.TCP
        sp = tcp.source_port
        dp = tcp.destination_port
        if sp > _MAX_PORT or dp > _MAX_PORT:
            raise _port_error(kind, sp, dp)
        flags = tcp.flags
        if flags:
            found = flags_cache.get(flags)
            if found is None:
                found = _cached(flags_cache, flags, _flags)
        else:
            found = _NO_FLAGS if tcp.HasField("flags") else None
        return Layer4(TCP(sp, dp, found))
    if kind == "UDP" or kind == "SCTP":
        ports = l4.UDP if kind == "UDP" else l4.SCTP
        sp = ports.source_port
        dp = ports.destination_port
        if sp > _MAX_PORT or dp > _MAX_PORT:
            raise _port_error(kind, sp, dp)
        return Layer4(UDP=UDP(sp, dp)) if kind == "UDP" else Layer4(SCTP=SCTP(sp, dp))
    if kind == "ICMPv4":
        return Layer4(ICMPv4=ICMP(l4.ICMPv4.type, l4.ICMPv4.code))
    if kind == "ICMPv6":
        return Layer4(ICMPv6=ICMP(l4.ICMPv6.type, l4.ICMPv6.code))
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


#: What :meth:`FlowDecoder.rest` returns: CompactFlow's fields but time, l4, l7, netwarden.
Rest = tuple[Any, ...]


class FlowDecoder:
    """Lean ``flow.Flow`` messages (:data:`~netwarden.ingest.leanproto.FlowVarying`) to
    :class:`CompactFlow` records, with bounded caches (:data:`CACHE_LIMIT` entries each) of
    what repeats: the rest of a flow beside its varying fields, and sub-messages."""

    def __init__(self) -> None:
        self.rests: dict[bytes, Rest] = {}
        self.endpoints: dict[bytes, CompactEndpoint] = {}
        self.ips: dict[bytes, CompactIP] = {}
        self.event_types: dict[bytes, CiliumEventType] = {}
        self.flags: dict[bytes, TCPFlags] = {}
        self.bools: dict[bytes, bool] = {}
        # the last event time's whole second and its datetime fields, in one tuple (replaced
        # whole, so threads sharing a decoder never see one second with another's fields)
        self._second: tuple[int, int, int, int, int, int, int] = (-1, 1970, 1, 1, 0, 0, 0)

    def _new_second(self, seconds: int) -> tuple[int, int, int, int, int, int, int]:
        """Check the event time's second and keep its datetime fields for the flows of it."""
        if not _EARLIEST_SECONDS <= seconds < _LATEST_SECONDS:
            raise OutOfRange(
                ErrorReason.TIME_OUT_OF_RANGE,
                f"event time {seconds} s since the epoch is outside "
                f"{EARLIEST_EVENT_TIME:%Y-%m-%d} .. {LATEST_EVENT_TIME:%Y-%m-%d}",
            )
        t = _EPOCH + timedelta(0, seconds)
        self._second = (seconds, t.year, t.month, t.day, t.hour, t.minute, t.second)
        return self._second

    def record(self, data: bytes, flow: Any, seconds: int, nanos: int) -> CompactFlow:
        r"""The :class:`CompactFlow` the JSON reader makes of the flow in ``data`` (a serialized
        ``GetFlowsResponse``), whose varying fields are ``flow``
        (:func:`parse_response`\ ``(data).flow``), at the event time ``seconds`` and ``nanos``
        (the flow's, or the response's, timestamp).

        The time becomes an aware UTC datetime rounded to microseconds half up (as msgspec
        decodes RFC 3339 text). Raises :class:`OutOfRange` for a time or port the reader would
        reject, and :class:`DecodeError` for a malformed sub-message.
        """
        second, y, mo, d, h, mi, s = self._second
        if second != seconds:
            second, y, mo, d, h, mi, s = self._new_second(seconds)
        micros = (nanos + 500) // 1000
        if 0 <= micros < 1_000_000:  # flows of one second share the date arithmetic
            time = datetime(y, mo, d, h, mi, s, micros, UTC)
        else:  # nanos outside 0..999,999,499
            time = _EPOCH + timedelta(0, seconds, micros)
        has = flow.HasField
        l4 = _layer4(flow.l4, self.flags) if has("l4") else None
        l7 = _layer7(flow.l7) if has("l7") else None
        sub = flow.netwarden
        stats = _stats(sub) if sub or has("netwarden") else None
        message = RestResponse.FromString(data)
        message.DiscardUnknownFields()  # the varying fields, and those windows do not read
        key = message.SerializeToString()
        rest = self.rests.get(key)
        if rest is None:
            if len(self.rests) >= CACHE_LIMIT:
                self.rests.clear()
            rest = self.rests[key] = self.rest(message.flow)
        verdict, drop, desc, ip, src, dst, kind, sn, dn, reply, et, direction, point, is_reply = (
            rest
        )
        return CompactFlow(
            time,
            verdict,
            drop,
            desc,
            ip,
            l4,
            src,
            dst,
            kind,
            sn,
            dn,
            l7,
            reply,
            et,
            direction,
            point,
            is_reply,
            stats,
        )

    def rest(self, flow: Any) -> Rest:
        """A flow's fields but the varying ones, from a
        :data:`~netwarden.ingest.leanproto.FlowRest`, in :class:`CompactFlow` order."""
        has = flow.HasField
        verdict = flow.verdict
        desc = flow.drop_reason_desc
        kind = flow.Type
        direction = flow.traffic_direction
        point = flow.trace_observation_point
        return (
            _VERDICT.get(verdict, verdict),
            flow.drop_reason,
            _DROP_REASON.get(desc, desc),
            self._sub(flow, "IP", self.ips, _ip, _NO_IP),
            self._sub(flow, "source", self.endpoints, _endpoint, _NO_ENDPOINT),
            self._sub(flow, "destination", self.endpoints, _endpoint, _NO_ENDPOINT),
            _FLOW_TYPE.get(kind, kind),
            tuple(flow.source_names),
            tuple(flow.destination_names),
            flow.reply,
            self._sub(flow, "event_type", self.event_types, _event_type, _NO_EVENT_TYPE),
            _DIRECTION.get(direction, direction),
            _POINT.get(point, point),
            self._sub(flow, "is_reply", self.bools, _bool_value, False)
            if has("is_reply")
            else None,
        )

    @staticmethod
    def _sub(
        flow: Any, name: str, cache: dict[bytes, V], make: Callable[[bytes], V], empty: V
    ) -> V | None:
        """A sub-message declared ``bytes``: None when absent, ``empty`` when present but
        empty, else ``make(data)`` once per distinct value."""
        data = getattr(flow, name)
        if not data:
            return empty if flow.HasField(name) else None
        found = cache.get(data)
        return _cached(cache, data, make) if found is None else found


_DECODER = FlowDecoder()


def _response_bytes(flow: bytes) -> bytes:
    """A serialized ``GetFlowsResponse`` holding the serialized flow ``flow`` (field 1)."""
    head = bytearray(b"\x0a")
    n = len(flow)
    while n > 0x7F:
        head.append(n & 0x7F | 0x80)
        n >>= 7
    head.append(n)
    return bytes(head) + flow


def compact_flow(pb: Any) -> CompactFlow:
    """The :class:`CompactFlow` the JSON reader makes of the same flow (a full
    ``flow_pb2.Flow``: for tests and tools; streams use a :class:`FlowDecoder` on the bytes).

    The caller checks that the flow has a time (``pb.HasField("time")``): the pipeline
    orders flows by it. Raises :class:`OutOfRange` for a time or port the reader would reject.
    """
    data = _response_bytes(pb.SerializeToString())
    lean = parse_response(data).flow
    return _DECODER.record(data, lean, lean.time.seconds, lean.time.nanos)


def parse_response(data: bytes) -> Any:
    """Decode one serialized ``observer.GetFlowsResponse`` into the lean schema
    (:data:`~netwarden.ingest.leanproto.LeanResponse`: a flow's fields that windows read;
    ``lost_events`` and ``node_status`` as bytes, for :func:`full_response`); raises
    :class:`DecodeError`."""
    return LeanResponse.FromString(data)


def full_response(data: bytes) -> Any:
    """The full ``observer.GetFlowsResponse`` (for the rare messages that are not flows)."""
    return observer_pb2.GetFlowsResponse.FromString(data)

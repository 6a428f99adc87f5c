"""The Flow record: a faithful subset of Hubble's ``flow.Flow``, decoded with msgspec.

Every source (Hubble JSON, Hubble gRPC, the bpf agent, replays) produces these records. Field
names are Hubble's protojson names (``IP``, ``l4``, ``Type``, ``ID``, ``TCP`` ...) so that a real
``hubble observe -o json`` line decodes without conversion; see ``shared/data/INTERFACES.md``.

Encoding rules this module absorbs (protojson with ``UseProtoNames``):

* zero values are omitted, so every field has a zero default;
* 64-bit integers (``latency_ns``, ``num_events_lost``, ...) arrive as JSON strings: the decoder
  runs with ``strict=False``, which accepts ``"123"`` where an ``int`` is declared;
* enums arrive as names, or as numbers when the value is unknown to the writer: enum fields are
  ``str | int`` and :func:`enum_code` maps either form to the number.

Numbers are checked against the range of their protobuf type (:data:`Port`, :data:`Uint32`,
:data:`Count`): a port of -1 or 70000, a negative byte count or lost-event count, an identity
beyond 32 bits is not a flow Hubble can write, and downstream code (port sets, policy proposals,
sums) must be able to trust them. msgspec checks the bounds while decoding, so a line that breaks
one fails to decode (the reader counts it as ``out_of_range``) at no measurable cost.

Fields that no stage of netwarden reads (ethernet, tunnel, policy correlation, ...) are not
declared: msgspec skips them without building objects, which keeps decoding cheap. Repeated
fields are tuples and the structs are not tracked by the cyclic garbage collector (``gc=False``;
a flow holds no reference cycles): with lists and tracked structs, the collector's passes over
the flows in flight cost more than decoding them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Final

import msgspec

__all__ = [
    "DNS",
    "DROP_REASONS",
    "DROP_REASON_CODES",
    "EARLIEST_EVENT_TIME",
    "HTTP",
    "ICMP",
    "IP",
    "LATEST_EVENT_TIME",
    "TCP",
    "TRACE_OBSERVATION_POINTS",
    "TRAFFIC_DIRECTIONS",
    "UDP",
    "VERDICTS",
    "CiliumEventType",
    "ConnectionStats",
    "Count",
    "Endpoint",
    "EventType",
    "Flow",
    "FlowType",
    "Layer4",
    "Layer7",
    "LostEvent",
    "NodeStatusEvent",
    "Port",
    "Service",
    "TCPFlags",
    "Uint32",
    "Workload",
    "enum_code",
]


#: Event times a flow may carry: [EARLIEST, LATEST). Hubble stamps flows with Unix time, so
#: nothing real precedes 1970; the upper bound leaves a year of headroom below
#: ``datetime.max`` for what is derived from an event time (a window's end, at most a day later;
#: a baseline's novelty horizon, at most 30 days), so no later stage overflows ``datetime``
#: ("year 10000 is out of range"). How far ahead of the *stream* a flow may be is the window
#: builder's question (``WindowConfig.max_skew``), not a property of the record.
EARLIEST_EVENT_TIME: Final = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_EVENT_TIME: Final = datetime(9999, 1, 1, tzinfo=UTC)

#: An L4 port: 16 bits on the wire (protobuf carries it in a uint32).
Port = Annotated[int, msgspec.Meta(ge=0, le=0xFFFF)]
#: A protobuf uint32 (security identities, endpoint IDs, codes).
Uint32 = Annotated[int, msgspec.Meta(ge=0, le=0xFFFF_FFFF)]
#: A protobuf uint64 counter (events lost, bytes, packets, nanoseconds): never negative.
Count = Annotated[int, msgspec.Meta(ge=0)]


class TCPFlags(msgspec.Struct, omit_defaults=True, gc=False):
    """TCP flags; only the flags that are set appear in Hubble JSON."""

    FIN: bool = False
    SYN: bool = False
    RST: bool = False
    PSH: bool = False
    ACK: bool = False
    URG: bool = False
    ECE: bool = False
    CWR: bool = False
    NS: bool = False


class TCP(msgspec.Struct, omit_defaults=True, gc=False):
    source_port: Port = 0
    destination_port: Port = 0
    flags: TCPFlags | None = None


class UDP(msgspec.Struct, omit_defaults=True, gc=False):
    source_port: Port = 0
    destination_port: Port = 0


class SCTP(msgspec.Struct, omit_defaults=True, gc=False):
    source_port: Port = 0
    destination_port: Port = 0


class ICMP(msgspec.Struct, omit_defaults=True, gc=False):
    """ICMPv4 or ICMPv6 type and code."""

    type: Uint32 = 0
    code: Uint32 = 0


class Layer4(msgspec.Struct, omit_defaults=True, gc=False):
    """Hubble's ``Layer4`` oneof: at most one member is set."""

    TCP: TCP | None = None
    UDP: UDP | None = None
    ICMPv4: ICMP | None = None
    ICMPv6: ICMP | None = None
    SCTP: SCTP | None = None


class IP(msgspec.Struct, omit_defaults=True, gc=False):
    source: str = ""
    destination: str = ""
    ipVersion: str | int = 0
    source_xlated: str = ""
    encrypted: bool = False


class Workload(msgspec.Struct, omit_defaults=True, gc=False):
    name: str = ""
    kind: str = ""


class Endpoint(msgspec.Struct, omit_defaults=True, gc=False):
    """One end of a flow. ``labels`` are ``source:key=value`` strings, sorted by Cilium."""

    ID: Uint32 = 0
    identity: Uint32 = 0
    cluster_name: str = ""
    namespace: str = ""
    labels: tuple[str, ...] = ()
    pod_name: str = ""
    workloads: tuple[Workload, ...] = ()


class Service(msgspec.Struct, omit_defaults=True, gc=False):
    name: str = ""
    namespace: str = ""


class CiliumEventType(msgspec.Struct, omit_defaults=True, gc=False):
    """Monitor event type (1 drop, 4 trace, 5 policy verdict, 129 L7, ...) and sub type."""

    type: int = 0
    sub_type: int = 0


class DNS(msgspec.Struct, omit_defaults=True, gc=False, frozen=True):
    query: str = ""
    ips: tuple[str, ...] = ()
    ttl: Uint32 = 0
    cnames: tuple[str, ...] = ()
    observation_source: str = ""
    rcode: Uint32 = 0
    qtypes: tuple[str, ...] = ()
    rrtypes: tuple[str, ...] = ()


class HTTP(msgspec.Struct, omit_defaults=True, gc=False, frozen=True):
    code: Uint32 = 0
    method: str = ""
    url: str = ""
    protocol: str = ""


class Layer7(msgspec.Struct, omit_defaults=True, gc=False, frozen=True):
    type: str | int = 0
    latency_ns: Count = 0
    dns: DNS | None = None
    http: HTTP | None = None


class ConnectionStats(msgspec.Struct, omit_defaults=True, gc=False, frozen=True):
    """netwarden's own flow field ``netwarden`` (not Hubble's): what its eBPF agent measured.

    Byte and packet counts are in the flow's orientation: ``*_sent`` from source to
    destination. ``kernel_drop_reason`` is the running kernel's skb drop reason name.
    """

    bytes_sent: Count = 0
    bytes_received: Count = 0
    packets_sent: Count = 0
    packets_received: Count = 0
    duration_ns: Count = 0
    retransmits: Count = 0
    kernel_drop_reason: str = ""
    kernel_drop_location: str = ""
    pid: int = 0
    comm: str = ""
    netns: int = 0
    cgroup_id: int = 0


class Flow(msgspec.Struct, omit_defaults=True, gc=False):
    """One Hubble flow event. ``time`` is the event time (UTC, microsecond precision)."""

    time: datetime | None = None
    uuid: str = ""
    verdict: str | int = 0
    drop_reason: Uint32 = 0
    drop_reason_desc: str | int = 0
    IP: IP | None = None
    l4: Layer4 | None = None
    source: Endpoint | None = None
    destination: Endpoint | None = None
    Type: str | int = 0
    node_name: str = ""
    source_names: tuple[str, ...] = ()
    destination_names: tuple[str, ...] = ()
    l7: Layer7 | None = None
    reply: bool = False
    event_type: CiliumEventType | None = None
    source_service: Service | None = None
    destination_service: Service | None = None
    traffic_direction: str | int = 0
    policy_match_type: int = 0
    trace_observation_point: str | int = 0
    is_reply: bool | None = None
    Summary: str = ""
    netwarden: ConnectionStats | None = None  # netwarden's own field (eBPF agent)


class LostEvent(msgspec.Struct, omit_defaults=True, gc=False):
    """Events the producer lost (ring buffer overflow ...): counted, never a flow."""

    source: str | int = 0
    num_events_lost: Count = 0


class NodeStatusEvent(msgspec.Struct, omit_defaults=True, gc=False):
    state_change: str | int = 0
    node_names: tuple[str, ...] = ()
    message: str = ""


# --- enums: Hubble name -> number (flow.proto v1.19.4) -------------------------------------

VERDICTS: Final[dict[str, int]] = {
    "VERDICT_UNKNOWN": 0,
    "FORWARDED": 1,
    "DROPPED": 2,
    "ERROR": 3,
    "AUDIT": 4,
    "REDIRECTED": 5,
    "TRACED": 6,
    "TRANSLATED": 7,
}
TRAFFIC_DIRECTIONS: Final[dict[str, int]] = {
    "TRAFFIC_DIRECTION_UNKNOWN": 0,
    "INGRESS": 1,
    "EGRESS": 2,
}
FLOW_TYPES: Final[dict[str, int]] = {"UNKNOWN_TYPE": 0, "L3_L4": 1, "L7": 2, "SOCK": 3}
L7_FLOW_TYPES: Final[dict[str, int]] = {
    "UNKNOWN_L7_TYPE": 0,
    "REQUEST": 1,
    "RESPONSE": 2,
    "SAMPLE": 3,
}
TRACE_OBSERVATION_POINTS: Final[dict[str, int]] = {
    "UNKNOWN_POINT": 0,
    "TO_PROXY": 1,
    "TO_HOST": 2,
    "TO_STACK": 3,
    "TO_OVERLAY": 4,
    "TO_ENDPOINT": 101,
    "FROM_ENDPOINT": 5,
    "FROM_PROXY": 6,
    "FROM_HOST": 7,
    "FROM_STACK": 8,
    "FROM_OVERLAY": 9,
    "FROM_NETWORK": 10,
    "TO_NETWORK": 11,
    "FROM_CRYPTO": 12,
    "TO_CRYPTO": 13,
}
LOST_EVENT_SOURCES: Final[dict[str, int]] = {
    "UNKNOWN_LOST_EVENT_SOURCE": 0,
    "PERF_EVENT_RING_BUFFER": 1,
    "OBSERVER_EVENTS_QUEUE": 2,
    "HUBBLE_RING_BUFFER": 3,
}

#: DropReason code -> name (flow.proto v1.19.4; 159 is unused).
DROP_REASONS: Final[dict[int, str]] = {
    0: "DROP_REASON_UNKNOWN",
    130: "INVALID_SOURCE_MAC",
    131: "INVALID_DESTINATION_MAC",
    132: "INVALID_SOURCE_IP",
    133: "POLICY_DENIED",
    134: "INVALID_PACKET_DROPPED",
    135: "CT_TRUNCATED_OR_INVALID_HEADER",
    136: "CT_MISSING_TCP_ACK_FLAG",
    137: "CT_UNKNOWN_L4_PROTOCOL",
    138: "CT_CANNOT_CREATE_ENTRY_FROM_PACKET",
    139: "UNSUPPORTED_L3_PROTOCOL",
    140: "MISSED_TAIL_CALL",
    141: "ERROR_WRITING_TO_PACKET",
    142: "UNKNOWN_L4_PROTOCOL",
    143: "UNKNOWN_ICMPV4_CODE",
    144: "UNKNOWN_ICMPV4_TYPE",
    145: "UNKNOWN_ICMPV6_CODE",
    146: "UNKNOWN_ICMPV6_TYPE",
    147: "ERROR_RETRIEVING_TUNNEL_KEY",
    148: "ERROR_RETRIEVING_TUNNEL_OPTIONS",
    149: "INVALID_GENEVE_OPTION",
    150: "UNKNOWN_L3_TARGET_ADDRESS",
    151: "STALE_OR_UNROUTABLE_IP",
    152: "NO_MATCHING_LOCAL_CONTAINER_FOUND",
    153: "ERROR_WHILE_CORRECTING_L3_CHECKSUM",
    154: "ERROR_WHILE_CORRECTING_L4_CHECKSUM",
    155: "CT_MAP_INSERTION_FAILED",
    156: "INVALID_IPV6_EXTENSION_HEADER",
    157: "IP_FRAGMENTATION_NOT_SUPPORTED",
    158: "SERVICE_BACKEND_NOT_FOUND",
    160: "NO_TUNNEL_OR_ENCAPSULATION_ENDPOINT",
    161: "FAILED_TO_INSERT_INTO_PROXYMAP",
    162: "REACHED_EDT_RATE_LIMITING_DROP_HORIZON",
    163: "UNKNOWN_CONNECTION_TRACKING_STATE",
    164: "LOCAL_HOST_IS_UNREACHABLE",
    165: "NO_CONFIGURATION_AVAILABLE_TO_PERFORM_POLICY_DECISION",
    166: "UNSUPPORTED_L2_PROTOCOL",
    167: "NO_MAPPING_FOR_NAT_MASQUERADE",
    168: "UNSUPPORTED_PROTOCOL_FOR_NAT_MASQUERADE",
    169: "FIB_LOOKUP_FAILED",
    170: "ENCAPSULATION_TRAFFIC_IS_PROHIBITED",
    171: "INVALID_IDENTITY",
    172: "UNKNOWN_SENDER",
    173: "NAT_NOT_NEEDED",
    174: "IS_A_CLUSTERIP",
    175: "FIRST_LOGICAL_DATAGRAM_FRAGMENT_NOT_FOUND",
    176: "FORBIDDEN_ICMPV6_MESSAGE",
    177: "DENIED_BY_LB_SRC_RANGE_CHECK",
    178: "SOCKET_LOOKUP_FAILED",
    179: "SOCKET_ASSIGN_FAILED",
    180: "PROXY_REDIRECTION_NOT_SUPPORTED_FOR_PROTOCOL",
    181: "POLICY_DENY",
    182: "VLAN_FILTERED",
    183: "INVALID_VNI",
    184: "INVALID_TC_BUFFER",
    185: "NO_SID",
    186: "MISSING_SRV6_STATE",
    187: "NAT46",
    188: "NAT64",
    189: "AUTH_REQUIRED",
    190: "CT_NO_MAP_FOUND",
    191: "SNAT_NO_MAP_FOUND",
    192: "INVALID_CLUSTER_ID",
    193: "UNSUPPORTED_PROTOCOL_FOR_DSR_ENCAP",
    194: "NO_EGRESS_GATEWAY",
    195: "UNENCRYPTED_TRAFFIC",
    196: "TTL_EXCEEDED",
    197: "NO_NODE_ID",
    198: "DROP_RATE_LIMITED",
    199: "IGMP_HANDLED",
    200: "IGMP_SUBSCRIBED",
    201: "MULTICAST_HANDLED",
    202: "DROP_HOST_NOT_READY",
    203: "DROP_EP_NOT_READY",
    204: "DROP_NO_EGRESS_IP",
    205: "DROP_PUNT_PROXY",
}
DROP_REASON_CODES: Final[dict[str, int]] = {name: code for code, name in DROP_REASONS.items()}


class EventType:
    """Monitor message types (``event_type.type``)."""

    UNSPEC: Final = 0
    DROP: Final = 1
    DEBUG: Final = 2
    CAPTURE: Final = 3
    TRACE: Final = 4
    POLICY_VERDICT: Final = 5
    RECORDER: Final = 6
    TRACE_SOCK: Final = 7
    L7: Final = 129
    AGENT: Final = 130


class FlowType:
    UNKNOWN: Final = 0
    L3_L4: Final = 1
    L7: Final = 2
    SOCK: Final = 3


def enum_code(value: str | int, names: dict[str, int]) -> int:
    """Map an enum given by name or number to its number; an unknown name maps to 0.

    >>> enum_code("DROPPED", VERDICTS), enum_code(2, VERDICTS), enum_code("NEW_THING", VERDICTS)
    (2, 2, 0)
    """
    if isinstance(value, int):
        return value
    return names.get(value, 0)

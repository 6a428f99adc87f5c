"""A lean Flow for the windowing hot path: only the fields features read.

Same field names and types as :class:`netwarden.ingest.flow.Flow`, so every stage that reads a
``Flow`` reads a ``CompactFlow`` too; fields no feature uses are not declared (msgspec skips them
without allocating) and endpoint labels stay raw JSON until identity resolution needs them, once
per distinct endpoint. Numbers carry the same range checks as the full Flow (ports, identities,
counters), so both decode the same lines. Decoding this instead of the full Flow is what lets the whole path from
bytes to windows beat plain ``orjson.loads``.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from netwarden.ingest.flow import CiliumEventType, Count, Layer4, Uint32

__all__ = [
    "CompactDNS",
    "CompactEndpoint",
    "CompactFlow",
    "CompactHTTP",
    "CompactIP",
    "CompactLayer7",
    "CompactStats",
]

_EMPTY_LIST = msgspec.Raw(b"[]")


class CompactEndpoint(msgspec.Struct, gc=False):
    """Identity, namespace and pod name decoded; labels and workloads kept as raw JSON."""

    identity: Uint32 = 0
    namespace: str = ""
    labels: msgspec.Raw = _EMPTY_LIST
    pod_name: str = ""
    workloads: msgspec.Raw = _EMPTY_LIST


class CompactIP(msgspec.Struct, gc=False):
    source: str = ""
    destination: str = ""


class CompactDNS(msgspec.Struct, gc=False, frozen=True):
    query: str = ""
    rcode: Uint32 = 0


class CompactHTTP(msgspec.Struct, gc=False, frozen=True):
    code: Uint32 = 0


class CompactLayer7(msgspec.Struct, gc=False, frozen=True):
    """Frozen, so hashable: the window builder aggregates equal L7 records."""

    type: str | int = 0
    dns: CompactDNS | None = None
    http: CompactHTTP | None = None


class CompactStats(msgspec.Struct, gc=False, frozen=True):
    """The part of netwarden's own ``netwarden`` flow field that features read."""

    bytes_sent: Count = 0
    bytes_received: Count = 0
    kernel_drop_reason: str = ""


class CompactFlow(msgspec.Struct, gc=False):
    time: datetime | None = None
    verdict: str | int = 0
    drop_reason: Uint32 = 0
    drop_reason_desc: str | int = 0
    IP: CompactIP | None = None
    l4: Layer4 | None = None
    source: CompactEndpoint | None = None
    destination: CompactEndpoint | None = None
    Type: str | int = 0
    source_names: tuple[str, ...] = ()
    destination_names: tuple[str, ...] = ()
    l7: CompactLayer7 | None = None
    reply: bool = False
    event_type: CiliumEventType | None = None
    traffic_direction: str | int = 0
    trace_observation_point: str | int = 0
    is_reply: bool | None = None
    netwarden: CompactStats | None = None

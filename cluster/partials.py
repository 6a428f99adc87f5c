"""Partial windows on the wire, and where they go in NATS JetStream.

A node's agent builds its own windows (:class:`~netwarden.ingest.windows.WindowBuilder` on that
node's flows) and sends each closed one as a *partial*: the window's mergeable state
(:class:`~netwarden.ingest.features.SideStats` of both sides: counters, sketches as their own
canonical bytes, port histogram, edges, pods) plus who sent it. Partials of one identity and
window from every node merge, with :meth:`ClosedWindow.merge`, into exactly the window one
builder fed all the flows would have closed, so the detector never needs the flows.

**Format.** A msgpack array (msgspec), first element :data:`FORMAT_VERSION`: a reader refuses a
version it does not know instead of misreading it. Edge keys are wider than msgpack's 64-bit
integers (``peer_hash << 25 | port key``), so edges travel as (peer hash, port key) pairs and an
edge's four packed 32-bit counters as two 64-bit halves.

**Subjects.** An agent publishes to ``netwarden.in.<namespace>.<workload>``; the server's subject
mapping (:func:`server_mappings`, NATS's deterministic ``partition()``, FNV-1a of the tokens)
rewrites it to ``netwarden.partials.<p>.<namespace>.<workload>``, ``p`` in ``[0, partitions)``,
which the stream (:func:`stream_config`) stores. So one identity is always in one partition, and
a detector shard that owns a partition sees every node's partials of its identities.
:func:`partition_of` computes the same ``p`` (the tests check it against the server).

**Identity of a message.** ``Nats-Msg-Id`` is ``<node>/<epoch>/<seq>``: the node, the agent
process's start (nanoseconds), and its own sequence number. JetStream drops a message whose id
it stored within the stream's duplicate window, so an agent that retries after a lost
acknowledgement does not store a partial twice; a shard also ignores a second copy of one id.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

import msgspec

from netwarden.ingest.features import EDGE_KEY_SHIFT, SideStats
from netwarden.ingest.identity import Subject
from netwarden.ingest.sketch import DistinctSketch
from netwarden.ingest.windows import ClosedWindow

__all__ = [
    "FORMAT_VERSION",
    "INPUT_PREFIX",
    "PARTITIONED_PREFIX",
    "STREAM",
    "Partial",
    "StreamLimits",
    "decode_partial",
    "encode_partial",
    "input_subject",
    "partition_filter",
    "partition_of",
    "partitions_of_replica",
    "server_mappings",
    "stream_config",
    "subject_token",
]

FORMAT_VERSION: Final = 1
STREAM: Final = "NETWARDEN_PARTIALS"
#: Agents publish here; the server maps it to PARTITIONED_PREFIX.<p>.<ns>.<workload>.
INPUT_PREFIX: Final = "netwarden.in"
PARTITIONED_PREFIX: Final = "netwarden.partials"
_PORT_MASK: Final = (1 << EDGE_KEY_SHIFT) - 1
_MASK64: Final = (1 << 64) - 1
_SAFE: Final = re.compile(r"[A-Za-z0-9_-]+")


def subject_token(name: str) -> str:
    """``name`` as one NATS subject token: percent-escaped where it holds anything but letters,
    digits, ``-`` and ``_`` (a workload name may hold dots, which separate tokens); ``%`` for
    the empty name. Only routing depends on it: the payload carries the identity itself."""
    if _SAFE.fullmatch(name):
        return name
    return quote(name, safe="").replace(".", "%2E").replace("~", "%7E") or "%"


def input_subject(namespace: str, workload: str) -> str:
    """Where an agent publishes an identity's partials (before the server's mapping)."""
    return f"{INPUT_PREFIX}.{subject_token(namespace)}.{subject_token(workload)}"


def partition_of(namespace: str, workload: str, partitions: int) -> int:
    """The partition NATS's ``{{partition(n,1,2)}}`` maps an identity's subject to: FNV-1a
    (32 bit) of the two tokens, concatenated, modulo ``partitions``."""
    h = 0x811C9DC5
    for byte in (subject_token(namespace) + subject_token(workload)).encode():
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h % partitions


def partition_filter(partition: int) -> str:
    """The subject filter of one partition (a shard's consumer of it)."""
    return f"{PARTITIONED_PREFIX}.{partition}.>"


def partitions_of_replica(ordinal: int, replicas: int, partitions: int) -> list[int]:
    """The partitions StatefulSet pod ``ordinal`` of ``replicas`` owns: ``p % replicas ==
    ordinal``. Every partition has exactly one owner for a given replica count."""
    if not 0 <= ordinal < replicas:
        raise ValueError(f"ordinal {ordinal} is not in [0, {replicas})")
    if replicas > partitions:
        raise ValueError(f"{replicas} replicas but only {partitions} partitions: some would idle")
    return [p for p in range(partitions) if p % replicas == ordinal]


def server_mappings(partitions: int) -> str:
    """The nats-server configuration block that partitions the agents' subjects (NATS 2.8 on;
    in 2.10 a stream's ``subject_transform`` can do the same)."""
    if not 1 <= partitions <= 1024:
        raise ValueError(f"partitions must be 1 to 1024, not {partitions}")
    source = f"{INPUT_PREFIX}.*.*"
    target = f"{PARTITIONED_PREFIX}.{{{{partition({partitions},1,2)}}}}.{{{{wildcard(1)}}}}.{{{{wildcard(2)}}}}"
    return f'mappings = {{\n  "{source}": "{target}"\n}}\n'


@dataclass(frozen=True)
class StreamLimits:
    """The stream's limits, on partials not merged yet. ``max_age`` bounds how long they wait
    for a shard (a shard down longer than that loses windows: alert on consumer lag well
    before); ``max_bytes`` bounds the disk (oldest partials go first); ``duplicate_window`` is
    how long JetStream remembers message ids to drop an agent's retries."""

    max_age: float = 6 * 3600.0
    max_bytes: int = 8 << 30
    duplicate_window: float = 600.0
    replicas: int = 1


def stream_config(limits: StreamLimits | None = None) -> dict[str, Any]:
    """Keyword arguments of ``nats.js.api.StreamConfig`` for the partials stream: file
    storage, work-queue retention (a partial is deleted once its partition's consumer
    acknowledges it, i.e. once its window was handed off: the stream holds only the backlog;
    the partitions' consumers never overlap, as a work queue requires), and within the limits
    oldest discarded first."""
    limits = limits or StreamLimits()
    return {
        "name": STREAM,
        "subjects": [f"{PARTITIONED_PREFIX}.>"],
        "retention": "workqueue",
        "storage": "file",
        "discard": "old",
        "max_age": limits.max_age,
        "max_bytes": limits.max_bytes,
        "duplicate_window": limits.duplicate_window,
        "num_replicas": limits.replicas,
    }


@dataclass(frozen=True)
class Partial:
    """One node's part of one identity's window, as one message."""

    node: str
    #: The agent process's start, in nanoseconds: a restarted agent's sequence starts again.
    epoch: int
    seq: int
    window: ClosedWindow

    @property
    def msg_id(self) -> str:
        """JetStream's ``Nats-Msg-Id``: unique per node and agent process."""
        return f"{self.node}/{self.epoch}/{self.seq}"

    @property
    def key(self) -> tuple[str, float]:
        """(identity, window start): what partials merge by."""
        return (self.window.subject.id, self.window.start)

    @property
    def subject(self) -> str:
        s = self.window.subject
        return input_subject(s.namespace, s.workload)


class _Side(msgspec.Struct, array_like=True):
    sums: list[int]
    qname_len_max: int
    qname_entropy_sum: float
    drop_reasons: dict[str, int]
    port_hist: dict[int, int]
    sketches: list[bytes | None]
    #: (peer hash, port key + 1, flows)
    edges: list[tuple[int, int, int]]
    #: (peer hash, port key + 1, low 64 bits, high 64 bits of the packed counters)
    edge_flags: list[tuple[int, int, int, int]]
    edge_alias: dict[int, int]
    edge_times: list[tuple[int, int, list[float]]]
    pods: list[str]
    top_pairs: list[tuple[int, int, int]]
    sample_names: list[str]


class _Wire(msgspec.Struct, array_like=True):
    version: int
    node: str
    epoch: int
    seq: int
    identity: str
    namespace: str
    workload: str
    start: float
    end: float
    client: _Side
    server: _Side
    peer_names: dict[int, str]


_ENCODER: Final = msgspec.msgpack.Encoder()
_DECODER: Final = msgspec.msgpack.Decoder(_Wire)


def _split(key: int) -> tuple[int, int]:
    return key >> EDGE_KEY_SHIFT, key & _PORT_MASK


def _join(h: int, low: int) -> int:
    return (h << EDGE_KEY_SHIFT) | low


def _side_out(s: SideStats) -> _Side:
    s.finish()
    return _Side(
        sums=[getattr(s, n) for n in SideStats._SUMS],
        qname_len_max=s.qname_len_max,
        qname_entropy_sum=s.qname_entropy_sum,
        drop_reasons=dict(s.drop_reasons),
        port_hist=dict(s.port_hist),
        sketches=[
            None if (sk := getattr(s, n)) is None else sk.to_bytes() for n in SideStats._SKETCHES
        ],
        edges=[(*_split(k), n) for k, n in s.edges.items()],
        edge_flags=[(*_split(k), v & _MASK64, v >> 64) for k, v in s.edge_flags.items()],
        edge_alias=dict(s.edge_alias),
        edge_times=[(*_split(k), list(t)) for k, t in s.edge_times.items()],
        pods=sorted(s.pods),
        top_pairs=[(*_split(k), n) for k, n in s.top_pairs.items()],
        sample_names=list(s.sample_names),
    )


def _side_in(w: _Side) -> SideStats:
    s = SideStats()
    if len(w.sums) != len(SideStats._SUMS) or len(w.sketches) != len(SideStats._SKETCHES):
        raise ValueError("partial side has the wrong number of counters or sketches")
    for name, value in zip(SideStats._SUMS, w.sums):
        if value < 0:
            raise ValueError(f"partial side has a negative {name}")
        setattr(s, name, value)
    s.qname_len_max = w.qname_len_max
    if not math.isfinite(w.qname_entropy_sum):
        raise ValueError("partial side has a non-finite entropy sum")
    s.qname_entropy_sum = w.qname_entropy_sum
    s.drop_reasons = dict(w.drop_reasons)
    s.port_hist = dict(w.port_hist)
    for name, data in zip(SideStats._SKETCHES, w.sketches):
        setattr(s, name, None if data is None else DistinctSketch.from_bytes(data))
    s.edges = {_join(h, low): n for h, low, n in w.edges}
    s.edge_flags = {_join(h, low): lo | (hi << 64) for h, low, lo, hi in w.edge_flags}
    s.edge_alias = dict(w.edge_alias)
    s.edge_times = {_join(h, low): list(t) for h, low, t in w.edge_times}
    s.pods = set(w.pods)
    s.top_pairs = {_join(h, low): n for h, low, n in w.top_pairs}
    s.sample_names = list(w.sample_names)
    return s


def encode_partial(partial: Partial) -> bytes:
    """The message body of ``partial`` (see the module docstring)."""
    w = partial.window
    return _ENCODER.encode(
        _Wire(
            version=FORMAT_VERSION,
            node=partial.node,
            epoch=partial.epoch,
            seq=partial.seq,
            identity=w.subject.id,
            namespace=w.subject.namespace,
            workload=w.subject.workload,
            start=w.start,
            end=w.end,
            client=_side_out(w.client),
            server=_side_out(w.server),
            peer_names=dict(w.peer_names),
        )
    )


def decode_partial(data: bytes) -> Partial:
    """Read :func:`encode_partial`'s output; ``ValueError`` on another version or bad data."""
    try:
        wire = _DECODER.decode(data)
    except msgspec.DecodeError as exc:
        try:
            head = msgspec.msgpack.decode(data)
            version = head[0] if isinstance(head, list) and head else None
        except msgspec.DecodeError:
            version = None
        if version is not None and version != FORMAT_VERSION:
            raise ValueError(
                f"partial format version {version!r}, this netwarden reads {FORMAT_VERSION}"
            ) from None
        raise ValueError(f"malformed partial: {exc}") from None
    if wire.version != FORMAT_VERSION:
        raise ValueError(
            f"partial format version {wire.version}, this netwarden reads {FORMAT_VERSION}"
        )
    if wire.identity != f"{wire.namespace}/{wire.workload}" or not wire.end > wire.start:
        raise ValueError(
            f"malformed partial: identity {wire.identity!r} [{wire.start}, {wire.end})"
        )
    window = ClosedWindow(
        Subject(wire.identity, wire.namespace, wire.workload),
        wire.start,
        wire.end,
        _side_in(wire.client),
        _side_in(wire.server),
        dict(wire.peer_names),
    )
    return Partial(wire.node, wire.epoch, wire.seq, window)

"""What the kernel probes report, decoded: the contract between the loader and the flow mapper.

The loader (:mod:`netwarden.bpf.loader`) turns raw perf/ring-buffer records into these
records; :mod:`netwarden.bpf.flows` turns them into Hubble-shaped flows. Addresses are text
(``10.0.0.1``, ``fd00::1``); times are nanoseconds since the Unix epoch (the loader converts
the kernel's monotonic clock); ``netns`` is the network namespace inode of the socket or packet,
and ``cgroup_id``/``pid``/``comm`` name the process when the event ran in process context
(0/"" when it ran in softirq, e.g. a passive open or a drop on receive).

They are values: nothing changes them once made. They are not frozen dataclasses all the same,
because the agent makes tens of thousands a second and a frozen one costs six times as much to
make (its ``__init__`` goes through ``object.__setattr__`` for every field: 1.45 us against
0.23 us for a connection's close, measured).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "Conn",
    "ConnectionClosed",
    "ConnectionOpened",
    "KernelEvent",
    "PacketDropped",
    "ProbeStats",
    "TcpReset",
    "UdpTraffic",
]

#: Which end started the connection, as seen by the socket that reports it.
Role = Literal["client", "server"]


@dataclass(slots=True)
class Conn:
    """A 5-tuple from the reporting socket's point of view: ``local`` is its own end."""

    protocol: Literal["TCP", "UDP"]
    family: Literal[4, 6]
    local_addr: str
    local_port: int
    remote_addr: str
    remote_port: int


@dataclass(slots=True)
class _Context:
    """When, where and by which process a socket event happened (first fields of each)."""

    time_ns: int
    netns: int
    cgroup_id: int
    pid: int
    comm: str


@dataclass(slots=True)
class ConnectionOpened(_Context):
    """A TCP connection reached ESTABLISHED at one end (``role`` says which end)."""

    conn: Conn
    role: Role


@dataclass(slots=True)
class ConnectionClosed(_Context):
    """A TCP socket reached CLOSE: totals over its life.

    ``established`` is False for a connection that never got there (a refused or timed-out
    connect); ``reset`` when it ended with a RST sent or received.
    """

    conn: Conn
    role: Role
    established: bool
    duration_ns: int  # from the first state change seen to close
    bytes_sent: int
    bytes_received: int
    retransmits: int
    reset: bool


@dataclass(slots=True)
class TcpReset(_Context):
    """A TCP RST sent or received (``tcp:tcp_send_reset``, ``tcp:tcp_receive_reset``)."""

    conn: Conn
    direction: Literal["sent", "received"]


@dataclass(slots=True)
class UdpTraffic:
    """UDP datagrams between one local socket and one peer since the last report."""

    time_ns: int  # last datagram in the interval
    first_ns: int  # first datagram in the interval
    netns: int
    cgroup_id: int
    pid: int
    comm: str
    conn: Conn
    bytes_sent: int
    bytes_received: int
    datagrams_sent: int
    datagrams_received: int
    first_report: bool  # the first report of this socket/peer pair


@dataclass(slots=True)
class PacketDropped:
    """A packet freed with a drop reason (``skb:kfree_skb``).

    ``reason`` is the kernel's name for it, read from the running kernel's tracepoint format
    (``NETFILTER_DROP``, ``NO_SOCKET``, ...), or ``REASON_<n>`` for a number the format does
    not name. ``conn`` is the packet's 5-tuple when its headers could be read (IPv4/IPv6 with
    TCP or UDP), from the sender's point of view (``local`` = packet source), else None.
    """

    time_ns: int
    netns: int
    reason: str
    reason_code: int
    conn: Conn | None
    protocol: int  # IP protocol number (0 when unknown)
    location: str  # kernel symbol that dropped it, when known


KernelEvent = ConnectionOpened | ConnectionClosed | TcpReset | UdpTraffic | PacketDropped


@dataclass
class ProbeStats:
    """Counters of the probes themselves; ``lost`` events never reached user space."""

    events: int = 0
    lost: int = 0  # ring/perf buffer overflows, counted by the kernel side or the callback
    decode_errors: int = 0

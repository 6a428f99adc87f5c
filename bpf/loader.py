"""Load the kernel probes (``probes.c``) with bcc and turn their records into ``events``.

Which kernel hooks, and why (this kernel has no kprobes and function tracing is locked, so
no kprobe/fentry: everything is a tracepoint or a cgroup hook, which are also the stable
choices elsewhere):

* TCP lifecycle: ``sock:inet_sock_set_state``, as a raw tracepoint (the hottest hook: ten
  state changes per connection; arguments checked against BTF). SYN_SENT marks a client (in
  ``connect()``, so the process is known), SYN_RECV a passive child (a server; its process is
  learned at its first send/recv). Connections live in ``tcp_conns``, a set-associative table
  (probes.c says why not a hash map) that this process maps read-only. ESTABLISHED stores the
  addresses in the connection's slot; CLOSE copies the slot to this CPU's ring of closed
  connections (``tcp_closed``, also mapped here: a copy and a count, no lock, no wake-up) and
  frees it. A connection that finds its bucket full is not tracked, and counted; closes that a
  CPU overwrote before this process read them are counted too. Each poll reads the closed
  connections; open ones are read from the table every ``udp_flush_interval``
  (:meth:`KernelProbes.poll`): each is reported once as :class:`ConnectionOpened`, by that
  sweep or, for a connection shorter than the interval, just before its
  :class:`ConnectionClosed`. One copy per connection instead of two records halves the
  kernel's and this side's work; the open is reported up to an interval late, with the time
  it happened (its start: the client's SYN or the server's child socket; one clock read less,
  and the time Hubble gives the SYN flow), well within the windows' allowed lateness. A connect
  that never got established takes its local port from ``inet_sport`` (the kernel has released
  the port, zeroing ``skc_num``, before the CLOSE).
* TCP bytes: ``sock:sock_send_length`` / ``sock:sock_recv_length`` (raw) keyed by ``sk``
  (positive ``ret``, never with ``MSG_PEEK``: what the application wrote and read). Kernels
  without them (< 6.3): ``tcp_sock.bytes_acked`` / ``bytes_received`` read at close at BTF
  offsets.
* Retransmits and resets: ``tcp:tcp_retransmit_skb``, ``tcp:tcp_send_reset`` (whose socket
  may be NULL: a reset answering a packet that matched no socket; then the packet gives the
  namespace) and ``tcp:tcp_receive_reset``.
* UDP: ``sock:sock_send_length`` / ``sock:sock_recv_length`` count each datagram (exact
  bytes, in the process's context, never peeks) against the socket's connected peer, or the
  address of that very call: cgroup ``sock_addr`` hooks (``cgroup/sendmsg4/6``,
  ``cgroup/recvmsg4/6``) on the root of the cgroup v2 hierarchy see the address a process
  passes to ``sendto``/``sendmsg`` and the sender the kernel hands back to
  ``recvfrom``/``recvmsg``, and leave it in a per-CPU slot that the tracepoint of the same
  call (same thread and socket) takes. They run for UDP calls with an address only, so TCP
  traffic pays nothing for UDP (per-packet hooks such as ``net_dev_queue`` cost every TCP
  packet ~130 ns, and syscall tracepoints put every syscall of every process on the slow
  path: 2.4 us per loopback TCP connection, measured). They are attached through bpf_links,
  which the kernel detaches when the agent exits, however it exits. What the socket layer
  cannot know: the source address routing picks for an unbound socket, and the sender of a
  datagram read with ``recv()`` (no address asked for) on an unconnected socket; they are
  reported as the unspecified address (the local one is filled in from the namespace's
  addresses by :mod:`netwarden.bpf.localaddr` where that is unambiguous).
* UDP aggregation: a hash map keyed by (netns, socket, peer) accumulates bytes and datagrams
  each way. Two maps alternate: user space drains the one that has been idle for a whole
  interval, then makes it the active one, so no update can race the drain.
* Drops: ``skb:kfree_skb``, as a raw tracepoint where BTF shows the expected arguments (it
  fires for every freed packet with a reason: a classic tracepoint would format a record for
  each first), else the classic one: reason code named from the running kernel's format file, the
  dropping function from ``location``, the 5-tuple from the packet headers when the network
  header is set, the namespace from the device (else the socket).

Resets and drops go through a BPF ring buffer (Linux >= 5.8; a failed write is counted in a
BPF array), read in bulk from its shared memory (:mod:`netwarden.bpf.ringbuf`), or, on older
kernels, a perf buffer (its lost callback counts). Runs of a program the kernel skipped (it
does not run a tracing program on a CPU where one is running, e.g. preempted) count as lost too.
Timestamps are ``CLOCK_MONOTONIC`` in the kernel, converted to Unix epoch ns here.
"""

from __future__ import annotations

import ctypes
import functools
import mmap
import os
import platform
import socket
import struct
import time
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, Self

import numpy as np

from .btf import Btf, BtfError
from .dropreasons import CONSUMED_NAMES, TracepointFormat, reason_name
from .events import (
    Conn,
    ConnectionClosed,
    ConnectionOpened,
    KernelEvent,
    PacketDropped,
    ProbeStats,
    TcpReset,
    UdpTraffic,
)
from .localaddr import LocalAddresses
from .preflight import AgentUnavailable, Environment, check
from .ringbuf import RingReader

__all__ = ["DEFAULT_IGNORED_DROPS", "KernelProbes", "tracepoint_struct"]

PROBES_C = Path(__file__).with_name("probes.c")

#: Drop reasons not reported unless asked for. QUEUE_PURGE: on every actively closed
#: connection the peer's FIN, still queued when the socket is destroyed, is freed with it
#: (one per connection on 6.18, measured): teardown, not a network drop.
DEFAULT_IGNORED_DROPS = ("QUEUE_PURGE",)

_EVENT = struct.Struct("<3Q3I2H5B3x16s16s16s")
_TCP_CONN = struct.Struct("<7Q3I2H16s16s5B3x16s")
_TCP_WAYS = 8  # TCP_WAYS in probes.c
#: the field of a tcp_conns slot the sweep filters on (after the keys), at its offset in _TCP_CONN
_TCP_DTYPE = np.dtype(
    {"names": ["established"], "formats": ["u1"], "offsets": [105], "itemsize": _TCP_CONN.size}
)
_UDP_KEY = struct.Struct("<QIHHB7x16s")
_UDP_VAL = struct.Struct("<4Q2I16s")
_OWNER = struct.Struct("<QI4x16s")
_EV_RESET, _EV_DROP = 3, 4
_ROLES = {1: "client", 2: "server"}
_STAT_OUTPUT_FAILED, _STAT_UDP_FULL, _STAT_TCP_NEW, _STAT_TCP_FULL = 0, 1, 3, 4
#: struct bpf_prog_info (include/uapi/linux/bpf.h): the size we offer the kernel, and the
#: offset of recursion_misses (after run_time_ns and run_cnt)
_PROG_INFO_SIZE, _PROG_INFO_MISSES = 256, 208
_SKC_V4_SPAN_MAX = 32
_DROP_REASON_SLOTS = 1024
_V4MAPPED = b"\0" * 10 + b"\xff\xff"

#: tracepoint -> (C function, fields the C program reads; optional ones may be absent)
_TRACEPOINTS: dict[tuple[str, str], tuple[str, tuple[str, ...]]] = {
    ("tcp", "tcp_retransmit_skb"): ("on_tcp_retransmit_skb", ("skaddr",)),
    ("tcp", "tcp_receive_reset"): (
        "on_tcp_receive_reset",
        ("skaddr", "sport", "dport", "family", "saddr", "daddr", "saddr_v6", "daddr_v6"),
    ),
    ("tcp", "tcp_send_reset"): (
        "on_tcp_send_reset",
        ("skbaddr", "skaddr", "saddr", "daddr", "sport", "dport", "family", "saddr_v6", "daddr_v6"),
    ),
    ("skb", "kfree_skb"): ("on_kfree_skb", ("skbaddr", "location", "protocol", "reason", "rx_sk")),
}
#: raw tracepoint -> C function (argument types: preflight.RAW_TRACEPOINT_ARGS)
_RAW_TRACEPOINTS: dict[str, str] = {
    "inet_sock_set_state": "on_set_state",
    "sock_send_length": "on_sock_send_length",
    "sock_recv_length": "on_sock_recv_length",
    "kfree_skb": "on_kfree_skb_raw",  # where its arguments are _KFREE_SKB_RAW_ARGS
}
_KFREE_SKB_RAW_ARGS = ("struct sk_buff *", "void *", "enum skb_drop_reason")
_SOCK_LENGTH = (("sock", "sock_send_length"), ("sock", "sock_recv_length"))
#: cgroup sock_addr hook -> (C function, bpf_attach_type: include/uapi/linux/bpf.h)
_SOCK_ADDR_HOOKS: dict[str, tuple[str, int]] = {
    "cgroup/sendmsg4": ("on_udp4_sendmsg", 14),  # BPF_CGROUP_UDP4_SENDMSG
    "cgroup/sendmsg6": ("on_udp6_sendmsg", 15),  # BPF_CGROUP_UDP6_SENDMSG
    "cgroup/recvmsg4": ("on_udp4_recvmsg", 19),  # BPF_CGROUP_UDP4_RECVMSG
    "cgroup/recvmsg6": ("on_udp6_recvmsg", 20),  # BPF_CGROUP_UDP6_RECVMSG
}

#: -D macro -> (struct, member path) read with bpf_probe_read_kernel
_OFFSETS = {
    "OFF_SKC_NET": ("sock_common", "skc_net.net"),
    "OFF_SKC_DADDR": ("sock_common", "skc_daddr"),
    "OFF_SKC_RCV_SADDR": ("sock_common", "skc_rcv_saddr"),
    "OFF_SKC_DPORT": ("sock_common", "skc_dport"),
    "OFF_SKC_NUM": ("sock_common", "skc_num"),
    "OFF_SKC_FAMILY": ("sock_common", "skc_family"),
    "OFF_SKC_V6_DADDR": ("sock_common", "skc_v6_daddr"),
    "OFF_SKC_V6_RCV_SADDR": ("sock_common", "skc_v6_rcv_saddr"),
    "OFF_NET_INUM": ("net", "ns.inum"),
    "OFF_DEV_NET": ("net_device", "nd_net.net"),
    "OFF_SKB_HEAD": ("sk_buff", "head"),
    "OFF_SKB_NH": ("sk_buff", "network_header"),
    "OFF_SKB_DEV": ("sk_buff", "dev"),
    "OFF_SKB_SK": ("sk_buff", "sk"),
    "OFF_INET_SPORT": ("inet_sock", "inet_sport"),
    "OFF_TCP_BYTES_ACKED": ("tcp_sock", "bytes_acked"),
    "OFF_TCP_BYTES_RECEIVED": ("tcp_sock", "bytes_received"),
}


def _c_scalar(size: int, signed: bool) -> str:
    return f"{'s' if signed else 'u'}{size * 8}"


def tracepoint_struct(cname: str, fmt: TracepointFormat, wanted: Iterable[str]) -> str:
    """C struct for a tracepoint's arguments, laid out from its format file.

    Only ``wanted`` fields are declared (the rest is padding), with types chosen by size and
    signedness (arrays as ``u8[]``, pointers as ``u64``), so no kernel header type (e.g.
    ``enum skb_drop_reason``) is needed. Offsets are asserted at compile time.
    """
    fields = sorted((fmt.fields[n] for n in set(wanted) if n in fmt.fields), key=lambda f: f.offset)
    lines, pos = [f"struct {cname} {{"], 0
    for i, f in enumerate(fields):
        if f.offset < pos:
            raise ValueError(f"{fmt.name}: field {f.name} overlaps the previous one")
        if f.offset > pos:
            lines.append(f"    u8 __pad{i}[{f.offset - pos}];")
        if f.is_array or f.size not in (1, 2, 4, 8):
            lines.append(f"    u8 {f.name}[{f.size}];")
        elif f.offset % f.size:
            raise ValueError(f"{fmt.name}: field {f.name} is not naturally aligned")
        else:
            lines.append(f"    {_c_scalar(f.size, f.signed and '*' not in f.decl)} {f.name};")
        pos = f.offset + f.size
    lines.append("};")
    lines += [
        f"_Static_assert(__builtin_offsetof(struct {cname}, {f.name}) == {f.offset}, "
        f'"{fmt.name}.{f.name}");'
        for f in fields
    ]
    return "\n".join(lines)


_ADDR_CACHE: dict[tuple[int, bytes], tuple[Literal[4, 6], str]] = {}


def _skc_v4_span(offsets: dict[str, int]) -> int:
    """Bytes from ``skc_daddr`` through ``skc_num``: the IPv4 addresses and ports that
    probes.c reads in one go. Refused when they are not all in a short span after it."""
    base = offsets["OFF_SKC_DADDR"]
    span = offsets["OFF_SKC_NUM"] + 2 - base
    inside = all(
        offsets[m] - base >= 0 and offsets[m] - base + size <= span
        for m, size in (("OFF_SKC_RCV_SADDR", 4), ("OFF_SKC_DPORT", 2))
    )
    if not (0 < span <= _SKC_V4_SPAN_MAX and inside):
        raise AgentUnavailable(
            f"struct sock_common has an unexpected layout (addresses and "
            f"ports not within {_SKC_V4_SPAN_MAX} bytes from skc_daddr): "
            f"this kernel is not supported"
        )
    return span


def _addr(family: int, raw: bytes) -> tuple[Literal[4, 6], str]:
    """Text address; an IPv4-mapped IPv6 address is reported as IPv4 (memoized: the same
    few addresses recur in every record)."""
    key = (family, raw)
    hit = _ADDR_CACHE.get(key)
    if hit is not None:
        return hit
    if family == 6:
        if raw[:12] == _V4MAPPED:
            hit = (4, socket.inet_ntop(socket.AF_INET, raw[12:16]))
        else:
            hit = (6, socket.inet_ntop(socket.AF_INET6, raw[:16]))
    else:
        hit = (4, socket.inet_ntop(socket.AF_INET, raw[:4]))
    if len(_ADDR_CACHE) >= 65536:
        _ADDR_CACHE.clear()
    _ADDR_CACHE[key] = hit
    return hit


def _possible_cpus() -> int:
    """How many CPU numbers the kernel may give a program (``bpf_get_smp_processor_id``)."""
    try:
        text = Path("/sys/devices/system/cpu/possible").read_text().strip()
        return max(int(part.split("-")[-1]) for part in text.split(",")) + 1
    except (OSError, ValueError):
        return os.cpu_count() or 1


def _pages(size: int) -> int:
    """``size`` rounded up to whole pages (the length of a map's mmap)."""
    return -(-size // mmap.PAGESIZE) * mmap.PAGESIZE


@functools.lru_cache(maxsize=4096)  # few names recur
def _comm(raw: bytes) -> str:
    """A task's name from its NUL-padded 16 bytes."""
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


# -- building the probes ----------------------------------------------------------------------
def _import_bcc() -> Any:
    """bcc, imported only when probes are loaded: the rest of the package works without it."""
    try:
        import bcc
    except Exception as exc:
        raise AgentUnavailable(f"BCC is not importable: {exc}") from None
    return bcc


def _tcp_bytes_source(
    tcp_bytes: Literal["auto", "tracepoint", "btf"], have_length: bool
) -> Literal["tracepoint", "btf"]:
    """Where TCP byte counts come from: the sock length tracepoints where the kernel has them
    (Linux >= 6.3) and they are not declined, else ``tcp_sock`` fields read at close."""
    if tcp_bytes == "tracepoint" and not have_length:
        raise AgentUnavailable(
            "tcp_bytes='tracepoint' needs sock:sock_send_length and "
            "sock:sock_recv_length (Linux >= 6.3)"
        )
    return "btf" if tcp_bytes == "btf" or not have_length else "tracepoint"


def _cgroup_dir(cgroup_root: str | Path | None) -> Path | None:
    """Where the UDP peer hooks are linked: the cgroup v2 root given (refused if it is not
    one, so a typo is not silently a host without UDP peers), else the host's, if any."""
    from .cgroups import find_cgroup2_mount

    cgroup_dir = Path(cgroup_root) if cgroup_root else find_cgroup2_mount()
    if cgroup_root and not (cgroup_dir / "cgroup.procs").is_file():
        raise AgentUnavailable(
            f"{cgroup_dir} is not a cgroup v2 directory (no "
            f"cgroup.procs): name the host's cgroup v2 root"
        )
    return cgroup_dir


def _drop_reason_names(formats: dict[tuple[str, str], TracepointFormat]) -> dict[int, str]:
    """Drop reason code -> name (``SKB_DROP_REASON_`` removed), from this kernel's format file:
    the codes differ between kernels."""
    return {
        code: name.removeprefix("SKB_DROP_REASON_")
        for code, name in formats[("skb", "kfree_skb")].symbols("reason").items()
    }


def _wake_every(ring_pages: int) -> int:
    """Records (104 bytes with the ring's header) a CPU writes before it wakes the reader: all
    CPUs together at most an eighth of the ring; a power of two (a mask, not a modulo)."""
    wake_every = max(1, ring_pages * 4096 // (_EVENT.size + 8) // 8 // (os.cpu_count() or 1))
    return 1 << (wake_every.bit_length() - 1)


def _closed_slots(closed_slots: int | None, ncpus: int) -> int:
    """Slots of each CPU's ring of closed TCP connections, read every poll (at most ~100 ms):
    by default 32 MiB in all, at most 16,384 slots a CPU (2 MiB: 200 ms of a CPU closing
    80,000 sockets a second), at least 1,024."""
    if closed_slots is None:
        closed_slots = 1 << min(
            14, max(10, (32 << 20) // (ncpus * _TCP_CONN.size)).bit_length() - 1
        )
    if closed_slots < 64 or closed_slots & (closed_slots - 1):
        raise ValueError("closed_slots must be a power of two, at least 64")
    return closed_slots


def _layout_cflags(btf: Btf) -> list[str]:
    """-D flags for the kernel structs probes.c reads, from BTF (never from headers, whose
    layouts need not match the running kernel)."""
    offsets = {macro: btf.offset_of(s, p) for macro, (s, p) in _OFFSETS.items()}
    cflags = [f"-D{macro}={off}" for macro, off in offsets.items()]
    cflags.append(f"-DSKC_V4_SPAN={_skc_v4_span(offsets)}")
    family_net = offsets["OFF_SKC_NET"] + 8 - offsets["OFF_SKC_FAMILY"]
    if 0 < family_net <= 64:  # else two reads (probes.c sk_family_net)
        cflags.append(f"-DSKC_FAMILY_NET_SPAN={family_net}")
    proto = btf.member("sock", "sk_protocol")  # a bitfield before Linux 5.6
    word = proto.bit_offset // 32 * 4
    bits = proto.bit_size or proto.size * 8
    return [
        *cflags,
        f"-DOFF_SK_PROTOCOL_WORD={word}",
        f"-DSK_PROTOCOL_SHIFT={proto.bit_offset - word * 8}",
        f"-DSK_PROTOCOL_MASK={(1 << bits) - 1:#x}",
        f"-DMMSGHDR_SIZE={btf.sizeof('mmsghdr')}",
    ]


def _raw_kfree_args(btf: Btf, drop_hook: Literal["auto", "raw", "tracepoint"]) -> list[str] | None:
    """The raw tracepoint kfree_skb's argument types if drops go through it (where they are the
    expected ones and the classic tracepoint is not asked for), else None."""
    try:
        kfree_args = btf.raw_tracepoint_args("kfree_skb")
    except BtfError:
        kfree_args = []
    kfree_raw = tuple(kfree_args[:3]) == _KFREE_SKB_RAW_ARGS and drop_hook != "tracepoint"
    if drop_hook == "raw" and not kfree_raw:
        raise AgentUnavailable(
            f"drop_hook='raw' needs the raw tracepoint kfree_skb with "
            f"arguments ({', '.join(_KFREE_SKB_RAW_ARGS)}); this "
            f"kernel's are ({', '.join(kfree_args)})"
        )
    return kfree_args if kfree_raw else None


def _event_cflags(env: Environment, raw_kfree_args: list[str] | None) -> list[str]:
    """-D flags for what the kernel's drop and reset tracepoints hand over (they changed
    between kernels)."""
    cflags = []
    if raw_kfree_args is not None:
        cflags += [
            "-DKFREE_SKB_RAW",
            f"-DOFF_SKB_PROTOCOL={env.btf.offset_of('sk_buff', 'protocol')}",
        ]
        if raw_kfree_args[3:4] == ["struct sock *"]:
            cflags.append("-DHAVE_KFREE_RX_SK")
    elif "rx_sk" in env.formats[("skb", "kfree_skb")].fields:
        cflags.append("-DHAVE_KFREE_RX_SK")
    if env.formats[("tcp", "tcp_send_reset")].fields["saddr"].size >= 28:
        cflags.append("-DSEND_RESET_SOCKADDR")
    return cflags


def _hook_lists(
    formats: dict[tuple[str, str], TracepointFormat], have_length: bool, kfree_raw: bool
) -> tuple[list[tuple[str, str]], list[str]]:
    """The classic and the raw tracepoints to attach on this kernel: the sock length ones
    where it has them, kfree_skb as one or the other."""
    attach = [
        k for k in _TRACEPOINTS if k in formats and not (kfree_raw and k == ("skb", "kfree_skb"))
    ]
    raw = [
        name
        for name in _RAW_TRACEPOINTS
        if (have_length or ("sock", name) not in _SOCK_LENGTH)
        and (kfree_raw or name != "kfree_skb")
    ]
    return attach, raw


def _program_text(
    formats: dict[tuple[str, str], TracepointFormat], attach: list[tuple[str, str]]
) -> str:
    """probes.c, preceded by the structs of the classic tracepoints' arguments as this
    kernel's format files lay them out."""
    prelude = "\n".join(
        tracepoint_struct(f"tp_{event}", formats[(system, event)], _TRACEPOINTS[(system, event)][1])
        for system, event in attach
        if _TRACEPOINTS[(system, event)][1]
    )
    return prelude + "\n" + PROBES_C.read_text()


class KernelProbes:
    """The running probes: ``poll()`` returns decoded :data:`KernelEvent` records.

    Use as a context manager or call :meth:`close`. ``stats`` counts records and losses
    (ring buffer full, perf lost samples, UDP map full), ``counters`` details them.
    """

    def __init__(
        self,
        *,
        udp_flush_interval: float = 1.0,
        ring_pages: int = 256,
        use_ringbuf: bool | None = None,
        ignore_netns: Iterable[int] = (),
        ignore_ports: Iterable[int] = (),
        ignore_drop_reasons: Iterable[str] = DEFAULT_IGNORED_DROPS,
        tcp_bytes: Literal["auto", "tracepoint", "btf"] = "auto",
        drop_hook: Literal["auto", "raw", "tracepoint"] = "auto",
        max_tcp: int = 131072,
        max_udp: int = 16384,
        udp_peers: bool = True,
        cgroup_root: str | Path | None = None,
        closed_slots: int | None = None,
        env: Environment | None = None,
    ) -> None:
        self.env = env or check()
        bcc = _import_bcc()
        if ring_pages & (ring_pages - 1):
            raise ValueError("ring_pages must be a power of two")
        if max_tcp < _TCP_WAYS or max_tcp & (max_tcp - 1):
            raise ValueError(f"max_tcp must be a power of two, at least {_TCP_WAYS}")
        self.max_tcp = max_tcp
        self._init_state(udp_flush_interval, ignore_netns, ignore_ports, max_udp)

        formats = self.env.formats
        have_length = all(k in formats for k in _SOCK_LENGTH)
        self.tcp_bytes_source = _tcp_bytes_source(tcp_bytes, have_length)
        # udp_peers: the cgroup hooks that tell unconnected UDP sockets' peers (module docstring)
        want_peers = udp_peers and have_length
        cgroup_dir = _cgroup_dir(cgroup_root) if want_peers else None
        self._links: list[int] = []
        self.udp_peer_hooks = False
        self.ringbuf = self.env.ringbuf if use_ringbuf is None else use_ringbuf
        self.drop_reasons = _drop_reason_names(formats)
        ncpus = _possible_cpus()
        self.closed_per_cpu = _closed_slots(closed_slots, ncpus)

        cflags = self._cflags(ring_pages, max_tcp, max_udp, ncpus, have_length, cgroup_dir)
        raw_kfree_args = _raw_kfree_args(self.env.btf, drop_hook)
        cflags += _event_cflags(self.env, raw_kfree_args)
        attach, raw = _hook_lists(formats, have_length, kfree_raw=raw_kfree_args is not None)
        self._load(bcc, _program_text(formats, attach), cflags)
        self._attach(bcc, (attach, raw), want_peers, cgroup_dir, ignore_drop_reasons, ring_pages)
        self._watch_program_misses(bcc, attach, raw)
        self._map_tcp_conns(max_tcp)
        self._map_closed(ncpus)
        self.attached = (
            [f"{s}:{e}" for s, e in attach]
            + [f"raw:{name}" for name in raw]
            + (list(_SOCK_ADDR_HOOKS) if self.udp_peer_hooks else [])
        )

    # -- setup --------------------------------------------------------------------------------
    def _init_state(
        self,
        udp_flush_interval: float,
        ignore_netns: Iterable[int],
        ignore_ports: Iterable[int],
        max_udp: int,
    ) -> None:
        """Counters, filters and bookkeeping, set before anything is loaded so that every
        later step (and a failure in one) finds them."""
        self.stats = ProbeStats()
        self.counters: dict[str, int] = {
            "output_failed": 0,
            "perf_lost": 0,
            "udp_map_full": 0,
            "tcp_tracked": 0,
            "tcp_table_full": 0,
            "closed_overwritten": 0,
            "program_misses": 0,
        }
        self.udp_flush_interval = udp_flush_interval
        self._ignore_netns = frozenset(ignore_netns)
        self._ignore_ports = frozenset(ignore_ports)
        self._pending: list[KernelEvent] = []
        self._ksyms: dict[int, str] = {}
        self._udp_seen: OrderedDict[tuple[Any, ...], None] = OrderedDict()
        self._udp_seen_max = max(4 * max_udp, 65536)
        self._local_addresses = LocalAddresses()
        self._udp_active = 0
        # TCP connections reported open, by (sk, start time): each is reported once, by the
        # sweep of tcp_conns or just before its close; -> sweeps since last seen in the map
        self._tcp_open: dict[tuple[int, int], int] = {}
        self._last_flush = time.monotonic()
        self._offset = self._clock_offset()
        self._closed = False
        self._ring: RingReader | None = None
        self.missing: list[str] = []  # what this host lacks, in one line each (also logged)

    def _cflags(
        self,
        ring_pages: int,
        max_tcp: int,
        max_udp: int,
        ncpus: int,
        have_length: bool,
        cgroup_dir: Path | None,
    ) -> list[str]:
        """-D flags that fit probes.c to this kernel's structs, the sizes asked for and the
        features in use (drop and reset flags come from :func:`_event_cflags`)."""
        cflags = _layout_cflags(self.env.btf)
        cflags += [
            f"-DMAX_TCP={max_tcp}",
            f"-DMAX_UDP={max_udp}",
            f"-DRB_PAGES={ring_pages}",
            f"-DRB_WAKEUP_EVERY={_wake_every(ring_pages)}",
            f"-DNCPUS={ncpus}",
            f"-DCLOSED_PER_CPU={self.closed_per_cpu}",
            f"-DDROP_REASON_SLOTS={_DROP_REASON_SLOTS}",
        ]
        if platform.machine() in ("x86_64", "amd64"):
            cflags.append("-DTSO_STORES")  # stores are seen in program order (probes.c)
        if self.ringbuf:
            cflags.append("-DUSE_RINGBUF")
        if self.tcp_bytes_source == "btf":
            cflags.append("-DTCP_BYTES_FROM_BTF")
        if have_length:
            cflags.append("-DHAVE_SOCK_LENGTH")
        if cgroup_dir is not None:
            cflags.append("-DHAVE_SOCK_ADDR_HOOKS")
        return cflags

    def _load(self, bcc: Any, text: str, cflags: list[str]) -> None:
        """Compile probes.c and load its programs and maps (nothing is attached yet)."""
        try:
            self._bpf = bcc.BPF(text=text.encode(), cflags=cflags)
        except Exception as exc:
            raise AgentUnavailable(
                f"the kernel probes failed to compile or load ({exc}); "
                "bcc printed the details above"
            ) from None

    def _attach(
        self,
        bcc: Any,
        hooks: tuple[list[tuple[str, str]], list[str]],
        want_peers: bool,
        cgroup_dir: Path | None,
        ignore_drop_reasons: Iterable[str],
        ring_pages: int,
    ) -> None:
        """Attach the hooks and open the records' buffer; any failure unloads everything, so
        no probe outlives a start that failed."""
        try:
            self._hooks = hooks
            self._attach_hooks()
            if want_peers:
                self._attach_sock_addr_hooks(bcc, cgroup_dir)
            self._configure_drops(ignore_drop_reasons)
            self._open_records(ring_pages)
        except Exception as exc:
            self._detach_links()
            self._bpf.cleanup()
            raise AgentUnavailable(f"attaching the kernel probes failed: {exc}") from None

    def _open_records(self, ring_pages: int) -> None:
        """Where resets and drops arrive: the BPF ring buffer, read in place, or a perf buffer
        on kernels without one."""
        if self.ringbuf:
            self._ring = RingReader(
                self._bpf[b"events"].map_fd, ring_pages * 4096, _EVENT.format.removeprefix("<")
            )
        else:
            self._bpf[b"events"].open_perf_buffer(
                self._on_event, page_cnt=ring_pages, lost_cb=self._on_lost
            )

    def _watch_program_misses(
        self, bcc: Any, attach: list[tuple[str, str]], raw: list[str]
    ) -> None:
        """Keep the tracing programs' fds and ``bpf_obj_get_info``: the kernel's count of their
        skipped runs is read with the stats (:meth:`_program_misses`)."""
        self._prog_fds = [
            self._bpf.funcs[fn.encode()].fd
            for fn in [_TRACEPOINTS[k][0] for k in attach]
            + [_RAW_TRACEPOINTS[name] for name in raw]
        ]
        self._get_info = bcc.libbcc.lib.bpf_obj_get_info
        self._get_info.restype = ctypes.c_int
        self._get_info.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32)]

    def _map_tcp_conns(self, max_tcp: int) -> None:
        """Map the connection table and its keys (slot i's socket at i) read-only: the sweep
        reads them in place."""
        self._tcp_table = mmap.mmap(
            self._bpf[b"tcp_conns"].map_fd,
            _pages(max_tcp * _TCP_CONN.size),
            mmap.MAP_SHARED,
            mmap.PROT_READ,
        )
        self._tcp_view = np.frombuffer(self._tcp_table, dtype=_TCP_DTYPE, count=max_tcp)
        self._tcp_key_map = mmap.mmap(
            self._bpf[b"tcp_keys"].map_fd, _pages(max_tcp * 8), mmap.MAP_SHARED, mmap.PROT_READ
        )
        self._tcp_keys = np.frombuffer(self._tcp_key_map, dtype="<u8", count=max_tcp)

    def _map_closed(self, ncpus: int) -> None:
        """Map the closed connections read-only: each CPU's ring of slots and its count of slots
        written (no syscall to read them each poll)."""
        self._closed_table = mmap.mmap(
            self._bpf[b"tcp_closed"].map_fd,
            _pages(ncpus * self.closed_per_cpu * _TCP_CONN.size),
            mmap.MAP_SHARED,
            mmap.PROT_READ,
        )
        self._closed_count_map = mmap.mmap(
            self._bpf[b"closed_written"].map_fd, _pages(ncpus * 64), mmap.MAP_SHARED, mmap.PROT_READ
        )
        self._closed_written = np.frombuffer(self._closed_count_map, dtype="<u8", count=ncpus * 8)[
            ::8
        ]  # one cache line per CPU
        self._closed_read = self._closed_written.copy()  # what each CPU wrote before we started

    def _attach_sock_addr_hooks(self, bcc: Any, cgroup_dir: Path | None) -> None:
        """Link the UDP peer hooks to the cgroup v2 root. Without a cgroup v2 hierarchy, or
        if the kernel refuses, UDP peers of unconnected sockets stay unknown (said in
        ``missing``), everything else works."""
        if cgroup_dir is None:
            self.missing.append("UDP peers of unconnected sockets: no cgroup v2 hierarchy")
            return
        lib = bcc.libbcc.lib
        lib.bpf_link_create.restype = ctypes.c_int
        lib.bpf_link_create.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
        dirfd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for hook, (fn, attach_type) in _SOCK_ADDR_HOOKS.items():
                prog = self._bpf.load_func(
                    fn.encode(), bcc.BPF.CGROUP_SOCK_ADDR, attach_type=attach_type
                )
                link = lib.bpf_link_create(prog.fd, dirfd, attach_type, None)
                if link < 0:
                    self._detach_links()
                    self.missing.append(
                        f"UDP peers of unconnected sockets: linking {hook} to "
                        f"{cgroup_dir} failed: {os.strerror(-link)}"
                    )
                    return
                self._links.append(link)
        finally:
            os.close(dirfd)
        self.udp_peer_hooks = True

    def _attach_hooks(self) -> None:
        attach, raw = self._hooks
        for system, event in attach:
            self._bpf.attach_tracepoint(
                tp=f"{system}:{event}".encode(), fn_name=_TRACEPOINTS[(system, event)][0].encode()
            )
        for name in raw:
            self._bpf.attach_raw_tracepoint(
                tp=name.encode(), fn_name=_RAW_TRACEPOINTS[name].encode()
            )
        self.paused = False

    def pause(self) -> None:
        """Detach the tracepoints, keeping the programs, maps and what they hold (the cgroup
        hooks stay: they only stash peers): for benchmarks that compare a load with and
        without the probes in alternating windows, with no reload in between."""
        if not self.paused:
            attach, raw = self._hooks
            for system, event in attach:
                self._bpf.detach_tracepoint(tp=f"{system}:{event}".encode())
            for name in raw:
                self._bpf.detach_raw_tracepoint(tp=name.encode())
            self.paused = True

    def resume(self) -> None:
        """Attach the tracepoints again after :meth:`pause`."""
        if self.paused:
            self._attach_hooks()

    def _detach_links(self) -> None:
        for fd in self._links:
            os.close(fd)  # a bpf_link detaches when its last fd is closed
        self._links = []

    def _configure_drops(self, ignore: Iterable[str]) -> None:
        """Never report "freed normally" codes; optionally mute some reasons by name."""
        names = {n.upper() for n in ignore} | CONSUMED_NAMES
        table = self._bpf[b"drop_ignore"]
        by_name = {v: k for k, v in self.drop_reasons.items()}
        # codes below NOT_SPECIFIED are "not dropped yet"/"consumed" (the format omits them)
        floor = by_name.get("NOT_SPECIFIED", 0)
        codes = set(range(floor)) | {c for c, n in self.drop_reasons.items() if n in names}
        for code in codes:
            if code < _DROP_REASON_SLOTS:
                table[ctypes.c_int(code)] = ctypes.c_uint8(1)

    # -- decoding -----------------------------------------------------------------------------
    def _on_lost(self, count: int) -> None:
        self.counters["perf_lost"] += count

    def _on_event(self, _ctx: Any, data: Any, size: int) -> None:
        """perf buffer callback: one record."""
        try:
            self._pending += self._decode(_EVENT.unpack_from(ctypes.string_at(data, size)))
            self.stats.events += 1
        except Exception:
            self.stats.decode_errors += 1

    def _read_ring(self) -> None:
        """Every record in the ring buffer, read in bulk (:class:`RingReader`)."""
        pending = self._pending
        for fields in self._ring.read():
            try:
                pending += self._decode(fields)
            except Exception:
                self.stats.decode_errors += 1
            self.stats.events += 1

    def _ksym(self, addr: int) -> str:
        name = self._ksyms.get(addr)
        if name is None:
            raw = self._bpf.ksym(addr) if addr else b""
            name = "" if raw in (b"", b"[unknown]") else raw.decode("utf-8", "replace")
            if len(self._ksyms) < 65536:
                self._ksyms[addr] = name
        return name

    def _decode(self, fields: tuple[Any, ...]) -> list[KernelEvent]:
        """One ring record's fields (``_EVENT``) -> its event (a drop or a reset)."""
        (
            ts,
            cgroup,
            location,
            netns,
            pid,
            reason,
            lport,
            rport,
            etype,
            family,
            direction,
            ipproto,
            have_ports,
            laddr,
            raddr,
            comm,
        ) = fields
        t = ts + self._offset
        if etype == _EV_DROP:
            conn = None
            if family in (4, 6) and have_ports and ipproto in (6, 17):
                fam, src = _addr(family, laddr)
                _, dst = _addr(family, raddr)
                conn = Conn("TCP" if ipproto == 6 else "UDP", fam, src, lport, dst, rport)
            return [
                PacketDropped(
                    t,
                    netns,
                    reason_name(reason, self.drop_reasons),
                    reason,
                    conn,
                    ipproto if family in (4, 6) else 0,
                    self._ksym(location),
                )
            ]
        fam, local = _addr(family, laddr)
        _, remote = _addr(family, raddr)
        conn = Conn("TCP", fam, local, lport, remote, rport)
        if etype == _EV_RESET:
            return [
                TcpReset(
                    t,
                    netns,
                    cgroup,
                    pid,
                    _comm(comm),
                    conn,
                    "sent" if direction == 1 else "received",
                )
            ]
        raise ValueError(f"unknown record type {etype}")

    # -- TCP connections closed ---------------------------------------------------------------
    def _read_closed(self) -> list[bytes]:
        """The closed connections each CPU wrote since the last call, as raw slots. Slots
        overwritten before we read them (or while we did) are counted, never decoded."""
        per, size = self.closed_per_cpu, _TCP_CONN.size
        table, written, read = self._closed_table, self._closed_written, self._closed_read
        chunks = []
        for cpu in np.flatnonzero(written != read).tolist():
            start, end = int(read[cpu]), int(written[cpu])
            if end - start > per:  # lapped: the oldest were overwritten
                self.counters["closed_overwritten"] += end - start - per
                start = end - per
            base = cpu * per
            first, last = start & (per - 1), (end - 1) & (per - 1)
            if first <= last:
                data = table[(base + first) * size : (base + last + 1) * size]
            else:  # wraps around the end of this CPU's slots
                data = (
                    table[(base + first) * size : (base + per) * size]
                    + table[base * size : (base + last + 1) * size]
                )
            # the kernel may have lapped us while we copied: drop what it may have overwritten
            # (it copies slot number `written` before it counts it)
            torn = int(written[cpu]) + 1 - per - start
            if torn > 0:
                self.counters["closed_overwritten"] += min(torn, end - start)
                data = data[min(torn, end - start) * size :]
            chunks.append(data)
            read[cpu] = end
        return chunks

    def closed_waiting(self) -> bool:
        """Whether some CPU closed connections that :meth:`collect_closed` has not read."""
        return bool((self._closed_written != self._closed_read).any())

    def collect_closed(self) -> list[KernelEvent]:
        """Closed TCP connections since the last call (each CPU's ``tcp_closed`` slots); a
        close of a connection not yet reported open -> the open (at the time it happened)
        and the close."""
        out: list[KernelEvent] = []
        offset, opened = self._offset, self._tcp_open
        for data in self._read_closed():
            for (
                sk,
                start,
                _spare,
                sent,
                recv,
                cgroup,
                close,
                pid,
                retrans,
                netns,
                lport,
                rport,
                laddr,
                raddr,
                role,
                established,
                reset,
                _have_proc,
                family,
                comm,
            ) in _TCP_CONN.iter_unpack(data):
                self.stats.events += 1
                if family not in (4, 6) or not close:
                    self.stats.decode_errors += 1  # cannot happen: the probes write both
                    continue
                fam, local = _addr(family, laddr)
                conn = Conn("TCP", fam, local, lport, _addr(family, raddr)[1], rport)
                name, role_name = _comm(comm), _ROLES.get(role, "client")
                if established and opened.pop((sk, start), None) is None:
                    out.append(
                        ConnectionOpened(start + offset, netns, cgroup, pid, name, conn, role_name)
                    )
                out.append(
                    ConnectionClosed(
                        close + offset,
                        netns,
                        cgroup,
                        pid,
                        name,
                        conn,
                        role_name,
                        bool(established),
                        close - start,
                        sent,
                        recv,
                        retrans,
                        bool(reset),
                    )
                )
        return out

    @staticmethod
    def _clock_offset() -> int:
        """Add to a CLOCK_MONOTONIC time (bpf_ktime_get_ns) to get Unix epoch ns."""
        return time.time_ns() - time.clock_gettime_ns(time.CLOCK_MONOTONIC)

    def _keep(self, ev: KernelEvent) -> bool:
        if ev.netns in self._ignore_netns:
            return False
        conn = ev.conn
        return not (
            self._ignore_ports
            and conn is not None
            and (conn.local_port in self._ignore_ports or conn.remote_port in self._ignore_ports)
        )

    # -- TCP connections still open -----------------------------------------------------------
    def sweep_tcp(self) -> list[ConnectionOpened]:
        """Report established connections not reported yet, read from the ``tcp_conns`` table
        (mapped into this process with its keys: numpy finds the slots in use from the keys,
        then the established ones among them, without copying either).

        Call after :meth:`collect_closed` (``poll`` does), so that a connection closed
        meanwhile is reported by its close, not twice. A connection gone from the table
        without its close reaching us (the kernel reused the slot of a socket whose close it
        did not see) is forgotten after two sweeps that did not see it."""
        # the keys first: scanning every slot would pull the whole table (16 MB by default)
        # through the caches each interval, evicting what the traced workload uses. `!= 0`
        # copies them first: nonzero() over memory the probes write counts, then fills, and
        # raises when the count changed in between
        used = np.flatnonzero(self._tcp_keys != 0)
        slots = used[self._tcp_view["established"][used] == 1]
        offset = self._clock_offset()
        out: list[ConnectionOpened] = []
        seen = set()
        table, size = self._tcp_table, _TCP_CONN.size
        for slot in slots.tolist():
            (
                sk,
                start,
                _spare,
                _sent,
                _recv,
                cgroup,
                _close,
                pid,
                _retrans,
                netns,
                lport,
                rport,
                laddr,
                raddr,
                role,
                established,
                _reset,
                _have_proc,
                family,
                comm,
            ) = _TCP_CONN.unpack_from(table, slot * size)
            key = (sk, start)
            seen.add(key)
            if not sk or not established or not lport or not rport or family not in (4, 6):
                continue  # freed, or caught while being written: next sweep
            if key in self._tcp_open:
                continue
            fam, local = _addr(family, laddr)
            remote = _addr(family, raddr)[1]
            opened = ConnectionOpened(
                start + offset,
                netns,
                cgroup,
                pid,
                _comm(comm),
                Conn("TCP", fam, local, lport, remote, rport),
                _ROLES.get(role, "client"),
            )
            self._tcp_open[key] = 0
            if self._keep(opened):
                out.append(opened)
        for key, missed in list(self._tcp_open.items()):
            if key in seen:
                self._tcp_open[key] = 0
            elif missed >= 1:
                del self._tcp_open[key]
            else:
                self._tcp_open[key] = missed + 1
        return out

    # -- UDP ----------------------------------------------------------------------------------
    def _drain_udp(self, index: int, offset: int) -> list[UdpTraffic]:
        table = self._bpf[f"udp_flows{index}".encode()]
        try:
            items = list(table.items_lookup_and_delete_batch())
        except Exception:
            items = list(table.items())
            table.clear()
        owners = self._bpf[b"udp_owner"]
        out = []
        for k, v in items:
            sk, netns, lport, rport, family, raddr = _UDP_KEY.unpack(bytes(k))
            first, last, bsent, brecv, dsent, drecv, laddr = _UDP_VAL.unpack(bytes(v))
            try:
                cgroup, pid, comm = _OWNER.unpack(bytes(owners[owners.Key(sk)]))
            except KeyError:
                cgroup, pid, comm = 0, 0, b""
            fam, remote = _addr(family, raddr)
            local = self._local_addresses.fill(
                _addr(family, laddr)[1], fam, remote, netns=netns, pid=pid
            )
            ident = (netns, sk, fam, lport, remote, rport)
            first_report = ident not in self._udp_seen
            self._udp_seen[ident] = None
            self._udp_seen.move_to_end(ident)
            while len(self._udp_seen) > self._udp_seen_max:
                self._udp_seen.popitem(last=False)
            out.append(
                UdpTraffic(
                    last + offset,
                    first + offset,
                    netns,
                    cgroup,
                    pid,
                    _comm(comm),
                    Conn("UDP", fam, local, lport, remote, rport),
                    bsent,
                    brecv,
                    dsent,
                    drecv,
                    first_report,
                )
            )
        return out

    def _set_active(self, index: int) -> None:
        self._bpf[b"udp_active"][ctypes.c_int(0)] = ctypes.c_uint32(index)
        self._udp_active = index

    def flush_udp(self, final: bool = False) -> list[UdpTraffic]:
        """Report UDP traffic: the map idle since the last flush is drained, then becomes the
        active one. ``final`` also drains the active map (after a short grace period for
        writers already running), for shutdown and tests."""
        offset = self._clock_offset()
        idle = 1 - self._udp_active
        out = self._drain_udp(idle, offset)
        self._set_active(idle)
        if final:
            time.sleep(0.01)
            out += self._drain_udp(1 - idle, offset)
        self._last_flush = time.monotonic()
        return out

    # -- public -------------------------------------------------------------------------------
    def _sync_counters(self) -> None:
        stats = self._bpf[b"stats"]
        vals = {
            i: stats.sum(ctypes.c_int(i)).value
            for i in (_STAT_OUTPUT_FAILED, _STAT_UDP_FULL, _STAT_TCP_NEW, _STAT_TCP_FULL)
        }  # per CPU  # per-CPU counters
        self.counters["output_failed"] = vals[_STAT_OUTPUT_FAILED]
        self.counters["udp_map_full"] = vals[_STAT_UDP_FULL]
        self.counters["tcp_tracked"] = vals[_STAT_TCP_NEW]
        self.counters["tcp_table_full"] = vals[_STAT_TCP_FULL]
        self.stats.lost = (
            self.counters["output_failed"]
            + self.counters["perf_lost"]
            + self.counters["udp_map_full"]
            + self.counters["tcp_table_full"]
            + self.counters["closed_overwritten"]
            + self.counters["program_misses"]
        )

    def _program_misses(self) -> int:
        """Runs of our tracing programs the kernel skipped (``recursion_misses``, Linux >=
        5.12): a program is not run on a CPU where a tracing program is already running, e.g.
        one preempted mid-run on a preemptible kernel. Each skipped run is an event lost."""
        total = 0
        info = (ctypes.c_uint8 * _PROG_INFO_SIZE)()
        for fd in self._prog_fds:
            size = ctypes.c_uint32(_PROG_INFO_SIZE)
            ctypes.memset(info, 0, _PROG_INFO_SIZE)
            if (
                self._get_info(fd, info, ctypes.byref(size)) == 0
                and size.value >= _PROG_INFO_MISSES + 8
            ):
                total += int.from_bytes(
                    bytes(info[_PROG_INFO_MISSES : _PROG_INFO_MISSES + 8]), "little"
                )
        return total

    def poll(self, timeout_ms: int = 100) -> list[KernelEvent]:
        """Wait up to ``timeout_ms`` for records (not at all while closed connections are
        waiting: their rings wake no one); UDP aggregates and TCP connections open and not
        reported yet are added every ``udp_flush_interval`` seconds."""
        if self._closed:
            raise RuntimeError("KernelProbes is closed")
        self._offset = self._clock_offset()
        if self.closed_waiting():
            timeout_ms = 0
        if self.ringbuf:
            # woken early only after many records (see emit() in probes.c): read what is there
            self._ring.wait(timeout_ms)
            self._read_ring()
        else:
            self._bpf.perf_buffer_poll(timeout_ms)
        events, self._pending = self._pending, []
        events += self.collect_closed()
        if time.monotonic() - self._last_flush >= self.udp_flush_interval:
            events += self.flush_udp()
            events += self.sweep_tcp()
            # a syscall per program: once an interval, not every poll (polls come fast under load)
            self.counters["program_misses"] = self._program_misses()
        self._sync_counters()
        return [e for e in events if self._keep(e)]

    def flush(self) -> list[KernelEvent]:
        """Everything pending now: buffered records, all UDP aggregates (both maps) and the
        TCP connections open and not reported yet."""
        self._offset = self._clock_offset()
        if self.ringbuf:
            self._read_ring()
        else:
            self._bpf.perf_buffer_poll(0)
        events: list[KernelEvent] = [
            *self._pending,
            *self.collect_closed(),
            *self.flush_udp(final=True),
            *self.sweep_tcp(),
        ]
        self._pending = []
        self.counters["program_misses"] = self._program_misses()
        self._sync_counters()
        return [e for e in events if self._keep(e)]

    def discard(self, timeout_ms: int = 100) -> int:
        """Wait up to ``timeout_ms``, then throw away what the probes reported (ring records,
        closed connections) without decoding it; returns how many. For benchmarks: what the
        probes cost with the least work in user space."""
        count = 0
        if self.ringbuf:
            self._ring.wait(timeout_ms)
            count += sum(1 for _ in self._ring.read())
        else:
            self._bpf.perf_buffer_poll(timeout_ms)
            count, self._pending = len(self._pending), []
        return count + sum(len(data) for data in self._read_closed()) // _TCP_CONN.size

    def close(self) -> None:
        """Detach the probes and free their maps."""
        if not self._closed:
            self._closed = True
            self._detach_links()
            del self._tcp_view, self._tcp_keys, self._closed_written
            self._tcp_table.close()
            self._tcp_key_map.close()
            self._closed_table.close()
            self._closed_count_map.close()
            if self._ring is not None:
                self._ring.close()
            self._bpf.cleanup()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

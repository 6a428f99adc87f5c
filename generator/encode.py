"""Hubble 1.20 JSON lines from prebuilt templates, fast enough for a million lines in seconds.

Everything about a flow that is fixed for a given (node, source, destination, packet kind) is
serialised once with orjson and split into static text around the variable fields; per line
only time, uuid, addresses, ports and (for L7) the record are joined in. Field order follows ``flow.proto`` declaration order, as
protojson writes it; zero values are omitted and uint64s are strings (INTERFACES.md §2.1).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence

import numpy as np
import orjson

from .topology import Endpoint, Node

__all__ = ["EMITTER", "FlowEncoder", "Sink", "format_time"]

EMITTER = {"name": "Hubble", "version": "1.20.1+g6b3c7e1d0f4a9b2c8e5d7f1a3b9c0e2d4f6a8b1c"}

# TCP flag combinations by short code; Summary lists flags in Hubble's getTCPFlags order.
_FLAGS: dict[str, tuple[str, ...]] = {
    "S": ("SYN",),
    "SA": ("SYN", "ACK"),
    "A": ("ACK",),
    "AP": ("ACK", "PSH"),
    "AF": ("ACK", "FIN"),
    "RA": ("ACK", "RST"),
    "R": ("RST",),
}
_FLAG_FIELD_ORDER = ("FIN", "SYN", "RST", "PSH", "ACK")  # TCPFlags declaration order
_SUMMARY_ORDER = ("SYN", "ACK", "RST", "FIN", "PSH")

_TO_ENDPOINT, _FROM_ENDPOINT = "TO_ENDPOINT", "FROM_ENDPOINT"
_MONITOR_SUBTYPE = {_TO_ENDPOINT: 0, _FROM_ENDPOINT: 5}
_BPF_FILE = {"EGRESS": "bpf_lxc.c", "INGRESS": "bpf_lxc.c", "": "bpf_host.c"}

# placeholders for the variable fields; they appear in this order in every template
_S = ("@T@", "@U@", "@SIP@", "@DIP@", "@SP@", "@DP@", "@L7@", "@SUM@")


class Sink:
    """Collects (arrival time, line) pairs; arrival = event time + the node's stream lag."""

    __slots__ = ("keys", "lines")

    def __init__(self) -> None:
        self.keys: list[int] = []
        self.lines: list[str] = []

    def __len__(self) -> int:
        return len(self.lines)


def format_time(t_ns: int, cache: dict[int, str] | None = None) -> str:
    """RFC3339 UTC as protojson writes Timestamps: 0, 3, 6 or 9 fractional digits.

    ``cache`` maps whole seconds to their text; the encoder passes one to skip ``strftime``.
    """
    sec, frac = divmod(t_ns, 1_000_000_000)
    hms = cache.get(sec) if cache is not None else None
    if hms is None:
        hms = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        if cache is not None:
            if len(cache) > 100_000:
                cache.clear()
            cache[sec] = hms
    if frac % 1000:
        return f"{hms}.{frac:09d}Z"
    if frac == 0:
        return hms + "Z"
    if frac % 1_000_000 == 0:
        return f"{hms}.{frac // 1_000_000:03d}Z"
    return f"{hms}.{frac // 1000:06d}Z"


def _hex_of(*parts: object) -> str:
    return hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()


def _lxc_mac(ep: Endpoint) -> str:
    h = _hex_of("lxc", ep.pod_name, ep.ip)
    first = (int(h[0:2], 16) & 0xFC) | 2  # locally administered, unicast
    return ":".join([f"{first:02x}"] + [h[i : i + 2] for i in range(2, 12, 2)])


def _summary(proto: str, flags: str) -> str:
    """The deprecated ``Summary`` text Hubble still prints ("TCP Flags: ACK, PSH")."""
    if proto != "TCP":
        return "UDP"
    on = set(_FLAGS[flags])
    return "TCP Flags: " + ", ".join(f for f in _SUMMARY_ORDER if f in on)


class FlowEncoder:
    """Turns flow facts into Hubble JSON lines appended to a :class:`Sink`."""

    def __init__(self, uuid_rng: np.random.Generator, sink: Sink) -> None:
        self.sink = sink
        self._rng = uuid_rng
        self._pool = ""
        self._pos = 0
        self._templates: dict[tuple, tuple[str, ...]] = {}
        self._seconds: dict[int, str] = {}

    # -- per-line helpers -------------------------------------------------------------------
    def _uuid(self) -> str:
        if self._pos >= len(self._pool):
            self._pool = self._rng.bytes(16 * 8192).hex()
            self._pos = 0
        h = self._pool[self._pos : self._pos + 32]
        self._pos += 32
        variant = "89ab"[int(h[16], 16) & 3]
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:32]}"

    def _emit(
        self,
        tpl: tuple[str, ...],
        node: Node,
        t_ns: int,
        sip: str,
        dip: str,
        sport: int,
        dport: int,
    ) -> None:
        p = tpl
        ts = format_time(t_ns, self._seconds)
        self.sink.keys.append(t_ns + node.lag_ns)
        self.sink.lines.append(
            f"{p[0]}{ts}{p[1]}{self._uuid()}{p[2]}{sip}{p[3]}{dip}{p[4]}"
            f"{sport}{p[5]}{dport}{p[6]}{ts}{p[7]}"
        )

    def _emit_l7(
        self,
        tpl: tuple[str, ...],
        node: Node,
        t_ns: int,
        sip: str,
        dip: str,
        sport: int,
        dport: int,
        l7: str,
        summary: str,
    ) -> None:
        p = tpl
        ts = format_time(t_ns, self._seconds)
        self.sink.keys.append(t_ns + node.lag_ns)
        self.sink.lines.append(
            f"{p[0]}{ts}{p[1]}{self._uuid()}{p[2]}{sip}{p[3]}{dip}{p[4]}"
            f"{sport}{p[5]}{dport}{p[6]}{l7}{p[7]}{summary}{p[8]}{ts}{p[9]}"
        )

    # -- templates --------------------------------------------------------------------------
    def _template(self, flow: dict[str, object], node: Node) -> tuple[str, ...]:
        """Serialise once and split at the sentinels: the static text between variable fields."""
        doc = orjson.dumps({"flow": flow, "node_name": node.full_name, "time": "@T@"}).decode()
        for s in ("@SP@", "@DP@", "@L7@"):  # numbers and raw JSON go in without quotes
            doc = doc.replace(f'"{s}"', s)
        parts, rest = [], doc
        for s in _S:
            if s not in rest:
                continue
            head, rest = rest.split(s, 1)
            parts.append(head)
        head, rest = rest.split("@T@", 1)  # the envelope's own time comes last
        parts.append(head)
        parts.append(rest)
        if any("@" in p for p in parts):
            raise AssertionError(f"unreplaced sentinel in template: {doc[:200]}")
        return tuple(parts)

    def _head(
        self,
        node: Node,
        src: Endpoint,
        dst: Endpoint,
        verdict: str,
        proto: str,
        flags: str,
        sender_local: Endpoint | None,
        receiver_local: Endpoint | None,
        drop: int = 0,
    ) -> dict[str, object]:
        flow: dict[str, object] = {
            "time": "@T@",
            "uuid": "@U@",
            "emitter": EMITTER,
            "verdict": verdict,
        }
        if drop:
            flow["drop_reason"] = drop
        if sender_local is not None:
            flow["ethernet"] = {"source": sender_local.mac, "destination": _lxc_mac(sender_local)}
        elif receiver_local is not None:
            flow["ethernet"] = {
                "source": _lxc_mac(receiver_local),
                "destination": receiver_local.mac,
            }
        flow["IP"] = {"source": "@SIP@", "destination": "@DIP@", "ipVersion": "IPv4"}
        l4: dict[str, object] = {"source_port": "@SP@", "destination_port": "@DP@"}
        if proto == "TCP" and flags:
            on = set(_FLAGS[flags])
            l4["flags"] = {f: True for f in _FLAG_FIELD_ORDER if f in on}
        flow["l4"] = {proto: l4}
        flow["source"] = src.as_json(node)
        flow["destination"] = dst.as_json(node)
        return flow

    @staticmethod
    def _tail(
        flow: dict[str, object], node: Node, src_names: Sequence[str], dst_names: Sequence[str]
    ) -> None:
        flow["node_name"] = node.full_name
        flow["node_labels"] = list(node.labels)
        if src_names:
            flow["source_names"] = list(src_names)
        if dst_names:
            flow["destination_names"] = list(dst_names)

    # -- public emitters --------------------------------------------------------------------
    def trace(
        self,
        t_ns: int,
        node: Node,
        src: Endpoint,
        dst: Endpoint,
        sip: str,
        dip: str,
        proto: str,
        sport: int,
        dport: int,
        flags: str,
        obs: str,
        direction: str,
        is_reply: bool,
        reason: str,
        src_names: tuple[str, ...] = (),
        dst_names: tuple[str, ...] = (),
    ) -> None:
        """An L3/L4 trace event (type 4) at ``obs`` (FROM_ENDPOINT / TO_ENDPOINT) on ``node``."""
        key = (
            1,
            node.index,
            src.key,
            dst.key,
            proto,
            flags,
            obs,
            direction,
            is_reply,
            reason,
            src_names,
            dst_names,
        )
        tpl = self._templates.get(key)
        if tpl is None:
            sender = src if obs == _FROM_ENDPOINT else None
            receiver = dst if obs == _TO_ENDPOINT else None
            flow = self._head(node, src, dst, "FORWARDED", proto, flags, sender, receiver)
            flow["Type"] = "L3_L4"
            self._tail(flow, node, src_names, dst_names)
            if is_reply:
                flow["reply"] = True
            sub = _MONITOR_SUBTYPE[obs]
            flow["event_type"] = {"type": 4, "sub_type": sub} if sub else {"type": 4}
            flow["traffic_direction"] = direction
            flow["trace_observation_point"] = obs
            flow["trace_reason"] = reason
            flow["is_reply"] = is_reply
            if receiver is not None:
                flow["interface"] = {
                    "index": receiver.ifindex,
                    "name": "lxc" + _hex_of("if", receiver.pod_name)[:11],
                }
            flow["Summary"] = _summary(proto, flags)
            tpl = self._templates[key] = self._template(flow, node)
        self._emit(tpl, node, t_ns, sip, dip, sport, dport)

    def drop(
        self,
        t_ns: int,
        node: Node,
        src: Endpoint,
        dst: Endpoint,
        sip: str,
        dip: str,
        proto: str,
        sport: int,
        dport: int,
        flags: str,
        code: int,
        desc: str,
        direction: str,
    ) -> None:
        """A datapath drop (type 1, sub_type = reason); Hubble leaves ``is_reply`` unset."""
        key = (2, node.index, src.key, dst.key, proto, flags, code, direction)
        tpl = self._templates.get(key)
        if tpl is None:
            sender = src if direction == "EGRESS" else None
            receiver = dst if direction == "INGRESS" else None
            flow = self._head(node, src, dst, "DROPPED", proto, flags, sender, receiver, drop=code)
            flow["Type"] = "L3_L4"
            self._tail(flow, node, (), ())
            flow["event_type"] = {"type": 1, "sub_type": code}
            if direction:
                flow["traffic_direction"] = direction
            flow["file"] = {"name": _BPF_FILE[direction], "line": 1000 + code * 13 % 997}
            flow["drop_reason_desc"] = desc
            flow["Summary"] = _summary(proto, flags)
            tpl = self._templates[key] = self._template(flow, node)
        self._emit(tpl, node, t_ns, sip, dip, sport, dport)

    def _l7(
        self,
        kind: str,
        t_ns: int,
        node: Node,
        src: Endpoint,
        dst: Endpoint,
        sip: str,
        dip: str,
        sport: int,
        dport: int,
        direction: str,
        is_reply: bool,
        l7: str,
        summary: str,
        src_names: tuple[str, ...],
        dst_names: tuple[str, ...],
    ) -> None:
        key = (3, kind, node.index, src.key, dst.key, direction, is_reply, src_names, dst_names)
        tpl = self._templates.get(key)
        if tpl is None:
            flow = self._head(
                node, src, dst, "FORWARDED", "UDP" if kind == "dns" else "TCP", "", None, None
            )
            flow["Type"] = "L7"
            self._tail(flow, node, src_names, dst_names)
            flow["l7"] = "@L7@"
            if is_reply:
                flow["reply"] = True
            flow["event_type"] = {"type": 129}
            flow["traffic_direction"] = direction
            flow["is_reply"] = is_reply
            flow["Summary"] = "@SUM@"
            tpl = self._templates[key] = self._template(flow, node)
        self._emit_l7(tpl, node, t_ns, sip, dip, sport, dport, l7, summary)

    def dns(
        self,
        t_ns: int,
        node: Node,
        client: Endpoint,
        server: Endpoint,
        cip: str,
        sip: str,
        cport: int,
        is_reply: bool,
        query: str,
        qtype: str,
        rcode: int = 0,
        ips: tuple[str, ...] = (),
        ttl: int = 0,
    ) -> None:
        """A DNS proxy access-log record, seen on the client's node (egress visibility)."""
        if not is_reply:
            l7 = (
                f'{{"type":"REQUEST","dns":{{"query":"{query}","observation_source":"proxy",'
                f'"qtypes":["{qtype}"]}}}}'
            )
            self._l7(
                "dns",
                t_ns,
                node,
                client,
                server,
                cip,
                sip,
                cport,
                53,
                "EGRESS",
                False,
                l7,
                f"DNS Query {query} {qtype}",
                (),
                (),
            )
            return
        parts = [f'"query":"{query}"']
        if ips:
            parts.append('"ips":[' + ",".join(f'"{ip}"' for ip in ips) + "]")
        if ttl:
            parts.append(f'"ttl":{ttl}')
        parts.append('"observation_source":"proxy"')
        if rcode:
            parts.append(f'"rcode":{rcode}')
        parts.append(f'"qtypes":["{qtype}"]')
        if ips or (rcode == 0 and qtype == "TXT"):
            parts.append(f'"rrtypes":["{qtype}"]')
        l7 = '{"type":"RESPONSE","dns":{' + ",".join(parts) + "}}"
        if rcode == 3:
            answer = "RCode: Non-Existent Domain"
        elif ips:
            answer = '\\"' + ",".join(ips) + '\\"'
        else:
            answer = ""
        summary = f"DNS Answer {answer} TTL: {ttl} (Proxy {query} {qtype})"
        self._l7(
            "dns",
            t_ns,
            node,
            server,
            client,
            sip,
            cip,
            53,
            cport,
            "EGRESS",
            True,
            l7,
            summary,
            (),
            (),
        )

    def http(
        self,
        t_ns: int,
        node: Node,
        client: Endpoint,
        server: Endpoint,
        cip: str,
        sip: str,
        cport: int,
        sport: int,
        is_reply: bool,
        method: str,
        url: str,
        code: int = 0,
        latency_ns: int = 0,
    ) -> None:
        """An HTTP proxy access-log record, seen on the server's node (ingress visibility)."""
        if not is_reply:
            l7 = (
                f'{{"type":"REQUEST","http":{{"method":"{method}","url":"{url}",'
                f'"protocol":"HTTP/1.1"}}}}'
            )
            self._l7(
                "http",
                t_ns,
                node,
                client,
                server,
                cip,
                sip,
                cport,
                sport,
                "INGRESS",
                False,
                l7,
                f"HTTP/1.1 {method} {url}",
                (),
                (),
            )
            return
        l7 = (
            f'{{"type":"RESPONSE","latency_ns":"{latency_ns}","http":{{"code":{code},'
            f'"method":"{method}","url":"{url}","protocol":"HTTP/1.1"}}}}'
        )
        summary = f"HTTP/1.1 {code} {latency_ns // 1_000_000}ms ({method} {url})"
        self._l7(
            "http",
            t_ns,
            node,
            server,
            client,
            sip,
            cip,
            sport,
            cport,
            "INGRESS",
            True,
            l7,
            summary,
            (),
            (),
        )

"""Conversations as Hubble sees them: every packet is reported at each end that is a local pod.

A TCP or UDP exchange between two pods yields one trace at the sender (FROM_ENDPOINT) and one at
the receiver (TO_ENDPOINT), possibly on different nodes; a peer that is not a pod (world, host,
kube-apiserver) is observed only at the pod's end. Normal traffic and attacks both build on these
primitives, so attack flows are shaped exactly like normal ones.
"""

from __future__ import annotations

import random

from .encode import FlowEncoder
from .topology import Endpoint, Topology, Workload

__all__ = ["Conversations", "dns_name", "fill", "search_path", "status", "ticks"]

_MS = 1_000_000
_NX_TTL = 4294967295  # TTL Hubble shows on NXDOMAIN / empty answers (seen in real captures)


def search_path(name: str, namespace: str, extra: tuple[str, ...] = ()) -> list[str]:
    """Names a pod's resolver tries for ``name`` (ndots:5, the kubelet's search list, then the
    node's own search domains in ``extra``)."""
    if name.endswith("."):
        return [name]
    suffixes = [f"{namespace}.svc.cluster.local", "svc.cluster.local", "cluster.local", *extra]
    tried = [f"{name}.{s}." for s in suffixes]
    return [f"{name}.", *tried] if name.count(".") >= 5 else [*tried, f"{name}."]


def dns_name(client: Workload, server: Workload) -> tuple[str, str]:
    """The name a client uses for a service and the FQDN that answers it."""
    hit = f"{server.name}.{server.namespace}.svc.cluster.local."
    same_ns = client.namespace == server.namespace
    name = server.name if same_ns else f"{server.name}.{server.namespace}"
    return name, hit


def fill(path: str, rnd: random.Random) -> str:
    """A request path with its ``{id}``/``{n}`` placeholders drawn."""
    return path.replace("{id}", str(rnd.randint(1, 5000))).replace("{n}", str(rnd.randint(1, 40)))


def status(method: str, rnd: random.Random) -> int:
    """An HTTP status as a healthy service answers: mostly 200/201, a few 404s and 5xx."""
    r = rnd.random()
    if r < 0.004:
        return 503
    if r < 0.007:
        return 500
    if r < 0.02:
        return 404
    return 201 if method == "POST" else 200


def ticks(t0: int, t1: int, phase: int, period: int) -> range:
    """Times phase + k*period that fall in [t0, t1)."""
    first = t0 + (phase - t0) % period
    return range(first, t1, period)


class Conversations:
    """Packet-level building blocks (TCP connections, keep-alive activity, DNS, HTTP, drops)."""

    def __init__(self, topo: Topology, enc: FlowEncoder, rnd: random.Random) -> None:
        self.topo = topo
        self.enc = enc
        self.rnd = rnd
        self._random = rnd.random

    def uniform_ns(self, lo: int, hi: int) -> int:
        """A uniform integer in [lo, hi): cheaper than ``randint`` in this hot path."""
        return lo + int(self._random() * (hi - lo))

    # -- timing ------------------------------------------------------------------------------
    def hop(self, a: Endpoint, b: Endpoint) -> int:
        """One-way delay between two endpoints in ns."""
        if a.node is not None and b.node is not None:
            if a.node is b.node:
                return self.uniform_ns(12_000, 45_000)
            return self.uniform_ns(120_000, 450_000)
        return self.uniform_ns(2 * _MS, 25 * _MS)

    def ephemeral_port(self) -> int:
        return self.uniform_ns(32768, 61000)

    # -- packets -----------------------------------------------------------------------------
    def packet(
        self,
        t: int,
        a: Endpoint,
        b: Endpoint,
        aip: str,
        bip: str,
        proto: str,
        aport: int,
        bport: int,
        flags: str,
        from_client: bool,
        reason: str,
        a_name: str = "",
        b_name: str = "",
    ) -> int:
        """Report one packet a→b at each pod end; returns its arrival time at b."""
        arrive = t + self.hop(a, b)
        is_reply = not from_client
        if a.node is not None:
            self.enc.trace(
                t,
                a.node,
                a,
                b,
                aip,
                bip,
                proto,
                aport,
                bport,
                flags,
                "FROM_ENDPOINT",
                "EGRESS" if from_client else "INGRESS",
                is_reply,
                reason,
                (),
                (b_name,) if b_name else (),
            )
        if b.node is not None:
            self.enc.trace(
                arrive,
                b.node,
                a,
                b,
                aip,
                bip,
                proto,
                aport,
                bport,
                flags,
                "TO_ENDPOINT",
                "INGRESS" if from_client else "EGRESS",
                is_reply,
                reason,
                (a_name,) if a_name else (),
                (),
            )
        return arrive

    def tcp_connect(
        self,
        t: int,
        c: Endpoint,
        s: Endpoint,
        cip: str,
        sip: str,
        dport: int,
        *,
        data: bool = True,
        response: bool = False,
        close: bool = True,
        fqdn: str = "",
        cport: int = 0,
    ) -> tuple[int, int]:
        """SYN, SYN-ACK, then optional request/response data and FIN; returns (cport, end)."""
        cport = cport or self.ephemeral_port()
        cn = "" if c.is_pod else fqdn
        sn = "" if s.is_pod else fqdn
        at_s = self.packet(t, c, s, cip, sip, "TCP", cport, dport, "S", True, "NEW", cn, sn)
        at_c = self.packet(
            at_s + 8_000, s, c, sip, cip, "TCP", dport, cport, "SA", False, "REPLY", sn, cn
        )
        t = at_c + 5_000
        if data:
            at_s = self.packet(
                t, c, s, cip, sip, "TCP", cport, dport, "AP", True, "ESTABLISHED", cn, sn
            )
            t = at_s
            if response:
                t = self.packet(
                    at_s + self.uniform_ns(300_000, 20 * _MS),
                    s,
                    c,
                    sip,
                    cip,
                    "TCP",
                    dport,
                    cport,
                    "AP",
                    False,
                    "REPLY",
                    sn,
                    cn,
                )
        if close:
            t = self.packet(
                t + self.uniform_ns(50_000, 2 * _MS),
                c,
                s,
                cip,
                sip,
                "TCP",
                cport,
                dport,
                "AF",
                True,
                "ESTABLISHED",
                cn,
                sn,
            )
        return cport, t

    def activity(
        self,
        t: int,
        c: Endpoint,
        s: Endpoint,
        cip: str,
        sip: str,
        cport: int,
        dport: int,
        *,
        response: bool = True,
        fqdn: str = "",
    ) -> int:
        """Data on an established connection (what monitor aggregation still reports)."""
        cn = "" if c.is_pod else fqdn
        sn = "" if s.is_pod else fqdn
        t = self.packet(t, c, s, cip, sip, "TCP", cport, dport, "AP", True, "ESTABLISHED", cn, sn)
        if response:
            t = self.packet(
                t + self.uniform_ns(200_000, 15 * _MS),
                s,
                c,
                sip,
                cip,
                "TCP",
                dport,
                cport,
                "AP",
                False,
                "REPLY",
                sn,
                cn,
            )
        return t

    def probe(self, t: int, c: Endpoint, s: Endpoint, dport: int, open_port: bool) -> int:
        """A scan probe: SYN answered by SYN-ACK (open) or RST-ACK (closed)."""
        cport = self.ephemeral_port()
        at_s = self.packet(t, c, s, c.ip, s.ip, "TCP", cport, dport, "S", True, "NEW")
        return self.packet(
            at_s + 6_000,
            s,
            c,
            s.ip,
            c.ip,
            "TCP",
            dport,
            cport,
            "SA" if open_port else "RA",
            False,
            "REPLY",
        )

    def udp_exchange(
        self, t: int, c: Endpoint, s: Endpoint, cip: str, sip: str, dport: int, fqdn: str = ""
    ) -> int:
        cport = self.ephemeral_port()
        cn = "" if c.is_pod else fqdn
        sn = "" if s.is_pod else fqdn
        at_s = self.packet(t, c, s, cip, sip, "UDP", cport, dport, "", True, "NEW", cn, sn)
        return self.packet(
            at_s + self.uniform_ns(100_000, 3 * _MS),
            s,
            c,
            sip,
            cip,
            "UDP",
            dport,
            cport,
            "",
            False,
            "REPLY",
            sn,
            cn,
        )

    def drop(
        self,
        t: int,
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
        """A datapath drop, reported on the node of the endpoint whose policy dropped it."""
        local = dst if direction == "INGRESS" else src
        node = local.node if local.node is not None else (src.node or dst.node)
        assert node is not None
        self.enc.drop(
            t, node, src, dst, sip, dip, proto, sport, dport, flags, code, desc, direction
        )

    # -- application protocols ---------------------------------------------------------------
    def dns_query(
        self,
        t: int,
        client: Endpoint,
        query: str,
        qtype: str,
        *,
        rcode: int = 0,
        ips: tuple[str, ...] = (),
        ttl: int = 0,
        latency: int = 0,
        port: int = 0,
    ) -> int:
        """One query and its answer through the client node's DNS proxy; returns answer time."""
        dns = self.rnd.choice(self.topo.workloads["kube-system/coredns"].pods)
        assert client.node is not None
        cport = port or self.ephemeral_port()
        self.enc.dns(t, client.node, client, dns, client.ip, dns.ip, cport, False, query, qtype)
        t2 = t + (latency or self.uniform_ns(150_000, 1_500_000))
        if rcode == 3 or (not ips and qtype != "TXT"):
            ttl = _NX_TTL
        self.enc.dns(
            t2,
            client.node,
            client,
            dns,
            client.ip,
            dns.ip,
            cport,
            True,
            query,
            qtype,
            rcode=rcode,
            ips=ips,
            ttl=ttl,
        )
        return t2

    def lookup(
        self,
        t: int,
        client: Endpoint,
        name: str,
        hit: str,
        ips: tuple[str, ...],
        ttl: int,
        *,
        aaaa: bool = False,
        upstream: bool = False,
    ) -> int:
        """Resolve ``name`` through the search path until ``hit``; NXDOMAIN noise on the way.

        With ``upstream`` the answer is a CoreDNS cache miss forwarded to the upstream resolver;
        where the cluster forwards misses too, so is every tried name outside the cluster domain.
        """
        port = self.ephemeral_port()
        habits = self.topo.spec.dns
        for q in search_path(name, client.namespace, habits.search):
            found = q == hit
            forwarded = upstream and (
                found or (habits.forward_misses and not q.endswith(".cluster.local."))
            )
            lat = self.uniform_ns(4 * _MS, 30 * _MS) if forwarded else 0
            if forwarded:
                self._forward(t)
            end = self.dns_query(
                t,
                client,
                q,
                "A",
                rcode=0 if found else 3,
                ips=ips if found else (),
                ttl=ttl,
                latency=lat,
                port=port,
            )
            if aaaa:
                self.dns_query(
                    t + 20_000, client, q, "AAAA", rcode=0 if found else 3, latency=lat, port=port
                )
            t = end + self.uniform_ns(20_000, 200_000)
            if found:
                break
        return t

    def _forward(self, t: int) -> None:
        """CoreDNS forwarding a cache miss to the upstream resolver (world, UDP/53)."""
        dns = self.rnd.choice(self.topo.workloads["kube-system/coredns"].pods)
        up = self.topo.upstream_for(dns, t)
        self.udp_exchange(t + 50_000, dns, self.topo.world, dns.ip, up.ips[0], 53)

    def http(
        self,
        t: int,
        client: Endpoint,
        server: Endpoint,
        cport: int,
        method: str,
        url: str,
        code: int,
    ) -> int:
        """An HTTP request/response through the server node's L7 proxy; returns response time."""
        assert server.node is not None
        arrive = t + self.hop(client, server)
        self.enc.http(
            arrive,
            server.node,
            client,
            server,
            client.ip,
            server.ip,
            cport,
            server.port,
            False,
            method,
            url,
        )
        latency = int(self.rnd.lognormvariate(15.5, 0.8))  # median ~5 ms
        self.enc.http(
            arrive + latency,
            server.node,
            client,
            server,
            client.ip,
            server.ip,
            cport,
            server.port,
            True,
            method,
            url,
            code,
            latency,
        )
        return arrive + latency + self.hop(server, client)

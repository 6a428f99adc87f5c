"""The local address of a UDP flow whose socket is bound to none.

An unconnected socket bound to the wildcard (``0.0.0.0``, ``::``, a DNS server, a client that
only calls ``sendto``) has no address of its own: routing picks one per datagram, and the
socket layer, where the probes count UDP, never learns it. The namespace's own addresses,
read from ``/proc/<pid>/net`` of the socket's process (or, when it has exited, by entering
the namespace through its name under ``/run/netns``: CNI plugins name pods' namespaces there),
usually settle it: a pod has one
address per family. With several, the one sharing the longest prefix with the peer (the one
on the peer's subnet, when there is one) is taken, as routing would for a directly connected
peer; a tie leaves the address unspecified rather than guessing. A loopback peer is answered
from loopback.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from pathlib import Path

from netwarden.bpf.identity import local_addresses, netns_addresses, netns_names

__all__ = ["LocalAddresses", "closest"]

_UNSPECIFIED = {4: "0.0.0.0", 6: "::"}


def closest(candidates: frozenset[str], remote: str) -> str | None:
    """The candidate sharing the longest bit prefix with ``remote`` (same family only);
    None when there is none or two share the longest."""
    peer = ipaddress.ip_address(remote)
    width = peer.max_prefixlen
    best: list[tuple[int, str]] = []
    for text in candidates:
        addr = ipaddress.ip_address(text)
        if addr.version != peer.version:
            continue
        common = width - (int(addr) ^ int(peer)).bit_length()
        best.append((common, text))
    if not best:
        return None
    best.sort(reverse=True)
    if len(best) > 1 and best[0][0] == best[1][0]:
        return None
    return best[0][1]


class LocalAddresses:
    """Fill in unspecified local addresses from the namespace's own, cached per namespace for
    ``ttl`` seconds (addresses change rarely; a flow report is once per second)."""

    def __init__(
        self,
        *,
        proc: str | Path = "/proc",
        run_netns: str | Path = "/run/netns",
        ttl: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.proc = Path(proc)
        self.run_netns = Path(run_netns)
        self.ttl = ttl
        self.clock = clock
        self._cache: dict[int, tuple[float, frozenset[str]]] = {}

    def fill(self, local: str, family: int, remote: str, *, netns: int, pid: int) -> str:
        """``local`` itself when it is an address; else the namespace's best guess (see the
        module docstring), or ``local`` unchanged when there is none."""
        if local != _UNSPECIFIED.get(family) or remote == _UNSPECIFIED.get(family):
            return local
        peer = ipaddress.ip_address(remote)
        if peer.is_loopback:
            return "127.0.0.1" if family == 4 else "::1"
        if not pid:
            return local
        return closest(self._addresses(netns, pid), remote) or local

    def _addresses(self, netns: int, pid: int) -> frozenset[str]:
        now = self.clock()
        hit = self._cache.get(netns)
        if hit is not None and hit[0] > now:
            return hit[1]
        found = local_addresses(self.proc / str(pid) / "net")
        if not found:
            name = netns_names(self.run_netns).get(netns)
            if name is not None:
                try:
                    found = netns_addresses(self.run_netns / name)
                except OSError:
                    found = frozenset()
        if not found and hit is not None:
            found = hit[1]  # the process is gone: keep what we knew of its namespace
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[netns] = (now + self.ttl, found)
        return found

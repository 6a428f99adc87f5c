"""Nodes and their addresses, kept current by a list-then-watch.

A peer at a node's address is that node. Cilium learns every node's addresses from its Node
object (``ParseNode`` in ``pkg/k8s/node.go``: ``status.addresses`` of type InternalIP and
ExternalIP, the first of each type per address family, others ignored) and gives them the
identity ``reserved:host`` (1) for its own node and ``reserved:remote-node`` (6) for every
other (``nodeIdentityLabels`` in ``pkg/node/manager``); host-network pods share their node's
address and so its identity. :class:`NodeWatch` keeps a :class:`NodeIndex` of those
addresses for the resolver. Its ``generation`` moves only when a node comes, goes or changes
addresses, not with the status heartbeats that make up most node updates.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from kubernetes import client as k8s

from netwarden.bpf.k8swatch import ListWatch

__all__ = ["NODE_ADDRESS_TYPES", "NodeIndex", "NodeInfo", "NodeWatch"]

#: the status.addresses types Cilium takes a node's IPs from
NODE_ADDRESS_TYPES: Final = ("InternalIP", "ExternalIP")


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A node's name and the addresses that stand for it."""

    name: str
    addresses: tuple[str, ...]  # canonical spelling, in status order

    @classmethod
    def from_dict(cls, node: Mapping[str, Any]) -> NodeInfo:
        """From a node as the API server sends it, keeping what Cilium keeps: the first
        InternalIP and ExternalIP of each family (a hostname or DNS name is no address)."""
        seen: set[tuple[str, int]] = set()
        addresses: list[str] = []
        for entry in (node.get("status") or {}).get("addresses") or ():
            kind = entry.get("type")
            if kind not in NODE_ADDRESS_TYPES:
                continue
            try:
                addr = ipaddress.ip_address(entry.get("address") or "")
            except ValueError:
                continue
            if (kind, addr.version) in seen:
                continue
            seen.add((kind, addr.version))
            if addr.compressed not in addresses:
                addresses.append(addr.compressed)
        return cls(((node.get("metadata") or {}).get("name", "")), tuple(addresses))


class NodeIndex:
    """Nodes by name and by address, safe to read while a watch thread writes."""

    def __init__(self) -> None:
        self.generation = 0
        self._lock = threading.Lock()
        self._by_name: dict[str, NodeInfo] = {}
        self._by_address: dict[str, str] = {}  # address -> node name

    def by_address(self, ip: str) -> NodeInfo | None:
        """The node that has this address (canonical spelling)."""
        with self._lock:
            name = self._by_address.get(ip)
            return None if name is None else self._by_name.get(name)

    def get(self, name: str) -> NodeInfo | None:
        with self._lock:
            return self._by_name.get(name)

    def nodes(self) -> list[NodeInfo]:
        with self._lock:
            return list(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def upsert(self, node: NodeInfo) -> None:
        with self._lock:
            if self._by_name.get(node.name) == node:
                return  # a heartbeat: nothing identities depend on changed
            self._by_name[node.name] = node
            self._reindex()

    def remove(self, name: str) -> None:
        with self._lock:
            if self._by_name.pop(name, None) is not None:
                self._reindex()

    def replace(self, nodes: Iterable[NodeInfo]) -> None:
        """Make the index hold exactly these nodes (after a list)."""
        fresh = {node.name: node for node in nodes}
        with self._lock:
            if fresh != self._by_name:
                self._by_name = fresh
                self._reindex()

    def _reindex(self) -> None:
        """Rebuild the address map (nodes change rarely; while an address moves between two
        nodes it belongs to either) and start a new generation."""
        self._by_address = {
            address: node.name for node in self._by_name.values() for address in node.addresses
        }
        self.generation += 1


class NodeWatch(ListWatch[NodeInfo]):
    """List then watch every node into a :class:`NodeIndex` (options: :class:`ListWatch`).

    Every node, whatever node the agent runs on: all of them are peers it may see."""

    resource = "nodes"
    without = "node addresses (other nodes are known only by their pods' hostIP)"
    index: NodeIndex

    def __init__(
        self, api: k8s.ApiClient, *, index: NodeIndex | None = None, **options: Any
    ) -> None:
        super().__init__(api, **options)
        self.index = index if index is not None else NodeIndex()

    def _request(self, **kwargs: Any) -> Any:
        return self.core.list_node(**kwargs)

    def _decode(self, obj: Mapping[str, Any]) -> NodeInfo:
        return NodeInfo.from_dict(obj)

    def _replace(self, items: list[NodeInfo]) -> None:
        self.index.replace(items)

    def _upsert(self, item: NodeInfo) -> None:
        self.index.upsert(item)

    def _remove(self, item: NodeInfo) -> None:
        self.index.remove(item.name)

"""Namespaces and their labels, kept current by a list-then-watch.

Cilium gives a pod's identity the labels of its namespace, each as
``k8s:io.cilium.k8s.namespace.labels.<key>=<value>`` (``SanitizePodLabels`` in Cilium's
``pkg/k8s/utils``; kept by its default identity-label filter), so that namespaceSelectors
and CNP ``io.cilium.k8s.namespace.labels.*`` keys match them, and re-labels the pods when a
namespace's labels change. The resolver needs the same, so :class:`NamespaceWatch` keeps a
:class:`NamespaceIndex` of name -> labels. Its ``generation`` moves only when a namespace
comes, goes or changes its labels (not on status or annotation updates), since every move
makes the resolver recompute what it cached.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s

from netwarden.bpf.k8swatch import ListWatch

__all__ = ["NamespaceIndex", "NamespaceInfo", "NamespaceWatch"]

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class NamespaceInfo:
    """What identity resolution needs of a namespace."""

    name: str
    labels: Labels  # sorted (key, value)

    @classmethod
    def from_dict(cls, namespace: Mapping[str, Any]) -> NamespaceInfo:
        """From a namespace as the API server sends it."""
        meta = namespace.get("metadata") or {}
        return cls(meta.get("name", ""), tuple(sorted((meta.get("labels") or {}).items())))


class NamespaceIndex:
    """Namespace labels by name, safe to read while a watch thread writes.

    At most ``max_namespaces`` are kept (further ones are counted in ``dropped``; their pods
    then carry only the ``kubernetes.io/metadata.name`` namespace label).
    """

    def __init__(self, *, max_namespaces: int = 100_000) -> None:
        self.max_namespaces = max_namespaces
        self.generation = 0
        self.dropped = 0
        self._lock = threading.Lock()
        self._labels: dict[str, Labels] = {}

    def labels(self, name: str) -> Labels | None:
        """A namespace's labels, or None when it is not known (not listed yet, or not at all)."""
        with self._lock:
            return self._labels.get(name)

    def __len__(self) -> int:
        return len(self._labels)

    def upsert(self, namespace: NamespaceInfo) -> None:
        with self._lock:
            current = self._labels.get(namespace.name)
            if current == namespace.labels:
                return  # a status or annotation change: identities stay as they are
            if current is None and len(self._labels) >= self.max_namespaces:
                self.dropped += 1
                return
            self._labels[namespace.name] = namespace.labels
            self.generation += 1

    def remove(self, name: str) -> None:
        with self._lock:
            if self._labels.pop(name, None) is not None:
                self.generation += 1

    def replace(self, namespaces: Iterable[NamespaceInfo]) -> None:
        """Make the index hold exactly these namespaces (after a list)."""
        fresh: dict[str, Labels] = {}
        for namespace in namespaces:
            if namespace.name not in fresh and len(fresh) >= self.max_namespaces:
                self.dropped += 1
                continue
            fresh[namespace.name] = namespace.labels
        with self._lock:
            if fresh != self._labels:
                self._labels = fresh
                self.generation += 1


class NamespaceWatch(ListWatch[NamespaceInfo]):
    """List then watch every namespace into a :class:`NamespaceIndex` (options: :class:`ListWatch`)."""

    resource = "namespaces"
    without = "namespace labels (pods carry only io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name)"
    index: NamespaceIndex

    def __init__(
        self, api: k8s.ApiClient, *, index: NamespaceIndex | None = None, **options: Any
    ) -> None:
        super().__init__(api, **options)
        self.index = index if index is not None else NamespaceIndex()

    def _request(self, **kwargs: Any) -> Any:
        return self.core.list_namespace(**kwargs)

    def _decode(self, obj: Mapping[str, Any]) -> NamespaceInfo:
        return NamespaceInfo.from_dict(obj)

    def _replace(self, items: list[NamespaceInfo]) -> None:
        self.index.replace(items)

    def _upsert(self, item: NamespaceInfo) -> None:
        self.index.upsert(item)

    def _remove(self, item: NamespaceInfo) -> None:
        self.index.remove(item.name)

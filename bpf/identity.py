"""Who the ends of a kernel event are, as Hubble endpoints.

The probes know a socket by its network namespace, the cgroup of the process that used it and
that process's pid; the peer only by its address. :class:`IdentityResolver` turns these into
:class:`EndpointInfo`, the fields of a Hubble ``Endpoint``, so the flow mapper's flows look
like Hubble's and identity resolution, windows and policies downstream work unchanged.

The socket's own end (:meth:`IdentityResolver.local`), first match wins:

1. cgroup -> container -> pod UID -> pod (from the pod watch), labelled as Cilium labels pods
   (its namespace's labels too, from the namespace watch); a host-network pod is the host
   (``reserved:host``), as in Cilium, which gives such pods no endpoint of their own;
2. the identity map, by cgroup path prefix, then by network namespace;
3. the host's own network namespace: ``reserved:host`` (identity 1);
4. the network namespace itself: namespace ``netns``, pod ``<name under /run/netns>`` or
   ``netns-<inode>``, label ``netwarden:netns=<inode>`` - a stable identity for containers
   and namespaces nobody named, so they still get windows and baselines.

The peer (:meth:`IdentityResolver.remote`): the pod with that IP (never a host-network pod);
the identity map's addresses and CIDRs; the host's own addresses (``reserved:host``); a
node's InternalIP/ExternalIP from the node watch (``reserved:host`` for this node,
``reserved:remote-node`` for the others); an address of a local network namespace we know
(resolved as that namespace's own end would be); a node address as pods report it
(``hostIP``, or a host-network pod's IP: host or remote-node by the pod's node); else
``reserved:world`` for a global address, unknown (identity 0, no labels) for private, loopback
and link-local ones.

Results are cached per key (bounded) and recomputed when the pod, namespace or node index,
the network namespaces known or the cgroup hierarchy change, so the per-event cost is a dict
lookup.
"""

from __future__ import annotations

import ctypes
import ipaddress
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol, runtime_checkable

from netwarden.bpf.cgroups import (
    CgroupPaths,
    find_cgroup2_mount,
    parse_cgroup_path,
    pid_cgroup_path,
)
from netwarden.bpf.identitymap import IdentityMap, MapEntry
from netwarden.bpf.k8swatch import ListWatch
from netwarden.bpf.nodewatch import NodeIndex, NodeWatch
from netwarden.bpf.nswatch import Labels, NamespaceIndex, NamespaceWatch
from netwarden.bpf.podwatch import (
    PodIndex,
    PodInfo,
    PodWatch,
    api_client_from_environment,
)

__all__ = [
    "HOST", "REMOTE_NODE", "UNKNOWN", "WORLD", "EndpointInfo", "EndpointResolver", "IdentityResolver",
    "host_netns_inode", "identity_relevant", "local_addresses", "map_endpoint", "netns_addresses", "netns_endpoint",
    "netns_inode", "netns_names", "open_resolver", "pod_endpoint", "pod_labels",
]  # fmt: skip

log = logging.getLogger(__name__)

CLONE_NEWNET: Final = 0x40000000
NETNS_NAMESPACE: Final = "netns"  # the namespace of fallback (netns) identities


@dataclass(frozen=True, slots=True)
class EndpointInfo:
    """The Hubble ``Endpoint`` fields of one end of a flow.

    ``identity`` is 0 except for reserved identities (1 host, 2 world, 6 remote-node): the
    agent allocates no security identities. ``labels`` are sorted ``source:key=value``
    strings; ``workloads`` (name, kind) pairs.
    """

    identity: int = 0
    namespace: str = ""
    pod_name: str = ""
    labels: tuple[str, ...] = ()
    workloads: tuple[tuple[str, str], ...] = ()


HOST: Final = EndpointInfo(identity=1, labels=("reserved:host",))
WORLD: Final = EndpointInfo(identity=2, labels=("reserved:world",))
REMOTE_NODE: Final = EndpointInfo(identity=6, labels=("reserved:remote-node",))
UNKNOWN: Final = EndpointInfo()


@runtime_checkable
class EndpointResolver(Protocol):
    """What the flow mapper needs: tests pass a fake, the agent an :class:`IdentityResolver`."""

    def local(self, netns: int, cgroup_id: int, pid: int) -> EndpointInfo: ...

    def remote(self, ip: str) -> EndpointInfo: ...


# --------------------------------------------------------------------------- endpoints

# Cilium's default identity-relevant label filter (pkg/labelsfilter, defaultLabelPrefixCfg):
# regular expressions matched at the start of a label's key; a key is kept unless an ignore
# pattern matches it and no include pattern matches a longer part of it.
_INCLUDE_LABELS: Final = tuple(
    re.compile(re.escape(prefix))
    for prefix in (
        "io.kubernetes.pod.namespace",
        "io.cilium.k8s.namespace.labels",
        "app.kubernetes.io",
        "io.cilium.k8s.policy.cluster",
    )
)
_IGNORE_LABELS: Final = tuple(
    re.compile(pattern)
    for pattern in (
        r"io\.kubernetes",
        r"kubernetes\.io",
        re.escape("statefulset.kubernetes.io/pod-name"),
        re.escape("apps.kubernetes.io/pod-index"),
        re.escape("batch.kubernetes.io/job-completion-index"),
        r".*beta\.kubernetes\.io",
        r"k8s\.io",
        r"pod-template-generation",
        r"pod-template-hash",
        r"controller-revision-hash",
        r"annotation.*",
        r"etcd_node",
    )
)


def identity_relevant(key: str) -> bool:
    """Whether Cilium's default label filter keeps label ``key`` in a pod's identity (and so
    in Hubble's flows): the longest include match against the shortest ignore match."""
    ignored = min((m.end() for p in _IGNORE_LABELS if (m := p.match(key))), default=0)
    if not ignored:
        return True
    included = max((m.end() for p in _INCLUDE_LABELS if (m := p.match(key))), default=0)
    return included > ignored


#: Cilium's own label keys: a pod's labels may not set them (its namespace's labels, its policy
#: labels); Cilium drops them from the pod's labels before adding its own
CILIUM_LABEL_PREFIX: Final = "io.cilium.k8s"
#: namespace labels go into pod identities under this prefix, joined with "."
NAMESPACE_LABELS_PREFIX: Final = "io.cilium.k8s.namespace.labels"


def _label(source: str, key: str, value: str) -> str:
    return f"{source}:{key}={value}" if value else f"{source}:{key}"


def pod_labels(pod: PodInfo, cluster_name: str = "default",
               namespace_labels: Labels | None = None) -> tuple[str, ...]:  # fmt: skip
    """A pod's labels as Cilium puts them in flows, sorted: the pod's identity-relevant labels,
    its namespace and namespace labels, service account and cluster.

    ``namespace_labels`` are the namespace's labels from the namespace watch; None (not known)
    gives the one every namespace has since Kubernetes 1.21, ``kubernetes.io/metadata.name``.
    """
    out = {
        _label("k8s", "io.kubernetes.pod.namespace", pod.namespace),
        _label("k8s", "io.cilium.k8s.policy.cluster", cluster_name),
    }
    if namespace_labels is None:
        namespace_labels = (("kubernetes.io/metadata.name", pod.namespace),)
    for key, value in namespace_labels:  # all kept by Cilium's default label filter
        out.add(_label("k8s", f"{NAMESPACE_LABELS_PREFIX}.{key}", value))
    if pod.service_account:
        out.add(_label("k8s", "io.cilium.k8s.policy.serviceaccount", pod.service_account))
    for key, value in pod.labels:
        if key.startswith(CILIUM_LABEL_PREFIX):
            continue
        if identity_relevant(key):
            out.add(_label("k8s", key, value))
    return tuple(sorted(out))


def pod_endpoint(pod: PodInfo, cluster_name: str = "default",
                 namespace_labels: Labels | None = None) -> EndpointInfo:  # fmt: skip
    """A pod as a Hubble endpoint (``namespace_labels``: see :func:`pod_labels`)."""
    return EndpointInfo(0, pod.namespace, pod.name, pod_labels(pod, cluster_name, namespace_labels),
                        (pod.workload,) if pod.workload else ())  # fmt: skip


def map_endpoint(entry: MapEntry) -> EndpointInfo:
    workloads = ((entry.workload.name, entry.workload.kind),) if entry.workload else ()
    return EndpointInfo(0, entry.namespace, entry.pod, entry.hubble_labels, workloads)


def netns_endpoint(inode: int, name: str | None = None) -> EndpointInfo:
    """The fallback identity of a network namespace nobody named in Kubernetes or the map.

    A namespace created with ``ip netns add NAME`` is called by that name (stable across
    re-creation, unlike its inode, so baselines survive); others ``netns-<inode>``.
    """
    labels = [
        _label("k8s", "io.kubernetes.pod.namespace", NETNS_NAMESPACE),
        f"netwarden:netns={inode}",
    ]
    if name:
        labels.append(f"netwarden:netns-name={name}")
    return EndpointInfo(0, NETNS_NAMESPACE, name or f"netns-{inode}", tuple(sorted(labels)))


# --------------------------------------------------------------------------- namespaces


def netns_inode(name: str, run_dir: str | Path = "/run/netns") -> int | None:
    """The inode of a named network namespace (``ip netns add NAME``), or None."""
    try:
        return os.stat(Path(run_dir, name)).st_ino
    except (FileNotFoundError, NotADirectoryError):
        return None


def netns_names(run_dir: str | Path = "/run/netns") -> dict[int, str]:
    """inode -> name of every named network namespace."""
    out: dict[int, str] = {}
    try:
        entries = list(os.scandir(run_dir))
    except FileNotFoundError:
        return out
    for entry in entries:
        try:
            out.setdefault(os.stat(entry.path).st_ino, entry.name)
        except OSError:
            continue
    return out


def host_netns_inode(proc: str | Path = "/proc") -> int:
    """The inode of the host's network namespace: init's (/proc/1/ns/net, with hostPID), else
    our own when init's is not readable (the agent runs with hostNetwork)."""
    try:
        return os.stat(Path(proc, "1", "ns", "net")).st_ino
    except (PermissionError, FileNotFoundError):
        return os.stat(Path(proc, "self", "ns", "net")).st_ino


def local_addresses(proc_net: str | Path) -> frozenset[str]:
    """The unicast addresses a network namespace owns, from its /proc/<pid>/net directory:
    IPv4 ``/32 host LOCAL`` routes of fib_trie and global IPv6 addresses of if_inet6 (loopback
    and link-local left out: every namespace has the same ones)."""
    found: set[str] = set()
    try:
        last = ""
        for line in Path(proc_net, "fib_trie").read_text().splitlines():
            text = line.strip()
            if text.startswith("|-- "):
                last = text[4:]
            elif text == "/32 host LOCAL" and last and not last.startswith("127."):
                found.add(last)
    except FileNotFoundError:
        pass
    try:
        for line in Path(proc_net, "if_inet6").read_text().splitlines():
            fields = line.split()
            if len(fields) >= 4 and fields[3] == "00":  # scope global
                found.add(ipaddress.IPv6Address(bytes.fromhex(fields[0])).compressed)
    except FileNotFoundError:
        pass
    return frozenset(found)


_libc: Any = None


def netns_addresses(ns_path: str | Path) -> frozenset[str]:
    """The addresses of the network namespace behind ``ns_path`` (``/run/netns/NAME`` or
    ``/proc/PID/ns/net``), read by entering it (setns, needs CAP_SYS_ADMIN) from a
    short-lived thread: the only thread that changes namespace. (For a pid, reading
    /proc/PID/net with :func:`local_addresses` needs no setns.)"""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    path = Path(ns_path)
    result: list[frozenset[str]] = []
    failure: list[OSError] = []

    def read() -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            failure.append(exc)
            return
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                failure.append(OSError(err, f"setns({path}): {os.strerror(err)}"))
                return
        finally:
            os.close(fd)
        result.append(local_addresses("/proc/thread-self/net"))

    thread = threading.Thread(target=read, name="netwarden-netns", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def _address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Parse an address; IPv4-mapped IPv6 (a dual-stack socket's view) as the IPv4 address."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


# --------------------------------------------------------------------------- the resolver


class _Cache:
    """A bounded dict of results, each valid for the generation it was computed at and, when
    it was a best guess made while a rescan was rate-limited, until it expires."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: dict[Any, tuple[Any, float | None, EndpointInfo]] = {}

    def get(self, key: Any, generation: Any, now: float) -> EndpointInfo | None:
        hit = self._data.get(key)
        if hit is None or hit[0] != generation or (hit[1] is not None and now >= hit[1]):
            return None
        return hit[2]

    def put(
        self, key: Any, generation: Any, value: EndpointInfo, expires: float | None = None
    ) -> EndpointInfo:
        if len(self._data) >= self.size and key not in self._data:
            del self._data[next(iter(self._data))]  # oldest first
        self._data[key] = (generation, expires, value)
        return value

    def __len__(self) -> int:
        return len(self._data)


class IdentityResolver:
    """Resolves kernel-event ends to endpoints from the pod, namespace and node indexes, the
    identity map, cgroups and network namespaces. Every source is optional: without any,
    locals resolve to host or their netns and remotes to world or unknown.

    ``node_name`` is the Kubernetes name of the node this runs on: its addresses (from
    ``nodes``) and its host-network pods are the host, other nodes' remote nodes. Without it,
    this node is the one whose addresses include one of the host's. ``host_addresses`` is a
    fixed set or a function re-read on refresh. Namespace names, addresses of known namespaces
    and host addresses are refreshed when a lookup misses, at most every ``refresh_interval``
    seconds; answers given while a refresh or cgroup rescan was rate-limited are revisited
    after that long. Safe to call from several threads.
    """

    def __init__(self, *, pods: PodIndex | None = None, identity_map: IdentityMap | None = None,
                 cgroups: CgroupPaths | None = None, host_netns: int | None = None,
                 host_addresses: Iterable[str] | Callable[[], Iterable[str]] = (),
                 namespaces: NamespaceIndex | None = None, nodes: NodeIndex | None = None,
                 node_name: str | None = None,
                 cluster_name: str = "default", netns_dir: str | Path = "/run/netns",
                 proc: str | Path = "/proc", cache_size: int = 1 << 16, max_netns: int = 4096,
                 refresh_interval: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.pods = pods
        self.namespaces = namespaces
        self.nodes = nodes
        self.node_name = node_name or None
        self.identity_map = identity_map
        self.cgroups = cgroups
        self.host_netns = host_netns
        self.cluster_name = cluster_name
        self.netns_dir = Path(netns_dir)
        self.proc = Path(proc)
        self.max_netns = max_netns
        self.refresh_interval = refresh_interval
        self._clock = clock
        self._host_source = host_addresses
        self._host_addrs = (
            frozenset() if callable(host_addresses) else frozenset(_norm(host_addresses))
        )
        self._lock = threading.RLock()
        self._local = _Cache(cache_size)
        self._remote = _Cache(cache_size)
        self._names: dict[int, str] = {}  # netns inode -> name under /run/netns
        self._pids: dict[int, int] = {}  # netns inode -> a pid seen in it (to read its addresses)
        self._owner: dict[str, int] = {}  # address -> netns inode
        self._netns_gen = 0
        self._last_refresh: float | None = None
        self.refreshes = 0
        #: the pod watch feeding ``pods``, when this resolver owns one (:func:`open_resolver`)
        self.watch: PodWatch | None = None
        #: every watch this resolver owns (pods, namespaces, nodes), stopped by :meth:`close`
        self.watches: list[ListWatch[Any]] = []

    @classmethod
    def for_host(cls, *, pods: PodIndex | None = None, identity_map: IdentityMap | None = None,
                 cluster_name: str = "default", cgroup_root: str | Path | None = None,
                 **kwargs: Any) -> IdentityResolver:  # fmt: skip
        """A resolver for the machine it runs on: its cgroup v2 hierarchy (``cgroup_root``, by
        default the one mounted here: in a container, name a mount of the host's, as the
        container's own shows only its own cgroup), its network namespace as the host's, and
        the host's addresses read from /proc (other keyword arguments:
        :class:`IdentityResolver`'s)."""
        proc = Path(kwargs.pop("proc", "/proc"))
        mount = Path(cgroup_root) if cgroup_root is not None else find_cgroup2_mount()
        cgroups = CgroupPaths(mount) if mount is not None else None

        def host_addresses() -> frozenset[str]:
            for candidate in (proc / "1" / "net", proc / "thread-self" / "net"):
                try:
                    return local_addresses(candidate)
                except PermissionError:
                    continue
            return frozenset()

        resolver = cls(pods=pods, identity_map=identity_map, cgroups=cgroups,
                       host_netns=host_netns_inode(proc), host_addresses=host_addresses,
                       cluster_name=cluster_name, proc=proc, **kwargs)  # fmt: skip
        resolver.refresh(force=True)
        return resolver

    # ----------------------------------------------------------------- the protocol

    def local(self, netns: int, cgroup_id: int, pid: int) -> EndpointInfo:
        """The socket's own end: by cgroup (pod, map), then by network namespace."""
        with self._lock:
            now = self._clock()
            key = (netns, cgroup_id)
            cacheable = cgroup_id != 0 or pid == 0  # a pid alone is not a stable key
            if cacheable and (hit := self._local.get(key, self._generation(), now)) is not None:
                return hit
            found, provisional = self._resolve_local(netns, cgroup_id, pid)
            if not cacheable:
                return found
            # tagged with the generation after resolving, which may have learned names
            expires = now + self.refresh_interval if provisional else None
            return self._local.put(key, self._generation(), found, expires)

    def remote(self, ip: str) -> EndpointInfo:
        """The peer, by address (cached by the text as given: parsing is the costly part)."""
        with self._lock:
            if (hit := self._remote.get(ip, self._generation(), self._clock())) is not None:
                return hit
        addr = _address(ip)
        if addr is None:
            return UNKNOWN
        key = addr.compressed
        with self._lock:
            now = self._clock()
            if key != ip and (hit := self._remote.get(key, self._generation(), now)) is not None:
                return self._remote.put(ip, self._generation(), hit)
            found = self._resolve_remote(addr, key)
            if found is None and self.refresh():
                found = self._resolve_remote(addr, key)
            if found is not None:
                return self._remote.put(key, self._generation(), found)
            # world or unknown for now; a namespace we learn of later may own it
            found = WORLD if addr.is_global else UNKNOWN
            return self._remote.put(key, self._generation(), found, now + self.refresh_interval)

    # ----------------------------------------------------------------- resolution

    def _resolve_local(self, netns: int, cgroup_id: int, pid: int) -> tuple[EndpointInfo, bool]:
        """The endpoint, and whether it is a guess to revisit (a lookup was rate-limited)."""
        path = self.cgroups.path(cgroup_id) if self.cgroups is not None and cgroup_id else None
        provisional = path is None and cgroup_id != 0 and self.cgroups is not None
        if path is None and pid:
            path = pid_cgroup_path(pid, self.proc)
        if path is not None:
            ref = parse_cgroup_path(path)
            pod = (
                self.pods.by_uid(ref.pod_uid)
                if ref and ref.pod_uid and self.pods is not None
                else None
            )
            if pod is not None:
                # Cilium gives a host-network pod no endpoint: its traffic is the host's
                return (HOST if pod.host_network else self._pod_endpoint(pod)), False
            if self.identity_map is not None and (entry := self.identity_map.by_cgroup(path)):
                return map_endpoint(entry), False
        if not netns:
            return UNKNOWN, provisional
        if netns not in self._names and netns != self.host_netns:
            self.refresh()  # a namespace created since: learn its name
        found = self._netns_identity(netns)
        if (
            netns != self.host_netns
            and pid
            and netns not in self._pids
            and len(self._pids) < self.max_netns
        ):
            self._pids[netns] = pid  # to read its addresses: a peer may connect to them
            self._read_addresses(netns)
        return found, provisional or (netns != self.host_netns and netns not in self._names)

    def _netns_identity(self, netns: int) -> EndpointInfo:
        name = self._names.get(netns)
        if self.identity_map is not None and (entry := self.identity_map.by_netns(netns, name)):
            return map_endpoint(entry)
        if netns == self.host_netns:
            return HOST
        return netns_endpoint(netns, name)

    def _resolve_remote(
        self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address, key: str
    ) -> EndpointInfo | None:
        if self.pods is not None and (pod := self.pods.by_ip(key)) is not None:
            return self._pod_endpoint(pod)
        if self.identity_map is not None and (entry := self.identity_map.by_ip(addr)) is not None:
            return map_endpoint(entry)
        if key in self._host_addrs:
            return HOST
        if self.nodes is not None and (node := self.nodes.by_address(key)) is not None:
            return HOST if self._on_this_node(node.name) else REMOTE_NODE
        if (netns := self._owner.get(key)) is not None:
            return self._netns_identity(netns)
        # a node known only through its pods: hostIP, or the IP of a host-network pod
        if self.pods is not None and (name := self.pods.node_of_address(key)) is not None:
            return HOST if self._on_this_node(name) else REMOTE_NODE
        return None

    def _pod_endpoint(self, pod: PodInfo) -> EndpointInfo:
        labels = self.namespaces.labels(pod.namespace) if self.namespaces is not None else None
        return pod_endpoint(pod, self.cluster_name, labels)

    def _on_this_node(self, name: str) -> bool:
        """Whether the node of this name is the one this runs on: by ``node_name`` when given,
        else by its addresses (from the node watch) including one of the host's."""
        if not name:
            return False
        if self.node_name is not None:
            return name == self.node_name
        node = self.nodes.get(name) if self.nodes is not None else None
        return node is not None and not self._host_addrs.isdisjoint(node.addresses)

    # ----------------------------------------------------------------- namespaces and addresses

    def refresh(self, *, force: bool = False) -> bool:
        """Re-read namespace names, their addresses and the host's; False when rate-limited."""
        with self._lock:
            now = self._clock()
            if (
                not force
                and self._last_refresh is not None
                and now - self._last_refresh < self.refresh_interval
            ):
                return False
            self._last_refresh = now
            self.refreshes += 1
            names = netns_names(self.netns_dir)
            if len(names) > self.max_netns:
                names = dict(list(names.items())[: self.max_netns])
            changed = names != self._names
            self._names = names
            for inode, pid in list(self._pids.items()):
                try:
                    alive = os.stat(self.proc / str(pid) / "ns" / "net").st_ino == inode
                except OSError:
                    alive = False
                if not alive:
                    del self._pids[inode]
            owner: dict[str, int] = {}
            for inode in {*self._names, *self._pids} - {self.host_netns}:
                for address in self._addresses_of(inode):
                    owner[address] = inode
            if callable(self._host_source):
                host = frozenset(_norm(self._host_source()))
                changed |= host != self._host_addrs
                self._host_addrs = host
            changed |= owner != self._owner
            self._owner = owner
            if changed:
                self._netns_gen += 1
            return True

    def _read_addresses(self, inode: int) -> None:
        addresses = self._addresses_of(inode)
        new = {a for a in addresses if self._owner.get(a) != inode}
        if new:
            for address in new:
                self._owner[address] = inode
            self._netns_gen += 1

    def _addresses_of(self, inode: int) -> frozenset[str]:
        try:
            if (pid := self._pids.get(inode)) is not None:
                return local_addresses(self.proc / str(pid) / "net")
            if (name := self._names.get(inode)) is not None:
                return netns_addresses(self.netns_dir / name)
        except OSError as exc:
            log.debug("addresses of netns %d: %s", inode, exc)
        return frozenset()

    def _generation(self) -> tuple[int, int, int, int, int]:
        """What cached answers depend on: each source's change counter."""
        return (self.pods.generation if self.pods is not None else 0, self._netns_gen,
                self.cgroups.scans if self.cgroups is not None else 0,
                self.namespaces.generation if self.namespaces is not None else 0,
                self.nodes.generation if self.nodes is not None else 0)  # fmt: skip

    def cache_sizes(self) -> tuple[int, int]:
        """Entries in the local and remote caches (each bounded by ``cache_size``)."""
        return len(self._local), len(self._remote)

    def close(self) -> None:
        """Stop the watches this resolver owns, if any."""
        for watch in self.watches:
            watch.stop()
        if self.watch is not None and self.watch not in self.watches:
            self.watch.stop()


def open_resolver(*, identity_map: str | Path | None = None, kubernetes: str = "auto",
                  node_name: str | None = None, cluster_name: str = "default",
                  sync_timeout: float = 10.0, namespace_labels: bool = True, node_identities: bool = True,
                  cgroup_root: str | Path | None = None,
                  log: Callable[[str], Any] = print) -> IdentityResolver:  # fmt: skip
    """The agent's resolver: this host, the identity map file, and watches of this node's pods,
    of every namespace (their labels go into pod identities) and of every node (their
    addresses are ``reserved:remote-node``, this node's ``reserved:host``).

    ``kubernetes`` is ``auto`` (the in-cluster service account when running in a pod, else no
    pod identities), ``off``, or a kubeconfig path. ``node_name`` must be the Kubernetes node
    name (the downward API's ``spec.nodeName``); None watches every pod. ``namespace_labels``
    and ``node_identities`` turn the namespace and node watches off. ``cgroup_root`` is the
    host's cgroup v2 root (default: the one mounted here). The first lists are
    awaited up to ``sync_timeout`` seconds in all; after that objects arrive as the watches
    catch up. A resource the agent may not read (403) is reported once through ``log``, and
    the resolver goes on without it. Raises
    :class:`~netwarden.bpf.identitymap.IdentityMapError` for a bad map file and ValueError for
    a bad ``kubernetes`` value.
    """
    mapping = IdentityMap.load(identity_map) if identity_map is not None else None
    api = None
    if kubernetes == "auto":
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            api = api_client_from_environment()
        else:
            log("netwarden agent: not running in a Kubernetes pod: no pod identities "
                "(--kubernetes KUBECONFIG to use one)")  # fmt: skip
    elif kubernetes != "off":
        if not Path(kubernetes).is_file():
            raise ValueError(f"kubernetes={kubernetes!r}: expected auto, off or a kubeconfig file")
        api = api_client_from_environment(kubernetes)
    watch: PodWatch | None = None
    namespaces: NamespaceWatch | None = None
    nodes: NodeWatch | None = None
    if api is not None:

        def warn(text: str) -> None:
            log(f"netwarden agent: {text}")

        watch = PodWatch(api, node_name=node_name, warn=warn).start()
        namespaces = NamespaceWatch(api, warn=warn).start() if namespace_labels else None
        nodes = NodeWatch(api, warn=warn).start() if node_identities else None
        deadline = time.monotonic() + sync_timeout
        where = f"node {node_name}" if node_name else "the cluster"
        pending: list[tuple[ListWatch[Any] | None, str]] = [
            (watch, f"pods of {where}"),
            (namespaces, "namespaces"),
            (nodes, "nodes"),
        ]
        for started, what in pending:
            if started is None:
                continue
            if started.wait_synced(max(0.0, deadline - time.monotonic())):
                log(f"netwarden agent: watching {what}: {len(started.index)} now")
            elif not started.denied:  # a refusal was reported already
                log(f"netwarden agent: {what} not listed after {sync_timeout:g} s "
                    f"({started.stats.last_error or 'no answer'}); {started.resource} follow when they are")  # fmt: skip
    resolver = IdentityResolver.for_host(pods=watch.index if watch else None, identity_map=mapping,
                                         namespaces=namespaces.index if namespaces else None,
                                         nodes=nodes.index if nodes else None, node_name=node_name,
                                         cluster_name=cluster_name, cgroup_root=cgroup_root)  # fmt: skip
    resolver.watch = watch
    resolver.watches = [w for w in (watch, namespaces, nodes) if w is not None]
    return resolver


def _norm(addresses: Iterable[str]) -> Iterable[str]:
    for ip in addresses:
        if (addr := _address(ip)) is not None:
            yield addr.compressed

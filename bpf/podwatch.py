"""Pods of this node (or of the cluster), kept current by a list-then-watch.

The identity resolver maps a cgroup to a pod UID and a peer address to a pod; both need the
pods' metadata without asking the API server per event. :class:`PodWatch` lists pods (paged)
and then watches from the list's ``resourceVersion`` in a daemon thread, through the official
``kubernetes`` client, keeping a :class:`PodIndex`: UID -> pod, pod IP -> pod (host-network pods
excluded, since their IP is the node's), and the node addresses pods report as ``hostIP``.

Watch semantics follow client-go's reflector: resume from the last ``resourceVersion`` seen
(objects and ``BOOKMARK`` events) after a dropped connection; on ``410 Gone`` (the version was
compacted away) relist and replace the index, which also forgets pods deleted while
disconnected; other failures back off exponentially with jitter up to ``backoff_max``.
Events are decoded as plain JSON rather than the client's models: a node agent sees every
pod change on its node and needs a dozen fields of each.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Self

from kubernetes import client as k8s
from kubernetes.watch.watch import iter_resp_lines

__all__ = ["PodIndex", "PodInfo", "PodWatch", "WatchStats", "api_client_from_environment", "workload_of"]

log = logging.getLogger(__name__)

_TERMINAL: Final = frozenset({"Succeeded", "Failed"})
#: the static pod's own UID (its manifest hash), which names its cgroup, on the mirror pod
MIRROR_ANNOTATION: Final = "kubernetes.io/config.mirror"


def workload_of(pod: Mapping[str, Any]) -> tuple[str, str] | None:
    """(name, kind) of the workload that owns a pod, with Cilium's heuristics
    (``pkg/k8s/utils/workload.go``): a ReplicaSet named ``<deployment>-<pod-template-hash>`` is
    its Deployment, a Job named ``<cronjob>-<8-10 digits>`` its CronJob, else the controller.
    None for pods with no generated name or no controller (bare and static pods).
    """
    meta = pod.get("metadata") or {}
    if not meta.get("generateName"):
        return None
    ref = next((r for r in meta.get("ownerReferences") or () if r.get("controller")), None)
    if ref is None:
        return None
    kind, name = ref.get("kind", ""), ref.get("name", "")
    labels = meta.get("labels") or {}
    template_hash = labels.get("pod-template-hash", "")
    if kind == "ReplicaSet" and template_hash and name.endswith(template_hash):
        return name.removesuffix(f"-{template_hash}"), "Deployment"
    if kind == "ReplicationController" and labels.get("deploymentconfig"):
        return labels["deploymentconfig"], "DeploymentConfig"
    if kind == "Job":
        base, _, stamp = name.rpartition("-")
        if base and stamp.isdigit() and 8 <= len(stamp) <= 10:
            return base, "CronJob"
    return name, kind


@dataclass(frozen=True, slots=True)
class PodInfo:
    """What identity resolution needs of a pod (decoded from its JSON)."""

    uid: str
    namespace: str
    name: str
    labels: tuple[tuple[str, str], ...]  # sorted (key, value)
    service_account: str
    node_name: str
    host_network: bool
    ips: tuple[str, ...]
    host_ip: str
    phase: str
    deleting: bool  # deletionTimestamp set: its IP may already belong to its successor
    workload: tuple[str, str] | None  # (name, kind)
    static_uid: str  # kubernetes.io/config.mirror of a mirror pod, else ""
    resource_version: str

    @classmethod
    def from_dict(cls, pod: Mapping[str, Any]) -> PodInfo:
        """From a pod as the API server sends it (camelCase JSON)."""
        meta = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        status = pod.get("status") or {}
        ips = [p.get("ip", "") for p in status.get("podIPs") or ()] or [status.get("podIP") or ""]
        return cls(
            uid=meta.get("uid", ""),
            namespace=meta.get("namespace", ""),
            name=meta.get("name", ""),
            labels=tuple(sorted((meta.get("labels") or {}).items())),
            service_account=spec.get("serviceAccountName") or spec.get("serviceAccount") or "",
            node_name=spec.get("nodeName") or "",
            host_network=bool(spec.get("hostNetwork")),
            ips=tuple(_canonical(ip) for ip in ips if ip),
            host_ip=_canonical(status.get("hostIP") or ""),
            phase=status.get("phase") or "",
            deleting=bool(meta.get("deletionTimestamp")),
            workload=workload_of(pod),
            static_uid=(meta.get("annotations") or {}).get(MIRROR_ANNOTATION, ""),
            resource_version=meta.get("resourceVersion", ""),
        )


def _canonical(ip: str) -> str:
    """One spelling per address (the resolver looks addresses up as text)."""
    try:
        return ipaddress.ip_address(ip).compressed
    except ValueError:
        return ip


class PodIndex:
    """Pods by UID and by IP, safe to read while a watch thread writes.

    ``generation`` grows with every change, so a reader can cache what it derived from the
    index and know when to derive it again. At most ``max_pods`` pods are kept (further ones
    are counted in ``dropped``): a node agent watching its node holds ~100, a cluster-wide
    watch of a 5,000-node cluster ~150,000.
    """

    def __init__(self, *, max_pods: int = 250_000) -> None:
        self.max_pods = max_pods
        self.generation = 0
        self.dropped = 0
        self._lock = threading.Lock()
        self._by_uid: dict[str, PodInfo] = {}
        self._by_static: dict[str, str] = {}  # static pod hash -> mirror pod UID
        self._by_ip: dict[str, str] = {}  # IP -> UID
        self._host_ips: Counter[str] = Counter()

    def by_uid(self, uid: str) -> PodInfo | None:
        """A pod by ``metadata.uid``, or a static pod by the UID in its cgroup path."""
        with self._lock:
            pod = self._by_uid.get(uid)
            if pod is None and (mirror := self._by_static.get(uid)) is not None:
                pod = self._by_uid.get(mirror)
            return pod

    def by_ip(self, ip: str) -> PodInfo | None:
        """The running pod that has this IP (never a host-network pod)."""
        with self._lock:
            uid = self._by_ip.get(ip)
            return None if uid is None else self._by_uid.get(uid)

    def host_ips(self) -> frozenset[str]:
        """Node addresses, as pods report them in ``status.hostIP``."""
        with self._lock:
            return frozenset(self._host_ips)

    def pods(self) -> list[PodInfo]:
        with self._lock:
            return list(self._by_uid.values())

    def __len__(self) -> int:
        return len(self._by_uid)

    def upsert(self, pod: PodInfo) -> None:
        with self._lock:
            if pod.uid not in self._by_uid and len(self._by_uid) >= self.max_pods:
                self.dropped += 1
                return
            self._unindex(pod.uid)
            self._index(pod)
            self.generation += 1

    def remove(self, uid: str) -> None:
        with self._lock:
            self._unindex(uid)
            self.generation += 1

    def replace(self, pods: Iterable[PodInfo]) -> None:
        """Make the index hold exactly these pods (after a list)."""
        with self._lock:
            self._by_uid.clear()
            self._by_static.clear()
            self._by_ip.clear()
            self._host_ips.clear()
            for pod in pods:
                if len(self._by_uid) >= self.max_pods:
                    self.dropped += 1
                    continue
                self._index(pod)
            self.generation += 1

    def _index(self, pod: PodInfo) -> None:
        self._by_uid[pod.uid] = pod
        if pod.static_uid:
            self._by_static[pod.static_uid] = pod.uid
        if pod.host_ip:
            self._host_ips[pod.host_ip] += 1
        if pod.host_network or pod.phase in _TERMINAL:
            return
        for ip in pod.ips:
            holder = self._by_ip.get(ip)
            # a terminating pod does not take its IP back from the pod that reuses it
            if holder is None or not pod.deleting or holder == pod.uid:
                self._by_ip[ip] = pod.uid

    def _unindex(self, uid: str) -> None:
        old = self._by_uid.pop(uid, None)
        if old is None:
            return
        if old.static_uid and self._by_static.get(old.static_uid) == uid:
            del self._by_static[old.static_uid]
        if old.host_ip:
            self._host_ips[old.host_ip] -= 1
            if self._host_ips[old.host_ip] <= 0:
                del self._host_ips[old.host_ip]
        for ip in old.ips:
            if self._by_ip.get(ip) == uid:
                del self._by_ip[ip]


@dataclass
class WatchStats:
    """What the watch loop has been through (for metrics and tests)."""

    lists: int = 0  # full lists (the first one and every relist)
    expired: int = 0  # 410 Gone: the watch's resourceVersion was compacted away
    reconnects: int = 0  # watches resumed from the last resourceVersion
    errors: int = 0
    events: int = 0
    last_error: str = ""
    resource_version: str = ""
    history: list[str] = field(default_factory=list)  # last few loop steps, newest last


class _Expired(Exception):
    """The server no longer has the requested resourceVersion: relist."""


class PodWatch:
    """List then watch pods into a :class:`PodIndex`, in a daemon thread.

    ``node_name`` limits it to one node's pods (``fieldSelector=spec.nodeName=<node>``, what a
    DaemonSet agent wants); None watches every pod (to recognise pods of other nodes as peers
    and other nodes' addresses as remote nodes). ``watch_timeout`` is the server-side timeout
    of one watch request: the stream ends then and is resumed, as client-go does.
    """

    def __init__(self, api: k8s.ApiClient, *, node_name: str | None = None,
                 index: PodIndex | None = None, page_size: int = 500, watch_timeout: int = 300,
                 connect_timeout: float = 10.0, backoff_initial: float = 0.5,
                 backoff_max: float = 30.0) -> None:  # fmt: skip
        self.core = k8s.CoreV1Api(api)
        self.node_name = node_name
        self.index = index if index is not None else PodIndex()
        self.page_size = page_size
        self.watch_timeout = watch_timeout
        self.connect_timeout = connect_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stats = WatchStats()
        self._stop = threading.Event()
        self._synced = threading.Event()
        self._resp: Any = None
        #: where to resume watching; None: list first
        self._rv: str | None = None
        self._resp_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def field_selector(self) -> str | None:
        return f"spec.nodeName={self.node_name}" if self.node_name else None

    @property
    def synced(self) -> bool:
        """True once the first list has filled the index."""
        return self._synced.is_set()

    def wait_synced(self, timeout: float | None = None) -> bool:
        return self._synced.wait(timeout)

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("this PodWatch was already started")
        self._thread = threading.Thread(target=self._run, name="netwarden-podwatch", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop, interrupting a watch in progress."""
        self._stop.set()
        with self._resp_lock:
            if self._resp is not None:
                _interrupt(self._resp)
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- the loop

    def _run(self) -> None:
        delay = self.backoff_initial
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                if self._rv is None:
                    self._list()
                    self._synced.set()
                else:
                    self.stats.reconnects += 1
                    self._note(f"watch from {self._rv}")
                self._watch()
            except _Expired as exc:
                self.stats.expired += 1
                self._note(f"expired: {exc}")
                self._rv = None  # relist at once: nothing is wrong with the server
                continue
            except k8s.ApiException as exc:
                if exc.status == 410:  # an expired continue token, or a too-old version
                    self.stats.expired += 1
                    self._note(f"expired: {exc.reason}")
                    self._rv = None
                    continue
                self._failed(f"{exc.status} {exc.reason}")
            except Exception as exc:  # noqa: BLE001 - refused/reset connections, timeouts, bad JSON: retry all
                if self._stop.is_set():
                    break
                self._failed(f"{type(exc).__name__}: {exc}")  # resume from the last version seen
            else:
                if time.monotonic() - started >= 1.0:
                    delay = self.backoff_initial  # a watch that lasted: the server is healthy
                    continue
                # a stream the server ends at once, over and over, is backed off like a failure
            if self._stop.wait(random.uniform(delay / 2, delay)):
                break
            delay = min(delay * 2, self.backoff_max)

    def _failed(self, what: str) -> None:
        self.stats.errors += 1
        self.stats.last_error = what
        self._note(f"error: {what}")
        log.warning("pod watch: %s; retrying", what)

    def _note(self, step: str) -> None:
        self.stats.history = [*self.stats.history[-15:], step]

    def _list(self) -> None:
        """List every page, replace the index, and resume watching from the list's version."""
        pods: list[PodInfo] = []
        token: str | None = None
        rv = ""
        while True:
            resp = self.core.list_pod_for_all_namespaces(
                field_selector=self.field_selector, limit=self.page_size, _continue=token,
                _preload_content=False, _request_timeout=(self.connect_timeout, 60),
            )  # fmt: skip
            try:
                body = json.loads(resp.data)
            finally:
                resp.release_conn()
            pods.extend(PodInfo.from_dict(item) for item in body.get("items") or ())
            meta = body.get("metadata") or {}
            rv = meta.get("resourceVersion") or rv
            token = meta.get("continue") or None
            if token is None:
                break
        if not rv:
            raise ValueError("the pod list has no resourceVersion")
        self.index.replace(pods)
        self.stats.lists += 1
        self.stats.resource_version = self._rv = rv
        self._note(f"list: {len(pods)} pods at {rv}")

    def _watch(self) -> None:
        """Follow one watch request, from and advancing ``_rv``, until the server ends it."""
        resp = self.core.list_pod_for_all_namespaces(
            watch=True, resource_version=self._rv, allow_watch_bookmarks=True,
            field_selector=self.field_selector, timeout_seconds=self.watch_timeout,
            _preload_content=False,
            # no byte for this long means a dead connection (bookmarks come about every minute)
            _request_timeout=(self.connect_timeout, self.watch_timeout + 30),
        )  # fmt: skip
        with self._resp_lock:
            self._resp = resp
        try:
            if self._stop.is_set():
                return
            for line in iter_resp_lines(resp):
                if self._stop.is_set():
                    break
                if line.strip() and (rv := self._apply(json.loads(line))):
                    self.stats.resource_version = self._rv = rv
        finally:
            with self._resp_lock:
                self._resp = None
            resp.release_conn()

    def _apply(self, event: Mapping[str, Any]) -> str:
        """Apply one watch event to the index; its resourceVersion ("" if none)."""
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _Expired(obj.get("message", "410 Gone"))
            raise k8s.ApiException(status=obj.get("code", 0), reason=f"{obj.get('reason')}: {obj.get('message')}")
        self.stats.events += 1
        meta = obj.get("metadata") or {}
        if kind in ("ADDED", "MODIFIED"):
            self.index.upsert(PodInfo.from_dict(obj))
        elif kind == "DELETED":
            self.index.remove(meta.get("uid", ""))
        elif kind != "BOOKMARK":
            log.warning("pod watch: unknown event type %r", kind)
        return meta.get("resourceVersion", "")


def _interrupt(resp: Any) -> None:
    """Unblock a thread reading a streaming response (urllib3 >= 2.3 has shutdown())."""
    try:
        if hasattr(resp, "shutdown"):
            resp.shutdown()
        else:
            resp.close()
    except OSError:
        pass


def api_client_from_environment(kubeconfig: str | None = None, context: str | None = None) -> k8s.ApiClient:
    """An API client from the pod's service account, else from a kubeconfig file."""
    from kubernetes import config

    if kubeconfig is None:
        try:
            config.load_incluster_config()
            return k8s.ApiClient()
        except config.ConfigException:
            pass
    return config.new_client_from_config(config_file=kubeconfig, context=context)

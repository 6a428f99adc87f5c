"""List-then-watch of one kind of Kubernetes object, in a daemon thread.

The agent keeps three kinds current without asking the API server per event: pods
(:mod:`~netwarden.bpf.podwatch`), namespaces (:mod:`~netwarden.bpf.nswatch`) and nodes
(:mod:`~netwarden.bpf.nodewatch`). :class:`ListWatch` is the loop they share, with the
semantics of client-go's reflector: list (paged), then watch from the list's
``resourceVersion``; after a dropped connection resume from the last version seen (objects and
``BOOKMARK`` events); on ``410 Gone`` (the version was compacted away) relist and replace
everything, which also forgets objects deleted while disconnected; back off other failures
exponentially with jitter up to ``backoff_max``.

A 401 or 403 (the agent's RBAC does not cover the resource) is reported once through ``warn``
and then retried every ``backoff_max`` seconds without further noise, so a fixed ClusterRole
takes effect without a restart; :meth:`ListWatch.wait_synced` stops waiting for it at once.
Events are decoded as plain JSON rather than the client's models: a node agent sees every
change of these objects and needs a few fields of each.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sized
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Self, TypeVar

from kubernetes import client as k8s
from kubernetes.watch.watch import iter_resp_lines

__all__ = ["ListWatch", "WatchStats"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: answers that mean "not allowed", not "not working": reported once, retried slowly
_DENIED = frozenset({401, 403})


@dataclass
class WatchStats:
    """What the watch loop has been through (for metrics and tests)."""

    lists: int = 0  # full lists (the first one and every relist)
    expired: int = 0  # 410 Gone: the watch's resourceVersion was compacted away
    reconnects: int = 0  # watches resumed from the last resourceVersion
    errors: int = 0
    denied: int = 0  # 401/403 answers: the agent may not read the resource (RBAC)
    events: int = 0
    last_error: str = ""
    resource_version: str = ""
    history: list[str] = field(default_factory=list)  # last few loop steps, newest last


class _Expired(Exception):
    """The server no longer has the requested resourceVersion: relist."""


class ListWatch(ABC, Generic[T]):
    """List then watch one resource into an index, in a daemon thread.

    A subclass names the resource, makes the list/watch request and keeps its index from the
    decoded objects. ``watch_timeout`` is the server-side timeout of one watch request: the
    stream ends then and is resumed, as client-go does. ``warn`` receives the one warning
    given when the resource may not be read (default: this module's logger).
    """

    #: the resource, plural (for logs, the thread name and warnings)
    resource: ClassVar[str]
    #: what the agent goes without while the resource cannot be read (for the warning)
    without: ClassVar[str]
    #: what the watch keeps current (``len()`` is how many objects it holds)
    index: Sized

    def __init__(self, api: k8s.ApiClient, *, page_size: int = 500, watch_timeout: int = 300,
                 connect_timeout: float = 10.0, backoff_initial: float = 0.5,
                 backoff_max: float = 30.0, warn: Callable[[str], Any] | None = None) -> None:  # fmt: skip
        self.core = k8s.CoreV1Api(api)
        self.page_size = page_size
        self.watch_timeout = watch_timeout
        self.connect_timeout = connect_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stats = WatchStats()
        self._warn: Callable[[str], Any] = warn if warn is not None else log.warning
        self._refusing = False  # in a run of 401/403 answers, already reported
        self._stop = threading.Event()
        self._synced = threading.Event()
        #: set once synced or refused: nothing more to wait for at start-up
        self._settled = threading.Event()
        self._resp: Any = None
        #: where to resume watching; None: list first
        self._rv: str | None = None
        self._resp_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- what a subclass provides

    @abstractmethod
    def _request(self, **kwargs: Any) -> Any:
        """One list or watch request of the resource (a ``CoreV1Api.list_*`` call)."""

    @abstractmethod
    def _decode(self, obj: Mapping[str, Any]) -> T:
        """What the index keeps of one object, from its JSON."""

    @abstractmethod
    def _replace(self, items: list[T]) -> None:
        """Make the index hold exactly these (after a list)."""

    @abstractmethod
    def _upsert(self, item: T) -> None:
        """An object was added or modified."""

    @abstractmethod
    def _remove(self, item: T) -> None:
        """An object was deleted (``item`` is its last state)."""

    # ----------------------------------------------------------------- lifecycle

    @property
    def synced(self) -> bool:
        """True once the first list has filled the index."""
        return self._synced.is_set()

    @property
    def denied(self) -> bool:
        """True while the API server refuses the resource to the agent (401/403)."""
        return self._refusing

    def wait_synced(self, timeout: float | None = None) -> bool:
        """Wait for the first list; returns at once (False) when the resource is refused."""
        self._settled.wait(timeout)
        return self.synced

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError(f"this {type(self).__name__} was already started")
        self._thread = threading.Thread(
            target=self._run, name=f"netwarden-{self.resource}-watch", daemon=True
        )
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
                    self._allowed()  # before synced: whoever saw synced must not still see denied
                    self._synced.set()
                    self._settled.set()
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
                if exc.status in _DENIED:
                    self._refused(exc)
                    delay = self.backoff_max  # RBAC changes are rare: ask again now and then
                else:
                    self._failed(f"{exc.status} {exc.reason}")
            except Exception as exc:
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
        log.warning("%s watch: %s; retrying", self.resource, what)

    def _refused(self, exc: k8s.ApiException) -> None:
        """A 401/403: warn once per run of refusals, then keep quiet."""
        self.stats.denied += 1
        what = f"{exc.status} {exc.reason}"
        try:
            message = json.loads(exc.body or "{}").get("message") or ""
        except (ValueError, AttributeError):
            message = ""
        self.stats.last_error = f"{what}: {message}" if message else what
        self._note(f"denied: {self.stats.last_error}")
        if self._refusing:
            log.debug("%s watch: still %s", self.resource, what)
            return
        self._refusing = True
        self._settled.set()
        fix = ("Check its credentials" if exc.status == 401
               else f"Grant its ClusterRole get, list and watch on {self.resource}")  # fmt: skip
        self._warn(f"the API server refuses {self.resource} to this agent ({self.stats.last_error}); "
                   f"going on without {self.without}. {fix} (asked again every {self.backoff_max:g} s)")  # fmt: skip

    def _allowed(self) -> None:
        """A list or watch went through: a refusal reported before is over (a later one is
        reported again)."""
        if self._refusing:
            self._refusing = False
            log.info("%s watch: %s are readable now", self.resource, self.resource)

    def _note(self, step: str) -> None:
        self.stats.history = [*self.stats.history[-15:], step]

    def _list(self) -> None:
        """List every page, replace the index, and resume watching from the list's version."""
        items: list[T] = []
        token: str | None = None
        rv = ""
        while True:
            resp = self._request(limit=self.page_size, _continue=token, _preload_content=False,
                                 _request_timeout=(self.connect_timeout, 60))  # fmt: skip
            try:
                body = json.loads(resp.data)
            finally:
                resp.release_conn()
            items.extend(self._decode(item) for item in body.get("items") or ())
            meta = body.get("metadata") or {}
            rv = meta.get("resourceVersion") or rv
            token = meta.get("continue") or None
            if token is None:
                break
        if not rv:
            raise ValueError(f"the {self.resource} list has no resourceVersion")
        self._replace(items)
        self.stats.lists += 1
        self.stats.resource_version = self._rv = rv
        self._note(f"list: {len(items)} {self.resource} at {rv}")

    def _watch(self) -> None:
        """Follow one watch request, from and advancing ``_rv``, until the server ends it."""
        resp = self._request(
            watch=True, resource_version=self._rv, allow_watch_bookmarks=True,
            timeout_seconds=self.watch_timeout, _preload_content=False,
            # no byte for this long means a dead connection (bookmarks come about every minute)
            _request_timeout=(self.connect_timeout, self.watch_timeout + 30),
        )  # fmt: skip
        with self._resp_lock:
            self._resp = resp
        self._allowed()
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
            raise k8s.ApiException(
                status=obj.get("code", 0), reason=f"{obj.get('reason')}: {obj.get('message')}"
            )
        self.stats.events += 1
        if kind in ("ADDED", "MODIFIED"):
            self._upsert(self._decode(obj))
        elif kind == "DELETED":
            self._remove(self._decode(obj))
        elif kind != "BOOKMARK":
            log.warning("%s watch: unknown event type %r", self.resource, kind)
        return (obj.get("metadata") or {}).get("resourceVersion", "")


def _interrupt(resp: Any) -> None:
    """Unblock a thread reading a streaming response (urllib3 >= 2.3 has shutdown())."""
    try:
        if hasattr(resp, "shutdown"):
            resp.shutdown()
        else:
            resp.close()
    except OSError:
        pass

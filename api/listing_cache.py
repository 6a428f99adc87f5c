"""Listings answered again from memory for a moment: the same page asked for twice within
``ttl`` seconds is one store query.

Why: a listing is read far more often than it changes. Dashboards, the CLI's ``watch`` and
several people on call poll the same page; new anomalies appear when windows close (once a
window length per identity), so a second-old answer is as good as a fresh one. Under a
full-speed replay, answering each poll with a query over the store took most of the API's
work and competed with the pipeline for the machine (``benchmarks/service.py``).

What is kept: the JSON body of a page, by path and query string, for ``ttl`` seconds. What the
pipeline (another process) writes shows within ``ttl``; what this API writes shows at once:
every request that may write (any method but GET, HEAD and OPTIONS) starts a new generation
when it arrives and again when it is answered, and a page is kept only under the generation
it was read in, so no page read before a write is served after it. ``max_bytes`` bounds the
memory (a page of 1,000 anomalies is about a megabyte): expired pages go when a page is kept,
then the oldest until the rest fits.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["DEFAULT_TTL_SECONDS", "ListingCache", "WritesInvalidate"]

DEFAULT_TTL_SECONDS: Final = 1.0
_READS: Final = frozenset({"GET", "HEAD", "OPTIONS"})


class ListingCache:
    """Page bodies by key, each for ``ttl`` seconds (``ttl`` 0: nothing is kept)."""

    def __init__(
        self,
        ttl: float = DEFAULT_TTL_SECONDS,
        *,
        max_bytes: int = 32 << 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl < 0 or max_bytes < 1:
            raise ValueError(f"ttl must be >= 0 and max_bytes >= 1, got {ttl}, {max_bytes}")
        self.ttl = ttl
        self.max_bytes = max_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._generation = 0
        #: key -> (expires, generation, body), oldest first (one ttl: also the first to expire)
        self._entries: OrderedDict[str, tuple[float, int, bytes]] = OrderedDict()
        self._bytes = 0
        #: one page is built at a time per stripe (see answer)
        self._building = tuple(threading.Lock() for _ in range(16))

    @property
    def generation(self) -> int:
        return self._generation

    def invalidate(self) -> None:
        """A write may have happened: nothing read before now is served again."""
        with self._lock:
            self._generation += 1
            self._entries.clear()
            self._bytes = 0

    def get(self, key: str) -> bytes | None:
        """The body kept for ``key``, if it is younger than ``ttl`` and of this generation."""
        if not self.ttl:
            return None
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            expires, generation, body = found
            if generation != self._generation or self._clock() >= expires:
                self._drop(key)
                return None
            return body

    def put(self, key: str, body: bytes, *, generation: int) -> None:
        """Keep ``body``, read while the generation was ``generation`` (not if one started
        since: a write may have landed between the read and now)."""
        if not self.ttl or len(body) > self.max_bytes:
            return
        with self._lock:
            if generation != self._generation:
                return
            now = self._clock()
            if key in self._entries:
                self._drop(key)
            while self._entries:
                oldest, (expires, _, _) = next(iter(self._entries.items()))
                if expires > now and self._bytes + len(body) <= self.max_bytes:
                    break
                self._drop(oldest)
            self._entries[key] = (now + self.ttl, generation, body)
            self._bytes += len(body)

    def _drop(self, key: str) -> None:
        self._bytes -= len(self._entries.pop(key)[2])

    def answer(self, key: str, build: Callable[[], bytes]) -> bytes:
        """The kept body for ``key``, else ``build()``'s, kept. Requests that find the same
        page missing together (every poller, the moment it expires) build it once: the others
        wait for it instead of each querying the store."""
        body = self.get(key)
        if body is not None or not self.ttl:
            return body if body is not None else build()
        with self._building[hash(key) % len(self._building)]:
            body = self.get(key)
            if body is None:
                generation = self._generation
                body = build()
                self.put(key, body, generation=generation)
        return body


class WritesInvalidate:
    """ASGI middleware: a request that may write starts a new generation of ``cache`` when it
    arrives and again when its response has been sent (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, cache: ListingCache) -> None:
        self.app = app
        self.cache = cache

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method", "GET") in _READS:
            await self.app(scope, receive, send)
            return
        self.cache.invalidate()
        try:
            await self.app(scope, receive, send)
        finally:
            self.cache.invalidate()

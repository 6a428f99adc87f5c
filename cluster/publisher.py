"""The agent's side: a node's partial windows, published to JetStream, buffered while it is away.

:class:`PartialPublisher` takes closed windows from the thread that builds them (never blocking
it) and publishes them from a thread of its own, with a JetStream acknowledgement for each: a
partial leaves the buffer only once the stream has stored it. While the server is unreachable
the buffer holds what is not acknowledged, up to :class:`BufferLimits`; beyond that the
**oldest** partials are dropped and counted (``PublisherStats.dropped``), and everything left is
published when the connection comes back.

Why drop and not block: the agent reads the node's Hubble socket (or its probes) in step with
the kernel. Blocking it would not keep the data: Hubble's ring would overwrite flows instead,
uncounted by netwarden, and the builder's open windows would grow. Dropping whole old partials
keeps the node current, bounds memory exactly, and says precisely what was lost (identity-
windows, counted). The default bound (64 MiB) holds hours of a busy node's partials.

A partial is retried until acknowledged, so it may reach the server twice (a reply lost on a
dying connection, nats-py's own reconnect buffer); its ``Nats-Msg-Id`` makes JetStream store it
once (see :mod:`netwarden.cluster.partials`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import nats
from nats.errors import Error as NatsError
from nats.js.errors import Error as JetStreamError

from netwarden.cluster.partials import Partial, encode_partial
from netwarden.ingest.windows import ClosedWindow, WindowBuilder

__all__ = ["BufferLimits", "PartialPublisher", "PublisherStats", "publish_flows"]

_log = logging.getLogger(__name__)
#: Partials published concurrently (each awaits its own acknowledgement).
_IN_FLIGHT: Final = 128
_RETRY_MIN_S: Final = 0.1
_RETRY_MAX_S: Final = 2.0


@dataclass(frozen=True)
class BufferLimits:
    """How much an agent keeps while the server does not acknowledge: messages and bytes."""

    max_messages: int = 200_000
    max_bytes: int = 64 << 20

    def __post_init__(self) -> None:
        if self.max_messages < 1 or self.max_bytes < 1:
            raise ValueError("buffer limits must be at least 1 message and 1 byte")


@dataclass
class PublisherStats:
    """What the publisher did; read with :meth:`PartialPublisher.snapshot`."""

    queued: int = 0
    acknowledged: int = 0
    #: Stored already (JetStream recognised the message id): a retry that had got through.
    duplicates: int = 0
    dropped: int = 0
    dropped_bytes: int = 0
    retries: int = 0
    buffered: int = 0
    buffered_bytes: int = 0
    max_buffered: int = 0
    disconnects: int = 0
    reconnects: int = 0
    #: Connected to NATS now.
    connected: bool = False


class PartialPublisher:
    """Publishes one node's partials; thread-safe :meth:`publish`, background sending."""

    def __init__(
        self,
        servers: str | list[str],
        node: str,
        *,
        limits: BufferLimits | None = None,
        ack_timeout: float = 5.0,
        epoch: int | None = None,
    ) -> None:
        self.servers = [servers] if isinstance(servers, str) else list(servers)
        self.node = node
        self.limits = limits or BufferLimits()
        self.ack_timeout = ack_timeout
        #: Distinguishes this process's sequence numbers from a previous run's on the node.
        self.epoch = epoch if epoch is not None else time.time_ns()
        self._seq = 0
        self._lock = threading.Lock()
        #: seq -> (subject, body, message id), oldest first; in flight ones are never dropped.
        self._buffer: OrderedDict[int, tuple[str, bytes, str]] = OrderedDict()
        self._in_flight: set[int] = set()
        self._stats = PublisherStats()
        self._stopping = False
        self._loop = asyncio.new_event_loop()
        self._wake: asyncio.Event | None = None
        self._connected = threading.Event()
        self._thread = threading.Thread(target=self._main, name=f"partials-{node}", daemon=True)

    # -- the builder's thread -----------------------------------------------------------------

    def start(self) -> PartialPublisher:
        """Start sending (returns at once: the server may be down; the buffer waits for it)."""
        self._thread.start()
        return self

    def publish(self, windows: Iterable[ClosedWindow]) -> None:
        """Queue closed windows of this node; never blocks (see the module docstring)."""
        for window in windows:
            with self._lock:
                seq = self._seq = self._seq + 1
            partial = Partial(self.node, self.epoch, seq, window)
            body = encode_partial(partial)
            with self._lock:
                self._buffer[seq] = (partial.subject, body, partial.msg_id)
                st = self._stats
                st.queued += 1
                st.buffered_bytes += len(body)
                self._drop_overflow()
                st.buffered = len(self._buffer)
                st.max_buffered = max(st.max_buffered, st.buffered)
        self._poke()

    def snapshot(self) -> PublisherStats:
        with self._lock:
            return PublisherStats(**vars(self._stats))

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def flush(self, timeout: float) -> bool:
        """Wait until every queued partial is acknowledged (or dropped); False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._buffer:
                    return True
            time.sleep(0.02)
        return False

    def close(self, timeout: float = 10.0) -> bool:
        """Flush for up to ``timeout`` seconds, then stop; True when nothing was left behind."""
        flushed = self.flush(timeout) if self._thread.is_alive() else not self._buffer
        self._stopping = True
        self._poke()
        self._thread.join(timeout=max(timeout, 5.0))
        return flushed

    # -- the sending thread ---------------------------------------------------------------------

    def _drop_overflow(self) -> None:
        """Drop the oldest partials not in flight until the buffer is within its limits (lock
        held)."""
        st, limits, buf = self._stats, self.limits, self._buffer
        if len(buf) <= limits.max_messages and st.buffered_bytes <= limits.max_bytes:
            return
        for seq in list(buf):
            if len(buf) <= limits.max_messages and st.buffered_bytes <= limits.max_bytes:
                break
            if seq in self._in_flight:
                continue
            _, body, _ = buf.pop(seq)
            st.buffered_bytes -= len(body)
            st.dropped += 1
            st.dropped_bytes += len(body)

    def _poke(self) -> None:
        wake = self._wake
        if wake is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop just stopped
                self._loop.call_soon_threadsafe(wake.set)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._run())
        finally:
            self._loop.close()

    async def _run(self) -> None:
        self._wake = asyncio.Event()
        nc = await self._connect()
        if nc is None:
            return
        js = nc.jetstream()
        delay = _RETRY_MIN_S
        try:
            while True:
                with self._lock:
                    batch = [
                        (seq, *item)
                        for seq, item in self._buffer.items()
                        if seq not in self._in_flight
                    ][:_IN_FLIGHT]
                    self._in_flight.update(seq for seq, *_ in batch)
                if not batch:
                    if self._stopping:
                        return
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), 0.5)
                    continue
                results = await asyncio.gather(
                    *(
                        js.publish(
                            subject,
                            body,
                            timeout=self.ack_timeout,
                            headers={"Nats-Msg-Id": msg_id},
                        )
                        for _, subject, body, msg_id in batch
                    ),
                    return_exceptions=True,
                )
                failed = 0
                with self._lock:
                    st = self._stats
                    for (seq, _, body, _), result in zip(batch, results):
                        self._in_flight.discard(seq)
                        if isinstance(result, BaseException):
                            failed += 1
                            continue
                        if self._buffer.pop(seq, None) is not None:
                            st.buffered_bytes -= len(body)
                        st.acknowledged += 1
                        st.duplicates += bool(getattr(result, "duplicate", False))
                    st.retries += failed
                    self._drop_overflow()
                    st.buffered = len(self._buffer)
                if failed:
                    if self._stopping and not nc.is_connected:
                        return
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, _RETRY_MAX_S)
                else:
                    delay = _RETRY_MIN_S
        finally:
            with contextlib.suppress(NatsError, JetStreamError, OSError, TimeoutError):
                await nc.close()
            with self._lock:
                self._stats.connected = False

    async def _connect(self) -> Any:
        """Connect, retrying until it works or the publisher stops (the server may start
        later than the agent); nats-py reconnects by itself afterwards."""

        async def disconnected() -> None:
            with self._lock:
                self._stats.disconnects += 1
                self._stats.connected = False

        async def reconnected() -> None:
            with self._lock:
                self._stats.reconnects += 1
                self._stats.connected = True

        async def error(exc: Exception) -> None:
            _log.debug("nats: %s", exc)

        delay = _RETRY_MIN_S
        while not self._stopping:
            try:
                nc = await nats.connect(
                    servers=self.servers,
                    name=f"netwarden-agent {self.node}",
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.25,
                    connect_timeout=2,
                    disconnected_cb=disconnected,
                    reconnected_cb=reconnected,
                    error_cb=error,
                )
            except (NatsError, OSError, TimeoutError) as exc:
                _log.info("nats %s not reachable (%s); retrying", self.servers, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)
                continue
            with self._lock:
                self._stats.connected = True
            self._connected.set()
            return nc
        return None


def publish_flows(
    batches: Iterable[Iterable[Any]], builder: WindowBuilder, publisher: PartialPublisher
) -> int:
    """Build this node's windows from ``batches`` of its flows and publish each as it closes,
    then the open ones at the end; returns the number of windows published."""
    n = 0
    for batch in batches:
        closed = builder.add(batch)
        publisher.publish(closed)
        n += len(closed)
    closed = builder.flush()
    publisher.publish(closed)
    return n + len(closed)

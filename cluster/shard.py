"""The detector's side: a shard merges the partials of the partitions it owns and closes windows.

**Ownership.** The stream has ``P`` partitions (:mod:`netwarden.cluster.partials`); detector
replica ``k`` of ``R`` (a StatefulSet's ordinal) owns the partitions ``p`` with ``p % R == k``
(:func:`~netwarden.cluster.partials.partitions_of_replica`). Each partition has one durable
pull consumer, named by the partition (``netwarden-p<p>``), not by the replica: whoever owns
``p`` continues from what the last owner acknowledged. Changing ``R`` (scale up or down) hands
partitions to other replicas the same way; ``P`` is fixed for the stream's life.

**Leases** (``ShardConfig.leases``): ownership is dynamic instead, held by leases in a key-value
bucket (:mod:`netwarden.cluster.leases`: the live members sorted, ``p`` to
``members[p % n]``). Once a round (``ttl / 4``) the shard heartbeats, renews its leases, gives
up the partitions no longer assigned to it and takes those that are and are free. Giving a
partition up (or losing its lease to another shard) stops its fetching at once, negatively
acknowledges the partials of its open windows (redelivered at once, to the next holder) and
only then deletes the lease; nothing of it is handed off any more. A partition taken closes
none of its windows for the start-up grace (what a dead holder held is redelivered meanwhile),
and a lease not renewed for ``ttl / 2`` is not used (nothing fetched or closed) until it is.

**Merging and closing.** Partials merge per (identity, window start) as they come, whatever node
sent them. The shard's watermark is the newest window end it has seen; a window closes when the
watermark passes its end by ``lateness`` (by then every node has moved on by that much event
time and published its partial), or when no partial has come for ``idle_close`` seconds while
connected (the cluster went quiet: the nodes have sent what they had; while the server is away
the agents buffer, so that time does not count). A partial whose window was already
handed off is *late*: counted and given to the sink's ``late`` (not merged: the window's verdict
is out).

**Acknowledging.** A partial is acknowledged only after its merged window was handed off
(:mod:`netwarden.cluster.sinks`: durable, idempotent). A shard that dies holding open windows
has their partials redelivered, ``ack_wait`` after delivery, to the replica that takes the
partition over; a shard that dies after a hand-off but before its acknowledgements reach the
server has them redelivered too, and the sink ignores the window the second time. A starting
shard closes nothing for ``startup_grace`` (default ``1.25 * ack_wait``), the time in which
JetStream redelivers what a dead predecessor held, so those partials are not late. The same
message delivered twice (a redelivery while its window is open) is merged once, by its
``Nats-Msg-Id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

import nats
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig
from nats.js.errors import APIError, BadRequestError
from nats.js.errors import Error as JetStreamError

from netwarden.cluster.leases import LeaseConfig, LeaseKeeper
from netwarden.cluster.partials import (
    STREAM,
    Partial,
    StreamLimits,
    decode_partial,
    partition_filter,
    stream_config,
)
from netwarden.cluster.sinks import MergedWindow, WindowSink
from netwarden.ingest.windows import ClosedWindow

__all__ = [
    "DetectorShard",
    "ShardConfig",
    "ShardStats",
    "StreamRefused",
    "consumer_name",
    "ensure_stream",
]

_log = logging.getLogger(__name__)
#: Windows remembered after hand-off, to tell a redelivered duplicate from a late partial.
_CLOSED_MEMORY: Final = 50_000


def consumer_name(partition: int) -> str:
    """The durable consumer of one partition, shared by whichever replica owns it."""
    return f"netwarden-p{partition}"


@dataclass(frozen=True)
class ShardConfig:
    """How a shard consumes, merges and closes; ``lateness`` and ``idle_close`` as in the
    module docstring, in event seconds and wall seconds."""

    partitions: tuple[int, ...]
    lateness: float = 120.0
    idle_close: float = 90.0
    ack_wait: float = 300.0
    startup_grace: float | None = None
    max_ack_pending: int = 50_000
    fetch_batch: int = 256
    name: str = "shard"
    #: Take partitions through leases (:mod:`netwarden.cluster.leases`) instead of
    #: ``partitions``, which then only reports the ones held.
    leases: LeaseConfig | None = None

    def __post_init__(self) -> None:
        if not self.partitions and self.leases is None:
            raise ValueError("a shard needs at least one partition")
        if self.lateness < 0 or self.idle_close <= 0 or self.ack_wait <= 0:
            raise ValueError("lateness must be >= 0, idle_close and ack_wait > 0")

    @property
    def grace(self) -> float:
        return 1.25 * self.ack_wait if self.startup_grace is None else self.startup_grace


@dataclass
class ShardStats:
    partials: int = 0
    #: Messages delivered more than once (JetStream's count): after ack_wait, or held by a
    #: shard that stopped; a copy of one already merged is also in ``duplicates``.
    redelivered: int = 0
    duplicates: int = 0
    late: int = 0
    malformed: int = 0
    windows: int = 0
    handed_off: int = 0
    #: Hand-offs the sink failed (retried; nothing acknowledged meanwhile).
    handoff_failures: int = 0
    open_windows: int = 0
    #: Lease mode: partitions taken, given up (rebalanced away) and lost (taken by another).
    acquired: int = 0
    released: int = 0
    lost: int = 0
    #: Partials of open windows negatively acknowledged on giving a partition up.
    nakked: int = 0
    watermark: float = float("-inf")
    nodes: set[str] = field(default_factory=set)


class _Open:
    __slots__ = ("ids", "msgs", "nodes", "partition", "window")

    def __init__(self, partial: Partial, msg: Any, partition: int) -> None:
        self.partition = partition
        self.window: ClosedWindow = partial.window
        self.ids = {partial.msg_id}
        self.nodes = [partial.node]
        self.msgs = [msg]


class StreamRefused(RuntimeError):
    """nats-server refused to create the partials stream or to change its settings."""


#: JetStream's error code when the stream's byte limit does not fit its storage reservation.
_INSUFFICIENT_STORAGE: Final = 10047


async def ensure_stream(js: Any, limits: StreamLimits | None = None) -> None:
    """Create the partials stream, or bring an existing one to these limits; StreamRefused
    (saying what to change) when the server will not."""
    config = StreamConfig(**stream_config(limits))
    try:
        try:
            await js.add_stream(config)
        except BadRequestError:  # exists with other settings
            await js.update_stream(config)
    except APIError as exc:
        hint = ""
        if exc.err_code == _INSUFFICIENT_STORAGE:
            hint = (
                f" (JetStream reserves the stream's byte limit, {config.max_bytes / 2**30:g} GiB, "
                "against the server's jetstream max_file_store and free disk: lower "
                "--stream-max-gb or raise max_file_store)"
            )
        raise StreamRefused(
            f"nats-server refused the stream {STREAM}: {exc.description or exc}{hint}"
        ) from exc


class DetectorShard:
    """Consumes its partitions, merges partials, hands closed windows to ``sink``, acks."""

    def __init__(
        self,
        servers: str | list[str],
        config: ShardConfig,
        sink: WindowSink,
        *,
        limits: StreamLimits | None = None,
        on_handoff: Callable[[list[MergedWindow]], Any] | None = None,
    ) -> None:
        self.servers = [servers] if isinstance(servers, str) else list(servers)
        self.config = config
        self.sink = sink
        self.limits = limits
        self.on_handoff = on_handoff
        self.stats = ShardStats()
        self._open: dict[tuple[str, float], _Open] = {}
        self._closed: OrderedDict[tuple[str, float], frozenset[str]] = OrderedDict()
        self._last_arrival = time.monotonic()
        self._started = time.monotonic()
        #: Acknowledgements (or terminations) due for messages taken, sent after each fetch.
        self._settle: list[Callable[[], Any]] = []
        self.leases = None if config.leases is None else LeaseKeeper(config.leases)
        #: partition -> its pull subscription; lease mode: -> no closing before (monotonic)
        self._subs: dict[int, Any] = {}
        self._grace_until: dict[int, float] = {}

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; then close nothing more (open windows stay unacked
        in the stream for whoever takes the partitions over)."""
        nc = await self._connect(stop)
        if nc is None:
            return
        try:
            js = nc.jetstream()
            await ensure_stream(js, self.limits)
            if self.leases is None:
                for p in self.config.partitions:
                    self._subs[p] = await self._subscribe(js, p)
            else:
                await self.leases.open(js)
            self._started = self._last_arrival = time.monotonic()
            next_round = 0.0
            while not stop.is_set():
                if self.leases is not None and time.monotonic() >= next_round:
                    await self._lease_round(js)
                    next_round = time.monotonic() + self.leases.config.renew_every
                subs = [(p, s) for p, s in self._subs.items() if self._usable(p)]
                if not subs:
                    await asyncio.sleep(0.25)
                batches = await asyncio.gather(*(self._fetch(s) for _, s in subs))
                for (p, _), msgs in zip(subs, batches):
                    for msg in msgs:
                        self._take(msg, p)
                settle, self._settle = self._settle, []
                for send in settle:
                    with contextlib.suppress(NatsError, JetStreamError):
                        await send()
                if not nc.is_connected:  # an outage of the server is not a quiet cluster:
                    self._last_arrival = time.monotonic()  # idle time counts from reconnecting
                await self._close_ready()
            if self.leases is not None and nc.is_connected:  # a clean stop: hand over at once
                for p in list(self._subs):
                    await self._give_up(p, release=True)
                with contextlib.suppress(NatsError, JetStreamError, TimeoutError):
                    await self.leases.leave()
        finally:
            with contextlib.suppress(NatsError, JetStreamError, OSError, TimeoutError):
                await nc.close()

    def _usable(self, partition: int) -> bool:
        return self.leases is None or self.leases.fresh(partition)

    async def _lease_round(self, js: Any) -> None:
        """Heartbeat, renew, give up what is no longer ours, take what is and is free."""
        keeper = self.leases
        assert keeper is not None
        st = self.stats
        try:
            await keeper.heartbeat()
            for p in await keeper.renew():
                st.lost += 1
                await self._give_up(p, release=False)
            desired = keeper.desired()
            for p in sorted(set(self._subs) - desired):
                st.released += 1
                await self._give_up(p, release=True)
            for p in sorted(desired - set(self._subs)):
                if await keeper.acquire(p):
                    try:
                        self._subs[p] = await self._subscribe(js, p)
                    except (NatsError, JetStreamError, TimeoutError):
                        await keeper.release(p)
                        raise
                    st.acquired += 1
                    # what a dead holder held comes back ack_wait after its delivery
                    self._grace_until[p] = time.monotonic() + self.config.grace
                    _log.info("%s: took partition %d", self.config.name, p)
        except (NatsError, JetStreamError, TimeoutError) as exc:
            _log.info("lease round: %s", exc)
        self.config = replace(self.config, partitions=tuple(sorted(self._subs)))

    async def _give_up(self, partition: int, *, release: bool) -> None:
        """Stop consuming ``partition``; its open windows' partials go back to the stream
        (nak: redelivered at once, to the next holder); then release the lease."""
        sub = self._subs.pop(partition, None)
        if sub is not None:
            with contextlib.suppress(NatsError, JetStreamError, ValueError, TimeoutError):
                await sub.unsubscribe()
        settle, self._settle = self._settle, []  # acks due for messages already dealt with
        for send in settle:
            with contextlib.suppress(NatsError, JetStreamError):
                await send()
        for key in [k for k, o in self._open.items() if o.partition == partition]:
            for msg in self._open.pop(key).msgs:
                self.stats.nakked += 1
                with contextlib.suppress(NatsError, JetStreamError):
                    await msg.nak()
        self.stats.open_windows = len(self._open)
        self._grace_until.pop(partition, None)
        if release and self.leases is not None:
            await self.leases.release(partition)
        _log.info("%s: gave partition %d up", self.config.name, partition)

    async def _connect(self, stop: asyncio.Event) -> Any:
        async def error(exc: Exception) -> None:
            _log.debug("nats: %s", exc)

        while not stop.is_set():
            try:
                return await nats.connect(
                    servers=self.servers,
                    name=f"netwarden-{self.config.name}",
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.25,
                    connect_timeout=2,
                    error_cb=error,
                )
            except (NatsError, OSError, TimeoutError) as exc:
                _log.info("nats %s not reachable (%s); retrying", self.servers, exc)
                await asyncio.sleep(0.5)
        return None

    async def _subscribe(self, js: Any, partition: int) -> Any:
        cfg = self.config
        return await js.pull_subscribe(
            partition_filter(partition),
            durable=consumer_name(partition),
            stream=STREAM,
            config=ConsumerConfig(
                durable_name=consumer_name(partition),
                filter_subject=partition_filter(partition),
                deliver_policy=DeliverPolicy.ALL,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=cfg.ack_wait,
                max_ack_pending=cfg.max_ack_pending,
                max_deliver=-1,
            ),
        )

    async def _fetch(self, sub: Any) -> list[Any]:
        try:
            return list(await sub.fetch(self.config.fetch_batch, timeout=0.25))
        except (NatsTimeoutError, TimeoutError):
            return []
        except (NatsError, JetStreamError) as exc:  # reconnecting: nats-py resumes by itself
            _log.debug("fetch: %s", exc)
            await asyncio.sleep(0.25)
            return []

    def _take(self, msg: Any, partition: int) -> None:
        st = self.stats
        try:
            partial = decode_partial(msg.data)
        except ValueError as exc:
            st.malformed += 1
            _log.warning("partial on %s dropped: %s", msg.subject, exc)
            self._settle.append(msg.term)
            return
        with contextlib.suppress(Exception):  # metadata is parsed from the reply subject
            st.redelivered += msg.metadata.num_delivered > 1
        key = partial.key
        st.nodes.add(partial.node)
        closed_ids = self._closed.get(key)
        if closed_ids is not None:
            if partial.msg_id in closed_ids:
                st.duplicates += 1
            else:
                st.late += 1
                _log.warning(
                    "late partial %s of %s [%s] (window already handed off)",
                    partial.msg_id,
                    key[0],
                    key[1],
                )
                self.sink.late(partial)
            self._settle.append(msg.ack)
            return
        found = self._open.get(key)
        if found is None:
            self._open[key] = _Open(partial, msg, partition)
        elif partial.msg_id in found.ids:
            st.duplicates += 1
            found.msgs.append(msg)  # acked with the window: either delivery acks it
            return
        else:
            found.window = found.window.merge(partial.window)
            found.ids.add(partial.msg_id)
            found.nodes.append(partial.node)
            found.msgs.append(msg)
        st.partials += 1
        # a new partial, not a redelivered copy (held past ack_wait): the cluster is not quiet
        self._last_arrival = time.monotonic()
        st.watermark = max(st.watermark, partial.window.end)
        st.open_windows = len(self._open)

    async def _close_ready(self) -> None:
        cfg = self.config
        now = time.monotonic()
        if not self._open or (self.leases is None and now - self._started < cfg.grace):
            return
        if now - self._last_arrival >= cfg.idle_close:
            ready = list(self._open)
        else:
            limit = self.stats.watermark - cfg.lateness
            ready = [k for k, o in self._open.items() if o.window.end <= limit]
        if self.leases is not None:  # only partitions held, past the grace of their taking
            ready = [
                k
                for k in ready
                if self._usable(p := self._open[k].partition)
                and now >= self._grace_until.get(p, 0.0)
            ]
        if not ready:
            return
        try:
            await self._hand_off(sorted(ready, key=lambda k: (k[1], k[0])))
        except Exception as exc:  # the sink failed: keep the windows open, acknowledge nothing
            self.stats.handoff_failures += 1
            _log.error("hand-off of %d windows failed, retrying: %s", len(ready), exc)
            await asyncio.sleep(1.0)

    async def _hand_off(self, keys: Sequence[tuple[str, float]]) -> None:
        """Hand the windows off (in a worker thread: the sink may do I/O), then ack."""
        opened = [self._open[k] for k in keys]
        merged = [MergedWindow(o.window, o.nodes, sorted(o.ids)) for o in opened]
        loop = asyncio.get_running_loop()
        new = await loop.run_in_executor(None, self.sink.handoff, merged)
        for key, o in zip(keys, opened):
            del self._open[key]
            self._closed[key] = frozenset(o.ids)
        while len(self._closed) > _CLOSED_MEMORY:
            self._closed.popitem(last=False)
        st = self.stats
        st.windows += len(merged)
        st.handed_off += new
        st.open_windows = len(self._open)
        if self.on_handoff is not None:
            self.on_handoff(merged)
        for o in opened:
            for msg in o.msgs:
                with contextlib.suppress(NatsError, JetStreamError):
                    await msg.ack()

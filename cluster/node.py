"""A node's agent loop: its flows into its windows, each closed one published as a partial, and
event time moved on while the node is quiet.

A node's windows close as its own watermark passes them, which only its flows move. A node that
goes quiet (a drained node, a night-time workload, a Hubble stream that stalls) would hold its
last windows open until its next flow, possibly hours, and the shards would hand those windows
off without its share (a late partial afterwards). So, as ``netwarden serve`` does with a quiet
stream, :meth:`NodeWindows.tick` moves event time on by the wall-clock time passed once no flow
has come for ``idle_close`` seconds (:meth:`WindowBuilder.advance`): a quiet node's open windows
close ``window + lateness`` after their last flow at the latest (plus the ``idle_close`` before
the first move), which is within the shards' default lateness of 120 s for the default 60 s
windows and 15 s lateness.

:meth:`NodeWindows.run` reads a live source (any :class:`~netwarden.ingest.sources.Source`, or a
function with its ``run(emit, stop)`` signature) in a thread of its own and does the building,
publishing and ticking in the caller's thread; when the source ends or ``stop`` is set, it
publishes the windows still open (a later partial of the same window, from this node's next
agent process, merges with it at the shard: the features add up).
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from netwarden.cluster.publisher import PartialPublisher
from netwarden.ingest.windows import WindowBuilder

__all__ = ["NodeWindows"]

#: Batches the reading thread may be ahead of the building one (then the source waits).
_QUEUE_BATCHES: Final = 64
_END: Final = object()
#: How long a stopping run waits for the source to return.
_STOP_WAIT_S: Final = 5.0

Feed = Callable[[Callable[[list[Any]], None], threading.Event], None]


class NodeWindows:
    """One node's window builder feeding its publisher, with the quiet-node tick."""

    def __init__(
        self,
        builder: WindowBuilder,
        publisher: PartialPublisher,
        *,
        idle_close: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not idle_close > 0:
            raise ValueError(f"idle_close must be > 0, not {idle_close}")
        self.builder = builder
        self.publisher = publisher
        self.idle_close = idle_close
        self.clock = clock
        #: Windows published, and of them closed by a tick (the node was quiet).
        self.published = 0
        self.closed_by_tick = 0
        self._last_flow_wall = clock()
        #: The newest event time the node's flows confirmed (never a time moved on to).
        self._last_event = -math.inf
        self._quiet = False

    def add(self, flows: Sequence[Any]) -> int:
        """A batch of the node's flows; publishes the windows it closes, returns how many."""
        self._last_flow_wall = self.clock()
        self._quiet = False
        closed = self.builder.add(flows)
        cfg = self.builder.config
        self._last_event = max(
            self._last_event, self.builder.stats.watermark + cfg.allowed_lateness
        )
        self.publisher.publish(closed)
        self.published += len(closed)
        return len(closed)

    def tick(self) -> int:
        """Call about once a second: after ``idle_close`` seconds without a flow, decide about
        the flows held for being ahead of the stream, then move event time on by the wall time
        passed since the last flow, and publish what that closes."""
        idle = self.clock() - self._last_flow_wall
        if idle < self.idle_close:
            return 0
        closed = self.builder.settle()
        if not self._quiet:  # the flows' own time, held ones decided: not the time advanced
            cfg = self.builder.config
            self._last_event = max(
                self._last_event, self.builder.stats.watermark + cfg.allowed_lateness
            )
            self._quiet = True
        if self._last_event != -math.inf:
            closed += self.builder.advance(self._last_event + idle)
        self.publisher.publish(closed)
        self.published += len(closed)
        self.closed_by_tick += len(closed)
        return len(closed)

    def finish(self) -> int:
        """The input ended (or the agent stops): publish every window still open."""
        closed = self.builder.flush()
        self.publisher.publish(closed)
        self.published += len(closed)
        return len(closed)

    def run(
        self,
        feed: Feed | Any,
        stop: threading.Event,
        *,
        tick_every: float = 1.0,
        on_progress: Callable[[], Any] | None = None,
    ) -> int:
        """Read ``feed`` (a Source, or a ``run(emit, stop)`` function) until it ends or ``stop``
        is set, then :meth:`finish`; returns the windows published. ``on_progress`` is called
        after each batch and tick, in this thread. A feed that raises stops the run and the
        exception is raised here (after the open windows were published)."""
        run = feed.run if hasattr(feed, "run") else feed
        batches: queue.Queue[Any] = queue.Queue(maxsize=_QUEUE_BATCHES)
        failure: list[BaseException] = []

        def emit(flows: list[Any]) -> None:
            while not stop.is_set():
                try:
                    batches.put(flows, timeout=0.5)
                    return
                except queue.Full:
                    continue

        def read() -> None:
            try:
                run(emit, stop)
            except BaseException as exc:  # handed to the building thread
                failure.append(exc)
            finally:
                batches.put(_END)

        reader = threading.Thread(target=read, name="node-flows", daemon=True)
        reader.start()
        next_tick = time.monotonic() + tick_every
        clean = ended = False
        try:
            while not stop.is_set():
                try:
                    item = batches.get(timeout=max(0.0, next_tick - time.monotonic()))
                except queue.Empty:
                    item = None
                if item is _END:
                    ended = True
                    break
                if item:
                    self.add(item)
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + tick_every
                    self.tick()
                if on_progress is not None:
                    on_progress()
            clean = True
        finally:
            stop.set()
            # the source returns once stop is set: keep what it read meanwhile (unblocking its
            # emit), but never wait long for one blocked in a read (a daemon thread)
            deadline = time.monotonic() + _STOP_WAIT_S
            while not ended and time.monotonic() < deadline:
                try:
                    item = batches.get(timeout=0.1)
                except queue.Empty:
                    if not reader.is_alive() and batches.empty():
                        break
                    continue
                if item is _END:
                    ended = True
                elif clean and item:
                    self.add(item)
            self.finish()
            if on_progress is not None:
                on_progress()
        if failure:
            raise failure[0]
        return self.published

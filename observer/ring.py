"""A bounded ring of Observer responses: what the Hubble-compatible server serves from.

Hubble keeps the last ``max_flows`` events of a node in a ring buffer (``container.Ring``) and
every ``GetFlows`` call reads that ring with its own cursor. :class:`FlowRing` is the same idea
for netwarden: a replayed file, the eBPF agent or the service write
``observer_pb2.GetFlowsResponse`` messages (flows, and ``lost_events`` / ``node_status`` events)
and readers follow them.

* Sequence numbers grow by one per entry and are never reused, so a reader's position survives
  the ring wrapping around; the entry with sequence ``s`` sits in slot ``s % capacity``.
* Writers never wait for readers: the oldest entry is overwritten. A reader that the writer
  lapped learns how many entries it missed (:attr:`Batch.lost`) and continues from the oldest
  entry still held; the server turns that into a ``LostEvent{source: HUBBLE_RING_BUFFER}``
  response as Hubble does, so nothing is lost silently.
* Readers wait on a condition for new entries; :meth:`FlowRing.close` and :meth:`FlowRing.wake`
  wake every waiter.

Entries are shared, not copied: a message written to the ring must not be modified afterwards.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from netwarden.hubble import observer_pb2

__all__ = ["DEFAULT_MAX_FLOWS", "Batch", "FlowRing", "RingReader"]

#: Hubble's default ``--hubble-event-buffer-capacity`` (``max_flows`` in ServerStatus).
DEFAULT_MAX_FLOWS = 4095
#: Window of :meth:`FlowRing.flows_rate`, as Hubble's ServerStatus ``flows_rate``.
RATE_WINDOW_S = 60.0

Response = observer_pb2.GetFlowsResponse


@dataclass(slots=True)
class Batch:
    """What one read returned: entries missed because the writer lapped the reader, then the
    entries from the reader's (possibly advanced) position on, and whether the ring is closed."""

    lost: int = 0
    entries: list[Response] = field(default_factory=list)
    first_seq: int = 0  # sequence number of entries[0] (or where the reader stands if empty)
    closed: bool = False


class FlowRing:
    """Bounded, thread-safe ring of ``GetFlowsResponse`` with monotonically increasing sequences.

    Parameters
    ----------
    capacity:
        Entries held (Hubble's ``max_flows``, default 4095); older ones are overwritten.
    node_name:
        Put on responses that carry none (a legacy bare flow, a lost event), as Hubble puts its
        own node name on every response.
    clock:
        Monotonic seconds, for ``flows_rate`` and uptime; injectable for tests.
    """

    def __init__(
        self,
        capacity: int = DEFAULT_MAX_FLOWS,
        *,
        node_name: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.node_name = node_name
        self._clock = clock
        self._slots: list[Response | None] = [None] * capacity
        self._arrivals: list[float] = [0.0] * capacity  # monotonic arrival time per slot
        self._is_flow: list[bool] = [False] * capacity
        self._head = 0  # sequence number of the next entry
        self._seen_flows = 0
        self._closed = False
        self._cond = threading.Condition(threading.Lock())
        self.started = clock()

    # -- writing ----------------------------------------------------------------------------------
    def write(self, response: Response) -> int:
        """Append one response (taking ownership of it); return its sequence number.

        A flow response without ``node_name`` or ``time`` gets the flow's (or the ring's node
        name), a lost event or node status without them gets the ring's node name and now, so
        every response served looks like Hubble's. Writing to a closed ring raises.
        """
        _complete(response, self.node_name)
        is_flow = response.HasField("flow")
        with self._cond:
            if self._closed:
                raise RuntimeError("the flow ring is closed")
            seq = self._head
            slot = seq % self.capacity
            self._slots[slot] = response
            self._arrivals[slot] = self._clock()
            self._is_flow[slot] = is_flow
            self._head = seq + 1
            if is_flow:
                self._seen_flows += 1
            self._cond.notify_all()
        return seq

    def write_many(self, responses: Iterable[Response]) -> int:
        """Append several responses; return the sequence number after the last one."""
        for response in responses:
            self.write(response)
        return self.head

    def close(self) -> None:
        """No more entries will come: wake every waiting reader (they drain, then stop)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def wake(self) -> None:
        """Wake waiting readers so they re-check their own stop conditions (client gone,
        server stopping) without waiting for the next entry."""
        with self._cond:
            self._cond.notify_all()

    # -- state ----------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def head(self) -> int:
        """Sequence number the next entry will get (= entries ever written)."""
        return self._head

    @property
    def oldest(self) -> int:
        """Sequence number of the oldest entry still held."""
        return max(0, self._head - self.capacity)

    def __len__(self) -> int:
        """Entries held now (ServerStatus ``num_flows``, which counts lost events too, as
        Hubble's ``ring.Len()``)."""
        return min(self._head, self.capacity)

    @property
    def seen_flows(self) -> int:
        """Flows written since the start (ServerStatus ``seen_flows``; events not counted)."""
        return self._seen_flows

    def uptime_s(self) -> float:
        return self._clock() - self.started

    def flows_rate(self) -> float:
        """Flows per second that arrived over the last minute (ServerStatus ``flows_rate``).

        Hubble counts the flows of the last minute still in its ring; when the ring holds less
        than a minute (it was overwritten within the minute) the rate is taken over the time the
        ring covers. Arrival time is used rather than flow time, so a replayed old capture shows
        the rate it is served at, not 0.
        """
        with self._cond:
            now = self._clock()
            since = now - RATE_WINDOW_S
            count = 0
            seq = self._head - 1
            oldest = self.oldest
            first_arrival: float | None = None
            while seq >= oldest:
                slot = seq % self.capacity
                arrival = self._arrivals[slot]
                if arrival < since:
                    break
                if self._is_flow[slot]:
                    count += 1
                first_arrival = arrival
                seq -= 1
            lapped = seq < oldest and self._head > self.capacity
        if lapped and first_arrival is not None:
            since = first_arrival  # the minute is only partly held: rate over what is held
        else:
            since = max(since, self.started)
        span = now - since
        return count / span if span > 0 else 0.0

    # -- reading ----------------------------------------------------------------------------------
    def snapshot(self) -> tuple[int, list[Response]]:
        """(sequence of the first entry, every entry held, oldest first), taken atomically.

        Costs one list of references (at most ``capacity``), not copies of the messages.
        """
        with self._cond:
            first = self.oldest
            entries = [self._slots[s % self.capacity] for s in range(first, self._head)]
        return first, entries  # type: ignore[return-value]

    def read(self, seq: int, max_entries: int = 256) -> Batch:
        """Entries from ``seq`` on (at most ``max_entries``), without waiting.

        When ``seq`` was overwritten, ``lost`` says how many entries were missed and reading
        starts at the oldest entry held.
        """
        with self._cond:
            return self._read_locked(seq, max_entries)

    def wait_read(self, seq: int, max_entries: int = 256, timeout: float | None = None) -> Batch:
        """As :meth:`read`, but wait up to ``timeout`` seconds (None: until an entry is written,
        the ring is closed or :meth:`wake` is called) when nothing is there yet."""
        with self._cond:
            if seq >= self._head and not self._closed:
                self._cond.wait(timeout)
            return self._read_locked(seq, max_entries)

    def reader(self, start: int | None = None) -> RingReader:
        """A cursor at sequence ``start`` (default: the next entry to be written)."""
        return RingReader(self, self._head if start is None else start)

    def _read_locked(self, seq: int, max_entries: int) -> Batch:
        if seq < 0:
            raise ValueError(f"sequence numbers start at 0, got {seq}")
        oldest = self.oldest
        lost = 0
        if seq < oldest:
            lost, seq = oldest - seq, oldest
        end = min(self._head, seq + max(1, max_entries))
        entries = [self._slots[s % self.capacity] for s in range(seq, end)]
        return Batch(lost, entries, seq, self._closed)  # type: ignore[arg-type]


class RingReader:
    """A reader's own position in a :class:`FlowRing`."""

    def __init__(self, ring: FlowRing, start: int) -> None:
        self.ring = ring
        self.position = start
        self.lost = 0  # entries missed so far because the writer lapped this reader

    def next_batch(self, max_entries: int = 256, timeout: float | None = None) -> Batch:
        """The next entries (waiting up to ``timeout`` for some); advances the position."""
        batch = self.ring.wait_read(self.position, max_entries, timeout)
        self.lost += batch.lost
        self.position = batch.first_seq + len(batch.entries)
        return batch


def _complete(response: Response, node_name: str) -> None:
    """Give the response Hubble's envelope fields: node name and time."""
    if response.HasField("flow"):
        flow = response.flow
        if not response.node_name:
            response.node_name = flow.node_name or node_name
        if not flow.node_name and response.node_name:
            flow.node_name = response.node_name
        if not response.HasField("time") and flow.HasField("time"):
            response.time.CopyFrom(flow.time)
        elif not flow.HasField("time") and response.HasField("time"):
            flow.time.CopyFrom(response.time)
        return
    if not response.node_name:
        response.node_name = node_name
    if not response.HasField("time"):
        response.time.GetCurrentTime()

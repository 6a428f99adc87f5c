"""Where to resume a flow stream after a reconnect, and which re-sent flows to skip.

After a reconnect the Hubble source asks again for flows *since* shortly before the newest
event time it has seen (``overlap`` earlier, because a Relay merges nodes' streams and flows of
one instant can arrive out of order), so nothing in between is missed. Flows it already has come
again; :class:`ResumeTracker` recognises them by key (the flow's ``uuid``, or a digest of its
bytes for older Cilium without uuids) and counts each key, so two genuinely identical flows are
both kept: after a reconnect, a key is skipped only as many times as it was seen.

Memory is bounded: keys older than ``overlap`` behind the newest event time are forgotten, and
at most ``limit`` keys are kept (when more arrive within the overlap, the oldest are forgotten
and the resume point moves past them, so they are not asked for again).
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Final

__all__ = ["ResumeTracker"]

_NS: Final = 1_000_000_000


class ResumeTracker:
    """Remembers recent flow keys; decides the resume time and skips flows seen before it."""

    def __init__(self, *, overlap_seconds: float = 2.0, limit: int = 100_000) -> None:
        if overlap_seconds < 0:
            raise ValueError(f"overlap_seconds must be >= 0, got {overlap_seconds!r}")
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit!r}")
        self.overlap_ns = int(overlap_seconds * _NS)
        self.limit = limit
        self.max_time_ns: int | None = None  # newest event time seen
        self.duplicates = 0  # re-sent flows skipped
        self._floor_ns = 0  # never resume before this (keys older were forgotten for space)
        self._recent: deque[tuple[int, bytes | str]] = deque()  # (time, key) in arrival order
        self._skip: Counter[bytes | str] = Counter()  # after a reconnect: key -> times to skip

    def resume_since_ns(self) -> int | None:
        """Event time (ns) to ask for flows since after a reconnect; None before any flow."""
        if self.max_time_ns is None:
            return None
        return max(self.max_time_ns - self.overlap_ns, self._floor_ns)

    def reconnected(self) -> None:
        """A new stream starts at :meth:`resume_since_ns`: flows seen since then will come again."""
        since = self.resume_since_ns()
        self._skip = Counter()
        if since is None:
            return
        for time_ns, key in self._recent:
            if time_ns >= since:
                self._skip[key] += 1

    def is_new(self, time_ns: int, key: bytes | str) -> bool:
        """Record a flow; False if it is a re-sent one to skip."""
        skip = self._skip
        if skip:
            left = skip.get(key)
            if left:
                if left == 1:
                    del skip[key]
                else:
                    skip[key] = left - 1
                self.duplicates += 1
                return False
        max_time = self.max_time_ns
        if max_time is None or time_ns > max_time:
            self.max_time_ns = max_time = time_ns
        recent = self._recent
        recent.append((time_ns, key))
        horizon = max_time - self.overlap_ns
        while recent and (recent[0][0] < horizon or len(recent) > self.limit):
            old_time = recent.popleft()[0]
            if old_time >= horizon:  # forgotten for space: never ask for it again
                self._floor_ns = max(self._floor_ns, old_time + 1)
        return True

    @property
    def remembered(self) -> int:
        """Keys held now (bounded by ``limit``)."""
        return len(self._recent)

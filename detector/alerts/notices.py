"""Slack notices of conditions: a model that no longer fits an identity, failing retraining.

Alertmanager is told such a condition's whole state again and again (firing, re-sent, resolved:
it forgets an alert that is not re-sent). A Slack channel is told twice: one message when the
condition starts, one when it ends. :class:`SlackNotices` keeps which conditions were announced
and enqueues those two messages in the alerter's outbox transactions, so they are retried until
delivered like every message, and are neither rate-limited with the anomalies' messages nor
counted against them (each has a key of its own, so neither ever supersedes the other).

The end of a condition is sent only once its start was delivered: while Slack is down, a
condition that starts and ends is told in order when Slack is back, never "fits again" before
"no longer fits". A condition that starts again before its end went out is simply still on: the
waiting end is dropped, as the channel was told nothing else.

Which conditions were announced is kept in memory, as the drift counts and the schedule's state
are: after a restart, a condition still on is announced again.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Final

from netwarden.detector.alerts.outbox import OutboxTransaction

__all__ = ["SlackNotices"]

_SINK: Final = "slack"  # the alerter's name of the Slack sink


@dataclass(slots=True)
class _Announced:
    message: int  # the outbox id of the start message
    end: dict[str, Any] | None = None  # the end message, waiting for the start's delivery


class SlackNotices:
    """Start and end messages per condition key (see the module docstring). Thread-safe: the
    alerter's thread and the retraining worker both call it."""

    def __init__(self) -> None:
        self._announced: dict[str, _Announced] = {}
        self._lock = threading.Lock()

    def start(self, tx: OutboxTransaction, key: str, payload: dict[str, Any]) -> int:
        """Announce that ``key``'s condition started, unless it is already announced; returns
        the messages enqueued (0 or 1)."""
        with self._lock:
            announced = self._announced.get(key)
            if announced is not None:
                announced.end = None  # on again before its end went out: still on
                return 0
            message = tx.enqueue(_SINK, payload, key=f"{key}:start:{tx.now.isoformat()}")
            self._announced[key] = _Announced(message)
            return 1

    def end(self, tx: OutboxTransaction, key: str, payload: dict[str, Any]) -> int:
        """Tell that ``key``'s condition ended, once its start was delivered (at once if it
        was); nothing if it was never announced. Returns the messages enqueued."""
        with self._lock:
            announced = self._announced.get(key)
            if announced is None:
                return 0
            announced.end = payload
        return self.flush(tx)

    def flush(self, tx: OutboxTransaction) -> int:
        """Enqueue the end messages whose start was delivered; returns how many."""
        with self._lock:
            waiting = {k: a for k, a in self._announced.items() if a.end is not None}
            if not waiting:
                return 0
            unsent = tx.pending_among(a.message for a in waiting.values())
            enqueued = 0
            for key, a in sorted(waiting.items()):
                if a.message in unsent or a.end is None:
                    continue
                tx.enqueue(_SINK, a.end, key=f"{key}:end:{a.message}")
                del self._announced[key]
                enqueued += 1
            return enqueued

    def announced(self) -> set[str]:
        """The conditions announced and not told ended yet."""
        with self._lock:
            return set(self._announced)

"""The anomaly lifecycle: states, the transitions between them, and the errors for wrong ones.

Pure rules, no storage: :class:`netwarden.detector.store.AnomalyStore` applies them and writes
one audit event per transition. The whole table::

    action        from                             to
    acknowledge   open                             acknowledged
    suppress      open, acknowledged               suppressed    (a future `until`, a reason)
    resolve       open, acknowledged, suppressed   resolved      (final)
    unsuppress    suppressed                       open          (by netwarden after `until`)

Anything else (acknowledging twice, suppressing a suppressed anomaly, touching a resolved one) is
a :class:`LifecycleError`. A resolved anomaly is never reopened: a new anomalous window of the
same identity starts a new anomaly instead.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ACKNOWLEDGED",
    "ACTIONS",
    "OPEN",
    "RESOLVED",
    "STATES",
    "SUPPRESSED",
    "SYSTEM_ACTOR",
    "AnomalyNotFound",
    "LifecycleError",
    "next_state",
]

OPEN: Final = "open"
ACKNOWLEDGED: Final = "acknowledged"
SUPPRESSED: Final = "suppressed"
RESOLVED: Final = "resolved"
#: Every state, in lifecycle order.
STATES: Final[tuple[str, ...]] = (OPEN, ACKNOWLEDGED, SUPPRESSED, RESOLVED)

#: The actor named in events that netwarden itself causes (creation, suppression expiry).
SYSTEM_ACTOR: Final = "netwarden"

#: action -> {from_state: to_state}; the one place the valid transitions are declared.
ACTIONS: Final[dict[str, dict[str, str]]] = {
    "acknowledge": {OPEN: ACKNOWLEDGED},
    "suppress": {OPEN: SUPPRESSED, ACKNOWLEDGED: SUPPRESSED},
    "resolve": {OPEN: RESOLVED, ACKNOWLEDGED: RESOLVED, SUPPRESSED: RESOLVED},
    "unsuppress": {SUPPRESSED: OPEN},
}


class LifecycleError(ValueError):
    """An action that the anomaly's current state does not allow (e.g. acknowledging twice)."""

    def __init__(self, anomaly_id: int, state: str, action: str) -> None:
        allowed = sorted(ACTIONS.get(action, {}))
        hint = f"{action} is allowed from: {', '.join(allowed)}" if allowed else "unknown action"
        super().__init__(f"anomaly {anomaly_id} is {state}: cannot {action} ({hint})")
        self.anomaly_id = anomaly_id
        self.state = state
        self.action = action


class AnomalyNotFound(KeyError):
    """No anomaly has this id. A ``KeyError`` so that mapping-style callers can catch it."""

    def __init__(self, anomaly_id: int) -> None:
        super().__init__(anomaly_id)
        self.anomaly_id = anomaly_id

    def __str__(self) -> str:  # KeyError would print the repr of its argument only
        return f"no anomaly with id {self.anomaly_id}"


def next_state(anomaly_id: int, state: str, action: str) -> str:
    """The state ``action`` leads to from ``state``; raises :class:`LifecycleError` if none."""
    try:
        return ACTIONS[action][state]
    except KeyError:
        raise LifecycleError(anomaly_id, state, action) from None

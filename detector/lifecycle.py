"""The anomaly lifecycle: states, the transitions between them, and the errors for wrong ones.

The rules are an instance of the generic :class:`netwarden.storage.lifecycle.AuditedLifecycle`
(:data:`LIFECYCLE`): :class:`netwarden.detector.store.AnomalyStore` applies them, and each
transition writes its event to the shared ``audit_events`` table (subject kind ``anomaly``) in
the same transaction. The whole table::

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

from netwarden.storage.lifecycle import AuditedLifecycle, SubjectNotFound, TransitionError

__all__ = [
    "ACKNOWLEDGED",
    "ACTIONS",
    "LIFECYCLE",
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


class LifecycleError(TransitionError):
    """An action that the anomaly's current state does not allow (e.g. acknowledging twice)."""

    def __init__(self, anomaly_id: int, state: str, action: str) -> None:
        super().__init__("anomaly", anomaly_id, state, action, LIFECYCLE.sources(action))
        self.anomaly_id = anomaly_id


class AnomalyNotFound(SubjectNotFound):
    """No anomaly has this id. A ``KeyError`` so that mapping-style callers can catch it."""

    def __init__(self, anomaly_id: int) -> None:
        super().__init__("anomaly", anomaly_id)
        self.anomaly_id = anomaly_id


#: The anomaly lifecycle: created ``open`` (action ``open``, by netwarden).
LIFECYCLE: Final = AuditedLifecycle(
    kind="anomaly",
    states=STATES,
    actions=ACTIONS,
    error=LifecycleError,
    initial=OPEN,
    create_action="open",
)


def next_state(anomaly_id: int, state: str, action: str) -> str:
    """The state ``action`` leads to from ``state``; raises :class:`LifecycleError` if none."""
    return LIFECYCLE.next_state(anomaly_id, state, action)

"""``/api/v1/anomalies``: list and read anomalies (viewer), act on them (operator).

Store errors map to problems here, once (:func:`~netwarden.api.problems.store_refusals`): an
unknown id is a 404, an action the anomaly's state does not allow (see
:mod:`netwarden.detector.lifecycle`) a 409 naming the state, and any other refusal of the store
(a suppression end already past) a 422. The actor recorded for an action is the name of the
caller's token.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from netwarden.api.deps import OperatorDep, PagerDep, StoreDep
from netwarden.api.problems import found, problem_responses, store_refusals
from netwarden.api.schemas import (
    AcknowledgeRequest,
    AnomalyDetailPublic,
    AnomalyPagePublic,
    AnomalyPublic,
    AnomalyQuery,
    RecordId,
    ResolveRequest,
    SuppressRequest,
    note_of,
)
from netwarden.detector.lifecycle import AnomalyNotFound, LifecycleError
from netwarden.detector.severity import score_range
from netwarden.detector.store import AnomalyRecord, AnomalyStore

__all__ = ["router"]

router = APIRouter(
    prefix="/anomalies", tags=["anomalies"], responses=problem_responses(401, 403, 422)
)


def _detail(store: AnomalyStore, record: AnomalyRecord) -> AnomalyDetailPublic:
    with store_refusals(AnomalyNotFound, LifecycleError):
        events = store.events(record.id)
    return AnomalyDetailPublic.from_record_and_events(record, events)


def _act(store: AnomalyStore, action: Callable[[], AnomalyRecord]) -> AnomalyDetailPublic:
    """Run a lifecycle ``action`` of the store; its refusals as problems, the anomaly after."""
    with store_refusals(AnomalyNotFound, LifecycleError):
        record = action()
    return _detail(store, record)


@router.get("", response_model=AnomalyPagePublic)
def read_anomalies(
    store: StoreDep, pager: PagerDep, query: Annotated[AnomalyQuery, Query()]
) -> Response:
    """Anomalies matching every filter given, most recent first, one page at a time."""
    filters = query.filters()
    severity = filters.pop("severity")
    filters["min_score"], filters["max_score"] = score_range(severity) if severity else (None, None)

    def fetch() -> tuple[list[AnomalyPublic], int]:
        items, total = store.page(**filters, limit=query.limit, offset=query.offset)
        return [AnomalyPublic.from_record(a) for a in items], total

    return pager.page(AnomalyPagePublic, fetch, query=query)


@router.get("/{anomaly_id}", response_model=AnomalyDetailPublic, responses=problem_responses(404))
def read_anomaly(anomaly_id: RecordId, store: StoreDep) -> AnomalyDetailPublic:
    """One anomaly with its reasons, example flows, severity and audit trail."""
    return _detail(store, found(store.get(anomaly_id), "anomaly", anomaly_id))


_ACTION_ERRORS = problem_responses(404, 409)


@router.post(
    "/{anomaly_id}/acknowledge", response_model=AnomalyDetailPublic, responses=_ACTION_ERRORS
)
def acknowledge_anomaly(
    anomaly_id: RecordId,
    store: StoreDep,
    token: OperatorDep,
    body: Annotated[AcknowledgeRequest | None, Body()] = None,
) -> AnomalyDetailPublic:
    """Someone is on it (open -> acknowledged): alerts for it stay quiet."""
    return _act(store, lambda: store.acknowledge(anomaly_id, actor=token.name, note=note_of(body)))


@router.post("/{anomaly_id}/suppress", response_model=AnomalyDetailPublic, responses=_ACTION_ERRORS)
def suppress_anomaly(
    anomaly_id: RecordId, store: StoreDep, token: OperatorDep, body: SuppressRequest
) -> AnomalyDetailPublic:
    """Silence it until a time or for a duration, for a stated reason; it reopens after."""
    until = body.until
    if until is None:
        assert body.duration_seconds is not None  # the request model requires one of both
        until = store.now() + timedelta(seconds=body.duration_seconds)  # the store's clock
    return _act(
        store, lambda: store.suppress(anomaly_id, actor=token.name, until=until, reason=body.reason)
    )


@router.post("/{anomaly_id}/resolve", response_model=AnomalyDetailPublic, responses=_ACTION_ERRORS)
def resolve_anomaly(
    anomaly_id: RecordId,
    store: StoreDep,
    token: OperatorDep,
    body: Annotated[ResolveRequest | None, Body()] = None,
) -> AnomalyDetailPublic:
    """Close it for good; a later anomalous window of the identity starts a new anomaly."""
    return _act(store, lambda: store.resolve(anomaly_id, actor=token.name, note=note_of(body)))


class VerdictRequest(BaseModel):
    """What the anomaly is, as the next retraining uses it: ``confirmed`` (real: kept out of
    training, a positive the promotion gate makes every new model catch) or ``expected``
    (normal: trained on, so it stops alerting)."""

    model_config = ConfigDict(extra="forbid")
    verdict: Literal["confirmed", "expected"]
    note: str = Field("", max_length=2000, description="why, for the record")


@router.post("/{anomaly_id}/verdict", response_model=AnomalyDetailPublic, responses=_ACTION_ERRORS)
def set_anomaly_verdict(
    anomaly_id: RecordId, store: StoreDep, token: OperatorDep, body: VerdictRequest
) -> AnomalyDetailPublic:
    """Say whether it is real (confirmed) or expected; the state stays as it is (an audit event
    ``verdict`` records it; the latest one counts). Suppressing with a reason also counts as
    expected, unless a verdict says otherwise."""
    return _act(
        store,
        lambda: store.set_verdict(anomaly_id, body.verdict, actor=token.name, note=body.note),
    )

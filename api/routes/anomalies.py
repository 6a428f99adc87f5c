"""``/api/v1/anomalies``: list and read anomalies (viewer), act on them (operator).

Store errors map to problems here, once: an unknown id is a 404, an action the anomaly's state
does not allow (see :mod:`netwarden.detector.lifecycle`) a 409 naming the state, and any other
refusal of the store (a suppression end already past) a 422. The actor recorded for an action
is the name of the caller's token.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request

from netwarden.api.auth import RequireRole, Role, TokenEntry
from netwarden.api.problems import ProblemError, problem_responses, problem_type
from netwarden.api.routes import StoreDep, next_page
from netwarden.api.schemas import (
    AcknowledgeRequest,
    AnomalyDetailPublic,
    AnomalyPagePublic,
    AnomalyPublic,
    AnomalyQuery,
    ResolveRequest,
    SuppressRequest,
)
from netwarden.detector.lifecycle import AnomalyNotFound, LifecycleError
from netwarden.detector.severity import score_range
from netwarden.detector.store import AnomalyRecord, AnomalyStore

__all__ = ["router"]

router = APIRouter(
    prefix="/anomalies",
    tags=["anomalies"],
    dependencies=[Depends(RequireRole(Role.viewer))],
    responses=problem_responses(401, 403, 422),
)

Operator = Annotated[TokenEntry, Depends(RequireRole(Role.operator))]


@contextmanager
def _store_errors(anomaly_id: int) -> Iterator[None]:
    """The store's refusals as problems (LifecycleError first: it is also a ValueError)."""
    try:
        yield
    except AnomalyNotFound:
        raise ProblemError(404, f"no anomaly with id {anomaly_id}") from None
    except LifecycleError as exc:
        raise ProblemError(
            409,
            str(exc),
            type=problem_type("lifecycle-conflict"),
            title="Lifecycle conflict",
            state=exc.state,
            action=exc.action,
        ) from None
    except ValueError as exc:
        raise ProblemError(
            422,
            str(exc),
            type=problem_type("validation-error"),
            title="Request validation failed",
            errors=[{"loc": ["body"], "msg": str(exc), "type": "value_error"}],
        ) from None


def _detail(store: AnomalyStore, record: AnomalyRecord) -> AnomalyDetailPublic:
    with _store_errors(record.id):
        events = store.events(record.id)
    return AnomalyDetailPublic.from_record_and_events(record, events)


@router.get("", response_model=AnomalyPagePublic)
def read_anomalies(
    request: Request, store: StoreDep, query: Annotated[AnomalyQuery, Query()]
) -> AnomalyPagePublic:
    """Anomalies matching every filter given, most recent first, one page at a time."""
    low, high = score_range(query.severity) if query.severity else (None, None)
    filters: dict[str, Any] = {
        "identity": query.identity,
        "namespace": query.namespace,
        "state": query.state,
        "since": query.since,
        "until": query.until,
        "min_score": low,
        "max_score": high,
    }
    items = store.list(**filters, limit=query.limit, offset=query.offset)
    total = store.count(**filters)
    return AnomalyPagePublic(
        items=[AnomalyPublic.from_record(a) for a in items],
        total=total,
        limit=query.limit,
        offset=query.offset,
        next=next_page(
            request, limit=query.limit, offset=query.offset, returned=len(items), total=total
        ),
    )


@router.get("/{anomaly_id}", response_model=AnomalyDetailPublic, responses=problem_responses(404))
def read_anomaly(anomaly_id: int, store: StoreDep) -> AnomalyDetailPublic:
    """One anomaly with its reasons, example flows, severity and audit trail."""
    record = store.get(anomaly_id)
    if record is None:
        raise ProblemError(404, f"no anomaly with id {anomaly_id}")
    return _detail(store, record)


_ACTION_ERRORS = problem_responses(404, 409)


@router.post(
    "/{anomaly_id}/acknowledge", response_model=AnomalyDetailPublic, responses=_ACTION_ERRORS
)
def acknowledge_anomaly(
    anomaly_id: int,
    store: StoreDep,
    token: Operator,
    body: Annotated[AcknowledgeRequest | None, Body()] = None,
) -> AnomalyDetailPublic:
    """Someone is on it (open -> acknowledged): alerts for it stay quiet."""
    note = body.note if body else ""
    with _store_errors(anomaly_id):
        record = store.acknowledge(anomaly_id, actor=token.name, note=note)
    return _detail(store, record)


@router.post("/{anomaly_id}/suppress", response_model=AnomalyDetailPublic, responses=_ACTION_ERRORS)
def suppress_anomaly(
    anomaly_id: int, store: StoreDep, token: Operator, body: SuppressRequest
) -> AnomalyDetailPublic:
    """Silence it until a time or for a duration, for a stated reason; it reopens after."""
    until = body.until
    if until is None:
        assert body.duration_seconds is not None  # the request model requires one of both
        until = store.now() + timedelta(seconds=body.duration_seconds)  # the store's clock
    with _store_errors(anomaly_id):
        record = store.suppress(anomaly_id, actor=token.name, until=until, reason=body.reason)
    return _detail(store, record)


@router.post("/{anomaly_id}/resolve", response_model=AnomalyDetailPublic, responses=_ACTION_ERRORS)
def resolve_anomaly(
    anomaly_id: int,
    store: StoreDep,
    token: Operator,
    body: Annotated[ResolveRequest | None, Body()] = None,
) -> AnomalyDetailPublic:
    """Close it for good; a later anomalous window of the identity starts a new anomaly."""
    note = body.note if body else ""
    with _store_errors(anomaly_id):
        record = store.resolve(anomaly_id, actor=token.name, note=note)
    return _detail(store, record)

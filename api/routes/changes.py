"""``/api/v1/changes``: list and read changes (viewer), accept or reject them (operator).

A change is ordinary-looking new traffic the detector keeps out of its baseline until a person
decides (:mod:`netwarden.detector.change_store`). Deciding here records the decision at once;
the service's pipeline thread, which owns the edge memory, applies it on its next turn (the
change's ``applied`` says when it has):

* **accept**: the change's edges become normal, and each workload it touched gets a proposal
  (author ``netwarden``, reviewed like any other) amending its policy with them
  (:mod:`netwarden.remediation.amend`); the answer lists the proposals (``proposal_ids``).
* **reject**: the change becomes an anomaly of its subject workload(s), recorded now (the
  answer lists them, ``anomaly_ids``), which alerts and is proposed a containment like any
  anomaly; the same traffic is not reported as a change again while it goes on.

An unknown id is a 404, a change that is not open a 409 naming its state. The actor recorded is
the name of the caller's token; the optional note (``{"note": "..."}``) goes to the audit trail.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from netwarden.api.deps import Changes, ChangesDep, OperatorDep, PagerDep, StoreDep
from netwarden.api.problems import problem_responses, store_refusals
from netwarden.api.schemas import (
    ChangeActionRequest,
    ChangeDetailPublic,
    ChangeId,
    ChangePagePublic,
    ChangePublic,
    ChangeQuery,
    note_of,
)
from netwarden.detector.change_store import (
    ChangeLifecycleError,
    ChangeNotFound,
    ChangeRecord,
    record_rejection,
)
from netwarden.detector.lifecycle import SYSTEM_ACTOR
from netwarden.detector.store import AnomalyStore
from netwarden.remediation.amend import current_baseline, propose_amendments
from netwarden.remediation.propose import Proposer

__all__ = ["router"]

router = APIRouter(prefix="/changes", tags=["changes"], responses=problem_responses(401, 403, 422))


def _refusals() -> Any:
    return store_refusals(ChangeNotFound, ChangeLifecycleError)


def _detail(changes: Changes, record: ChangeRecord) -> ChangeDetailPublic:
    with _refusals():
        events = changes.store.events(record.change_id)
    return ChangeDetailPublic.from_record_and_events(record, events)


@router.get("", response_model=ChangePagePublic)
def read_changes(
    changes: ChangesDep, pager: PagerDep, query: Annotated[ChangeQuery, Query()]
) -> Response:
    """Changes matching every filter given, the most recently seen first, a page at a time."""
    filters = query.filters()

    def fetch() -> tuple[list[ChangePublic], int]:
        with _refusals():
            items = changes.store.list(**filters, limit=query.limit, offset=query.offset)
            total = changes.store.count(**filters)
        return [ChangePublic.from_record(c) for c in items], total

    return pager.page(ChangePagePublic, fetch, query=query)


@router.get("/{change_id}", response_model=ChangeDetailPublic, responses=problem_responses(404))
def read_change(change_id: ChangeId, changes: ChangesDep) -> ChangeDetailPublic:
    """One change with its edges and audit trail."""
    with _refusals():
        record = _get(changes, change_id)
    return _detail(changes, record)


def _get(changes: Changes, change_id: str) -> ChangeRecord:
    record = changes.store.get(change_id)
    if record is None:
        raise ChangeNotFound(change_id)
    return record


def _selectors(changes: Changes) -> dict[str, dict[str, str]]:
    """The workloads' stable labels, learned from the service's recent flows (none without)."""
    flows = changes.review.recent_flows()
    return Proposer().add_all(flows).selectors() if flows else {}


_ACTION_ERRORS = problem_responses(404, 409)


@router.post("/{change_id}/accept", response_model=ChangeDetailPublic, responses=_ACTION_ERRORS)
def accept_change(
    change_id: ChangeId,
    changes: ChangesDep,
    token: OperatorDep,
    body: ChangeActionRequest | None = None,
) -> ChangeDetailPublic:
    """open -> accepted: its edges become normal (applied by the detector on its next turn),
    and each workload it touched gets a policy amendment proposal (``proposal_ids``)."""
    review = changes.review
    with _refusals():
        changes.store.check(change_id, "accept")  # 409 before anything is built
        record = changes.store.accept(change_id, actor=token.name, note=note_of(body))
        applier = review.applier()
        try:
            made, notes = propose_amendments(
                review.proposals,
                record,
                current=lambda identity: current_baseline(review.proposals, applier, identity),
                selectors=_selectors(changes),
                actor=SYSTEM_ACTOR,
            )
        except Exception as exc:  # the decision stands; the trail says what went wrong
            made, notes = [], [f"no amendment proposed: {type(exc).__name__}: {exc}"]
        record = changes.store.link_proposals(change_id, [p.id for p in made], notes=notes)
    return _detail(changes, record)


@router.post("/{change_id}/reject", response_model=ChangeDetailPublic, responses=_ACTION_ERRORS)
def reject_change(
    change_id: ChangeId,
    changes: ChangesDep,
    store: StoreDep,
    token: OperatorDep,
    body: ChangeActionRequest | None = None,
) -> ChangeDetailPublic:
    """open -> rejected: it becomes an anomaly of its subject workload(s) (``anomaly_ids``),
    which alerts and is proposed a containment like any other."""
    note = note_of(body)
    with _refusals():
        before = changes.store.check(change_id, "reject")
        anomalies = record_rejection(
            store, before, actor=token.name, note=note, window_seconds=changes.window_seconds()
        )
        try:
            record = changes.store.reject(
                change_id, actor=token.name, note=note, anomaly_ids=[a.id for a in anomalies]
            )
        except ChangeLifecycleError:  # someone decided it meanwhile: take the anomalies back
            _take_back(store, [a.id for a in anomalies], change_id)
            raise
    return _detail(changes, record)


def _take_back(store: AnomalyStore, anomaly_ids: list[int], change_id: str) -> None:
    """Resolve the anomalies recorded for a rejection that lost a race (those made of the
    rejection's window alone: one that joined an anomaly already there stays as it is)."""
    for anomaly in store.get_many(anomaly_ids):
        if anomaly.window_count != 1:
            continue
        try:
            store.resolve(
                anomaly.id,
                actor=SYSTEM_ACTOR,
                note=f"change {change_id} was decided by someone else at the same time",
            )
        except ValueError:  # already resolved (or the window joined another anomaly)
            pass

"""``/api/v1/identities``: the identities the detector scores, and their recent windows."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from netwarden.api.deps import PagerDep, StoreDep
from netwarden.api.problems import ProblemError, problem_responses
from netwarden.api.schemas import (
    IdentityPagePublic,
    IdentityPublic,
    IdentityQuery,
    IdentityWindowsPublic,
    WindowPublic,
    WindowQuery,
)

__all__ = ["router"]

router = APIRouter(
    prefix="/identities", tags=["identities"], responses=problem_responses(401, 403, 422)
)


@router.get("", response_model=IdentityPagePublic)
def read_identities(
    store: StoreDep, pager: PagerDep, query: Annotated[IdentityQuery, Query()]
) -> Response:
    """Every scored identity (of one namespace if given), sorted, with its latest score and
    open anomalies."""

    def fetch() -> tuple[list[IdentityPublic], int]:
        everything = store.identities(**query.filters())  # one aggregate query: all rows
        page = everything[query.offset : query.offset + query.limit]
        return [IdentityPublic.from_summary(i) for i in page], len(everything)

    return pager.page(IdentityPagePublic, fetch, query=query)


@router.get(
    "/{namespace}/{workload}/windows",
    response_model=IdentityWindowsPublic,
    responses=problem_responses(404),
)
def read_identity_windows(
    namespace: str, workload: str, store: StoreDep, query: Annotated[WindowQuery, Query()]
) -> IdentityWindowsPublic:
    """The identity's most recent scored windows (normal ones too), newest first."""
    identity = f"{namespace}/{workload}"
    windows = store.windows(
        identity, since=query.since, until=query.until, limit=query.limit, newest_first=True
    )
    if not windows and not store.windows(identity, limit=1):
        raise ProblemError(404, f"no scored windows for identity {identity}")
    return IdentityWindowsPublic(
        identity=identity,
        namespace=namespace,
        workload=workload,
        items=[WindowPublic.from_window(w) for w in windows],
        limit=query.limit,
    )

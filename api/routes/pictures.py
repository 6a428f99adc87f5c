"""``/api/v1/identities/{namespace}/{workload}/score.png``: an identity's score over time, as
a picture alerts link to (:func:`netwarden.client.plots.score_over_time`, rendered with Agg)."""

from __future__ import annotations

from typing import Annotated

import pandas as pd
from fastapi import APIRouter, Query
from fastapi.responses import Response

from netwarden.api.deps import StoreDep
from netwarden.api.problems import ProblemError, problem_responses
from netwarden.api.schemas import WindowQuery
from netwarden.client.plots import png, score_over_time

__all__ = ["router"]

router = APIRouter(
    prefix="/identities", tags=["identities"], responses=problem_responses(401, 403, 422)
)


@router.get(
    "/{namespace}/{workload}/score.png",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}, "description": "the picture"},
        **problem_responses(404),
    },
)
def read_identity_score_png(
    namespace: str, workload: str, store: StoreDep, query: Annotated[WindowQuery, Query()]
) -> Response:
    """The identity's scores (its latest ``limit`` windows in the range), the threshold, its
    anomalous windows marked and its anomalies shaded, as a PNG."""
    identity = f"{namespace}/{workload}"
    windows = store.windows(
        identity, since=query.since, until=query.until, limit=query.limit, newest_first=True
    )
    if not windows and not store.windows(identity, limit=1):
        raise ProblemError(404, f"no scored windows for identity {identity}")
    frame = pd.DataFrame(
        {
            "window_start": [w.window_start for w in windows],
            "score": [w.score for w in windows],
            "threshold": [w.threshold for w in windows],
            "anomalous": [w.anomalous for w in windows],
        }
    )
    since = min((w.window_start for w in windows), default=query.since)
    until = max((w.window_end for w in windows), default=query.until)
    anomalies = store.list(identity=identity, since=since, until=until, limit=500)
    starts = [a.first_window_start for a in anomalies]
    if since is not None:  # an anomaly that began before the range is shaded from its start
        starts = [max(t, since) for t in starts]
    shaded = pd.DataFrame(
        {"first_window_start": starts, "last_window_end": [a.last_window_end for a in anomalies]}
    )
    fig = score_over_time(frame, anomalies=shaded, title=f"{identity}: score per window")
    return Response(content=png(fig), media_type="image/png", headers={"Cache-Control": "no-store"})

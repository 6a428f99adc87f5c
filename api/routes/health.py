"""Probes and metrics, the only routes that answer without a token.

``/healthz`` (liveness) answers whenever the process serves, so a restart is never triggered by
a missing model or a source that is down; ``/readyz`` (readiness) says whether the service can
detect, and names what is missing when it cannot. ``/metrics`` is the Prometheus exposition of
the service's registry, in OpenMetrics when the scraper asks for it.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client.exposition import choose_encoder

from netwarden.api.deps import StateDep
from netwarden.api.problems import ProblemError, problem_responses, problem_type
from netwarden.api.schemas import HealthPublic, ReadyPublic

__all__ = ["PUBLIC_PATHS", "router"]

#: The paths served without a token.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthPublic)
def healthz() -> HealthPublic:
    """Liveness: the process is serving."""
    return HealthPublic()


@router.get("/readyz", response_model=ReadyPublic, responses=problem_responses(503))
def readyz(state: StateDep) -> ReadyPublic:
    """Readiness: a model is loaded and the flow source is up; 503 naming what is missing."""
    missing = []
    model = state.current_model()
    if model is None:
        missing.append("no model loaded")
    source = state.source_status()
    if not source.up:
        missing.append(f"source down: {source.error or 'no reason given'}")
    if missing or model is None:
        raise ProblemError(
            503,
            "; ".join(missing),
            type=problem_type("not-ready"),
            title="Not ready",
            missing=missing,
        )
    return ReadyPublic(
        model=model.version,
        source=source.kind,
        flows=source.flows,
        last_flow_at=source.last_flow_at,
    )


@router.get(
    "/metrics",
    response_class=Response,
    response_model=None,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text"}},
)
def metrics(request: Request, state: StateDep) -> Response:
    """The service's metrics in the Prometheus text format (OpenMetrics if accepted)."""
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(state.registry), media_type=content_type)

"""Drift: whether the model still fits each identity (:mod:`netwarden.detector.drift`).

``GET /api/v1/identities/{namespace}/{workload}/drift`` is one identity's report: the PSI of
every feature and of the score against training, the share of windows above the threshold live
and in training, how many windows were counted, which model scores it (its own, its
namespace's or the global one) and, for an identity without a model of its own, how much
history it needs to get one at the next retraining. ``GET /api/v1/drift`` lists the tracked
identities, most drifting first.

The service exposes its :class:`~netwarden.detector.drift.DriftMonitor` as ``drift``; a service
without one answers 404 here, and a model version saved before drift references existed answers
409, saying so.
"""

from __future__ import annotations

from typing import Annotated, Literal, Protocol, Self

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from netwarden.api.deps import StateDep
from netwarden.api.problems import ProblemError, problem_responses
from netwarden.detector.drift import STATES, DriftReport, FeatureDrift

__all__ = ["DriftListPublic", "DriftPublic", "DriftSummaryPublic", "router"]

router = APIRouter(tags=["drift"], responses=problem_responses(401, 403, 404, 409, 422))


class _Public(BaseModel):
    model_config = ConfigDict(frozen=True)


class FeatureDriftPublic(_Public):
    feature: str
    psi: float = Field(description="population stability index, live vs training")
    noise: float = Field(
        description="the PSI sampling alone exceeds one time in 1,000 with these window counts"
    )

    @classmethod
    def from_drift(cls, f: FeatureDrift) -> Self:
        return cls(feature=f.feature, psi=f.psi, noise=f.noise)


class AboveThresholdPublic(_Public):
    live: float | None = Field(description="share of live windows above the threshold")
    training: float | None = Field(description="share of training windows above it")
    live_windows: int = Field(description="live windows above the threshold")


class OwnModelPublic(_Public):
    """For an identity scored by a fallback model: when it gets a model of its own."""

    windows_needed: int = Field(description="windows of history the next retraining needs")
    windows_seen: int = Field(description="windows of it scored since this model was loaded")
    message: str


class DriftSummaryPublic(_Public):
    identity: str
    namespace: str
    workload: str
    state: Literal["fits", "shifting", "drifted", "warming_up", "fallback", "unavailable"]
    reason: str
    scored_by: Literal["own", "namespace", "global"]
    model: str = Field(
        description='the model key: "identity:<ns>/<wl>", "namespace:<ns>", "global"'
    )
    model_version: str | None
    windows: int = Field(description="live windows counted in the horizon")
    training_windows: int
    score_psi: float | None
    above_threshold: AboveThresholdPublic
    top_features: list[FeatureDriftPublic]
    own_model: OwnModelPublic | None = None

    @classmethod
    def _fields(cls, r: DriftReport) -> dict[str, object]:
        own = None
        if r.scored_by != "own":
            ready = r.windows_seen >= r.own_model_windows
            own = OwnModelPublic(
                windows_needed=r.own_model_windows,
                windows_seen=r.windows_seen,
                message=(
                    f"scored by the {r.scored_by} model; gets its own at the next retraining "
                    f"with {r.own_model_windows} windows of history"
                    + (" (it has them now)" if ready else f" ({r.windows_seen} so far)")
                ),
            )
        return {
            "identity": r.identity,
            "namespace": r.namespace,
            "workload": r.workload,
            "state": r.state,
            "reason": r.reason,
            "scored_by": r.scored_by,
            "model": r.model,
            "model_version": r.version,
            "windows": r.windows,
            "training_windows": r.training_windows,
            "score_psi": r.score_psi,
            "above_threshold": AboveThresholdPublic(
                live=r.above_share, training=r.training_above_share, live_windows=r.above
            ),
            "top_features": [FeatureDriftPublic.from_drift(f) for f in r.top],
            "own_model": own,
        }

    @classmethod
    def from_report(cls, r: DriftReport) -> Self:
        return cls(**cls._fields(r))  # type: ignore[arg-type]


class DriftPublic(DriftSummaryPublic):
    score_noise: float | None = Field(description="the score PSI's sampling noise level")
    features: list[FeatureDriftPublic] = Field(description="every feature, most drifting first")

    @classmethod
    def from_report(cls, r: DriftReport) -> Self:
        return cls(
            **cls._fields(r),  # type: ignore[arg-type]
            score_noise=r.score_noise,
            features=[FeatureDriftPublic.from_drift(f) for f in r.features],
        )


class DriftListPublic(_Public):
    model_version: str | None
    counts: dict[str, int] = Field(description="tracked identities by state")
    items: list[DriftSummaryPublic]
    total: int = Field(description="identities matching, before the limit")


class DriftView(Protocol):
    """What these routes read of a :class:`DriftMonitor` (in this process, or the pipeline's
    through :class:`netwarden.pipeline_process.RemoteDrift`)."""

    @property
    def loaded_version(self) -> str | None: ...

    @property
    def available(self) -> bool: ...

    @property
    def version(self) -> str | None: ...

    def report(self, identity: str) -> DriftReport | None: ...

    def reports(self) -> list[DriftReport]: ...

    def counts(self) -> dict[str, int]: ...


def _monitor(state: StateDep) -> DriftView:
    monitor: DriftView | None = getattr(state, "drift", None)
    if monitor is None:
        raise ProblemError(404, "this service does not measure drift")
    loaded = monitor.loaded_version
    if loaded is None:
        raise ProblemError(404, "no model loaded: nothing to measure drift against")
    if not monitor.available:
        raise ProblemError(
            409,
            f"drift is unavailable: model version {loaded} has no drift "
            "reference (it was saved before netwarden kept one); retrain to measure drift",
        )
    return monitor


@router.get(
    "/identities/{namespace}/{workload}/drift",
    response_model=DriftPublic,
)
def read_identity_drift(namespace: str, workload: str, state: StateDep) -> DriftPublic:
    """Whether the model still fits the identity: PSI per feature and of the score, the share
    of windows above the threshold live vs training, and which model scores it."""
    report = _monitor(state).report(f"{namespace}/{workload}")
    if report is None:
        raise ProblemError(
            404,
            f"identity {namespace}/{workload} is unknown to model and has no scored windows "
            "since it was loaded",
        )
    return DriftPublic.from_report(report)


@router.get("/drift", response_model=DriftListPublic)
def read_drift(
    state: StateDep,
    drift_state: Annotated[
        Literal["fits", "shifting", "drifted", "warming_up", "fallback", "unavailable"] | None,
        Query(alias="state", description="only identities in this state"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="identities at most")] = 100,
) -> DriftListPublic:
    """The tracked identities, most drifting first (drifted, shifting, then by score PSI)."""
    monitor = _monitor(state)
    reports = [r for r in monitor.reports() if drift_state is None or r.state == drift_state]
    counts = monitor.counts()
    return DriftListPublic(
        model_version=monitor.version,
        counts={s: counts.get(s, 0) for s in STATES},
        items=[DriftSummaryPublic.from_report(r) for r in reports[:limit]],
        total=len(reports),
    )

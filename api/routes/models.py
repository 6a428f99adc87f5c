"""``/api/v1/models``: the saved model versions and the one scoring now.

``current`` means "scoring now", the version the service has loaded. A version's own
``current`` flag says which version the model folder's ``CURRENT`` file names, and the two
differ whenever a new version was written but not (yet) loaded: between ``netwarden train`` and
the service's next reload, or for good when the service refused it (another window length, a
tampered file). The model that scores was then listed as ``current: false``.

Lifecycle (when the service manages versions): ``GET /models/candidate`` (the newest version
not scoring, with its promotion gate report), ``GET /models/{version}``, and, for admins,
``POST /models/{version}/promote`` and ``POST /models/rollback``: the model folder's
``CURRENT`` is switched atomically and the service loads the version before its next batch.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Body
from pydantic import BaseModel, ConfigDict, Field

from netwarden.api.deps import AdminDep, StateDep
from netwarden.api.problems import ProblemError, problem_responses
from netwarden.api.schemas import ModelListPublic, ModelVersionPublic

__all__ = ["router"]

router = APIRouter(prefix="/models", tags=["models"], responses=problem_responses(401, 403))


@router.get("", response_model=ModelListPublic)
def read_models(state: StateDep) -> ModelListPublic:
    """Every saved model version, newest first."""
    versions = sorted(
        state.model_versions(), key=lambda v: (v.created, v.version), reverse=True
    )  # the protocol promises this order; cheap to make sure
    scoring = state.current_model()
    scoring_version = scoring.version if scoring is not None else None
    return ModelListPublic(
        items=[
            ModelVersionPublic.from_version(replace(v, current=v.version == scoring_version))
            for v in versions
        ]
    )


@router.get("/current", response_model=ModelVersionPublic, responses=problem_responses(404))
def read_current_model(state: StateDep) -> ModelVersionPublic:
    """The model version scoring now; 404 while none is loaded."""
    current = state.current_model()
    if current is None:
        raise ProblemError(
            404,
            "no model loaded: train one (netwarden train) or point the "
            "service at a model directory",
        )
    return ModelVersionPublic.from_version(replace(current, current=True))


# -- lifecycle: gate reports, promotion, rollback ---------------------------------------------


class GatedModelPublic(ModelVersionPublic):
    """A model version with the promotion gate's report of it (null for versions not made by
    retraining): the decision, its reasons, and both models' false alerts per identity-day
    and confirmed anomalies caught on the held-out windows."""

    model_config = ConfigDict(frozen=True)
    gate: dict[str, Any] | None = None


class SwitchRequest(BaseModel):
    """Why the model is switched (kept in the model folder's promotions.jsonl)."""

    model_config = ConfigDict(extra="forbid")
    reason: str = Field("", max_length=2000, description="why, for the record")


class RollbackRequest(SwitchRequest):
    version: str | None = Field(
        None, max_length=200, description="the version to go back to (default: the previous)"
    )


class SwitchPublic(BaseModel):
    """The result of a promotion or rollback: what is current now and what it replaced. The
    service scores with it from its next batch."""

    model_config = ConfigDict(frozen=True)
    current: str
    previous: str | None


def _lifecycle(state: Any) -> Any:
    """The service's model lifecycle members (a test state without them: 404)."""
    if not hasattr(state, "switch_model") or not hasattr(state, "model_gate"):
        raise ProblemError(404, "this service does not manage model versions")
    return state


def _gated(state: Any, v: Any, scoring: str | None) -> GatedModelPublic:
    base = ModelVersionPublic.from_version(replace(v, current=v.version == scoring))
    return GatedModelPublic(**base.model_dump(), gate=state.model_gate(v.version))


@router.get("/candidate", response_model=GatedModelPublic, responses=problem_responses(404))
def read_candidate(state: StateDep) -> GatedModelPublic:
    """The newest version that is not scoring (a retrained candidate), with its gate report;
    404 when the newest version is the one scoring."""
    lifecycle = _lifecycle(state)
    scoring = state.current_model()
    name = scoring.version if scoring is not None else None
    versions = sorted(state.model_versions(), key=lambda v: (v.created, v.version), reverse=True)
    if not versions or versions[0].version == name:
        raise ProblemError(404, "no candidate: the newest version is the one scoring")
    return _gated(lifecycle, versions[0], name)


@router.get("/{version}", response_model=GatedModelPublic, responses=problem_responses(404, 422))
def read_model(version: str, state: StateDep) -> GatedModelPublic:
    """One version with its promotion gate report."""
    lifecycle = _lifecycle(state)
    scoring = state.current_model()
    for v in state.model_versions():
        if v.version == version:
            return _gated(lifecycle, v, scoring.version if scoring is not None else None)
    raise ProblemError(404, f"no model version {version!r}")


@router.post(
    "/{version}/promote", response_model=SwitchPublic, responses=problem_responses(404, 409, 422)
)
def promote_model(
    version: str,
    state: StateDep,
    token: AdminDep,
    body: Annotated[SwitchRequest | None, Body()] = None,
) -> SwitchPublic:
    """Make a version current, whatever its gate said (admin); atomic, and scoring goes on."""
    lifecycle = _lifecycle(state)
    if not any(v.version == version for v in state.model_versions()):
        raise ProblemError(404, f"no model version {version!r}")
    reason = body.reason if body is not None else ""
    try:
        previous, current = lifecycle.switch_model(
            version, action="promote", actor=token.name, reason=reason
        )
    except ValueError as exc:
        raise ProblemError(409, str(exc)) from None
    return SwitchPublic(current=current, previous=previous)


@router.post("/rollback", response_model=SwitchPublic, responses=problem_responses(404, 409, 422))
def rollback_model(
    state: StateDep,
    token: AdminDep,
    body: Annotated[RollbackRequest | None, Body()] = None,
) -> SwitchPublic:
    """Go back to the previous version (or a named one) (admin); atomic, scoring goes on."""
    lifecycle = _lifecycle(state)
    version = body.version if body is not None else None
    reason = body.reason if body is not None else ""
    try:
        previous, current = lifecycle.switch_model(
            version, action="rollback", actor=token.name, reason=reason
        )
    except ValueError as exc:
        raise ProblemError(409, str(exc)) from None
    return SwitchPublic(current=current, previous=previous)

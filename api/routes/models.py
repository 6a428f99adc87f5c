"""``/api/v1/models``: the saved model versions and the one scoring now.

``current`` means "scoring now", the version the service has loaded. A version's own
``current`` flag says which version the model folder's ``CURRENT`` file names, and the two
differ whenever a new version was written but not (yet) loaded: between ``netwarden train`` and
the service's next reload, or for good when the service refused it (another window length, a
tampered file). The model that scores was then listed as ``current: false``.
"""

from __future__ import annotations

from dataclasses import replace

from fastapi import APIRouter

from netwarden.api.deps import StateDep
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

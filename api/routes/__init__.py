"""The API's routers, one module per resource, and :data:`api_router`, which groups those served
under ``/api/v1``: every route there needs at least a viewer's token (a router-level
dependency; routes that need more declare their role too). The probes and metrics of
:mod:`.health` answer without a token and are mounted apart, at the root, by
:func:`netwarden.api.app.create_app`."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from netwarden.api.deps import require_viewer
from netwarden.api.routes import (
    anomalies,
    changes,
    drift,
    identities,
    incidents,
    models,
    pictures,
    proposals,
)

__all__ = ["api_router"]

api_router = APIRouter(dependencies=[Depends(require_viewer)])
for _resource in (anomalies, changes, identities, drift, pictures, incidents, models, proposals):
    api_router.include_router(_resource.router)

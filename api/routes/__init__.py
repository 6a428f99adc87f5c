"""The API's routers, one per resource, and what they share: the service they read and the
links between pages. :func:`netwarden.api.app.create_app` mounts the routers."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import Depends, Request

from netwarden.api.state import ServiceState
from netwarden.detector.store import AnomalyStore

__all__ = ["ServiceDep", "StoreDep", "next_page"]


def get_service(request: Request) -> ServiceState:
    """The running service this app was created for (``create_app(state, ...)``)."""
    service: ServiceState = request.app.state.service
    return service


def get_store(service: Annotated[ServiceState, Depends(get_service)]) -> AnomalyStore:
    return service.store


ServiceDep = Annotated[ServiceState, Depends(get_service)]
StoreDep = Annotated[AnomalyStore, Depends(get_store)]


def next_page(
    request: Request, *, limit: int, offset: int, returned: int, total: int
) -> str | None:
    """The URL of the page after this one (same filters), or None on the last page.

    Relative (path and query) unless the app was created with a ``public_url``, which then
    prefixes it: behind a proxy, the Host the app sees is not the one clients use.
    """
    if returned == 0 or offset + returned >= total:
        return None
    query = [(k, v) for k, v in request.query_params.multi_items() if k not in ("limit", "offset")]
    query += [("limit", str(limit)), ("offset", str(offset + returned))]
    public_url: str | None = request.app.state.public_url
    base = public_url.rstrip("/") if public_url else ""
    return f"{base}{request.url.path}?{urlencode(query)}"

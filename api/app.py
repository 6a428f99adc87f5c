"""The HTTP API: one FastAPI app per running service.

``create_app(state, tokens)`` mounts one router per resource under ``/api/v1`` (anomalies,
changes, identities, models, proposals), the probes and ``/metrics`` at the root, the OpenAPI document at
``/openapi.json`` and its interactive docs, served offline, at ``/docs`` and ``/redoc``
(:mod:`netwarden.api.docs`). Every path but the probes, metrics and the docs pages needs a
bearer token (see :mod:`netwarden.api.auth`), the OpenAPI document included, and so does
learning that a path does not exist: without a valid token an unknown path is a 401 like any
other. :class:`~netwarden.api.guard.RequestGuard`, in front of the app, checks the token before
anything reads the body, and bounds the body (``max_body_bytes``, a 413 past it). Errors are
RFC 9457 problems (:mod:`netwarden.api.problems`).

The app holds no global state: the service, the tokens and the public URL live on
``app.state`` of the app that was created with them (:func:`netwarden.api.deps.bind`; the
routes read them through the dependencies of :mod:`netwarden.api.deps`), so tests build as
many apps as they like.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from netwarden import __version__
from netwarden.api.auth import TokenTable
from netwarden.api.deps import bind, require_viewer
from netwarden.api.docs import is_docs_path
from netwarden.api.docs import router as docs_router
from netwarden.api.guard import DEFAULT_MAX_BODY_BYTES, RequestGuard
from netwarden.api.listing_cache import ListingCache, WritesInvalidate
from netwarden.api.problems import install_problem_handlers, use_problem_media_type
from netwarden.api.routes import api_router, health
from netwarden.api.state import ServiceState

__all__ = ["API_PREFIX", "DEFAULT_MAX_BODY_BYTES", "create_app", "is_public"]

API_PREFIX: Final = "/api/v1"
_DESCRIPTION: Final = (
    "Network anomaly detection for Kubernetes: anomalies with their explanation and lifecycle, "
    "changes (ordinary-looking new traffic) to accept or reject, the identities scored, and the "
    "models scoring them. Authenticate with `Authorization: Bearer <token>`; roles: viewer "
    "(read), operator (also acknowledge, suppress, resolve anomalies; accept, reject changes), "
    "reviewer (also propose, approve and reject policies), admin (also apply and roll back "
    "policies). Errors are RFC 9457 problem documents. In these docs, the page asks for a token "
    "first; Authorize switches to another one."
)


def is_public(path: str) -> bool:
    """Whether ``path`` answers without a token: the probes, metrics and the docs pages."""
    return path in health.PUBLIC_PATHS or is_docs_path(path)


def _operation_id(route: APIRoute) -> str:
    """``<tag>-<name>``, e.g. ``anomalies-read_anomalies``: stable names for generated clients."""
    return f"{route.tags[0]}-{route.name}" if route.tags else route.name


def _checked_public_url(public_url: str | None) -> str | None:
    if public_url is None:
        return None
    parts = urlsplit(public_url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(
            f"public_url must be an absolute http(s) URL without query or "
            f"fragment, e.g. https://netwarden.example.com, got {public_url!r}"
        )
    return public_url.rstrip("/")


def create_app(
    state: ServiceState,
    tokens: TokenTable,
    *,
    public_url: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    listing_cache_seconds: float = 0.0,
) -> FastAPI:
    """The API of the service ``state``, for the callers in ``tokens``.

    ``public_url`` is where clients reach the API (scheme, host and any path prefix of a
    proxy); when given, ``next`` links are absolute URLs under it and the OpenAPI document
    names it as the server. A request body over ``max_body_bytes`` is refused with a 413.
    A listing asked for again within ``listing_cache_seconds`` is answered from memory (see
    :mod:`netwarden.api.listing_cache`; 0: never).
    """
    public_url = _checked_public_url(public_url)
    if max_body_bytes < 1:  # checked now: the middleware is built on the first request
        raise ValueError(f"max_body_bytes must be positive, got {max_body_bytes}")
    app = FastAPI(
        title="netwarden",
        version=__version__,
        description=_DESCRIPTION,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        generate_unique_id_function=_operation_id,
    )
    cache = ListingCache(listing_cache_seconds)
    bind(app, state, tokens, public_url, cache)
    app.add_middleware(WritesInvalidate, cache=cache)
    app.add_middleware(
        RequestGuard, tokens=tokens, is_public=is_public, max_body_bytes=max_body_bytes
    )
    install_problem_handlers(app)
    app.include_router(health.router)
    app.include_router(docs_router)
    app.include_router(api_router, prefix=API_PREFIX)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
                servers=[{"url": public_url}] if public_url else None,
            )
            app.openapi_schema = use_problem_media_type(document)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get(
        "/openapi.json",
        include_in_schema=False,
        tags=["meta"],
        dependencies=[Depends(require_viewer)],
    )
    def openapi_document() -> JSONResponse:
        return JSONResponse(app.openapi())

    return app

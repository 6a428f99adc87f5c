"""Every error the API returns is an RFC 9457 problem (``application/problem+json``).

Handlers raise :class:`ProblemError`; the handlers installed by :func:`install_problem_handlers`
turn it, request validation errors, routing errors (unknown path, wrong method) and unexpected
exceptions into problem documents with ``type``, ``title``, ``status``, ``detail`` and
``instance``. Generic HTTP errors use ``type`` ``about:blank`` (their title is the HTTP reason
phrase, as RFC 9457 §4.2.1 asks); errors specific to netwarden have a stable ``urn:netwarden:
problem:<name>`` type that clients can switch on. A 500 says nothing about its cause: the
traceback goes to the server log (Starlette re-raises it to the ASGI server after the response).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from netwarden.api.schemas import ProblemPublic

__all__ = [
    "BLANK",
    "PROBLEM_MEDIA_TYPE",
    "ProblemError",
    "install_problem_handlers",
    "problem_response",
    "problem_responses",
    "problem_type",
    "use_problem_media_type",
]

PROBLEM_MEDIA_TYPE: Final = "application/problem+json"
BLANK: Final = "about:blank"


def problem_type(name: str) -> str:
    """The ``type`` URI of a netwarden-specific problem, e.g. ``lifecycle-conflict``."""
    return f"urn:netwarden:problem:{name}"


class ProblemError(Exception):
    """Raised by a handler or dependency to answer with a problem document.

    ``extensions`` become extra members of the document (RFC 9457 §3.2), e.g. the state an
    anomaly is in when an action conflicts with it.
    """

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        type: str = BLANK,
        title: str | None = None,
        headers: Mapping[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.type = type
        self.title = title or HTTPStatus(status).phrase
        self.headers = dict(headers or {})
        self.extensions = extensions


def problem_response(
    request: Request,
    status: int,
    detail: str,
    *,
    type: str = BLANK,
    title: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    """The problem document for ``request`` as a response (``instance`` is the request path)."""
    body = {
        "type": type,
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        **extensions,
    }
    return JSONResponse(
        body, status_code=status, headers=dict(headers or {}), media_type=PROBLEM_MEDIA_TYPE
    )


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    """Pydantic's errors without the rejected input (it may be long, or a secret) or doc URLs."""
    return [
        {
            "loc": [str(part) for part in e.get("loc", ())],
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in exc.errors()
    ]


def install_problem_handlers(
    app: FastAPI, *, on_routing_error: Callable[[Request, int], JSONResponse | None] | None = None
) -> None:
    """Answer every error of ``app`` with a problem document.

    ``on_routing_error(request, status)`` may replace the answer to an unknown path or method
    (404/405 raised by the router, never by a handler) and to a request that fails validation
    (422: FastAPI validates a body before it runs the auth dependency): the app uses it so that
    a request without a valid token learns nothing about which paths exist or what they take.
    """

    async def problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ProblemError)
        return problem_response(
            request,
            exc.status,
            exc.detail,
            type=exc.type,
            title=exc.title,
            headers=exc.headers,
            **exc.extensions,
        )

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if on_routing_error is not None and exc.status_code in (404, 405):
            replaced = on_routing_error(request, exc.status_code)
            if replaced is not None:
                return replaced
        detail = {
            404: f"no resource at {request.url.path}",
            405: f"{request.method} is not allowed on {request.url.path}",
        }.get(exc.status_code, str(exc.detail))
        return problem_response(request, exc.status_code, detail, headers=exc.headers)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        if on_routing_error is not None:
            replaced = on_routing_error(request, 422)
            if replaced is not None:
                return replaced
        errors = _validation_errors(exc)
        where = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors)
        return problem_response(
            request,
            422,
            f"invalid request: {where}",
            type=problem_type("validation-error"),
            title="Request validation failed",
            errors=errors,
        )

    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        return problem_response(
            request, 500, "the server failed to answer this request; its log has the details"
        )

    app.add_exception_handler(ProblemError, problem)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, internal_error)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for these error statuses, all with the problem schema."""
    return {
        status: {"model": ProblemPublic, "description": HTTPStatus(status).phrase}
        for status in statuses
    }


def use_problem_media_type(openapi: dict[str, Any]) -> dict[str, Any]:
    """Document error responses as ``application/problem+json`` (FastAPI writes every
    response model as ``application/json``); changes and returns ``openapi``."""
    for path in openapi.get("paths", {}).values():
        for operation in path.values():
            for status, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                if str(status)[:1] in "45" and "application/json" in content:
                    content[PROBLEM_MEDIA_TYPE] = content.pop("application/json")
    return openapi

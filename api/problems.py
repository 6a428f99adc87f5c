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

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from http import HTTPStatus
from typing import Any, Final, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from netwarden.api.schemas import ProblemPublic

__all__ = [
    "BLANK",
    "PROBLEM_MEDIA_TYPE",
    "ProblemError",
    "allowed_methods",
    "found",
    "install_problem_handlers",
    "problem_response",
    "problem_responses",
    "problem_type",
    "route_path",
    "store_refusals",
    "use_problem_media_type",
]

PROBLEM_MEDIA_TYPE: Final = "application/problem+json"
BLANK: Final = "about:blank"
RecordT = TypeVar("RecordT")


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


def found(record: RecordT | None, kind: str, record_id: int) -> RecordT:
    """``record``, or a 404 problem (``no <kind> with id <record_id>``) when there is none."""
    if record is None:
        raise ProblemError(404, f"no {kind} with id {record_id}")
    return record


def _validation_failed(detail: str, errors: list[dict[str, Any]]) -> ProblemError:
    """A 422 listing ``errors`` (``loc``, ``msg``, ``type`` each, as Pydantic reports them)."""
    return ProblemError(
        422,
        detail,
        type=problem_type("validation-error"),
        title="Request validation failed",
        errors=errors,
    )


@contextmanager
def store_refusals(not_found: type[Exception], conflict: type[Exception]) -> Iterator[None]:
    """A store's refusals as problems: ``not_found`` (its message names the record) a 404,
    ``conflict`` (an action the record's state does not allow; it has ``state`` and ``action``)
    a 409 naming both, any other ValueError a 422 (``conflict`` first: it is a ValueError too).
    """
    try:
        yield
    except not_found as exc:
        raise ProblemError(404, str(exc)) from None
    except conflict as exc:
        raise ProblemError(
            409,
            str(exc),
            type=problem_type("lifecycle-conflict"),
            title="Lifecycle conflict",
            state=getattr(exc, "state", None),
            action=getattr(exc, "action", None),
        ) from None
    except ValueError as exc:  # a body the store refused although it passed the request model
        errors = [{"loc": ["body"], "msg": str(exc), "type": "value_error"}]
        raise _validation_failed(str(exc), errors) from None


def problem_response(request: Request, problem: ProblemError) -> JSONResponse:
    """The document of ``problem`` as the response to ``request`` (``instance`` is its path)."""
    body = {
        "type": problem.type,
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
        "instance": request.url.path,
        **problem.extensions,
    }
    return JSONResponse(
        body, status_code=problem.status, headers=problem.headers, media_type=PROBLEM_MEDIA_TYPE
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


def route_path(scope: Mapping[str, Any]) -> str:
    """The request's path as routes see it: without the ``root_path`` a proxy mounted the app
    under."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        return path[len(root) :] or "/"
    return path


@cache
def _path_pattern(path: str) -> re.Pattern[str]:
    return compile_path(path)[0]


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """Every method some route of ``app`` serves at ``path``, sorted (a 405's ``Allow``).

    Starlette's router names the methods of the first route that matches the path only, so a
    path served by a GET route and a POST route would answer ``Allow: GET``.
    """
    methods: set[str] = set()
    for route in iter_route_contexts(app.routes):
        if route.path and route.methods and _path_pattern(route.path).match(path):
            methods |= route.methods
    return sorted(methods)


def install_problem_handlers(app: FastAPI) -> None:
    """Answer every error of ``app`` with a problem document (a 405 with the ``Allow`` header
    of every method the path takes).

    Requests without a valid token never get here on paths that need one: the app's
    :class:`~netwarden.api.guard.RequestGuard` answered them first, so a 404, 405 or 422 tells
    only a caller with a token which paths exist and what they take.
    """

    async def problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ProblemError)
        return problem_response(request, exc)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        detail = {
            404: f"no resource at {request.url.path}",
            405: f"{request.method} is not allowed on {request.url.path}",
        }.get(exc.status_code, str(exc.detail))
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request.app, route_path(request.scope)))
        return problem_response(request, ProblemError(exc.status_code, detail, headers=headers))

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = _validation_errors(exc)
        where = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors)
        return problem_response(request, _validation_failed(f"invalid request: {where}", errors))

    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        detail = "the server failed to answer this request; its log has the details"
        return problem_response(request, ProblemError(500, detail))

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

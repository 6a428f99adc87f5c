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

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from http import HTTPStatus
from typing import Any, Final, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from netwarden.api.schemas import ProblemPublic

__all__ = [
    "BLANK",
    "PROBLEM_MEDIA_TYPE",
    "ProblemError",
    "found",
    "install_problem_handlers",
    "problem_response",
    "problem_responses",
    "problem_type",
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


def install_problem_handlers(
    app: FastAPI, *, on_routing_error: Callable[[Request, int], ProblemError | None] | None = None
) -> None:
    """Answer every error of ``app`` with a problem document.

    ``on_routing_error(request, status)`` may return the problem to answer instead of the one
    for an unknown path or method (404/405 raised by the router, never by a handler) or for a
    request that fails validation (422: FastAPI validates a body before it runs the auth
    dependency): the app uses it so that a request without a valid token learns nothing about
    which paths exist or what they take.
    """

    def routed(request: Request, status: int, problem: ProblemError) -> JSONResponse:
        """``problem``, unless ``on_routing_error`` replaces it."""
        replaced = on_routing_error(request, status) if on_routing_error is not None else None
        return problem_response(request, replaced or problem)

    async def problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ProblemError)
        return problem_response(request, exc)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        detail = {
            404: f"no resource at {request.url.path}",
            405: f"{request.method} is not allowed on {request.url.path}",
        }.get(exc.status_code, str(exc.detail))
        problem = ProblemError(exc.status_code, detail, headers=exc.headers)
        if exc.status_code in (404, 405):
            return routed(request, exc.status_code, problem)
        return problem_response(request, problem)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = _validation_errors(exc)
        where = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors)
        return routed(request, 422, _validation_failed(f"invalid request: {where}", errors))

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

"""The gate in front of the app: the bearer token first, then the body's size, then the app.

FastAPI reads and parses a request's body before it runs the dependencies that check the token,
so without this gate anyone could make the service read and parse a body of any size: a 50 MB
JSON array of objects took the process from 0.3 to 1.7 GB before it answered 401.
:class:`RequestGuard` is plain ASGI and looks at the headers only:

- every path but the public ones (probes, metrics, the docs pages and their assets) needs a
  valid bearer token: without one the answer is a 401 problem, and ``receive`` is never called,
  so not one byte of the body is read (the ASGI server does not even send ``100 Continue``);
- then the body may be at most ``max_body_bytes``: a ``Content-Length`` above it is a 413 at
  once; a body without one (chunked) is counted as it arrives and refused with a 413 as soon as
  it passes the limit. The body is then handed to the app as it was received.

Roles (403) stay dependencies of the routes (:mod:`netwarden.api.deps`): they depend on the
route, which only the app knows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from netwarden.api.auth import TokenTable
from netwarden.api.deps import authenticate
from netwarden.api.problems import ProblemError, problem_response, problem_type, route_path

__all__ = ["DEFAULT_MAX_BODY_BYTES", "RequestGuard", "body_too_large"]

#: The largest request body by default: 1 MiB. The largest body the API takes is a proposal
#: carrying a CiliumNetworkPolicy, and Kubernetes refuses objects much past that anyway (etcd's
#: default request limit is 1.5 MiB); netwarden's own policies are a few KiB.
DEFAULT_MAX_BODY_BYTES: Final = 1024 * 1024


def body_too_large(limit: int) -> ProblemError:
    """The 413 of a body over ``limit`` bytes."""
    return ProblemError(
        413,
        f"the request body is larger than this server accepts ({limit} bytes; api.max_body_bytes)",
        type=problem_type("body-too-large"),
        title="Content Too Large",
        limit=limit,
    )


class RequestGuard:
    """Authenticate, then bound the body, before ``app`` sees the request (see the module)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        tokens: TokenTable,
        is_public: Callable[[str], bool],
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        if max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be positive, got {max_body_bytes}")
        self.app = app
        self.tokens = tokens
        self.is_public = is_public
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)  # headers and path only: it is given no receive to read with
        try:
            if not self.is_public(route_path(scope)):
                authenticate(self.tokens, request.headers.get("authorization", ""))
            declared = _content_length(request)
            if declared is not None and declared > self.max_body_bytes:
                raise body_too_large(self.max_body_bytes)
            body = await self._read_body(receive)
        except ProblemError as problem:
            await problem_response(request, problem)(scope, _never_read, send)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read_body(self, receive: Receive) -> list[Message]:
        """The body's messages, up to the limit (a 413 problem past it)."""
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return messages  # the client went away: the app will see the disconnect
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:
                raise body_too_large(self.max_body_bytes)
            if not message.get("more_body", False):
                return messages


def _content_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None  # the ASGI server frames the body; count it as it comes


async def _never_read() -> Message:
    raise AssertionError("a refused request's body is never read")


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A ``receive`` that hands out ``messages`` first, then waits on the real one (for the
    disconnect)."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed

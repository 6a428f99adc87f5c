"""The one error the client raises: the API's problem document, or why there was none."""

from __future__ import annotations

from typing import Any

__all__ = ["ClientError"]


class ClientError(Exception):
    """A request the API refused or could not answer.

    ``status`` is the HTTP status (0 when no response came: connection refused, timeout),
    ``detail`` the problem's explanation, ``problem`` the whole RFC 9457 document (empty when
    the body was not one), ``url`` the request's URL.
    """

    def __init__(
        self, status: int, detail: str, *, url: str = "", problem: dict[str, Any] | None = None
    ) -> None:
        self.status = status
        self.detail = detail
        self.url = url
        self.problem = dict(problem or {})
        self.title = str(self.problem.get("title", ""))
        where = f" ({url})" if url else ""
        head = (
            f"HTTP {status}" + (f" {self.title}" if self.title else "") if status else "no answer"
        )
        super().__init__(f"{head}: {detail}{where}")

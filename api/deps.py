"""The routes' dependencies, as ``Annotated`` aliases a handler declares by type.

:func:`bind` keeps on ``app.state`` what :func:`netwarden.api.app.create_app` was given (the
service, the tokens, the public URL); everything else reads it from there through this module,
so no handler looks at ``app.state`` and each app has its own service and tokens:

- the service and what it holds: :data:`StateDep`, :data:`StoreDep`, :data:`ReviewDep` (policy
  review: the proposal store, the optional applier and flow history, the claims' grace period),
  :data:`ChangesDep` (the change store, and the window length rejected changes are recorded
  with);
- the caller: :data:`CurrentToken` (a 401 problem without a valid bearer token) and the role
  checks :data:`ViewerDep` ... :data:`AdminDep` (a 403 below the role; roles form one ladder, see
  :class:`~netwarden.api.auth.Role`). Routers that need a role for every route take
  ``dependencies=[Depends(require_viewer)]``; a handler that also needs the token's name (the
  actor recorded) declares the alias, which FastAPI runs once per request either way;
- :data:`PagerDep`: pages of a list with their ``next`` links.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Final, Protocol, TypeVar
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from netwarden.api.auth import Role, TokenEntry, TokenTable
from netwarden.api.listing_cache import ListingCache
from netwarden.api.problems import ProblemError
from netwarden.api.state import ServiceState
from netwarden.detector.change_store import ChangeStore
from netwarden.detector.store import AnomalyStore
from netwarden.remediation.apply import PolicyApplier
from netwarden.remediation.proposals import DEFAULT_CLAIM_GRACE_SECONDS, ProposalStore

__all__ = [
    "BEARER_CHALLENGE",
    "AdminDep",
    "Changes",
    "ChangesDep",
    "CurrentToken",
    "OperatorDep",
    "Pager",
    "PagerDep",
    "RequireRole",
    "Review",
    "ReviewDep",
    "ReviewerDep",
    "StateDep",
    "StoreDep",
    "ViewerDep",
    "authenticate",
    "bind",
    "invalid_token",
    "missing_token",
    "require_admin",
    "require_operator",
    "require_reviewer",
    "require_viewer",
]

BEARER_CHALLENGE: Final = 'Bearer realm="netwarden"'

# ------------------------------------------------------------------------------ app state


def bind(
    app: FastAPI,
    state: ServiceState,
    tokens: TokenTable,
    public_url: str | None,
    listing_cache: ListingCache | None = None,
) -> None:
    """Keep on ``app`` what its dependencies read."""
    app.state.service = state
    app.state.listing_cache = listing_cache if listing_cache is not None else ListingCache(0)
    app.state.tokens = tokens
    app.state.public_url = public_url
    # proposal and change stores opened for a service without its own (see get_review)
    app.state.proposal_stores = {}
    app.state.change_stores = {}


def get_state(request: Request) -> ServiceState:
    """The running service this app was created for (``create_app(state, ...)``)."""
    state: ServiceState = request.app.state.service
    return state


StateDep = Annotated[ServiceState, Depends(get_state)]


def get_store(state: StateDep) -> AnomalyStore:
    return state.store


StoreDep = Annotated[AnomalyStore, Depends(get_store)]

# ----------------------------------------------------------------------------- the caller

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="A netwarden API token: `Authorization: Bearer <token>`.",
)


def _tokens(request: Request) -> TokenTable:
    table = request.app.state.tokens
    assert isinstance(table, TokenTable)
    return table


def missing_token() -> ProblemError:
    """The 401 of a request without a bearer token."""
    return ProblemError(
        401,
        "this endpoint needs a bearer token (Authorization: Bearer <token>)",
        headers={"WWW-Authenticate": BEARER_CHALLENGE},
    )


def invalid_token() -> ProblemError:
    """The 401 of a request whose bearer token is not configured (RFC 6750 §3.1)."""
    return ProblemError(
        401,
        "the bearer token is not valid",
        headers={"WWW-Authenticate": f'{BEARER_CHALLENGE}, error="invalid_token"'},
    )


def authenticate(tokens: TokenTable, authorization: str) -> TokenEntry:
    """The entry of the bearer token in an ``Authorization`` header value; a 401 problem
    (:func:`missing_token`, :func:`invalid_token`) otherwise. Reads nothing but the header, so
    :class:`netwarden.api.guard.RequestGuard` calls it before any body is read."""
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise missing_token()
    entry = tokens.authenticate(credentials.strip())
    if entry is None:
        raise invalid_token()
    return entry


def current_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> TokenEntry:
    """The caller's token entry; a 401 problem without a valid bearer token. The app's
    :class:`~netwarden.api.guard.RequestGuard` has refused such requests already; this also
    declares the bearer scheme in the OpenAPI document (``credentials``)."""
    if credentials is None:
        raise missing_token()
    return authenticate(_tokens(request), request.headers.get("authorization", ""))


CurrentToken = Annotated[TokenEntry, Depends(current_token)]


class RequireRole:
    """A dependency that lets a token through when its role is at least ``role``; 403 if not."""

    def __init__(self, role: Role) -> None:
        self.role = role

    def __call__(self, token: CurrentToken) -> TokenEntry:
        if token.role < self.role:
            raise ProblemError(
                403,
                f"token {token.name!r} has role {token.role.name}; this "
                f"needs {self.role.name} or higher",
            )
        return token

    def __repr__(self) -> str:
        return f"RequireRole({self.role.name})"


# one instance per role: FastAPI runs a dependency once per request, keyed by the callable
require_viewer = RequireRole(Role.viewer)
require_operator = RequireRole(Role.operator)
require_reviewer = RequireRole(Role.reviewer)
require_admin = RequireRole(Role.admin)

ViewerDep = Annotated[TokenEntry, Depends(require_viewer)]
OperatorDep = Annotated[TokenEntry, Depends(require_operator)]
ReviewerDep = Annotated[TokenEntry, Depends(require_reviewer)]
AdminDep = Annotated[TokenEntry, Depends(require_admin)]

# ---------------------------------------------------------------------------- policy review

_FALLBACK_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class Review:
    """Policy review's side of the service (see :class:`~netwarden.api.state.ReviewState`):
    its proposal store, and its applier and flow history, read only when a route needs them
    (the flow history is a copy of many flows)."""

    state: ServiceState
    proposals: ProposalStore

    def applier(self) -> PolicyApplier | None:
        """The service's applier, or None when it has none."""
        get = getattr(self.state, "policy_applier", None)
        return get() if callable(get) else None

    def recent_flows(self) -> Iterable[Any] | None:
        """The service's recent flows, or None when it keeps no flow history."""
        get = getattr(self.state, "recent_flows", None)
        return get() if callable(get) else None

    def claim_grace_seconds(self) -> float:
        """How old a claim must be before recover finishes it: the service's
        ``remediation.claim_grace_seconds``, or the default for a service without one."""
        remediation = getattr(getattr(self.state, "config", None), "remediation", None)
        value = getattr(remediation, "claim_grace_seconds", None)
        return float(value) if value is not None else DEFAULT_CLAIM_GRACE_SECONDS

    def containment_inputs(self, before: datetime) -> dict[str, Any]:
        """What the service builds containments from (normal edges, recent flows, labels) for
        an anomaly whose first window starts at ``before``; empty when it has none (then a
        containment is built from the anomaly's examples)."""
        get = getattr(self.state, "containment_inputs", None)
        return get(before) if callable(get) else {}


def get_review(request: Request, state: StateDep) -> Review:
    """The service's proposal store or, without one, one on its anomaly store's database,
    opened once and kept on the app."""
    proposals: ProposalStore | None = getattr(state, "proposal_store", None)
    if proposals is None:
        opened: dict[str, ProposalStore] = request.app.state.proposal_stores
        url = state.store.url
        with _FALLBACK_LOCK:  # requests run on a thread pool: open it once
            if url not in opened:
                opened[url] = ProposalStore(url)
            proposals = opened[url]
    return Review(state, proposals)


ReviewDep = Annotated[Review, Depends(get_review)]

# --------------------------------------------------------------------------------- changes


@dataclass(frozen=True, slots=True)
class Changes:
    """The change side of the service: its change store (whose decisions its pipeline
    applies) and policy review (amendments are proposals)."""

    review: Review
    store: ChangeStore

    def window_seconds(self) -> float:
        """The service's window length (``windows.seconds``; 60 for a service without one)."""
        windows = getattr(getattr(self.review.state, "config", None), "windows", None)
        value = getattr(windows, "seconds", None)
        return float(value) if value is not None else 60.0


def get_changes(request: Request, state: StateDep, review: ReviewDep) -> Changes:
    """The service's change store or, without one, one on its anomaly store's database, opened
    once and kept on the app (its decisions then wait for a pipeline reading that database)."""
    store: ChangeStore | None = getattr(state, "change_store", None)
    if store is None:
        opened: dict[str, ChangeStore] = request.app.state.change_stores
        url = state.store.url
        with _FALLBACK_LOCK:
            if url not in opened:
                opened[url] = ChangeStore(url)
            store = opened[url]
    return Changes(review, store)


ChangesDep = Annotated[Changes, Depends(get_changes)]

# ---------------------------------------------------------------------------------- pages

PageT = TypeVar("PageT", bound=BaseModel)


class PageQuery(Protocol):
    """The page a list query asks for."""

    @property
    def limit(self) -> int: ...

    @property
    def offset(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Pager:
    """Builds the pages of one list request, with the link to the page after."""

    request: Request

    def page(
        self,
        model: type[PageT],
        fetch: Callable[[], tuple[Sequence[Any], int]],
        *,
        query: PageQuery,
    ) -> Response:
        """The ``model`` page, in JSON, of the items and total ``fetch()`` reads for ``query``
        (the same request again within the app's
        :class:`~netwarden.api.listing_cache.ListingCache` time to live is answered without
        reading). The page is
        validated as it is built, so it leaves as it is: FastAPI would validate it again on a
        second worker thread and encode it once more. The route's ``response_model`` still
        documents it."""

        def build() -> bytes:
            items, total = fetch()
            return (
                model(
                    items=items,
                    total=total,
                    limit=query.limit,
                    offset=query.offset,
                    next=self.next(query, returned=len(items), total=total),
                )
                .model_dump_json()
                .encode()
            )

        cache: ListingCache = self.request.app.state.listing_cache
        key = f"{self.request.url.path}?{self.request.url.query}"
        return Response(cache.answer(key, build), media_type="application/json")

    def next(self, query: PageQuery, *, returned: int, total: int) -> str | None:
        """The URL of the page after this one (same filters), or None on the last page.

        Relative (path and query) unless the app was created with a ``public_url``, which
        then prefixes it: behind a proxy, the Host the app sees is not the one clients use.
        """
        if returned == 0 or query.offset + returned >= total:
            return None
        params = [
            (k, v)
            for k, v in self.request.query_params.multi_items()
            if k not in ("limit", "offset")
        ]
        params += [("limit", str(query.limit)), ("offset", str(query.offset + returned))]
        public_url: str | None = self.request.app.state.public_url
        base = public_url.rstrip("/") if public_url else ""
        return f"{base}{self.request.url.path}?{urlencode(params)}"


def get_pager(request: Request) -> Pager:
    return Pager(request)


PagerDep = Annotated[Pager, Depends(get_pager)]

""":class:`Client`: netwarden's HTTP API (``/api/v1``) as pandas DataFrames.

Lists are read page by page (``next`` links, the API's largest page) until the end or ``max_rows``;
an identity's windows, which the API returns newest first up to a limit, are read back in time
the same way. Times are UTC ``Timestamp`` columns, rows come oldest first where they are a time
series (windows) and as the API orders them otherwise (newest first).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, Final

import httpx
import pandas as pd

from netwarden.client.errors import ClientError

__all__ = ["API_PREFIX", "Client"]

API_PREFIX: Final = "/api/v1"
#: The API's largest page (netwarden.api.schemas.MAX_PAGE; windows allow more): fewest round
#: trips.
_PAGE: Final = 500
#: Columns holding times, wherever they appear.
_TIMES: Final = frozenset(
    {
        "first_window_start",
        "last_window_end",
        "peak_window_start",
        "window_start",
        "window_end",
        "created_at",
        "updated_at",
        "suppressed_until",
        "decided_at",
        "first_seen",
        "last_seen",
        "created",
        "training_start",
        "training_end",
    }
)
Params = Mapping[str, Any]


def _frame(rows: list[dict[str, Any]], columns: list[str] | None = None) -> pd.DataFrame:
    """``rows`` as a DataFrame with time columns parsed (UTC); ``columns`` when empty."""
    frame = pd.DataFrame(rows) if rows else pd.DataFrame(columns=columns or [])
    for name in frame.columns.intersection(sorted(_TIMES)):
        frame[name] = pd.to_datetime(frame[name], utc=True, format="ISO8601")
    return frame


def _param(value: Any) -> Any:
    """A query parameter as the API reads it: RFC 3339 for times (naive ones are UTC)."""
    if isinstance(value, datetime):
        return (
            pd.Timestamp(value).tz_localize("UTC") if value.tzinfo is None else value
        ).isoformat()
    if isinstance(value, pd.Timestamp):
        return (value.tz_localize("UTC") if value.tzinfo is None else value).isoformat()
    return value


def _identity(identity: str) -> tuple[str, str]:
    namespace, sep, workload = identity.partition("/")
    if not sep or not namespace or not workload or "/" in workload:
        raise ValueError(f"identity must be namespace/workload, got {identity!r}")
    return namespace, workload


class Client:
    """The API at ``base_url`` (e.g. ``http://127.0.0.1:8080``), called with bearer ``token``.

    ``http`` is an httpx client to use instead of the client's own (a proxy, custom TLS, or an
    in-process app in tests); ``timeout`` is per request (of the client's own httpx client), in seconds; ``page_size`` is the
    items (and windows) asked for per request, at most the API's 500. Use it as a context
    manager, or call :meth:`close`, to release its connections.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        http: httpx.Client | None = None,
        page_size: int = _PAGE,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._headers = {"Accept": "application/json"}
        if token is not None and token.strip():
            self._headers["Authorization"] = f"Bearer {token.strip()}"
        self._own = http is None
        self._http = http if http is not None else httpx.Client(timeout=timeout)
        self._timeout = timeout
        if not 1 <= page_size <= _PAGE:
            raise ValueError(f"page_size must be in 1..{_PAGE}, got {page_size}")
        self._page = page_size

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections (only those of a client this object made)."""
        if self._own:
            self._http.close()

    # ------------------------------------------------------------------------ requests

    def _url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path  # a next link made absolute by the API's public_url
        if path.startswith((API_PREFIX, "/")):
            prefix = "" if path.startswith(API_PREFIX) else API_PREFIX
            return f"{self.base_url}{prefix}{path}"
        return f"{self.base_url}{API_PREFIX}/{path}"

    def _send(self, method: str, path: str, params: Params | None = None) -> httpx.Response:
        url = self._url(path)
        query = {k: _param(v) for k, v in (params or {}).items() if v is not None}
        try:
            # a client given to us keeps its own timeout
            extra = {"timeout": self._timeout} if self._own else {}
            response = self._http.request(
                method, url, params=query or None, headers=self._headers, **extra
            )
        except httpx.HTTPError as exc:
            raise ClientError(0, f"{type(exc).__name__}: {exc}", url=url) from exc
        if response.is_success:
            return response
        try:
            problem = response.json()
        except ValueError:
            problem = None
        if isinstance(problem, dict) and "detail" in problem:
            detail = str(problem["detail"])
            errors = problem.get("errors") or []
            if errors:
                detail += ": " + "; ".join(
                    f"{'.'.join(map(str, e.get('loc', [])))}: {e.get('msg', '')}" for e in errors
                )
            raise ClientError(response.status_code, detail, url=str(response.url), problem=problem)
        text = response.text.strip()[:200] or response.reason_phrase
        raise ClientError(response.status_code, text, url=str(response.url))

    def get_json(self, path: str, params: Params | None = None) -> Any:
        """GET ``path`` (relative to ``/api/v1``) as parsed JSON; :class:`ClientError` on an
        error. For anything the typed methods do not cover."""
        return self._send("GET", path, params).json()

    def _pages(self, path: str, params: Params, max_rows: int | None) -> Iterator[dict[str, Any]]:
        """Every item of a paged list, following ``next`` until the end or ``max_rows``."""
        page = self.get_json(path, {**params, "limit": self._page, "offset": 0})
        given = 0
        while True:
            for item in page["items"]:
                if max_rows is not None and given >= max_rows:
                    return
                given += 1
                yield item
            if not page.get("next") or not page["items"]:
                return
            page = self._send("GET", page["next"]).json()  # the link carries the filters

    def _list(
        self, path: str, params: Params, max_rows: int | None, columns: list[str]
    ) -> pd.DataFrame:
        return _frame(list(self._pages(path, params, max_rows)), columns)

    # ------------------------------------------------------------------------ resources

    def anomalies(
        self,
        *,
        identity: str | None = None,
        namespace: str | None = None,
        state: str | None = None,
        severity: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        max_rows: int | None = None,
    ) -> pd.DataFrame:
        """Anomalies matching every filter given, most recent first (one row each)."""
        params = {
            "identity": identity,
            "namespace": namespace,
            "state": state,
            "severity": severity,
            "since": since,
            "until": until,
        }
        return self._list("anomalies", params, max_rows, ["id", "identity", "peak_score"])

    def anomaly(self, anomaly_id: int) -> dict[str, Any]:
        """One anomaly with its reasons, example flows and audit trail (the API's JSON)."""
        return dict(self.get_json(f"anomalies/{int(anomaly_id)}"))

    def reasons(self, anomaly_id: int) -> pd.DataFrame:
        """The features that drove an anomaly's peak score, strongest first: feature, value,
        baseline, spread, contribution, text (what :func:`~netwarden.client.plots.
        contributions` draws)."""
        rows = self.anomaly(anomaly_id)["reasons"]
        cols = ["feature", "value", "baseline", "spread", "contribution", "text"]
        return _frame(rows, cols)

    def incidents(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        max_rows: int | None = None,
    ) -> pd.DataFrame:
        """Incidents (one attack, its attacker and victims), most recent first."""
        params = {"since": since, "until": until}
        return self._list("incidents", params, max_rows, ["id", "attacker", "victims"])

    def incident(self, incident_id: str) -> dict[str, Any]:
        """One incident with its anomalies (the API's JSON)."""
        return dict(self.get_json(f"incidents/{incident_id}"))

    def changes(
        self,
        *,
        status: str | None = None,
        identity: str | None = None,
        kind: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        max_rows: int | None = None,
    ) -> pd.DataFrame:
        """Changes (ordinary-looking new traffic waiting for review), most recently seen first."""
        params = {
            "status": status,
            "identity": identity,
            "kind": kind,
            "since": since,
            "until": until,
        }
        return self._list("changes", params, max_rows, ["id", "kind", "subject", "status"])

    def identities(self, *, namespace: str | None = None) -> pd.DataFrame:
        """Every scored identity (of ``namespace`` if given) with its latest score."""
        params = {"namespace": namespace}
        return self._list("identities", params, None, ["identity", "namespace", "workload"])

    def windows(
        self,
        identity: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        max_rows: int | None = 10_000,
    ) -> pd.DataFrame:
        """The scored windows of ``identity`` (``namespace/workload``) in ``[since, until)``,
        oldest first: window_start, window_end, score, threshold, anomalous, severity, model,
        fallback, reasons, summary. The latest ``max_rows`` (None: all) when there are more."""
        namespace, workload = _identity(identity)
        path = f"identities/{namespace}/{workload}/windows"
        rows: list[dict[str, Any]] = []
        end = until
        while max_rows is None or len(rows) < max_rows:
            want = self._page if max_rows is None else min(self._page, max_rows - len(rows))
            got = self.get_json(path, {"since": since, "until": end, "limit": want})["items"]
            rows.extend(got)
            if len(got) < want:
                break
            # the next request ends where this one's oldest window starts (windows overlapping
            # [since, end) are returned: the boundary window is not read twice)
            end = pd.Timestamp(got[-1]["window_start"]).to_pydatetime()
        cols = ["window_start", "window_end", "score", "threshold", "anomalous"]
        frame = _frame(rows, cols)
        if len(frame):
            frame = frame.drop_duplicates("window_start").sort_values("window_start")
        return frame.reset_index(drop=True)

    def score_png(
        self, identity: str, *, since: datetime | None = None, until: datetime | None = None
    ) -> bytes:
        """The identity's score-over-time picture, as the API serves it (PNG bytes)."""
        namespace, workload = _identity(identity)
        params = {"since": since, "until": until}
        return self._send("GET", f"identities/{namespace}/{workload}/score.png", params).content

    def models(self) -> pd.DataFrame:
        """Every saved model version, newest first; ``current`` marks the one scoring now."""
        rows = self.get_json("models")["items"]
        return _frame(rows, ["version", "created", "current", "rows", "models"])

    def proposals(
        self,
        *,
        identity: str | None = None,
        state: str | None = None,
        kind: str | None = None,
        max_rows: int | None = None,
    ) -> pd.DataFrame:
        """Policy proposals (baselines and containments), newest first."""
        params = {"identity": identity, "state": state, "kind": kind}
        return self._list("proposals", params, max_rows, ["id", "kind", "identity", "state"])

    def proposal(self, proposal_id: int) -> dict[str, Any]:
        """One proposal: its policy (JSON and YAML), diff and audit log (the API's JSON)."""
        return dict(self.get_json(f"proposals/{int(proposal_id)}"))

    def simulation(self, proposal_id: int) -> pd.DataFrame:
        """What the proposal would have dropped of the service's recent flows: one row per
        group of dropped flows (subject, direction, peer, port, rule, flows, connections).
        ``frame.attrs`` holds the totals (flows_seen, flows_judged, allowed, dropped, ...),
        the warnings and ``text``, the report as a person reads it."""
        report = self._send("POST", f"proposals/{int(proposal_id)}/simulate").json()
        cols = ["subject", "direction", "peer", "port", "rule", "flows", "connections"]
        frame = _frame(report.pop("groups"), cols)
        frame.attrs.update(report)
        return frame

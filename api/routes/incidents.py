"""``/api/v1/incidents``: one attack, one record: its attacker, its victims, its anomalies.

The detector records an incident on every anomalous window it belongs to (and on the anomaly
of its peak window); this groups the anomalies by incident. The attacker is the identity of an
anomaly whose role is ``attacker`` or ``subject``; when none of its anomalies is the attacker's
(a victim or witness alerts for an attacker whose own traffic looked ordinary or was not seen),
it is the attacker the victim's peak window names.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Final

from fastapi import APIRouter, Path, Query
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from netwarden.api.deps import PagerDep, StoreDep
from netwarden.api.problems import ProblemError, problem_responses
from netwarden.api.schemas import MAX_PAGE, AnomalyPublic, Limit, Offset
from netwarden.detector.severity import Severity, severity
from netwarden.detector.store import AnomalyRecord, AnomalyStore

__all__ = ["IncidentDetailPublic", "IncidentPublic", "router"]

#: Anomalies read to group incidents: a bound on the work of one request (the newest first).
MAX_ANOMALIES: Final = 20_000
_ATTACKING: Final = ("attacker", "subject")

router = APIRouter(
    prefix="/incidents", tags=["incidents"], responses=problem_responses(401, 403, 422)
)


class IncidentQuery(BaseModel):
    """The time range and page of the incident list."""

    model_config = ConfigDict(extra="forbid")

    since: AwareDatetime | None = Field(
        None, description="RFC 3339; incidents still going on at or after this time"
    )
    until: AwareDatetime | None = Field(
        None, description="RFC 3339; incidents that started before this time"
    )
    limit: Limit = 50
    offset: Offset = 0

    @model_validator(mode="after")
    def _ordered(self) -> IncidentQuery:
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ValueError(
                f"since ({self.since.isoformat()}) must be before until ({self.until.isoformat()})"
            )
        return self


class IncidentPublic(BaseModel):
    """One incident: who attacked whom, when, how badly, and in which state its anomalies are."""

    model_config = ConfigDict(frozen=True)

    id: str
    attacker: str = Field(
        description="namespace/workload (or the peer) the incident is named after"
    )
    victims: list[str] = Field(description="identities hit, linked to the attacker's incident")
    first_window_start: datetime
    last_window_end: datetime
    peak_score: float
    severity: Severity
    ongoing: bool
    anomalies: int = Field(description="anomalies of the incident (attacker's and victims')")
    anomaly_ids: list[int]
    states: dict[str, int] = Field(description="its anomalies by state")
    summary: str = Field(description="the summary of the attacker's (or strongest) anomaly")


class IncidentDetailPublic(IncidentPublic):
    """One incident with its anomalies."""

    items: list[AnomalyPublic]


class IncidentPagePublic(BaseModel):
    """One page of incidents, the most recent first; ``next`` is the next page's URL, or null."""

    model_config = ConfigDict(frozen=True)

    items: list[IncidentPublic]
    total: int
    limit: int
    offset: int
    next: str | None


def _records(
    store: AnomalyStore, since: datetime | None, until: datetime | None
) -> list[AnomalyRecord]:
    out: list[AnomalyRecord] = []
    while len(out) < MAX_ANOMALIES:
        page = store.list(since=since, until=until, limit=MAX_PAGE, offset=len(out))
        out.extend(page)
        if len(page) < MAX_PAGE:
            break
    return out


def _named_attacker(store: AnomalyStore, a: AnomalyRecord) -> str:
    """The attacker the anomaly's peak window names ("" when it names none)."""
    peak = store.windows(
        a.identity,
        since=a.peak_window_start,
        until=a.peak_window_start + timedelta(microseconds=1),
        limit=1,
    )
    return peak[0].attacker if peak else ""


def _incident(store: AnomalyStore, incident: str, members: list[AnomalyRecord]) -> dict[str, Any]:
    attackers = [a for a in members if a.role in _ATTACKING]
    strongest = max(attackers or members, key=lambda a: a.peak_score)
    if attackers:
        attacker = strongest.identity
    else:
        attacker = next((n for a in members if (n := _named_attacker(store, a))), "")
        attacker = attacker or strongest.identity
    states: dict[str, int] = {}
    for a in members:
        states[a.state] = states.get(a.state, 0) + 1
    peak = max(a.peak_score for a in members)
    return {
        "id": incident,
        "attacker": attacker,
        "victims": sorted({a.identity for a in members} - {attacker}),
        "first_window_start": min(a.first_window_start for a in members),
        "last_window_end": max(a.last_window_end for a in members),
        "peak_score": peak,
        "severity": severity(peak),
        "ongoing": any(a.ongoing for a in members),
        "anomalies": len(members),
        "anomaly_ids": sorted(a.id for a in members),
        "states": states,
        "summary": strongest.summary,
    }


def _grouped(store: AnomalyStore, records: list[AnomalyRecord]) -> dict[str, list[AnomalyRecord]]:
    groups: dict[str, list[AnomalyRecord]] = {}
    for a in records:  # newest first: so are the groups (by their newest anomaly)
        if a.incident:
            groups.setdefault(a.incident, []).append(a)
    return groups


@router.get("", response_model=IncidentPagePublic)
def read_incidents(
    store: StoreDep, pager: PagerDep, query: Annotated[IncidentQuery, Query()]
) -> IncidentPagePublic:
    """Incidents with an anomaly in the range, the most recent first, one page at a time."""
    groups = _grouped(store, _records(store, query.since, query.until))
    ids = list(groups)
    page = ids[query.offset : query.offset + query.limit]
    items = [IncidentPublic(**_incident(store, i, groups[i])) for i in page]
    return IncidentPagePublic(
        items=items,
        total=len(ids),
        limit=query.limit,
        offset=query.offset,
        next=pager.next(query, returned=len(items), total=len(ids)),
    )


IncidentId = Annotated[
    str, Path(pattern=r"^[A-Za-z0-9._:-]{1,64}$", description="e.g. inc-7aa2308b76db")
]


@router.get("/{incident_id}", response_model=IncidentDetailPublic, responses=problem_responses(404))
def read_incident(incident_id: IncidentId, store: StoreDep) -> IncidentDetailPublic:
    """One incident with its anomalies (newest first)."""
    members = _grouped(store, _records(store, None, None)).get(incident_id)
    if not members:
        raise ProblemError(404, f"no incident {incident_id}")
    return IncidentDetailPublic(
        **_incident(store, incident_id, members),
        items=[AnomalyPublic.from_record(a) for a in members],
    )

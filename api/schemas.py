"""The API's request and response bodies.

Responses are ``*Public`` models built from the store's and registry's records by their
``from_*`` constructors, so a field added to a record (a file path, an internal flag) stays
internal until a public model names it. Requests forbid unknown members, so a misspelt
``untill`` is a 422, not a silently ignored field.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Final, Generic, Literal, Self, TypeVar

from fastapi import Path
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from netwarden.detector.change_store import ChangeEvent, ChangeRecord
from netwarden.detector.results import Reason, ScoredWindow
from netwarden.detector.severity import Severity, severity
from netwarden.detector.store import AnomalyRecord, IdentitySummary, LifecycleEvent
from netwarden.models.artifact import ModelVersion
from netwarden.remediation.proposals import ProposalEvent, ProposalRecord
from netwarden.remediation.simulate import SimulationReport

__all__ = [
    "MAX_ID",
    "MAX_POLICY_BYTES",
    "MAX_POLICY_DEPTH",
    "MAX_SUPPRESSION_SECONDS",
    "AcknowledgeRequest",
    "AnomalyDetailPublic",
    "AnomalyPagePublic",
    "AnomalyPublic",
    "AnomalyQuery",
    "ChangeActionRequest",
    "ChangeDetailPublic",
    "ChangeEdgePublic",
    "ChangeEventPublic",
    "ChangeId",
    "ChangePagePublic",
    "ChangePublic",
    "ChangeQuery",
    "HealthPublic",
    "IdentityPagePublic",
    "IdentityPublic",
    "IdentityQuery",
    "IdentityWindowsPublic",
    "LifecycleEventPublic",
    "ModelListPublic",
    "ModelVersionPublic",
    "PolicyProblemPublic",
    "ProblemPublic",
    "ProposalActionRequest",
    "ProposalCreateRequest",
    "ProposalDetailPublic",
    "ProposalEventPublic",
    "ProposalPagePublic",
    "ProposalPublic",
    "ProposalQuery",
    "ReadyPublic",
    "ReasonPublic",
    "RecordId",
    "ResolveRequest",
    "SimulationPublic",
    "SuppressRequest",
    "ValidationErrorPublic",
    "WindowPublic",
    "WindowQuery",
    "note_of",
]

#: The longest suppression ``duration_seconds`` accepts: a year. Longer means "resolve it".
MAX_SUPPRESSION_SECONDS: Final = 366 * 86400
DEFAULT_PAGE: Final = 50
MAX_PAGE: Final = 500
DEFAULT_WINDOWS: Final = 100
MAX_WINDOWS: Final = 1000
_NOTE_MAX: Final = 2000
#: The largest id or offset: the stores keep ids in signed 64-bit integer columns (SQLite's and
#: PostgreSQL's BIGINT), and a larger number cannot even be compared with one there.
MAX_ID: Final = 2**63 - 1
#: How deep a proposed policy may nest: CiliumNetworkPolicy's own schema nests under 15 levels
#: (spec.egress[].toPorts[].rules.dns[]...), so 32 leaves room and refuses what only breaks
#: whatever walks the document afterwards (YAML rendering, diffing, validation).
MAX_POLICY_DEPTH: Final = 32
#: How large a proposed policy may be, as compact JSON: 1 MiB. Kubernetes stores objects up to
#: about 1.5 MiB (etcd's request limit); netwarden's own policies are a few KiB.
MAX_POLICY_BYTES: Final = 1024 * 1024

#: The lifecycle states (netwarden.detector.lifecycle.STATES; a test keeps them equal).
State = Literal["open", "acknowledged", "suppressed", "resolved"]

Note = Annotated[str, StringConstraints(strip_whitespace=True, max_length=_NOTE_MAX)]
RequiredText = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=_NOTE_MAX)
]
#: The page parameters every list shares (each query declares them last: field order is the
#: order of the query parameters in the OpenAPI document).
Limit = Annotated[int, Field(ge=1, le=MAX_PAGE)]
Offset = Annotated[int, Field(ge=0, le=MAX_ID)]
#: A record's id in a path (``/anomalies/{anomaly_id}``): a 422, not a 500, past MAX_ID.
RecordId = Annotated[int, Path(ge=0, le=MAX_ID)]

ItemT = TypeVar("ItemT")


def _depth(value: Any) -> int:
    """How deeply ``value`` (parsed JSON) nests: 0 for a scalar. Iterative, so no depth
    overflows Python's stack."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            deepest = max(deepest, depth)
            continue
        deepest = max(deepest, depth + 1)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _check_range(since: datetime | None, until: datetime | None) -> None:
    if since is not None and until is not None and since >= until:
        raise ValueError(f"since ({since.isoformat()}) must be before until ({until.isoformat()})")


class _Public(BaseModel):
    model_config = ConfigDict(frozen=True)

    @classmethod
    def _from(cls, record: object, **derived: Any) -> Self:
        """This model of ``record``: every field not in ``derived`` is the record's attribute of
        the same name, so only what a public model names leaves the record; ``derived`` holds
        the rest (values computed, renamed or converted to their public models)."""
        read = {name: getattr(record, name) for name in cls.model_fields if name not in derived}
        return cls(**read, **derived)


class _Page(_Public, Generic[ItemT]):
    """One page of a list; ``next`` is the next page's URL, or null on the last page."""

    items: list[ItemT]
    total: int
    limit: int
    offset: int
    next: str | None


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt member is an error, not ignored


class _Query(_Request):
    def filters(self) -> dict[str, Any]:
        """The filters given (every field but the page), by name, as the stores take them."""
        return self.model_dump(exclude={"limit", "offset"})


# -------------------------------------------------------------------------------- problems


class ValidationErrorPublic(_Public):
    """One invalid part of a request: where (``["query", "limit"]``), what, and its kind."""

    loc: list[str]
    msg: str
    type: str


class ProblemPublic(_Public):
    """An RFC 9457 problem document (``application/problem+json``)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    type: str = Field("about:blank", description="URI identifying the kind of problem")
    title: str
    status: int
    detail: str
    instance: str = Field(description="the request path this problem occurred on")
    errors: list[ValidationErrorPublic] | None = Field(
        None, description="request validation errors (422 only)"
    )


# ------------------------------------------------------------------------------- anomalies


class ReasonPublic(_Public):
    """A feature that drove the score: what the window showed against the identity's normal."""

    feature: str
    value: float
    baseline: float
    spread: float
    contribution: float
    text: str

    @classmethod
    def from_reason(cls, r: Reason) -> ReasonPublic:
        return cls._from(r)


class LifecycleEventPublic(_Public):
    """One entry of an anomaly's audit trail."""

    id: int
    at: datetime
    actor: str
    action: str
    from_state: State | None
    to_state: State
    note: str

    @classmethod
    def from_event(cls, e: LifecycleEvent) -> LifecycleEventPublic:
        return cls._from(e)


class AnomalyPublic(_Public):
    """An anomaly as listed: a run of anomalous windows of one identity, its peak and state."""

    id: int
    identity: str
    namespace: str
    workload: str
    state: State
    severity: Severity
    ongoing: bool = Field(description="still growing: it holds the identity's latest window")
    first_window_start: datetime
    last_window_end: datetime
    window_count: int
    peak_window_start: datetime
    peak_score: float = Field(description="in units of the model's threshold; higher is worse")
    peak_threshold: float
    model: str
    fallback: bool = Field(description="scored by a namespace or global model")
    summary: str
    suppressed_until: datetime | None
    state_note: str = Field(description="why it is in its state (e.g. the suppression reason)")
    state_actor: str = Field(description="who put it in its state")
    created_at: datetime
    updated_at: datetime
    incident: str = Field(
        description="the incident of its peak window, named after the attacker (empty: none)"
    )
    role: str = Field(
        description="its identity's role in the incident: attacker, victim (linked to the "
        "attacker's incident, not alerted on its own) or subject; empty for none"
    )

    @classmethod
    def from_record(cls, a: AnomalyRecord, **detail: Any) -> Self:
        return cls._from(a, severity=severity(a.peak_score), **detail)


class AnomalyDetailPublic(AnomalyPublic):
    """One anomaly with its explanation, the flows behind it, and its audit trail."""

    reasons: list[ReasonPublic]
    examples: dict[str, Any] = Field(
        description="example flows of the peak window: peers, ports, DNS names, drop reasons"
    )
    events: list[LifecycleEventPublic] = Field(description="the audit trail, oldest first")

    @classmethod
    def from_record_and_events(
        cls, a: AnomalyRecord, events: list[LifecycleEvent]
    ) -> AnomalyDetailPublic:
        return cls.from_record(
            a,
            reasons=[ReasonPublic.from_reason(r) for r in a.reasons],
            events=[LifecycleEventPublic.from_event(e) for e in events],
        )


class AnomalyPagePublic(_Page[AnomalyPublic]):
    """One page of anomalies, newest first; ``next`` is the next page's URL, or null."""

    total: int = Field(description="how many anomalies match the filters, over all pages")


class AnomalyQuery(_Query):
    """The filters and page of the anomaly list; every filter given must match."""

    identity: str | None = Field(None, description="namespace/workload")
    namespace: str | None = None
    state: State | None = None
    severity: Severity | None = Field(None, description="derived from the peak score")
    since: AwareDatetime | None = Field(
        None, description="RFC 3339; anomalies still going on at or after this time"
    )
    until: AwareDatetime | None = Field(
        None, description="RFC 3339; anomalies that started before this time"
    )
    limit: Limit = DEFAULT_PAGE
    offset: Offset = 0

    @model_validator(mode="after")
    def _ordered(self) -> AnomalyQuery:
        _check_range(self.since, self.until)
        return self


class _NoteRequest(_Request):
    note: Note = ""


def note_of(body: _NoteRequest | None) -> str:
    """The note of an optional note body: empty without one."""
    return body.note if body is not None else ""


class AcknowledgeRequest(_NoteRequest):
    """Acknowledge an open anomaly: someone is on it; the note says who or why."""


class ResolveRequest(_NoteRequest):
    """Close an anomaly for good; the note says what was done."""


class SuppressRequest(_Request):
    """Silence an anomaly until a time (``until``) or for a while (``duration_seconds``)."""

    reason: RequiredText
    until: AwareDatetime | None = Field(None, description="RFC 3339 time, with its offset")
    duration_seconds: float | None = Field(None, gt=0, le=MAX_SUPPRESSION_SECONDS)

    @model_validator(mode="after")
    def _one_expiry(self) -> SuppressRequest:
        if (self.until is None) == (self.duration_seconds is None):
            raise ValueError("give exactly one of until (RFC 3339) or duration_seconds")
        return self


# ------------------------------------------------------------------------------ identities


class IdentityQuery(_Query):
    """The filter and page of the identity list."""

    namespace: str | None = None
    limit: Limit = DEFAULT_PAGE
    offset: Offset = 0


class WindowQuery(_Request):
    """Which of an identity's windows: those overlapping ``[since, until)``, the latest first."""

    since: AwareDatetime | None = Field(None, description="RFC 3339")
    until: AwareDatetime | None = Field(None, description="RFC 3339")
    limit: int = Field(DEFAULT_WINDOWS, ge=1, le=MAX_WINDOWS)

    @model_validator(mode="after")
    def _ordered(self) -> WindowQuery:
        _check_range(self.since, self.until)
        return self


class IdentityPublic(_Public):
    """An identity the detector has scored, and how it looks in its latest window."""

    identity: str
    namespace: str
    workload: str
    windows: int = Field(description="scored windows recorded")
    first_window_start: datetime
    last_window_end: datetime
    last_score: float
    last_threshold: float
    last_anomalous: bool
    open_anomalies: int = Field(description="anomalies in state open")

    @classmethod
    def from_summary(cls, i: IdentitySummary) -> IdentityPublic:
        return cls._from(i)


class IdentityPagePublic(_Page[IdentityPublic]):
    """One page of identities, sorted by identity; ``next`` is the next page's URL, or null."""


class WindowPublic(_Public):
    """One scored window of an identity, normal or not."""

    window_start: datetime
    window_end: datetime
    score: float
    threshold: float
    anomalous: bool
    severity: Severity | None = Field(description="null for a normal window")
    model: str
    fallback: bool
    reasons: list[ReasonPublic]
    summary: str

    @classmethod
    def from_window(cls, w: ScoredWindow) -> WindowPublic:
        return cls._from(
            w,
            severity=severity(w.score) if w.anomalous else None,
            reasons=[ReasonPublic.from_reason(r) for r in w.reasons],
        )


class IdentityWindowsPublic(_Public):
    """An identity's most recent windows, newest first."""

    identity: str
    namespace: str
    workload: str
    items: list[WindowPublic]
    limit: int


# ---------------------------------------------------------------------------------- models


class ModelVersionPublic(_Public):
    """A saved model version, from its manifest (where it is on disk stays internal)."""

    version: str
    created: datetime
    current: bool = Field(description="the version scoring now (loaded by the service)")
    format: str
    window_seconds: float
    rows: int = Field(description="training windows")
    models: int = Field(description="fitted models: per identity, namespace and global")
    identities: list[str] = Field(description="identities with a model of their own")
    training_start: datetime | None
    training_end: datetime | None
    data_hash: str
    libraries: dict[str, str]

    @classmethod
    def from_version(cls, v: ModelVersion) -> ModelVersionPublic:
        return cls._from(v)  # not its path: where it is on disk stays internal


class ModelListPublic(_Public):
    """Every saved model version, newest first."""

    items: list[ModelVersionPublic]


# ---------------------------------------------------------------------------------- health


class HealthPublic(_Public):
    """The process is serving."""

    status: Literal["ok"] = "ok"


class ReadyPublic(_Public):
    """The service can detect: a model is loaded and the flow source is up."""

    status: Literal["ready"] = "ready"
    model: str = Field(description="the model version scoring now")
    source: str = Field(description="the kind of flow source, e.g. file, generator")
    flows: int = Field(description="flows the source delivered since start")
    last_flow_at: datetime | None


# ------------------------------------------------------------------------------- proposals

#: The proposal states and kinds (netwarden.remediation.proposals.STATES/KINDS; a test keeps
#: them equal).
ProposalState = Literal[
    "proposed", "approved", "rejected", "applying", "applied", "rolling_back", "rolled_back",
    "failed",
]  # fmt: skip
ProposalKind = Literal["baseline", "containment"]


class PolicyProblemPublic(_Public):
    """One reason the API server would refuse the policy: where (JSON path) and what."""

    path: str
    message: str


class ProposalEventPublic(_Public):
    """One entry of a proposal's audit log."""

    id: int
    at: datetime
    actor: str
    action: str
    from_state: ProposalState | None
    to_state: ProposalState
    note: str
    details: dict[str, Any]

    @classmethod
    def from_event(cls, e: ProposalEvent) -> ProposalEventPublic:
        return cls._from(e)


class ProposalPublic(_Public):
    """A proposal as listed: which policy, for whom, and where it is in review."""

    id: int
    kind: ProposalKind
    identity: str
    anomaly_id: int | None
    name: str = Field(description="the policy's metadata.name")
    namespace: str | None
    state: ProposalState
    valid: bool = Field(description="the policy passed validation against the Cilium CRD")
    warnings: list[str] = Field(
        [],
        description="normal traffic of the recent flows the policy would drop, found when it "
        "was proposed (empty: none found, or no flows to replay)",
    )
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_record(cls, p: ProposalRecord) -> ProposalPublic:
        return cls._from(p)


class ProposalDetailPublic(ProposalPublic):
    """One proposal: the policy (as JSON and YAML), what it changes, and its audit log."""

    policy: dict[str, Any]
    yaml: str = Field(description="the policy as YAML, as it would be applied")
    current: dict[str, Any] | None = Field(
        description="the policy it replaces, as it was when proposed (null: a new policy)"
    )
    diff: str | None = Field(description="unified diff of the YAML against the current policy")
    patch: list[dict[str, Any]] | None = Field(description="RFC 6902 patch from the current")
    problems: list[PolicyProblemPublic]
    dry_run: dict[str, Any] | None = Field(description="the last server-side dry-run")
    applied: dict[str, Any] | None = Field(
        description="what was applied and what it replaced (for rollback)"
    )
    events: list[ProposalEventPublic] = Field(description="the audit log, oldest first")

    @classmethod
    def from_record_and_events(
        cls, p: ProposalRecord, events: list[ProposalEvent], *, yaml: str, diff: str | None
    ) -> ProposalDetailPublic:
        """``yaml`` is the policy as YAML, ``diff`` that against the current policy's YAML."""
        return cls._from(
            p,
            yaml=yaml,
            diff=diff,
            applied=p.change,
            events=[ProposalEventPublic.from_event(e) for e in events],
        )


class ProposalPagePublic(_Page[ProposalPublic]):
    """One page of proposals, newest first; ``next`` is the next page's URL, or null."""


class ProposalQuery(_Query):
    """The filters and page of the proposal list; every filter given must match."""

    identity: str | None = Field(None, description="namespace/workload")
    state: ProposalState | None = None
    kind: ProposalKind | None = None
    limit: Limit = DEFAULT_PAGE
    offset: Offset = 0


class ProposalCreateRequest(_Request):
    """Propose a containment for an anomaly (``anomaly_id``), or a baseline for an identity:
    from the service's recorded flows, or the ``policy`` given when there are none."""

    anomaly_id: int | None = Field(None, ge=1, le=MAX_ID)
    identity: str | None = Field(
        None, pattern=r"^[^/\s]+/[^/\s]+$", description="namespace/workload, for a baseline"
    )
    policy: dict[str, Any] | None = Field(
        None,
        description=(
            f"a baseline policy to review (at most {MAX_POLICY_DEPTH} levels deep and "
            f"{MAX_POLICY_BYTES} bytes as JSON)"
        ),
    )
    note: Note = ""

    @field_validator("policy", mode="before")
    @classmethod
    def _bounded(cls, policy: Any) -> Any:
        """Refuse a policy too deep or too large before anything walks it (a 400-deep one
        was stored, then every read of it failed)."""
        if policy is None:
            return policy
        depth = _depth(policy)
        if depth > MAX_POLICY_DEPTH:
            raise ValueError(
                f"the policy nests {depth} levels deep; at most {MAX_POLICY_DEPTH} are accepted"
            )
        size = len(json.dumps(policy, separators=(",", ":")))
        if size > MAX_POLICY_BYTES:
            raise ValueError(
                f"the policy is {size} bytes as JSON; at most {MAX_POLICY_BYTES} are accepted"
            )
        return policy

    @model_validator(mode="after")
    def _one_source(self) -> ProposalCreateRequest:
        if self.anomaly_id is not None and (self.identity is not None or self.policy is not None):
            raise ValueError("give anomaly_id (a containment) or identity (a baseline), not both")
        if self.anomaly_id is None and self.identity is None:
            raise ValueError("give anomaly_id (a containment) or identity (a baseline)")
        return self


class ProposalActionRequest(_NoteRequest):
    """An optional note for the audit log (why approved, rejected, applied, rolled back)."""


class DropGroupPublic(_Public):
    """Flows the policy would have dropped that share subject, direction, peer and port."""

    subject: str
    direction: str
    peer: str
    port: str
    rule: str = Field(description="the deny rule, or empty for default deny")
    flows: int
    connections: int


class SimulationPublic(_Public):
    """What the proposal would have done to the service's recent flows."""

    proposal_id: int
    flows_seen: int
    flows_judged: int
    allowed: int
    dropped: int
    dropped_by_default_deny: int
    dropped_by_deny_rule: int
    already_dropped: int = Field(description="dropped flows the recording shows dropped anyway")
    groups: list[DropGroupPublic]
    warnings: list[str]
    text: str = Field(description="the report as a person reads it")

    @classmethod
    def from_report(cls, proposal_id: int, r: SimulationReport) -> SimulationPublic:
        return cls._from(
            r,
            proposal_id=proposal_id,
            groups=[DropGroupPublic._from(g, connections=g.connection_count) for g in r.groups],
            text=r.text(),
        )


# --------------------------------------------------------------------------------- changes

#: The change states and kinds (netwarden.detector.change_store.STATES/KINDS; a test keeps
#: them equal).
ChangeStatus = Literal["open", "accepted", "rejected", "escalated", "closed"]
ChangeKind = Literal["workload", "vendor", "internet", "edge"]
#: A change's id in a path (``/changes/{change_id}``).
ChangeId = Annotated[str, Path(pattern=r"^chg-[0-9a-f]{12}$", description="e.g. chg-3f2a9c01b7de")]


class ChangeEdgePublic(_Public):
    """One new edge of a change: who, which way, which peer and port, how many flows."""

    identity: str
    direction: Literal["egress", "ingress"]
    peer: str = Field(description="namespace/workload, reserved:<entity>, fqdn:<name>, cidr:<net>")
    port: str = Field(description="e.g. TCP/443; empty without ports")
    flows: int


class ChangeEventPublic(_Public):
    """One entry of a change's audit trail (``amend``: its amendment proposals, no state
    change)."""

    id: int
    at: datetime
    actor: str
    action: str
    from_state: ChangeStatus | None
    to_state: ChangeStatus
    note: str
    details: dict[str, Any]

    @classmethod
    def from_event(cls, e: ChangeEvent) -> ChangeEventPublic:
        return cls._from(e)


class ChangePublic(_Public):
    """A change as listed: ordinary-looking new traffic, one record per new thing, waiting
    for a person to accept (its edges become normal, a policy amendment is proposed) or reject
    it (it becomes an anomaly)."""

    id: str = Field(description="e.g. chg-3f2a9c01b7de (the ids scored windows name)")
    kind: ChangeKind = Field(
        description="workload (a new workload), vendor (a new internet domain), internet (a new "
        "unnamed network of an identity), edge (a new pair of known workloads)"
    )
    subject: str = Field(description="the new thing, e.g. shop/reviews or stripe.com")
    status: ChangeStatus
    description: str
    identities: list[str] = Field(description="the identities it touched")
    first_seen: datetime = Field(description="start of the first window it was seen in")
    last_seen: datetime = Field(description="start of the last window it was seen in")
    windows: int
    edge_count: int = Field(description="its new edges (listed and omitted)")
    state_actor: str = Field(description="who put it in its state")
    state_note: str
    decided_at: datetime | None = Field(description="when a person accepted or rejected it")
    applied: bool = Field(
        description="the detector has applied the decision (learned the edges of an accepted "
        "change); false while it is on its way, and for an undecided change"
    )
    proposal_ids: list[int] = Field(description="its policy amendment proposals (accepted)")
    anomaly_ids: list[int] = Field(description="the anomalies it became (rejected)")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_record(cls, c: ChangeRecord, **detail: Any) -> Self:
        return cls._from(
            c,
            id=c.change_id,
            identities=list(c.identities),
            edge_count=len(c.edges) + c.edges_omitted,
            applied=c.applied_at is not None,
            proposal_ids=list(c.proposal_ids),
            anomaly_ids=list(c.anomaly_ids),
            **detail,
        )


class ChangeDetailPublic(ChangePublic):
    """One change with its edges and its audit trail."""

    edges: list[ChangeEdgePublic]
    edges_omitted: int = Field(description="edges past the ones listed, counted only")
    events: list[ChangeEventPublic] = Field(description="the audit trail, oldest first")

    @classmethod
    def from_record_and_events(cls, c: ChangeRecord, events: list[ChangeEvent]) -> Self:
        return cls.from_record(
            c,
            edges=[ChangeEdgePublic(**e) for e in c.edges],
            edges_omitted=c.edges_omitted,
            events=[ChangeEventPublic.from_event(e) for e in events],
        )


class ChangePagePublic(_Page[ChangePublic]):
    """One page of changes, the most recently seen first; ``next`` is the next page's URL."""

    total: int = Field(description="how many changes match the filters, over all pages")


class ChangeQuery(_Query):
    """The filters and page of the change list; every filter given must match."""

    status: ChangeStatus | None = None
    identity: str | None = Field(None, description="namespace/workload: one it touched")
    kind: ChangeKind | None = None
    since: AwareDatetime | None = Field(
        None, description="RFC 3339; changes seen (a window starting) at or after this time"
    )
    until: AwareDatetime | None = Field(
        None, description="RFC 3339; changes first seen before this time"
    )
    limit: Limit = DEFAULT_PAGE
    offset: Offset = 0

    @model_validator(mode="after")
    def _ordered(self) -> ChangeQuery:
        _check_range(self.since, self.until)
        return self


class ChangeActionRequest(_NoteRequest):
    """An optional note for the audit trail (why accepted or rejected)."""

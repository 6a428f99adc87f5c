"""The API's request and response bodies.

Responses are ``*Public`` models built from the store's and registry's records by their
``from_*`` constructors, so a field added to a record (a file path, an internal flag) stays
internal until a public model names it. Requests forbid unknown members, so a misspelt
``untill`` is a 422, not a silently ignored field.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from netwarden.detector.results import Reason, ScoredWindow
from netwarden.detector.severity import Severity, severity
from netwarden.detector.store import AnomalyRecord, IdentitySummary, LifecycleEvent
from netwarden.models.artifact import ModelVersion
from netwarden.remediation.proposals import ProposalEvent, ProposalRecord
from netwarden.remediation.simulate import SimulationReport

__all__ = [
    "MAX_SUPPRESSION_SECONDS",
    "AcknowledgeRequest",
    "AnomalyDetailPublic",
    "AnomalyPagePublic",
    "AnomalyPublic",
    "AnomalyQuery",
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
    "ResolveRequest",
    "SimulationPublic",
    "SuppressRequest",
    "ValidationErrorPublic",
    "WindowPublic",
    "WindowQuery",
]

#: The longest suppression ``duration_seconds`` accepts: a year. Longer means "resolve it".
MAX_SUPPRESSION_SECONDS: Final = 366 * 86400
DEFAULT_PAGE: Final = 50
MAX_PAGE: Final = 500
DEFAULT_WINDOWS: Final = 100
MAX_WINDOWS: Final = 1000
_NOTE_MAX: Final = 2000

#: The lifecycle states (netwarden.detector.lifecycle.STATES; a test keeps them equal).
State = Literal["open", "acknowledged", "suppressed", "resolved"]

Note = Annotated[str, StringConstraints(strip_whitespace=True, max_length=_NOTE_MAX)]
RequiredText = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=_NOTE_MAX)
]


def _check_range(since: datetime | None, until: datetime | None) -> None:
    if since is not None and until is not None and since >= until:
        raise ValueError(f"since ({since.isoformat()}) must be before until ({until.isoformat()})")


class _Public(BaseModel):
    model_config = ConfigDict(frozen=True)


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
        return cls(
            feature=r.feature,
            value=r.value,
            baseline=r.baseline,
            spread=r.spread,
            contribution=r.contribution,
            text=r.text,
        )


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
        return cls(
            id=e.id,
            at=e.at,
            actor=e.actor,
            action=e.action,
            from_state=e.from_state,
            to_state=e.to_state,
            note=e.note,
        )  # type: ignore[arg-type]


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

    @classmethod
    def _fields_of(cls, a: AnomalyRecord) -> dict[str, Any]:
        return {
            "id": a.id,
            "identity": a.identity,
            "namespace": a.namespace,
            "workload": a.workload,
            "state": a.state,
            "severity": severity(a.peak_score),
            "ongoing": a.ongoing,
            "first_window_start": a.first_window_start,
            "last_window_end": a.last_window_end,
            "window_count": a.window_count,
            "peak_window_start": a.peak_window_start,
            "peak_score": a.peak_score,
            "peak_threshold": a.peak_threshold,
            "model": a.model,
            "fallback": a.fallback,
            "summary": a.summary,
            "suppressed_until": a.suppressed_until,
            "state_note": a.state_note,
            "state_actor": a.state_actor,
            "created_at": a.created_at,
            "updated_at": a.updated_at,
        }

    @classmethod
    def from_record(cls, a: AnomalyRecord) -> AnomalyPublic:
        return cls(**cls._fields_of(a))


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
        return cls(
            **cls._fields_of(a),
            reasons=[ReasonPublic.from_reason(r) for r in a.reasons],
            examples=dict(a.examples),
            events=[LifecycleEventPublic.from_event(e) for e in events],
        )


class AnomalyPagePublic(_Public):
    """One page of anomalies, newest first; ``next`` is the next page's URL, or null."""

    items: list[AnomalyPublic]
    total: int = Field(description="how many anomalies match the filters, over all pages")
    limit: int
    offset: int
    next: str | None


class AnomalyQuery(BaseModel):
    """The filters and page of the anomaly list; every filter given must match."""

    model_config = ConfigDict(extra="forbid")  # a misspelt filter is an error, not ignored

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
    limit: int = Field(DEFAULT_PAGE, ge=1, le=MAX_PAGE)
    offset: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> AnomalyQuery:
        _check_range(self.since, self.until)
        return self


class _NoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: Note = ""


class AcknowledgeRequest(_NoteRequest):
    """Acknowledge an open anomaly: someone is on it; the note says who or why."""


class ResolveRequest(_NoteRequest):
    """Close an anomaly for good; the note says what was done."""


class SuppressRequest(BaseModel):
    """Silence an anomaly until a time (``until``) or for a while (``duration_seconds``)."""

    model_config = ConfigDict(extra="forbid")

    reason: RequiredText
    until: AwareDatetime | None = Field(None, description="RFC 3339 time, with its offset")
    duration_seconds: float | None = Field(None, gt=0, le=MAX_SUPPRESSION_SECONDS)

    @model_validator(mode="after")
    def _one_expiry(self) -> SuppressRequest:
        if (self.until is None) == (self.duration_seconds is None):
            raise ValueError("give exactly one of until (RFC 3339) or duration_seconds")
        return self


# ------------------------------------------------------------------------------ identities


class IdentityQuery(BaseModel):
    """The filter and page of the identity list."""

    model_config = ConfigDict(extra="forbid")

    namespace: str | None = None
    limit: int = Field(DEFAULT_PAGE, ge=1, le=MAX_PAGE)
    offset: int = Field(0, ge=0)


class WindowQuery(BaseModel):
    """Which of an identity's windows: those overlapping ``[since, until)``, the latest first."""

    model_config = ConfigDict(extra="forbid")

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
        return cls(
            identity=i.identity,
            namespace=i.namespace,
            workload=i.workload,
            windows=i.windows,
            first_window_start=i.first_window_start,
            last_window_end=i.last_window_end,
            last_score=i.last_score,
            last_threshold=i.last_threshold,
            last_anomalous=i.last_anomalous,
            open_anomalies=i.open_anomalies,
        )


class IdentityPagePublic(_Public):
    """One page of identities, sorted by identity; ``next`` is the next page's URL, or null."""

    items: list[IdentityPublic]
    total: int
    limit: int
    offset: int
    next: str | None


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
        return cls(
            window_start=w.window_start,
            window_end=w.window_end,
            score=w.score,
            threshold=w.threshold,
            anomalous=w.anomalous,
            severity=severity(w.score) if w.anomalous else None,
            model=w.model,
            fallback=w.fallback,
            reasons=[ReasonPublic.from_reason(r) for r in w.reasons],
            summary=w.summary,
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
    current: bool
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
        return cls(
            version=v.version,
            created=v.created,
            current=v.current,
            format=v.format,
            window_seconds=v.window_seconds,
            rows=v.rows,
            models=v.models,
            identities=list(v.identities),
            training_start=v.training_start,
            training_end=v.training_end,
            data_hash=v.data_hash,
            libraries=dict(v.libraries),
        )


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
ProposalState = Literal["proposed", "approved", "rejected", "applied", "rolled_back", "failed"]
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
        return cls(
            id=e.id,
            at=e.at,
            actor=e.actor,
            action=e.action,
            from_state=e.from_state,
            to_state=e.to_state,  # type: ignore[arg-type]
            note=e.note,
            details=dict(e.details),
        )


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
    created_at: datetime
    updated_at: datetime

    @classmethod
    def _fields_of(cls, p: ProposalRecord) -> dict[str, Any]:
        return {
            "id": p.id,
            "kind": p.kind,
            "identity": p.identity,
            "anomaly_id": p.anomaly_id,
            "name": p.name,
            "namespace": p.namespace,
            "state": p.state,
            "valid": p.valid,
            "created_at": p.created_at,
            "updated_at": p.updated_at,
        }

    @classmethod
    def from_record(cls, p: ProposalRecord) -> ProposalPublic:
        return cls(**cls._fields_of(p))


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


class ProposalPagePublic(_Public):
    """One page of proposals, newest first; ``next`` is the next page's URL, or null."""

    items: list[ProposalPublic]
    total: int
    limit: int
    offset: int
    next: str | None


class ProposalQuery(BaseModel):
    """The filters and page of the proposal list; every filter given must match."""

    model_config = ConfigDict(extra="forbid")

    identity: str | None = Field(None, description="namespace/workload")
    state: ProposalState | None = None
    kind: ProposalKind | None = None
    limit: int = Field(DEFAULT_PAGE, ge=1, le=MAX_PAGE)
    offset: int = Field(0, ge=0)


class ProposalCreateRequest(BaseModel):
    """Propose a containment for an anomaly (``anomaly_id``), or a baseline for an identity:
    from the service's recorded flows, or the ``policy`` given when there are none."""

    model_config = ConfigDict(extra="forbid")

    anomaly_id: int | None = Field(None, ge=1)
    identity: str | None = Field(
        None, pattern=r"^[^/\s]+/[^/\s]+$", description="namespace/workload, for a baseline"
    )
    policy: dict[str, Any] | None = Field(None, description="a baseline policy to review")
    note: Note = ""

    @model_validator(mode="after")
    def _one_source(self) -> ProposalCreateRequest:
        if self.anomaly_id is not None and (self.identity is not None or self.policy is not None):
            raise ValueError("give anomaly_id (a containment) or identity (a baseline), not both")
        if self.anomaly_id is None and self.identity is None:
            raise ValueError("give anomaly_id (a containment) or identity (a baseline)")
        return self


class ProposalActionRequest(BaseModel):
    """An optional note for the audit log (why approved, rejected, applied, rolled back)."""

    model_config = ConfigDict(extra="forbid")

    note: Note = ""


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
        return cls(
            proposal_id=proposal_id,
            flows_seen=r.flows_seen,
            flows_judged=r.flows_judged,
            allowed=r.allowed,
            dropped=r.dropped,
            dropped_by_default_deny=r.dropped_by_default_deny,
            dropped_by_deny_rule=r.dropped_by_deny_rule,
            already_dropped=r.already_dropped,
            groups=[
                DropGroupPublic(
                    subject=g.subject,
                    direction=g.direction,
                    peer=g.peer,
                    port=g.port,
                    rule=g.rule,
                    flows=g.flows,
                    connections=g.connection_count,
                )
                for g in r.groups
            ],
            warnings=list(r.warnings),
            text=r.text(),
        )

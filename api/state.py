"""What the HTTP API reads from the running service, as plain data and one protocol.

The service (``netwarden serve``) owns the source, the pipeline, the models and the store; the
API only reads their state and acts on anomalies through the store. Tests give the API a small
object with these members instead of a whole service.

Policy review (``/api/v1/proposals``) uses three more members that a service *may* have
(:class:`ReviewState`); the API reads them through :class:`netwarden.api.deps.Review`, so a
service without them still serves every other route:

- ``proposal_store``: without it, the app opens one :class:`ProposalStore` on the anomaly
  store's database URL on first use (its own tables, same database) and keeps it on the app;
- ``policy_applier()``: the Kubernetes client; without it (or None) nothing can be applied;
- ``recent_flows()``: the flow history to propose baselines from and to simulate against;
- ``containment_inputs(before)``: normal edges, flows and labels containments are built from;
  without it (or None) a baseline needs its policy in the request and simulation is refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from prometheus_client import CollectorRegistry

from netwarden.detector.store import AnomalyStore
from netwarden.ingest.sources import SourceStatus
from netwarden.models.artifact import ModelVersion
from netwarden.remediation.apply import PolicyApplier
from netwarden.remediation.proposals import ProposalStore

__all__ = [
    "ModelVersion",
    "ReviewState",
    "ServiceState",
    "SourceStatus",
]


class ServiceState(Protocol):
    """The running service, as the API needs it."""

    @property
    def store(self) -> AnomalyStore: ...

    @property
    def registry(self) -> CollectorRegistry:
        """The Prometheus registry served at /metrics."""
        ...

    def source_status(self) -> SourceStatus: ...

    def model_versions(self) -> list[ModelVersion]:
        """Every saved version, newest first."""
        ...

    def current_model(self) -> ModelVersion | None:
        """The version scoring now, or None while no model is loaded."""
        ...


class ReviewState(ServiceState, Protocol):
    """A service that also takes part in policy review; every member here is optional."""

    @property
    def proposal_store(self) -> ProposalStore: ...

    def policy_applier(self) -> PolicyApplier | None:
        """The applier for the cluster, or None when no Kubernetes API is configured."""
        ...

    def recent_flows(self) -> Iterable[Any] | None:
        """Recently recorded flows (Flow records), or None when there is no flow history."""
        ...

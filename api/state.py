"""What the HTTP API reads from the running service, as plain data and one protocol.

The service (``netwarden serve``) owns the source, the pipeline, the models and the store; the
API only reads their state and acts on anomalies through the store. Tests give the API a small
object with these members instead of a whole service.
"""

from __future__ import annotations

from typing import Protocol

from prometheus_client import CollectorRegistry

from netwarden.detector.store import AnomalyStore
from netwarden.ingest.live import SourceStatus
from netwarden.models.artifact import ModelVersion

__all__ = ["ModelVersion", "ServiceState", "SourceStatus"]


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

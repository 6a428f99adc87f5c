"""The pipeline in a process of its own, beside the API's (``api.pipeline_process``).

One Python process runs one thread at a time: in a single process a busy API (eight clients
listing anomalies) slows ingest, and a replay at full speed makes every API call wait for the
pipeline's turn. So ``netwarden serve`` runs two processes that share the store:

* the **pipeline process** (this module's :func:`run_pipeline`, started with ``spawn``) builds
  and runs the whole :class:`~netwarden.service.Service` as one process would (source,
  windows, scoring, changes, containment proposals, alerts, history, scheduled retraining),
  and serves a :class:`PipelineFacade` to its parent over a Unix socket (a
  :mod:`multiprocessing.managers` server, authenticated with a random key);
* the **API process** (the parent) serves HTTP. Its :class:`RemoteService` is the
  :class:`~netwarden.api.state.ServiceState` the API reads: the store, proposals and changes
  through its own connections to the same database, the model folder read directly, and
  through the facade only what lives in the pipeline's memory: the source's status, the loaded
  model, the metrics (the pipeline's registry, collected there and re-exposed here unchanged),
  the recent flows, the containment inputs and drift. A decision on a change made through the
  API is handed on at once (the pipeline also polls the store for decisions).

Stopping: SIGTERM (or SIGINT) to the API process stops uvicorn, then the pipeline process is
sent SIGTERM and runs its own orderly :meth:`~netwarden.service.Service.shutdown` (source,
pipeline, proposer, alerts, stores) before the API process exits (the pipeline process ignores
SIGINT: a Ctrl-C reaches both, and the API process leads); a pipeline process whose parent is
gone (killed) stops itself the same way; a pipeline process that dies takes the API process
down with it (exit code 1), so a supervisor restarts the service as a whole.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import secrets
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from multiprocessing.connection import Connection
from multiprocessing.managers import BaseManager
from pathlib import Path
from typing import Any, Final

from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector
from rich.console import Console

from netwarden.config import ServiceConfig
from netwarden.detector.change_store import ChangeStore
from netwarden.detector.drift import DriftReport
from netwarden.detector.store import AnomalyStore
from netwarden.errors import UserError
from netwarden.ingest.sources import SourceStatus
from netwarden.models.artifact import ModelVersion, list_versions
from netwarden.models.registry import read_gate
from netwarden.remediation.apply import PolicyApplier
from netwarden.remediation.proposals import ProposalStore

__all__ = ["PipelineFacade", "PipelineProcess", "RemoteService", "run_pipeline", "separate"]

#: Seconds the API process waits for the pipeline process to build its service (a first model
#: may be trained on the embedded default: about a minute on busy cores).
START_SECONDS: Final = 900.0
#: Seconds between the pipeline process's checks that its parent is still there.
_PARENT_POLL: Final = 1.0


def separate(config: ServiceConfig) -> bool:
    """Whether ``serve`` runs the pipeline in its own process: as configured, but never for a
    stdin source (a spawned process does not inherit the parent's standard input)."""
    return config.api.pipeline_process and config.source.spec not in ("-", "stdin")


class _Manager(BaseManager):
    """The pipeline process's server of its facade, and the API process's client of it."""


# ----------------------------------------------------------------------- pipeline side


class PipelineFacade:
    """What the API process may ask the pipeline process: plain data in, plain data out (each
    call pickles its answer)."""

    def __init__(self, service: Any) -> None:
        self._service = service

    def status(self) -> tuple[SourceStatus, ModelVersion | None, int]:
        """The source's status, the model version scoring now, windows recorded so far."""
        s = self._service
        return s.source_status(), s.current_model(), s.windows_recorded

    def collect(self) -> list[Any]:
        """The pipeline's metric families now (prometheus_client Metric objects)."""
        return list(self._service.registry.collect())

    def recent_flows(self) -> list[Any] | None:
        return self._service.recent_flows()

    def containment_inputs(self, before: datetime) -> dict[str, Any]:
        return self._service.containment_inputs(before)

    def switch_model(
        self, version: str | None, action: str, actor: str, reason: str
    ) -> tuple[str | None, str]:
        return self._service.switch_model(version, action=action, actor=actor, reason=reason)

    def decided(self) -> None:
        """A change was decided through the API: apply it on the pipeline's next turn."""
        self._service.change_store.decided.set()

    def drift_state(self) -> tuple[str | None, bool, str | None]:
        """(version loaded, whether it has a drift reference, version drift is judged for)."""
        drift = self._service.drift
        return drift.loaded_version, drift.available, drift.version

    def drift_report(self, identity: str) -> DriftReport | None:
        return self._service.drift.report(identity)

    def drift_reports(self) -> list[DriftReport]:
        return self._service.drift.reports()

    def drift_counts(self) -> dict[str, int]:
        return self._service.drift.counts()


def run_pipeline(
    build: Callable[..., tuple[Any, Any]],
    config: ServiceConfig,
    public_url: str,
    address: str,
    authkey: bytes,
    parent: Connection,
) -> None:
    """The pipeline process: build the service (``build``: :func:`netwarden.service.
    build_service`, passed by the caller so this module does not import the service) and
    start it, serve its facade at ``address``, say ``ready`` (or the error) on ``parent``, and
    run until SIGTERM or until the parent is gone; then shut the service down in order."""
    # as the command line's stderr (netwarden.cli.consoles): lines as they are, never wrapped
    console = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    # Ctrl-C reaches the whole process group: the API process stops first and then sends
    # SIGTERM here (an API still serving over a pipeline that already stopped would read as a
    # dead pipeline)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        service, _ = build(config, console, public_url=public_url, api_side=False)
    except UserError as exc:
        parent.send(("error", str(exc)))
        return
    facade = PipelineFacade(service)
    _Manager.register("pipeline", callable=lambda: facade)
    manager = _Manager(address=address, authkey=authkey)
    server = manager.get_server()
    threading.Thread(target=server.serve_forever, name="facade", daemon=True).start()
    service.start()
    parent.send(("ready", os.getpid()))
    parent_pid = os.getppid()
    while not stop.wait(_PARENT_POLL):
        if os.getppid() != parent_pid:  # the API process died without stopping us
            console.print("the API process is gone: stopping the pipeline", markup=False)
            break
    clean = service.shutdown()
    if clean:
        service.store.close()
    with contextlib.suppress(Exception):
        server.stop_event.set()
    os._exit(0 if clean else 1)  # the facade's threads may still hold connections


# ----------------------------------------------------------------------------- API side


class PipelineProcess:
    """The pipeline process as the API process starts, reaches and stops it."""

    def __init__(
        self,
        build: Callable[..., tuple[Any, Any]],
        config: ServiceConfig,
        public_url: str,
        console: Console,
    ) -> None:
        self.config = config
        self.console = console
        self._dir = tempfile.mkdtemp(prefix="netwarden-")
        self.address = str(Path(self._dir) / "pipeline.sock")
        self._authkey = secrets.token_bytes(32)
        context = mp.get_context("spawn")
        self._conn, child = context.Pipe()
        self.process = context.Process(
            target=run_pipeline,
            args=(build, config, public_url, self.address, self._authkey, child),
            name="netwarden-pipeline",
        )
        self.process.start()
        child.close()
        self.facade: Any = None

    def wait_ready(self, timeout: float = START_SECONDS) -> None:
        """Until the pipeline process serves; UserError with its reason when it failed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._conn.poll(0.2):
                try:
                    kind, detail = self._conn.recv()
                except EOFError:
                    break
                if kind == "error":
                    self.stop()
                    raise UserError(str(detail))
                _Manager.register("pipeline")
                manager = _Manager(address=self.address, authkey=self._authkey)
                manager.connect()
                self.facade = manager.pipeline()  # type: ignore[attr-defined]
                return
            if not self.process.is_alive():
                break
        code = self.process.exitcode
        self.stop()
        raise UserError(
            f"the pipeline process did not start (exit code {code}); its messages are above"
        )

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, wait for its orderly shutdown (killed past ``timeout``); its exit code."""
        if self.process.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGTERM)
            self.process.join(timeout)
            if self.process.is_alive():
                self.console.print(
                    "the pipeline process did not stop in time: killed", markup=False
                )
                self.process.kill()
                self.process.join(5.0)
        self._conn.close()
        shutil.rmtree(self._dir, ignore_errors=True)
        return self.process.exitcode


class _RemoteCollector(Collector):
    """The pipeline process's metrics, collected there, exposed here as they are."""

    def __init__(self, facade: Any) -> None:
        self._facade = facade

    def collect(self) -> Iterable[Any]:
        try:
            return self._facade.collect()
        except Exception:  # the pipeline is stopping: this scrape has the API's side only
            return []


class RemoteDrift:
    """The pipeline's drift monitor as the drift routes read it."""

    def __init__(self, facade: Any) -> None:
        self._facade = facade
        self._state: tuple[str | None, bool, str | None] | None = None

    def _read(self) -> tuple[str | None, bool, str | None]:
        self._state = self._facade.drift_state()
        return self._state

    @property
    def loaded_version(self) -> str | None:
        return self._read()[0]

    @property
    def available(self) -> bool:
        return self._read()[1]

    @property
    def version(self) -> str | None:
        return self._read()[2]

    def report(self, identity: str) -> DriftReport | None:
        return self._facade.drift_report(identity)

    def reports(self) -> list[DriftReport]:
        return self._facade.drift_reports()

    def counts(self) -> dict[str, int]:
        return self._facade.drift_counts()


class RemoteService:
    """The :class:`~netwarden.api.state.ServiceState` (and review state) of the API process:
    its own store connections, the pipeline's memory through the facade."""

    def __init__(
        self,
        config: ServiceConfig,
        pipeline: PipelineProcess,
        *,
        applier: PolicyApplier | None,
    ) -> None:
        self.config = config
        self.pipeline = pipeline
        facade = pipeline.facade
        self._facade = facade
        self.store = AnomalyStore(config.store_url)
        self.proposal_store = ProposalStore(
            config.store_url, require_second_approver=config.remediation.require_second_approver
        )
        self.change_store = ChangeStore(config.store_url)
        self.applier = applier
        #: What /metrics serves: the pipeline process's metrics, collected there.
        self.registry = CollectorRegistry()
        self.registry.register(_RemoteCollector(facade))
        self.drift = RemoteDrift(facade)
        self._stop = threading.Event()
        self._nudger = threading.Thread(target=self._hand_on_decisions, daemon=True)
        self._nudger.start()

    def source_status(self) -> SourceStatus:
        return self._facade.status()[0]

    def current_model(self) -> ModelVersion | None:
        return self._facade.status()[1]

    @property
    def windows_recorded(self) -> int:
        return int(self._facade.status()[2])

    def model_versions(self) -> list[ModelVersion]:
        return list_versions(self.config.model_dir)

    def model_gate(self, version: str) -> dict[str, Any] | None:
        return read_gate(self.config.model_dir, version)

    def switch_model(
        self, version: str | None, *, action: str, actor: str, reason: str = ""
    ) -> tuple[str | None, str]:
        """Made in the pipeline process, which loads the version at once."""
        previous, now = self._facade.switch_model(version, action, actor, reason)
        return previous, now

    def policy_applier(self) -> PolicyApplier | None:
        return self.applier

    def recent_flows(self) -> list[Any] | None:
        return self._facade.recent_flows()

    def containment_inputs(self, before: datetime) -> dict[str, Any]:
        return self._facade.containment_inputs(before)

    def _hand_on_decisions(self) -> None:
        """A decision recorded through this API reaches the pipeline at once."""
        decided = self.change_store.decided
        while not self._stop.is_set():
            if decided.wait(0.5):
                decided.clear()
                with contextlib.suppress(Exception):
                    self._facade.decided()

    def close(self) -> None:
        self._stop.set()
        self._nudger.join(2.0)
        for store in (self.proposal_store, self.change_store, self.store):
            with contextlib.suppress(Exception):
                store.close()
        if self.applier is not None:
            self.applier.api_client.close()

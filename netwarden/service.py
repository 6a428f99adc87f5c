"""``netwarden serve``: the running service, composed of small parts.

Threads, each with one job, joined by a bounded queue and the store:

* the **source** thread runs the live source (file, stdin, generator), handing batches of flows
  to a bounded queue; when the pipeline falls behind, the queue is full and the source waits
  (backpressure, never unbounded buffering);
* the **pipeline** thread feeds the :class:`~netwarden.detector.live.LiveDetector` (windows,
  scores, store), moves event time on when the stream is quiet, reloads the model when a new
  version becomes current and samples the ingest metrics;
* the **proposer** thread proposes a containment for every new anomaly the pipeline hands it
  through a bounded queue, so proposing (store reads and writes) never holds up ingest: one
  per incident, for the attacker's (or a subject's) anomaly, never for a victim's (the
  attacker's containment covers it);
* the **alerts** thread runs the :class:`~netwarden.detector.alerts.alerting.Alerter` (outbox sync and
  delivery), when a sink is configured;
* the main thread serves the HTTP API (uvicorn) until SIGINT/SIGTERM, then stops the others in
  the order data flows (:meth:`Service.shutdown`): source, pipeline, proposer, alerts, stores.

With ``api.pipeline_process`` (the default) the threads above run in a process of their own and
the API in the parent, sharing the store (:mod:`netwarden.pipeline_process`): the parent's
main thread serves the API, and on SIGINT/SIGTERM stops the pipeline process, which shuts its
service down as above.

**Changes** (:mod:`netwarden.detector.change_store`): after each judged batch the pipeline
writes the changes its tracker created or touched to the store; people accept or reject them
through the API, which records the decision at once; the pipeline, the only thread that
touches the edge memory and the tracker, applies decisions on its next turn (at once for a
decision made in this process, else within :data:`DECISION_POLL` seconds, and on start for
those made while it was down). On start, open changes (and recently rejected ones, whose
traffic must not come back as a new change) are restored into the tracker, so a restart
neither reports them again nor forgets them.

Approved proposals are applied through the API when ``remediation.kubernetes`` names a cluster
(in-cluster service account or a kubeconfig); the service hands the API its
:class:`~netwarden.remediation.apply.PolicyApplier`.

On the embedded default (generator source, empty model folder) the service first trains a model
on generated history, so a new user sees live detections without a cluster.
"""

from __future__ import annotations

import math
import os
import queue
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from rich.console import Console

from netwarden.api.auth import TokenTable, load_tokens, new_token
from netwarden.commands.lifecycle import history_rows, labels_of
from netwarden.commands.retraining import ALERT_KEY as RETRAIN_ALERT_KEY
from netwarden.commands.retraining import RetrainSchedule, retrain_alert
from netwarden.config import ServiceConfig
from netwarden.detector.alerts import slack
from netwarden.detector.alerts.alerting import Alerter, AlertSettings
from netwarden.detector.change_store import ACCEPTED, REJECTED, ChangeRecord, ChangeStore
from netwarden.detector.change_store import OPEN as CHANGE_OPEN
from netwarden.detector.change_store import STATES as CHANGE_STATES
from netwarden.detector.changes import Change
from netwarden.detector.drift import DriftMonitor
from netwarden.detector.incidents import VICTIM
from netwarden.detector.lifecycle import OPEN, STATES
from netwarden.detector.live import DetectorMetrics, LiveDetector
from netwarden.detector.severity import SEVERITIES, score_range
from netwarden.detector.store import AnomalyRecord, AnomalyStore
from netwarden.errors import UserError
from netwarden.ingest.metrics import IngestMetrics
from netwarden.ingest.sources import Source, SourceStatus, open_source
from netwarden.ingest.windows import WindowBuilder, WindowConfig
from netwarden.models.artifact import ModelVersion
from netwarden.models.edges import load_memory, save_memory
from netwarden.models.registry import CurrentModel, read_gate, rollback_target, set_current
from netwarden.remediation.apply import PolicyApplier
from netwarden.remediation.containment import Containment, peer_rules
from netwarden.remediation.normal import NormalEdges, RecentFlows
from netwarden.remediation.proposals import ProposalStore, propose_containment
from netwarden.remediation.propose import Proposer as FlowLearner
from netwarden.remediation.propose import policy_name
from netwarden.storage.history import HistoryWriter, flow_record

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

__all__ = ["Proposer", "Service", "build_service", "kubernetes_client", "serve"]

#: Batches waiting between the source and the pipeline (64 flows each): the backpressure bound.
QUEUE_BATCHES = 256
#: New anomalies waiting for their containment proposal (each a few store reads, a write and
#: the containment's replay against the recent flows: up to about a second on the default
#: 50,000). A burst larger than this (a scan across the cluster) is more than anyone reviews
#: one by one, and the rest can be proposed through the API, so past it anomalies are skipped
#: and counted rather than held up or buffered.
PROPOSAL_QUEUE = 1000
#: Seconds :meth:`Service.shutdown` may take. Kubernetes kills a pod 30 s after SIGTERM
#: (``terminationGracePeriodSeconds``) and uvicorn's own shutdown comes first.
SHUTDOWN_SECONDS = 20.0
#: Seconds between the pipeline's looks at the store for decisions on changes made elsewhere
#: (another process on the database); decisions made through this process's API are applied
#: on its next turn.
DECISION_POLL = 5.0
#: Seconds the workloads' selector labels learned from the recent flows are reused by the
#: containments proposed meanwhile.
SELECTORS_TTL = 60.0
#: Incidents whose proposals' peer rules the proposer remembers (see Service.propose_containment).
_INCIDENTS_KEPT = 10_000
#: Put in the pipeline's queue after the last batch: process what came before, then stop.
_DRAIN: Final[list[Any]] = []


class _AnomalyCollector(Collector):
    """``netwarden_anomalies{state,severity}``, counted in the store at scrape time."""

    def __init__(self, store: AnomalyStore) -> None:
        self.store = store

    def collect(self) -> Any:
        family = GaugeMetricFamily(
            "netwarden_anomalies",
            "Anomalies in the store, by state and severity.",
            labels=["state", "severity"],
        )
        for state in STATES:
            for level in SEVERITIES:
                low, high = score_range(level)
                family.add_metric(
                    [state, level], self.store.count(state=state, min_score=low, max_score=high)
                )
        yield family


class _ChangeCollector(Collector):
    """``netwarden_changes{status}``, counted in the change store at scrape time."""

    def __init__(self, store: ChangeStore) -> None:
        self.store = store

    def collect(self) -> Any:
        family = GaugeMetricFamily(
            "netwarden_changes", "Changes in the store, by status.", labels=["status"]
        )
        try:
            counts = self.store.counts()
        except Exception:  # a closed or unreachable store: unknown, not a failed scrape
            counts = dict.fromkeys(CHANGE_STATES, math.nan)
        for status in CHANGE_STATES:
            family.add_metric([status], counts[status])
        yield family


@dataclass(frozen=True, slots=True)
class _ContainmentInputs:
    """What the containment of an anomaly is built from, besides the anomaly."""

    normal: NormalEdges
    flows: RecentFlows | None
    selectors: dict[str, dict[str, str]] | None


class Proposer:
    """Proposes containments on its own thread, so the pipeline never waits for one.

    The pipeline hands over the anomalies it recorded with :meth:`submit`, which never blocks:
    with ``maxsize`` anomalies already waiting, a new one is skipped, counted in
    ``netwarden_proposals_skipped_total`` and logged once per burst (it is offered again the
    next time the pipeline updates it; a reviewer can always propose through the API). Only
    an attacker's or a subject's anomaly is proposed: a victim's is linked to its attacker's
    incident, whose containment targets the attacker (see :meth:`Service.propose_containment`
    for the later anomalies of an incident).
    :meth:`close` lets the worker finish what is queued, within a time limit.
    """

    def __init__(
        self,
        propose: Callable[[AnomalyRecord], Any],
        registry: CollectorRegistry,
        *,
        maxsize: int = PROPOSAL_QUEUE,
        log: Callable[[str], Any] = print,
    ) -> None:
        self.propose = propose
        self.log = log
        self.queue: queue.Queue[AnomalyRecord | None] = queue.Queue(maxsize=maxsize)
        self.skipped = Counter(
            "netwarden_proposals_skipped",
            "New anomalies given no containment proposal because the proposer was behind.",
            registry=registry,
        )
        Gauge(
            "netwarden_proposals_waiting",
            "New anomalies waiting for their containment proposal.",
            registry=registry,
        ).set_function(self.queue.qsize)
        self._submitted: set[int] = set()  # pipeline thread only
        self._burst = 0  # anomalies skipped since the queue last had room
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="proposer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, records: list[AnomalyRecord]) -> None:
        """Queue the open anomalies not queued before; never blocks (the pipeline calls it)."""
        for record in records:
            role = getattr(record, "role", "")
            if record.state != OPEN or record.id in self._submitted or role == VICTIM:
                continue
            try:
                self.queue.put_nowait(record)
            except queue.Full:
                self.skipped.inc()
                if not self._burst:
                    self.log(
                        f"proposer behind ({self.queue.maxsize} anomalies waiting): anomaly "
                        f"{record.id} and others of this burst get no containment proposal now "
                        "(propose through POST /api/v1/proposals)"
                    )
                self._burst += 1
                continue
            self._submitted.add(record.id)
            if self._burst:
                self.log(f"proposer caught up; {self._burst} anomalies were skipped")
                self._burst = 0

    def close(self, timeout: float) -> bool:
        """Finish what is queued within ``timeout`` seconds, then stop; True when it did."""
        if self._thread.is_alive():
            deadline = time.monotonic() + timeout
            try:
                self.queue.put(None, timeout=max(0.01, timeout))
            except queue.Full:
                pass
            self._thread.join(max(0.0, deadline - time.monotonic()))
            if self._thread.is_alive():
                self._halt.set()
                self._thread.join(1.0)
        left = sum(1 for r in list(self.queue.queue) if r is not None)
        if left:
            self.log(f"stopped with {left} anomalies waiting for a containment proposal")
        return not self._thread.is_alive()

    def _run(self) -> None:
        while not self._halt.is_set():
            record = self.queue.get()
            if record is None:
                return
            try:
                self.propose(record)
            except Exception as exc:  # one bad anomaly must not stop the others' proposals
                self.log(f"containment proposal for anomaly {record.id} failed: {exc}")


class Service:
    """The parts of a running service, and the :class:`~netwarden.api.state.ServiceState`
    the API reads."""

    def __init__(
        self,
        config: ServiceConfig,
        source: Source,
        model: CurrentModel,
        store: AnomalyStore,
        registry: CollectorRegistry,
        *,
        alerter: Alerter | None = None,
        applier: PolicyApplier | None = None,
        log: Callable[[str], Any] = print,
        queue_batches: int = QUEUE_BATCHES,
        proposal_queue: int = PROPOSAL_QUEUE,
        change_store: ChangeStore | None = None,
    ) -> None:
        self.config = config
        self.source = source
        self.model = model
        self._store = store
        self._registry = registry
        self.alerter = alerter
        self.applier = applier
        self.log = log
        #: Stopping is in steps (see shutdown): the source first, everything at once only
        #: when the time is up.
        self._stop_source = threading.Event()
        self._stop_alerts = threading.Event()
        self._halt = threading.Event()
        self.queue: queue.Queue[list[Any] | None] = queue.Queue(maxsize=queue_batches)
        #: Windows as the model holder expects them: the service's one WindowConfig.
        self.builder = WindowBuilder(model.windows)
        #: The edge memory the service keeps across restarts (netwarden.models.edges).
        self._memory_path = config.data_dir / "edges.json"
        self.ingest_metrics = IngestMetrics(registry)
        self.proposal_store = ProposalStore(
            store.url, require_second_approver=config.remediation.require_second_approver
        )
        self.proposer = Proposer(
            self.propose_containment, registry, maxsize=proposal_queue, log=log
        )
        #: Changes (netwarden.detector.change_store), on the anomaly store's database.
        self.change_store = change_store if change_store is not None else ChangeStore(store.url)
        self._changes_reported = Counter(
            "netwarden_changes_reported",
            "Changes (ordinary-looking new traffic) found and recorded for review.",
            registry=registry,
        )
        #: Changes the tracker handed over that are not in the store yet (a failed write).
        self._unsaved: dict[str, Change] = {}
        grace = config.remediation.claim_grace_seconds

        def stuck() -> float:
            try:
                return len(self.proposal_store.stuck(grace))
            except Exception:  # a closed or unreachable store: unknown, not a failed scrape
                return math.nan

        Gauge(
            "netwarden_proposals_stuck",
            "Proposals claimed for an apply or rollback longer than "
            "remediation.claim_grace_seconds ago (their process presumably died): "
            "POST /api/v1/proposals/{id}/recover finishes them.",
            registry=registry,
        ).set_function(stuck)
        #: Recent flows, to simulate proposals against (GET/POST /api/v1/proposals/{id}/...);
        #: the pipeline appends while the proposer and API requests copy.
        self._history: deque[Any] = deque(maxlen=config.remediation.flow_history)
        self._history_lock = threading.Lock()
        self._history_added = 0  # flows ever put in the history: numbers its flows in the stream
        #: What the containments of one batch of anomalies share (see _containment_inputs).
        self._containment_batch: tuple[tuple[Any, ...], _ContainmentInputs] | None = None
        self._resolved: RecentFlows | None = None  # the last batch's, see _recent_resolved
        #: incident -> contained workload -> the peer rules of its proposals so far (the
        #: proposer's thread only; see propose_containment).
        self._incident_rules: dict[str, dict[str, frozenset[str]]] = {}
        #: (when, selectors) learned from the recent flows (see _selectors).
        self._selectors_cache: tuple[float, dict[str, dict[str, str]]] | None = None
        #: Whether the model still fits each identity (netwarden.detector.drift): metrics, API
        #: (GET /api/v1/drift) and, with an alerter, NetwardenModelDrift alerts; judged as the
        #: drift section of the configuration says.
        self.drift = DriftMonitor(model, config.drift_config, registry=registry)
        if alerter is not None:
            alerter.follow_drift(self.drift)
        self.detector = LiveDetector(
            self.builder,
            model,
            store,
            metrics=DetectorMetrics(registry, source.kind),
            on_recorded=self.proposer.submit if config.remediation.propose_containment else None,
            memory=load_memory(self._memory_path, log),
            on_judged=self._judged,
        )
        #: The window history (netwarden.storage.history): what retraining learns from.
        self.history: HistoryWriter | None = None
        if config.history.enabled:
            h = config.history
            self.history = HistoryWriter(
                config.history_dir,
                flush_seconds=h.flush_seconds,
                retention_days=h.retention_days,
                flows=h.flows,
                labels=lambda: labels_of(self._store, self.change_store),
                log=log,
            )
        #: Retraining on retrain.schedule (netwarden.commands.retraining), when set.
        self.retraining = (
            RetrainSchedule(
                config.retrain.schedule,
                retrain_command(config),
                registry,
                timeout=config.retrain.timeout_seconds,
                log=log,
                alert=self._retrain_alert if alerter is not None else None,
                before=self.history.flush if self.history is not None else None,
            )
            if config.retrain.schedule
            else None
        )
        #: Windows scored and recorded by the pipeline (builder.stats counts those closed).
        self.windows_recorded = 0
        self._model_info = Gauge(
            "netwarden_model_info",
            "The model version scoring now (1).",
            ["version"],
            registry=registry,
        )
        self._source_up = Gauge(
            "netwarden_source_up", "1 while the live source is up.", ["source"], registry=registry
        )
        registry.register(_AnomalyCollector(store))
        registry.register(_ChangeCollector(self.change_store))
        self._threads: dict[str, threading.Thread] = {}
        self._shown_version: str | None = None
        self._stopped: bool | None = None

    # -- ServiceState ---------------------------------------------------------------------

    @property
    def store(self) -> AnomalyStore:
        return self._store

    @property
    def registry(self) -> CollectorRegistry:
        return self._registry

    def source_status(self) -> SourceStatus:
        return self.source.status()

    def recent_flows(self) -> list[Any] | None:
        """The flows kept for simulation, oldest first (None when history is off)."""
        if not self._history.maxlen:
            return None
        with self._history_lock:
            return list(self._history)

    def policy_applier(self) -> PolicyApplier | None:
        """The applier of ``remediation.kubernetes`` (None when it is off)."""
        return self.applier

    def model_versions(self) -> list[ModelVersion]:
        return self.model.versions()

    def current_model(self) -> ModelVersion | None:
        return self.model.current()

    def model_gate(self, version: str) -> dict[str, Any] | None:
        """The promotion gate's report of ``version`` (None: not made by retraining)."""
        return read_gate(self.model.model_dir, version)

    def switch_model(
        self, version: str | None, *, action: str, actor: str, reason: str = ""
    ) -> tuple[str | None, str]:
        """Promote ``version``, or roll back (to ``version`` or the previous one), then load
        it at once; (previous, now current). ValueError when it cannot be made current (the
        current model stays)."""
        target = version or rollback_target(self.model.model_dir)
        previous = set_current(
            self.model.model_dir,
            target,
            actor=actor,
            action=action,
            reason=reason,
            key=self.model.key,
        )
        self.model.refresh()  # thread-safe; the pipeline's next batch scores with it
        self.log(f"model {target} made current by {actor} ({action}; was {previous})")
        return previous, target

    # -- threads --------------------------------------------------------------------------

    def _judged(self, closed: list[Any], scored: list[Any]) -> None:
        """The pipeline's judged windows: counted for drift, kept in the history."""
        try:
            self.drift.observe(closed, scored)
        except Exception as exc:  # drift is a side view: never hold up recording and alerts
            self.log(f"drift: windows not counted: {type(exc).__name__}: {exc}")
        self._to_history(closed, scored)

    def _to_history(self, closed: list[Any], scored: list[Any]) -> None:
        """The pipeline's judged windows into the history buffer (written on its own thread)."""
        if self.history is not None:
            loaded = self.model.loaded
            self.history.add_windows(
                history_rows(closed, scored, loaded.version if loaded is not None else "")
            )

    def _retrain_alert(self, firing: bool, summary: str) -> None:
        """Failing scheduled retraining, through the outbox: the Alertmanager alert, and in
        Slack a message when it starts failing and one when it succeeds again."""
        assert self.alerter is not None
        url = self.alerter.settings.public_url
        alert = retrain_alert(firing=firing, summary=summary, now=datetime.now(UTC), public_url=url)
        title = (
            ":warning: Scheduled retraining is failing"
            if firing
            else ":white_check_mark: Scheduled retraining succeeds again"
        )
        message = slack.notice(
            title=title,
            text=summary,
            lines=[summary, "The current model keeps scoring." if firing else "Runs go on."],
            link=(f"{url.rstrip('/')}/api/v1/models", "Models"),
            footer="netwarden_retrain_runs_total, the service's log · netwarden",
        )
        self.alerter.condition(RETRAIN_ALERT_KEY, firing=firing, alert=alert, slack_message=message)

    def start(self) -> None:
        self._restore_changes()
        if self.history is not None:
            self.history.start()
        if self.retraining is not None:
            self.retraining.start()
        self._threads = {
            "source": threading.Thread(target=self._run_source, name="source", daemon=True),
            "pipeline": threading.Thread(target=self._run_pipeline, name="pipeline", daemon=True),
        }
        if self.alerter is not None:
            self._threads["alerts"] = threading.Thread(
                target=self._run_alerts, name="alerts", daemon=True
            )
        self.proposer.start()
        for thread in self._threads.values():
            thread.start()
        for record in self.proposal_store.stuck(self.config.remediation.claim_grace_seconds):
            since = f"{record.claimed_at:%Y-%m-%d %H:%M:%S} UTC"
            self.log(
                f"proposal {record.id} is stuck {record.state} since {since} (its process "
                "presumably died): an admin finishes it from what the cluster holds with "
                f"POST /api/v1/proposals/{record.id}/recover"
            )

    def shutdown(self, timeout: float = SHUTDOWN_SECONDS) -> bool:
        """Stop in the order data flows, so nothing that was read and closed is lost.

        The source stops first; the pipeline processes the batches queued before it and scores
        the closed windows it held back for batching (windows still open stay unscored, as a
        partial window would read as a quiet one); the proposer finishes its queue; the alerter
        makes a last pass (what it cannot deliver stays in the durable outbox, for the next
        start); then the stores close. All within ``timeout`` seconds: a step still running then
        is stopped, and a store a thread may still use is left open (the process ends anyway).
        Returns True when every thread finished, so the caller may close the anomaly store.
        """
        if self._stopped is not None:
            return self._stopped
        deadline = time.monotonic() + timeout

        def left() -> float:
            return max(0.0, deadline - time.monotonic())

        self._stop_source.set()
        source = self._join("source", left())
        if self._alive("pipeline"):
            self._put(_DRAIN, deadline)
        pipeline = self._join("pipeline", left())
        if not pipeline:
            self._halt.set()  # time is up: skip the batches still queued
            pipeline = self._join("pipeline", 2.0)
        proposer = self.proposer.close(left())
        if self.retraining is not None:
            self.retraining.stop(min(5.0, left()))
        if self.history is not None:
            try:
                self.history.close(min(5.0, left()))
            except Exception as exc:
                self.log(f"history not written at shutdown: {type(exc).__name__}: {exc}")
        self._stop_alerts.set()
        alerts = self._join("alerts", left())
        if not alerts:
            self.log(
                "alerts still being delivered at shutdown: undelivered messages stay in the "
                "outbox and are sent after the next start"
            )
        closed, open_ = self.builder.stats.windows_closed, self.builder.open_windows
        self.log(
            f"pipeline stopped: {closed} windows closed, {self.windows_recorded} recorded; "
            f"{open_} windows still open were not scored"
        )
        if not source:
            self.log(f"source {self.source.name} did not stop in time")
        if not pipeline:
            self.log("the pipeline did not stop in time: the stores are left open")
        if pipeline and proposer:
            self.proposal_store.close()
        if pipeline and alerts:
            self.change_store.close()
        if alerts and self.alerter is not None:
            self.alerter.close()
        if self.applier is not None:
            self.applier.api_client.close()
        self._halt.set()
        self._stopped = pipeline and proposer and alerts
        return self._stopped

    def _alive(self, name: str) -> bool:
        thread = self._threads.get(name)
        return thread is not None and thread.is_alive()

    def _join(self, name: str, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a thread; True when it is not running."""
        thread = self._threads.get(name)
        if thread is not None:
            thread.join(timeout)
        return not self._alive(name)

    def _put(self, item: list[Any] | None, deadline: float = math.inf) -> bool:
        """Queue ``item`` for the pipeline, waiting while the queue is full (backpressure)."""
        while not self._halt.is_set() and time.monotonic() < deadline:
            try:
                self.queue.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def _emit(self, batch: list[Any]) -> None:
        # Even when the source is being stopped, a batch it read goes through: the pipeline
        # drains the queue before it stops.
        self._put(batch)

    def _run_source(self) -> None:
        try:
            self.source.run(self._emit, self._stop_source)
        except Exception as exc:
            self.log(f"source {self.source.name} failed: {exc}")
        finally:
            if not self._stop_source.is_set():
                self._put(None)  # end of stream: close what is open

    def _run_pipeline(self) -> None:
        config = self.config
        next_reload = next_metrics = next_purge = next_decisions = 0.0
        while not self._halt.is_set():
            try:
                batch = self.queue.get(timeout=0.5)
            except queue.Empty:
                batch = []
            if batch is _DRAIN:
                break
            try:
                if batch is None:
                    self.windows_recorded += len(self.detector.finish())
                    self.log(f"source {self.source.name} ended; open windows closed and scored")
                elif batch:
                    if self._history.maxlen:
                        with self._history_lock:
                            self._history.extend(batch)
                            self._history_added += len(batch)
                    if self.history is not None and self.history.keep_flows:
                        self.history.add_flows([flow_record(f) for f in batch])
                    scored = self.detector.add(batch, more=not self.queue.empty())
                    self.windows_recorded += len(scored)
                else:
                    self.windows_recorded += len(self.detector.tick(config.windows.idle_close))
                now = time.monotonic()
                poll = now >= next_decisions
                if poll:
                    next_decisions = now + DECISION_POLL
                self._changes_turn(poll=poll)
                if now >= next_reload:
                    next_reload = now + config.models.reload_interval
                    self._reload_model()
                if now >= next_metrics:
                    next_metrics = now + 1.0
                    self._sample_metrics()
                if now >= next_purge:
                    next_purge = now + 3600.0
                    self._purge()
                    save_memory(self.detector.memory, self._memory_path, log=self.log)
            except Exception as exc:
                self.log(f"pipeline error (batch skipped): {type(exc).__name__}: {exc}")
        self._drain()

    def _drain(self) -> None:
        """On the way out (drained, or out of time): score the closed windows held back for
        batching (an infinite ``idle_close`` moves no event time, so it closes no open
        window)."""
        try:
            self.windows_recorded += len(self.detector.tick(math.inf))
            self._changes_turn(poll=True)
            self._sample_metrics()
            save_memory(self.detector.memory, self._memory_path, log=self.log)
        except Exception as exc:
            self.log(f"pipeline error while stopping: {type(exc).__name__}: {exc}")

    # -- changes (pipeline thread) ----------------------------------------------------------

    def _restore_changes(self) -> None:
        """Before the pipeline starts: the open changes back into the tracker (pending, not
        reported again), and recently rejected ones held (their traffic is not a new change
        while it goes on); decisions not applied yet are applied on the pipeline's first turn."""
        tracker = self.detector.judge.changes
        opened = self.change_store.by_status(CHANGE_OPEN)
        tracker.restore([r.to_change() for r in opened])
        rejected = [r for r in self.change_store.by_status(REJECTED) if r.applied_at is not None]
        if rejected:
            newest = max(r.last_seen for r in [*opened, *rejected])
            gap = timedelta(seconds=tracker.merge_gap)
            for r in rejected:
                if r.last_seen >= newest - gap:
                    tracker.keep_rejected(r.to_change())
        tracker.take_touched()  # nothing new: all of it is in the store already
        if opened:
            self.log(f"{len(opened)} open changes restored (waiting for review)")

    def _changes_turn(self, *, poll: bool) -> None:
        """Apply the decisions on changes made since the last turn (when this process made
        one, or ``poll``), then write the changes the tracker created or touched."""
        store = self.change_store
        if poll or store.decided.is_set():
            store.decided.clear()  # before reading: a decision made meanwhile sets it again
            for record in store.unapplied():
                self._apply_decision(record)
        self._unsaved.update((c.id, c) for c in self.detector.judge.changes.take_touched())
        if not self._unsaved:
            return
        created = store.upsert(list(self._unsaved.values()))
        self._unsaved = {}
        if created:
            self._changes_reported.inc(len(created))
            for record in created[:5]:
                self.log(f"change {record.change_id}: {record.description} (waiting for review)")
            if len(created) > 5:
                self.log(f"... and {len(created) - 5} more changes")

    def _apply_decision(self, record: ChangeRecord) -> None:
        """A person's decision, applied to the tracker and the edge memory (pipeline thread),
        then marked applied. One that cannot be applied is said so and marked all the same (a
        decision that fails every turn would hold up the others); a store that cannot be written
        leaves it for the next turn."""
        try:
            self._apply_to_tracker(record)
        except Exception as exc:
            self.log(
                f"change {record.change_id}: the {record.status} decision could not be applied "
                f"to the detector: {type(exc).__name__}: {exc}"
            )
        self.change_store.mark_applied(record.change_id)

    def _apply_to_tracker(self, record: ChangeRecord) -> None:
        judge = self.detector.judge
        tracker = judge.changes
        known = tracker.get(record.change_id)
        if record.status == ACCEPTED:
            if known is None:  # not in this process's tracker: learn it from the record
                tracker.restore([record.to_change()])
            change = tracker.accept(record.change_id)
            by_identity: dict[str, set[tuple[bool, str, int, int]]] = {}
            for identity, egress, peer, proto, port in change.edges:
                by_identity.setdefault(identity, set()).add((egress, peer, proto, port))
            for identity, keys in by_identity.items():
                judge.novelty.forget(identity, keys)
            save_memory(self.detector.memory, self._memory_path, log=self.log)
            self.log(f"change {record.change_id} accepted by {record.state_actor}: learned")
        elif record.status == REJECTED:
            tracker.keep_rejected(known or record.to_change())
            if self.config.remediation.propose_containment and record.anomaly_ids:
                self.proposer.submit(self.store.get_many(record.anomaly_ids))
            self.log(
                f"change {record.change_id} rejected by {record.state_actor}: anomalies "
                + ", ".join(str(i) for i in record.anomaly_ids)
            )

    def _run_alerts(self) -> None:
        assert self.alerter is not None
        self.alerter.run(self._stop_alerts)
        # The pipeline has stopped: put what its last windows owe into the outbox (durable)
        # and try once to deliver it.
        try:
            self.alerter.sync()
            self.alerter.deliver()
        except Exception as exc:
            self.log(f"last alerting pass failed (the outbox keeps what is owed): {exc}")

    def propose_containment(self, record: AnomalyRecord) -> None:
        """A new anomaly comes with the policy change that would contain it, as a proposal a
        reviewer approves (or not) through the API; nothing is applied here. Runs on the
        proposer's thread.

        A later anomaly of an incident already proposed for is proposed only when its
        containment names a peer none of the incident's proposals for that workload name (an
        exfiltration minutes after a lateral movement by the same attacker): the same peers
        again (a scan going on) are one decision, already offered."""
        if record.state != OPEN or self.proposal_store.list(anomaly_id=record.id, limit=1):
            return
        incident = getattr(record, "incident", "")
        offered = self._incident_rules.get(incident, {}) if incident else {}

        def novel(change: Containment) -> str:
            if not peer_rules(change.policy) - offered.get(change.identity, frozenset()):
                return (
                    f"incident {incident}'s proposals for {change.identity} already name every "
                    "peer its containment would"
                )
            return ""

        current = self.proposal_store.latest_applied(
            record.namespace, policy_name(record.workload, "baseline")
        )
        inputs = self._containment_inputs(record.first_window_start)
        try:
            made = propose_containment(
                self.proposal_store,
                record,
                current=current.policy if current is not None else None,
                source="current policy from netwarden's records",
                actor="netwarden",
                normal=inputs.normal,
                flows=inputs.flows,
                selectors=inputs.selectors,
                novel=novel if offered else None,
            )
        except ValueError as exc:  # e.g. nothing to contain in its examples: say so, go on
            self.log(f"no containment proposed for anomaly {record.id}: {exc}")
            return
        if incident:
            rules = self._incident_rules.setdefault(incident, {})
            rules[made.identity] = rules.get(made.identity, frozenset()) | peer_rules(made.policy)
            if len(self._incident_rules) > _INCIDENTS_KEPT:
                del self._incident_rules[next(iter(self._incident_rules))]
        # No simulation here: one records nothing (remediation.proposals), so a reviewer runs
        # it on demand (POST /api/v1/proposals/{id}/simulate, against recent_flows()); the
        # proposal keeps the warnings its containment's replay found.

    def containment_inputs(self, before: datetime) -> dict[str, Any]:
        """``propose_containment``'s keyword arguments for an anomaly whose first window starts
        at ``before``: the same normal edges, flows and labels the proposer thread uses, for the
        containments reviewers ask for through the API."""
        inputs = self._containment_inputs(before)
        flows = inputs.flows.flows if inputs.flows is not None else None  # plain: it is pickled
        return {"normal": inputs.normal, "flows": flows, "selectors": inputs.selectors}

    def _containment_inputs(self, before: datetime) -> _ContainmentInputs:
        """The recent flows, the workloads' labels learned from them and the normal edges (the
        model's baselines and the flows before ``before``, the anomaly's first window), shared
        by the anomalies of one batch: those opened by the same windows have the same first
        window, so they are built once per batch (a pass over up to ``flow_history`` flows
        each), not once per anomaly; the flows' ends are resolved once for the batch
        (:class:`RecentFlows`), so each anomaly's containment reads only the flows of its
        workloads. A first window was closed when it was scored, so the flows before it are all
        in the history already: reusing them misses nothing."""
        loaded = self.model.loaded
        key = (loaded.version if loaded is not None else None, before)
        if self._containment_batch is not None and self._containment_batch[0] == key:
            return self._containment_batch[1]
        flows = self._recent_resolved()
        normal = NormalEdges.from_memory(loaded.bundle.edges) if loaded else NormalEdges()
        if flows:
            normal = NormalEdges.from_flows(flows, before=before).merge(normal)
        inputs = _ContainmentInputs(normal=normal, flows=flows, selectors=self._selectors(flows))
        self._containment_batch = (key, inputs)
        return inputs

    def _recent_resolved(self) -> RecentFlows | None:
        """The recent flows with their ends resolved, reusing what the last batch resolved for
        the flows still in the history (the proposer's thread only)."""
        if not self._history.maxlen:
            return None
        with self._history_lock:
            flows = list(self._history)
            start = self._history_added - len(flows)
        self._resolved = RecentFlows(flows, start=start, previous=self._resolved)
        return self._resolved

    def _selectors(self, flows: RecentFlows | None) -> dict[str, dict[str, str]] | None:
        """The workloads' selector labels learned from the recent flows, learned again at most
        every :data:`SELECTORS_TTL` seconds: a workload's labels change with a release, not
        from one batch of anomalies to the next, and learning them is a pass over every recent
        flow (during an attack on many workloads it was most of the proposer's time)."""
        if not flows:
            return None
        now = time.monotonic()
        cached = self._selectors_cache
        if cached is None or now - cached[0] > SELECTORS_TTL:
            cached = self._selectors_cache = (now, FlowLearner().add_all(flows).selectors())
        return cached[1]

    def _reload_model(self) -> None:
        changed = self.model.refresh()
        loaded = self.model.loaded
        if changed and loaded is not None:
            self.log(f"scoring with model {loaded.version}")
        if self.model.error:
            self.log(self.model.error)
        version = loaded.version if loaded is not None else None
        if version != self._shown_version:
            self._model_info.clear()
            if version is not None:
                self._model_info.labels(version).set(1)
            self._shown_version = version

    def _purge(self) -> None:
        keep = timedelta(days=self.config.store.window_retention_days)
        deleted = self.store.purge_windows(datetime.now(UTC) - keep)
        if deleted:
            self.log(f"deleted {deleted:,} normal windows older than {keep.days} days")

    def _sample_metrics(self) -> None:
        self.ingest_metrics.observe(
            self.source.stats, self.builder.stats, self.builder.open_windows
        )
        self._source_up.labels(self.source.kind).set(1 if self.source.status().up else 0)


# -- setting up -------------------------------------------------------------------------------


def retrain_command(config: ServiceConfig) -> list[str]:
    """The ``netwarden retrain`` arguments of scheduled retraining: this service's model
    folder, history, store, live edge memory, signing key and retrain.* settings."""
    r = config.retrain
    command = [
        "retrain",
        "--model-dir",
        str(config.model_dir),
        "--history",
        str(config.history_dir),
        "--store",
        config.store_url,
        "--edges",
        str(config.data_dir / "edges.json"),
        "--signing-key",
        str(config.model_signing_key_file),
        "--days",
        f"{r.days:g}",
        "--validation-days",
        f"{r.validation_days:g}",
        "--gate-ratio",
        f"{r.gate_ratio:g}",
        "--gate-tolerance",
        f"{r.gate_tolerance:g}",
        "--keep-versions",
        str(config.models.keep_versions),
    ]
    return command if r.promote else [*command, "--no-promote"]


def _alert_settings(config: ServiceConfig, public_url: str) -> AlertSettings | None:
    a = config.alerts
    if not a.alertmanager_url and not a.slack_webhook_url:
        return None
    try:
        return AlertSettings(
            alertmanager_url=a.alertmanager_url,
            slack_webhook_url=a.slack_webhook_url,
            public_url=public_url,
            resend_interval=a.resend_interval,
            group_wait=a.group_wait,
            slack_max_messages=a.slack_max_messages,
            slack_rate_interval=a.slack_rate_interval,
            backoff_initial=a.backoff_initial,
            backoff_max=a.backoff_max,
            request_timeout=a.request_timeout,
            firing_hold=a.firing_hold,
            slack_send_resolved=a.slack_send_resolved,
            notify_changes=a.notify_changes,
        )
    except ValueError as exc:
        raise UserError(f"alerts: {exc}") from None


def _tokens(config: ServiceConfig, console: Console) -> TokenTable:
    """The configured tokens; on the embedded default (none configured), one admin token made
    once and kept in the data folder, so a new user can use the API at once."""
    from netwarden.api.auth import TokenConfigError, tokens_from_file

    try:
        if config.api.tokens_file is not None or config.api_tokens:
            return load_tokens(config.api.tokens_file, config.api_tokens)
        token_file = config.data_dir / "admin.token"
        entries_file = config.data_dir / "tokens.yaml"
        if not entries_file.exists():
            token, entry = new_token("local-admin", "admin")
            config.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(token + "\n")
            entries_file.write_text(
                "# API tokens of this embedded service (hashed); the admin token is in "
                "admin.token\n" + yaml.safe_dump([entry.to_dict()])
            )
            console.print(
                f"created an admin API token for this data folder: {token_file}", markup=False
            )
        return tokens_from_file(entries_file)
    except TokenConfigError as exc:
        raise UserError(str(exc)) from None


def _signing_key(config: ServiceConfig) -> bytes:
    """The key model versions must be signed with: ``models.signing_key_file``, or on the
    embedded default one made once in the data folder (mode 0600), so its models are signed
    without any setup."""
    from netwarden.models.signing import SigningKeyError, ensure_key, load_key

    try:
        if config.models.signing_key_file is not None:
            return load_key(config.models.signing_key_file)
        return ensure_key(config.model_signing_key_file)
    except SigningKeyError as exc:
        raise UserError(f"models.signing_key_file: {exc}") from None


def _bootstrap(config: ServiceConfig, windows: WindowConfig, console: Console) -> None:
    """Train a first model on generated history ending now (embedded default), on the
    service's ``windows``, signed with the service's key."""
    from netwarden.commands.detection import train
    from netwarden.commands.traffic import generate

    g = config.generator
    hours = g.history_hours
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=hours)
    folder = config.data_dir / "history"
    console.print(
        f"no model in {config.model_dir}: training a first one on {hours:g} h of "
        "generated history (no attacks)",
        markup=False,
    )
    result = generate(
        folder,
        hours=hours,
        seed=g.seed,
        attacks=[],
        rate=g.rate,
        start=start.isoformat(),
        gzip=False,
        console=console,
    )
    train(
        [str(result.flows_path)],
        config.model_dir,
        window_config=windows,
        expected_rate=2e-4,
        min_windows=120,
        seed=g.seed,
        console=console,
        signing_key=config.models.signing_key_file or config.model_signing_key_file,
    )


def _source(
    config: ServiceConfig, registry: CollectorRegistry, log: Callable[[str], Any]
) -> Source:
    spec = config.source.spec
    try:
        if spec == "hubble" or spec.startswith("hubble:"):
            h = config.hubble
            options = h.model_dump(exclude={"server"})
            if spec == "hubble":
                options["server"] = h.server
            return open_source(spec, registry=registry, log=log, **options)
        if spec == "ebpf":
            e = config.ebpf
            return open_source(
                spec,
                node_name=e.node_name,
                identity_map=e.identity_map,
                kubernetes=e.kubernetes,
                udp_peers=e.udp_peers,
                cgroup_root=e.cgroup_root,
                log=log,
            )
        if spec == "generator":
            g = config.generator
            return open_source(
                spec,
                seed=g.seed,
                rate=g.rate,
                speed=g.speed,
                attacks=g.attacks or None,
                first_attack_after=g.first_attack_after,
                attack_every=g.attack_every,
            )
        if spec == "-":
            return open_source(spec)
        return open_source(spec, from_start=config.source.from_start)
    except ValueError as exc:
        raise UserError(f"source: {exc}") from None


def kubernetes_client(setting: str, context: str | None = None) -> ApiClient | None:
    """The Kubernetes API client ``remediation.kubernetes`` names: None for ``off``; the pod's
    service account for ``in-cluster`` (token and CA from the standard mounted paths, the API
    server from KUBERNETES_SERVICE_HOST/PORT; a rotated token is re-read); else the kubeconfig
    file at that path, with ``context`` or its current-context. UserError, in one line, when it
    cannot be used."""
    if setting == "off":
        return None
    from kubernetes import client, config
    from kubernetes.config import ConfigException

    if setting == "in-cluster":
        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)
        except ConfigException as exc:
            raise UserError(
                f"remediation.kubernetes: in-cluster: {exc} (not running in a Kubernetes pod "
                "with a service account? use a kubeconfig path, or off)"
            ) from None
        return client.ApiClient(configuration)
    path = Path(setting).expanduser()
    if not path.is_file():
        raise UserError(
            f"remediation.kubernetes: kubeconfig {path} not found (expected off, in-cluster or "
            "the path of a kubeconfig file)"
        )
    try:
        # persist_config=False: never write refreshed credentials back into the user's file
        return config.new_client_from_config(
            config_file=str(path), context=context, persist_config=False
        )
    except (ConfigException, yaml.YAMLError, OSError, TypeError, ValueError, KeyError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise UserError(
            f"remediation.kubernetes: kubeconfig {path} cannot be used: {reason}"
        ) from None


def _policy_applier(config: ServiceConfig, log: Callable[[str], Any]) -> PolicyApplier | None:
    r = config.remediation
    api_client = kubernetes_client(r.kubernetes, r.kubernetes_context)
    if api_client is None:
        return None
    log(
        f"approved proposals can be applied to the cluster at {api_client.configuration.host} "
        f"(remediation.kubernetes: {r.kubernetes})"
    )
    return PolicyApplier(api_client)


def _api_side(config: ServiceConfig, console: Console) -> tuple[TokenTable, PolicyApplier | None]:
    """What the API needs of its own: the data folder, the tokens and the Kubernetes client for
    applying (a bad kubeconfig fails here, before any model is trained)."""
    try:
        config.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"data_dir {config.data_dir}: cannot create: {exc.strerror}") from None
    tokens = _tokens(config, console)
    return tokens, _policy_applier(config, lambda line: console.print(line, markup=False))


def build_service(
    config: ServiceConfig,
    console: Console,
    *,
    registry: CollectorRegistry | None = None,
    public_url: str | None = None,
    api_side: bool = True,
) -> tuple[Service, TokenTable | None]:
    """Everything but the HTTP server: store, model (bootstrapped if needed), source, alerts,
    the Kubernetes client. ``public_url`` is the API's (links in alerts), default from the
    configuration. Without ``api_side`` (the pipeline in a process of its own, whose API
    process has them) there are no tokens and no Kubernetes client: the pipeline applies
    nothing."""
    tokens, applier = (
        _api_side(config, console) if api_side else (None, None)
    )  # before the bootstrap: fail fast

    def log(line: str) -> None:
        console.print(line, markup=False)

    windows = config.window_config
    key = _signing_key(config)
    model = CurrentModel(config.model_dir, windows=windows, key=key)
    model.refresh()
    if (
        model.loaded is None
        and model.error is None
        and config.source.spec == "generator"
        and config.models.bootstrap
    ):
        _bootstrap(config, windows, console)
        model.refresh()
    if model.error:
        console.print(f"warning: {model.error}", markup=False)
    elif model.loaded is None:
        console.print(
            f"warning: no model in {config.model_dir}: windows are built but not "
            "scored (and /readyz fails) until `netwarden train --model-dir "
            f"{config.model_dir} --signing-key {config.model_signing_key_file}` writes one",
            markup=False,
        )
    try:
        store = AnomalyStore(config.store_url)
    except Exception as exc:
        raise UserError(f"store {config.store_url}: cannot open: {exc}") from None
    registry = registry if registry is not None else CollectorRegistry()
    changes = ChangeStore(config.store_url)
    settings = _alert_settings(config, public_url or config.public_url())
    alerter = (
        Alerter(store, settings, registry=registry, changes=changes)
        if settings is not None
        else None
    )
    service = Service(
        config,
        _source(config, registry, log),
        model,
        store,
        registry,
        alerter=alerter,
        applier=applier,
        log=log,
        change_store=changes,
    )
    return service, tokens


def _listen(host: str, port: int) -> socket.socket:
    """The API's listening socket, bound here so the port is known before uvicorn starts
    (``api.port: 0`` picks a free one) and a port in use fails before any model is trained."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)  # uvicorn's backlog
    except OSError as exc:
        sock.close()
        raise UserError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc} (in use? set api.port or "
            "NETWARDEN_API__PORT)"
        ) from None
    return sock


def serve(config: ServiceConfig, *, console: Console) -> None:
    """Run until interrupted: the pipeline threads and the HTTP API."""
    from netwarden.pipeline_process import separate

    sock = _listen(config.api.host, config.api.port)
    port = int(sock.getsockname()[1])
    public = config.public_url(port)
    if separate(config):
        _serve_beside_pipeline(config, console, sock, public)
        return
    try:
        service, tokens = build_service(config, console, public_url=public)
        assert tokens is not None
    except BaseException:
        sock.close()
        raise
    server = _api_server(config, service, tokens, public, port)
    service.start()
    _say_serving(config, console, service.source.name, public)
    # uvicorn captures SIGINT/SIGTERM while it runs and re-raises them after its shutdown; a
    # no-op handler there lets the threads below stop cleanly and the command exit 0.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    try:
        server.run(sockets=[sock])
    finally:
        if service.shutdown():
            service.store.close()
        sock.close()
        if not server.started:
            raise UserError(f"the HTTP API did not start on {config.api.host}:{port}")


def _say_serving(config: ServiceConfig, console: Console, source: str, public: str) -> None:
    token_hint = ""
    if config.api.tokens_file is None and (config.data_dir / "admin.token").exists():
        token_hint = f' -H "Authorization: Bearer $(cat {config.data_dir / "admin.token"})"'
    console.print(f"netwarden is serving {source} on {public}", markup=False)
    console.print(f"  anomalies:  curl{token_hint} {public}/api/v1/anomalies", markup=False)
    console.print(
        f"  health:     {public}/readyz   metrics: {public}/metrics   "
        f"API description (viewer token): {public}/openapi.json",
        markup=False,
    )


def _api_server(
    config: ServiceConfig, state: Any, tokens: TokenTable, public: str, port: int
) -> Any:
    """The uvicorn server of the API of ``state`` (this process's service, or the API's view
    of the pipeline process), as the configuration's api section says."""
    import uvicorn

    from netwarden.api.app import create_app

    app = create_app(
        state,
        tokens,
        public_url=public,
        max_body_bytes=config.api.max_body_bytes,
        listing_cache_seconds=config.api.listing_cache_seconds,
    )
    return uvicorn.Server(
        uvicorn.Config(app, host=config.api.host, port=port, log_level="warning", access_log=False)
    )


def _serve_beside_pipeline(
    config: ServiceConfig, console: Console, sock: socket.socket, public: str
) -> None:
    """``serve`` with the pipeline in a process of its own (netwarden.pipeline_process): this
    process serves the API until SIGINT/SIGTERM, then stops the pipeline process, which shuts
    its service down in order."""
    from netwarden.pipeline_process import PipelineProcess, RemoteService

    def log(line: str) -> None:
        console.print(line, markup=False)

    try:
        tokens, applier = _api_side(config, console)
    except BaseException:
        sock.close()
        raise
    pipeline = PipelineProcess(build_service, config, public, console)
    try:
        pipeline.wait_ready()
    except BaseException:
        pipeline.stop()
        sock.close()
        raise
    state = RemoteService(config, pipeline, applier=applier)
    port = int(sock.getsockname()[1])
    server = _api_server(config, state, tokens, public, port)
    log(f"pipeline running in process {pipeline.process.pid}; the API in process {os.getpid()}")
    _say_serving(config, console, state.source_status().name, public)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    died = threading.Event()

    def watch() -> None:
        """A pipeline process that dies on its own takes the API down with it: an API over a
        pipeline that reads nothing would answer /healthz forever (no restart)."""
        pipeline.process.join()
        if not server.should_exit:
            died.set()
            server.should_exit = True

    threading.Thread(target=watch, name="pipeline-watch", daemon=True).start()
    try:
        server.run(sockets=[sock])
    finally:
        server.should_exit = True
        code = pipeline.stop(SHUTDOWN_SECONDS + 10.0)
        state.close()
        sock.close()
        if code not in (0, None):
            log(f"the pipeline process ended with exit code {code}")
        if not server.started:
            raise UserError(f"the HTTP API did not start on {config.api.host}:{port}")
    if died.is_set():
        raise UserError(
            f"the pipeline process {pipeline.process.pid} died (exit code {code}): the API "
            "stopped with it, so the service is restarted as a whole"
        )

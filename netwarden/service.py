"""``netwarden serve``: the running service, composed of small parts.

Threads, each with one job, joined by a bounded queue and the store:

* the **source** thread runs the live source (file, stdin, generator), handing batches of flows
  to a bounded queue; when the pipeline falls behind, the queue is full and the source waits
  (backpressure, never unbounded buffering);
* the **pipeline** thread feeds the :class:`~netwarden.detector.live.LiveDetector` (windows,
  scores, store), moves event time on when the stream is quiet, reloads the model when a new
  version becomes current and samples the ingest metrics;
* the **alerts** thread runs the :class:`~netwarden.detector.alerts.alerting.Alerter` (outbox sync and
  delivery), when a sink is configured;
* the main thread serves the HTTP API (uvicorn) until SIGINT/SIGTERM, then stops the others.

On the embedded default (generator source, empty model folder) the service first trains a model
on generated history, so a new user sees live detections without a cluster.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from rich.console import Console

from netwarden.api.auth import TokenTable, load_tokens, new_token
from netwarden.config import ServiceConfig
from netwarden.detector.alerts.alerting import Alerter, AlertSettings
from netwarden.detector.lifecycle import OPEN, STATES
from netwarden.detector.live import DetectorMetrics, LiveDetector
from netwarden.detector.severity import SEVERITIES, score_range
from netwarden.detector.store import AnomalyRecord, AnomalyStore
from netwarden.errors import UserError
from netwarden.ingest.metrics import IngestMetrics
from netwarden.ingest.sources import Source, SourceStatus, open_source
from netwarden.ingest.windows import WindowBuilder, WindowConfig
from netwarden.models.artifact import ModelVersion
from netwarden.models.registry import CurrentModel
from netwarden.remediation.proposals import (
    ProposalStore,
    propose_containment,
    simulate_proposal,
)
from netwarden.remediation.propose import policy_name

__all__ = ["Service", "serve"]

#: Batches waiting between the source and the pipeline (64 flows each): the backpressure bound.
QUEUE_BATCHES = 256


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
        log: Callable[[str], Any] = print,
        queue_batches: int = QUEUE_BATCHES,
    ) -> None:
        self.config = config
        self.source = source
        self.model = model
        self._store = store
        self._registry = registry
        self.alerter = alerter
        self.log = log
        self.stop = threading.Event()
        self.queue: queue.Queue[list[Any] | None] = queue.Queue(maxsize=queue_batches)
        #: Windows as the model holder expects them: the service's one WindowConfig.
        self.builder = WindowBuilder(model.windows)
        if model.loaded is not None:
            self.builder.seed_baselines(model.loaded.bundle.baselines)
        self.ingest_metrics = IngestMetrics(registry)
        self.proposal_store = ProposalStore(store.url)
        self._proposed: set[int] = set()
        #: Recent flows, to simulate proposals against (GET/POST /api/v1/proposals/{id}/...).
        self._history: deque[Any] = deque(maxlen=config.remediation.flow_history)
        self.detector = LiveDetector(
            self.builder,
            model,
            store,
            metrics=DetectorMetrics(registry, source.kind),
            on_recorded=self._propose if config.remediation.propose_containment else None,
        )
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
        self._threads: list[threading.Thread] = []
        self._shown_version: str | None = None

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
        return list(self._history) if self._history.maxlen else None

    def model_versions(self) -> list[ModelVersion]:
        return self.model.versions()

    def current_model(self) -> ModelVersion | None:
        return self.model.current()

    # -- threads --------------------------------------------------------------------------

    def start(self) -> None:
        self._threads = [
            threading.Thread(target=self._run_source, name="source", daemon=True),
            threading.Thread(target=self._run_pipeline, name="pipeline", daemon=True),
        ]
        if self.alerter is not None:
            self._threads.append(
                threading.Thread(
                    target=self.alerter.run, args=(self.stop,), name="alerts", daemon=True
                )
            )
        for thread in self._threads:
            thread.start()

    def shutdown(self, timeout: float = 10.0) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self.proposal_store.close()
        if self.alerter is not None:
            self.alerter.close()

    def _emit(self, batch: list[Any]) -> None:
        while not self.stop.is_set():
            try:
                self.queue.put(batch, timeout=0.5)
                return
            except queue.Full:
                continue  # the pipeline is behind: wait (backpressure)

    def _run_source(self) -> None:
        try:
            self.source.run(self._emit, self.stop)
        except Exception as exc:
            self.log(f"source {self.source.name} failed: {exc}")
        finally:
            if not self.stop.is_set():
                self.queue.put(None)  # end of stream: close what is open

    def _run_pipeline(self) -> None:
        config = self.config
        next_reload = next_metrics = next_purge = 0.0
        while not self.stop.is_set():
            try:
                batch = self.queue.get(timeout=0.5)
            except queue.Empty:
                batch = []
            try:
                if batch is None:
                    self.detector.finish()
                    self.log(f"source {self.source.name} ended; open windows closed and scored")
                elif batch:
                    if self._history.maxlen:
                        self._history.extend(batch)
                    self.detector.add(batch, more=not self.queue.empty())
                else:
                    self.detector.tick(config.windows.idle_close)
                now = time.monotonic()
                if now >= next_reload:
                    next_reload = now + config.models.reload_interval
                    self._reload_model()
                if now >= next_metrics:
                    next_metrics = now + 1.0
                    self._sample_metrics()
                if now >= next_purge:
                    next_purge = now + 3600.0
                    self._purge()
            except Exception as exc:
                self.log(f"pipeline error (batch skipped): {type(exc).__name__}: {exc}")

    def _propose(self, records: list[AnomalyRecord]) -> None:
        """Every new anomaly comes with the policy change that would contain it, as a proposal
        a reviewer approves (or not) through the API; nothing is applied here."""
        for record in records:
            if record.id in self._proposed or record.state != OPEN:
                continue
            self._proposed.add(record.id)
            if self.proposal_store.list(anomaly_id=record.id, limit=1):
                continue
            current = self.proposal_store.latest_applied(
                record.namespace, policy_name(record.workload, "baseline")
            )
            try:
                proposal = propose_containment(
                    self.proposal_store,
                    record,
                    current=current.policy if current is not None else None,
                    source="current policy from netwarden's records",
                    actor="netwarden",
                )
            except ValueError as exc:  # e.g. nothing to contain in its examples: say so, go on
                self.log(f"no containment proposed for anomaly {record.id}: {exc}")
                continue
            flows = self.recent_flows()
            if flows and not proposal.problems:  # shown with its simulation from the start
                simulate_proposal(self.proposal_store, proposal, flows, actor="netwarden")

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


def _bootstrap(config: ServiceConfig, windows: WindowConfig, console: Console) -> None:
    """Train a first model on generated history ending now (embedded default), on the
    service's ``windows``."""
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


def build_service(
    config: ServiceConfig, console: Console, *, registry: CollectorRegistry | None = None
) -> tuple[Service, TokenTable]:
    """Everything but the HTTP server: store, model (bootstrapped if needed), source, alerts."""
    try:
        config.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"data_dir {config.data_dir}: cannot create: {exc.strerror}") from None
    tokens = _tokens(config, console)
    windows = config.window_config
    model = CurrentModel(config.model_dir, windows=windows)
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
            f"{config.model_dir}` writes one",
            markup=False,
        )
    try:
        store = AnomalyStore(config.store_url)
    except Exception as exc:
        raise UserError(f"store {config.store_url}: cannot open: {exc}") from None
    registry = registry if registry is not None else CollectorRegistry()
    settings = _alert_settings(config, config.public_url())
    alerter = Alerter(store, settings, registry=registry) if settings is not None else None

    def log(line: str) -> None:
        console.print(line, markup=False)

    service = Service(
        config, _source(config, registry, log), model, store, registry, alerter=alerter, log=log
    )
    return service, tokens


def serve(config: ServiceConfig, *, console: Console) -> None:
    """Run until interrupted: the pipeline threads and the HTTP API."""
    import uvicorn

    from netwarden.api.app import create_app

    service, tokens = build_service(config, console)
    public = config.public_url()
    app = create_app(service, tokens, public_url=public)
    server = uvicorn.Server(
        uvicorn.Config(
            app, host=config.api.host, port=config.api.port, log_level="warning", access_log=False
        )
    )
    service.start()
    token_hint = ""
    if config.api.tokens_file is None and (config.data_dir / "admin.token").exists():
        token_hint = f' -H "Authorization: Bearer $(cat {config.data_dir / "admin.token"})"'
    console.print(f"netwarden is serving {service.source.name} on {public}", markup=False)
    console.print(f"  anomalies:  curl{token_hint} {public}/api/v1/anomalies", markup=False)
    console.print(
        f"  health:     {public}/readyz   metrics: {public}/metrics   "
        f"API description (viewer token): {public}/openapi.json",
        markup=False,
    )
    # uvicorn captures SIGINT/SIGTERM while it runs and re-raises them after its shutdown; a
    # no-op handler there lets the threads below stop cleanly and the command exit 0.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    try:
        server.run()
    finally:
        service.shutdown()
        service.store.close()
        if not server.started:
            raise UserError(
                f"cannot listen on {config.api.host}:{config.api.port} (in use? "
                "set api.port or NETWARDEN_API__PORT)"
            )

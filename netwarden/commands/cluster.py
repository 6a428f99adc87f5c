"""The ``netwarden partials`` and ``netwarden shard`` commands: past one machine over NATS.

``partials publish`` is the agent's half on a node: its flows (files, ``-`` for a live
``hubble observe -o jsonpb --follow`` on stdin, or a live source by name: ``--source hubble``
reads the node's Hubble socket) into this node's windows, each published as a partial
(:mod:`netwarden.cluster.publisher`), event time moved on while the node is quiet
(:mod:`netwarden.cluster.node`). ``partials mapping`` prints the nats-server
configuration that partitions the subjects. ``shard`` is a detector replica: it consumes the
partitions it owns, merges, and hands windows to the scoring path (``--model-dir`` and
``--store``) or to an SQLite file (``--windows-db``). Progress goes to stderr; both serve their
Prometheus metrics with ``--metrics-listen`` (:mod:`netwarden.cluster.metrics`).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from rich.console import Console

from netwarden.cluster.leases import LeaseConfig
from netwarden.cluster.metrics import (
    MetricsServer,
    PublisherCollector,
    ShardCollector,
    serve_metrics,
)
from netwarden.cluster.node import NodeWindows
from netwarden.cluster.partials import StreamLimits, partitions_of_replica, server_mappings
from netwarden.cluster.publisher import BufferLimits, PartialPublisher
from netwarden.cluster.shard import DetectorShard, ShardConfig, StreamRefused
from netwarden.cluster.sinks import ScoringSink, WindowFileSink, WindowSink
from netwarden.commands.common import check_flow_paths, signing_key
from netwarden.errors import UserError
from netwarden.ingest.metrics import IngestMetrics
from netwarden.ingest.reader import FlowReader
from netwarden.ingest.sources import open_source
from netwarden.ingest.windows import WindowBuilder, WindowConfig

__all__ = ["lease_config", "mapping", "owned_partitions", "publish", "run_shard"]


def mapping(partitions: int) -> str:
    try:
        return server_mappings(partitions)
    except ValueError as exc:
        raise UserError(f"--partitions: {exc}") from None


def publish(
    flows: Sequence[str] | None,
    *,
    source: str | None = None,
    nats_url: list[str],
    node: str,
    window_config: WindowConfig,
    limits: BufferLimits,
    flush_timeout: float,
    console: Console,
    idle_close: float = 30.0,
    metrics_listen: str | None = None,
    progress_interval: float = 10.0,
    stop: threading.Event | None = None,
) -> int:
    """Build this node's windows from ``flows`` (files, ``-`` for stdin) or the live ``source``
    (a name :func:`~netwarden.ingest.sources.open_source` knows, e.g. ``hubble`` for the node's
    socket) and publish them, moving event time on while the node is quiet (``idle_close``).
    Runs until the input ends, or SIGINT/SIGTERM (``stop``); then publishes the open windows.
    0 when every partial was acknowledged, 1 when some were dropped or still buffered."""
    if (flows is None) == (source is None):
        raise UserError("say what to read: --flows PATH ... or --source NAME")
    node = node or socket.gethostname()
    registry = CollectorRegistry()
    feed: Any
    if flows is not None and list(flows) == ["-"]:  # a live pipe: batches as they come
        source, flows = "-", None
    if flows is not None:
        check_flow_paths(flows)
        reader = FlowReader()
        read_stats = reader.stats

        def feed(emit: Any, halt: threading.Event) -> None:
            for path in flows:
                for batch in reader.read(path):
                    if halt.is_set():
                        return
                    emit(batch)
    else:
        feed = _live_source(source or "", registry, console)
        read_stats = feed.stats
    publisher = PartialPublisher(nats_url, node, limits=limits)
    builder = WindowBuilder(window_config)
    agent = NodeWindows(builder, publisher, idle_close=idle_close)
    ingest = IngestMetrics(registry)
    registry.register(PublisherCollector(publisher))
    server = _metrics_server(registry, metrics_listen, console)
    next_report = time.monotonic() + progress_interval

    def progress() -> None:
        nonlocal next_report
        with contextlib.suppress(RuntimeError):  # a tally dict grew in the reading thread
            ingest.observe(read_stats, builder.stats, builder.open_windows)
        if time.monotonic() >= next_report:
            next_report = time.monotonic() + progress_interval
            console.print(_publisher_line(publisher, builder), markup=False)

    stop = stop if stop is not None else threading.Event()
    restore = _stop_on_signals(stop)
    publisher.start()
    try:
        agent.run(feed, stop, on_progress=progress)
    finally:
        restore()
        flushed = publisher.close(flush_timeout)
        if server is not None:
            server.close()
    st = publisher.snapshot()
    console.print(_publisher_line(publisher, builder), markup=False)
    if agent.closed_by_tick:
        console.print(
            f"{agent.closed_by_tick:,} windows closed while the node was quiet", markup=False
        )
    if st.dropped or not flushed:
        console.print(
            f"{st.dropped} partials dropped (buffer full), {st.buffered} not acknowledged "
            f"after {flush_timeout:g} s",
            markup=False,
        )
        return 1
    return 0


def _live_source(spec: str, registry: CollectorRegistry, console: Console) -> Any:
    """The live source ``spec``: Hubble (its own metrics into ``registry``), or any other
    kind the sources know, with its defaults."""

    def log(line: str) -> None:
        console.print(line, markup=False)

    try:
        if spec == "hubble" or spec.startswith("hubble:"):
            return open_source(spec, registry=registry, log=log)
        return open_source(spec)
    except ValueError as exc:
        raise UserError(f"--source: {exc}") from None


def _stop_on_signals(stop: threading.Event) -> Any:
    """SIGINT and SIGTERM set ``stop`` (from the main thread only); returns the restorer."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda *_: stop.set())

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


def _publisher_line(publisher: PartialPublisher, builder: WindowBuilder) -> str:
    st = publisher.snapshot()
    return (
        f"node {publisher.node}: {builder.stats.flows_seen:,} flows, {st.queued:,} partials, "
        f"{st.acknowledged:,} acknowledged, {st.buffered:,} buffered, {st.dropped:,} dropped"
    )


def lease_config(partitions: int, name: str, ttl: float) -> LeaseConfig:
    """``--leases``: this shard a member named ``name`` (default: the host name)."""
    try:
        return LeaseConfig(member=name or socket.gethostname(), partitions=partitions, ttl=ttl)
    except ValueError as exc:
        raise UserError(f"--leases: {exc}") from None


def owned_partitions(
    partitions: int, ordinal: str | None, replicas: int | None, owns: str | None
) -> list[int]:
    """The partitions a shard consumes: ``--owns 0,3,5``, or ``--ordinal K --replicas R``
    (``--ordinal auto``: the number ending the host name, as a StatefulSet's pods have)."""
    if owns is not None:
        try:
            chosen = sorted({int(p) for p in owns.split(",") if p.strip()})
        except ValueError:
            raise UserError(f"--owns {owns!r}: a comma-separated list of partitions") from None
        if not chosen or not all(0 <= p < partitions for p in chosen):
            raise UserError(f"--owns {owns!r}: partitions are 0 to {partitions - 1}")
        return chosen
    if ordinal is None or replicas is None:
        raise UserError("say which partitions: --owns LIST, or --ordinal K --replicas R")
    if ordinal == "auto":
        found = re.search(r"-(\d+)$", socket.gethostname())
        if found is None:
            raise UserError(
                f"--ordinal auto: host name {socket.gethostname()!r} does not end in -<n>"
            )
        ordinal = found.group(1)
    try:
        return partitions_of_replica(int(ordinal), replicas, partitions)
    except ValueError as exc:
        raise UserError(f"--ordinal/--replicas: {exc}") from None


def run_shard(
    *,
    nats_url: list[str],
    partitions: list[int],
    config: ShardConfig,
    limits: StreamLimits,
    windows_db: Path | None,
    model_dir: Path | None,
    store_url: str | None,
    window_config: WindowConfig,
    history_dir: Path | None = None,
    history_days: float = 30.0,
    signing_key_file: Path | None = None,
    console: Console,
    metrics_listen: str | None = None,
    progress_interval: float = 10.0,
) -> int:
    """Consume until SIGINT/SIGTERM; 0 on a clean stop. ``metrics_listen``: serve the shard's
    metrics on ``/metrics`` there; ``history_dir``: keep the scored windows there as well (the
    window history retraining learns from)."""
    sink: WindowSink
    history = None
    if history_dir is not None and (windows_db is not None or model_dir is None):
        raise UserError("--history keeps scored windows: it needs --model-dir and --store")
    if windows_db is not None:
        sink = WindowFileSink(windows_db, shard=config.name)
    elif model_dir is not None and store_url is not None:
        from netwarden.detector.store import AnomalyStore
        from netwarden.models.registry import CurrentModel

        key = signing_key(signing_key_file)
        if history_dir is not None:
            history = _history_writer(history_dir, history_days, console)
        sink = ScoringSink(
            CurrentModel(model_dir, windows=window_config, key=key),
            AnomalyStore(store_url),
            on_judged=None if history is None else _keep_history(history),
        )
    else:
        raise UserError("where do merged windows go: --windows-db FILE, or --model-dir and --store")
    shard = DetectorShard(nats_url, config, sink, limits=limits)
    registry = CollectorRegistry()
    registry.register(ShardCollector(shard))
    server = _metrics_server(registry, metrics_listen, console)
    held = (
        "partitions by lease (members of the 'netwarden-shards' bucket)"
        if config.leases is not None
        else f"partitions {','.join(map(str, partitions))}"
    )
    console.print(f"shard {config.name}: {held} from {','.join(nats_url)}", markup=False)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        report = asyncio.create_task(_report(shard, console, progress_interval, stop))
        try:
            await shard.run(stop)
        finally:
            stop.set()
            await report

    try:
        asyncio.run(main())
    except StreamRefused as exc:
        raise UserError(str(exc)) from None
    finally:
        if server is not None:
            server.close()
        if history is not None:  # what the last hand-offs scored, written before exiting
            history.close()
    console.print(_shard_line(shard), markup=False)
    return 0


def _history_writer(root: Path, days: float, console: Console) -> Any:
    """The scored windows' history under ``root``, flushed every minute (a shard restarted
    loses at most its last minute of history, never a verdict: those are in the store)."""
    from netwarden.storage.history import HistoryWriter

    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--history {root}: {exc}") from None
    writer = HistoryWriter(
        root,
        flush_seconds=60.0,
        retention_days=days,
        log=lambda line: console.print(line, markup=False),
    )
    writer.start()
    console.print(f"window history in {root}", markup=False)
    return writer


def _keep_history(writer: Any) -> Any:
    from netwarden.commands.lifecycle import history_rows

    def keep(closed: list[Any], scored: list[Any], version: str) -> None:
        writer.add_windows(history_rows(closed, scored, version))

    return keep


async def _report(shard: DetectorShard, console: Console, every: float, stop: Any) -> None:
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), every)
        except TimeoutError:
            console.print(_shard_line(shard), markup=False)


def _shard_line(shard: DetectorShard) -> str:
    st = shard.stats
    return (
        f"shard {shard.config.name}: {st.partials:,} partials from {len(st.nodes)} nodes, "
        f"{st.windows:,} windows handed off ({st.handed_off:,} new), {st.open_windows:,} open, "
        f"{st.duplicates:,} duplicates, {st.late:,} late"
        + (
            f"; partitions {','.join(map(str, shard.config.partitions)) or 'none'} "
            f"({st.acquired} taken, {st.released} given up, {st.lost} lost, "
            f"{st.nakked} partials of open windows returned)"
            if shard.config.leases is not None
            else ""
        )
    )


def _metrics_server(
    registry: CollectorRegistry, listen: str | None, console: Console
) -> MetricsServer | None:
    """``/metrics`` on ``--metrics-listen`` (None: off), said on the console; a bad address or
    a port in use is the user's error."""
    try:
        server = serve_metrics(registry, listen)
    except (ValueError, OSError) as exc:
        raise UserError(f"--metrics-listen {listen}: {exc}") from None
    if server is not None:
        console.print(f"metrics on http://{server.host}:{server.port}/metrics", markup=False)
    return server

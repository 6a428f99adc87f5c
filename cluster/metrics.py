"""Prometheus metrics of the agent's publisher and of a detector shard, and a ``/metrics`` server.

Both are collectors over the objects' own tallies (:class:`~netwarden.cluster.publisher.
PublisherStats`, :class:`~netwarden.cluster.shard.ShardStats`), read when Prometheus scrapes:
the publishing and merging paths pay nothing for them. They go into a registry the caller owns
(no global state), with the ingest metrics of the agent's reading and windows
(:class:`~netwarden.ingest.metrics.IngestMetrics`) and, for a live Hubble source, the source's
own (``netwarden_hubble_*``). ``netwarden partials publish`` and ``netwarden shard`` serve the
registry with ``--metrics-listen HOST:PORT`` (:func:`serve_metrics`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from netwarden.cluster.publisher import PartialPublisher
    from netwarden.cluster.shard import DetectorShard

__all__ = ["MetricsServer", "PublisherCollector", "ShardCollector", "parse_listen", "serve_metrics"]


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


class PublisherCollector(Collector):
    """``netwarden_partials_*``: what one node's publisher queued, had acknowledged, buffers and
    dropped, and its connection to NATS."""

    def __init__(self, publisher: PartialPublisher) -> None:
        self.publisher = publisher

    def collect(self) -> Iterator[Any]:
        st = self.publisher.snapshot()
        p = "netwarden_partials"
        yield _counter(
            f"{p}_published",
            "Partials (closed windows of this node) handed to the publisher to send.",
            st.queued,
        )
        yield _counter(
            f"{p}_acknowledged",
            "Partials JetStream acknowledged (stored; they left the buffer).",
            st.acknowledged,
        )
        yield _counter(
            f"{p}_duplicate_acks",
            "Acknowledgements saying the partial was stored already (a retry of one that had "
            "got through; stored once by its message id).",
            st.duplicates,
        )
        yield _counter(
            f"{p}_dropped",
            "Partials dropped, oldest first, because the buffer was full while NATS did not "
            "acknowledge (their identity-windows lack this node's share).",
            st.dropped,
        )
        yield _counter(f"{p}_dropped_bytes", "Bytes of the partials dropped.", st.dropped_bytes)
        yield _counter(
            f"{p}_publish_retries",
            "Publish attempts that got no acknowledgement (retried).",
            st.retries,
        )
        yield _gauge(
            f"{p}_buffered", "Partials waiting for an acknowledgement (in the buffer).", st.buffered
        )
        yield _gauge(f"{p}_buffered_bytes", "Bytes of the partials buffered.", st.buffered_bytes)
        limits = self.publisher.limits
        yield _gauge(
            f"{p}_buffer_limit_messages", "The buffer's bound in partials.", limits.max_messages
        )
        yield _gauge(f"{p}_buffer_limit_bytes", "The buffer's bound in bytes.", limits.max_bytes)
        yield _gauge(
            f"{p}_nats_connected", "1 while connected to NATS, else 0.", float(st.connected)
        )
        yield _counter(f"{p}_nats_disconnects", "Connections to NATS lost.", st.disconnects)
        yield _counter(
            f"{p}_nats_reconnects", "Connections to NATS made again after a loss.", st.reconnects
        )


class ShardCollector(Collector):
    """``netwarden_shard_*``: what a detector shard merged, handed off, found late or twice, and
    holds open."""

    def __init__(self, shard: DetectorShard) -> None:
        self.shard = shard

    def collect(self) -> Iterator[Any]:
        st = self.shard.stats
        p = "netwarden_shard"
        yield _counter(
            f"{p}_partials_merged",
            "Partials merged into open windows (each message id once).",
            st.partials,
        )
        yield _counter(
            f"{p}_redeliveries",
            "Partials JetStream delivered more than once (after ack_wait, or held by a shard "
            "that stopped); their duplicates are in netwarden_shard_duplicates_total.",
            st.redelivered,
        )
        yield _counter(
            f"{p}_duplicates",
            "Second copies of a partial (same message id) ignored: redeliveries deduplicated.",
            st.duplicates,
        )
        yield _counter(
            f"{p}_late_partials",
            "Partials that came after their window was handed off (kept by the sink, not "
            "merged): raise the shard's lateness, or look at the node's clock.",
            st.late,
        )
        yield _counter(
            f"{p}_malformed_partials", "Messages that were not partials (dropped).", st.malformed
        )
        yield _counter(
            f"{p}_windows_handed_off",
            "Merged windows handed to the sink (closed, then their partials acknowledged).",
            st.windows,
        )
        yield _counter(
            f"{p}_windows_stored",
            "Handed-off windows the sink had not stored before (the rest: a predecessor's, "
            "handed off again after its restart).",
            st.handed_off,
        )
        yield _counter(
            f"{p}_handoff_failures",
            "Hand-offs the sink refused or failed (no model, store down): retried, nothing "
            "acknowledged meanwhile.",
            st.handoff_failures,
        )
        yield _gauge(f"{p}_open_windows", "Identity-windows open, waiting.", st.open_windows)
        yield _gauge(f"{p}_nodes", "Nodes whose partials this shard has seen.", len(st.nodes))
        if st.watermark > float("-inf"):
            yield _gauge(
                f"{p}_watermark_seconds",
                "The newest window end seen (Unix time).",
                st.watermark,
            )
        keeper = self.shard.leases
        if keeper is not None:  # dynamic ownership (--leases): how partitions moved
            yield _counter(
                f"{p}_leases_taken",
                "Partition leases this shard took (at start, on a rebalance, or over a shard "
                "seen stopped).",
                st.acquired,
            )
            yield _counter(
                f"{p}_leases_given_up",
                "Partitions given up because the assignment moved them to another live shard.",
                st.released,
            )
            yield _counter(
                f"{p}_leases_lost",
                "Leases another shard took over (this shard's renewals were late): a shard "
                "losing leases without rebalancing is starved or cut off from NATS.",
                st.lost,
            )
            yield _counter(
                f"{p}_partials_returned",
                "Partials of open windows negatively acknowledged on giving a partition up "
                "(redelivered at once to its next holder).",
                st.nakked,
            )
            yield _gauge(
                f"{p}_members",
                "Live shards this shard sees in the lease bucket (itself included).",
                len(keeper.members),
            )
        owned = GaugeMetricFamily(
            f"{p}_partition", "1 for each partition this shard consumes.", labels=["partition"]
        )
        for partition in self.shard.config.partitions:
            owned.add_metric([str(partition)], 1.0)
        yield owned


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` (every address) or ``[v6]:PORT`` as (host, port); ValueError."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT (e.g. 0.0.0.0:9090 or :9090)")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


class MetricsServer:
    """``/metrics`` of a registry on a port, in a daemon thread; :meth:`close` stops it."""

    def __init__(self, registry: CollectorRegistry, listen: str) -> None:
        host, port = parse_listen(listen)
        self._server, self._thread = start_http_server(port, host, registry=registry)
        self.host, self.port = host, self._server.server_port

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5.0)


def serve_metrics(registry: CollectorRegistry, listen: str | None) -> MetricsServer | None:
    """Start serving ``registry`` on ``listen`` (None: nothing)."""
    return None if listen is None else MetricsServer(registry, listen)

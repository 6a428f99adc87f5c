"""Past one machine: ``partials`` (a node's partial windows to NATS JetStream) and ``shard``
(a detector replica merging them); :mod:`netwarden.commands.cluster` does the work."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Final

from netwarden.cli.consoles import stderr
from netwarden.cli.options import (
    add_window_options,
    non_negative_float,
    positive_float,
    positive_int,
    window_config,
)

__all__ = ["COMMANDS", "add_parser"]

COMMANDS: Final = ("partials", "shard")
_NATS_HELP: Final = "NATS server URL(s), comma-separated (default: %(default)s)"


def _add_partitions(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--partitions",
        type=positive_int,
        default=16,
        metavar="N",
        help="partitions of the stream, fixed for its life; the same number as in the "
        "server's mapping (default: %(default)s)",
    )


def _add_metrics_listen(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics-listen",
        default=None,
        metavar="HOST:PORT",
        help="serve Prometheus metrics on http://HOST:PORT/metrics, e.g. :9091 (default: none)",
    )


def _add_partials(sub: argparse._SubParsersAction) -> None:
    partials = sub.add_parser(
        "partials",
        help="a node's partial windows to NATS JetStream (the agent's half of sharding)",
        description="Past one machine, each node builds the windows of its own flows and "
        "publishes them as partials, which detector shards (`netwarden shard`) merge.",
    )
    group = partials.add_subparsers(dest="partials_command", metavar="SUBCOMMAND", required=True)
    pub = group.add_parser(
        "publish",
        help="build this node's windows from its flows and publish each as a partial",
        description="Reads this node's flows (Hubble JSON files, '-': stdin, e.g. `hubble "
        "observe --follow -o jsonpb`; or a live --source, e.g. 'hubble': the node's Hubble "
        "socket), builds the node's windows and publishes each closed one to "
        "netwarden.in.<namespace>.<workload>, with JetStream acknowledgements. When no flow "
        "comes for --idle-close seconds, event time moves on with the wall clock, so a quiet "
        "node's windows still close. While the server is away, partials wait in a bounded "
        "buffer (the oldest are dropped beyond it, counted) and are sent when it is back. "
        "Runs until the input ends or SIGINT/SIGTERM, then publishes the open windows.",
    )
    inputs = pub.add_mutually_exclusive_group(required=True)
    inputs.add_argument(
        "--flows",
        nargs="+",
        default=None,
        metavar="PATH",
        help="flow files, read in the order given ('-' for stdin)",
    )
    inputs.add_argument(
        "--source",
        default=None,
        metavar="NAME",
        help="a live source: 'hubble' (the node's Hubble socket), 'hubble:ADDR' (a socket "
        "path, unix:///path or host:port, e.g. the eBPF agent's 127.0.0.1:4244), 'ebpf', "
        "'generator', 'file:PATH' (followed)",
    )
    pub.add_argument("--nats", default="nats://127.0.0.1:4222", metavar="URL", help=_NATS_HELP)
    pub.add_argument(
        "--node", default="", metavar="NAME", help="this node's name (default: the host name)"
    )
    add_window_options(pub, lateness=True)
    pub.add_argument(
        "--buffer-messages",
        type=positive_int,
        default=200_000,
        metavar="N",
        help="partials kept while the server does not acknowledge (default: %(default)s)",
    )
    pub.add_argument(
        "--buffer-mb",
        type=positive_float,
        default=64.0,
        metavar="MB",
        help="their size bound in MiB (default: %(default)s)",
    )
    pub.add_argument(
        "--idle-close",
        type=positive_float,
        default=30.0,
        metavar="SECONDS",
        help="wall time without flows after which event time moves on with the clock, so a "
        "quiet node's open windows close (default: %(default)s)",
    )
    _add_metrics_listen(pub)
    pub.add_argument(
        "--flush-timeout",
        type=non_negative_float,
        default=60.0,
        metavar="SECONDS",
        help="how long to wait at the end for every partial to be acknowledged "
        "(default: %(default)s)",
    )
    pub.set_defaults(handler=_cmd_publish)
    mapping = group.add_parser(
        "mapping",
        help="print the nats-server configuration that partitions the subjects",
        description="The `mappings` block for nats-server's configuration: "
        "netwarden.in.<ns>.<workload> to netwarden.partials.<p>.<ns>.<workload>, p from NATS's "
        "deterministic partition() of the two tokens.",
    )
    _add_partitions(mapping)
    mapping.set_defaults(handler=_cmd_mapping)


def _add_shard(sub: argparse._SubParsersAction) -> None:
    shard = sub.add_parser(
        "shard",
        help="a detector replica: merge the partials of its partitions, score closed windows",
        description="Consumes the partitions it owns (--owns, or --ordinal K of --replicas R: "
        "partitions p with p %% R == K), one durable pull consumer per partition; merges the "
        "partials of every node per identity and window; closes a window when the newest "
        "window seen ends --lateness seconds after it, or after --idle-close seconds without "
        "partials; hands it off (scored into --store with --model-dir, or to --windows-db) and "
        "only then acknowledges its partials. Runs until Ctrl-C or SIGTERM.",
    )
    shard.add_argument("--nats", default="nats://127.0.0.1:4222", metavar="URL", help=_NATS_HELP)
    _add_partitions(shard)
    shard.add_argument("--owns", default=None, metavar="LIST", help="partitions, e.g. 0,2,5")
    shard.add_argument(
        "--ordinal",
        default=None,
        metavar="K",
        help="this replica's ordinal, or 'auto': the number ending the host name (StatefulSet)",
    )
    shard.add_argument(
        "--replicas", type=positive_int, default=None, metavar="R", help="detector replicas"
    )
    shard.add_argument(
        "--leases",
        action="store_true",
        help="take partitions dynamically instead of --owns/--ordinal: register as a member "
        "in the 'netwarden-shards' key-value bucket, hold a lease per partition, partitions "
        "spread over the live members (sorted, p to members[p %% n]) and rebalanced when one "
        "joins or leaves; --name is the member id (default: the host name)",
    )
    shard.add_argument(
        "--lease-ttl",
        type=positive_float,
        default=15.0,
        metavar="SECONDS",
        help="with --leases: a member silent this long has left, its leases are taken over "
        "(default: %(default)s)",
    )
    shard.add_argument("--name", default="", metavar="NAME", help="shard name in logs and output")
    where = shard.add_argument_group("where merged windows go")
    where.add_argument(
        "--windows-db", type=Path, default=None, metavar="FILE", help="an SQLite file"
    )
    where.add_argument(
        "--model-dir", type=Path, default=None, metavar="DIR", help="score with this model"
    )
    where.add_argument(
        "--store", default=None, metavar="URL", help="record scored windows in this store"
    )
    where.add_argument(
        "--signing-key",
        type=Path,
        default=None,
        metavar="FILE",
        help="load only model versions signed with this key (as `netwarden serve` does with "
        "models.signing_key_file; default: not checked)",
    )
    where.add_argument(
        "--history",
        type=Path,
        default=None,
        metavar="DIR",
        help="with --model-dir and --store: also keep the scored windows as a window history "
        "(Parquet, the layout `netwarden serve` writes), what `netwarden retrain --history` "
        "learns from; several shards may share one folder (file names are unique)",
    )
    where.add_argument(
        "--history-days",
        type=positive_float,
        default=30.0,
        metavar="DAYS",
        help="with --history: day folders older than this are deleted (as `netwarden serve`'s "
        "history.retention_days; default: %(default)s)",
    )
    add_window_options(shard, note="; the model's")
    shard.add_argument(
        "--lateness",
        dest="shard_lateness",
        type=non_negative_float,
        default=120.0,
        metavar="SECONDS",
        help="event time a window waits, after its end, for other nodes' partials "
        "(default: %(default)s)",
    )
    shard.add_argument(
        "--idle-close",
        type=positive_float,
        default=90.0,
        metavar="SECONDS",
        help="wall time without partials after which open windows close (default: %(default)s)",
    )
    shard.add_argument(
        "--ack-wait",
        type=positive_float,
        default=300.0,
        metavar="SECONDS",
        help="JetStream redelivers an unacknowledged partial after this; a starting shard "
        "closes nothing for 1.25 times as long (default: %(default)s)",
    )
    shard.add_argument(
        "--startup-grace",
        type=non_negative_float,
        default=None,
        metavar="SECONDS",
        help="close nothing for this long after starting, while JetStream redelivers what a "
        "dead predecessor held (default: 1.25 times --ack-wait; 0 for a first start)",
    )
    shard.add_argument(
        "--max-ack-pending",
        type=positive_int,
        default=50_000,
        metavar="N",
        help="partials a partition may hold in open windows (default: %(default)s)",
    )
    shard.add_argument(
        "--stream-max-age",
        type=positive_float,
        default=6 * 3600.0,
        metavar="SECONDS",
        help="the stream keeps partials at most this long (default: %(default)s)",
    )
    _add_metrics_listen(shard)
    shard.add_argument(
        "--stream-max-gb",
        type=positive_float,
        default=8.0,
        metavar="GB",
        help="and at most this much (oldest go first; default: %(default)s)",
    )
    shard.set_defaults(handler=_cmd_shard)


def _servers(text: str) -> list[str]:
    return [url.strip() for url in text.split(",") if url.strip()]


def add_parser(subparsers: argparse._SubParsersAction, command: str) -> None:
    """Add ``partials`` or ``shard`` to ``subparsers``."""
    {"partials": _add_partials, "shard": _add_shard}[command](subparsers)


def _cmd_publish(args: argparse.Namespace) -> int:
    from netwarden.cluster.publisher import BufferLimits
    from netwarden.commands.cluster import publish

    return publish(
        args.flows,
        source=args.source,
        nats_url=_servers(args.nats),
        node=args.node,
        window_config=window_config(args),
        limits=BufferLimits(args.buffer_messages, int(args.buffer_mb * (1 << 20))),
        flush_timeout=args.flush_timeout,
        idle_close=args.idle_close,
        metrics_listen=args.metrics_listen,
        console=stderr,
    )


def _cmd_mapping(args: argparse.Namespace) -> int:
    from netwarden.commands.cluster import mapping

    sys.stdout.write(mapping(args.partitions))
    return 0


def _cmd_shard(args: argparse.Namespace) -> int:
    from netwarden.cluster.partials import StreamLimits
    from netwarden.cluster.shard import ShardConfig
    from netwarden.commands.cluster import lease_config, owned_partitions, run_shard

    leases = None
    if args.leases:
        leases = lease_config(args.partitions, args.name, args.lease_ttl)
        owned = []
        args.name = leases.member
    else:
        owned = owned_partitions(args.partitions, args.ordinal, args.replicas, args.owns)
    config = ShardConfig(
        leases=leases,
        partitions=tuple(owned),
        lateness=args.shard_lateness,
        idle_close=args.idle_close,
        ack_wait=args.ack_wait,
        startup_grace=args.startup_grace,
        max_ack_pending=args.max_ack_pending,
        name=args.name or f"p{'-'.join(map(str, owned))}",
    )
    limits = StreamLimits(max_age=args.stream_max_age, max_bytes=int(args.stream_max_gb * 2**30))
    return run_shard(
        nats_url=_servers(args.nats),
        partitions=owned,
        config=config,
        limits=limits,
        windows_db=args.windows_db,
        model_dir=args.model_dir,
        store_url=args.store,
        history_dir=args.history,
        history_days=args.history_days,
        signing_key_file=args.signing_key,
        window_config=window_config(args),
        metrics_listen=args.metrics_listen,
        console=stderr,
    )

"""Shards keep a window history: what `netwarden retrain --history` learns from in cluster mode.

A `netwarden shard` scoring into a store (``--model-dir``, ``--store``) with ``--history DIR``
writes every window it scored as a history row (Parquet, the layout `netwarden serve` writes),
with the verdict the store got; a shard stopped on SIGTERM writes what it still holds. Runs
against a real nats-server (tests/test_nats_partials.py's fixture). Also: a shard whose stream
the server refuses says why and what to change.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

from netwarden.detector.store import AnomalyStore
from netwarden.models.artifact import save_bundle
from netwarden.storage.history import read_windows
from tests.modelfactory import train_on_generated
from tests.test_nats_partials import (  # noqa: F401 (fixtures)
    PARTITIONS,
    SHARD_ARGS,
    START,
    Nats,
    by_node,
    create_stream,
    flows,
    flows_file,
    nats_server,
    reference,
    stop_shard,
)


def wait_for_scored(store_url: str, identities: set[str], expected: int, log: Path) -> None:
    import time

    deadline = time.monotonic() + 90
    with AnomalyStore(store_url) as store:
        while True:
            n = sum(len(store.windows(i, limit=10_000)) for i in identities)
            if n >= expected or time.monotonic() > deadline:
                break
            time.sleep(0.3)
    assert n == expected, f"{n} of {expected} windows scored:\n{log.read_text()[-2000:]}"


@pytest.mark.slow
def test_a_scoring_shard_keeps_the_history_retraining_reads(
    nats_server: Nats,  # noqa: F811
    flows: list[Any],  # noqa: F811
    flows_file: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    bundle, _ = train_on_generated(
        tmp_path / "train", hours=3, seed=5, start=START.replace(hour=9), n_estimators=10
    )
    models = tmp_path / "models"
    save_bundle(bundle, models)
    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    history = tmp_path / "history"
    expected = reference(flows)
    log = tmp_path / "shard.log"
    argv = [sys.executable, "-m", "netwarden", "shard", "--nats", nats_server.url]
    argv += ["--partitions", str(PARTITIONS), "--ordinal", "0", "--replicas", "1"]
    argv += ["--model-dir", str(models), "--store", store_url, "--history", str(history)]
    # the flows are of March 2026: retention counts from today, so keep every day here
    argv += ["--history-days", "100000"]
    # the nodes publish one after another, each its whole quarter hour, before the shard
    # starts: a lateness beyond that span (windows close when the stream goes quiet) merges
    # every node's partial, as nodes publishing in step do
    argv += ["--name", "all", "--startup-grace", "0", *SHARD_ARGS, "--lateness", "3600"]
    asyncio.run(create_stream(nats_server.url))
    shard = None
    try:
        for k, node in enumerate(sorted(by_node(flows))):
            mine = f'"{node}"'.encode()
            node_file = tmp_path / f"node{k}.jsonl"
            node_file.write_bytes(
                b"\n".join(ln for ln in flows_file.read_bytes().splitlines() if mine in ln) + b"\n"
            )
            command = [sys.executable, "-m", "netwarden", "partials", "publish"]
            command += ["--flows", str(node_file), "--nats", nats_server.url, "--node", node]
            done = subprocess.run(command, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
        shard = subprocess.Popen(argv, stdout=log.open("ab"), stderr=subprocess.STDOUT)
        identities = {w.subject.id for w in expected.values()}
        wait_for_scored(store_url, identities, len(expected), log)
    finally:
        if shard is not None:
            stop_shard(shard, log)  # SIGTERM: the history writer flushes on the way out
    assert shard is not None and shard.returncode == 0, log.read_text()[-2000:]
    assert f"window history in {history}" in log.read_text()

    rows = read_windows(history)
    assert len(rows) == len(expected)
    got = {(r.identity, r.window_start.to_pydatetime()): r for r in rows.itertuples()}
    assert {(i, s.astimezone(UTC)) for i, s in got} == {
        (w.subject.id, w.start_datetime()) for w in expected.values()
    }
    with AnomalyStore(store_url) as store:
        for identity in identities:
            for s in store.windows(identity, limit=10_000):
                row = got[(identity, s.window_start)]
                assert row.score == pytest.approx(s.score) and row.anomalous == s.anomalous
                assert row.model_version == (models / "CURRENT").read_text().strip()
    for window in expected.values():  # merged from the nodes: the one-place window's features
        row = got[(window.subject.id, window.start_datetime())]
        for name, value in window.features().items():
            assert getattr(row, name) == pytest.approx(value), (window.subject.id, name)


def test_history_needs_a_scoring_shard(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "netwarden", "shard", "--nats", "nats://127.0.0.1:1"]
    argv += ["--owns", "0", "--windows-db", str(tmp_path / "w.db")]
    argv += ["--history", str(tmp_path / "h")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "--history keeps scored windows: it needs --model-dir and --store" in done.stderr


@pytest.mark.slow
def test_a_shard_says_why_the_server_refuses_its_stream(tmp_path: Path) -> None:
    """JetStream reserves a stream's byte limit against its max_file_store: a server with less
    than the default 8 GiB refuses the stream, and the shard says what to change, no traceback."""
    from tests.servers import free_port, start
    from tests.test_nats_partials import nats_binary

    port, monitor = free_port(), free_port()
    conf = tmp_path / "nats.conf"
    conf.write_text(
        f"listen: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor}\n"
        f'jetstream {{ store_dir: "{tmp_path / "js"}", max_file_store: 1G }}\n'
    )
    argv = [sys.executable, "-m", "netwarden", "shard", "--nats", f"nats://127.0.0.1:{port}"]
    argv += ["--owns", "0", "--windows-db", str(tmp_path / "w.db")]
    with start(
        "nats-server",
        [nats_binary(), "-c", str(conf)],
        port=monitor,
        workdir=tmp_path,
        ready_path="/healthz?js-enabled-only=true",
    ):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert done.returncode != 0
        assert "Traceback" not in done.stderr, done.stderr
        assert "refused the stream NETWARDEN_PARTIALS" in done.stderr, done.stderr
        assert "lower --stream-max-gb or raise max_file_store" in done.stderr

"""A shard's Prometheus metrics as exposed, without a server: with leases, how partitions moved.

The live exposition of a shard is scraped in tests/test_nats_partials.py (a real nats-server);
here the lease counters are checked against the shard's own stats, and their absence without
leases (static ownership has nothing to count there)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from netwarden.cluster.leases import LeaseConfig
from netwarden.cluster.metrics import ShardCollector
from netwarden.cluster.shard import DetectorShard, ShardConfig
from netwarden.cluster.sinks import MergedWindow


class _NoSink:
    def handoff(self, windows: list[MergedWindow]) -> int:  # never called: nothing runs
        raise AssertionError("no hand-off without a server")

    def late(self, partial: object) -> None:
        raise AssertionError("no late partial without a server")


def _exposition(shard: DetectorShard) -> bytes:
    registry = CollectorRegistry()
    registry.register(ShardCollector(shard))
    return generate_latest(registry)


def _samples(text: bytes) -> dict[str, float]:
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            label = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{label}}}" if label else s.name] = s.value
    return out


def test_a_lease_shard_counts_how_its_partitions_moved() -> None:
    config = ShardConfig(partitions=(), leases=LeaseConfig("shard-1", partitions=8), name="s1")
    shard = DetectorShard("nats://127.0.0.1:1", config, _NoSink())
    assert shard.leases is not None
    st = shard.stats
    st.acquired, st.released, st.lost, st.nakked = 5, 2, 1, 37
    shard.leases.members = ["shard-0", "shard-1", "shard-2"]
    shard.config = ShardConfig(partitions=(1, 4, 7), leases=config.leases, name="s1")
    got = _samples(_exposition(shard))
    assert got["netwarden_shard_leases_taken_total"] == 5
    assert got["netwarden_shard_leases_given_up_total"] == 2
    assert got["netwarden_shard_leases_lost_total"] == 1
    assert got["netwarden_shard_partials_returned_total"] == 37
    assert got["netwarden_shard_members"] == 3
    held = {k for k in got if k.startswith("netwarden_shard_partition{")}
    assert held == {f"netwarden_shard_partition{{partition={p}}}" for p in (1, 4, 7)}


def test_a_static_shard_has_no_lease_metrics() -> None:
    shard = DetectorShard("nats://127.0.0.1:1", ShardConfig(partitions=(0, 2)), _NoSink())
    got = _samples(_exposition(shard))
    assert not any("lease" in k or k == "netwarden_shard_members" for k in got), got
    assert got["netwarden_shard_partials_merged_total"] == 0


def test_the_lease_exposition_passes_promtool(tmp_path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (apt-get install prometheus)")
    shard = DetectorShard(
        "nats://127.0.0.1:1",
        ShardConfig(partitions=(), leases=LeaseConfig("a", partitions=2)),
        _NoSink(),
    )
    out = subprocess.run(
        [promtool, "check", "metrics"], input=_exposition(shard), capture_output=True, timeout=60
    )
    assert out.returncode == 0, out.stdout.decode() + out.stderr.decode()

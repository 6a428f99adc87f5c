"""Past one machine: node partials over a real nats-server (JetStream), merged by detector shards.

The same generated flows are split by node: each node's agent builds and publishes its partial
windows, two ``netwarden shard`` processes merge them, and the merged windows must equal,
feature for feature, the windows one builder makes of all the flows. The agents are either
separate ``netwarden partials publish`` processes, one per node's file, started together and
each replaying at its own speed (so the shards wait for the whole file: ``REPLAY_SHARD_ARGS``),
or publisher threads in this process (a :class:`PartialPublisher` with its own connection per
node) advancing in step, one minute of flows at a time, as nodes on synchronised clocks do.
With the threads, a shard is killed mid-stream and replaced, shards join and leave (leases),
and nats-server is killed and restarted on its store: nothing may be lost or doubled.

nats-server comes from Debian (``apt-get install nats-server``); without it these tests skip
with one line, unless ``NETWARDEN_TEST_REQUIRE_NATS=1`` (CI) makes that a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import httpx
import nats
import pytest
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NotFoundError
from prometheus_client.parser import text_string_to_metric_families

from netwarden.cluster.leases import assignment
from netwarden.cluster.metrics import parse_listen
from netwarden.cluster.node import NodeWindows
from netwarden.cluster.partials import (
    FORMAT_VERSION,
    STREAM,
    Partial,
    decode_partial,
    encode_partial,
    input_subject,
    partition_of,
    partitions_of_replica,
    server_mappings,
)
from netwarden.cluster.publisher import BufferLimits, PartialPublisher
from netwarden.cluster.shard import consumer_name, ensure_stream
from netwarden.cluster.sinks import MergedWindow, ScoringSink, WindowFileSink
from netwarden.generator import generate
from netwarden.ingest.features import SideStats
from netwarden.ingest.reader import read_flows
from netwarden.ingest.windows import ClosedWindow, WindowBuilder, WindowConfig
from tests.servers import Server, free_port, require, start

REQUIRE_NATS_ENV: Final = "NETWARDEN_TEST_REQUIRE_NATS"
PARTITIONS: Final = 4
WINDOWS: Final = WindowConfig(window_seconds=60.0, allowed_lateness=15.0)
START: Final = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
#: Shard settings for tests: a quiet stream closes its windows after 2 s, JetStream redelivers
#: what a dead shard held after 3 s (so a replacement waits 3.75 s before closing anything).
SHARD_ARGS: Final = ("--idle-close", "2", "--ack-wait", "3", "--lateness", "120")

Key = tuple[str, float]


def nats_binary() -> str:
    """nats-server's path; skip in one line without it, fail where it is required (CI)."""
    # Debian installs it in /usr/sbin, which a user's PATH may lack
    path = shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin")
    if path is None:
        message = "nats-server not installed (apt-get install nats-server)"
        if os.environ.get(REQUIRE_NATS_ENV, "") not in ("", "0"):
            pytest.fail(f"{message}; {REQUIRE_NATS_ENV} is set", pytrace=False)
        pytest.skip(f"{message}: NATS JetStream tests skipped")
    return path


@dataclass
class Nats:
    """nats-server with JetStream on a loopback port, its store in ``workdir``; restartable."""

    workdir: Path
    port: int
    monitor: int
    server: Server | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        conf = self.workdir / "nats.conf"
        conf.write_text(
            f"listen: 127.0.0.1:{self.port}\n"
            f"http: 127.0.0.1:{self.monitor}\n"
            # an explicit bound: by default JetStream allows 75 % of the free disk and reserves a
            # stream's max_bytes (8 GiB) against it, refusing the stream on a fuller disk
            f'jetstream {{ store_dir: "{self.workdir / "js"}", max_file_store: 64G }}\n'
            + server_mappings(PARTITIONS)
        )
        self.server = start(
            "nats-server",
            [nats_binary(), "-c", str(conf)],
            port=self.monitor,
            workdir=self.workdir,
            ready_path="/healthz?js-enabled-only=true",
        )

    def kill(self) -> None:
        """SIGKILL, as a crashed pod: JetStream recovers from its store on restart."""
        assert self.server is not None
        self.server.process.kill()
        self.server.process.wait(timeout=10)
        self.server.stop()


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[Nats]:
    binary = nats_binary()
    assert binary
    server = Nats(tmp_path / "nats", free_port(), free_port())
    server.workdir.mkdir()
    server.start()
    yield server
    if server.server is not None:
        server.server.stop()


@pytest.fixture(scope="module")
def flows_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fifteen minutes of the demo cluster (four nodes), a port scan in it: Hubble JSON."""
    out = tmp_path_factory.mktemp("flows")
    res = generate(out, hours=0.25, seed=11, start=START, rate=0.3, attacks=["port_scan"])
    return res.flows_path


@pytest.fixture(scope="module")
def flows(flows_file: Path) -> list[Any]:
    return list(read_flows([flows_file]))


def by_node(flows: list[Any]) -> dict[str, list[Any]]:
    nodes: dict[str, list[Any]] = defaultdict(list)
    for f in flows:
        nodes[f.node_name].append(f)
    return dict(nodes)


def reference(flows: list[Any]) -> dict[Key, ClosedWindow]:
    """The windows of all the flows processed in one place."""
    builder = WindowBuilder(WINDOWS)
    return {(w.subject.id, w.start): w for w in builder.add(flows) + builder.flush()}


def assert_same(merged: ClosedWindow, expected: ClosedWindow) -> None:
    key = (expected.subject.id, expected.start)
    assert merged.features() == expected.features(), key
    assert merged.client == expected.client, key
    assert merged.server == expected.server, key
    assert merged.drop_reasons() == expected.drop_reasons(), key
    assert merged.edges(True) == expected.edges(True), key
    assert merged.edges(False) == expected.edges(False), key


class Agents:
    """One publisher (own connection, own thread) and one window builder per node, fed in step:
    a minute of every node's flows, then the next."""

    def __init__(self, url: str, nodes: dict[str, list[Any]], limits: BufferLimits | None = None):
        self.nodes = nodes
        self.builders = {n: WindowBuilder(WINDOWS) for n in nodes}
        self.publishers = {n: PartialPublisher(url, n, limits=limits).start() for n in nodes}
        minutes: dict[int, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
        for node, fl in nodes.items():
            for f in fl:
                minutes[int(f.time.timestamp() // 60)][node].append(f)
        self.minutes = [minutes[m] for m in sorted(minutes)]
        self.done = 0

    def step(self, count: int, *, flush: bool = True) -> None:
        """Feed the next ``count`` minutes; with ``flush``, wait until each is acknowledged."""
        for slice_ in self.minutes[self.done : self.done + count]:
            for node, fl in slice_.items():
                self.publishers[node].publish(self.builders[node].add(fl))
            if flush:
                self.flush()
        self.done += count

    def finish(self) -> None:
        self.step(len(self.minutes) - self.done)
        for node, builder in self.builders.items():
            self.publishers[node].publish(builder.flush())
        self.flush()

    def flush(self, timeout: float = 30.0) -> None:
        for node, pub in self.publishers.items():
            assert pub.flush(timeout), f"{node}: partials not acknowledged: {pub.snapshot()}"

    def close(self) -> None:
        for pub in self.publishers.values():
            pub.close(5.0)


def start_shard(
    url: str,
    owns: list[int],
    db: Path,
    name: str,
    log: Path,
    metrics_port: int | None = None,
    *,
    args: Sequence[str] = SHARD_ARGS,
) -> subprocess.Popen:
    argv = [sys.executable, "-m", "netwarden", "shard", "--nats", url]
    argv += ["--partitions", str(PARTITIONS), "--owns", ",".join(map(str, owns))]
    argv += ["--windows-db", str(db), "--name", name, *args]
    if metrics_port is not None:
        argv += ["--metrics-listen", f"127.0.0.1:{metrics_port}"]
    return subprocess.Popen(argv, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def stop_shard(process: subprocess.Popen, log: Path) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
            pytest.fail(f"shard did not stop on SIGTERM:\n{log.read_text()[-2000:]}")


def wait_for_windows(db: Path, expected: int, logs: list[Path], timeout: float = 60.0) -> list:
    sink = WindowFileSink(db)
    try:
        deadline = time.monotonic() + timeout
        while True:
            rows = sink.read()
            if len(rows) >= expected or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        late = sink.late_count()
    finally:
        sink.close()
    tails = "\n".join(p.read_text()[-1500:] for p in logs if p.exists())
    assert len(rows) == expected, f"{len(rows)} of {expected} windows handed off:\n{tails}"
    assert late == 0, f"{late} partials came after their window was handed off:\n{tails}"
    return rows


def wait_until_handed_off(db: Path, shard: str, logs: list[Path], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db.exists():
            sink = WindowFileSink(db)
            try:
                if any(row[3] == shard for row in sink.read()):
                    return
            finally:
                sink.close()
        time.sleep(0.2)
    tails = "\n".join(p.read_text()[-1500:] for p in logs if p.exists())
    pytest.fail(f"{shard} handed nothing off in {timeout:g} s:\n{tails}")


def wait_for_empty_stream(url: str, timeout: float = 15.0) -> None:
    """Every partial acknowledged (work-queue retention deletes it then)."""

    async def left() -> int:
        nc = await nats.connect(url)
        try:
            return (await nc.jetstream().stream_info(STREAM)).state.messages
        finally:
            await nc.close()

    deadline = time.monotonic() + timeout
    while (n := asyncio.run(left())) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert n == 0, f"{n} partials never acknowledged"


def check_merged(
    rows: list, expected: dict[Key, ClosedWindow], nodes: int, *, static: bool = True
) -> None:
    """Every window once, equal to the one-place window; merged from distinct partials; with
    ``static`` ownership, handed off by the shard that owns its partition."""
    got = {(w.subject.id, w.start): (w, ns, ids, shard) for w, ns, ids, shard in rows}
    assert len(got) == len(rows)
    assert set(got) == set(expected)
    merged_from_several = 0
    for key, (window, node_names, ids, shard) in got.items():
        assert_same(window, expected[key])
        assert len(set(ids)) == len(ids) == len(node_names), key
        assert len(set(node_names)) == len(node_names) <= nodes, key  # one partial per node
        merged_from_several += len(node_names) > 1
        p = partition_of(window.subject.namespace, window.subject.workload, PARTITIONS)
        assert not static or shard.split("-")[0] == shard_name(p % 2).split("-")[0], (key, shard)
    assert merged_from_several > len(got) // 2  # the test really merges across nodes


def shard_name(ordinal: int, generation: int = 0) -> str:
    return f"{'even' if ordinal == 0 else 'odd'}{ordinal}-g{generation}"


def owned(ordinal: int) -> list[int]:
    return partitions_of_replica(ordinal, 2, PARTITIONS)


async def create_stream(url: str) -> None:
    nc = await nats.connect(url)
    try:
        await ensure_stream(nc.jetstream())
    finally:
        await nc.close()


# -- without a server ----------------------------------------------------------------------------


def test_partials_round_trip_and_merge_exactly(flows: list[Any]) -> None:
    """Every node's windows survive the wire format unchanged, and merged they are the
    one-place windows."""
    expected = reference(flows)
    merged: dict[Key, ClosedWindow] = {}
    seq = 0
    for node, fl in by_node(flows).items():
        builder = WindowBuilder(WINDOWS)
        for w in builder.add(fl) + builder.flush():
            seq += 1
            back = decode_partial(encode_partial(Partial(node, 7, seq, w)))
            assert (back.node, back.epoch, back.seq, back.msg_id) == (
                node,
                7,
                seq,
                f"{node}/7/{seq}",
            )
            assert_same(back.window, w)
            key = (w.subject.id, w.start)
            merged[key] = merged[key].merge(back.window) if key in merged else back.window
    assert set(merged) == set(expected)
    for key, w in expected.items():
        assert_same(merged[key], w)


def test_partials_refuse_other_versions_and_garbage(flows: list[Any]) -> None:
    builder = WindowBuilder(WINDOWS)
    w = (builder.add(flows[:500]) + builder.flush())[0]
    body = bytearray(encode_partial(Partial("n1", 1, 1, w)))
    assert body[1] == FORMAT_VERSION  # msgpack: array header, then the version
    body[1] = FORMAT_VERSION + 1
    with pytest.raises(ValueError, match=f"version {FORMAT_VERSION + 1}"):
        decode_partial(bytes(body))
    with pytest.raises(ValueError, match="malformed partial"):
        decode_partial(b"\x93\x01\x02")


def test_replicas_own_every_partition_once() -> None:
    for replicas in (1, 2, 3, 16):
        owners = [p for k in range(replicas) for p in partitions_of_replica(k, replicas, 16)]
        assert sorted(owners) == list(range(16))
    with pytest.raises(ValueError, match="only 4 partitions"):
        partitions_of_replica(0, 5, 4)


class Collected:
    """A publisher stand-in: the windows it was given."""

    def __init__(self) -> None:
        self.windows: list[ClosedWindow] = []

    def publish(self, windows: list[ClosedWindow]) -> None:
        self.windows += windows


def test_a_quiet_node_closes_its_windows_by_the_wall_clock(flows: list[Any]) -> None:
    """No flow for idle_close seconds: event time moves on with the wall clock, and the node's
    open windows close at most window + lateness after its last flow, the same windows the
    end of its input would close."""
    _, fl = sorted(by_node(flows).items())[0]
    now = [1000.0]
    out = Collected()
    agent = NodeWindows(WindowBuilder(WINDOWS), out, idle_close=5.0, clock=lambda: now[0])  # type: ignore[arg-type]
    agent.add(fl)
    closed_by_flows = len(out.windows)
    assert agent.builder.open_windows > 0
    now[0] += 4.0
    assert agent.tick() == 0  # not idle long enough
    now[0] += WINDOWS.window_seconds + WINDOWS.allowed_lateness  # idle for window + lateness
    assert agent.tick() > 0
    assert (
        agent.builder.open_windows == 0
        and agent.closed_by_tick == len(out.windows) - closed_by_flows
    )
    builder = WindowBuilder(WINDOWS)
    expected = builder.add(fl) + builder.flush()
    assert [(w.subject.id, w.start) for w in out.windows] == [
        (w.subject.id, w.start) for w in expected
    ]
    for got, want in zip(out.windows, expected):
        assert_same(got, want)
    assert agent.finish() == 0  # nothing was left open


def test_node_windows_runs_a_source_until_it_ends_and_publishes_the_rest(
    flows: list[Any],
) -> None:
    _, fl = sorted(by_node(flows).items())[0]
    out = Collected()
    agent = NodeWindows(WindowBuilder(WINDOWS), out, idle_close=30.0)  # type: ignore[arg-type]

    def source(emit: Any, stop: Any) -> None:
        for i in range(0, len(fl), 500):
            emit(fl[i : i + 500])

    assert agent.run(source, threading.Event(), tick_every=0.05) == len(reference(fl))

    # a live source never ends: stopped (SIGTERM), the run keeps every batch it emitted and
    # publishes the windows still open
    out = Collected()
    agent = NodeWindows(WindowBuilder(WINDOWS), out, idle_close=30.0)  # type: ignore[arg-type]

    def live(emit: Any, stop: threading.Event) -> None:
        for i in range(0, len(fl), 100):
            emit(fl[i : i + 100])
        stop.wait()

    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    assert agent.run(live, stop, tick_every=0.05) == len(reference(fl))
    assert agent.builder.stats.flows_seen == len(fl)


def test_metrics_listen_addresses() -> None:
    assert parse_listen(":9091") == ("0.0.0.0", 9091)
    assert parse_listen("127.0.0.1:9") == ("127.0.0.1", 9)
    assert parse_listen("[::1]:9091") == ("::1", 9091)
    for bad in ("9091", "host:", "host:99999", "host:http"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_listen(bad)


# -- with nats-server ----------------------------------------------------------------------------


def test_server_partitions_subjects_as_partition_of_says(nats_server: Nats) -> None:
    """nats-server's deterministic partition() puts each identity where partition_of says
    (names with dots and other characters escaped into one token)."""
    identities = [(f"ns{i % 7}", f"app-{i}") for i in range(40)]
    identities += [("kube-system", "coredns"), ("shop", "cart.v2"), ("", "x"), ("a b", "c~d")]

    async def publish() -> list[str]:
        await create_stream(nats_server.url)
        nc = await nats.connect(nats_server.url)
        try:
            js = nc.jetstream()
            subjects = []
            for ns, wl in identities:
                ack = await js.publish(input_subject(ns, wl), b"x")
                subjects.append((await js.get_msg(STREAM, ack.seq)).subject)
            return subjects
        finally:
            await nc.close()

    stored = asyncio.run(publish())
    for (ns, wl), subject in zip(identities, stored):
        assert subject.split(".")[2] == str(partition_of(ns, wl, PARTITIONS)), (ns, wl, subject)
    assert len({s.split(".")[2] for s in stored}) == PARTITIONS  # all partitions used


def test_publisher_buffers_within_its_bound_and_catches_up(
    nats_server: Nats, flows: list[Any]
) -> None:
    """With the server down, a publisher keeps its newest partials up to its bound, drops and
    counts the oldest, and sends what it kept once the server is back; one copy each."""
    builder = WindowBuilder(WINDOWS)
    windows = builder.add(flows) + builder.flush()
    assert len(windows) > 40
    asyncio.run(create_stream(nats_server.url))
    nats_server.kill()
    pub = PartialPublisher(nats_server.url, "node-a", limits=BufferLimits(max_messages=25)).start()
    try:
        pub.publish(windows[:40])
        time.sleep(1.0)
        st = pub.snapshot()
        assert (st.buffered, st.dropped, st.acknowledged) == (25, 15, 0)
        nats_server.start()
        assert pub.wait_connected(30)
        assert pub.flush(30), pub.snapshot()
        for i in range(40, len(windows), 20):  # within the bound while the server is up
            pub.publish(windows[i : i + 20])
            assert pub.flush(30), pub.snapshot()
        st = pub.snapshot()
        assert (st.dropped, st.buffered, st.acknowledged) == (15, 0, len(windows) - 15)
    finally:
        pub.close(5)

    async def stored() -> list[int]:
        nc = await nats.connect(nats_server.url)
        try:
            js = nc.jetstream()
            info = await js.stream_info(STREAM)
            seqs = []
            for s in range(info.state.first_seq, info.state.last_seq + 1):
                seqs.append(decode_partial((await js.get_msg(STREAM, s)).data).seq)
            return seqs
        finally:
            await nc.close()

    seqs = asyncio.run(stored())
    assert sorted(seqs) == list(range(16, len(windows) + 1))  # the 15 oldest dropped, no copy


@pytest.mark.slow
def test_two_shards_merge_what_one_place_builds(
    nats_server: Nats, flows: list[Any], tmp_path: Path
) -> None:
    nodes = by_node(flows)
    assert len(nodes) >= 3
    expected = reference(flows)
    db = tmp_path / "windows.db"
    logs = [tmp_path / "shard0.log", tmp_path / "shard1.log"]
    shards = [start_shard(nats_server.url, owned(k), db, shard_name(k), logs[k]) for k in (0, 1)]
    agents = Agents(nats_server.url, nodes)
    try:
        agents.finish()
        rows = wait_for_windows(db, len(expected), logs)
        wait_for_empty_stream(nats_server.url)
    finally:
        agents.close()
        for process, log in zip(shards, logs):
            stop_shard(process, log)
    check_merged(rows, expected, len(nodes))
    assert {shard for *_, shard in rows} == {shard_name(0), shard_name(1)}


@pytest.mark.slow
def test_a_killed_shard_is_replaced_without_loss_or_double(
    nats_server: Nats, flows: list[Any], tmp_path: Path
) -> None:
    nodes = by_node(flows)
    expected = reference(flows)
    db = tmp_path / "windows.db"
    logs = [tmp_path / "shard0.log", tmp_path / "shard1.log", tmp_path / "shard0-again.log"]
    shards = [start_shard(nats_server.url, owned(k), db, shard_name(k), logs[k]) for k in (0, 1)]
    agents = Agents(nats_server.url, nodes)
    try:
        agents.step(len(agents.minutes) // 2)
        # the first shard hands some windows off (after its start-up grace), holds others
        wait_until_handed_off(db, shard_name(0), logs)
        shards[0].kill()  # SIGKILL mid-stream: its open windows' partials are not acknowledged
        shards[0].wait(timeout=10)
        agents.step(2)
        metrics_port = free_port()
        shards.append(
            start_shard(nats_server.url, owned(0), db, shard_name(0, 1), logs[2], metrics_port)
        )
        agents.finish()
        rows = wait_for_windows(db, len(expected), logs)
        wait_for_empty_stream(nats_server.url)
        # the replacement got what the killed shard held again: JetStream's redeliveries
        replacement = scrape(metrics_port)
        assert replacement["netwarden_shard_redeliveries_total"] > 0, replacement
        assert replacement["netwarden_shard_late_partials_total"] == 0
        assert replacement["netwarden_shard_open_windows"] == 0
    finally:
        agents.close()
        for process, log in zip(shards[1:], logs[1:]):
            stop_shard(process, log)
    check_merged(rows, expected, len(nodes))
    by_shard = defaultdict(int)
    for *_, shard in rows:
        by_shard[shard] += 1
    assert by_shard[shard_name(0)] > 0 and by_shard[shard_name(0, 1)] > 0, dict(by_shard)


# -- dynamic ownership: leases in the key-value bucket ----------------------------------------

#: A member silent for 3 s has left, its leases are taken over. A quiet stream closes windows
#: after 10 s here, not 2: the test waits for leases to move between minutes of flows, and a
#: node's window still open on its side (no flows of the next minute yet) must not close.
#: The stream's bound is 1 GiB: nats-server reserves it on the disk, for three shards at once.
LEASE_ARGS: Final = ("--leases", "--lease-ttl", "3", "--idle-close", "10", "--stream-max-gb", "1")


def start_lease_shard(url: str, db: Path, name: str, log: Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "netwarden", "shard", "--nats", url]
    argv += ["--partitions", str(PARTITIONS), "--windows-db", str(db), "--name", name]
    argv += [*SHARD_ARGS, *LEASE_ARGS]
    return subprocess.Popen(argv, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def final_counts(log: Path) -> dict[str, int]:
    """A lease shard's last progress line: windows handed off, new (to the sink), taken, given
    up, lost, returned (partials of open windows nakked when giving a partition up)."""
    found = re.findall(
        r"([\d,]+) windows handed off \(([\d,]+) new\).*\((\d+) taken, (\d+) given up, "
        r"(\d+) lost, (\d+) partials of open windows returned\)",
        log.read_text(),
    )
    assert found, log.read_text()[-1500:]
    names = ("windows", "new", "taken", "given_up", "lost", "returned")
    return dict(zip(names, (int(n.replace(",", "")) for n in found[-1])))


def lease_holders(url: str) -> dict[int, str]:
    """partition -> the member holding its lease, as the bucket says."""

    async def read() -> dict[int, str]:
        nc = await nats.connect(url)
        try:
            try:
                kv = await nc.jetstream().key_value("netwarden-shards")
            except BucketNotFoundError:  # no shard has started yet
                return {}
            out = {}
            for p in range(PARTITIONS):
                with contextlib.suppress(KeyNotFoundError):
                    out[p] = json.loads((await kv.get(f"lease.{p}")).value)["holder"]
            return out
        finally:
            await nc.close()

    return asyncio.run(read())


def wait_for_holders(url: str, members: list[str], logs: list[Path], timeout: float = 30.0):
    """Until every partition's lease is held as the sorted live ``members`` divide them."""
    want = assignment(members, PARTITIONS)
    deadline = time.monotonic() + timeout
    while (got := lease_holders(url)) != want and time.monotonic() < deadline:
        time.sleep(0.2)
    tails = "\n".join(p.read_text()[-1500:] for p in logs if p.exists())
    assert got == want, f"leases {got}, want {want}:\n{tails}"


def test_assignment_spreads_partitions_over_sorted_members() -> None:
    assert assignment(["b", "a"], 4) == {0: "a", 1: "b", 2: "a", 3: "b"}
    assert assignment(["shard-10", "shard-9", "shard-2"], 3) == {
        0: "shard-2",
        1: "shard-9",
        2: "shard-10",
    }
    assert assignment([], 4) == {}
    for n in (1, 2, 3, 5):
        owners = assignment([f"m{i}" for i in range(n)], 16)
        assert sorted(owners) == list(range(16)) and len(set(owners.values())) == n


def run_rebalance(
    nats_server: Nats, flows: list[Any], tmp_path: Path, change: str
) -> tuple[list, dict[str, Path]]:
    """Lease shards consume; mid-stream one joins, leaves (SIGTERM) or dies (SIGKILL); every
    window must come out once and equal to the one-place window."""
    nodes = by_node(flows)
    expected = reference(flows)
    db = tmp_path / "windows.db"
    names = ["sa", "sb"] if change == "join" else ["sa", "sb", "sc"]
    logs = {n: tmp_path / f"{n}.log" for n in ["sa", "sb", "sc"]}
    shards = {n: start_lease_shard(nats_server.url, db, n, logs[n]) for n in names}
    agents = Agents(nats_server.url, nodes)
    try:
        wait_for_holders(nats_server.url, names, list(logs.values()))
        agents.step(len(agents.minutes) // 2)
        wait_until_handed_off(db, "sb", list(logs.values()))
        agents.step(1)  # sb holds open windows now
        if change == "join":
            shards["sc"] = start_lease_shard(nats_server.url, db, "sc", logs["sc"])
            live = ["sa", "sb", "sc"]
        elif change == "leave":
            stop_shard(shards["sb"], logs["sb"])
            assert shards["sb"].returncode == 0
            live = ["sa", "sc"]
        else:
            shards["sb"].kill()  # its leases stay until they expire, unrenewed
            shards["sb"].wait(timeout=10)
            live = ["sa", "sc"]
        agents.step(2)
        wait_for_holders(nats_server.url, live, list(logs.values()))
        agents.finish()
        rows = wait_for_windows(db, len(expected), list(logs.values()))
        wait_for_empty_stream(nats_server.url)
    finally:
        agents.close()
        for name, process in shards.items():
            stop_shard(process, logs[name])
    check_merged(rows, expected, len(nodes), static=False)
    return rows, {n: logs[n] for n in shards if shards[n].returncode == 0}


@pytest.mark.slow
def test_a_joining_shard_takes_its_partitions_over(
    nats_server: Nats, flows: list[Any], tmp_path: Path
) -> None:
    rows, stopped = run_rebalance(nats_server, flows, tmp_path, "join")
    by_shard = Counter(shard for *_, shard in rows)
    assert by_shard["sc"] > 0 and by_shard["sa"] > 0 and by_shard["sb"] > 0, by_shard
    counts = {name: final_counts(log) for name, log in stopped.items()}
    for c in counts.values():  # no shard handed a window off that another already had
        assert c["windows"] == c["new"] and c["lost"] == 0, counts
    # sc joined (the leases moved as run_rebalance checked: 2 from sa to sc, 3 from sb to sa;
    # the shards stopping one by one at the end move them again)
    assert counts["sc"]["taken"] >= 1 and counts["sa"]["given_up"] >= 1, counts


@pytest.mark.slow
def test_a_leaving_shard_hands_its_partitions_over(
    nats_server: Nats, flows: list[Any], tmp_path: Path
) -> None:
    _, stopped = run_rebalance(nats_server, flows, tmp_path, "leave")
    assert set(stopped) == {"sa", "sb", "sc"}
    counts = {name: final_counts(log) for name, log in stopped.items()}
    for c in counts.values():
        assert c["windows"] == c["new"] and c["lost"] == 0, counts
    # sb left holding open windows: their partials went back for sa and sc to merge
    assert counts["sb"]["returned"] > 0, counts


@pytest.mark.slow
def test_a_killed_shard_s_leases_expire_and_are_taken_over(
    nats_server: Nats, flows: list[Any], tmp_path: Path
) -> None:
    _, stopped = run_rebalance(nats_server, flows, tmp_path, "kill")
    assert "sb" not in stopped
    assert any("took over the lease" in log.read_text() for log in stopped.values())


@pytest.mark.slow
def test_agents_buffer_while_nats_is_down_and_catch_up(
    nats_server: Nats, flows: list[Any], tmp_path: Path
) -> None:
    nodes = by_node(flows)
    expected = reference(flows)
    db = tmp_path / "windows.db"
    logs = [tmp_path / "shard0.log", tmp_path / "shard1.log"]
    shards = [start_shard(nats_server.url, owned(k), db, shard_name(k), logs[k]) for k in (0, 1)]
    agents = Agents(nats_server.url, nodes, limits=BufferLimits(max_messages=1000))
    try:
        agents.step(len(agents.minutes) // 3)
        nats_server.kill()
        agents.step(len(agents.minutes) // 3, flush=False)  # nothing can be acknowledged
        time.sleep(1.0)
        buffered = {n: p.snapshot() for n, p in agents.publishers.items()}
        assert sum(s.buffered for s in buffered.values()) > 0, buffered
        assert all(s.dropped == 0 and s.buffered <= 1000 for s in buffered.values()), buffered
        nats_server.start()  # same port, same store
        agents.flush()
        agents.finish()
        rows = wait_for_windows(db, len(expected), logs)
    finally:
        agents.close()
        for process, log in zip(shards, logs):
            stop_shard(process, log)
    check_merged(rows, expected, len(nodes))
    assert all(p.snapshot().reconnects >= 1 for p in agents.publishers.values())


@pytest.mark.slow
def test_publish_and_shard_commands(
    nats_server: Nats, flows: list[Any], flows_file: Path, tmp_path: Path
) -> None:
    """`netwarden partials publish` on one node's Hubble JSON and one `netwarden shard` owning
    every partition: the node's windows, handed off once each."""
    node = sorted(by_node(flows))[0]
    mine = f'"{node}"'.encode()
    lines = [line for line in flows_file.read_bytes().splitlines() if mine in line]
    node_file = tmp_path / "node.jsonl"
    node_file.write_bytes(b"\n".join(lines) + b"\n")
    own = list(read_flows([node_file]))
    assert len(own) == len(by_node(flows)[node])
    builder = WindowBuilder(WINDOWS)
    expected = {(w.subject.id, w.start): w for w in builder.add(own) + builder.flush()}
    db, log = tmp_path / "windows.db", tmp_path / "shard.log"
    argv = [sys.executable, "-m", "netwarden", "shard", "--nats", nats_server.url]
    argv += ["--partitions", str(PARTITIONS), "--ordinal", "0", "--replicas", "1"]
    argv += ["--windows-db", str(db), "--name", "all", "--startup-grace", "0", *SHARD_ARGS]
    shard = subprocess.Popen(argv, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    try:
        command = [sys.executable, "-m", "netwarden", "partials", "publish"]
        command += ["--flows", str(node_file), "--nats", nats_server.url, "--node", node]
        published = subprocess.run(
            [*command, "--flush-timeout", "30"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert published.returncode == 0, published.stderr
        assert f"{len(expected)} acknowledged, 0 buffered, 0 dropped" in published.stderr
        rows = wait_for_windows(db, len(expected), [log])
    finally:
        stop_shard(shard, log)
    assert {(w.subject.id, w.start) for w, *_ in rows} == set(expected)
    for w, nodes, *_ in rows:
        assert nodes == (node,)
        assert_same(w, expected[(w.subject.id, w.start)])
    assert "windows handed off" in log.read_text()


def split_by_node(flows_file: Path, out: Path) -> dict[str, Path]:
    """One Hubble JSON file per node, its lines in the order of ``flows_file``."""
    lines: dict[str, list[bytes]] = defaultdict(list)
    for line in flows_file.read_bytes().splitlines():
        event = json.loads(line)
        lines[(event.get("flow") or event)["node_name"]].append(line)
    files = {}
    for i, (node, own) in enumerate(sorted(lines.items())):
        files[node] = out / f"node{i}.jsonl"
        files[node].write_bytes(b"\n".join(own) + b"\n")
    return files


def wait_for_consumers(url: str, logs: list[Path], timeout: float = 60.0) -> None:
    """Until every partition's durable consumer exists: the shards are subscribed."""

    async def missing() -> list[int]:
        nc = await nats.connect(url)
        try:
            js, absent = nc.jetstream(), []
            for p in range(PARTITIONS):
                try:
                    await js.consumer_info(STREAM, consumer_name(p))
                except NotFoundError:
                    absent.append(p)
            return absent
        finally:
            await nc.close()

    deadline = time.monotonic() + timeout
    while (absent := asyncio.run(missing())) and time.monotonic() < deadline:
        time.sleep(0.2)
    tails = "\n".join(p.read_text()[-1500:] for p in logs if p.exists())
    assert not absent, f"no consumer for partitions {absent} after {timeout:g} s:\n{tails}"


def handed_off(db: Path) -> int:
    if not db.exists():
        return 0
    sink = WindowFileSink(db)
    try:
        return len(sink.read())
    finally:
        sink.close()


#: Shards merging agent *processes* that replay a file. A shard closes a window when its
#: watermark (the newest window end it has seen, from any node) passes the window's end by
#: --lateness. Real agents are paced by the wall clock: on synchronised clocks every node's
#: event time is within seconds of the others', and 120 s covers that. Replaying agents are not
#: in step: each process reads its 15 minutes as fast as it can, at its own speed, and one may
#: have published its last window (12:15) before another, still importing on a busy machine,
#: has published its first: with 120 s that node's early partials would be late. So the
#: lateness covers the whole file (checked below), the watermark closes nothing, and windows
#: close only by --idle-close, once no partial has come for that long: after the last agent
#: finished. The agents are started together once the shards are subscribed; the only silence
#: while they run is the start-up of a slow agent process after a fast one has published all
#: of its partials (about a second here, a few on a loaded 2-core runner), so 20 s is ample; and
#: the test checks that nothing was handed off before every agent had exited, which tells a
#: timing problem from a merging one. --ack-wait beyond the run: the partials of open windows
#: are not redelivered while they wait (no redelivery noise); --startup-grace 0: a first start.
REPLAY_LATENESS: Final = 3600.0
REPLAY_IDLE_CLOSE: Final = 20.0
REPLAY_SHARD_ARGS: Final = (
    "--lateness",
    f"{REPLAY_LATENESS:g}",
    "--idle-close",
    f"{REPLAY_IDLE_CLOSE:g}",
    "--ack-wait",
    "300",
    "--startup-grace",
    "0",
)


@pytest.mark.slow
def test_agent_processes_and_two_shards_merge_what_one_place_builds(
    nats_server: Nats, flows: list[Any], flows_file: Path, tmp_path: Path
) -> None:
    """One `netwarden partials publish` process per node, each reading its node's Hubble JSON,
    all running at once, and two `netwarden shard` processes (static ownership) merging into
    one --windows-db: the merged windows are the one-place windows, none late, every partial
    acknowledged by the shards, and each agent reports every one of its partials acknowledged."""
    nodes = by_node(flows)
    assert len(nodes) >= 3
    span = max(f.time for f in flows).timestamp() - min(f.time for f in flows).timestamp()
    assert span + 2 * WINDOWS.window_seconds < REPLAY_LATENESS  # the watermark closes nothing
    expected = reference(flows)
    files = split_by_node(flows_file, tmp_path)
    assert set(files) == set(nodes)
    own: dict[str, int] = {}  # each agent's partials: the windows of its node's flows alone
    for node, path in files.items():
        read = list(read_flows([path]))
        assert len(read) == len(nodes[node])
        builder = WindowBuilder(WINDOWS)
        own[node] = len(builder.add(read) + builder.flush())

    asyncio.run(create_stream(nats_server.url))
    db = tmp_path / "windows.db"
    logs = [tmp_path / "shard0.log", tmp_path / "shard1.log"]
    shards = [
        start_shard(nats_server.url, owned(k), db, shard_name(k), logs[k], args=REPLAY_SHARD_ARGS)
        for k in (0, 1)
    ]
    agents: dict[str, subprocess.Popen] = {}
    errs = {node: tmp_path / f"agent{i}.err" for i, node in enumerate(files)}
    try:
        wait_for_consumers(nats_server.url, logs)
        started = time.monotonic()
        for node, path in files.items():
            command = [sys.executable, "-m", "netwarden", "partials", "publish"]
            command += ["--flows", str(path), "--nats", nats_server.url, "--node", node]
            # the file's flows, not the wall clock, close the agent's windows: a replay stalled
            # by a busy machine is not a quiet node
            command += ["--idle-close", "600"]
            with errs[node].open("wb") as err:
                agents[node] = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err)
        took: dict[str, float] = {}  # seconds from the start to each agent's exit
        while len(took) < len(agents) and time.monotonic() < started + 180:
            for node, agent in agents.items():
                if node not in took and agent.poll() is not None:
                    took[node] = round(time.monotonic() - started, 1)
            time.sleep(0.05)
        for node, agent in agents.items():
            assert agent.poll() == 0, f"{node}: {agent.returncode}\n{errs[node].read_text()}"
        # no window may close before the last agent's partials (by the watermark or idling)
        early = handed_off(db)
        tails = "\n".join(p.read_text()[-1500:] for p in logs)
        assert early == 0, f"{early} windows closed before the agents exited {took}:\n{tails}"
        rows = wait_for_windows(db, len(expected), logs, timeout=REPLAY_IDLE_CLOSE + 60)
        wait_for_empty_stream(nats_server.url)
    finally:
        for agent in agents.values():
            if agent.poll() is None:
                agent.kill()
                agent.wait(timeout=10)
        for process, log in zip(shards, logs):
            stop_shard(process, log)
    for node, n in own.items():
        err = errs[node].read_text()
        assert f"{n:,} acknowledged, 0 buffered, 0 dropped" in err, err
    check_merged(rows, expected, len(nodes))
    assert {shard for *_, shard in rows} == {shard_name(0), shard_name(1)}
    assert sum(len(ns) for _, ns, *_ in rows) == sum(own.values())  # every partial merged


@pytest.mark.slow
def test_scoring_sink_scores_merged_windows_as_one_place_and_once(
    flows: list[Any], tmp_path: Path
) -> None:
    """Merged windows handed to the scoring path get the scores the one-place windows get;
    handed off again (a shard's replacement), or in part, they change nothing in the store."""
    from netwarden.detector.judge import WindowJudge
    from netwarden.detector.scorer import Scorer
    from netwarden.detector.store import AnomalyStore
    from netwarden.models.artifact import save_bundle
    from netwarden.models.edges import EdgeMemory
    from netwarden.models.registry import CurrentModel
    from tests.modelfactory import train_on_generated

    bundle, _ = train_on_generated(
        tmp_path / "train", hours=3, seed=5, start=START.replace(hour=9), n_estimators=10
    )
    save_bundle(bundle, tmp_path / "models")
    expected = reference(flows)
    merged: dict[Key, Any] = {}
    for node, fl in by_node(flows).items():
        builder = WindowBuilder(WINDOWS)
        for w in builder.add(fl) + builder.flush():
            key = (w.subject.id, w.start)
            m = merged.setdefault(key, MergedWindow(w, [], []))
            if m.nodes:
                m.window = m.window.merge(w)
            m.nodes += (node,)
    handed = sorted(merged.values(), key=lambda m: (m.window.start, m.window.subject.id))
    store = AnomalyStore(f"sqlite:///{tmp_path / 'store.db'}")
    sink = ScoringSink(CurrentModel(tmp_path / "models", windows=WINDOWS), store)
    assert sink.handoff(handed) == len(expected)
    assert sink.handoff(handed[:10]) == 0
    partial = MergedWindow(next(m.window for m in handed if len(m.nodes) > 1), ["n"], ["x"])
    partial.window = ClosedWindow(  # an empty share of a window already recorded
        partial.window.subject, partial.window.start, partial.window.end, SideStats(), SideStats()
    )
    assert sink.handoff([partial]) == 0

    one_place = sorted(expected.values(), key=lambda w: (w.start, w.subject.id))
    judge = WindowJudge(Scorer(bundle), EdgeMemory())
    judge.memory.merge(bundle.edges)
    want = {(s.identity, s.window_start): s.score for s in judge.judge(one_place)}
    got = {}
    for identity in {w.subject.id for w in one_place}:
        for s in store.windows(identity):
            got[(s.identity, s.window_start)] = s.score
    assert got.keys() == want.keys()
    for key, score in want.items():
        assert got[key] == pytest.approx(score, rel=1e-9, abs=1e-12), key


def scrape(port: int) -> dict[str, float]:
    """/metrics on ``port``, checked by promtool, as {sample name{labels}: value}."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    check = subprocess.run(
        [require("promtool", "prometheus"), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def wait_for_metric(
    port: int, name: str, value: float, process: subprocess.Popen, timeout: float = 60.0
) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, f"exited with {process.returncode}"
        try:
            samples = scrape(port)
        except httpx.HTTPError:
            samples = {}
        if samples.get(name) == value or time.monotonic() > deadline:
            if samples.get(name) != value:
                shown = {k: v for k, v in samples.items() if not k.endswith("_created")}
                pytest.fail(f"{name} is {samples.get(name)}, not {value}: {shown}")
            return samples
        time.sleep(0.3)


@pytest.mark.slow
def test_a_quiet_agent_publishes_its_windows_and_both_sides_serve_metrics(
    nats_server: Nats, flows: list[Any], flows_file: Path, tmp_path: Path
) -> None:
    """`partials publish` reading a node's flows on stdin that then goes quiet (stdin still
    open): its idle tick closes every window, which one `netwarden shard` merges; both serve
    /metrics (promtool-clean) saying so."""
    windows = WindowConfig(window_seconds=5.0, allowed_lateness=1.0)
    node = sorted(by_node(flows))[0]
    mine = f'"{node}"'.encode()
    body = b"\n".join(line for line in flows_file.read_bytes().splitlines() if mine in line)
    own = [f for f in flows if f.node_name == node]
    builder = WindowBuilder(windows)
    expected = len(builder.add(own) + builder.flush())
    db, log = tmp_path / "windows.db", tmp_path / "shard.log"
    shard_port, agent_port = free_port(), free_port()
    argv = [sys.executable, "-m", "netwarden", "shard", "--nats", nats_server.url]
    argv += ["--partitions", str(PARTITIONS), "--ordinal", "0", "--replicas", "1"]
    argv += ["--windows-db", str(db), "--name", "all", "--startup-grace", "0", *SHARD_ARGS]
    argv += ["--metrics-listen", f"127.0.0.1:{shard_port}"]
    shard = subprocess.Popen(argv, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    command = [sys.executable, "-m", "netwarden", "partials", "publish", "--flows", "-"]
    command += ["--nats", nats_server.url, "--node", node, "--window", "5", "--lateness", "1"]
    command += ["--idle-close", "1", "--metrics-listen", f"127.0.0.1:{agent_port}"]
    agent = subprocess.Popen(
        command, stdin=subprocess.PIPE, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL
    )
    try:
        assert agent.stdin is not None
        agent.stdin.write(body + b"\n")
        agent.stdin.flush()  # and keep it open: the node goes quiet, its input does not end
        got = wait_for_metric(agent_port, "netwarden_partials_acknowledged_total", expected, agent)
        assert got["netwarden_partials_published_total"] == expected
        assert got["netwarden_partials_buffered"] == 0
        assert got["netwarden_partials_dropped_total"] == 0
        assert got["netwarden_partials_nats_connected"] == 1
        assert got["netwarden_ingest_flows_total"] == len(own)
        assert got["netwarden_ingest_open_windows"] == 0
        merged = wait_for_metric(
            shard_port, "netwarden_shard_windows_handed_off_total", expected, shard
        )
        assert merged["netwarden_shard_partials_merged_total"] == expected
        assert merged["netwarden_shard_windows_stored_total"] == expected
        assert merged["netwarden_shard_open_windows"] == 0
        assert merged["netwarden_shard_nodes"] == 1
        assert merged["netwarden_shard_late_partials_total"] == 0
        assert merged["netwarden_shard_duplicates_total"] == 0
        assert {k for k in merged if k.startswith("netwarden_shard_partition{")} == {
            f"netwarden_shard_partition{{partition={p}}}" for p in range(PARTITIONS)
        }
        agent.stdin.close()
        assert agent.wait(timeout=60) == 0
        assert agent.stderr is not None
        err = agent.stderr.read().decode()
        assert f"{expected} acknowledged, 0 buffered, 0 dropped" in err, err
        assert "windows closed while the node was quiet" in err, err
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(timeout=10)
        stop_shard(shard, log)
    assert len(wait_for_windows(db, expected, [log])) == expected


@pytest.mark.slow
def test_publish_reads_a_live_hubble_source_by_name(
    nats_server: Nats, flows: list[Any], flows_file: Path, tmp_path: Path
) -> None:
    """`partials publish --source hubble:ADDR` (as the chart's DaemonSet runs it against a
    node's socket or eBPF agent): Hubble's gRPC API, served by netwarden's own Observer, into
    the node's windows, each acknowledged, the source's metrics served with the publisher's;
    SIGTERM ends it cleanly."""
    from tests.test_hubble_live import Observer

    node = sorted(by_node(flows))[0]
    mine = f'"{node}"'.encode()
    lines = [line for line in flows_file.read_bytes().splitlines() if mine in line]
    own = [f for f in flows if f.node_name == node]
    builder = WindowBuilder(WindowConfig(window_seconds=5.0, allowed_lateness=1.0))
    expected = len(builder.add(own) + builder.flush())
    asyncio.run(create_stream(nats_server.url))
    observer = Observer(tmp_path, free_port())
    metrics_port = free_port()
    command = [sys.executable, "-m", "netwarden", "partials", "publish"]
    command += ["--source", f"hubble:127.0.0.1:{observer.port}", "--nats", nats_server.url]
    command += ["--node", node, "--window", "5", "--lateness", "1", "--idle-close", "1"]
    command += ["--metrics-listen", f"127.0.0.1:{metrics_port}"]
    agent = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        observer.wait_ready()
        # a live source follows from now, as a node's agent does: feed once it follows
        connected = f"netwarden_hubble_connected{{server=127.0.0.1:{observer.port}}}"
        wait_for_metric(metrics_port, connected, 1, agent)
        observer.feed(lines)
        got = wait_for_metric(
            metrics_port, "netwarden_partials_acknowledged_total", expected, agent, timeout=90
        )
        assert got["netwarden_ingest_flows_total"] == len(own)
        assert got["netwarden_partials_dropped_total"] == 0
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=60) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(timeout=10)
        observer.stop()
    assert agent.stderr is not None
    err = agent.stderr.read().decode()
    assert f"{expected} acknowledged, 0 buffered, 0 dropped" in err, err

"""Live sources: a followed file, a pipe, the real-time generator, and the factory."""

from __future__ import annotations

import io
import os
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest

from netwarden.generator import SCENARIOS, RealtimeGenerator, generate
from netwarden.generator.attacks import plan_attack
from netwarden.generator.generate import Simulation
from netwarden.generator.source import GeneratorSource
from netwarden.ingest.compact import CompactFlow
from netwarden.ingest.reader import ErrorReason, FlowReader, ReadStats
from netwarden.ingest.sources import FollowFile, Source, SourceStatus, StreamSource, open_source
from netwarden.ingest.sources import base as live_module
from tests.conftest import DATA

HUBBLE = DATA / "hubble" / "hubble-otel"
NOON = datetime(2026, 1, 5, 11, 0, tzinfo=UTC)
T0 = datetime(2026, 2, 1, 12, 0, tzinfo=UTC)
_NS = 1_000_000_000


# -- helpers ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_lines() -> list[bytes]:
    """Real ``hubble observe -o json`` lines (TCP flows from the hubble-otel samples)."""
    path = HUBBLE / "basic-sample-400-tcp-flows.json"
    return [ln for ln in path.read_bytes().splitlines() if ln.strip()][:40]


def encode(flows: list[Any]) -> list[bytes]:
    return [msgspec.json.encode(f) for f in flows]


def file_flows(data: bytes) -> list[Any]:
    """What the file reader makes of the same bytes: the reference for every source."""
    rd = FlowReader(flow_type=CompactFlow)
    return [f for batch in rd.read_stream(io.BytesIO(data), "ref") for f in batch]


class Polls(threading.Event):
    """A stop event whose waits block until the test allows the next poll.

    ``settle()`` waits until the source is idle (waiting to poll, so it has consumed all it can
    see); ``poll()`` lets it poll once more and waits until it is idle again. Following becomes
    deterministic: file changes happen while the source is known to be waiting.
    """

    def __init__(self) -> None:
        super().__init__()
        self._cond = threading.Condition()
        self._idle = False
        self._allowed = 0

    def wait(self, timeout: float | None = None) -> bool:
        with self._cond:
            self._idle = True
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._allowed > 0 or self.is_set(), timeout=10)
            if self._allowed:
                self._allowed -= 1
            self._idle = False
        return self.is_set()

    def set(self) -> None:
        super().set()
        with self._cond:
            self._cond.notify_all()

    def settle(self) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: self._idle, timeout=10), "source never idled"

    def poll(self) -> None:
        with self._cond:
            self._allowed += 1
            self._idle = False
            self._cond.notify_all()
            assert self._cond.wait_for(lambda: self._idle and not self._allowed, timeout=10)


class Running:
    """A source running in a thread, collecting what it emits."""

    def __init__(
        self,
        source: Source,
        stop: threading.Event | None = None,
        on_emit: Callable[[list[Any]], None] | None = None,
    ) -> None:
        self.source = source
        self.stop = stop if stop is not None else threading.Event()
        self.flows: list[Any] = []
        self.batches: list[int] = []
        self._on_emit = on_emit
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _emit(self, batch: list[Any]) -> None:
        self.batches.append(len(batch))
        self.flows.extend(batch)
        if self._on_emit is not None:
            self._on_emit(batch)

    def _run(self) -> None:
        try:
            self.source.run(self._emit, self.stop)
        except BaseException as exc:
            self.error = exc

    def finish(self, timeout: float = 10) -> None:
        self.stop.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "run() did not return after stop"
        assert self.error is None, self.error


def wait_until(cond: Callable[[], bool], timeout: float = 10) -> None:
    """Poll ``cond`` until it holds; the generous timeout only guards against a hang."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


class FakeTime:
    """Injectable monotonic clock and sleep: sleeping advances time at once."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps = 0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now += seconds


def fixed_clock() -> datetime:
    return T0


# -- FlowReader.decode_lines --------------------------------------------------------------------
def test_decode_lines_matches_the_file_reader_and_locates_bad_lines(real_lines) -> None:
    good = real_lines[:5]
    rd = FlowReader(flow_type=CompactFlow, max_examples=10)
    flows = rd.decode_lines(good, first_line=1, name="live")
    assert encode(flows) == encode(file_flows(b"\n".join(good)))
    assert rd.stats.flows == rd.stats.lines == 5 and rd.stats.error_lines == 0

    mixed = [real_lines[5], b"{not json", b"", b'{"hello": "world"}', real_lines[6]]
    more = rd.decode_lines(mixed, first_line=100, name="live")
    assert encode(more) == encode(file_flows(b"\n".join([real_lines[5], real_lines[6]])))
    assert rd.stats.lines == 10 and rd.stats.blank_lines == 1 and rd.stats.flows == 7
    assert rd.stats.errors == {ErrorReason.NOT_JSON: 1, ErrorReason.NOT_A_FLOW: 1}
    assert [str(b).split(": ")[0] for b in rd.stats.examples] == ["live:101", "live:103"]
    assert rd.decode_lines([], 7, "live") == [] and rd.stats.lines == 10


# -- FollowFile ---------------------------------------------------------------------------------
def test_follow_appended_pieces_split_line_and_bad_line(tmp_path: Path, real_lines) -> None:
    path = tmp_path / "flows.json"
    path.write_bytes(b"\n".join(real_lines[:3]) + b"\n")
    polls = Polls()
    src = FollowFile(path, poll_interval=0.01, batch_lines=2, clock=fixed_clock)
    assert src.status() == SourceStatus("file", str(path), False, "not started", 0, None)
    run = Running(src, polls)
    polls.settle()
    assert len(run.flows) == 3 and max(run.batches) <= 2
    st = src.status()
    assert (st.up, st.error, st.flows, st.last_flow_at) == (True, None, 3, T0)

    line = real_lines[3]
    with path.open("ab") as fh:  # one line split across two writes
        fh.write(line[:50])
    polls.poll()
    assert len(run.flows) == 3 and src.stats.lines == 3 and src.stats.error_lines == 0
    with path.open("ab") as fh:
        fh.write(line[50:] + b"\n")
    polls.poll()
    assert len(run.flows) == 4

    with path.open("ab") as fh:  # a malformed line in the middle: counted, the stream goes on
        fh.write(
            real_lines[4] + b"\n" + b'{"flow": {"time": "2026-01-0' + b"\n" + real_lines[5] + b"\n"
        )
    polls.poll()
    run.finish()
    assert len(run.flows) == 6
    assert src.stats.errors == {ErrorReason.NOT_JSON: 1}
    bad = src.stats.examples[0]
    assert (bad.source, bad.line, bad.reason) == (str(path), 6, "not_json")
    assert encode(run.flows) == encode(file_flows(path.read_bytes()))
    assert src.status().up is False and src.status().flows == 6


def test_follow_waits_for_the_file_to_appear(tmp_path: Path, real_lines) -> None:
    path = tmp_path / "later" / "flows.json"
    polls = Polls()
    src = FollowFile(path, poll_interval=0.01)
    run = Running(src, polls)
    polls.settle()
    st = src.status()
    assert st.up is False and st.error == f"waiting for {path} to appear" and not run.flows
    polls.poll()
    assert src.status().error == f"waiting for {path} to appear"
    path.parent.mkdir()
    path.write_bytes(b"\n".join(real_lines[:4]) + b"\n")
    polls.poll()
    assert len(run.flows) == 4 and src.status().up and src.status().error is None
    run.finish()


def test_follow_rotation_finishes_the_old_file_then_reads_the_new(
    tmp_path: Path, real_lines
) -> None:
    path = tmp_path / "flows.json"
    writer = path.open("ab", buffering=0)
    writer.write(b"\n".join(real_lines[:3]) + b"\n")
    polls = Polls()
    src = FollowFile(path, poll_interval=0.01)
    run = Running(src, polls)
    polls.settle()
    assert len(run.flows) == 3

    path.rename(tmp_path / "flows.json.1")  # rotated away; the writer still has it open
    writer.write(real_lines[3] + b"\n" + real_lines[4])  # the last line lacks its newline
    polls.poll()  # PATH missing: not a rotation yet, the old file is still read
    assert len(run.flows) == 4 and src.rotations == 0 and src.status().up
    path.write_bytes(b"\n".join(real_lines[10:13]) + b"\n")
    polls.poll()
    assert src.rotations == 1
    assert len(run.flows) == 8  # the old file's partial last line was finished as a line
    with path.open("ab") as fh:
        fh.write(b"garbage\n" + real_lines[13] + b"\n")
    polls.poll()
    run.finish()
    writer.close()
    expected = file_flows(b"\n".join(real_lines[:5])) + file_flows(b"\n".join(real_lines[10:14]))
    assert encode(run.flows) == encode(expected)
    bad = src.stats.examples[0]
    assert (bad.line, bad.reason) == (4, "not_json")  # numbered in the new file


def test_follow_truncation_restarts_from_the_beginning(tmp_path: Path, real_lines) -> None:
    path = tmp_path / "flows.json"
    path.write_bytes(b"\n".join(real_lines[:6]) + b"\n")
    polls = Polls()
    src = FollowFile(path, poll_interval=0.01)
    run = Running(src, polls)
    polls.settle()
    assert len(run.flows) == 6
    with path.open("wb") as fh:  # truncate, then write less than was read before
        fh.write(b"oops\n" + real_lines[20] + b"\n")
    polls.poll()
    run.finish()
    assert src.truncations == 1 and src.rotations == 0
    assert encode(run.flows) == encode(file_flows(b"\n".join([*real_lines[:6], real_lines[20]])))
    assert [(b.line, b.reason) for b in src.stats.examples] == [(1, "not_json")]


def test_follow_from_end_reads_only_new_lines_numbered_as_in_the_file(
    tmp_path: Path, real_lines
) -> None:
    path = tmp_path / "flows.json"
    # three whole lines and a line being written: its rest must not be misread as a line
    path.write_bytes(b"\n".join(real_lines[:3]) + b"\n" + real_lines[3][:40])
    polls = Polls()
    src = FollowFile(path, from_start=False, poll_interval=0.01)
    run = Running(src, polls)
    polls.settle()
    assert run.flows == [] and src.stats.lines == 0 and src.status().up
    with path.open("ab") as fh:
        fh.write(real_lines[3][40:] + b"\n" + real_lines[4] + b"\nnot json\n")
    polls.poll()
    run.finish()
    assert encode(run.flows) == encode(file_flows(real_lines[4]))
    assert src.stats.error_lines == 1 and src.stats.examples[0].line == 6


def test_follow_from_end_reads_a_file_that_appears_later_from_its_start(
    tmp_path: Path, real_lines
) -> None:
    path = tmp_path / "flows.json"
    polls = Polls()
    src = FollowFile(path, from_start=False, poll_interval=0.01)
    run = Running(src, polls)
    polls.settle()
    path.write_bytes(b"\n".join(real_lines[:3]) + b"\n")
    polls.poll()
    run.finish()
    assert len(run.flows) == 3


def test_follow_skips_an_overlong_line_bounded(tmp_path: Path, real_lines, monkeypatch) -> None:
    monkeypatch.setattr(live_module, "MAX_LINE_BYTES", 100)
    path = tmp_path / "flows.json"
    path.write_bytes(b"x" * 150)  # longer than the limit and still no newline
    polls = Polls()
    src = FollowFile(path, poll_interval=0.01)
    run = Running(src, polls)
    polls.settle()
    assert src.stats.errors == {ErrorReason.LINE_TOO_LONG: 1}
    with path.open("ab") as fh:
        fh.write(b"y" * 300 + b"\n" + real_lines[0] + b"\n")
    polls.poll()
    run.finish()
    assert len(run.flows) == 1 and src.stats.examples[0].line == 1
    assert src.stats.lines == 2


def test_stop_ends_follow_promptly_even_with_a_long_poll(tmp_path: Path, real_lines) -> None:
    path = tmp_path / "flows.json"
    path.write_bytes(real_lines[0] + b"\n")
    src = FollowFile(path, poll_interval=60)
    run = Running(src)
    wait_until(lambda: len(run.flows) == 1)
    run.finish(timeout=10)  # far below the 60 s poll: stop interrupts the wait
    assert src.status().error == "stopped"
    missing = FollowFile(tmp_path / "never.json", poll_interval=60)
    run = Running(missing)
    wait_until(lambda: missing.status().error != "not started")
    run.finish(timeout=10)


def test_follow_real_clock_picks_up_appends(tmp_path: Path, real_lines) -> None:
    """The same without stepping: real polling and a real writer."""
    path = tmp_path / "flows.json"
    src = FollowFile(path, poll_interval=0.01)
    run = Running(src)
    wait_until(lambda: src.status().error is not None and "appear" in src.status().error)
    with path.open("ab", buffering=0) as fh:
        for i, line in enumerate(real_lines[:20]):
            fh.write(line[:30])
            fh.write(line[30:] + b"\n")
            if i % 5 == 4:
                wait_until(lambda n=i + 1: len(run.flows) == n)
    wait_until(lambda: len(run.flows) == 20)
    run.finish()
    assert encode(run.flows) == encode(file_flows(b"\n".join(real_lines[:20])))


# -- StreamSource -------------------------------------------------------------------------------
def test_pipe_source_emits_what_arrives_without_waiting_for_eof(real_lines) -> None:
    r, w = os.pipe()
    with os.fdopen(r, "rb") as stream:
        src = StreamSource(stream, "-", poll_interval=0.01)
        assert src.kind == "stdin" and src.name == "-"
        run = Running(src)
        os.write(w, b"\n".join(real_lines[:2]) + b"\n" + real_lines[2][:25])  # a few KiB only
        wait_until(lambda: len(run.flows) == 2)
        assert src.status().up and src.stats.error_lines == 0
        os.write(w, real_lines[2][25:] + b"\n[1, 2]\n")
        wait_until(lambda: len(run.flows) == 3)
        os.write(w, real_lines[3])  # the last line has no newline: still a line at EOF
        os.close(w)
        run.thread.join(10)
        assert not run.thread.is_alive() and run.error is None
    assert encode(run.flows) == encode(file_flows(b"\n".join(real_lines[:4])))
    assert [(b.source, b.line, b.reason) for b in src.stats.examples] == [("-", 4, "not_a_flow")]
    st = src.status()
    assert (st.up, st.error, st.flows) == (False, "end of input", 4)


def test_pipe_source_stops_promptly_while_no_data_comes(real_lines) -> None:
    r, w = os.pipe()
    try:
        with os.fdopen(r, "rb") as stream:
            src = StreamSource(stream, "pipe", poll_interval=0.02)
            run = Running(src)
            os.write(w, real_lines[0] + b"\n" + real_lines[1][:10])
            wait_until(lambda: len(run.flows) == 1)
            run.finish()
        assert src.stats.error_lines == 0  # a partial line is not a bad line when stopping
        assert src.status().error == "stopped"
    finally:
        os.close(w)


def test_stream_source_reads_objects_without_a_descriptor(real_lines) -> None:
    data = b"\n".join(real_lines[:10]) + b"\n"
    src = StreamSource(io.BytesIO(data), "buffer", batch_lines=4)
    run = Running(src)
    run.thread.join(10)
    assert encode(run.flows) == encode(file_flows(data)) and run.batches == [4, 4, 2]


# -- RealtimeGenerator / GeneratorSource --------------------------------------------------------
def test_plan_attack_plans_one_scenario_and_rejects_unknown_names() -> None:
    sim = Simulation(seed=1)
    start = 1_800_000_000 * _NS
    attack = sim.plan_attack("drop_storm", start, start + 120 * _NS)
    assert attack.scenario == "drop_storm" and attack.events
    assert all(start <= t < start + 120 * _NS for t, _ in attack.events)
    for name in SCENARIOS:  # every scenario can be planned on its own, for its exact span
        one = sim.plan_attack(name, start, start + 480 * _NS)
        assert (one.scenario, one.start_ns, one.end_ns) == (name, start, start + 480 * _NS)
    with pytest.raises(ValueError, match=r"'ddos'.*port_scan"):
        plan_attack("ddos", sim.topo, sim._attack_conv, sim._attack_rnd, start, start + _NS)


def test_realtime_without_attacks_is_exactly_the_generated_file(tmp_path: Path) -> None:
    res = generate(tmp_path, hours=0.25, seed=3, start=NOON, rate=0.5)
    fake = FakeTime()
    stream = RealtimeGenerator(
        seed=3,
        start=NOON,
        rate=0.5,
        attacks=(),
        duration=900,
        speed=60,
        monotonic=fake.monotonic,
        sleep=fake.sleep,
    )
    lines = [line for batch in stream.batches() for line in batch]
    assert "\n".join(lines) + "\n" == res.flows_path.read_text()
    last: dict[str, int] = {}  # each node's lines in time order
    for line in lines:
        doc = orjson.loads(line)
        t = _ns(datetime.fromisoformat(doc["time"]))  # microseconds are enough here
        assert t >= last.get(doc["node_name"], 0)
        last[doc["node_name"]] = t
    assert len(last) >= 3
    assert 900 / 60 <= fake.now <= 900 / 60 + 1  # paced: the clock advanced by duration/speed
    assert stream.labels == ()


def _by_ident(f: Any) -> str:
    wl = msgspec.json.decode(f.source.workloads) if f.source else []
    return f"{f.source.namespace}/{wl[0]['name']}" if wl else ""


def test_generator_source_paces_orders_and_injects_attacks_on_schedule() -> None:
    fake = FakeTime()
    src = GeneratorSource(
        seed=5,
        start=NOON,
        rate=0.3,
        speed=120,
        attacks=("port_scan", "drop_storm"),
        first_attack_after=60,
        attack_every=240,
        duration=600,
        clock=fixed_clock,
        monotonic=fake.monotonic,
        sleep=fake.sleep,
    )
    start_ns = int(NOON.timestamp()) * _NS
    seen: list[tuple[float, int, int]] = []  # clock, newest event time, labels visible

    def on_emit(batch: list[Any]) -> None:
        seen.append((fake.now, max(_ns(f.time) for f in batch), len(src.labels)))

    run = Running(src, on_emit=on_emit)
    run.thread.join(10)
    assert not run.thread.is_alive() and run.error is None
    flows = run.flows
    assert len(flows) > 1000 and src.stats.error_lines == 0

    # never ahead of the clock; merged order within the nodes' lag spread (1.5 s)
    for clock, newest, _ in seen:
        assert newest <= start_ns + clock * 120 * _NS + 1000
    high = 0
    for f in flows:
        t = _ns(f.time)
        assert high - t < 1_500_000_000
        high = max(high, t)
    assert start_ns <= min(_ns(f.time) for f in flows) and high < start_ns + 600 * _NS

    labels = src.labels
    assert [lab.scenario for lab in labels] == ["port_scan", "drop_storm", "port_scan"]
    assert [lab.start - NOON for lab in labels] == [timedelta(seconds=s) for s in (60, 300, 540)]
    assert all(lab.end - lab.start == timedelta(seconds=192) for lab in labels)  # 0.8 x 240 s
    # each label becomes visible as the stream (paced by the clock) reaches its start
    for k, lab in enumerate(labels):
        shown_at = next(clock for clock, _, visible in seen if visible > k)
        lead = start_ns + shown_at * 120 * _NS - _ns(lab.start)
        assert 0 <= lead <= 30 * _NS
    assert seen[0][2] == 0 and seen[-1][2] == 3

    scan = labels[0]
    probes = {
        (f.IP.destination, f.l4.TCP.destination_port)
        for f in flows
        if _by_ident(f) == scan.identity
        and f.l4
        and f.l4.TCP
        and f.l4.TCP.flags
        and f.l4.TCP.flags.SYN
        and not f.l4.TCP.flags.ACK
        and _ns(scan.start) <= _ns(f.time) <= _ns(scan.end)
    }
    assert len({port for _, port in probes}) >= 200
    storm = labels[1]
    denied = [f for f in flows if f.drop_reason_desc == "POLICY_DENIED"]
    assert len(denied) >= 200
    in_storm = [f for f in denied if _ns(storm.start) <= _ns(f.time) <= _ns(storm.end)]
    assert {_by_ident(f) for f in in_storm} == {storm.identity}

    st = src.status()
    assert (st.kind, st.name, st.up, st.flows, st.last_flow_at) == (
        "generator",
        "generator:seed=5",
        False,
        len(flows),
        T0,
    )
    assert st.error == "end of the generated range"


def _ns(dt: datetime) -> int:
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * _NS + delta.microseconds * 1000


def _generated(seed: int, **kw: Any) -> list[bytes]:
    fake = FakeTime()
    src = GeneratorSource(
        seed=seed,
        start=NOON,
        rate=0.2,
        duration=300,
        first_attack_after=30,
        attack_every=120,
        monotonic=fake.monotonic,
        sleep=fake.sleep,
        **kw,
    )
    run = Running(src)
    run.thread.join(10)
    assert not run.thread.is_alive() and run.error is None
    return encode(run.flows)


def test_generator_source_is_deterministic_for_a_seed_however_it_is_paced() -> None:
    a = _generated(4, speed=600)
    b = _generated(4, speed=7, batch_lines=5)
    c = _generated(9, speed=600)
    assert a == b and a != c


def test_generator_flows_are_what_the_file_reader_gives() -> None:
    fake = FakeTime()
    stream = RealtimeGenerator(
        seed=4,
        start=NOON,
        rate=0.2,
        duration=300,
        first_attack_after=30,
        attack_every=120,
        speed=600,
        monotonic=fake.monotonic,
        sleep=fake.sleep,
    )
    data = "".join(line + "\n" for batch in stream.batches() for line in batch).encode()
    assert encode(file_flows(data)) == _generated(4, speed=600)


def test_live_generator_continues_the_cluster_of_a_generated_history(tmp_path: Path) -> None:
    """The service trains on ``generate(start=T - H)`` and then streams from T, same seed."""
    history = generate(tmp_path, hours=1, seed=7, start=NOON - timedelta(hours=1), rate=0.5)
    fake = FakeTime()
    src = GeneratorSource(
        seed=7,
        start=NOON,
        rate=0.5,
        attacks=(),
        duration=600,
        monotonic=fake.monotonic,
        sleep=fake.sleep,
    )
    run = Running(src)
    run.thread.join(10)
    assert not run.thread.is_alive() and run.error is None

    def endpoints(flows: list[Any]) -> set[tuple[str, str, int]]:
        return {
            (ep.namespace, ep.pod_name, ep.identity)
            for f in flows
            for ep in (f.source, f.destination)
            if ep is not None and ep.pod_name
        }

    past = file_flows(history.flows_path.read_bytes())
    assert max(f.time for f in past) < NOON <= min(f.time for f in run.flows)
    now = endpoints(run.flows)
    assert len(now) >= 15 and now <= endpoints(past)  # the same pods with the same identities
    pod_ips = {f.IP.source for f in past if f.IP.source.startswith("10.244.")}
    assert {f.IP.source for f in run.flows if f.IP.source.startswith("10.244.")} <= pod_ips
    other = endpoints(
        file_flows(
            generate(
                tmp_path / "b", hours=0.2, seed=8, start=NOON, rate=0.5
            ).flows_path.read_bytes()
        )
    )
    assert not other <= endpoints(past)  # another seed is another cluster


def test_generator_default_start_is_when_it_begins_and_it_stops_promptly() -> None:
    src = GeneratorSource(seed=1, speed=600, rate=0.2, clock=fixed_clock)
    assert src.generator.start is None and src.labels == ()
    run = Running(src)  # real clock: a minute of event time every 0.1 s
    wait_until(lambda: len(run.flows) > 0)
    run.finish()
    assert src.generator.start == T0
    assert all(f.time >= T0 for f in run.flows)
    assert src.status().error == "stopped" and src.status().flows == len(run.flows)


def test_generator_source_ends_by_itself_after_its_duration() -> None:
    src = GeneratorSource(seed=2, start=NOON, speed=6000, rate=0.1, duration=120)
    run = Running(src)
    run.thread.join(10)
    assert not run.thread.is_alive() and run.error is None and run.flows
    assert src.status().error == "end of the generated range"


def test_realtime_generator_runs_once_and_checks_its_arguments() -> None:
    fake = FakeTime()
    stream = RealtimeGenerator(
        start=NOON, duration=60, attacks=(), monotonic=fake.monotonic, sleep=fake.sleep
    )
    list(stream.batches())
    with pytest.raises(RuntimeError, match="once"):
        next(stream.batches())
    for kwargs, match in [
        ({"attacks": ("ddos",)}, "'ddos'"),
        ({"speed": 0}, "speed"),
        ({"attack_every": 10}, "attack_every"),
        ({"rate": -1}, "rate"),
        ({"attack_duration": 700}, "attack_duration"),
        ({"first_attack_after": -1}, "first_attack_after"),
        ({"duration": 0}, "duration"),
    ]:
        with pytest.raises(ValueError, match=match):
            RealtimeGenerator(**kwargs)
    assert RealtimeGenerator(attacks="c2_beacon").attack_names == ("c2_beacon",)
    assert RealtimeGenerator().attack_names == SCENARIOS


# -- open_source --------------------------------------------------------------------------------
def test_open_source_builds_each_kind(tmp_path: Path) -> None:
    gen = open_source("generator", seed=3, speed=60)
    assert isinstance(gen, GeneratorSource) and gen.name == "generator:seed=3"
    assert gen.generator.speed == 60
    stdin = open_source("-")
    assert isinstance(stdin, StreamSource) and stdin.name == "-" and stdin.kind == "stdin"
    path = tmp_path / "a:b.json"
    followed = open_source(f"file:{path}", from_start=False)
    assert isinstance(followed, FollowFile) and followed.path == path
    assert followed.from_start is False and followed.name == str(path)
    plain = open_source(str(tmp_path / "flows.json"))
    assert isinstance(plain, FollowFile) and plain.kind == "file"
    assert isinstance(open_source("flows.json"), FollowFile)
    for src in (gen, stdin, followed, plain):
        assert isinstance(src.stats, ReadStats) and callable(src.run)
        assert src.status().up is False and src.status().error == "not started"


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("hubble:", "needs an address"),
        ("hubble:localhost", "expected host:port"),
        ("hubble:https://relay:4245", "without https://"),
        ("ebpf:x", "unknown source 'ebpf:x'"),
        ("kafka:flows", "unknown source 'kafka:flows'.*'hubble:ADDR'"),
        ("", "empty source"),
        ("file:", "needs a path"),
    ],
)
def test_open_source_rejects_what_it_cannot_open(spec: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        open_source(spec)


def test_open_source_rejects_unknown_options() -> None:
    with pytest.raises(ValueError, match="no option from_start.*valid: seed"):
        open_source("generator", from_start=True)
    with pytest.raises(ValueError, match="no option speed"):
        open_source(tempfile.gettempdir() + "/x.json", speed=2)

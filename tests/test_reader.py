"""The Hubble JSON reader: every real sample, every line shape, bad input, fuzzing."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netwarden.ingest import reader as reader_module
from netwarden.ingest.compact import CompactFlow
from netwarden.ingest.flow import Flow
from netwarden.ingest.reader import ErrorReason, FlowReader, read_flows


def _read_bytes(data: bytes, **kwargs) -> tuple[list, FlowReader]:
    rd = FlowReader(**kwargs)
    flows = [f for batch in rd.read_stream(io.BytesIO(data), "test.json") for f in batch]
    return flows, rd


def _sample_lines(path: Path) -> list[bytes]:
    return [ln for ln in path.read_bytes().splitlines() if ln.strip()]


@pytest.mark.parametrize("flow_type", [Flow, CompactFlow])
def test_every_reference_sample_parses_without_errors(hubble_samples, flow_type) -> None:
    for path in hubble_samples:
        rd = FlowReader(flow_type=flow_type)
        flows = [f for batch in rd.read(path) for f in batch]
        lines = _sample_lines(path)
        assert rd.stats.error_lines == 0, (path, rd.stats.examples)
        assert len(flows) == len(lines) == rd.stats.flows, path
        assert all(f.time is not None for f in flows)


def test_fields_match_the_json(hubble_samples) -> None:
    """Spot-check decoded values against orjson's view of the same lines."""
    checked = 0
    for path in hubble_samples:
        flows = list(read_flows([path]))
        for flow, line in zip(flows, _sample_lines(path), strict=True):
            raw = orjson.loads(line)["flow"]
            assert flow.verdict == raw.get("verdict", 0)
            assert (flow.IP.source if flow.IP else "") == raw.get("IP", {}).get("source", "")
            src = raw.get("source", {})
            assert list(flow.source.labels if flow.source else []) == src.get("labels", [])
            assert (flow.source.pod_name if flow.source else "") == src.get("pod_name", "")
            if "l7" in raw and "latency_ns" in raw["l7"]:
                # uint64 arrives as a JSON string and decodes to int
                assert isinstance(raw["l7"]["latency_ns"], str)
                assert flow.l7.latency_ns == int(raw["l7"]["latency_ns"])
            assert flow.is_reply == raw.get("is_reply")
            assert flow.reply == raw.get("reply", False)
            checked += 1
    assert checked >= 1900


def test_bare_legacy_flows_read_like_envelopes(hubble_samples) -> None:
    path = next(p for p in hubble_samples if "400-tcp" in p.name)
    lines = _sample_lines(path)
    bare = b"\n".join(orjson.dumps(orjson.loads(ln)["flow"]) for ln in lines)
    enveloped, _ = _read_bytes(b"\n".join(lines))
    legacy, rd = _read_bytes(bare)
    assert rd.stats.error_lines == 0
    assert len(legacy) == len(enveloped)
    for a, b in zip(legacy, enveloped, strict=True):
        assert a.time == b.time and a.l4 == b.l4 and a.source == b.source and a.verdict == b.verdict


def test_exporter_non_flow_lines_are_counted_not_flows() -> None:
    flow = b'{"flow":{"time":"2026-01-05T00:00:01.5Z","verdict":"FORWARDED"},"node_name":"c/n1","time":"2026-01-05T00:00:01.5Z"}'
    data = b"\n".join(
        [
            flow,
            b'{"lost_events":{"source":"PERF_EVENT_RING_BUFFER","num_events_lost":"42","cpu":{"value":3}},"node_name":"c/n1","time":"2026-01-05T00:00:02Z"}',
            b'{"lost_events":{"source":3,"num_events_lost":"8"}}',
            b'{"node_status":{"state_change":"NODE_UNAVAILABLE","node_names":["c/n2"],"message":"down"}}',
            b'{"agent_event":{"type":"POLICY_UPDATED"},"node_name":"c/n1","time":"2026-01-05T00:00:03Z"}',
            b'{"debug_event":{"type":"DBG_GENERIC"},"node_name":"c/n1"}',
            flow,
        ]
    )
    flows, rd = _read_bytes(data)
    assert len(flows) == 2
    assert flows[0].node_name == "c/n1"  # taken from the envelope when the flow lacks it
    stats = rd.stats
    assert stats.error_lines == 0
    assert stats.lost_event_lines == 2
    assert stats.events_lost == {"PERF_EVENT_RING_BUFFER": 42, "HUBBLE_RING_BUFFER": 8}
    assert (stats.node_status_lines, stats.agent_event_lines, stats.debug_event_lines) == (1, 1, 1)


def test_bad_lines_are_skipped_counted_and_located() -> None:
    good = b'{"flow":{"time":"2026-01-05T00:00:01Z","verdict":"DROPPED","drop_reason_desc":"POLICY_DENIED"}}'
    lines = [
        good,  # 1
        b"this is not json",  # 2
        b"",  # 3 blank: ignored
        b"[1, 2, 3]",  # 4 not an object
        b'{"hello": "world"}',  # 5 no flow fields
        b'{"flow":{"time":"yesterday"}}',  # 6 wrong type
        b'{"flow":{"time":"2026-01-05T00:00:01Z","l4":{"TCP":{"source_port":"http"}}}}',  # 7
        b'{"flow":{"verdict":"FORWARDED"}}',  # 8 no time anywhere
        b'{"flow":{"time":"2026-01-05T00:00:01Z"',  # 9 truncated
        good,  # 10
    ]
    flows, rd = _read_bytes(b"\n".join(lines), max_examples=10)
    assert len(flows) == 2
    stats = rd.stats
    assert stats.lines == 10 and stats.blank_lines == 1
    assert stats.errors == {
        ErrorReason.NOT_JSON: 2,
        ErrorReason.NOT_A_FLOW: 2,
        ErrorReason.WRONG_TYPE: 2,
        ErrorReason.MISSING_TIME: 1,
    }
    located = {(bad.line, bad.reason) for bad in stats.examples}
    assert located == {
        (2, "not_json"),
        (4, "not_a_flow"),
        (5, "not_a_flow"),
        (6, "wrong_type"),
        (7, "wrong_type"),
        (8, "missing_time"),
        (9, "not_json"),
    }
    wrong = next(b for b in stats.examples if b.line == 7)
    assert "$.flow.l4.TCP.source_port" in wrong.message and wrong.source == "test.json"
    summary = "\n".join(stats.summary_lines())
    assert "test.json:2: not_json" in summary and "7 skipped as bad" in summary


def test_only_first_examples_are_kept_but_all_are_counted() -> None:
    data = b"\n".join(
        [b"garbage"] * 1000 + [b'{"time":"2026-01-05T00:00:01Z","verdict":"FORWARDED"}']
    )
    flows, rd = _read_bytes(data)
    assert len(flows) == 1
    assert rd.stats.errors[ErrorReason.NOT_JSON] == 1000
    assert [b.line for b in rd.stats.examples] == [1, 2, 3, 4, 5]
    assert "... and 995 more" in "\n".join(rd.stats.summary_lines())


def test_line_numbers_are_right_across_blocks(monkeypatch) -> None:
    monkeypatch.setattr(reader_module, "_BLOCK_BYTES", 64)
    good = b'{"time":"2026-01-05T00:00:01Z","verdict":"FORWARDED"}'
    lines = [good] * 50
    lines[36] = b"{broken"
    flows, rd = _read_bytes(b"\n".join(lines) + b"\n")
    assert len(flows) == 49
    assert [b.line for b in rd.stats.examples] == [37]


def test_overlong_line_is_skipped(monkeypatch) -> None:
    monkeypatch.setattr(reader_module, "_BLOCK_BYTES", 64)
    monkeypatch.setattr(reader_module, "MAX_LINE_BYTES", 200)
    good = b'{"time":"2026-01-05T00:00:01Z","verdict":"FORWARDED"}'
    data = b"\n".join([good, b'{"x":"' + b"a" * 1000 + b'"}', good])
    flows, rd = _read_bytes(data)
    assert len(flows) == 2
    assert rd.stats.errors == {ErrorReason.LINE_TOO_LONG: 1}


def test_gzip_and_plain_give_the_same_flows(tmp_path, hubble_samples) -> None:
    path = next(p for p in hubble_samples if "330-dns" in p.name)
    gz = tmp_path / "flows.log"  # no .gz suffix: detection is by content
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert list(read_flows([gz])) == list(read_flows([path]))


def test_corrupt_gzip_ends_the_file_with_an_error(tmp_path, hubble_samples) -> None:
    path = next(p for p in hubble_samples if "330-dns" in p.name)
    blob = gzip.compress(path.read_bytes())
    bad = tmp_path / "bad.gz"
    bad.write_bytes(blob[: len(blob) // 2])
    rd = FlowReader()
    flows = list(read_flows([bad], rd))
    assert rd.stats.errors[ErrorReason.UNREADABLE] == 1
    assert 0 < len(flows) < 330


def test_stdin_through_the_cli(tmp_path, hubble_samples) -> None:
    path = next(p for p in hubble_samples if "400-udp" in p.name)
    out = tmp_path / "w.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "netwarden", "windows", "--flows", "-", "--out", str(out)],
        input=path.read_bytes(),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert "400 lines: 400 flows, 0 skipped as bad" in proc.stderr.decode()
    assert out.read_bytes().count(b"\n") >= 1


# -- fuzzing: no exception escapes, and every line is accounted for -------------------------

_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "flow",
                    "time",
                    "verdict",
                    "IP",
                    "l4",
                    "TCP",
                    "source",
                    "destination",
                    "labels",
                    "workloads",
                    "l7",
                    "dns",
                    "http",
                    "is_reply",
                    "lost_events",
                    "num_events_lost",
                    "node_status",
                    "event_type",
                    "type",
                    "source_port",
                    "flags",
                    "SYN",
                    "identity",
                    "pod_name",
                    "namespace",
                    "traffic_direction",
                    "x",
                ]
            ),
            children,
            max_size=6,
        )
    ),
    max_leaves=25,
)


def _accounted(rd: FlowReader, n_lines: int) -> bool:
    s = rd.stats
    non_flow = s.lost_event_lines + s.node_status_lines + s.agent_event_lines + s.debug_event_lines
    return s.flows + s.error_lines + non_flow + s.blank_lines == n_lines == s.lines


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_json_values, min_size=1, max_size=20))
def test_fuzz_random_json_structures(values) -> None:
    data = b"\n".join(json.dumps(v).encode() for v in values)
    for flow_type in (Flow, CompactFlow):
        _, rd = _read_bytes(data, flow_type=flow_type)
        assert _accounted(rd, len(values))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=200).filter(lambda b: b"\n" not in b), min_size=1, max_size=20))
def test_fuzz_random_bytes(lines) -> None:
    _, rd = _read_bytes(b"\n".join(lines))
    expected = len(lines) - (lines[-1] == b"")  # an empty last piece is no line
    assert _accounted(rd, expected)


_REAL_LINES: list[bytes] = []


def _real_lines() -> list[bytes]:
    if not _REAL_LINES:
        from tests.conftest import HUBBLE_SAMPLES

        for path in HUBBLE_SAMPLES:
            _REAL_LINES.extend(_sample_lines(path)[:20])
    return _REAL_LINES


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_mutated_real_lines(data) -> None:
    """Flip, drop and insert bytes in real Hubble lines: the reader survives and counts each line."""
    real = _real_lines()
    if not real:
        pytest.skip("reference samples not found")
    lines = []
    for _ in range(data.draw(st.integers(1, 8))):
        line = bytearray(data.draw(st.sampled_from(real)))
        for _ in range(data.draw(st.integers(0, 4))):
            pos = data.draw(st.integers(0, len(line) - 1))
            op = data.draw(st.sampled_from(["flip", "drop", "insert"]))
            if op == "flip":
                line[pos] = data.draw(st.integers(0, 255))
            elif op == "drop":
                del line[pos]
            else:
                line.insert(pos, data.draw(st.sampled_from(b'{}[]",:0a\\')))
        lines.append(bytes(line).replace(b"\n", b" "))
    _, rd = _read_bytes(b"\n".join(lines), flow_type=CompactFlow)
    assert _accounted(rd, len(lines))


# -- impossible values: event times, numbers out of range, huge counted-only lines -------------

_FLOW_AT = '{{"flow":{{"time":"{}","verdict":"FORWARDED","IP":{{"source":"10.0.0.1"}}}}}}'


@pytest.mark.parametrize("flow_type", [Flow, CompactFlow])
def test_impossible_event_times_are_bad_lines_not_crashes(flow_type) -> None:
    """Years past 9999 (or rounded into 10000), before 1970, non-RFC 3339 text: the line is
    counted with a reason and the stream goes on."""
    times = {
        "9999-12-31T23:59:59Z": ErrorReason.TIME_OUT_OF_RANGE,
        "9999-12-31T23:59:59.999999Z": ErrorReason.TIME_OUT_OF_RANGE,
        "9999-06-01T00:00:00+01:00": ErrorReason.TIME_OUT_OF_RANGE,
        "1969-12-31T23:59:59Z": ErrorReason.TIME_OUT_OF_RANGE,
        "0001-01-01T00:00:00Z": ErrorReason.TIME_OUT_OF_RANGE,
        "1960-01-01T00:00:00": ErrorReason.TIME_OUT_OF_RANGE,  # naive
        "9999-12-31T23:59:59.9999999Z": ErrorReason.WRONG_TYPE,  # rounds into year 10000
        "10000-01-01T00:00:00Z": ErrorReason.WRONG_TYPE,
        "yesterday": ErrorReason.WRONG_TYPE,
    }
    good = _FLOW_AT.format("2026-01-05T00:00:01Z").encode()
    lines = [good]
    for text in times:
        lines.append(_FLOW_AT.format(text).encode())
    # the same impossible time in the envelope, and in a legacy bare flow
    lines.append(b'{"flow":{"verdict":"FORWARDED"},"time":"9999-12-31T23:59:59Z"}')
    lines.append(b'{"time":"1900-01-01T00:00:00Z","verdict":"FORWARDED"}')
    lines.append(good)
    flows, rd = _read_bytes(b"\n".join(lines), flow_type=flow_type, max_examples=20)
    assert len(flows) == 2
    expected: dict[str, int] = {}
    for reason in [*times.values(), ErrorReason.TIME_OUT_OF_RANGE, ErrorReason.TIME_OUT_OF_RANGE]:
        expected[reason] = expected.get(reason, 0) + 1
    assert rd.stats.errors == expected
    bad = next(b for b in rd.stats.examples if b.line == 2)
    assert bad.reason == "time_out_of_range" and "9999-12-31T23:59:59+00:00" in bad.message


def test_the_reported_line_cannot_stop_windows_or_crash_them() -> None:
    """Issue 17: one line stamped 9999-12-31T23:59:59(.999999)Z in a stream of good flows."""
    from netwarden.ingest.windows import WindowBuilder, windows_to_rows
    from tests.flowfactory import flow, pod

    a, b = pod("shop", "web", 100, "10.0.0.1"), pod("shop", "db", 101, "10.0.0.2")
    lines = [orjson.dumps(flow(a, b, seconds=i, sport=30000 + i)) for i in range(3000)]
    lines.insert(100, _FLOW_AT.format("9999-12-31T23:59:59Z").encode())
    lines.insert(200, _FLOW_AT.format("9999-12-31T23:59:59.999999Z").encode())
    rd = FlowReader(flow_type=CompactFlow)
    builder = WindowBuilder()
    windows = []
    for batch in rd.read_stream(io.BytesIO(b"\n".join(lines)), "followed.json"):
        windows += builder.add(batch)
    windows += builder.flush()
    assert rd.stats.errors == {ErrorReason.TIME_OUT_OF_RANGE: 2}
    assert [b.line for b in rd.stats.examples] == [101, 201]
    assert (builder.stats.late_flows, builder.stats.flows_counted) == (0, 3000)
    assert len(windows_to_rows(windows)) == len(windows) >= 50


@pytest.mark.parametrize("flow_type", [Flow, CompactFlow])
def test_numbers_outside_their_protobuf_range_are_rejected(flow_type) -> None:
    good = b'{"flow":{"time":"2026-01-05T00:00:01Z","verdict":"FORWARDED"}}'
    bad = {
        b'{"flow":{"time":"2026-01-05T00:00:01Z","l4":{"TCP":{"source_port":-1}}}}': (
            "$.flow.l4.TCP.source_port"
        ),
        b'{"flow":{"time":"2026-01-05T00:00:01Z","l4":{"UDP":{"destination_port":70000}}}}': (
            "$.flow.l4.UDP.destination_port"
        ),
        b'{"flow":{"time":"2026-01-05T00:00:01Z","l4":{"SCTP":{"destination_port":"65536"}}}}': (
            "$.flow.l4.SCTP.destination_port"
        ),
        b'{"flow":{"time":"2026-01-05T00:00:01Z","source":{"identity":4294967296}}}': (
            "$.flow.source.identity"
        ),
        b'{"flow":{"time":"2026-01-05T00:00:01Z","destination":{"identity":-2}}}': (
            "$.flow.destination.identity"
        ),
        b'{"flow":{"time":"2026-01-05T00:00:01Z","netwarden":{"bytes_sent":"-100"}}}': (
            "$.flow.netwarden.bytes_sent"
        ),
        b'{"lost_events":{"source":"PERF_EVENT_RING_BUFFER","num_events_lost":"-42"}}': (
            "$.lost_events.num_events_lost"
        ),
        b'{"time":"2026-01-05T00:00:01Z","l4":{"TCP":{"destination_port":99999}}}': (
            "$.l4.TCP.destination_port"  # a legacy bare flow
        ),
    }
    edges = [  # the extremes of each range are fine
        b'{"flow":{"time":"2026-01-05T00:00:01Z","l4":{"TCP":{"source_port":65535}},'
        b'"source":{"identity":4294967295},"netwarden":{"bytes_sent":"18446744073709551615"}}}',
        b'{"lost_events":{"num_events_lost":"0"}}',
    ]
    flows, rd = _read_bytes(b"\n".join([good, *bad, *edges]), flow_type=flow_type, max_examples=20)
    assert len(flows) == 2
    assert rd.stats.errors == {ErrorReason.OUT_OF_RANGE: len(bad)}
    assert rd.stats.events_lost == {"UNKNOWN_LOST_EVENT_SOURCE": 0}  # the negative not added
    for example, path in zip(rd.stats.examples, bad.values(), strict=True):
        assert example.reason == "out_of_range" and path in example.message, example


_RSS_CHILD = """
import json, sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from netwarden.ingest.compact import CompactFlow
from netwarden.ingest.reader import FlowReader

def peak():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

rd = FlowReader(flow_type=CompactFlow)
before = peak()
flows = sum(len(batch) for batch in rd.read(sys.argv[1]))
s = rd.stats
print(json.dumps({"grew": peak() - before, "flows": flows, "errors": s.error_lines,
                  "counted": [s.agent_event_lines, s.debug_event_lines, s.node_status_lines]}))
"""


@pytest.mark.parametrize("kind", ["agent_event", "debug_event", "node_status"])
def test_a_huge_counted_only_line_costs_its_size_not_a_tree_of_objects(tmp_path, kind) -> None:
    """A 16 MB agent event (just under MAX_LINE_BYTES) of small nested objects: decoded into
    dicts it took ~900 MB; only counted, the reader's peak grows by a few times the line."""
    size = 16_000_000
    assert size < reader_module.MAX_LINE_BYTES
    head = b'{"' + kind.encode() + b'":{"type":"X","items":['
    item = b'{"k":"v"},'
    body = head + item * ((size - len(head) - 40) // len(item)) + b'{"k":"v"}]},"node_name":"n"}'
    good = b'{"flow":{"time":"2026-01-05T00:00:01Z","verdict":"FORWARDED"}}'
    path = tmp_path / "big.json"
    path.write_bytes(b"\n".join([good, body, good]) + b"\n")
    proc = subprocess.run(
        [sys.executable, "-c", _RSS_CHILD, str(path)], capture_output=True, text=True, check=True
    )
    out = json.loads(proc.stdout)
    index = ["agent_event", "debug_event", "node_status"].index(kind)
    assert out["flows"] == 2 and out["errors"] == 0 and out["counted"][index] == 1
    assert out["grew"] < 4 * len(body), out


_TIME_TEXT = st.one_of(
    st.datetimes(
        min_value=datetime(1, 1, 1),
        max_value=datetime(9999, 12, 31, 23, 59, 59, 999999),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=14)), timezone(-timedelta(hours=12))]
        ),
    ).map(lambda d: d.isoformat().replace("+00:00", "Z")),
    st.datetimes(min_value=datetime(1, 1, 1)).map(lambda d: d.isoformat()),  # naive
    st.from_regex(r"\A[0-9]{4,5}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?Z\Z"),
    st.sampled_from(["9999-12-31T23:59:59.9999999Z", "9999-12-31T23:59:59.999999Z", "0", ""]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_TIME_TEXT, min_size=1, max_size=12), st.integers(1, 8))
def test_fuzz_event_times_through_reader_and_windows(times, batch) -> None:
    """Any timestamp text: the reader accounts for every line, and the window builder and the
    window rows never raise (no "year 10000 is out of range" anywhere)."""
    from netwarden.ingest.windows import WindowBuilder, windows_to_rows

    data = b"\n".join(_FLOW_AT.format(t).encode() for t in times)
    rd = FlowReader(flow_type=CompactFlow, batch_lines=batch)
    builder = WindowBuilder(log=lambda _: None)
    windows = []
    for flows in rd.read_stream(io.BytesIO(data), "fuzz"):
        windows += builder.add(flows)
    windows += builder.flush()
    assert _accounted(rd, len(times))
    for w in windows:
        w.start_datetime(), w.end_datetime()
    windows_to_rows(windows)
    s = builder.stats
    assert s.flows_seen == rd.stats.flows

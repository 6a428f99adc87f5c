"""Protobuf flows with values the JSON reader rejects are rejected the same way (issue 17)."""

from __future__ import annotations

import pytest

from netwarden.hubble import flow_pb2, observer_pb2
from netwarden.ingest.protoflow import OutOfRange, compact_flow
from netwarden.ingest.reader import ErrorReason
from netwarden.ingest.sources.hubble import HubbleSource

_2026 = 1_767_614_400  # 2026-01-05T12:00:00Z


def _flow(seconds: int = _2026, **l4: dict) -> flow_pb2.Flow:
    flow = flow_pb2.Flow(verdict=flow_pb2.FORWARDED, uuid=f"u-{seconds}-{sorted(l4)}")
    flow.time.seconds = seconds
    for kind, ports in l4.items():
        getattr(flow.l4, kind).CopyFrom(getattr(flow_pb2, kind)(**ports))
    return flow


@pytest.mark.parametrize("kind", ["TCP", "UDP", "SCTP"])
def test_a_port_above_65535_is_out_of_range(kind) -> None:
    assert compact_flow(_flow(**{kind: {"source_port": 65535, "destination_port": 1}}))
    with pytest.raises(OutOfRange) as err:
        compact_flow(_flow(**{kind: {"source_port": 1, "destination_port": 70000}}))
    assert err.value.reason == ErrorReason.OUT_OF_RANGE and "70000" in str(err.value)


@pytest.mark.parametrize("seconds", [253_402_300_799, -1, -62_135_596_800])  # 9999-12-31, 1969, 1
def test_an_event_time_windows_cannot_represent_is_out_of_range(seconds) -> None:
    with pytest.raises(OutOfRange) as err:
        compact_flow(_flow(seconds))
    assert err.value.reason == ErrorReason.TIME_OUT_OF_RANGE


def test_the_hubble_source_counts_them_as_bad_messages_and_goes_on() -> None:
    source = HubbleSource("localhost:4245", log=lambda _: None)
    messages = [
        _flow(_2026, TCP={"source_port": 1, "destination_port": 80}),
        _flow(_2026 + 1, UDP={"source_port": 1, "destination_port": 100_000}),
        _flow(253_402_300_799),
        _flow(_2026 + 2, TCP={"source_port": 2, "destination_port": 80}),
    ]
    out = [
        source._message(observer_pb2.GetFlowsResponse(flow=m).SerializeToString()) for m in messages
    ]
    assert [f is not None for f in out] == [True, False, False, True]
    assert source.stats.flows == 2
    assert source.stats.errors == {
        ErrorReason.OUT_OF_RANGE: 1,
        ErrorReason.TIME_OUT_OF_RANGE: 1,
    }

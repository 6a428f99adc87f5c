"""Generated labelled traffic through the whole ingest path: every attack shows in its windows."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from netwarden.generator import SCENARIOS, generate
from netwarden.ingest.pipeline import build_windows
from netwarden.ingest.windows import ClosedWindow

#: The feature each scenario must move, as the attacker's client (egress) side.
SIGNATURE = {
    "port_scan": "egress_distinct_dst_ports",
    "lateral_movement": "egress_new_conns",
    "exfiltration": "egress_world_distinct_fqdns",
    "dns_tunnel": "egress_dns_distinct_names",
    "c2_beacon": "egress_world_distinct_fqdns",
    "drop_storm": "egress_policy_drops",
}


@pytest.fixture(scope="module")
def day(tmp_path_factory) -> tuple[object, list[ClosedWindow]]:
    out: Path = tmp_path_factory.mktemp("e2e")
    result = generate(out, hours=3, seed=20260, attacks=list(SCENARIOS), rate=0.5)
    windows: list[ClosedWindow] = []
    ingest = build_windows([result.flows_path], windows.extend)
    assert ingest.read.error_lines == 0
    assert ingest.build.late_flows == 0  # generator disorder (< 1.5 s) is inside the lateness
    return result, windows


def test_scenarios_have_signatures() -> None:
    assert set(SIGNATURE) == set(SCENARIOS)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_attack_moves_its_signature_feature(day, scenario) -> None:
    result, windows = day
    (label,) = [lb for lb in result.labels if lb.scenario == scenario]
    start, end = label.start.timestamp(), label.end.timestamp()
    mine = [w for w in windows if w.identity == label.identity]
    assert mine, f"no windows for {label.identity}"
    during = [w.features()[SIGNATURE[scenario]] for w in mine if w.end > start and w.start < end]
    normal = [
        w.features()[SIGNATURE[scenario]]
        for w in mine
        if not any(
            w.end > lb.start.timestamp() and w.start < lb.end.timestamp()
            for lb in result.labels
            if lb.identity == label.identity
        )
    ]
    assert during and normal
    usual = statistics.median(normal)
    spread = max(normal) - usual
    assert max(during) > usual + max(spread, 1e-9), (scenario, max(during), usual, max(normal))
    if scenario == "lateral_movement":  # its peer is an edge no other window of it has
        new = {(e.peer, e.port) for w in mine if w.end > start and w.start < end
               for e in w.edges(True)}  # fmt: skip
        before = {(e.peer, e.port) for w in mine if w.end <= start for e in w.edges(True)}
        assert new - before


def test_each_connection_counted_once_per_end(day) -> None:
    """Flows are reported at both ends; the client and server sides see the same totals."""
    result, windows = day
    quiet = [
        w
        for w in windows
        if not any(
            w.end > lb.start.timestamp() and w.start < lb.end.timestamp() for lb in result.labels
        )
    ]
    client = sum(w.client.new_conns for w in quiet)
    server = sum(w.server.new_conns for w in quiet)
    assert client > 100
    # Connections to world or reserved peers have only a client side, connections from world
    # only a server side, so the totals differ, but never by a factor of two (double counting).
    assert 0.5 < server / client < 1.5

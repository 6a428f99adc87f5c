"""Low-and-slow attacks (issue 19): an hour or more of one connection, probe or beacon a minute,
each exactly what its label says and nowhere else, on both cluster shapes."""

from __future__ import annotations

import itertools
import re
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from netwarden.generator import ALL_SCENARIOS, CLUSTERS, SCENARIOS, SLOW_SCENARIOS, generate
from tests.test_generator import lines, ns
from tests.test_generator_changes import assert_within_label, at, diff, keyed, who

KW = {"hours": 3.75, "seed": 8, "start": datetime(2026, 1, 6, 8, tzinfo=UTC), "rate": 0.2}


@pytest.fixture(scope="module", params=list(CLUSTERS))
def slow(request, tmp_path_factory: pytest.TempPathFactory):
    """Every slow attack in one range (they never overlap), its clean twin's extra flows, and
    the flows by scenario."""
    cluster = request.param
    out = tmp_path_factory.mktemp(f"slow-{cluster}")
    clean = keyed(generate(out / "clean", cluster=cluster, **KW).flows_path)
    res = generate(out / "attacked", cluster=cluster, attacks=SLOW_SCENARIOS, **KW)
    added, removed = diff(clean, res.flows_path)
    labels = {lab.scenario: lab for lab in res.labels}
    return cluster, res, labels, added, removed


def test_scenario_names() -> None:
    assert SCENARIOS == (
        "port_scan",
        "lateral_movement",
        "exfiltration",
        "dns_tunnel",
        "c2_beacon",
        "drop_storm",
    )
    assert SLOW_SCENARIOS == ("slow_lateral", "slow_scan", "slow_beacon")
    assert ALL_SCENARIOS == SCENARIOS + SLOW_SCENARIOS


def test_each_attack_is_only_in_its_label(slow) -> None:
    _, res, labels, added, removed = slow
    assert not removed, "attacks never change normal traffic"
    assert sorted(labels) == sorted(SLOW_SCENARIOS)
    for a, b in itertools.pairwise(sorted(res.labels, key=lambda lab: lab.start)):
        assert a.end <= b.start
    by_label = defaultdict(list)
    for f in added:
        lab = next((x for x in res.labels if at(x.start) <= ns(f["time"]) <= at(x.end)), None)
        assert lab is not None, f["time"]
        by_label[lab.scenario].append(f)
    for name, lab in labels.items():
        assert lab.end - lab.start >= timedelta(hours=1)
        assert by_label[name]
        assert_within_label((lab.identity,), lab.start, lab.end, by_label[name])


def _inside(lab, flows: list[dict]) -> list[dict]:
    return [f for f in flows if at(lab.start) <= ns(f["time"]) <= at(lab.end)]


def test_slow_lateral_reads_a_data_store_in_another_namespace(slow) -> None:
    cluster, _, labels, added, _ = slow
    lab = labels["slow_lateral"]
    target = re.search(r"to (\S+):(\d+) in another namespace", lab.description)
    db, port = target.group(1), int(target.group(2))
    assert db.split("/")[0] != lab.identity.split("/")[0]
    spec = CLUSTERS[cluster]
    assert not any(e.client == lab.identity and e.server == db for e in spec.edges)
    assert port in {w.port for w in spec.workloads if f"{w.namespace}/{w.name}" == db}
    mine = _inside(lab, added)
    syn = [
        f
        for f in mine
        if f["l4"].get("TCP", {}).get("flags") == {"SYN": True}
        and f["trace_observation_point"] == "FROM_ENDPOINT"
    ]
    assert all(
        who(f["destination"]) == db and f["l4"]["TCP"]["destination_port"] == port for f in syn
    )
    per_minute = Counter((ns(f["time"]) - at(lab.start)) // (60 * 10**9) for f in syn)
    full = range(1, int((lab.end - lab.start).total_seconds() // 60) - 1)
    assert all(1 <= per_minute[m] <= 2 for m in full), "one or two connections a minute"
    tcp = [f["l4"]["TCP"]["flags"] for f in mine if "TCP" in f["l4"]]
    assert sum(fl == {"SYN": True, "ACK": True} for fl in tcp) == 2 * len(syn)  # both ends
    assert not any(fl.get("RST") for fl in tcp), "the sessions succeed"
    replies = [
        f for f in mine if f.get("is_reply") and f["l4"].get("TCP", {}).get("flags", {}).get("PSH")
    ]
    assert len(replies) >= len(syn), "each session reads something"


def test_slow_scan_is_one_refused_port_every_half_minute_or_so(slow) -> None:
    cluster, _, labels, added, _ = slow
    lab = labels["slow_scan"]
    added = _inside(lab, added)
    assert all("TCP" in f["l4"] for f in added), "no lookups: the scanner uses the peer's IP"
    peer = re.search(r"ports on (\S+) \(", lab.description).group(1)
    assert any(e.client == lab.identity and e.server == peer for e in CLUSTERS[cluster].edges)
    probes = sorted(
        (ns(f["time"]), f["l4"]["TCP"]["destination_port"])
        for f in added
        if who(f["source"]) == lab.identity
        and f["l4"]["TCP"].get("flags") == {"SYN": True}
        and (f.get("trace_observation_point") == "FROM_ENDPOINT" or f["verdict"] == "DROPPED")
    )
    first = {}
    for t, port in probes:
        first.setdefault(port, t)
    times = sorted(first.values())
    assert len(times) >= 60 and times[-1] - times[0] >= 55 * 60 * 10**9
    gaps = [(b - a) / 1e9 for a, b in itertools.pairwise(times)]
    assert all(29 <= g <= 61 for g in gaps), "a new port every 30-60 s"
    refused = [
        f
        for f in added
        if f["verdict"] == "DROPPED"
        or (who(f["destination"]) == lab.identity and f["l4"]["TCP"].get("flags", {}).get("RST"))
    ]
    answered = [
        f
        for f in added
        if who(f["destination"]) == lab.identity and f["l4"]["TCP"].get("flags", {}).get("SYN")
    ]
    assert len(refused) > 0.8 * (len(refused) + len(answered)), "a scan is mostly refused"
    if "dropped by policy" in lab.description:
        assert all(
            f["drop_reason_desc"] == "POLICY_DENIED" for f in added if f["verdict"] == "DROPPED"
        )


def test_slow_beacon_has_no_name_and_a_one_minute_beat(slow) -> None:
    _, res, labels, added, _ = slow
    lab = labels["slow_beacon"]
    added = _inside(lab, added)
    ip, port = re.search(r"to (\S+):(\d+) \(no DNS name\)", lab.description).groups()
    to_peer = [f for f in added if ip in (f["IP"]["source"], f["IP"]["destination"])]
    assert to_peer and all(
        "destination_names" not in f and "source_names" not in f for f in to_peer
    )
    for d in lines(res.flows_path):  # nothing in the whole file ever resolved to it
        dns = d["flow"].get("l7", {}).get("dns")
        assert not dns or ip not in dns.get("ips", [])
    syns = sorted(
        ns(f["time"])
        for f in to_peer
        if f["l4"]["TCP"].get("flags") == {"SYN": True} and who(f["source"]) == lab.identity
    )
    assert len(syns) >= 60
    gaps = [(b - a) / 1e9 for a, b in itertools.pairwise(syns)]
    assert all(50 <= g <= 70 for g in gaps) and abs(sum(gaps) / len(gaps) - 60) < 1
    assert len(to_peer) <= 5 * len(syns), "short sessions"
    assert {f["l4"]["TCP"]["destination_port"] for f in to_peer if not f["is_reply"]} == {int(port)}

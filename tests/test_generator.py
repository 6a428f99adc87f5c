"""The labelled traffic generator: Hubble-shaped output, determinism, scenarios, load cycle."""

from __future__ import annotations

import gzip
import ipaddress
import itertools
import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from netwarden.generator import SCENARIOS, AttackLabel, generate, read_labels
from tests.conftest import DATA

HUBBLE = DATA / "hubble"
NOON = datetime(2026, 1, 5, 11, 0, tzinfo=UTC)

# Enum names from INTERFACES.md §1.6 (independent of the reader module).
VERDICTS = {
    "VERDICT_UNKNOWN",
    "FORWARDED",
    "DROPPED",
    "ERROR",
    "AUDIT",
    "REDIRECTED",
    "TRACED",
    "TRANSLATED",
}
DIRECTIONS = {"TRAFFIC_DIRECTION_UNKNOWN", "INGRESS", "EGRESS"}
FLOW_TYPES = {"UNKNOWN_TYPE", "L3_L4", "L7", "SOCK"}
L7_TYPES = {"UNKNOWN_L7_TYPE", "REQUEST", "RESPONSE", "SAMPLE"}
OBS_POINTS = {
    "UNKNOWN_POINT": None,
    "TO_PROXY": 1,
    "TO_HOST": 2,
    "TO_STACK": 3,
    "TO_OVERLAY": 4,
    "TO_ENDPOINT": 0,
    "FROM_ENDPOINT": 5,
    "FROM_PROXY": 6,
    "FROM_HOST": 7,
    "FROM_STACK": 8,
    "FROM_OVERLAY": 9,
    "FROM_NETWORK": 10,
    "TO_NETWORK": 11,
}
TRACE_REASONS = {"TRACE_REASON_UNKNOWN", "NEW", "ESTABLISHED", "REPLY", "RELATED"}
DROP_CODES = {
    "POLICY_DENIED": 133,
    "CT_MISSING_TCP_ACK_FLAG": 136,
    "STALE_OR_UNROUTABLE_IP": 151,
    "SERVICE_BACKEND_NOT_FOUND": 158,
    "UNKNOWN_CONNECTION_TRACKING_STATE": 163,
    "POLICY_DENY": 181,
}
TCP_FLAGS = {"FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR", "NS"}
# Flow fields of Hubble 1.19/1.20 that the 2021 captures predate (INTERFACES.md §1.5, §2.3-2.4).
EXTRA_KEYS = {
    "flow": {
        "uuid",
        "emitter",
        "node_labels",
        "source_names",
        "destination_names",
        "drop_reason",
        "trace_reason",
        "file",
    },
    "flow.emitter": {"name", "version"},
    "flow.file": {"name", "line"},
    "flow.source": {"cluster_name", "workloads"},
    "flow.destination": {"cluster_name", "workloads"},
    "flow.source.workloads[]": {"name", "kind"},
    "flow.destination.workloads[]": {"name", "kind"},
    "flow.l4.TCP.flags": TCP_FLAGS,
}
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.(\d{3}|\d{6}|\d{9}))?Z$")
DOC_NETS = [ipaddress.ip_network(n) for n in ("203.0.113.0/24", "198.51.100.0/24", "192.0.2.0/24")]
POD_NET = ipaddress.ip_network("10.244.0.0/16")
NODE_NET = ipaddress.ip_network("172.18.0.0/24")
SVC_NET = ipaddress.ip_network("10.96.0.0/16")


# -- helpers ------------------------------------------------------------------------------------
def lines(path: Path) -> Iterator[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        for raw in fh:
            yield orjson.loads(raw)


def ns(ts: str) -> int:
    base = int(datetime.fromisoformat(ts[:19] + "+00:00").timestamp())
    frac = ts[20:-1]
    return base * 10**9 + (int(frac.ljust(9, "0")) if frac else 0)


def ident(ep: dict) -> str:
    wl = ep.get("workloads")
    return f"{ep['namespace']}/{wl[0]['name']}" if wl else ""


def entropy(s: str) -> float:
    counts = Counter(s)
    return -sum(c / len(s) * math.log2(c / len(s)) for c in counts.values())


def key_paths(obj: object, path: str, out: dict[str, set[str]]) -> None:
    if isinstance(obj, dict):
        out[path].update(obj)
        for k, v in obj.items():
            key_paths(v, f"{path}.{k}" if path else k, out)
    elif isinstance(obj, list):
        for v in obj:
            key_paths(v, path + "[]", out)


@pytest.fixture(scope="module")
def attacked(tmp_path_factory: pytest.TempPathFactory):
    """Two busy hours with every scenario: shared by the format and scenario tests."""
    out = tmp_path_factory.mktemp("attacked")
    res = generate(out, hours=2.0, seed=7, attacks=SCENARIOS, start=NOON, rate=0.2)
    return res, list(lines(res.flows_path))


@pytest.fixture(scope="module")
def sample_keys() -> dict[str, set[str]]:
    files = sorted((HUBBLE / "hubble-otel").glob("*.json")) + sorted(
        (HUBBLE / "cilium-docs").glob("*.jsonl")
    )
    assert files, f"the real Hubble samples are missing from {HUBBLE}"
    seen: dict[str, set[str]] = defaultdict(set)
    for f in files:
        for raw in f.read_text().splitlines():
            if raw.strip():
                key_paths(json.loads(raw), "", seen)
    return seen


# -- format -------------------------------------------------------------------------------------
def test_keys_match_real_hubble_samples(attacked, sample_keys) -> None:
    _, docs = attacked
    ours: dict[str, set[str]] = defaultdict(set)
    for d in docs:
        key_paths(d, "", ours)
    for path, keys in ours.items():
        if ".headers" in path:
            continue
        allowed = sample_keys.get(path, set()) | EXTRA_KEYS.get(path, set())
        assert keys <= allowed, f"{path}: unexpected keys {sorted(keys - allowed)}"


def test_envelope_enums_and_types(attacked) -> None:
    res, docs = attacked
    uuids = set()
    for d in docs:
        assert set(d) == {"flow", "node_name", "time"}
        f = d["flow"]
        assert d["time"] == f["time"] and d["node_name"] == f["node_name"]
        assert TIME.match(f["time"]) and UUID.match(f["uuid"])
        uuids.add(f["uuid"])
        assert f["emitter"]["name"] == "Hubble" and f["emitter"]["version"].startswith("1.20.1+g")
        assert f["node_name"].count("/") == 1 and f["node_labels"] == sorted(f["node_labels"])
        assert f["verdict"] in VERDICTS and f["Type"] in FLOW_TYPES
        assert f["IP"]["ipVersion"] == "IPv4"
        for side in ("source", "destination"):
            ep = f[side]
            assert ep["labels"] == sorted(ep["labels"]) and ep["identity"] > 0
            if "pod_name" in ep:
                assert ep["identity"] >= 256 or ep["identity"] == 102
                assert f"k8s:io.kubernetes.pod.namespace={ep['namespace']}" in ep["labels"]
                assert ep["workloads"][0]["kind"] in {"Deployment", "StatefulSet", "DaemonSet"}
            else:
                assert all(lab.startswith("reserved:") for lab in ep["labels"])
                assert "namespace" not in ep and "ID" not in ep
        for ip in (f["IP"]["source"], f["IP"]["destination"]):
            addr = ipaddress.ip_address(ip)
            assert addr in POD_NET or addr in NODE_NET or any(addr in n for n in DOC_NETS), ip
        ev = f["event_type"]
        if "traffic_direction" in f:
            assert f["traffic_direction"] in DIRECTIONS
        if f["verdict"] == "DROPPED":
            code = DROP_CODES[f["drop_reason_desc"]]
            assert ev == {"type": 1, "sub_type": code} and f["drop_reason"] == code
            assert "is_reply" not in f  # Hubble leaves is_reply unset on drops
        elif f["Type"] == "L7":
            assert ev == {"type": 129} and f["l7"]["type"] in L7_TYPES
            assert isinstance(f["is_reply"], bool)
            assert (f["l7"]["type"] == "RESPONSE") == f["is_reply"] == f.get("reply", False)
            if "latency_ns" in f["l7"]:
                assert isinstance(f["l7"]["latency_ns"], str) and f["l7"]["latency_ns"].isdigit()
            if "dns" in f["l7"]:
                dns = f["l7"]["dns"]
                assert dns["query"].endswith(".") and dns["observation_source"] == "proxy"
                for ip in dns.get("ips", []):
                    addr = ipaddress.ip_address(ip)
                    assert addr in SVC_NET or any(addr in n for n in DOC_NETS), ip
        else:
            assert f["Type"] == "L3_L4" and ev["type"] == 4
            assert ev.get("sub_type", 0) == OBS_POINTS[f["trace_observation_point"]]
            assert f["trace_reason"] in TRACE_REASONS and isinstance(f["is_reply"], bool)
            tcp = f["l4"].get("TCP")
            if tcp:
                assert set(tcp["flags"]) <= TCP_FLAGS and all(tcp["flags"].values())
                assert f["Summary"].startswith("TCP Flags: ")
    assert len(uuids) == len(docs) == res.flows


def test_same_connection_seen_at_both_ends(attacked) -> None:
    _, docs = attacked
    syn = defaultdict(set)
    for d in docs:
        f = d["flow"]
        tcp = f["l4"].get("TCP", {})
        if f["verdict"] == "FORWARDED" and tcp.get("flags") == {"SYN": True}:
            five = (
                f["IP"]["source"],
                tcp["source_port"],
                f["IP"]["destination"],
                tcp["destination_port"],
            )
            syn[five].add((f["trace_observation_point"], f["node_name"]))
    pod_to_pod = [
        v for k, v in syn.items() if k[0].startswith("10.244.") and k[2].startswith("10.244.")
    ]
    assert pod_to_pod
    both = [v for v in pod_to_pod if {p for p, _ in v} == {"FROM_ENDPOINT", "TO_ENDPOINT"}]
    assert len(both) == len(pod_to_pod)
    assert any(len({n for _, n in v}) == 2 for v in both)  # some cross-node connections


def test_time_order_per_node_and_nearly_global(attacked) -> None:
    res, docs = attacked
    last: dict[str, int] = {}
    high = 0
    for d in docs:
        t = ns(d["time"])
        assert t >= last.get(d["node_name"], 0)
        last[d["node_name"]] = t
        assert high - t < 3 * 10**9
        high = max(high, t)
        assert (
            ns(res.start.isoformat().replace("+00:00", "Z"))
            <= t
            < ns(res.end.isoformat().replace("+00:00", "Z"))
        )


# -- determinism and files ----------------------------------------------------------------------
def test_deterministic_bytes(tmp_path: Path) -> None:
    kw = {"hours": 0.5, "rate": 0.3, "attacks": ("port_scan", "c2_beacon"), "start": NOON}
    a = generate(tmp_path / "a", seed=3, **kw)
    b = generate(tmp_path / "b", seed=3, **kw)
    c = generate(tmp_path / "c", seed=4, **kw)
    assert a.flows_path.read_bytes() == b.flows_path.read_bytes()
    assert a.labels_path.read_bytes() == b.labels_path.read_bytes()
    assert a.flows_path.read_bytes() != c.flows_path.read_bytes()
    z1 = generate(tmp_path / "z1", seed=3, gzip=True, **kw)
    z2 = generate(tmp_path / "z2", seed=3, gzip=True, **kw)
    assert z1.flows_path.name == "flows.jsonl.gz"
    assert z1.flows_path.read_bytes() == z2.flows_path.read_bytes()
    assert gzip.decompress(z1.flows_path.read_bytes()) == a.flows_path.read_bytes()
    assert a.flows == z1.flows == a.flows_path.read_bytes().count(b"\n")


def test_labels_file_round_trip(attacked) -> None:
    res, _ = attacked
    assert res.labels_path.read_text().splitlines()[0] == "scenario,identity,start,end,description"
    back = read_labels(res.labels_path)
    assert tuple(back) == res.labels
    assert sorted(lab.scenario for lab in back) == sorted(SCENARIOS)
    for lab in back:
        assert isinstance(lab, AttackLabel) and lab.start.tzinfo is not None
        assert timedelta(minutes=1) <= lab.end - lab.start <= timedelta(minutes=15)
        assert res.start < lab.start and lab.end < res.end
    ordered = sorted(back, key=lambda lab: lab.start)
    assert all(x.end <= y.start for x, y in itertools.pairwise(ordered))  # never overlap
    for row in res.labels_path.read_text().splitlines()[1:]:
        assert re.search(r",\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ,\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ,", row)


def test_progress_is_bounded_and_reaches_one(tmp_path: Path) -> None:
    seen: list[float] = []
    generate(tmp_path, hours=3, rate=0.05, progress=seen.append)
    assert 1 <= len(seen) <= 101 and seen == sorted(seen) and seen[-1] == 1.0


# -- scenarios ----------------------------------------------------------------------------------
def _by_scenario(res) -> dict[str, AttackLabel]:
    return {lab.scenario: lab for lab in res.labels}


def _inside(f: dict, lab: AttackLabel) -> bool:
    t = ns(f["time"])
    return (
        ns(lab.start.isoformat().replace("+00:00", "Z"))
        <= t
        <= ns(lab.end.isoformat().replace("+00:00", "Z"))
    )


def test_port_scan(attacked) -> None:
    res, docs = attacked
    lab = _by_scenario(res)["port_scan"]
    syn_ports = set()
    rst = 0
    for d in docs:
        f = d["flow"]
        tcp = f["l4"].get("TCP", {})
        is_syn = tcp.get("flags") == {"SYN": True}
        if ident(f["source"]) == lab.identity and is_syn and _inside(f, lab):
            syn_ports.add((f["IP"]["destination"], tcp["destination_port"]))
        if ident(f["destination"]) == lab.identity and tcp.get("flags", {}).get("RST"):
            assert _inside(f, lab)
            rst += 1
    assert len({p for _, p in syn_ports}) >= 200 and len({ip for ip, _ in syn_ports}) >= 6
    assert rst >= 200


def test_lateral_movement(attacked) -> None:
    res, docs = attacked
    lab = _by_scenario(res)["lateral_movement"]
    target = re.search(r"to (\S+):(\d+),", lab.description)
    assert target
    hits = [
        d["flow"]
        for d in docs
        if d["flow"]["verdict"] == "FORWARDED"
        and ident(d["flow"]["source"]) == lab.identity
        and ident(d["flow"]["destination"]) == target.group(1)
        and d["flow"]["l4"].get("TCP", {}).get("destination_port") == int(target.group(2))
    ]
    assert len([f for f in hits if f["l4"]["TCP"].get("flags") == {"SYN": True}]) >= 8
    assert all(_inside(f, lab) for f in hits)  # never seen outside the attack


def test_exfiltration(attacked) -> None:
    res, docs = attacked
    lab = _by_scenario(res)["exfiltration"]
    fqdn = re.search(r"peer (\S+) \(", lab.description).group(1)
    flows = [d["flow"] for d in docs if fqdn in d["flow"].get("destination_names", [])]
    assert len(flows) >= 200 and all(_inside(f, lab) for f in flows)
    assert {ident(f["source"]) for f in flows} == {lab.identity}
    assert {f["l4"]["TCP"]["destination_port"] for f in flows} == {443}
    assert all(ipaddress.ip_address(f["IP"]["destination"]) in DOC_NETS[2] for f in flows)


def test_dns_tunnel(attacked) -> None:
    res, docs = attacked
    lab = _by_scenario(res)["dns_tunnel"]
    queries = [
        d["flow"]
        for d in docs
        if "dns" in d["flow"].get("l7", {})
        and d["flow"]["l7"]["dns"]["query"].endswith(".t.exfil.example.net.")
    ]
    requests = [f for f in queries if f["l7"]["type"] == "REQUEST"]
    assert len(requests) >= 300 and all(_inside(f, lab) for f in queries)
    assert {ident(f["source"]) for f in requests} == {lab.identity}
    labels = [f["l7"]["dns"]["query"].split(".")[0] for f in requests]
    assert all(40 <= len(x) <= 60 and entropy(x) > 3.5 for x in labels)
    nx = [f for f in queries if f["l7"]["dns"].get("rcode") == 3]
    txt = [f for f in queries if f["l7"]["dns"]["qtypes"] == ["TXT"]]
    assert len(nx) > len(queries) // 5 and txt


def test_c2_beacon(attacked) -> None:
    res, docs = attacked
    lab = _by_scenario(res)["c2_beacon"]
    fqdn = re.search(r"peer (\S+) \(", lab.description).group(1)
    syns = sorted(
        ns(d["flow"]["time"])
        for d in docs
        if fqdn in d["flow"].get("destination_names", [])
        and d["flow"]["l4"]["TCP"].get("flags") == {"SYN": True}
    )
    assert len(syns) >= 3
    assert all(
        _inside({"time": d["flow"]["time"]}, lab)
        for d in docs
        if fqdn in d["flow"].get("destination_names", [])
    )
    gaps = [(b - a) / 1e9 for a, b in itertools.pairwise(syns)]
    mean = sum(gaps) / len(gaps)
    assert 25 <= mean <= 70
    assert max(abs(g - mean) for g in gaps) < 0.2 * mean  # periodic, small jitter


def test_drop_storm(attacked) -> None:
    res, docs = attacked
    lab = _by_scenario(res)["drop_storm"]
    drops = [d["flow"] for d in docs if d["flow"].get("drop_reason_desc") == "POLICY_DENIED"]
    assert len(drops) >= 500 and all(_inside(f, lab) for f in drops)
    assert {ident(f["source"]) for f in drops} == {lab.identity}
    assert {f["traffic_direction"] for f in drops} == {"EGRESS", "INGRESS"}
    assert len({f["IP"]["destination"] for f in drops}) >= 10
    assert all(f["event_type"] == {"type": 1, "sub_type": 133} for f in drops)


def test_no_attack_traffic_without_attacks(tmp_path: Path) -> None:
    res = generate(tmp_path, hours=2, seed=7, start=NOON, rate=0.5)
    assert res.labels == () and read_labels(res.labels_path) == []
    saas = {"api.stripe.com", "api.sendgrid.com", "o4507.ingest.sentry.io"}
    for d in lines(res.flows_path):
        f = d["flow"]
        assert f.get("drop_reason_desc") != "POLICY_DENIED"
        assert set(f.get("destination_names", [])) <= saas
        assert not f["l4"].get("TCP", {}).get("flags", {}).get("RST")
        if "dns" in f.get("l7", {}):
            assert "exfil" not in f["l7"]["dns"]["query"]
        for ip in (f["IP"]["source"], f["IP"]["destination"]):
            assert not ip.startswith("192.0.2.") or ip == "192.0.2.53"  # upstream resolver only


def test_normal_traffic_is_independent_of_attacks(attacked, tmp_path: Path) -> None:
    """Same seed with and without attacks: identical normal flows (modulo uuid)."""
    _res, docs = attacked
    clean = generate(tmp_path, hours=2.0, seed=7, start=NOON, rate=0.2)
    first = next(lines(clean.flows_path))["flow"]
    first.pop("uuid")
    some = [d["flow"] for d in docs[:50]]
    for f in some:
        f = dict(f)
        f.pop("uuid")
        if f == first:
            break
    else:
        pytest.fail("first normal flow missing from the attacked run")


# -- load and arguments -------------------------------------------------------------------------
def test_daily_cycle(tmp_path: Path) -> None:
    night = generate(tmp_path / "n", hours=1, seed=1, start=datetime(2026, 1, 6, 3, tzinfo=UTC))
    noon = generate(tmp_path / "d", hours=1, seed=1, start=datetime(2026, 1, 6, 12, tzinfo=UTC))
    assert noon.flows > 2.5 * night.flows
    l7 = Counter()
    for name, r in (("night", night), ("noon", noon)):
        l7[name] = sum(1 for d in lines(r.flows_path) if "http" in d["flow"].get("l7", {}))
    assert l7["noon"] > 5 * l7["night"] > 0


def test_rate_scales_volume(tmp_path: Path) -> None:
    one = generate(tmp_path / "a", hours=0.5, seed=2, start=NOON)
    three = generate(tmp_path / "b", hours=0.5, seed=2, start=NOON, rate=3)
    assert 2.0 * one.flows < three.flows < 3.2 * one.flows


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"attacks": ("port_scan", "ddos")}, r"'ddos'.*port_scan, lateral_movement"),
        ({"hours": 0}, "hours must be > 0"),
        ({"hours": -1.5}, "hours must be > 0"),
        ({"rate": 0}, "rate must be > 0"),
        ({"rate": float("nan")}, "rate must be > 0"),
        ({"hours": 0.1, "attacks": SCENARIOS}, "too short for 6 attack"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        generate(tmp_path, **kwargs)
    assert not (tmp_path / "flows.jsonl").exists()


@pytest.mark.slow
def test_day_volume(tmp_path: Path) -> None:
    day = generate(tmp_path / "a", hours=24)
    assert 300_000 <= day.flows <= 600_000
    assert generate(tmp_path / "b", hours=24, rate=3).flows > 1_000_000


def test_attack_flows_are_exactly_what_the_clean_twin_lacks(tmp_path) -> None:
    from netwarden.generator.groundtruth import split_attack_flows
    from netwarden.ingest.reader import read_flows

    start = datetime(2026, 3, 2, 10, tzinfo=UTC)
    attacked = generate(tmp_path / "a", hours=0.5, seed=3, start=start, attacks=["port_scan"])
    clean = generate(tmp_path / "c", hours=0.5, seed=3, start=start)
    split = list(split_attack_flows(attacked.flows_path, clean.flows_path))
    benign = sum(not attack for _, attack in split)
    assert benign == sum(1 for _ in read_flows([clean.flows_path]))  # every clean flow is there
    assert len(split) - benign > 500  # the scan's probes and answers

"""A second cluster shape (issue 19): ``fintech`` is unlike ``demo`` in names, call graph, load,
DNS habits, monitoring and batch work, and its flows are valid Hubble JSON that netwarden reads
and windows; the command line picks clusters and changes."""

from __future__ import annotations

import ipaddress
import itertools
import re
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pytest

from netwarden.generator import CLUSTERS, RealtimeGenerator, Simulation, generate
from netwarden.generator.clusters import business_load
from netwarden.generator.source import GeneratorSource
from netwarden.ingest.reader import FlowReader, read_flows
from tests.test_generator import (
    DOC_NETS,
    TIME,
    UUID,
    lines,
    ns,
    sample_keys,  # noqa: F401 (a fixture)
)
from tests.test_generator import test_keys_match_real_hubble_samples as keys_match
from tests.test_generator_changes import who

NIGHT = datetime(2026, 1, 6, 1, 45, tzinfo=UTC)  # a Tuesday, 15 min before the nightly CronJob
POD_NET = ipaddress.ip_network("10.0.0.0/16")
VPC = ipaddress.ip_network("10.20.0.0/16")
SVC_NET = ipaddress.ip_network("10.100.0.0/16")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "netwarden", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory):
    """An hour of fintech around its nightly CronJob, no attacks and no changes."""
    res = generate(
        tmp_path_factory.mktemp("fintech"), hours=1.0, seed=4, start=NIGHT, cluster="fintech"
    )
    return res, [d["flow"] for d in lines(res.flows_path)]


# -- valid Hubble ---------------------------------------------------------------------------------
def test_fintech_keys_match_real_hubble_samples(night, sample_keys) -> None:  # noqa: F811
    res, flows = night
    keys_match((res, [{"flow": f, **_envelope(f)} for f in flows]), sample_keys)


def _envelope(f: dict) -> dict:
    return {"node_name": f["node_name"], "time": f["time"]}


def test_fintech_flows_are_hubble_shaped(night) -> None:
    res, flows = night
    spec = CLUSTERS["fintech"]
    uuids = set()
    for f in flows:
        assert TIME.match(f["time"]) and UUID.match(f["uuid"])
        uuids.add(f["uuid"])
        assert f["node_name"].startswith(f"{spec.name}/ip-10-20-")
        assert f"topology.kubernetes.io/region={spec.region}" in f["node_labels"]
        for side in ("source", "destination"):
            ep = f[side]
            assert ep["labels"] == sorted(ep["labels"]) and ep["identity"] > 0
            if "pod_name" in ep:
                assert ep["cluster_name"] == spec.name
                assert ep["identity"] >= 256 or ep["identity"] == 102
                assert f"k8s:io.cilium.k8s.policy.cluster={spec.name}" in ep["labels"]
                assert ep["workloads"][0]["kind"] in {
                    "Deployment",
                    "StatefulSet",
                    "DaemonSet",
                    "CronJob",
                }
            else:
                assert all(lab.startswith("reserved:") for lab in ep["labels"])
        for ip in (f["IP"]["source"], f["IP"]["destination"]):
            addr = ipaddress.ip_address(ip)
            assert addr in POD_NET or addr in VPC or any(addr in n for n in DOC_NETS), ip
        for ip in f.get("l7", {}).get("dns", {}).get("ips", []):
            addr = ipaddress.ip_address(ip)
            assert addr in SVC_NET or any(addr in n for n in DOC_NETS), ip
        if "destination_names" in f:
            assert f["destination"]["labels"] == ["reserved:world"]
    assert len(uuids) == len(flows) == res.flows


def test_fintech_is_read_and_windowed_by_netwarden(night, tmp_path: Path) -> None:
    res, _ = night
    reader = FlowReader()
    assert sum(1 for _ in read_flows([res.flows_path], reader)) == res.flows
    assert reader.stats.flows == res.flows and not reader.stats.errors
    out = tmp_path / "w.jsonl"
    proc = _run("windows", "--flows", str(res.flows_path), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "0 skipped as bad" in proc.stderr and "0 late" in proc.stderr
    assert out.stat().st_size > 0


# -- unlike demo ------------------------------------------------------------------------------------
def test_fintech_is_another_cluster() -> None:
    demo, fin = Simulation(seed=1).topo, Simulation(seed=1, cluster="fintech").topo
    assert {w.namespace for w in fin.workloads.values()} == {
        "web",
        "api",
        "data",
        "observability",
        "kube-system",
    }
    assert set(demo.workloads) & set(fin.workloads) == {"kube-system/coredns"}
    ports = {w.name: w.port for w in fin.workloads.values()}
    assert ports["mysql"] == 3306 and ports["mongodb"] == 27017 and ports["kafka"] == 9092
    assert ports["elasticsearch"] == 9200 and ports["memcached"] == 11211
    assert fin.apiserver_node is None and demo.apiserver_node is demo.nodes[0]
    assert not set(fin.world_services) & set(demo.world_services)
    assert {e.client for e in CLUSTERS["fintech"].edges}.isdisjoint(
        {e.client for e in CLUSTERS["demo"].edges} - {"world"}
    )


def test_every_pod_is_scraped_every_15_seconds(night) -> None:
    _, flows = night
    prom = "observability/prometheus"
    pods = {
        (who(ep), ep["pod_name"])
        for f in flows
        for ep in (f["source"], f["destination"])
        if "pod_name" in ep and who(ep) != prom
    }
    scrapes = defaultdict(list)
    for f in flows:
        if who(f["source"]) == prom and f.get("trace_observation_point") == "FROM_ENDPOINT":
            dst = f["destination"]
            if "pod_name" in dst:
                scrapes[who(dst), dst["pod_name"]].append(ns(f["time"]))
    assert pods <= set(scrapes), pods - set(scrapes)
    for target, times in scrapes.items():
        if target[0] == "observability/alertmanager":  # also gets alert pushes
            continue
        gaps = {round((b - a) / 1e9) for a, b in itertools.pairwise(sorted(times))}
        assert gaps <= {0, 15}, (target, gaps)


def test_dns_walks_the_search_path_and_the_node_domain(night) -> None:
    _, flows = night
    queries = defaultdict(Counter)  # name -> (query, qtype, rcode) seen
    for f in flows:
        dns = f.get("l7", {}).get("dns")
        if dns and f["is_reply"]:
            queries[dns["query"]][dns["qtypes"][0], dns.get("rcode", 0)] += 1
    name, ns_ = "api.twilio.com", "api"
    for tried in (
        f"{name}.{ns_}.svc.cluster.local.",
        f"{name}.svc.cluster.local.",
        f"{name}.cluster.local.",
        f"{name}.eu-central-1.compute.internal.",
    ):
        assert set(queries[tried]) == {("A", 3), ("AAAA", 3)}, tried  # NXDOMAIN, both types
    assert ("A", 0) in queries[name + "."]


def test_the_nightly_cronjob_is_normal_traffic(night, tmp_path: Path) -> None:
    _, flows = night
    minute = int(datetime(2026, 1, 6, 2, tzinfo=UTC).timestamp()) // 60
    job = [
        ep
        for f in flows
        for ep in (f["source"], f["destination"])
        if who(ep) == "jobs/ledger-reconcile"
    ]
    assert {ep["workloads"][0]["kind"] for ep in job} == {"CronJob"}
    (pod,) = {ep["pod_name"] for ep in job}
    assert re.fullmatch(rf"ledger-reconcile-{minute}-[{'bcdfghjklmnpqrstvwxz2456789'}]{{5}}", pod)
    assert f"k8s:job-name=ledger-reconcile-{minute}" in job[0]["labels"]
    times = [
        ns(f["time"])
        for f in flows
        if "jobs/ledger-reconcile" in (who(f["source"]), who(f["destination"]))
    ]
    t2 = minute * 60 * 10**9
    assert t2 <= min(times) and max(times) <= t2 + 25 * 60 * 10**9
    peers = {who(f["destination"]) for f in flows if who(f["source"]) == "jobs/ledger-reconcile"}
    assert {"data/mysql", "api/ledger", DNS_} <= peers
    assert any(
        "s3.eu-central-1.amazonaws.com" in f.get("destination_names", [])
        for f in flows
        if who(f["source"]) == "jobs/ledger-reconcile"
    )
    # the next night: a new pod (and identity) of the same CronJob
    res = generate(tmp_path, hours=0.5, seed=4, start=NIGHT.replace(day=7), cluster="fintech")
    other = {
        (ep["pod_name"], ep["identity"])
        for d in lines(res.flows_path)
        for ep in (d["flow"]["source"], d["flow"]["destination"])
        if who(ep) == "jobs/ledger-reconcile"
    }
    assert len(other) == 1 and next(iter(other))[0] != pod
    assert next(iter(other))[1] != job[0]["identity"]


DNS_ = "kube-system/coredns"


def test_weekdays_are_busier_than_weekends() -> None:
    at = lambda d, h: int(datetime(2026, 1, d, h, tzinfo=UTC).timestamp()) * 10**9  # noqa: E731
    assert business_load(at(6, 9)) > 0.9 and business_load(at(6, 3)) < 0.1  # Tue 09:00, 03:00
    assert business_load(at(10, 9)) < 0.35 * business_load(at(6, 9))  # Saturday
    assert business_load(at(6, 12)) < business_load(at(6, 14))  # the lunch dip


# -- live stream ------------------------------------------------------------------------------------
def test_realtime_streams_the_chosen_cluster() -> None:
    gen = RealtimeGenerator(
        seed=2, start=NIGHT, speed=1e12, duration=120, attacks=(), cluster="fintech"
    )
    got = [line for batch in gen.batches() for line in batch]
    assert got and all(
        '"cluster_name":"fintech-prod-euc1"' in line for line in got if "pod_name" in line
    )
    assert gen.cluster == "fintech"
    assert GeneratorSource(seed=2, cluster="fintech").name == "generator:seed=2,cluster=fintech"
    assert GeneratorSource(seed=2).name == "generator:seed=2"
    with pytest.raises(ValueError, match="unknown cluster 'mars'; valid: demo, fintech"):
        RealtimeGenerator(cluster="mars")


# -- command line -----------------------------------------------------------------------------------
def test_generate_help_names_clusters_and_changes() -> None:
    proc = _run("generate", "--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    assert "--changes NAME[,NAME...]" in text and "--cluster NAME" in text
    for name in ("new_service", "dns_provider_change", "fintech", "slow_beacon", "changes.csv"):
        assert name in text


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--changes", "new_service,reboot"], ["--changes: unknown change reboot", "node_drain"]),
        (["--cluster", "mars"], ["--cluster: unknown cluster mars", "demo, fintech"]),
        (["--attacks", "slow_scan", "ddos"], ["unknown scenario ddos", "slow_beacon"]),
        (["--attacks", "all", "--changes", "all"], ["too short", "use hours >="]),
    ],
)
def test_generate_rejects_unknown_names(tmp_path: Path, args: list[str], needles) -> None:
    proc = _run("generate", "--hours", "2", "--out", str(tmp_path), *args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def test_generate_with_cluster_and_changes(tmp_path: Path) -> None:
    proc = _run(
        "generate",
        "--hours",
        "0.5",
        "--cluster",
        "fintech",
        "--changes",
        "debug_pod",
        "--rate",
        "0.2",
        "--out",
        str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    assert "wrote 1 change labels" in proc.stderr
    rows = (tmp_path / "changes.csv").read_text().splitlines()
    assert rows[1].startswith("debug_pod,") and "kube-system/coredns" in rows[1]
    assert "fintech-prod-euc1" in (tmp_path / "flows.jsonl").open().readline()


@pytest.mark.parametrize("cluster", list(CLUSTERS))
def test_roles_fit_the_cluster(cluster: str) -> None:
    """Every part in attacks and changes is played by a workload that exists and makes sense."""
    spec = CLUSTERS[cluster]
    idents = {f"{w.namespace}/{w.name}" for w in spec.workloads}
    roles = spec.roles
    normal = {(e.client, e.server) for e in spec.edges}
    for group in (
        roles.port_scan,
        roles.exfiltration,
        roles.dns_tunnel,
        roles.apps,
        roles.slow_scan,
    ):
        assert set(group) <= idents
    for src, dst in roles.lateral + roles.slow_lateral:
        assert {src, dst} <= idents and (src, dst) not in normal
    for src, dst in roles.slow_lateral:  # another namespace's data store
        assert src.split("/")[0] != dst.split("/")[0]
        assert dst.split("/")[0] in roles.policy_namespaces or dst.startswith("db/")
    for attacker in roles.slow_scan:
        assert any(c == attacker and s in idents for c, s in normal)
    for role in roles.new_service:
        assert {role.caller, role.dependency} <= idents
        assert f"{role.namespace}/{role.name}" not in idents
    for role in roles.new_job:
        assert role.reads in idents and role.kind in {"Job", "CronJob"}
        assert role.via == "http" or role.reads.split("/")[0] == role.namespace
    assert {s.caller for s in roles.saas} <= idents
    assert not {s.fqdn for s in roles.saas} & set(spec.world_services)
    assert {a for a, _, _ in roles.autoscaled} <= idents
    assert set(roles.debug_namespaces) <= {w.namespace for w in spec.workloads}

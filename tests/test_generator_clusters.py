"""More cluster shapes (issue 19): ``fintech`` is unlike ``demo`` in names, call graph, load,
DNS habits, monitoring and batch work, and ``media`` (held out from tuning) unlike both; their
flows are valid Hubble JSON that netwarden reads and windows, every attack and change can be
played on media by every workload its roles name, and the command line picks clusters and
changes."""

from __future__ import annotations

import ipaddress
import itertools
import random
import re
import subprocess
import sys
from collections import Counter, defaultdict
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
import pytest

from netwarden.generator import (
    ALL_SCENARIOS,
    CHANGES,
    CLUSTERS,
    RealtimeGenerator,
    Simulation,
    generate,
)
from netwarden.generator.attacks import plan_attack
from netwarden.generator.changes import ChangeContext
from netwarden.generator.clusters import business_load, prime_time_load
from netwarden.generator.encode import FlowEncoder, Sink
from netwarden.generator.schedule import plan_change
from netwarden.generator.sessions import Conversations
from netwarden.generator.source import GeneratorSource
from netwarden.generator.spec import ClusterSpec
from netwarden.generator.topology import build_topology
from netwarden.generator.traffic import NormalTraffic
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
    for name in (
        "new_service",
        "dns_provider_change",
        "fintech",
        "media",
        "slow_beacon",
        "changes.csv",
    ):
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


# -- media: a third cluster, held out from tuning -------------------------------------------------
MEDIA_PRIME = datetime(2026, 1, 6, 2, tzinfo=UTC)  # Monday 21:00 US Eastern
MEDIA_NIGHT = datetime(2026, 1, 6, 9, 30, tzinfo=UTC)  # 15 min before the nightly compaction
GKE_PODS = ipaddress.ip_network("10.4.0.0/14")
GKE_NODES = ipaddress.ip_network("10.142.0.0/20")
GKE_SERVICES = ipaddress.ip_network("10.8.0.0/16")
GKE_MASTER = ipaddress.ip_network("172.16.0.0/28")  # the private control-plane endpoint
GFE = ipaddress.ip_network("35.191.0.0/16")  # Google front ends, the load balancer's side
METADATA = ipaddress.ip_network("169.254.169.254/32")  # GKE's DNS upstream
MEDIA_SEARCH = ("c.media-prod-311204.internal", "google.internal")


def _media_flows(out: Path, **kw) -> tuple:
    res = generate(out, cluster="media", seed=4, **kw)
    return res, [d["flow"] for d in lines(res.flows_path)]


@pytest.fixture(scope="module")
def media_night(tmp_path_factory: pytest.TempPathFactory):
    """An hour of media around its nightly compaction, no attacks and no changes."""
    return _media_flows(tmp_path_factory.mktemp("media-night"), hours=1.0, start=MEDIA_NIGHT)


@pytest.fixture(scope="module")
def media_prime(tmp_path_factory: pytest.TempPathFactory):
    """Twenty minutes of media at prime time, users about."""
    return _media_flows(tmp_path_factory.mktemp("media-prime"), hours=1 / 3, start=MEDIA_PRIME)


def test_media_keys_match_real_hubble_samples(media_prime, sample_keys) -> None:  # noqa: F811
    res, flows = media_prime
    keys_match((res, [{"flow": f, **_envelope(f)} for f in flows]), sample_keys)


def test_media_flows_are_hubble_shaped(media_night, media_prime) -> None:
    spec = CLUSTERS["media"]
    for res, flows in (media_night, media_prime):
        uuids = set()
        for f in flows:
            assert TIME.match(f["time"]) and UUID.match(f["uuid"])
            uuids.add(f["uuid"])
            assert re.fullmatch(
                r"gke-media-prod/gke-media-prod-(pool-1|transcode-pool)-[0-9a-f]{8}-[0-9a-z]{4}",
                f["node_name"],
            )
            assert any(
                re.fullmatch(r"topology.kubernetes.io/zone=us-east1-[bcd]", lab)
                for lab in f["node_labels"]
            )
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
            nets = (GKE_PODS, GKE_NODES, GKE_MASTER, GFE, METADATA, *DOC_NETS)
            for ip in (f["IP"]["source"], f["IP"]["destination"]):
                assert any(ipaddress.ip_address(ip) in n for n in nets), ip
            for ip in f.get("l7", {}).get("dns", {}).get("ips", []):
                addr = ipaddress.ip_address(ip)
                assert addr in GKE_SERVICES or any(addr in n for n in DOC_NETS), ip
            if "destination_names" in f:
                assert f["destination"]["labels"] == ["reserved:world"]
        assert len(uuids) == len(flows) == res.flows


def test_media_is_read_and_windowed_by_netwarden(media_prime, tmp_path: Path) -> None:
    res, _ = media_prime
    reader = FlowReader()
    assert sum(1 for _ in read_flows([res.flows_path], reader)) == res.flows
    assert reader.stats.flows == res.flows and not reader.stats.errors
    out = tmp_path / "w.jsonl"
    proc = _run("windows", "--flows", str(res.flows_path), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "0 skipped as bad" in proc.stderr and "0 late" in proc.stderr
    assert out.stat().st_size > 0


def test_media_is_unlike_demo_and_fintech() -> None:
    media = Simulation(seed=1, cluster="media").topo
    spec = CLUSTERS["media"]
    assert {w.namespace for w in media.workloads.values()} == {
        "edge",
        "catalog",
        "playback",
        "transcode",
        "streaming-data",
        "observability",
        "keda",
        "kube-system",
    }
    ports = {w.name: w.port for w in media.workloads.values()}
    assert ports["kafka"] == 9092 and ports["cassandra"] == 9042 and ports["redis"] == 6379
    assert ports["metadata"] == 50051 and ports["drm-license"] == 9000
    assert media.apiserver_node is None and len(media.nodes) == 8
    for key in ("demo", "fintech"):
        other = CLUSTERS[key]
        theirs = Simulation(seed=1, cluster=key).topo
        assert set(theirs.workloads) & set(media.workloads) == {"kube-system/coredns"}
        assert not set(other.world_services) & set(spec.world_services)
        assert {e.client for e in spec.edges}.isdisjoint(
            {e.client for e in other.edges} - {"world"}
        )
        assert spec.scrape_interval_s != other.scrape_interval_s
        assert spec.load is not other.load and spec.dns.search != other.dns.search
        assert (spec.pod_prefix, spec.service_prefix) != (other.pod_prefix, other.service_prefix)
    # the Datadog node agent is a DaemonSet: one pod per node
    assert len(media.workloads["observability/datadog-agent"].pods) == len(media.nodes)


def test_media_scrapes_every_minute_and_not_the_datadog_agents(media_night) -> None:
    _, flows = media_night
    vm = "observability/vmagent"
    targets = {
        (who(ep), ep["pod_name"])
        for f in flows
        for ep in (f["source"], f["destination"])
        if "pod_name" in ep and who(ep) not in (vm, "observability/datadog-agent")
    }
    scrapes = defaultdict(list)
    for f in flows:
        if who(f["source"]) == vm and f.get("trace_observation_point") == "FROM_ENDPOINT":
            dst = f["destination"]
            if "pod_name" in dst:
                scrapes[who(dst), dst["pod_name"]].append(ns(f["time"]))
    assert targets <= set(scrapes), targets - set(scrapes)
    assert not {t for t in scrapes if t[0] == "observability/datadog-agent"}
    for target, times in scrapes.items():
        if target[0] == "observability/victoria-metrics":  # also gets vmagent's remote writes
            continue
        gaps = {round((b - a) / 1e9) for a, b in itertools.pairwise(sorted(times))}
        assert gaps <= {0, 60}, (target, gaps)


def test_media_node_agents_check_in_with_the_cluster_agent_every_10_seconds(media_night) -> None:
    _, flows = media_night
    calls = defaultdict(list)
    for f in flows:
        http = f.get("l7", {}).get("http")
        if (
            http
            and f["l7"]["type"] == "REQUEST"
            and who(f["source"]) == "observability/datadog-agent"
            and who(f["destination"]) == "observability/datadog-cluster-agent"
        ):
            assert "/api/v1/clusterchecks/" in http["url"]
            calls[f["source"]["pod_name"]].append(ns(f["time"]))
    assert len(calls) == len(CLUSTERS["media"].nodes)  # one agent per node
    for times in calls.values():
        gaps = [round((b - a) / 1e9) for a, b in itertools.pairwise(sorted(times))]
        assert set(gaps) == {10}, gaps


def test_media_dns_walks_the_gce_search_domains_to_the_metadata_server(media_prime) -> None:
    _, flows = media_prime
    queries = defaultdict(Counter)
    for f in flows:
        dns = f.get("l7", {}).get("dns")
        if dns and f["is_reply"]:
            queries[dns["query"]][dns["qtypes"][0], dns.get("rcode", 0)] += 1
    name, ns_ = "storage.googleapis.com", "transcode"
    tried = [f"{name}.{ns_}.svc.cluster.local.", f"{name}.svc.cluster.local."]
    tried += [f"{name}.cluster.local.", *(f"{name}.{d}." for d in MEDIA_SEARCH)]
    for q in tried:
        assert ("A", 3) in queries[q], q  # NXDOMAIN first, for every search domain
    assert ("A", 0) in queries[name + "."]
    forwarded = {
        who(f["source"])
        for f in flows
        if f["IP"]["destination"] == "169.254.169.254" and f["l4"].get("UDP")
    }
    assert forwarded == {"kube-system/coredns"}


def test_media_nightly_compaction_is_normal_traffic(media_night) -> None:
    _, flows = media_night
    job = "streaming-data/viewing-compaction"
    minute = int(datetime(2026, 1, 6, 9, 45, tzinfo=UTC).timestamp()) // 60
    pods = {
        ep["pod_name"] for f in flows for ep in (f["source"], f["destination"]) if who(ep) == job
    }
    (pod,) = pods
    assert re.fullmatch(rf"viewing-compaction-{minute}-[{'bcdfghjklmnpqrstvwxz2456789'}]{{5}}", pod)
    times = [ns(f["time"]) for f in flows if job in (who(f["source"]), who(f["destination"]))]
    t0 = minute * 60 * 10**9
    assert t0 <= min(times) and max(times) <= t0 + 45 * 60 * 10**9
    peers = {who(f["destination"]) for f in flows if who(f["source"]) == job}
    assert {"streaming-data/cassandra", "catalog/recommendations", DNS_} <= peers
    assert any(
        "storage.googleapis.com" in f.get("destination_names", [])
        for f in flows
        if who(f["source"]) == job
    )


def test_prime_time_load_is_evening_heavy_bursty_and_weekend_shaped() -> None:
    at = lambda d, h, m=0: int(datetime(2026, 1, d, h, m, tzinfo=UTC).timestamp()) * 10**9  # noqa: E731
    tuesday_prime, trough = prime_time_load(at(7, 2)), prime_time_load(at(7, 9, 30))
    assert tuesday_prime > 0.8 and trough < 0.15 and tuesday_prime > 6 * trough
    assert prime_time_load(at(5, 1)) > tuesday_prime  # Sunday night is the busiest
    # afternoons (19:00 UTC, 14:00 Eastern): the weekend watches much more
    assert prime_time_load(at(10, 19)) > 1.5 * prime_time_load(at(7, 19))
    # episodes and live events start on the hour: a jump, decaying over minutes
    assert prime_time_load(at(7, 2, 1)) > 1.1 * prime_time_load(at(7, 2, 20))
    assert prime_time_load(at(7, 2, 31)) > 1.1 * prime_time_load(at(7, 2, 25))
    # the business clusters are quiet when the viewers are busiest, and the other way round
    assert business_load(at(7, 2)) < 0.1 and business_load(at(7, 9)) > 0.9


def test_media_is_deterministic_per_seed(tmp_path: Path) -> None:
    kw = {"hours": 0.1, "start": MEDIA_PRIME, "cluster": "media"}
    a = generate(tmp_path / "a", seed=9, **kw).flows_path.read_bytes()
    b = generate(tmp_path / "b", seed=9, **kw).flows_path.read_bytes()
    c = generate(tmp_path / "c", seed=10, **kw).flows_path.read_bytes()
    assert a == b and a != c and len(a) > 0


# -- every part of every scenario and change is playable on media ---------------------------------
_ROLE_OF = {  # the Roles field each scenario or change draws its actors from
    "port_scan": "port_scan",
    "lateral_movement": "lateral",
    "exfiltration": "exfiltration",
    "dns_tunnel": "dns_tunnel",
    "c2_beacon": "apps",
    "drop_storm": "apps",
    "slow_beacon": "apps",
    "slow_lateral": "slow_lateral",
    "slow_scan": "slow_scan",
    "new_service": "new_service",
    "new_saas_vendor": "saas",
    "new_job": "new_job",
    "debug_pod": "debug_namespaces",
    "surge": "autoscaled",
    "node_drain": "",
    "dns_provider_change": "",
}
_MIN_NS = 60 * 10**9


def _casts(name: str) -> list[tuple[str, ClusterSpec]]:
    """media narrowed to each single choice of the role ``name`` draws from."""
    spec, field = CLUSTERS["media"], _ROLE_OF[name]
    if not field:
        return [("", spec)]
    return [
        (repr(one), replace(spec, roles=replace(spec.roles, **{field: (one,)})))
        for one in getattr(spec.roles, field)
    ]


def _bare_cluster(spec: ClusterSpec) -> tuple:
    """A seeded media cluster whose encoder writes into a sink of our own, so an attack or a
    change can be emitted alone, without the normal traffic around it."""
    topo = build_topology(random.Random(3), spec)
    sink = Sink()
    conv = Conversations(topo, FlowEncoder(np.random.default_rng(3), sink), random.Random(4))
    normal = NormalTraffic(topo, conv, np.random.default_rng(5), random.Random(6), 1.0)
    return topo, sink, conv, normal


def _emitted(sink: Sink, path: Path) -> list[dict]:
    """The sink's lines, checked by netwarden's reader, as flows."""
    path.write_text("".join(line + "\n" for line in sink.lines))
    reader = FlowReader()
    assert sum(1 for _ in read_flows([path], reader)) == len(sink.lines) > 0
    assert not reader.stats.errors
    return [orjson.loads(line)["flow"] for line in sink.lines]


def test_the_role_table_covers_every_scenario_and_change() -> None:
    assert set(_ROLE_OF) == set(ALL_SCENARIOS) | set(CHANGES)


@pytest.mark.parametrize("scenario", ALL_SCENARIOS)
def test_every_media_attacker_can_play_its_scenario(scenario: str, tmp_path: Path) -> None:
    start = int(MEDIA_PRIME.timestamp()) * 10**9
    span = (60 if scenario.startswith("slow_") else 3) * _MIN_NS
    for cast, spec in _casts(scenario):
        topo, sink, conv, _ = _bare_cluster(spec)
        attack = plan_attack(scenario, topo, conv, random.Random(7), start, start + span)
        attack.emit(start, start + span)
        flows = _emitted(sink, tmp_path / "attack.jsonl")
        assert {who(f["source"]) for f in flows} >= {attack.identity}, cast
        assert attack.scenario == scenario and attack.description, cast
        assert all(start <= ns(f["time"]) <= start + span for f in flows), cast


def _change_shows(name: str, spec: ClusterSpec, flows: list[dict], topo) -> bool:
    """Whether the flows show what the change is about (beyond its label's identities)."""
    roles = spec.roles
    sources = {who(f["source"]) for f in flows}
    if name == "new_service":
        return f"{roles.new_service[0].namespace}/{roles.new_service[0].name}" in sources
    if name == "new_saas_vendor":
        fqdn = roles.saas[0].fqdn
        return any(fqdn in f.get("destination_names", ()) for f in flows)
    if name == "new_job":
        return f"{roles.new_job[0].namespace}/{roles.new_job[0].name}" in sources
    if name == "debug_pod":
        return f"{roles.debug_namespaces[0]}/tmp-shell" in sources
    if name == "surge":
        ident = roles.autoscaled[0][0]
        pods = {f["destination"].get("pod_name") for f in flows if who(f["destination"]) == ident}
        return (
            len(pods - {p.pod_name for p in topo.workloads[ident].pods}) >= roles.autoscaled[0][1]
        )
    if name == "node_drain":
        return any(topo.cordoned) and bool(flows)
    return bool(topo.upstream_switch)  # dns_provider_change: CoreDNS forwards elsewhere


@pytest.mark.parametrize("change", CHANGES)
def test_every_media_cast_can_play_each_change(change: str, tmp_path: Path) -> None:
    start = int(MEDIA_PRIME.timestamp()) * 10**9
    end = start + 16 * _MIN_NS
    for cast, spec in _casts(change):
        topo, sink, conv, normal = _bare_cluster(spec)
        ctx = ChangeContext(
            topo, normal, conv, random.Random(8), np.random.default_rng(9), 1.0, end
        )
        planned = plan_change(change, ctx, start, end)
        for t0 in range(start, end, _MIN_NS):
            planned.apply(t0)
            planned.emit(t0, t0 + _MIN_NS)
        flows = _emitted(sink, tmp_path / "change.jsonl") if sink.lines else []
        assert planned.change == change and planned.description, cast
        assert _change_shows(change, spec, flows, topo), (cast, planned.description)
        idents = {w for f in flows for w in (who(f["source"]), who(f["destination"]))}
        assert idents - {""} <= set(planned.identities) | set(topo.workloads), cast

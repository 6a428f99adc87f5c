"""Benign change (issue 19): each change emits what its label says, inside the label's time range
and nowhere else, on both cluster shapes; normal traffic is otherwise the clean twin's."""

from __future__ import annotations

import hashlib
import itertools
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from netwarden.generator import (
    ALL_SCENARIOS,
    CHANGES,
    CLUSTERS,
    ChangeLabel,
    Simulation,
    generate,
    read_changes,
)
from netwarden.generator.schedule import PERSISTENT
from tests.test_generator import lines, ns, sample_keys  # noqa: F401 (a fixture)
from tests.test_generator import test_keys_match_real_hubble_samples as keys_match

START = datetime(2026, 1, 6, 9, tzinfo=UTC)  # a Tuesday morning: users are about
KW = {"hours": 1.1, "seed": 5, "start": START, "rate": 0.3}  # the shortest range a surge fits
# where users are about at another time: media's are in the US evening (21:00 Eastern)
STARTS = {"media": datetime(2026, 1, 6, 2, tzinfo=UTC)}
NOON = datetime(2026, 1, 5, 11, 0, tzinfo=UTC)
DNS = "kube-system/coredns"


# -- helpers ------------------------------------------------------------------------------------
def who(ep: dict) -> str:
    """namespace/workload of a pod end ('' for reserved peers), as netwarden's ingest names it:
    the workload, or the pod name for a bare pod."""
    if "namespace" not in ep:
        return ""
    wl = ep.get("workloads")
    return f"{ep['namespace']}/{wl[0]['name'] if wl else ep['pod_name']}"


def key(f: dict) -> tuple:
    l4 = f["l4"].get("TCP") or f["l4"].get("UDP") or {}
    dns = f.get("l7", {}).get("dns", {})
    return (
        f["time"],
        f["IP"]["source"],
        f["IP"]["destination"],
        l4.get("source_port", 0),
        l4.get("destination_port", 0),
        f.get("traffic_direction"),
        f["node_name"],
        f.get("is_reply"),
        f["verdict"],
        dns.get("query"),
    )


def keyed(path: Path) -> dict[tuple, list[bytes]]:
    """The raw lines of a flow file by :func:`key` (parsed again only where needed)."""
    out: dict[tuple, list[bytes]] = defaultdict(list)
    with path.open("rb") as fh:
        for raw in fh:
            out[key(orjson.loads(raw)["flow"])].append(raw)
    return out


def flows_of(by_key: dict[tuple, list[bytes]]) -> list[dict]:
    return [orjson.loads(raw)["flow"] for raws in by_key.values() for raw in raws]


def diff(clean: dict[tuple, list[bytes]], path: Path) -> tuple[list[dict], list[dict]]:
    """(flows only in ``path``, flows only in the clean twin); uuids are not compared."""
    changed = keyed(path)
    added = [raw for k, raws in changed.items() for raw in raws[len(clean.get(k, ())) :]]
    removed = [raw for k, raws in clean.items() for raw in raws[len(changed.get(k, ())) :]]
    return [orjson.loads(r)["flow"] for r in added], [orjson.loads(r)["flow"] for r in removed]


def at(dt: datetime) -> int:
    return int(dt.timestamp()) * 10**9 + dt.microsecond * 1000


def assert_within_label(
    lab_ids: tuple[str, ...], start: datetime, end: datetime, flows: list[dict]
) -> Counter:
    """Every flow is inside [start, end] and has an end among ``lab_ids``; returns who is in."""
    touched: Counter = Counter()
    for f in flows:
        assert at(start) <= ns(f["time"]) <= at(end), (f["time"], start, end)
        ends = {who(f["source"]), who(f["destination"])} - {""}
        assert ends & set(lab_ids), (ends, lab_ids, f["time"])
        touched.update(ends)
    return touched


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], dict]:
    """The clean run of each cluster (same seed, range and rate), made once."""
    cache: dict[str, dict] = {}

    def get(cluster: str) -> dict:
        if cluster not in cache:
            out = tmp_path_factory.mktemp(f"clean-{cluster}")
            kw = {**KW, "start": STARTS.get(cluster, START)}
            cache[cluster] = keyed(generate(out, cluster=cluster, **kw).flows_path)
        return cache[cluster]

    return get


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., object]:
    """generate() with one change, memoised per (cluster, change)."""
    cache: dict[tuple, object] = {}

    def get(cluster: str, change: str) -> object:
        if (cluster, change) not in cache:
            out = tmp_path_factory.mktemp(f"{cluster}-{change}")
            kw = {**KW, "start": STARTS.get(cluster, START)}
            cache[cluster, change] = generate(out, cluster=cluster, changes=[change], **kw)
        return cache[cluster, change]

    return get


# -- every change, both clusters ----------------------------------------------------------------
@pytest.mark.parametrize("cluster", list(CLUSTERS))
@pytest.mark.parametrize("change", CHANGES)
def test_change_is_exactly_what_its_label_says(twins, runs, cluster: str, change: str) -> None:
    res = runs(cluster, change)
    (lab,) = res.changes
    assert res.labels == () and lab.change == change and lab.start < lab.end
    assert res.start < lab.start and lab.end <= res.end
    assert (lab.end == res.end) == (change in PERSISTENT)
    added, removed = diff(twins(cluster), res.flows_path)
    assert added
    touched = assert_within_label(lab.identities, lab.start, lab.end, added + removed)
    assert set(lab.identities) <= set(touched), "every listed identity's traffic changed"
    if change not in ("node_drain", "dns_provider_change"):  # these alter normal flows
        assert not removed, "a change that only adds must leave normal traffic alone"
        assert DNS in lab.identities  # each of these resolves names it did not before


def test_changes_csv_round_trip(runs) -> None:
    res = runs("demo", "new_service")
    text = res.changes_path.read_text().splitlines()
    assert text[0] == "change,identities,start,end,description"
    assert re.match(r"new_service,[a-z/ -]+,\d{4}-\d\d-\d\dT\d\d:\d\d:00Z,", text[1])
    back = read_changes(res.changes_path)
    assert tuple(back) == res.changes and isinstance(back[0], ChangeLabel)
    assert back[0].start.tzinfo is not None and all("/" in i for i in back[0].identities)
    assert (res.labels_path.parent / "changes.csv") == res.changes_path
    plain = generate(res.labels_path.parent.parent / "plain", hours=0.1, rate=0.1)
    assert read_changes(plain.changes_path) == [] and plain.changes == ()


# -- what each change looks like ----------------------------------------------------------------
_PARSED: dict[Path, list[dict]] = {}


def _flows(res) -> list[dict]:
    if res.flows_path not in _PARSED:
        _PARSED[res.flows_path] = [d["flow"] for d in lines(res.flows_path)]
    return _PARSED[res.flows_path]


@pytest.mark.parametrize("cluster", list(CLUSTERS))
def test_new_service_is_looked_up_then_called_and_scraped(runs, cluster: str) -> None:
    res = runs(cluster, "new_service")
    (lab,) = res.changes
    new = re.search(r"new Deployment (\S+) \((\d) replica", lab.description)
    caller = re.search(r"; (\S+) calls it over HTTP", lab.description).group(1)
    svc, replicas = new.group(1), int(new.group(2))
    assert 1 <= replicas <= 3 and {svc, caller, DNS} <= set(lab.identities)
    fqdn = f"{svc.split('/')[1]}.{svc.split('/')[0]}.svc.cluster.local."
    flows = _flows(res)
    pods = {f["destination"]["pod_name"] for f in flows if who(f["destination"]) == svc}
    assert len(pods) == replicas
    kinds = {
        f["destination"]["workloads"][0]["kind"] for f in flows if who(f["destination"]) == svc
    }
    assert kinds == {"Deployment"}
    assert len({f["destination"]["identity"] for f in flows if who(f["destination"]) == svc}) == 1
    answered: set[str] = set()  # caller pods that have the name
    calls = 0
    for f in sorted(flows, key=lambda f: ns(f["time"])):
        dns = f.get("l7", {}).get("dns")
        if dns and dns["query"] == fqdn and f["is_reply"] and dns.get("ips"):
            answered.add(f["destination"]["pod_name"])
        if who(f["source"]) == caller and who(f["destination"]) == svc and f["Type"] == "L7":
            assert f["source"]["pod_name"] in answered, "the caller looked the service up first"
            calls += 1
    assert calls >= 2  # a request and its response at least
    scraper = CLUSTERS[cluster].scraper
    period = CLUSTERS[cluster].scrape_interval_s
    scrapes = defaultdict(list)
    for f in flows:
        if who(f["source"]) == scraper and who(f["destination"]) == svc:
            if f.get("trace_observation_point") == "FROM_ENDPOINT":
                scrapes[f["destination"]["pod_name"]].append(ns(f["time"]))
    assert set(scrapes) == pods
    for times in scrapes.values():
        gaps = {round((b - a) / 1e9) for a, b in itertools.pairwise(sorted(times))}
        assert gaps <= {0, period}  # SYN and first request in the same tick, then the interval


@pytest.mark.parametrize("cluster", list(CLUSTERS))
def test_new_saas_vendor_is_resolved_first_and_rotates(runs, cluster: str) -> None:
    res = runs(cluster, "new_saas_vendor")
    (lab,) = res.changes
    caller = re.match(r"(\S+) starts calling new vendor (\S+):443", lab.description)
    fqdn = caller.group(2)
    resolved: dict[str, set[str]] = defaultdict(set)  # pod -> addresses it was given
    used, answers = set(), set()
    for f in sorted(_flows(res), key=lambda f: ns(f["time"])):
        dns = f.get("l7", {}).get("dns")
        if dns and dns["query"] == fqdn + "." and dns.get("ips"):
            resolved[f["destination"]["pod_name"]].update(dns["ips"])
            answers.add(tuple(dns["ips"]))
        if fqdn in f.get("destination_names", []):
            assert who(f["source"]) == caller.group(1)
            assert f["IP"]["destination"] in resolved[f["source"]["pod_name"]], "DNS came first"
            assert f["l4"]["TCP"]["destination_port"] == 443
            assert f["IP"]["destination"].startswith("203.0.113.")
            used.add(f["IP"]["destination"])
    assert len(used) >= 2 and len(answers) >= 2, "the vendor's addresses rotate"
    assert all(2 <= len(a) <= 4 for a in answers)


@pytest.mark.parametrize("cluster", list(CLUSTERS))
def test_new_job_is_one_pod_that_runs_once(runs, cluster: str) -> None:
    res = runs(cluster, "new_job")
    (lab,) = res.changes
    assert timedelta(minutes=20) <= lab.end - lab.start <= timedelta(minutes=40)
    job = next(i for i in lab.identities if f"{i} (pod" in lab.description)
    ends = [
        ep
        for f in _flows(res)
        for ep in (f["source"], f["destination"])
        if who(ep) == job and "pod_name" in ep
    ]
    assert len({ep["pod_name"] for ep in ends}) == 1
    kind = ends[0]["workloads"][0]["kind"]
    assert kind in {"Job", "CronJob"}
    assert any(label.startswith("k8s:job-name=") for label in ends[0]["labels"])


def test_surge_doubles_user_traffic_and_autoscales(twins, runs) -> None:
    res = runs("demo", "surge")
    (lab,) = res.changes
    span = re.search(r"\) (\d\d:\d\d)-(\d\d:\d\d);", lab.description)
    s_end = datetime.combine(lab.start.date(), datetime.strptime(span.group(2), "%H:%M").time())
    s_end = s_end.replace(tzinfo=UTC)
    assert timedelta(minutes=45) <= s_end - lab.start <= timedelta(minutes=60)
    entry = "ingress-nginx/ingress-nginx-controller"

    def users(flows) -> int:
        return sum(
            1
            for f in flows
            if who(f["destination"]) == entry
            and f["source"]["labels"] == ["reserved:world"]
            and f["l4"]["TCP"].get("flags") == {"SYN": True}
            and at(lab.start) <= ns(f["time"]) < at(s_end)
        )

    added, _ = diff(twins("demo"), res.flows_path)
    clean = flows_of(twins("demo"))
    assert 0.6 < users(added) / users(clean) < 1.6  # about as many new users as usual: 2x
    before = {f["source"]["pod_name"] for f in clean if "pod_name" in f["source"]}
    new_pods = {f["source"]["pod_name"] for f in added if "pod_name" in f["source"]} - before
    scaled = {p.rsplit("-", 2)[0] for p in new_pods}
    assert {"storefront", "catalog"} <= scaled
    for f in added:
        if f["source"].get("pod_name") in new_pods:
            assert ns(f["time"]) <= at(lab.end)


@pytest.mark.parametrize("cluster", list(CLUSTERS))
def test_debug_pod_is_a_bare_pod_poking_its_namespace(runs, cluster: str) -> None:
    res = runs(cluster, "debug_pod")
    (lab,) = res.changes
    assert timedelta(minutes=10) <= lab.end - lab.start <= timedelta(minutes=20)
    ident = next(i for i in lab.identities if i.endswith("/tmp-shell"))
    namespace = ident.split("/")[0]
    mine = [f for f in _flows(res) if who(f["source"]) == ident or who(f["destination"]) == ident]
    lookups = [f for f in mine if f.get("l7", {}).get("dns") and not f["is_reply"]]
    assert len(lookups) >= 2
    for f in mine:
        ep = f["source"] if who(f["source"]) == ident else f["destination"]
        assert "workloads" not in ep and ep["pod_name"] == "tmp-shell"
        assert "k8s:run=tmp-shell" in ep["labels"]
        peer = who(f["destination"] if ep is f["source"] else f["source"])
        assert peer == DNS or peer.split("/")[0] == namespace
    assert any(f["Type"] == "L3_L4" and who(f["destination"]) not in ("", DNS) for f in mine)


@pytest.mark.parametrize("cluster", list(CLUSTERS))
def test_node_drain_moves_every_pod_off_the_node(runs, cluster: str) -> None:
    res = runs(cluster, "node_drain")
    (lab,) = res.changes
    node = lab.description.split(" drained")[0]
    topo = Simulation(seed=KW["seed"], cluster=cluster).topo  # the cluster before the drain
    before = {
        w.ident: [p for p in w.pods if p.node.name == node and w.kind != "DaemonSet"]
        for w in topo.workloads.values()
    }
    moved = {ident for ident, pods in before.items() if pods}
    assert moved <= set(lab.identities) and len(moved) >= 2
    old_ips = {p.ip for pods in before.values() for p in pods}
    seen_after: dict[str, set[str]] = defaultdict(set)  # workload -> (pod, ip) after the drain
    for f in _flows(res):
        if ns(f["time"]) <= at(lab.start) + 2 * 10**9:
            continue
        assert f["IP"]["source"] not in old_ips and f["IP"]["destination"] not in old_ips
        for ep in (f["source"], f["destination"]):
            if "ID" in ep and f["node_name"].endswith("/" + node):
                kind = ep.get("workloads", [{}])[0].get("kind")
                assert kind == "DaemonSet", "only DaemonSet pods stay on the node"
            if who(ep) in moved:
                seen_after[who(ep)].add(ep["pod_name"])
    for ident in moved:
        old_names = {p.pod_name for p in before[ident]}
        kind = topo.workloads[ident].kind
        new_names = seen_after[ident] - {p.pod_name for p in topo.workloads[ident].pods}
        if kind == "Deployment":
            assert new_names and not new_names & old_names  # new pods, new names
        else:
            assert old_names <= seen_after[ident]  # a StatefulSet pod keeps its name


def test_dns_provider_change_moves_forwarding_to_a_new_resolver(twins, runs) -> None:
    res = runs("fintech", "dns_provider_change")
    (lab,) = res.changes
    assert lab.identities == (DNS,)
    old, new = re.search(r"to (\S+):53 instead of (\S+):53", lab.description).group(2, 1)
    added, removed = diff(twins("fintech"), res.flows_path)
    assert added and removed
    for f in added:
        assert who(f["source"] if not f["is_reply"] else f["destination"]) == DNS
        assert new in (f["IP"]["source"], f["IP"]["destination"]) and ns(f["time"]) > at(lab.start)
        assert f["l4"]["UDP"]["destination_port" if not f["is_reply"] else "source_port"] == 53
        assert "destination_names" not in f and "source_names" not in f
    assert all(old in (f["IP"]["source"], f["IP"]["destination"]) for f in removed)
    switched = at(lab.start) + 120 * 10**9
    assert not any(
        old in (f["IP"]["source"], f["IP"]["destination"]) and ns(f["time"]) > switched
        for f in _flows(res)
    )


# -- planning -----------------------------------------------------------------------------------
@pytest.mark.parametrize("cluster", list(CLUSTERS))
def test_a_day_fits_every_attack_and_change(cluster: str) -> None:
    sim = Simulation(seed=9, cluster=cluster)
    t0 = at(datetime(2026, 1, 7, tzinfo=UTC))
    t1 = t0 + 24 * 3600 * 10**9
    attacks, changes = sim.plan(ALL_SCENARIOS, CHANGES, t0, t1)
    assert sorted(a.scenario for a in attacks) == sorted(ALL_SCENARIOS)
    assert sorted(c.change for c in changes) == sorted(CHANGES)
    spans = [(a.start_ns, a.end_ns) for a in attacks]
    spans += [(c.start_ns, c.end_ns) for c in changes if c.change not in PERSISTENT]
    spans.sort()
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans)), "transient items overlap"
    first_persistent = min(c.start_ns for c in changes if c.change in PERSISTENT)
    assert all(e <= first_persistent for _, e in spans)
    assert all(t0 < s and e <= t1 for s, e in spans)
    for a in attacks:
        if a.scenario.startswith("slow_"):
            assert a.end_ns - a.start_ns >= 3600 * 10**9
    surge = next(c for c in changes if c.change == "surge")
    assert sim.spec.load(surge.start_ns) > 0.5, "users surge when users are about"
    for c in changes:
        assert (c.start_ns - t0) % (60 * 10**9) == 0  # on a chunk boundary
        if c.change in PERSISTENT:
            assert c.end_ns == t1 and t1 - c.start_ns >= 20 * 60 * 10**9


def test_a_short_range_says_how_many_hours_it_needs(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"too short for 3 attack\(s\) and 7 change\(s\): use hours >= \d"
    ):
        generate(
            tmp_path, hours=2, attacks=["slow_scan", "slow_beacon", "port_scan"], changes=CHANGES
        )
    with pytest.raises(ValueError, match=r"unknown change 'reboot'; valid: new_service, "):
        generate(tmp_path, hours=2, changes=["reboot"])
    with pytest.raises(ValueError, match=r"unknown cluster 'mars'; valid: demo, fintech"):
        generate(tmp_path, hours=2, cluster="mars")


# -- determinism and the original output --------------------------------------------------------
def test_same_arguments_same_bytes_with_changes(tmp_path: Path) -> None:
    kw = {**KW, "hours": 1.0, "cluster": "fintech", "changes": ["new_job", "new_service"]}
    kw["attacks"] = ["port_scan"]
    a, b = generate(tmp_path / "a", **kw), generate(tmp_path / "b", **kw)
    for name in ("flows.jsonl", "labels.csv", "changes.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert a.changes == b.changes and len(a.changes) == 2 and len(a.labels) == 1


def test_demo_output_of_existing_arguments_is_unchanged(tmp_path: Path) -> None:
    """Bytes written before clusters and changes existed (same arguments, same files)."""
    res = generate(
        tmp_path, hours=0.5, seed=3, attacks=("port_scan", "c2_beacon"), start=NOON, rate=0.3
    )
    digest = hashlib.sha256(res.flows_path.read_bytes()).hexdigest()
    assert digest == "83024f352ddf2387691b49b1c038f1104513f18106fe9d6027476d2c0225bdef"
    labels = hashlib.sha256(res.labels_path.read_bytes()).hexdigest()
    assert labels == "caf0ebd13fb745cabafb1078a54b89db8ec3477ca9620677100dfd05eab341cb"
    assert orjson.loads(res.flows_path.read_bytes().split(b"\n", 1)[0])["flow"]["source"]


@pytest.mark.parametrize("change", ["new_job", "debug_pod", "surge", "node_drain"])
def test_changed_flows_keep_hubble_keys(runs, sample_keys, change: str) -> None:  # noqa: F811
    res = runs("fintech", change)
    keys_match(
        (res, [{"flow": f, "node_name": f["node_name"], "time": f["time"]} for f in _flows(res)]),
        sample_keys,
    )

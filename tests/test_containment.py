"""Containment targets the attacker, covers what it did, and never cuts normal traffic.

The end-to-end part replays the generator's port scan and lateral movement through a model
trained on the same topology's normal traffic (as :mod:`tests.modelfactory` trains), takes every
anomaly the scorer raises and checks each containment by simulation: against the training flows
(nothing normal dropped) and against the attack flows (the attack dropped).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from netwarden.detector.results import Reason, ScoredWindow
from netwarden.detector.scorer import Scorer
from netwarden.detector.store import AnomalyRecord, AnomalyStore
from netwarden.generator import generate
from netwarden.generator.groundtruth import split_attack_flows
from netwarden.ingest.flow import Flow
from netwarden.ingest.identity import IdentityResolver
from netwarden.ingest.pipeline import build_windows
from netwarden.ingest.reader import read_flows
from netwarden.ingest.windows import WindowBuilder
from netwarden.models.edges import EdgeMemory
from netwarden.remediation.containment import Containment, containment
from netwarden.remediation.matcher import l4_key
from netwarden.remediation.normal import EVERY_PORT, NormalEdges, RecentFlows, activity
from netwarden.remediation.proposals import ProposalStore, propose_containment
from netwarden.remediation.propose import Proposer
from netwarden.remediation.schema import validate_policy
from netwarden.remediation.simulate import drop_warnings, simulate
from tests.flowfactory import decode, flow, pod, world
from tests.modelfactory import train_on_generated

T0 = datetime(2026, 2, 2, tzinfo=UTC)


# -- the generator's attacks, end to end ---------------------------------------------------------


@dataclass
class Scene:
    train: list[Any]
    attack: list[Any]  # attack flows only
    benign: list[Any]  # the attack day's normal flows
    labels: dict[str, Any]  # scenario -> label
    normal: NormalEdges
    anomalies: list[AnomalyRecord]
    results: dict[int, Containment | ValueError]


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Scene:
    out = tmp_path_factory.mktemp("containment")
    bundle, _ = train_on_generated(out / "train", hours=3, seed=41, start=T0)
    train = list(read_flows([out / "train" / "flows.jsonl"]))
    day: dict[str, Any] = {"hours": 1, "seed": 42, "start": T0 + timedelta(hours=3)}
    attacked = generate(out / "attack", attacks=["port_scan", "lateral_movement"], **day)
    clean = generate(out / "clean", **day)
    split = list(split_attack_flows(attacked.flows_path, clean.flows_path))
    flows = [f for f, _ in split]
    builder = WindowBuilder(bundle.windows)
    windows: list[Any] = []
    build_windows([attacked.flows_path], windows.extend, builder=builder)
    store = AnomalyStore("sqlite://")
    anomalies = store.record(Scorer(bundle).score(windows))
    store.close()
    # What the service has: the model's edge memory and flows before each anomaly.
    normal = NormalEdges.from_flows(train).merge(NormalEdges.from_memory(bundle.edges))
    selectors = Proposer().add_all(train).selectors()
    results: dict[int, Containment | ValueError] = {}
    for anomaly in anomalies:
        try:
            results[anomaly.id] = containment(
                anomaly, normal=normal, flows=flows, selectors=selectors
            )
        except ValueError as exc:
            results[anomaly.id] = exc
    return Scene(
        train,
        [f for f, a in split if a],
        [f for f, a in split if not a],
        {label.scenario: label for label in attacked.labels},
        normal,
        anomalies,
        results,
    )


def _made(scene: Scene) -> list[tuple[AnomalyRecord, Containment]]:
    return [(a, c) for a in scene.anomalies if isinstance(c := scene.results[a.id], Containment)]


def _of(scene: Scene, scenario: str, side: str) -> list[Any]:
    """Request flows of one attack, from its attacker's side."""
    label = scene.labels[scenario]
    resolver = IdentityResolver()
    out = []
    for f in scene.attack:
        if f.is_reply:
            continue
        src, _ = resolver.resolve(f.source, f.IP.source)
        if src is not None and src.id == label.identity and f.l4 is not None and f.l4.TCP:
            out.append(f)
    return out


@pytest.mark.slow
def test_the_scene_has_both_attacks_and_their_victims(scene) -> None:
    scanner = scene.labels["port_scan"].identity
    made = _made(scene)
    assert any(c.identity == scanner and a.identity == scanner for a, c in made)
    victims = {a.identity for a, c in made if c.identity == scanner and a.identity != scanner}
    assert len(victims) >= 4, victims
    for a, c in made:
        assert validate_policy(c.policy) == [], a.identity
        annotations = c.policy["metadata"]["annotations"]
        assert annotations["netwarden.io/identity"] == c.identity
        assert annotations["netwarden.io/anomaly"] == str(a.id)


@pytest.mark.slow
def test_resolved_recent_flows_give_the_same_containments(scene) -> None:
    """The service hands containments :class:`RecentFlows` (ends resolved once, slid along the
    history from the batch before): every containment of the scene is the one the plain flow
    list gives, policy, notes and warnings."""
    flows = scene.benign + scene.attack  # not in time order: the index must not care
    half = len(flows) // 2
    earlier = RecentFlows(flows[:half], start=1000)
    recent = RecentFlows(flows[10:], start=1010, previous=earlier)

    def made(anomaly: AnomalyRecord, given: Any) -> Containment | str:
        try:
            return containment(anomaly, normal=scene.normal, flows=given)
        except ValueError as exc:
            return str(exc)

    assert scene.anomalies
    for anomaly in scene.anomalies:
        assert made(anomaly, recent) == made(anomaly, flows[10:]), anomaly.identity


@pytest.mark.slow
def test_no_containment_denies_a_normal_edge(scene) -> None:
    """Each proposal replayed against the training flows drops nothing, and against the attack
    day's normal flows drops nothing by its deny rules; none warns of normal drops."""
    for anomaly, result in _made(scene):
        report = simulate([result.policy], scene.train)
        assert report.dropped == 0, (anomaly.identity, result.notes, report.text())
        report = simulate([result.policy], scene.benign)
        assert report.dropped_by_deny_rule == 0, (anomaly.identity, report.text())
        assert result.warnings == (), (anomaly.identity, result.warnings)


@pytest.mark.slow
def test_victims_contain_the_scanner_not_their_clients(scene) -> None:
    scanner = scene.labels["port_scan"].identity
    namespace = scanner.split("/")[0]
    victims = [(a, c) for a, c in _made(scene) if a.identity != scanner and c.identity == scanner]
    assert victims
    for anomaly, result in victims:
        spec = result.policy["spec"]
        assert "ingressDeny" not in spec, anomaly.identity  # never on the victim's clients
        assert result.policy["metadata"]["namespace"] == namespace
        assert "prometheus" not in str(spec) or anomaly.identity == "monitoring/prometheus"
        assert "storefront" not in str(spec) or anomaly.identity == "shop/storefront"
        assert any("not its source" in n for n in result.notes)
    # No anomaly's containment touches a victim's scrape or data path (prometheus, storefront).
    for _, result in _made(scene):
        for rule in result.policy["spec"].get("ingressDeny", []):
            assert "prometheus" not in str(rule) and "storefront" not in str(rule)


@pytest.mark.slow
def test_scanner_containment_covers_the_whole_scan(scene) -> None:
    """Every probe that is not on a normal edge of the scanner is dropped, far beyond the eight
    example ports of the anomaly."""
    scanner = scene.labels["port_scan"].identity
    (result,) = [c for a, c in _made(scene) if a.identity == scanner and c.identity == scanner]
    assert result.action == "deny"
    probes = _of(scene, "port_scan", "egress")
    resolver = IdentityResolver()
    outside: list[Any] = []
    for f in probes:
        _, peer = resolver.resolve(f.destination, f.IP.destination)
        known = scene.normal.edge_ports(scanner, "egress", peer.key)
        port = (l4_key(f).protocol, l4_key(f).port)
        if known is None or port not in known:
            outside.append(f)
    report = simulate([result.policy], outside)
    print(f"scan probes: {len(probes)}, not normal: {len(outside)}, dropped: {report.dropped}")
    assert len(outside) > 300 and report.dropped == report.flows_judged == len(outside)
    ports = {l4_key(f).port for f in outside}
    assert len(ports) > 200
    # The probes on a normal edge (the peer's own service port) stay open.
    normal_probes = [f for f in probes if f not in outside]
    assert simulate([result.policy], normal_probes).dropped == 0


@pytest.mark.slow
def test_lateral_movement_is_contained_at_its_source(scene) -> None:
    label = scene.labels["lateral_movement"]
    moves = _of(scene, "lateral_movement", "egress")
    assert moves
    found = [
        c for a, c in _made(scene) if c.identity == label.identity and "egressDeny" in str(c.policy)
    ]
    assert found
    for result in found:
        assert simulate([result.policy], moves).dropped == len(moves)


# -- unit cases ----------------------------------------------------------------------------------

SCANNER = pod("shop", "mailer", 310, "10.0.0.3")
REDIS = pod("db", "redis", 400, "10.0.1.1")
CART = pod("shop", "cart", 300, "10.0.0.1")
PROM = pod("monitoring", "prometheus", 500, "10.0.2.1")
START = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def _anomaly(
    identity: str,
    features: list[str],
    examples: dict[str, Any] | None = None,
    *,
    minutes: int = 10,
) -> AnomalyRecord:
    namespace, workload = identity.split("/")
    reasons = tuple(
        Reason(feature=f, value=50.0, baseline=1.0, spread=1.0, contribution=1.0 / (i + 1), text=f)
        for i, f in enumerate(features)
    )
    window = ScoredWindow(
        identity=identity,
        namespace=namespace,
        workload=workload,
        window_start=START,
        window_end=START + timedelta(minutes=minutes),
        score=0.9,
        threshold=0.5,
        anomalous=True,
        model=f"identity:{identity}",
        fallback=False,
        reasons=reasons,
        examples=examples or {},
        summary=f"{workload} did something",
    )
    store = AnomalyStore("sqlite://")
    (record,) = store.record([window])
    store.close()
    return record


def _normal_day() -> list[Flow]:
    """The day before: cart uses redis, prometheus scrapes redis, the mailer uses redis too."""
    lines = []
    for i in range(5):
        t = -86400 + i * 30
        lines += [
            flow(CART, REDIS, dport=6379, seconds=t),
            flow(PROM, REDIS, dport=9121, seconds=t + 1),
            flow(SCANNER, REDIS, dport=6379, seconds=t + 2),
        ]
    return decode(lines, Flow)


def _scan(ports: range) -> list[Flow]:
    return decode(
        [flow(SCANNER, REDIS, dport=p, seconds=i * 0.5) for i, p in enumerate(ports)]
        + [flow(CART, REDIS, dport=6379, seconds=100), flow(PROM, REDIS, dport=9121, seconds=101)],
        Flow,
    )


def test_a_scan_victim_contains_the_scanner_around_its_normal_ports() -> None:
    normal = NormalEdges.from_flows(_normal_day())
    attack = _scan(range(6000, 6500))
    examples = {"ingress": {"from": [{"peer": "shop/cart", "port": "TCP/6379", "flows": 9}]}}
    victim = _anomaly("db/redis", ["ingress_unanswered_syns", "egress_tcp_resets"], examples)
    result = containment(victim, normal=normal, flows=attack)
    assert result.identity == "shop/mailer" and result.action == "deny"
    spec = result.policy["spec"]
    assert "ingressDeny" not in spec and result.policy["metadata"]["namespace"] == "shop"
    assert spec["endpointSelector"] == {"matchLabels": {"k8s:app": "mailer"}}
    (rule,) = spec["egressDeny"]
    assert rule["toPorts"] == [
        {
            "ports": [
                {"port": "6000", "protocol": "TCP", "endPort": 6378},
                {"port": "6380", "protocol": "TCP", "endPort": 6499},
            ]
        }
    ]
    scan = [f for f in attack if f.IP.source == "10.0.0.3"]
    assert simulate([result.policy], scan).dropped == len(scan) - 1  # 6379 is its normal edge
    assert simulate([result.policy], _normal_day()).dropped == 0
    assert result.warnings == ()


def test_from_examples_alone_a_victim_contains_the_scanner() -> None:
    """What ``make run`` showed: db/redis's examples hold its clients and the scanner; the
    scanner (many ports) is contained, not the busiest client (storefront, prometheus)."""
    pairs = [
        {"peer": "shop/storefront", "port": "TCP/6379", "flows": 30},
        {"peer": "monitoring/prometheus", "port": "TCP/9121", "flows": 12},
        *(
            {"peer": "shop/mailer", "port": f"TCP/{p}", "flows": 1}
            for p in (22, 80, 443, 3306, 8080, 9000)
        ),
    ]
    victim = _anomaly("db/redis", ["ingress_unanswered_syns"], {"ingress": {"from": pairs}})
    result = containment(victim)
    assert result.identity == "shop/mailer" and "ingressDeny" not in result.policy["spec"]
    (rule,) = result.policy["spec"]["egressDeny"]
    assert rule["toEndpoints"] == [
        {"matchLabels": {"k8s:app": "redis", "k8s:io.kubernetes.pod.namespace": "db"}}
    ]
    assert any("shop/storefront" in n for n in result.notes)  # named, not contained


def test_a_peer_without_a_normal_edge_is_denied_on_every_port() -> None:
    normal = NormalEdges.from_flows(_normal_day())
    postgres = pod("db", "postgres", 410, "10.0.1.2")
    attack = decode([flow(SCANNER, postgres, dport=p, seconds=p / 100) for p in range(1, 40)], Flow)
    anomaly = _anomaly("shop/mailer", ["egress_distinct_dst_ports", "egress_unanswered_syns"])
    result = containment(anomaly, normal=normal, flows=attack)
    assert result.action == "deny"  # normal edges are known: no quarantine that would cut them
    (rule,) = result.policy["spec"]["egressDeny"]
    assert "toPorts" not in rule and rule["toEndpoints"][0]["matchLabels"]["k8s:app"] == "postgres"
    assert simulate([result.policy], _normal_day()).dropped == 0


def test_a_source_outside_the_cluster_is_denied_at_the_victims_ingress() -> None:
    outsider = world("198.51.100.7")
    attack = decode(
        [flow(outsider, REDIS, dport=p, seconds=p / 100) for p in range(6000, 6010)]
        + [flow(PROM, REDIS, dport=9121, seconds=1)],
        Flow,
    )
    anomaly = _anomaly("db/redis", ["ingress_new_peers", "ingress_distinct_dst_ports"])
    result = containment(anomaly, normal=NormalEdges.from_flows(_normal_day()), flows=attack)
    assert result.identity == "db/redis"
    (rule,) = result.policy["spec"]["ingressDeny"]
    assert rule == {"fromCIDRSet": [{"cidr": "198.51.100.7/32"}]}
    assert simulate([result.policy], attack).dropped == 10


def test_only_normal_traffic_at_the_victim_is_nothing_to_contain() -> None:
    normal = NormalEdges.from_flows(_normal_day())
    flows = decode([flow(CART, REDIS, dport=6379, seconds=i) for i in range(5)], Flow)
    examples = {"ingress": {"from": [{"peer": "shop/cart", "port": "TCP/6379", "flows": 5}]}}
    anomaly = _anomaly("db/redis", ["ingress_flows"], examples)
    with pytest.raises(ValueError, match="edges seen as normal"):
        containment(anomaly, normal=normal, flows=flows)
    # From the examples alone (no flows), the same answer.
    with pytest.raises(ValueError, match="edges seen as normal"):
        containment(anomaly, normal=normal)


def test_the_edge_memory_keeps_normal_ports_and_contains_the_rest() -> None:
    """The model's edge memory knows ports: a scanner that is a normal peer of its victim keeps
    its normal port and is denied the scanned ones (with peer-level baselines it was not
    contained at all)."""
    memory = EdgeMemory()
    memory.add("shop/mailer", (True, "db/redis", 6, 6379), when=0.0, flows=10)
    memory.add("db/redis", (False, "shop/mailer", 6, 6379), when=0.0, flows=10)
    memory.add("shop/mailer", (True, "reserved:host", 0, 0), when=0.0, flows=1)  # ICMP
    normal = NormalEdges.from_memory(memory)
    assert normal.edge_ports("shop/mailer", "egress", "db/redis") == frozenset({("TCP", 6379)})
    assert normal.edge_ports("db/redis", "ingress", "shop/mailer") == frozenset({("TCP", 6379)})
    assert normal.edge_ports("shop/mailer", "egress", "reserved:host") == EVERY_PORT
    assert normal.edge_ports("shop/mailer", "egress", "db/postgres") is None
    attack = _scan(range(6370, 6390))
    anomaly = _anomaly("shop/mailer", ["egress_distinct_dst_ports"])
    result = containment(anomaly, normal=normal, flows=attack)
    denied = {
        p["port"]
        for rule in result.policy["spec"]["egressDeny"]
        for ports in rule.get("toPorts", [])
        for p in ports["ports"]
    }
    assert "6379" not in denied and "6380" in denied


def test_examples_alone_still_never_deny_a_normal_edge() -> None:
    normal = NormalEdges.from_flows(_normal_day())
    examples = {
        "egress": {
            "to": [
                {"peer": "db/redis", "port": "TCP/6379", "flows": 30},
                {"peer": "db/redis", "port": "TCP/22", "flows": 3},
            ]
        }
    }
    anomaly = _anomaly("shop/mailer", ["egress_new_conns"], examples)
    result = containment(anomaly, normal=normal)
    (rule,) = result.policy["spec"]["egressDeny"]
    assert rule["toPorts"] == [{"ports": [{"port": "22", "protocol": "TCP"}]}]


def test_activity_counts_what_the_anomaly_did() -> None:
    flows = _scan(range(6000, 6003))
    found = activity(flows, "shop/mailer", "egress", START, START + timedelta(minutes=1))
    assert found == {"db/redis": {("TCP", 6000): 1, ("TCP", 6001): 1, ("TCP", 6002): 1}}
    assert activity(flows, "db/redis", "ingress")["monitoring/prometheus"] == {("TCP", 9121): 1}


def test_a_scan_victim_whose_lookups_moved_too_contains_the_scanner() -> None:
    """What the service showed: shop/mailer, scanned, with a small rise of its NXDOMAIN share
    too. Its ingress weighs most: the scanner is contained, the victim's DNS is left alone."""
    features = [
        "ingress_unanswered_syns",
        "ingress_distinct_dst_ports",
        "egress_dns_nxdomain_share",
    ]
    examples = {"ingress": {"from": [{"peer": "shop/mailer", "port": "TCP/6000", "flows": 1}]}}
    victim = _anomaly("db/redis", features, examples)
    result = containment(
        victim, normal=NormalEdges.from_flows(_normal_day()), flows=_scan(range(6000, 6500))
    )
    assert result.identity == "shop/mailer" and result.action == "deny"
    assert "egress" not in result.policy["spec"]  # no DNS allow-list, for anyone
    # The same DNS reason weighing most is the workload's own lookups: those are restricted.
    own = _anomaly("db/redis", list(reversed(features)), examples)
    assert containment(own, normal=NormalEdges.from_flows(_normal_day())).action == "dns"


def test_a_proposal_that_drops_normal_traffic_warns() -> None:
    """Without anything known to be normal, a scanning workload is quarantined; its replay shows
    the normal flows that would go with it."""
    flows = _normal_day() + _scan(range(6000, 6040))
    anomaly = _anomaly("shop/mailer", ["egress_distinct_dst_ports", "egress_unanswered_syns"])
    result = containment(anomaly, flows=flows)
    assert result.action == "quarantine"
    (warning,) = result.warnings
    assert warning.startswith("would drop 5 normal flows (not part of the anomaly): ")
    assert "shop/mailer -> db/redis TCP/6379 (5)" in warning
    # The same check on its own, and a policy that drops nothing says nothing.
    assert drop_warnings(result.policy, _normal_day()) == result.warnings
    assert drop_warnings(result.policy, decode([flow(CART, REDIS, dport=6379)], Flow)) == ()


def test_dns_containment_keeps_every_normal_name() -> None:
    dns = pod("kube-system", "coredns", 102, "10.0.0.53")
    dns["endpoint"]["labels"] = [
        "k8s:io.kubernetes.pod.namespace=kube-system",
        "k8s:k8s-app=kube-dns",
    ]
    query = {
        "type": "REQUEST",
        "dns": {"query": "catalog.shop.svc.cluster.local.", "qtypes": ["A"]},
    }
    normal = NormalEdges.from_flows(
        decode([flow(CART, dns, proto="UDP", dport=53, seconds=-3600, l7=query)], Flow)
    )
    assert normal.names["shop/cart"] == {"catalog.shop.svc.cluster.local"}
    names = [
        "db.shop.svc.cluster.local",
        "db.svc.cluster.local",
        "catalog.shop.svc.cluster.local",
        *(f"{x}aGVsbG8.t.exfil.example.net" for x in "abc"),
    ]
    anomaly = _anomaly(
        "shop/cart", ["egress_dns_qname_entropy_mean"], {"egress": {"to": [], "dns_names": names}}
    )
    result = containment(anomaly, normal=normal)
    assert result.action == "dns"
    (rule,) = result.policy["spec"]["egress"]
    allowed = rule["toPorts"][0]["rules"]["dns"]
    assert {"matchName": "catalog.shop.svc.cluster.local"} in allowed
    assert not any("exfil" in str(e) for e in allowed)
    assert "shop.svc.cluster.local are refused" not in " ".join(result.notes)


# -- as a proposal -------------------------------------------------------------------------------


def test_recent_flows_slide_and_index_their_workloads() -> None:
    """A :class:`RecentFlows` slid from the one before reuses its resolved ends for the flows
    both hold and resolves the rest: each workload's flows are exactly those from or to it, and
    the edges they give are the plain list's."""
    flows = _normal_day() + _scan(range(6000, 6040))
    first = RecentFlows(flows[:50], start=7)
    slid = RecentFlows(flows[20:], start=27, previous=first)
    fresh = RecentFlows(flows[20:])
    resolver = IdentityResolver()

    def ends(f: Any) -> tuple[str | None, str | None]:
        src, _ = resolver.resolve(f.source, f.IP.source)
        dst, _ = resolver.resolve(f.destination, f.IP.destination)
        return (src.id if src else None, dst.id if dst else None)

    for identity in ("shop/mailer", "db/redis", "monitoring/prometheus", "nobody/here"):
        expected = [f for f in flows[20:] if identity in ends(f)]
        assert slid.of(identity).flows == expected == fresh.of(identity).flows, identity
        assert activity(slid, identity, "egress") == activity(flows[20:], identity, "egress")
        assert activity(slid, identity, "ingress") == activity(flows[20:], identity, "ingress")
    assert list(slid.with_ends()) == list(fresh.with_ends())
    assert NormalEdges.from_flows(slid).ports == NormalEdges.from_flows(flows[20:]).ports
    # Not the same stream (other flows at the shared numbers): nothing is reused wrongly.
    backwards = flows[::-1]
    other = RecentFlows(backwards, start=27, previous=first)
    assert list(other.with_ends()) == list(RecentFlows(backwards).with_ends())
    anomaly = _anomaly("shop/mailer", ["egress_distinct_dst_ports", "egress_unanswered_syns"])
    assert containment(anomaly, flows=slid) == containment(anomaly, flows=flows[20:])


def _victim() -> AnomalyRecord:
    examples = {"ingress": {"from": [{"peer": "shop/cart", "port": "TCP/6379", "flows": 9}]}}
    return _anomaly("db/redis", ["ingress_unanswered_syns", "egress_tcp_resets"], examples)


def test_an_ingress_anomaly_is_proposed_for_its_attacker() -> None:
    """The proposal answering db/redis's anomaly is the scanner's (its identity, its labels),
    kept linked to that anomaly; before, it was stored under the victim and refused."""
    victim = _victim()
    with ProposalStore("sqlite://") as store:
        record = propose_containment(
            store,
            victim,
            current=None,
            actor="netwarden",
            normal=NormalEdges.from_flows(_normal_day()),
            flows=_normal_day() + _scan(range(6000, 6500)),
        )
        assert record.kind == "containment" and record.state == "proposed"
        assert record.identity == "shop/mailer" and record.anomaly_id == victim.id
        assert store.list(anomaly_id=victim.id) == [record]
        assert store.list(identity="shop/mailer") == [record]
        assert record.policy["metadata"]["annotations"]["netwarden.io/identity"] == "shop/mailer"
        assert record.policy["spec"]["endpointSelector"] == {"matchLabels": {"k8s:app": "mailer"}}
        assert record.current is None and record.patch is None and not record.problems
        assert "db/redis is the target of this traffic" in record.note
        assert record.warnings == []  # every normal edge is kept
        assert store.events(record.id)[0].actor == "netwarden"


def test_the_warnings_of_a_proposal_are_stored() -> None:
    """Nothing known to be normal (no baselines, no history before it): the scanner's denied
    ports include one it uses after the anomaly, and the proposal says so."""
    later = decode([flow(SCANNER, REDIS, dport=6001, seconds=3600 + i) for i in range(3)], Flow)
    with ProposalStore("sqlite://") as store:
        record = propose_containment(
            store,
            _victim(),
            current=None,
            actor="netwarden",
            flows=_scan(range(6000, 6004)) + later,
        )
        assert record.identity == "shop/mailer"
        (warning,) = record.warnings
        assert warning.startswith("would drop 3 normal flows") and "TCP/6001 (3)" in warning
        assert store.get(record.id).warnings == record.warnings  # type: ignore[union-attr]


def test_the_attacker_s_applied_baseline_is_what_its_containment_patches() -> None:
    """The containment of the attacker is a patch to its baseline as netwarden applied it
    (found by its identity, not the victim's); the target check holds it to that selector."""
    baseline = Proposer().add_all(_normal_day()).policies()["shop/mailer"]
    with ProposalStore("sqlite://") as store:
        applied = store.create(kind="baseline", identity="shop/mailer", policy=baseline, actor="a")
        store.approve(applied.id, actor="b")
        store.claim(applied.id, "apply", actor="b")
        store.record_dry_run(applied.id, actor="b", result={"passed": True})
        store.mark_applied(applied.id, actor="b", change={"ref": "shop/x"})
        record = propose_containment(
            store,
            _victim(),
            current=None,
            actor="netwarden",
            normal=NormalEdges.from_flows(_normal_day()),
            flows=_normal_day() + _scan(range(6000, 6500)),
        )
        assert record.identity == "shop/mailer" and record.current == baseline
        assert record.patch and all(
            op["path"].startswith("/spec/egressDeny") for op in record.patch
        )
        assert record.policy["metadata"]["name"] == baseline["metadata"]["name"]
        assert "netwarden's records" in record.note
        # A caller that knows better (the cluster) says where each workload's policy is.
        other = propose_containment(
            store,
            _victim(),
            current=None,
            actor="netwarden",
            flows=_normal_day() + _scan(range(6000, 6500)),
            current_for=lambda identity: None,
        )
        assert other.identity == "shop/mailer" and other.current is None


def _hubble(lines: list[dict[str, Any]]) -> list[Any]:
    """Flows as the Hubble gRPC source hands them over (labels a protobuf repeated field)."""
    from google.protobuf import json_format

    from netwarden.hubble import flow_pb2
    from netwarden.ingest.protoflow import compact_flow

    return [compact_flow(json_format.ParseDict(x["flow"], flow_pb2.Flow())) for x in lines]


def test_flows_of_the_hubble_source_make_the_same_proposal() -> None:
    """What the service showed with a Hubble source: the replay for warnings failed on the
    protobuf labels, and the labels were lost to the selectors."""
    before = [flow(SCANNER, REDIS, dport=6379, seconds=-86400 + i) for i in range(3)]
    scan = [flow(SCANNER, REDIS, dport=p, seconds=i * 0.5) for i, p in enumerate(range(6000, 6004))]
    later = [flow(SCANNER, REDIS, dport=6001, seconds=3600 + i) for i in range(3)]
    flows = _hubble(before + scan + later)
    assert Proposer().add_all(flows).selectors()["shop/mailer"] == {"k8s:app": "mailer"}
    with ProposalStore("sqlite://") as store:
        record = propose_containment(
            store,
            _victim(),
            current=None,
            actor="netwarden",
            flows=flows,
        )
        assert record.identity == "shop/mailer"
        assert record.policy["spec"]["endpointSelector"] == {"matchLabels": {"k8s:app": "mailer"}}
        (warning,) = record.warnings
        assert "shop/mailer -> db/redis TCP/6001 (3)" in warning
    assert simulate([record.policy], _hubble(scan)).dropped == len(scan)

"""Baseline proposals and containment, on generated traffic replayed through the simulator."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonpatch
import pytest
import yaml

from netwarden.detector.results import Reason, ScoredWindow
from netwarden.detector.store import AnomalyRecord, AnomalyStore
from netwarden.generator import SCENARIOS, generate
from netwarden.generator.groundtruth import split_attack_flows
from netwarden.ingest.flow import Flow
from netwarden.ingest.identity import IdentityResolver
from netwarden.ingest.reader import read_flows
from netwarden.remediation.containment import containment
from netwarden.remediation.matcher import Decision, PolicySet, fqdn_pattern
from netwarden.remediation.propose import (
    Proposer,
    policy_file_name,
    policy_yaml,
    propose_baselines,
    stable_labels,
)
from netwarden.remediation.schema import validate_policy
from netwarden.remediation.simulate import simulate
from tests.flowfactory import decode, flow, pod, world

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
PER_POD = ("pod-template-hash", "controller-revision-hash", "statefulset.kubernetes.io/pod-name")


@pytest.fixture(scope="module")
def normal(tmp_path_factory) -> tuple[list[Flow], Proposer, dict[str, dict[str, Any]]]:
    out = tmp_path_factory.mktemp("normal")
    result = generate(out, hours=2, seed=5, start=T0)
    flows = list(read_flows([result.flows_path]))
    proposer = Proposer().add_all(flows)
    return flows, proposer, proposer.policies()


def _dns_names(policy: dict[str, Any]) -> list[dict[str, str]]:
    for rule in policy["spec"]["egress"]:
        for sel in rule.get("toEndpoints", []):
            if sel["matchLabels"] == {
                "k8s:io.kubernetes.pod.namespace": "kube-system",
                "k8s:k8s-app": "kube-dns",
            }:
                ports = rule["toPorts"][0]
                assert {(p["port"], p["protocol"]) for p in ports["ports"]} == {
                    ("53", "UDP"),
                    ("53", "TCP"),
                }
                return ports["rules"]["dns"]
    raise AssertionError("no kube-dns rule")


def test_every_policy_validates_and_selects_stably(normal) -> None:
    _, _, policies = normal
    assert len(policies) >= 10
    for identity, policy in policies.items():
        assert validate_policy(policy) == [], identity
        text = yaml.safe_dump(policy)
        assert not any(key in text for key in PER_POD)
        own = policy["spec"]["endpointSelector"]["matchLabels"]
        assert own and "k8s:io.kubernetes.pod.namespace" not in own
        assert policy["metadata"]["namespace"] == identity.split("/")[0]


def test_replaying_normal_traffic_drops_nothing(normal) -> None:
    flows, _, policies = normal
    report = simulate(list(policies.values()), flows)
    assert report.flows_judged > 10_000
    share = report.dropped / report.flows_judged
    print(f"benign dropped: {report.dropped}/{report.flows_judged} = {share:.4%}")
    assert share < 0.005, report.text()


def test_dns_rule_lists_the_names_seen(normal) -> None:
    flows, _, policies = normal
    resolver = IdentityResolver()
    seen: dict[str, set[str]] = defaultdict(set)
    for f in flows:
        if f.l7 is not None and f.l7.dns is not None and not f.is_reply:
            subject, _ = resolver.resolve(f.source, f.IP.source)
            seen[subject.id].add(f.l7.dns.query.rstrip(".") + ".")
    assert seen
    for identity, names in seen.items():
        allowed = _dns_names(policies[identity])
        patterns = [fqdn_pattern(e.get("matchName") or e["matchPattern"]) for e in allowed]
        for name in names:
            assert any(p.fullmatch(name) for p in patterns), (identity, name)
    storefront = _dns_names(policies["shop/storefront"])
    assert {"matchName": "catalog.shop.svc.cluster.local"} in storefront


def test_world_peers_by_name_and_entities(normal) -> None:
    _, _, policies = normal
    payments = policies["checkout/payments"]["spec"]["egress"]
    fqdns = [r for r in payments if "toFQDNs" in r]
    assert fqdns and {"matchName": "api.stripe.com"} in fqdns[0]["toFQDNs"]
    assert fqdns[0]["toPorts"] == [{"ports": [{"port": "443", "protocol": "TCP"}]}]
    nginx = policies["ingress-nginx/ingress-nginx-controller"]["spec"]
    assert any(r.get("fromEntities") == ["world"] for r in nginx["ingress"])
    assert any(r.get("toEntities") == ["kube-apiserver"] for r in nginx["egress"])


def test_rules_are_merged_and_small(normal) -> None:
    _, proposer, policies = normal
    for identity, policy in policies.items():
        spec = policy["spec"]
        rules = len([r for r in spec["egress"] + spec["ingress"] if r])
        work = proposer._workloads[identity]
        pairs = sum(len(p) for p in work.egress.values()) + sum(
            len(p) for p in work.ingress.values()
        )
        print(f"{identity}: {rules} rules for {pairs} peer-port pairs")
        assert rules <= pairs + 1
        for rule in spec["egress"] + spec["ingress"]:
            l3 = [k for k in rule if k.startswith(("to", "from")) and k != "toPorts"]
            assert len(l3) <= 1  # Cilium refuses rules mixing L3 kinds
            for block in rule.get("toPorts", []):
                ports = [(int(p["port"]), p["protocol"]) for p in block["ports"]]
                assert ports == sorted(ports) or block.get("rules")


def test_deterministic(normal) -> None:
    flows, _, policies = normal
    again = propose_baselines(list(reversed(flows)))
    assert [policy_yaml(p) for p in again.values()] == [policy_yaml(p) for p in policies.values()]
    assert list(again) == sorted(again)


def test_replicas_aggregate_and_per_pod_labels_drop() -> None:
    a = pod("shop", "cart", 300, "10.0.0.1", replica="7d9f8b6c5d-x2k4q")
    b = pod("shop", "cart", 300, "10.0.0.2", replica="7d9f8b6c5d-b8n4p")
    a["endpoint"]["labels"] += ["k8s:pod-template-hash=7d9f8b6c5d", "k8s:version=v1"]
    b["endpoint"]["labels"] += ["k8s:pod-template-hash=66c9d7f5bb", "k8s:version=v2"]
    redis = pod("db", "redis", 400, "10.0.1.1")
    lines = [
        flow(a, redis, dport=6379),
        flow(b, redis, dport=6379, seconds=1),
        flow(a, world("203.0.113.7"), dport=443, seconds=2),
        flow(b, world("203.0.113.8"), dport=8443, seconds=3, verdict="DROPPED"),
        flow(redis, a, dport=40000, sport=6379, reply=True, seconds=4),
    ]
    policies = propose_baselines(decode(lines, Flow))
    cart = policies["shop/cart"]["spec"]
    assert cart["endpointSelector"] == {"matchLabels": {"k8s:app": "cart"}}
    assert cart["egress"][0] == {
        "toEndpoints": [
            {"matchLabels": {"k8s:app": "redis", "k8s:io.kubernetes.pod.namespace": "db"}}
        ],
        "toPorts": [{"ports": [{"port": "6379", "protocol": "TCP"}]}],
    }
    assert cart["egress"][1]["toCIDRSet"] == [{"cidr": "203.0.113.7/32"}]  # the drop is not normal
    assert cart["ingress"] == [{}]  # nothing came in: default deny
    assert policies["db/redis"]["spec"]["ingress"][0]["fromEndpoints"] == [
        {"matchLabels": {"k8s:app": "cart", "k8s:io.kubernetes.pod.namespace": "shop"}}
    ]
    assert policy_file_name(policies["shop/cart"]) == "shop-cart.yaml"
    assert stable_labels(["k8s:statefulset.kubernetes.io/pod-name=pg-0", "k8s:app=pg"]) == {
        "k8s:app": "pg"
    }


@pytest.mark.parametrize(
    ("identity", "labels"),
    [
        (7, ["reserved:kube-apiserver"]),
        (7, ["reserved:kube-apiserver", "reserved:world"]),
        (7, ["reserved:world", "reserved:kube-apiserver"]),
        # An API server outside the cluster: a CIDR identity that also carries world.
        (16777217, ["cidr:172.18.0.2/32", "reserved:kube-apiserver", "reserved:world"]),
        (2, ["reserved:world", "reserved:kube-apiserver"]),
    ],
)
def test_the_api_server_is_an_entity_never_a_cidr(identity: int, labels: list[str]) -> None:
    """Cilium does not reliably match CIDR rules against the API server's identity: a peer
    labelled reserved:kube-apiserver is the kube-apiserver entity, with or without world."""
    cart = pod("shop", "cart", 300, "10.0.0.1")
    api = {"endpoint": {"identity": identity, "labels": labels}, "ip": "172.18.0.2"}
    flows = decode(
        [
            flow(cart, api, dport=6443, destination_names=["kubernetes.default.svc"]),
            flow(api, cart, dport=8443, seconds=1),  # a webhook call from the API server
        ],
        Flow,
    )
    spec = propose_baselines(flows)["shop/cart"]["spec"]
    assert spec["egress"] == [
        {
            "toEntities": ["kube-apiserver"],
            "toPorts": [{"ports": [{"port": "6443", "protocol": "TCP"}]}],
        }
    ]
    assert spec["ingress"] == [
        {
            "fromEntities": ["kube-apiserver"],
            "toPorts": [{"ports": [{"port": "8443", "protocol": "TCP"}]}],
        }
    ]
    assert "CIDR" not in str(spec) and "FQDN" not in str(spec)
    report = simulate([propose_baselines(flows)["shop/cart"]], flows)
    assert report.dropped == 0, report.text()


# -- attacks ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_attacks_blocked(normal, tmp_path) -> None:
    """A later day with every attack: attack flows are those absent from the same day without
    attacks (the generator keeps normal traffic identical); most attack connections are dropped."""
    _, _, policies = normal
    start = T0 + timedelta(days=1, hours=3)
    attacked = generate(tmp_path / "a", hours=3, seed=77, start=start, attacks=list(SCENARIOS))
    clean = generate(tmp_path / "c", hours=3, seed=77, start=start).flows_path
    policy_set = PolicySet(list(policies.values()))
    resolver = IdentityResolver()
    conns: dict[str, set] = defaultdict(set)
    blocked: dict[str, set] = defaultdict(set)
    dns_refused: dict[str, list[bool]] = defaultdict(list)
    benign = [0, 0]
    for f, attack in split_attack_flows(attacked.flows_path, clean):
        verdict = policy_set.verdict(f)
        if not attack:
            if verdict.decision is not Decision.NOT_JUDGED:
                benign[0] += 1
                benign[1] += verdict.dropped
            continue
        if verdict.decision is Decision.NOT_JUDGED:
            continue
        src, _ = resolver.resolve(f.source, f.IP.source)
        dst, _ = resolver.resolve(f.destination, f.IP.destination)
        for label in attacked.labels:
            if label.start - timedelta(seconds=5) <= f.time <= label.end + timedelta(
                minutes=1
            ) and label.identity in (src and src.id, dst and dst.id):
                break
        else:
            continue
        p = (f.l4.TCP or f.l4.UDP) if f.l4 else None
        if p is not None and p.destination_port == 53 and dst and dst.namespace == "kube-system":
            if f.l7 is not None and f.l7.dns is not None:  # allowed at L4, judged by the DNS proxy
                names = _dns_names(policies[label.identity])
                pats = [fqdn_pattern(e.get("matchName") or e["matchPattern"]) for e in names]
                dns_refused[label.scenario].append(
                    not any(x.fullmatch(f.l7.dns.query.rstrip(".") + ".") for x in pats)
                )
            continue
        conn = (
            f.IP.source,
            f.IP.destination,
            p.source_port if p else 0,
            p.destination_port if p else 0,
        )
        conns[label.scenario].add(conn)
        if verdict.dropped:
            blocked[label.scenario].add(conn)
    print(f"benign dropped on the attack day: {benign[1]}/{benign[0]}")
    assert benign[1] <= benign[0] * 0.005
    for scenario in ("port_scan", "lateral_movement", "exfiltration", "c2_beacon", "drop_storm"):
        share = len(blocked[scenario]) / max(1, len(conns[scenario]))
        print(
            f"{scenario}: {len(blocked[scenario])}/{len(conns[scenario])} connections blocked ({share:.1%})"
        )
        assert conns[scenario] and share >= 0.9, scenario
    refused = dns_refused["dns_tunnel"]
    print(f"dns_tunnel: {sum(refused)}/{len(refused)} lookups refused by the DNS rules")
    assert refused and sum(refused) / len(refused) >= 0.9


# -- containment --------------------------------------------------------------------------------


def _anomaly(identity: str, feature: str, examples: dict[str, Any]) -> AnomalyRecord:
    namespace, workload = identity.split("/")
    store = AnomalyStore("sqlite://")
    start = T0 + timedelta(days=1)
    reason = Reason(
        feature=feature,
        value=50.0,
        baseline=2.0,
        spread=1.0,
        contribution=0.4,
        text=f"{feature} 50 (baseline 2)",
    )
    window = ScoredWindow(
        identity=identity,
        namespace=namespace,
        workload=workload,
        window_start=start,
        window_end=start + timedelta(minutes=1),
        score=0.9,
        threshold=0.5,
        anomalous=True,
        model=f"identity:{identity}",
        fallback=False,
        reasons=(reason,),
        examples=examples,
        summary=f"{workload} did something",
    )
    (record,) = store.record([window])
    store.close()
    return record


def _check(result, current) -> None:
    assert validate_policy(result.policy) == []
    assert jsonpatch.apply_patch(current, result.patch) == result.policy
    assert result.notes


def test_containment_denies_the_offending_peer(normal) -> None:
    _, proposer, policies = normal
    current = policies["checkout/payments"]
    anomaly = _anomaly(
        "checkout/payments",
        "egress_world_flows",
        {
            "egress": {
                "to": [
                    {"peer": "world:192.0.2.194", "port": "TCP/443", "flows": 700},
                    {"peer": "db/postgres", "port": "TCP/5432", "flows": 30},
                    {"peer": "kube-system/coredns", "port": "UDP/53", "flows": 20},
                ]
            }
        },
    )
    result = containment(anomaly, current, selectors=proposer.selectors())
    assert result.action == "deny"
    _check(result, current)
    assert result.policy["spec"]["egressDeny"] == [
        {
            "toCIDRSet": [{"cidr": "192.0.2.194/32"}],
            "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}],
        }
    ]
    alone = containment(anomaly)
    assert alone.patch is None and validate_policy(alone.policy) == []


def test_containment_lateral_movement_denies_workload_peer(normal) -> None:
    _, proposer, policies = normal
    current = policies["shop/recommendations"]
    anomaly = _anomaly(
        "shop/recommendations",
        "egress_new_peers",
        {"egress": {"to": [{"peer": "checkout/payments", "port": "TCP/8080", "flows": 68}]}},
    )
    result = containment(anomaly, current, selectors=proposer.selectors())
    _check(result, current)
    rule = result.policy["spec"]["egressDeny"][0]
    assert rule["toEndpoints"] == [
        {"matchLabels": {"k8s:app": "payments", "k8s:io.kubernetes.pod.namespace": "checkout"}}
    ]
    report = simulate(
        [result.policy],
        decode(
            [
                flow(
                    pod("shop", "recommendations", 34905, "10.0.0.9"),
                    pod("checkout", "payments", 60773, "10.0.0.8"),
                    dport=8080,
                )
            ],
            Flow,
        ),
    )
    assert report.dropped_by_deny_rule == 1


def test_containment_dns_tunnel_keeps_known_names_only(normal) -> None:
    _, _, policies = normal
    current = policies["shop/storefront"]
    names = [f"{x}aGVsbG8gd29ybGQ.t.exfil.example.net" for x in "abcdef"]
    anomaly = _anomaly(
        "shop/storefront",
        "egress_dns_qname_entropy_mean",
        {"egress": {"to": [], "dns_names": names}},
    )
    result = containment(anomaly, current)
    assert result.action == "dns"
    _check(result, current)
    allowed = _dns_names(result.policy)
    assert allowed and not any("exfil" in str(e) for e in allowed)
    assert {"matchName": "catalog.shop.svc.cluster.local"} in allowed
    assert any("no DNS deny" in note for note in result.notes)


def test_containment_quarantines_a_drop_storm(normal) -> None:
    _, _, policies = normal
    current = policies["shop/storefront"]
    pairs = [
        {"peer": f"checkout/svc{i}", "port": f"TCP/{p}", "flows": 40}
        for i in range(6)
        for p in (22, 80, 8443)
    ]
    anomaly = _anomaly(
        "shop/storefront",
        "egress_policy_drops",
        {"egress": {"to": pairs, "drop_reasons": {"POLICY_DENIED": 900}}},
    )
    # Nothing known to be normal for it: everything but DNS is cut.
    result = containment(anomaly)
    assert result.action == "quarantine"
    assert validate_policy(result.policy) == [] and result.patch is None
    spec = result.policy["spec"]
    assert spec["ingressDeny"] == [{"fromEntities": ["all"]}]
    catalog = pod("shop", "catalog", 258, "10.0.0.5")
    store = pod("shop", "storefront", 2528, "10.0.0.6")
    dns = pod("kube-system", "coredns", 102, "10.0.0.53")
    dns["endpoint"]["labels"] = [
        "k8s:io.kubernetes.pod.namespace=kube-system",
        "k8s:k8s-app=kube-dns",
    ]
    flows = decode(
        [
            flow(store, catalog, dport=8080),
            flow(catalog, store, dport=8080, seconds=1),
            flow(store, dns, proto="UDP", dport=53, seconds=2),
        ],
        Flow,
    )
    report = simulate([result.policy], flows)
    assert report.dropped_by_deny_rule == 2 and report.allowed == 1
    # With its current policy, what it allows is normal: a quarantine would cut it, so the
    # offending peers and ports are denied instead.
    denied = containment(anomaly, current)
    assert denied.action == "deny"
    _check(denied, current)
    (rule,) = denied.policy["spec"]["egressDeny"]
    assert len(rule["toEndpoints"]) == 6
    assert rule["toPorts"] == [
        {"ports": [{"port": str(p), "protocol": "TCP"} for p in (22, 80, 8443)]}
    ]
    report = simulate([denied.policy], flows)
    assert report.dropped_by_deny_rule == 0, report.text()

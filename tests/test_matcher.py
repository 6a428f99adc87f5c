"""The policy matcher follows Cilium's L3/L4 semantics; the simulation groups what it drops."""

from __future__ import annotations

import pytest
import yaml

from netwarden.ingest.flow import Flow
from netwarden.ingest.reader import FlowReader
from netwarden.ingest.selectors import LabelSelector, parse_label
from netwarden.remediation.matcher import Decision, PolicyError, PolicySet, fqdn_pattern
from netwarden.remediation.simulate import simulate
from tests.flowfactory import decode, flow, pod, reserved, world
from tests.policyfactory import CNP_EXAMPLES, ccnp, cnp, example, with_labels

CART = pod("shop", "cart", 1001, "10.0.1.10")
PAY = pod("shop", "payments", 1002, "10.0.1.20")
DB = pod("data", "postgres", 1003, "10.0.2.30")
DNS = with_labels(pod("kube-system", "coredns", 1004, "10.0.3.53"), "k8s:k8s-app=kube-dns")
EXT = world("93.184.216.34")


def one(src, dst, **kw) -> Flow:
    return decode([flow(src, dst, **kw)], flow_type=Flow)[0]


def verdict(policies, src, dst, **kw):
    return PolicySet(policies).verdict(one(src, dst, **kw))


# --- selectors -------------------------------------------------------------------------------


def test_selector_keys_follow_cilium_sources():
    labels = [parse_label("k8s:app=cart"), parse_label("container:tier=web")]
    assert LabelSelector.from_dict({"matchLabels": {"app": "cart"}}).matches(labels)
    assert LabelSelector.from_dict({"matchLabels": {"k8s:app": "cart"}}).matches(labels)
    assert LabelSelector.from_dict({"matchLabels": {"any:app": "cart"}}).matches(labels)
    assert not LabelSelector.from_dict({"matchLabels": {"container:app": "cart"}}).matches(labels)
    assert not LabelSelector.from_dict({"matchLabels": {"k8s:tier": "web"}}).matches(labels)
    assert LabelSelector.from_dict({"matchLabels": {"reserved.world": ""}}).matches(
        [parse_label("reserved:world")]
    )


def test_match_expressions_operators():
    labels = [parse_label("k8s:app=cart"), parse_label("k8s:env=prod")]

    def sel(op, key="env", values=None):
        expr = {"key": key, "operator": op}
        if values is not None:
            expr["values"] = values
        return LabelSelector.from_dict({"matchExpressions": [expr]}).matches(labels)

    assert sel("In", values=["prod", "dev"]) and not sel("In", values=["dev"])
    assert sel("NotIn", values=["dev"]) and not sel("NotIn", values=["prod"])
    assert sel("NotIn", key="missing", values=["x"])  # absent key satisfies NotIn
    assert sel("Exists") and not sel("Exists", key="missing")
    assert sel("DoesNotExist", key="missing") and not sel("DoesNotExist")
    with pytest.raises(PolicyError):
        PolicySet(
            [
                cnp(
                    egress=[
                        {"toEndpoints": [{"matchExpressions": [{"key": "a", "operator": "Is"}]}]}
                    ]
                )
            ]
        )


def test_endpoint_selector_picks_subject_by_labels():
    policy = cnp({"app": "cart"}, egress=[{}])
    assert verdict([policy], CART, PAY).decision is Decision.DENIED_DEFAULT
    assert verdict([policy], PAY, CART).decision is Decision.ALLOWED  # payments not selected


# --- namespaces ------------------------------------------------------------------------------


def test_cnp_selects_only_its_own_namespace():
    policy = cnp({"app": "cart"}, namespace="other", egress=[{}])
    assert verdict([policy], CART, PAY).decision is Decision.ALLOWED
    # a namespace key in the endpointSelector is overridden by the policy's namespace
    sneaky = cnp(
        {"app": "cart", "k8s:io.kubernetes.pod.namespace": "shop"}, namespace="other", egress=[{}]
    )
    assert verdict([sneaky], CART, PAY).decision is Decision.ALLOWED


def test_cnp_without_namespace_lives_in_default():
    policy = cnp({"app": "cart"}, namespace=None, egress=[{}])
    assert verdict([policy], CART, PAY).decision is Decision.ALLOWED


def test_peer_selectors_default_to_policy_namespace():
    same_ns = cnp({"app": "cart"}, egress=[{"toEndpoints": [{"matchLabels": {"app": "postgres"}}]}])
    assert verdict([same_ns], CART, DB).decision is Decision.DENIED_DEFAULT  # postgres is in "data"
    cross = cnp(
        {"app": "cart"},
        egress=[
            {
                "toEndpoints": [
                    {"matchLabels": {"app": "postgres", "k8s:io.kubernetes.pod.namespace": "data"}}
                ]
            }
        ],
    )
    assert verdict([cross], CART, DB).decision is Decision.ALLOWED
    everything_here = cnp({"app": "cart"}, egress=[{"toEndpoints": [{}]}])
    assert verdict([everything_here], CART, PAY).decision is Decision.ALLOWED
    assert verdict([everything_here], CART, DB).decision is Decision.DENIED_DEFAULT


def test_dotted_namespace_key_does_not_name_the_namespace():
    policy = cnp(
        {"app": "cart"},
        egress=[
            {
                "toEndpoints": [
                    {
                        "matchLabels": {
                            "k8s.io.kubernetes.pod.namespace": "kube-system",
                            "k8s:k8s-app": "kube-dns",
                        }
                    }
                ]
            }
        ],
    )
    assert verdict([policy], CART, DNS, proto="UDP", dport=53).decision is Decision.DENIED_DEFAULT


def test_namespace_labels_select_peers_across_namespaces():
    db = with_labels(DB, "k8s:io.cilium.k8s.namespace.labels.team=data")
    policy = cnp(
        {"app": "cart"},
        egress=[
            {"toEndpoints": [{"matchLabels": {"io.cilium.k8s.namespace.labels.team": "data"}}]}
        ],
    )
    assert verdict([policy], CART, db).decision is Decision.ALLOWED
    assert verdict([policy], CART, DB).decision is Decision.DENIED_DEFAULT
    # or from the caller's namespace label map, when the flow does not carry them
    ps = PolicySet([policy], namespace_labels={"data": {"team": "data"}})
    assert ps.verdict(one(CART, DB)).decision is Decision.ALLOWED


def test_ccnp_is_cluster_wide_and_peers_are_pods_only():
    policy = ccnp({"app": "cart"}, egress=[{"toEndpoints": [{}]}])
    assert verdict([policy], CART, DB).decision is Decision.ALLOWED  # any namespace
    assert verdict([policy], CART, EXT).decision is Decision.DENIED_DEFAULT  # {} is pods, not world


def test_cluster_name_pins_peers_to_local_cluster():
    remote = with_labels(PAY, "k8s:io.cilium.k8s.policy.cluster=east")
    policy = cnp({"app": "cart"}, egress=[{"toEndpoints": [{}]}])
    ps = PolicySet([policy], cluster_name="prod")
    assert ps.verdict(one(CART, PAY)).decision is Decision.ALLOWED
    assert ps.verdict(one(CART, remote)).decision is Decision.DENIED_DEFAULT


# --- directions and default deny ---------------------------------------------------------------


def test_flow_is_judged_at_source_egress_and_destination_ingress():
    ingress_only = cnp({"app": "payments"}, ingress=[{}])
    v = verdict([ingress_only], CART, PAY)
    assert v.decision is Decision.DENIED_DEFAULT
    assert v.egress.decision is Decision.ALLOWED and not v.egress.enforced
    assert v.dropped_at is v.ingress and v.ingress.direction == "ingress"
    allow_in = cnp(
        {"app": "payments"},
        name="in",
        ingress=[{"fromEndpoints": [{"matchLabels": {"app": "cart"}}]}],
    )
    assert verdict([ingress_only, allow_in], CART, PAY).allowed
    egress_deny_all = cnp({"app": "cart"}, name="out", egress=[{}])
    v = verdict([ingress_only, allow_in, egress_deny_all], CART, PAY)
    assert v.dropped_at is v.egress


def test_unselected_endpoint_allows_everything():
    assert verdict([], CART, EXT).decision is Decision.ALLOWED
    assert verdict([cnp({"app": "nothing"}, egress=[{}])], CART, EXT).decision is Decision.ALLOWED


def test_empty_rule_enables_default_deny_but_empty_list_does_not():
    assert (
        verdict([cnp({"app": "cart"}, egress=[{}])], CART, PAY).decision is Decision.DENIED_DEFAULT
    )
    assert verdict([cnp({"app": "cart"}, egress=[])], CART, PAY).decision is Decision.ALLOWED


def test_enable_default_deny_false_only_adds_rules():
    deny_only = cnp(
        {"app": "cart"}, enableDefaultDeny={"egress": False}, egressDeny=[{"toEntities": ["world"]}]
    )
    assert verdict([deny_only], CART, PAY).decision is Decision.ALLOWED
    assert verdict([deny_only], CART, EXT).decision is Decision.DENIED_RULE
    # a deny-only policy with the default posture puts the endpoint in default deny
    plain = cnp({"app": "cart"}, egressDeny=[{"toEntities": ["world"]}])
    assert verdict([plain], CART, PAY).decision is Decision.DENIED_DEFAULT


def test_replies_are_not_judged():
    v = verdict([cnp({"app": "cart"}, ingress=[{}])], PAY, CART, reply=True, sport=80, dport=40000)
    assert v.decision is Decision.NOT_JUDGED and v.reason == "reply"


# --- deny rules ------------------------------------------------------------------------------


def test_deny_rules_win_over_allows():
    allow_all = cnp({"app": "cart"}, name="a", egress=[{"toEntities": ["all"]}])
    deny_pay = cnp(
        {"app": "cart"},
        name="d",
        egressDeny=[{"toEndpoints": [{"matchLabels": {"app": "payments"}}]}],
    )
    v = verdict([allow_all, deny_pay], CART, PAY)
    assert v.decision is Decision.DENIED_RULE
    assert str(v.rule) == "cnp/shop/d spec[0].egressDeny[0]"
    assert verdict([allow_all, deny_pay], CART, DB).allowed


def test_deny_rule_with_ports_denies_only_those_ports():
    policy = cnp(
        {"app": "payments"},
        ingress=[{"fromEntities": ["cluster"]}],
        ingressDeny=[{"fromEntities": ["cluster"], "toPorts": [{"ports": [{"port": "22"}]}]}],
    )
    assert verdict([policy], CART, PAY, dport=22).decision is Decision.DENIED_RULE
    assert verdict([policy], CART, PAY, dport=80).allowed


# --- entities ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entity", "peer", "allowed"),
    [
        ("world", EXT, True),
        ("world", PAY, False),
        ("cluster", PAY, True),
        ("cluster", DB, True),
        ("cluster", EXT, False),
        ("cluster", reserved("remote-node", 6, "172.18.0.3"), True),
        ("host", reserved("host", 1, "172.18.0.2"), True),
        ("host", reserved("remote-node", 6, "172.18.0.3"), False),
        ("remote-node", reserved("remote-node", 6, "172.18.0.3"), True),
        (
            "kube-apiserver",
            {
                "endpoint": {"identity": 7, "labels": ["reserved:kube-apiserver"]},
                "ip": "172.18.0.5",
            },
            True,
        ),
        ("kube-apiserver", reserved("host", 1, "172.18.0.2"), False),
        ("health", reserved("health", 4, "10.0.0.4"), True),
        ("all", EXT, True),
        ("all", reserved("host", 1, "172.18.0.2"), True),
        ("none", PAY, False),
    ],
)
def test_entities(entity, peer, allowed):
    policy = cnp({"app": "cart"}, egress=[{"toEntities": [entity]}])
    assert verdict([policy], CART, peer).allowed is allowed


def test_reserved_identity_number_restores_masked_labels():
    masked_world = {"endpoint": {"identity": 2}, "ip": "1.1.1.1"}
    policy = cnp({"app": "cart"}, egress=[{"toEntities": ["world"]}])
    assert verdict([policy], CART, masked_world).allowed


def test_host_is_selected_only_by_node_selector():
    host = reserved("host", 1, "172.18.0.2")
    everything = ccnp({}, egress=[{}])
    assert verdict([everything], host, EXT).allowed
    host_policy = {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumClusterwideNetworkPolicy",
        "metadata": {"name": "h"},
        "spec": {"nodeSelector": {}, "egress": [{}]},
    }
    assert verdict([host_policy], host, EXT).decision is Decision.DENIED_DEFAULT


# --- CIDR ------------------------------------------------------------------------------------


def test_cidr_and_cidrset_with_except():
    docs = example("cidr.yaml", namespace="shop")
    svc = with_labels(CART, "k8s:app=myService")
    assert verdict(docs, svc, world("20.1.1.1")).allowed
    assert not verdict(docs, svc, world("20.1.1.2")).allowed
    assert verdict(docs, svc, world("10.1.2.3")).allowed
    assert not verdict(docs, svc, world("10.96.0.10")).allowed  # in the except range


def test_cidr_does_not_select_pods_or_nodes():
    policy = cnp({"app": "cart"}, egress=[{"toCIDR": ["10.0.0.0/8"]}])
    assert not verdict([policy], CART, PAY).allowed  # pod IP inside the CIDR: still not matched
    node = reserved("remote-node", 6, "10.0.9.9")
    assert not verdict([policy], CART, node).allowed
    ps = PolicySet([policy], cidr_match_nodes=True)
    assert ps.verdict(one(CART, node)).allowed


def test_from_cidr_on_ingress():
    policy = cnp({"app": "payments"}, ingress=[{"fromCIDRSet": [{"cidr": "198.51.100.0/24"}]}])
    assert verdict([policy], world("198.51.100.7"), PAY).allowed
    assert not verdict([policy], world("203.0.113.7"), PAY).allowed


# --- FQDN ------------------------------------------------------------------------------------


def test_fqdn_match_pattern_rules():
    assert fqdn_pattern("*.cilium.io").match("docs.cilium.io.")
    assert not fqdn_pattern("*.cilium.io").match("a.b.cilium.io.")
    assert not fqdn_pattern("*.cilium.io").match("cilium.io.")
    assert fqdn_pattern("**.cilium.io").match("a.b.cilium.io.")
    assert fqdn_pattern("special*service.api.cilium.io").match("special-1-service.api.cilium.io.")
    assert fqdn_pattern("*").match("anything.example.")
    assert fqdn_pattern("CILIUM.io").match("cilium.io.")


def test_to_fqdns_through_destination_names_and_dns_map():
    docs = example("l7-dns-tofqdns.yaml", namespace="shop")
    alliance = with_labels(CART, "k8s:org=alliance")
    ip = "104.198.14.52"
    assert verdict(docs, alliance, world(ip), destination_names=["cilium.io"]).allowed
    assert verdict(
        docs, alliance, world(ip), destination_names=["special-xservice.api.cilium.io"]
    ).allowed
    assert not verdict(docs, alliance, world(ip), destination_names=["evil.example"]).allowed
    assert not verdict(docs, alliance, world(ip)).allowed  # no name known
    ps = PolicySet(docs, dns_names={ip: ["sub.cilium.io."]})
    assert ps.verdict(one(alliance, world(ip))).allowed
    assert not ps.verdict(one(alliance, world(ip), dport=443)).allowed  # toPorts 80 only
    # the DNS rule to kube-dns allows port 53 (L7 DNS rules are not simulated, flagged as L7)
    v = ps.verdict(one(alliance, DNS, proto="UDP", dport=53))
    assert v.allowed and v.egress.l7


# --- ports -----------------------------------------------------------------------------------


def test_ports_protocols_and_end_port():
    docs = example("l4-port-range.yaml", namespace="shop")
    svc = with_labels(CART, "k8s:app=myService")
    assert verdict(docs, svc, EXT, dport=80).allowed
    assert verdict(docs, svc, EXT, dport=444).allowed
    assert not verdict(docs, svc, EXT, dport=445).allowed
    assert not verdict(docs, svc, EXT, dport=443, proto="UDP").allowed  # TCP only
    any_proto = cnp(
        {"app": "cart"}, egress=[{"toPorts": [{"ports": [{"port": "53", "protocol": "ANY"}]}]}]
    )
    assert verdict([any_proto], CART, DNS, proto="UDP", dport=53).allowed
    assert verdict([any_proto], CART, DNS, proto="TCP", dport=53).allowed
    assert not verdict([any_proto], CART, DNS, proto="ICMPv4").allowed  # ANY = TCP/UDP/SCTP


def test_named_ports_resolve_through_the_callers_map():
    policy = cnp({"app": "cart"}, egress=[{"toPorts": [{"ports": [{"port": "http-alt"}]}]}])
    unresolved = PolicySet([policy])
    assert any("http-alt" in w for w in unresolved.warnings)
    assert not unresolved.verdict(one(CART, PAY, dport=8080)).allowed
    assert (
        PolicySet([policy], named_ports={"http-alt": 8080})
        .verdict(one(CART, PAY, dport=8080))
        .allowed
    )


def test_icmp_rules_and_l3_only_rules_allow_icmp():
    icmp = cnp({"app": "cart"}, egress=[{"icmps": [{"fields": [{"type": "EchoRequest"}]}]}])
    assert verdict([icmp], CART, PAY, proto="ICMPv4").allowed  # flowfactory ICMP is type 8
    assert not verdict([icmp], CART, PAY, dport=80).allowed
    l3_only = cnp({"app": "cart"}, egress=[{"toEndpoints": [{}]}])
    assert verdict([l3_only], CART, PAY, proto="ICMPv4").allowed


# --- real example policies and samples -------------------------------------------------------


def _all_examples():
    return sorted(p.name for p in CNP_EXAMPLES.glob("*.yaml"))


@pytest.mark.parametrize("filename", _all_examples())
def test_every_example_policy_compiles(filename):
    assert len(PolicySet(example(filename))) >= 1


def test_deathstar_example_allows_empire_only():
    docs = example("sw-l3-l4-l7-deathstar.yaml", namespace="default")
    deathstar = with_labels(
        pod("default", "deathstar", 2001, "10.0.5.5"), "k8s:org=empire", "k8s:class=deathstar"
    )
    tie = with_labels(pod("default", "tiefighter", 2002, "10.0.5.6"), "k8s:org=empire")
    xwing = with_labels(pod("default", "xwing", 2003, "10.0.5.7"), "k8s:org=alliance")
    v = verdict(docs, tie, deathstar)
    assert v.allowed and v.ingress.l7
    assert verdict(docs, xwing, deathstar).decision is Decision.DENIED_DEFAULT
    assert not verdict(docs, tie, deathstar, dport=8080).allowed


def test_example_ccnp_world_deny_and_egress_deny():
    lockdown = example("ccnp-from-world-deny.yaml")
    assert verdict(lockdown, EXT, PAY).decision is Decision.DENIED_RULE
    assert verdict(lockdown, CART, PAY).allowed
    egress_deny = example("egress-deny.yaml", namespace="shop")
    front = with_labels(CART, "k8s:role=frontend")
    back = with_labels(PAY, "k8s:role=backend")
    assert verdict(egress_deny, front, back).decision is Decision.DENIED_RULE
    assert verdict(egress_deny, front, EXT).allowed


def test_example_isolate_namespaces_two_documents():
    docs = example("ns-isolate-namespaces.yaml")
    a = pod("ns1", "a", 3001, "10.0.7.1")
    b = pod("ns1", "b", 3002, "10.0.7.2")
    c = pod("ns2", "c", 3003, "10.0.7.3")
    assert verdict(docs, a, b).allowed
    assert verdict(docs, c, a).decision is Decision.DENIED_DEFAULT


def test_policy_errors_are_raised_at_compile_time():
    with pytest.raises(PolicyError):
        PolicySet([{"kind": "CiliumNetworkPolicy", "metadata": {"name": "x"}}])
    with pytest.raises(PolicyError):
        PolicySet([cnp(egress=[{"toEntities": ["galaxy"]}])])
    with pytest.raises(PolicyError):
        PolicySet([cnp(egress=[{"toCIDR": ["not-a-cidr"]}])])
    bad = yaml.safe_load((CNP_EXAMPLES / "invalid" / "malformed-podselector.yaml").read_text())
    with pytest.raises(PolicyError):
        PolicySet([bad])


def test_real_hubble_samples_run_through_matcher(hubble_samples):
    docs = [d for f in _all_examples() for d in example(f, namespace="default")]
    policy_set = PolicySet(docs)
    reader = FlowReader(flow_type=Flow)
    judged = 0
    for path in hubble_samples:
        for batch in reader.read(path):
            for f in batch:
                v = policy_set.verdict(f)
                judged += v.decision is not Decision.NOT_JUDGED
    assert judged > 100


# --- simulation ------------------------------------------------------------------------------


def test_simulate_groups_drops_by_subject_peer_and_port():
    flows = decode(
        [
            flow(CART, EXT, dport=443, sport=40001),
            flow(CART, EXT, dport=443, sport=40002, seconds=1),
            flow(CART, EXT, dport=443, sport=40002, seconds=1.1, flags=("ACK",)),
            flow(CART, DNS, proto="UDP", dport=53, sport=5353),
            flow(EXT, CART, dport=443, reply=True, sport=443),
            flow(CART, PAY, dport=80),
        ],
        flow_type=Flow,
    )
    policy = cnp(
        {"app": "cart"},
        egress=[
            {
                "toEndpoints": [
                    {
                        "matchLabels": {
                            "k8s:io.kubernetes.pod.namespace": "kube-system",
                            "k8s-app": "kube-dns",
                        }
                    }
                ]
            }
        ],
        egressDeny=[{"toEndpoints": [{"matchLabels": {"app": "payments"}}]}],
    )
    report = simulate([policy], flows, examples=2)
    assert (report.flows_seen, report.flows_judged, report.replies_skipped) == (6, 5, 1)
    assert (report.dropped, report.dropped_by_default_deny, report.dropped_by_deny_rule) == (
        4,
        3,
        1,
    )
    top = report.groups[0]
    assert (top.subject, top.direction, top.peer, top.port) == (
        "shop/cart",
        "egress",
        "world:93.184.216.34",
        "TCP/443",
    )
    assert (top.flows, top.connection_count, len(top.examples)) == (3, 2, 2)
    assert report.groups[1].rule == "cnp/shop/p spec[0].egressDeny[0]"
    text = report.text()
    assert (
        "shop/cart egress -> world:93.184.216.34 TCP/443: 3 flows, 2 connections (default deny)"
        in text
    )
    assert "deny rule cnp/shop/p spec[0].egressDeny[0]" in text


def test_simulate_ingress_drop_is_attributed_to_destination():
    report = simulate([cnp({"app": "payments"}, ingress=[{}])], [one(CART, PAY)])
    (group,) = report.groups
    assert (group.subject, group.direction, group.peer) == ("shop/payments", "ingress", "shop/cart")

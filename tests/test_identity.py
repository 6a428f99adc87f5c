"""Identity resolution on real Hubble endpoints and on each fallback."""

from __future__ import annotations

import pytest

from netwarden.ingest.compact import CompactFlow
from netwarden.ingest.flow import Endpoint, Workload
from netwarden.ingest.identity import IdentityResolver, is_world_identity, strip_pod_suffix
from netwarden.ingest.reader import FlowReader, read_flows


def _subjects_in(paths, flow_type=CompactFlow) -> set[str]:
    resolver = IdentityResolver()
    found: set[str] = set()
    for flow in read_flows(paths, FlowReader(flow_type=flow_type)):
        ip = flow.IP
        for ep, addr in (
            (flow.source, ip.source if ip else ""),
            (flow.destination, ip.destination if ip else ""),
        ):
            subject, _ = resolver.resolve(ep, addr)
            if subject is not None:
                found.add(subject.id)
    return found


def test_real_samples_resolve_to_workloads(hubble_samples) -> None:
    subjects = _subjects_in(hubble_samples)
    # app labels win over pod names: reviews-v1-545db77b95-s6jb8 has k8s:app=reviews
    assert {
        "bookinfo/reviews",
        "bookinfo/productpage",
        "bookinfo/ratings",
        "bookinfo/details",
        "istio-system/prometheus",
        "kube-system/kube-dns",
    } <= subjects
    # pod-name fallback in the field-masked exporter sample (namespace + pod_name only)
    assert {"default/deathstar", "default/xwing"} <= subjects
    # reserved identities are never subjects
    assert not any(s.split("/", 1)[1].startswith(("host", "world")) for s in subjects)
    assert not any("reserved" in s for s in subjects)


def test_compact_and_full_flows_agree(hubble_samples) -> None:
    from netwarden.ingest.flow import Flow

    assert _subjects_in(hubble_samples, CompactFlow) == _subjects_in(hubble_samples, Flow)


def test_workload_name_comes_first() -> None:
    ep = Endpoint(
        identity=4242,
        namespace="shop",
        pod_name="storefront-6b9f7c8d4f-x2k4q",
        labels=["k8s:app=web", "k8s:io.kubernetes.pod.namespace=shop"],
        workloads=[Workload(name="storefront", kind="Deployment")],
    )
    subject, peer = IdentityResolver().resolve(ep, "10.244.1.5")
    assert subject is not None and subject.id == "shop/storefront"
    assert peer.key == "shop/storefront" and not peer.is_world


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (["k8s:app.kubernetes.io/name=cart", "k8s:app=other"], "checkout/cart"),
        (["k8s:app=cart", "k8s:k8s-app=other"], "checkout/cart"),
        (["k8s:k8s-app=cart"], "checkout/cart"),
        (["k8s:version=v1"], "checkout/cart-api"),  # no app label: pod name without hashes
    ],
)
def test_label_order_then_pod_name(labels, expected) -> None:
    ep = Endpoint(
        identity=30000, namespace="checkout", pod_name="cart-api-5d8f9b7c6d-7gq2z", labels=labels
    )
    subject, _ = IdentityResolver().resolve(ep, "10.244.2.9")
    assert subject is not None and subject.id == expected


def test_namespace_from_label_when_field_missing() -> None:
    ep = Endpoint(identity=30001, labels=["k8s:app=redis", "k8s:io.kubernetes.pod.namespace=db"])
    subject, _ = IdentityResolver().resolve(ep, "10.244.3.3")
    assert subject is not None and subject.id == "db/redis"


def test_identity_then_ip_fallbacks() -> None:
    resolver = IdentityResolver()
    subject, _ = resolver.resolve(Endpoint(identity=51234, namespace="ops"), "10.0.0.9")
    assert subject is not None and subject.id == "ops/identity:51234"
    subject, _ = resolver.resolve(Endpoint(), "10.244.9.9")
    assert subject is not None and subject.id == "unknown/ip:10.244.9.9"
    subject, _ = resolver.resolve(None, "10.244.9.10")
    assert subject is not None and subject.id == "unknown/ip:10.244.9.10"


@pytest.mark.parametrize(
    ("identity", "labels", "name"),
    [
        (1, ["reserved:host"], "host"),
        (4, ["reserved:health"], "health"),
        (6, ["reserved:remote-node"], "remote-node"),
        (7, ["reserved:kube-apiserver", "reserved:remote-node"], "kube-apiserver"),
        (8, ["reserved:ingress"], "ingress"),
    ],
)
def test_reserved_identities_are_peers_not_subjects(identity, labels, name) -> None:
    subject, peer = IdentityResolver().resolve(
        Endpoint(identity=identity, labels=labels), "172.18.0.2"
    )
    assert subject is None
    assert peer.key == f"reserved:{name}" and peer.reserved == name and not peer.is_world


@pytest.mark.parametrize("identity", [2, 9, 10, 16777217])
def test_world_peers_are_keyed_by_address(identity) -> None:
    resolver = IdentityResolver()
    subject, peer = resolver.resolve(
        Endpoint(identity=identity, labels=["reserved:world"]), "203.0.113.7"
    )
    assert subject is None and peer.is_world and peer.key == "world:203.0.113.7"
    _, other = resolver.resolve(
        Endpoint(identity=identity, labels=["reserved:world"]), "203.0.113.8"
    )
    assert other.key != peer.key and other.hash != peer.hash


def test_world_identity_with_pod_name_is_world() -> None:
    """Envoy L7 quirk seen in real captures: identity 2 plus a pod name."""
    ep = Endpoint(identity=2, labels=["reserved:world"], pod_name="ratings-v1-b6994bb9-gsqtm")
    subject, peer = IdentityResolver().resolve(ep, "10.0.1.9")
    assert subject is None and peer.is_world


def test_world_identity_ranges() -> None:
    assert is_world_identity(2) and is_world_identity(16777300)
    assert not is_world_identity(256) and not is_world_identity(1)
    assert not is_world_identity(33554433)  # remote-node scope


@pytest.mark.parametrize(
    ("pod", "workload"),
    [
        ("reviews-v1-545db77b95-s6jb8", "reviews-v1"),
        ("deathstar-7848d6c4d5-th9v2", "deathstar"),
        ("coredns-f9fd979d6-4hbjl", "coredns"),
        ("postgres-0", "postgres"),
        ("kafka-12", "kafka"),
        ("node-exporter-x7k2p", "node-exporter"),
        ("backup-28391040-kq5zt", "backup"),
        ("xwing", "xwing"),
        ("tiefighter", "tiefighter"),
    ],
)
def test_strip_pod_suffix(pod, workload) -> None:
    assert strip_pod_suffix(pod) == workload


def test_subjects_are_interned_and_cache_bounded() -> None:
    resolver = IdentityResolver(cache_limit=4)
    first, _ = resolver.resolve(Endpoint(identity=300, namespace="a", pod_name="web-0"), "10.0.0.1")
    for i in range(20):
        resolver.resolve(Endpoint(identity=400 + i, namespace="a", pod_name=f"x{i}"), "10.0.0.2")
    again, _ = resolver.resolve(Endpoint(identity=300, namespace="a", pod_name="web-1"), "10.0.0.3")
    assert first is again  # same workload, same object
    assert len(resolver.cache) <= 4

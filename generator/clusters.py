"""The cluster shapes the generator can simulate: ``demo`` (a web shop on kind) and ``fintech``
(a payments platform on a managed cloud cluster).

The two differ in everything a detector might overfit to: names and namespaces, call graph and
rates, load curve, DNS habits (``fintech`` inherits the node's search domain and asks A and AAAA,
so an external name costs several NXDOMAINs first), monitoring (``fintech`` scrapes every pod
every 15 s), background timers (log shipping, Kafka consumers, alert pushes) and a nightly
CronJob that is part of normal traffic.
"""

from __future__ import annotations

import math

from .spec import (
    ClusterSpec,
    DnsHabits,
    Edge,
    JobRole,
    NewServiceRole,
    NightlyJob,
    NodeSpec,
    Periodic,
    Roles,
    SaasRole,
    WorkloadSpec,
)

__all__ = ["CLUSTERS", "DEMO", "FINTECH", "business_load", "cluster_spec", "load_factor"]

_S = 1_000_000_000


def load_factor(t_ns: int) -> float:
    """Relative user load at time ``t_ns`` (1.0 = weekday peak around 13:00 UTC)."""
    hours = (t_ns / _S) / 3600.0
    day = 0.5 - 0.5 * math.cos(2 * math.pi * (hours % 24 - 1.0) / 24)  # 0 at 01:00, 1 at 13:00
    weekday = int(hours // 24 + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
    week = 0.65 if weekday >= 5 else 1.0
    return week * (0.08 + 0.92 * day**1.6)


def business_load(t_ns: int) -> float:
    """A European B2B day (1.0 = weekday morning peak): busy 08-10 and 13-15 UTC with a lunch
    dip, near idle at night, and weekends at a quarter of weekdays."""
    hours = (t_ns / _S) / 3600.0
    h = hours % 24
    weekday = int(hours // 24 + 3) % 7
    morning = math.exp(-(((h - 9.0) / 1.8) ** 2))
    afternoon = 0.85 * math.exp(-(((h - 14.0) / 2.2) ** 2))
    day = max(morning, afternoon)
    return 0.04 + (0.96 if weekday < 5 else 0.24) * day


# -- demo: the web shop ------------------------------------------------------------------------
_SHOP = (
    ("GET", "/"),
    ("GET", "/products"),
    ("GET", "/products/{id}"),
    ("GET", "/products/{id}"),
    ("POST", "/cart/items"),
    ("GET", "/static/app.js"),
)
_DEMO_EDGES: tuple[Edge, ...] = (
    Edge("world", "ingress-nginx/ingress-nginx-controller", "ingress", 22.7),
    Edge("ingress-nginx/ingress-nginx-controller", "shop/storefront", "http", 22.7, _SHOP),
    Edge(
        "shop/storefront",
        "shop/catalog",
        "http",
        13.9,
        (("GET", "/api/v1/products?page={n}"), ("GET", "/api/v1/products/{id}")),
    ),
    Edge(
        "shop/storefront",
        "shop/recommendations",
        "http",
        5.7,
        (("GET", "/api/v1/recommendations?user={id}"),),
    ),
    Edge(
        "shop/storefront",
        "checkout/cart",
        "http",
        5.7,
        (("GET", "/api/v1/carts/{id}"), ("POST", "/api/v1/carts/{id}/items")),
    ),
    Edge("shop/storefront", "db/redis", "tcp", 6.3),
    Edge("checkout/cart", "db/redis", "tcp", 5.7),
    Edge("checkout/cart", "checkout/payments", "http", 1.9, (("POST", "/v1/charges"),)),
    Edge("checkout/cart", "checkout/orders", "http", 1.9, (("POST", "/api/v1/orders"),)),
    Edge("checkout/orders", "db/postgres", "tcp", 3.1),
    Edge("shop/catalog", "db/postgres", "tcp", 6.3),
    Edge("checkout/payments", "db/postgres", "tcp", 1.9),
    Edge("checkout/payments", "world:api.stripe.com", "tls", 1.9),
    Edge("checkout/orders", "shop/mailer", "http", 1.3, (("POST", "/api/v1/send"),)),
    Edge("shop/mailer", "world:api.sendgrid.com", "tls", 1.3),
    Edge("shop/storefront", "world:o4507.ingest.sentry.io", "tls", 0.6),
    Edge("shop/recommendations", "db/redis", "tcp", 3.1),
    Edge(
        "monitoring/grafana",
        "monitoring/prometheus",
        "http",
        1.3,
        (("GET", "/api/v1/query_range?query=up"),),
    ),
)

_DEMO_WORKLOADS: tuple[WorkloadSpec, ...] = tuple(
    WorkloadSpec(*row)
    for row in (
        (
            "ingress-nginx",
            "ingress-nginx-controller",
            "Deployment",
            443,
            10254,
            (2, 2),
            "ingress-nginx",
            "app.kubernetes.io/name",
        ),
        ("shop", "storefront", "Deployment", 8080, 8080, (2, 4), "storefront", "app"),
        ("shop", "catalog", "Deployment", 8080, 8080, (2, 3), "catalog", "app"),
        ("shop", "recommendations", "Deployment", 8080, 8080, (1, 2), "recommendations", "app"),
        ("shop", "mailer", "Deployment", 8080, None, (1, 1), "mailer", "app"),
        ("checkout", "cart", "Deployment", 8080, 8080, (2, 3), "cart", "app"),
        ("checkout", "payments", "Deployment", 8080, 8080, (2, 2), "payments", "app"),
        ("checkout", "orders", "Deployment", 8080, 8080, (1, 2), "orders", "app"),
        ("db", "postgres", "StatefulSet", 5432, 9187, (1, 2), "postgres", "app"),
        ("db", "redis", "StatefulSet", 6379, 9121, (1, 1), "redis", "app"),
        ("monitoring", "prometheus", "StatefulSet", 9090, None, (1, 1), "prometheus", "app"),
        ("monitoring", "grafana", "Deployment", 3000, None, (1, 1), "grafana", "app"),
        ("kube-system", "coredns", "Deployment", 53, 9153, (2, 2), "coredns", "k8s-app"),
    )
)

DEMO = ClusterSpec(
    key="demo",
    name="netwarden-demo",
    style="kind",
    region="eu-west-1",
    nodes=(
        NodeSpec("control-plane", "a", "172.18.0.2", control_plane=True),
        NodeSpec("worker-1", "a", "172.18.0.3"),
        NodeSpec("worker-2", "b", "172.18.0.4"),
        NodeSpec("worker-3", "b", "172.18.0.5"),
        NodeSpec("worker-4", "c", "172.18.0.6"),
    ),
    pod_prefix="10.244",
    service_prefix="10.96",
    apiserver_ip="172.18.0.2",
    workloads=_DEMO_WORKLOADS,
    world_services={
        "api.stripe.com": ("203.0.113.10", "203.0.113.11"),
        "api.sendgrid.com": ("203.0.113.40",),
        "o4507.ingest.sentry.io": ("203.0.113.70",),
    },
    dns_upstream="192.0.2.53",
    edges=_DEMO_EDGES,
    load=load_factor,
    dns=DnsHabits(lookup={"http": 0.12, "tcp": 0.05, "tls": 0.3}),
    scraper="monitoring/prometheus",
    scrape_interval_s=30,
    node_scrape_interval_s=60,
    watchers=(
        "kube-system/coredns",
        "ingress-nginx/ingress-nginx-controller",
        "monitoring/prometheus",
    ),
    visitor_prefix="198.51.100",
    roles=Roles(
        port_scan=(
            "shop/recommendations",
            "shop/mailer",
            "checkout/orders",
            "monitoring/grafana",
            "shop/catalog",
        ),
        lateral=(
            ("shop/storefront", "db/postgres"),
            ("shop/mailer", "db/redis"),
            ("shop/recommendations", "checkout/payments"),
            ("ingress-nginx/ingress-nginx-controller", "db/postgres"),
            ("monitoring/grafana", "db/postgres"),
            ("shop/catalog", "checkout/payments"),
        ),
        exfiltration=(
            "checkout/orders",
            "shop/catalog",
            "checkout/payments",
            "db/postgres",
            "shop/recommendations",
        ),
        dns_tunnel=(
            "shop/storefront",
            "checkout/cart",
            "shop/mailer",
            "monitoring/grafana",
            "shop/recommendations",
        ),
        apps=(
            "shop/storefront",
            "shop/catalog",
            "shop/recommendations",
            "shop/mailer",
            "checkout/cart",
            "checkout/payments",
            "checkout/orders",
            "monitoring/grafana",
        ),
        slow_lateral=(
            ("shop/recommendations", "db/postgres"),
            ("shop/mailer", "db/postgres"),
            ("checkout/cart", "db/postgres"),
            ("shop/storefront", "db/postgres"),
            ("checkout/payments", "db/redis"),
            ("checkout/orders", "db/redis"),
        ),
        slow_scan=(
            "shop/storefront",
            "checkout/cart",
            "checkout/orders",
            "shop/catalog",
            "checkout/payments",
        ),
        new_service=(
            NewServiceRole(
                "shop",
                "reviews",
                "shop/storefront",
                "db/postgres",
                (("GET", "/api/v1/reviews?product={id}"), ("GET", "/api/v1/reviews/summary")),
                3.0,
            ),
            NewServiceRole(
                "checkout",
                "fraud-check",
                "checkout/payments",
                "db/redis",
                (("POST", "/v1/score"),),
                1.6,
            ),
        ),
        saas=(
            SaasRole("checkout/orders", "api.avalara.com", 1.6),
            SaasRole("checkout/payments", "api.adyen.com", 1.5),
            SaasRole("shop/mailer", "api.postmarkapp.com", 1.0),
        ),
        new_job=(
            JobRole(
                "db",
                "pg-dump-adhoc",
                "Job",
                "db/postgres",
                "tcp",
                (),
                "backups.s3.eu-west-1.amazonaws.com",
            ),
            JobRole(
                "shop",
                "catalog-export",
                "Job",
                "shop/catalog",
                "http",
                (("GET", "/api/v1/products?page={n}"),),
            ),
            JobRole(
                "checkout",
                "orders-archive",
                "CronJob",
                "checkout/orders",
                "http",
                (("GET", "/api/v1/orders?page={n}&status=closed"),),
                "archive.s3.eu-west-1.amazonaws.com",
            ),
        ),
        debug_namespaces=("shop", "checkout"),
        autoscaled=(("shop/storefront", 1, 2), ("shop/catalog", 1, 2)),
        policy_namespaces=("db",),
    ),
)


# -- fintech: a payments platform on a managed cluster -----------------------------------------
_APP = "app.kubernetes.io/name"
_FINTECH_WORKLOADS: tuple[WorkloadSpec, ...] = tuple(
    WorkloadSpec(*row)
    for row in (
        ("web", "gateway", "Deployment", 8080, 9901, (2, 3), "gateway", _APP),
        ("web", "frontend", "Deployment", 3000, 9464, (2, 2), "frontend", _APP),
        ("api", "accounts", "Deployment", 8080, 8081, (2, 3), "accounts", _APP),
        ("api", "search", "Deployment", 8080, 8081, (2, 2), "search", _APP),
        ("api", "transfers", "Deployment", 8080, 8081, (1, 2), "transfers", _APP),
        ("api", "ledger", "Deployment", 8080, 8081, (2, 2), "ledger", _APP),
        ("api", "notifier", "Deployment", 8080, 8081, (1, 1), "notifier", _APP),
        ("data", "mysql", "StatefulSet", 3306, 9104, (2, 2), "mysql", _APP),
        ("data", "mongodb", "StatefulSet", 27017, 9216, (3, 3), "mongodb", _APP),
        ("data", "kafka", "StatefulSet", 9092, 9308, (3, 3), "kafka", _APP),
        ("data", "elasticsearch", "StatefulSet", 9200, 9114, (3, 3), "elasticsearch", _APP),
        ("data", "memcached", "StatefulSet", 11211, 9150, (2, 2), "memcached", _APP),
        ("observability", "prometheus", "StatefulSet", 9090, None, (1, 1), "prometheus", _APP),
        ("observability", "alertmanager", "StatefulSet", 9093, 9093, (1, 1), "alertmanager", _APP),
        ("observability", "grafana", "Deployment", 3000, 3000, (1, 1), "grafana", _APP),
        (
            "observability",
            "kube-state-metrics",
            "Deployment",
            8080,
            8081,
            (1, 1),
            "kube-state-metrics",
            _APP,
        ),
        ("observability", "fluent-bit", "DaemonSet", 2020, 2020, (0, 0), "fluent-bit", _APP),
        ("kube-system", "coredns", "Deployment", 53, 9153, (2, 2), "coredns", "k8s-app"),
    )
)

_FINTECH_EDGES: tuple[Edge, ...] = (
    Edge("world", "web/gateway", "ingress", 26.0),
    Edge(
        "web/gateway",
        "web/frontend",
        "http",
        15.0,
        (("GET", "/"), ("GET", "/app/accounts/{id}"), ("GET", "/static/main.{n}.js")),
    ),
    Edge(
        "web/gateway",
        "api/accounts",
        "http",
        6.0,
        (("GET", "/api/v1/accounts/{id}"), ("POST", "/api/v1/sessions")),
    ),
    Edge("web/gateway", "api/search", "http", 4.5, (("GET", "/api/v1/search?q={n}"),)),
    Edge("web/gateway", "api/transfers", "http", 1.8, (("POST", "/api/v1/transfers"),)),
    Edge("web/frontend", "api/accounts", "http", 2.5, (("GET", "/api/v1/accounts/{id}/profile"),)),
    Edge("api/accounts", "data/mongodb", "tcp", 7.0),
    Edge("api/accounts", "data/memcached", "tcp", 9.0),
    Edge("api/search", "data/elasticsearch", "http", 4.5, (("POST", "/transactions/_search"),)),
    Edge("api/search", "data/memcached", "tcp", 3.0),
    Edge("api/transfers", "api/ledger", "http", 1.8, (("POST", "/v1/entries"),)),
    Edge("api/transfers", "api/accounts", "http", 1.8, (("GET", "/api/v1/accounts/{id}/balance"),)),
    Edge("api/transfers", "world:api.plaid.com", "tls", 0.9),
    Edge("api/ledger", "data/mysql", "tcp", 4.0),
    Edge("api/ledger", "data/kafka", "tcp", 2.0),
    Edge("api/notifier", "world:api.twilio.com", "tls", 0.7),
    Edge("api/notifier", "world:api.postmarkapp.com", "tls", 1.0),
    Edge("web/frontend", "world:browser-intake-datadoghq.eu", "tls", 0.5),
    Edge(
        "observability/grafana",
        "observability/prometheus",
        "http",
        0.8,
        (("GET", "/api/v1/query_range?query=sum(rate(http_requests_total[5m]))"),),
    ),
)

_FINTECH_NODES = tuple(
    NodeSpec(f"ip-10-20-{z}-{h}.eu-central-1.compute.internal", zone, f"10.20.{z}.{h}")
    for z, h, zone in (
        (1, 37, "a"),
        (1, 141, "a"),
        (2, 58, "b"),
        (2, 203, "b"),
        (3, 22, "c"),
        (3, 176, "c"),
    )
)

FINTECH = ClusterSpec(
    key="fintech",
    name="fintech-prod-euc1",
    style="eks",
    region="eu-central-1",
    nodes=_FINTECH_NODES,
    pod_prefix="10.0",
    service_prefix="10.100",
    apiserver_ip="10.20.0.240",
    workloads=_FINTECH_WORKLOADS,
    world_services={
        "api.plaid.com": ("203.0.113.20", "203.0.113.21"),
        "api.twilio.com": ("203.0.113.30", "203.0.113.31", "203.0.113.32"),
        "api.postmarkapp.com": ("203.0.113.45",),
        "browser-intake-datadoghq.eu": ("203.0.113.80", "203.0.113.81"),
        "s3.eu-central-1.amazonaws.com": ("203.0.113.90", "203.0.113.91", "203.0.113.92"),
    },
    dns_upstream="203.0.113.253",
    edges=_FINTECH_EDGES,
    load=business_load,
    dns=DnsHabits(
        lookup={"http": 0.3, "tcp": 0.05, "tls": 0.6},
        aaaa=1.0,
        search=("eu-central-1.compute.internal",),
        forward_misses=True,
    ),
    scraper="observability/prometheus",
    scrape_interval_s=15,
    node_scrape_interval_s=15,
    watchers=(
        "kube-system/coredns",
        "observability/prometheus",
        "observability/kube-state-metrics",
        "observability/fluent-bit",
    ),
    visitor_prefix="198.51.100",
    periodic=(
        Periodic(
            "observability/fluent-bit", "data/elasticsearch", "http", 10.0, (("POST", "/_bulk"),)
        ),
        Periodic("api/notifier", "data/kafka", "tcp", 10.0),
        Periodic(
            "observability/prometheus",
            "observability/alertmanager",
            "http",
            60.0,
            (("POST", "/api/v2/alerts"),),
        ),
    ),
    nightly=(
        NightlyJob(
            "jobs",
            "ledger-reconcile",
            2.0,
            (15, 25),
            "data/mysql",
            "api/ledger",
            ("POST", "/internal/v1/reconcile/batches"),
            "s3.eu-central-1.amazonaws.com",
            8080,
        ),
    ),
    roles=Roles(
        port_scan=(
            "api/notifier",
            "web/frontend",
            "api/search",
            "observability/grafana",
            "api/transfers",
        ),
        lateral=(
            ("web/frontend", "data/mysql"),
            ("api/notifier", "api/accounts"),
            ("api/search", "data/mongodb"),
            ("web/gateway", "data/mysql"),
            ("observability/grafana", "data/mongodb"),
            ("web/frontend", "api/ledger"),
        ),
        exfiltration=("api/ledger", "api/accounts", "data/mysql", "api/transfers", "data/mongodb"),
        dns_tunnel=(
            "web/frontend",
            "api/search",
            "api/notifier",
            "observability/grafana",
            "api/accounts",
        ),
        apps=(
            "web/gateway",
            "web/frontend",
            "api/accounts",
            "api/search",
            "api/transfers",
            "api/ledger",
            "api/notifier",
            "observability/grafana",
        ),
        slow_lateral=(
            ("web/frontend", "data/mysql"),
            ("api/notifier", "data/mysql"),
            ("api/search", "data/mongodb"),
            ("api/transfers", "data/mongodb"),
            ("web/frontend", "data/mongodb"),
        ),
        slow_scan=("web/frontend", "api/transfers", "api/search", "api/accounts", "api/ledger"),
        new_service=(
            NewServiceRole(
                "api",
                "statements",
                "api/accounts",
                "data/mysql",
                (("GET", "/v1/statements/{id}"), ("GET", "/v1/statements?account={id}")),
                2.5,
            ),
            NewServiceRole(
                "api",
                "fx-rates",
                "api/transfers",
                "data/memcached",
                (("GET", "/v1/rates?pair=EURUSD"), ("GET", "/v1/rates?pair=EURGBP")),
                1.8,
            ),
        ),
        saas=(
            SaasRole("api/accounts", "api.onfido.com", 1.5),
            SaasRole("api/transfers", "api.wise.com", 1.0),
            SaasRole("api/notifier", "fcm.googleapis.com", 1.8),
        ),
        new_job=(
            JobRole(
                "data",
                "mongo-export",
                "Job",
                "data/mongodb",
                "tcp",
                (),
                "s3.eu-central-1.amazonaws.com",
            ),
            JobRole(
                "api",
                "ledger-backfill",
                "Job",
                "api/ledger",
                "http",
                (("GET", "/v1/entries?page={n}"),),
            ),
            JobRole(
                "jobs",
                "accounts-gdpr-purge",
                "CronJob",
                "api/accounts",
                "http",
                (("GET", "/internal/v1/accounts/dormant?page={n}"),),
            ),
        ),
        debug_namespaces=("api", "data"),
        autoscaled=(("web/gateway", 1, 2), ("api/accounts", 1, 2), ("api/search", 1, 2)),
        policy_namespaces=("data",),
    ),
)

CLUSTERS: dict[str, ClusterSpec] = {DEMO.key: DEMO, FINTECH.key: FINTECH}


def cluster_spec(cluster: str | ClusterSpec) -> ClusterSpec:
    """The spec for a cluster name (or the spec itself); unknown names list the valid ones."""
    if isinstance(cluster, ClusterSpec):
        return cluster
    spec = CLUSTERS.get(cluster)
    if spec is None:
        raise ValueError(f"unknown cluster {cluster!r}; valid: {', '.join(CLUSTERS)}")
    return spec

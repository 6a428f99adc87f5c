"""The cluster shapes the generator can simulate: ``demo`` (a web shop on kind), ``fintech``
(a payments platform on a managed cloud cluster) and ``media`` (a streaming platform on GKE).

``demo`` and ``fintech`` differ in everything a detector might overfit to: names and namespaces, call graph and
rates, load curve, DNS habits (``fintech`` inherits the node's search domain and asks A and AAAA,
so an external name costs several NXDOMAINs first), monitoring (``fintech`` scrapes every pod
every 15 s), background timers (log shipping, Kafka consumers, alert pushes) and a nightly
CronJob that is part of normal traffic.

``media`` (a video streaming platform on GKE) is held out from tuning: it is built from how such
a cluster behaves (gRPC among services, Kafka, Cassandra and Redis, a US prime-time load with
bursts on the hour and heavy weekends, HPA on the playback API, transcode workers that KEDA
scales on Kafka lag (its lag checks are traffic; the replica count stays what the seed drew),
Datadog node agents, vmagent scraping every 60 s, GCE search domains, the metadata server as DNS
upstream), never from what the detector does, so it checks that the rules generalise.
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

__all__ = [
    "CLUSTERS",
    "DEMO",
    "FINTECH",
    "MEDIA",
    "business_load",
    "cluster_spec",
    "load_factor",
    "prime_time_load",
]

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


# -- media: a video streaming platform on GKE (held out from tuning) ----------------------------
# US Eastern, Central and Pacific standard time (no DST: a generated range is hours to days)
# and each one's share of the audience
_US_ZONES = ((-5.0, 0.5), (-6.0, 0.3), (-8.0, 0.2))
# prime time per local weekday (0 = Monday): height, peak hour, width before and after the peak
# (the audience builds up slowly after dinner and goes to bed fast); Fridays and Saturdays run
# later, Sunday night is the busiest of the week
_PRIME = (
    (0.90, 21.0, 3.0, 2.2),
    (0.88, 21.0, 3.0, 2.2),
    (0.88, 21.0, 3.0, 2.2),
    (0.90, 21.0, 3.0, 2.2),
    (0.84, 21.5, 3.2, 2.8),
    (0.88, 21.5, 3.6, 2.8),
    (1.00, 20.75, 3.2, 2.0),
)
_DAYTIME = (0.22, 0.22, 0.22, 0.22, 0.25, 0.50, 0.55)  # afternoon viewing; weekends much more


def _viewers(local_h: float, starts: float) -> float:
    """One time zone's audience at local hour ``local_h`` (hours since the epoch, local)."""
    h = local_h % 24
    day = int(local_h // 24 + 3) % 7  # 1970-01-01 was a Thursday
    evening = 0.0
    for d, at in ((day, h), ((day - 1) % 7, h + 24)):  # tonight, and last night after midnight
        height, peak, before, after = _PRIME[d]
        x = at - peak
        evening += height * math.exp(-((x / (before if x < 0 else after)) ** 2))
    afternoon = _DAYTIME[day] * math.exp(-(((h - 14.5) / 4.0) ** 2))
    return evening * (1.0 + starts) + afternoon


def prime_time_load(t_ns: int) -> float:
    """A US streaming audience (about 1.0 on Sunday prime time): busiest 20-23 h local time in
    each US time zone, so a broad evening plateau around 01-05 UTC, a trough around 09-10 UTC;
    weekends watch much more in the afternoon. Viewing is bursty in the evening: episodes and
    live events start on the hour and half hour, so requests jump then and decay over minutes."""
    hours = (t_ns / _S) / 3600.0
    since = (hours * 60.0) % 30.0  # minutes since the last :00 or :30 (whole-hour zones)
    starts = 0.25 * math.exp(-since / 5.0)
    return 0.10 + sum(share * _viewers(hours + tz, starts) for tz, share in _US_ZONES)


_MEDIA_APP = "app"  # the platform's own manifests
_MEDIA_CHART = "app.kubernetes.io/name"  # third-party Helm charts
_MEDIA_WORKLOADS: tuple[WorkloadSpec, ...] = tuple(
    WorkloadSpec(*row)
    for row in (
        ("edge", "edge-proxy", "Deployment", 8443, 19001, (3, 4), "edge-proxy", _MEDIA_CHART),
        ("edge", "auth", "Deployment", 9001, 9090, (2, 3), "auth", _MEDIA_APP),
        ("catalog", "catalog-api", "Deployment", 8080, 9464, (3, 4), "catalog-api", _MEDIA_APP),
        ("catalog", "metadata", "Deployment", 50051, 9090, (2, 3), "metadata", _MEDIA_APP),
        (
            "catalog",
            "recommendations",
            "Deployment",
            50051,
            9090,
            (2, 3),
            "recommendations",
            _MEDIA_APP,
        ),
        ("playback", "playback-api", "Deployment", 8080, 9464, (3, 5), "playback-api", _MEDIA_APP),
        ("playback", "entitlements", "Deployment", 50051, 9090, (2, 2), "entitlements", _MEDIA_APP),
        ("playback", "drm-license", "Deployment", 9000, 9090, (2, 2), "drm-license", _MEDIA_APP),
        (
            "playback",
            "session-tracker",
            "Deployment",
            9002,
            9090,
            (2, 3),
            "session-tracker",
            _MEDIA_APP,
        ),
        ("transcode", "dispatcher", "Deployment", 50051, 9090, (1, 2), "dispatcher", _MEDIA_APP),
        ("transcode", "worker", "Deployment", 8080, 8080, (3, 6), "transcode-worker", _MEDIA_APP),
        ("streaming-data", "kafka", "StatefulSet", 9092, 5556, (3, 3), "kafka", _MEDIA_CHART),
        (
            "streaming-data",
            "cassandra",
            "StatefulSet",
            9042,
            7070,
            (3, 3),
            "cassandra",
            _MEDIA_CHART,
        ),
        ("streaming-data", "redis", "StatefulSet", 6379, 9121, (3, 3), "redis", _MEDIA_CHART),
        ("observability", "vmagent", "Deployment", 8429, None, (1, 1), "vmagent", _MEDIA_CHART),
        (
            "observability",
            "victoria-metrics",
            "StatefulSet",
            8428,
            8428,
            (1, 1),
            "victoria-metrics",
            _MEDIA_CHART,
        ),
        (
            "observability",
            "datadog-agent",
            "DaemonSet",
            8126,
            None,
            (0, 0),
            "datadog-agent",
            _MEDIA_CHART,
        ),
        (
            "observability",
            "datadog-cluster-agent",
            "Deployment",
            5005,
            5000,
            (1, 1),
            "datadog-cluster-agent",
            _MEDIA_CHART,
        ),
        ("keda", "keda-operator", "Deployment", 9666, 8080, (1, 1), "keda-operator", _MEDIA_CHART),
        ("kube-system", "coredns", "Deployment", 53, 9153, (2, 2), "kube-dns", "k8s-app"),
    )
)


def _grpc(service: str, *methods: str) -> tuple[tuple[str, str], ...]:
    """gRPC calls as Hubble's HTTP parser shows them: POST /<package.Service>/<Method>."""
    return tuple(("POST", f"/{service}/{m}") for m in methods)


_MEDIA_EDGES: tuple[Edge, ...] = (
    # the Google front ends of the external HTTPS load balancer reach the Envoy pods (NEG)
    Edge("world", "edge/edge-proxy", "ingress", 30.0),
    Edge(
        "edge/edge-proxy",
        "edge/auth",
        "http",
        22.0,
        _grpc("envoy.service.auth.v3.Authorization", "Check"),
    ),
    Edge(
        "edge/edge-proxy",
        "playback/playback-api",
        "http",
        18.0,
        (
            ("GET", "/v1/playback/{id}/manifest"),
            ("POST", "/v1/playback/{id}/start"),
            ("POST", "/v1/sessions/{id}/heartbeat"),
            ("POST", "/v1/sessions/{id}/heartbeat"),
            ("POST", "/v1/sessions/{id}/heartbeat"),
        ),
    ),
    Edge(
        "edge/edge-proxy",
        "catalog/catalog-api",
        "http",
        11.0,
        (
            ("GET", "/v1/home?profile={id}"),
            ("GET", "/v1/titles/{id}"),
            ("GET", "/v1/titles/{id}/episodes?season={n}"),
            ("GET", "/v1/search?q={n}"),
        ),
    ),
    Edge("edge/auth", "streaming-data/redis", "tcp", 6.0),
    Edge(
        "catalog/catalog-api",
        "catalog/metadata",
        "http",
        9.0,
        _grpc("media.catalog.v1.Metadata", "GetTitles", "GetTitle"),
    ),
    Edge(
        "catalog/catalog-api",
        "catalog/recommendations",
        "http",
        4.5,
        _grpc("media.reco.v1.Recommendations", "GetRows"),
    ),
    Edge("catalog/catalog-api", "streaming-data/redis", "tcp", 7.0),
    Edge("catalog/metadata", "streaming-data/cassandra", "tcp", 5.0),
    Edge("catalog/recommendations", "streaming-data/cassandra", "tcp", 3.5),
    Edge("catalog/recommendations", "streaming-data/redis", "tcp", 3.0),
    Edge(
        "playback/playback-api",
        "playback/entitlements",
        "http",
        5.0,
        _grpc("media.playback.v1.Entitlements", "Check"),
    ),
    Edge(
        "playback/playback-api",
        "playback/drm-license",
        "http",
        2.5,
        _grpc("media.drm.v1.License", "Issue", "Renew"),
    ),
    Edge(
        "playback/playback-api",
        "playback/session-tracker",
        "http",
        11.0,
        _grpc("media.playback.v1.Sessions", "Heartbeat", "Heartbeat", "Start", "Stop"),
    ),
    Edge(
        "playback/playback-api",
        "catalog/metadata",
        "http",
        3.0,
        _grpc("media.catalog.v1.Metadata", "GetPlaybackInfo"),
    ),
    Edge("playback/playback-api", "world:api.segment.io", "tls", 1.5),
    Edge("playback/entitlements", "streaming-data/cassandra", "tcp", 4.0),
    Edge("playback/entitlements", "streaming-data/redis", "tcp", 3.0),
    Edge("playback/drm-license", "world:cloudkms.googleapis.com", "tls", 1.0),
    Edge("playback/session-tracker", "streaming-data/kafka", "tcp", 9.0),
    Edge("transcode/dispatcher", "streaming-data/cassandra", "tcp", 0.8),
    Edge("transcode/dispatcher", "world:api.mux.com", "tls", 0.5),
    Edge("transcode/dispatcher", "world:media-vod.akamaized.net", "tls", 0.6),
    Edge(
        "transcode/worker",
        "transcode/dispatcher",
        "http",
        2.5,
        _grpc("media.transcode.v1.Dispatcher", "ReportProgress", "Complete"),
    ),
    Edge("transcode/worker", "world:storage.googleapis.com", "tls", 3.5),
    # the node agents ship logs and traces (their volume follows the users) and the cluster
    # agent answers the playback HPA's external metric from Datadog's query API
    Edge("observability/datadog-agent", "world:http-intake.logs.datadoghq.com", "tls", 6.0),
    Edge("observability/datadog-cluster-agent", "world:api.datadoghq.com", "tls", 1.0),
)

_MEDIA_NODES = tuple(
    NodeSpec(f"{pool}-{group}-{suffix}", zone, f"10.142.0.{host}")
    for pool, group, suffix, zone, host in (
        ("pool-1", "4c2e8a91", "x7k2", "-b", 14),
        ("pool-1", "4c2e8a91", "q9vm", "-b", 15),
        ("pool-1", "b37f0d52", "h2lp", "-c", 21),
        ("pool-1", "b37f0d52", "zr4n", "-c", 23),
        ("pool-1", "e91a6c3f", "c8wd", "-d", 30),
        ("pool-1", "e91a6c3f", "m1tt", "-d", 34),
        ("transcode-pool", "7d05b2e8", "9fjs", "-b", 41),
        ("transcode-pool", "2a9c41f6", "kd2w", "-c", 47),
    )
)

MEDIA = ClusterSpec(
    key="media",
    name="gke-media-prod",
    # GKE names nodes gke-<cluster>-<pool>-<group>-<suffix>, that is "<name>-<node>" as the
    # "kind" style does, with the same generic labels; the control plane is Google's (no
    # control-plane node), reached at its private endpoint
    style="kind",
    region="us-east1",  # zones "-b", "-c", "-d" complete it: us-east1-b
    nodes=_MEDIA_NODES,
    pod_prefix="10.4",  # the VPC-native pod range 10.4.0.0/14, a /24 per node
    service_prefix="10.8",
    apiserver_ip="172.16.0.2",
    workloads=_MEDIA_WORKLOADS,
    world_services={
        "storage.googleapis.com": ("203.0.113.100", "203.0.113.101", "203.0.113.102"),
        "cloudkms.googleapis.com": ("203.0.113.105",),
        "api.mux.com": ("203.0.113.50", "203.0.113.51"),
        "media-vod.akamaized.net": ("203.0.113.60", "203.0.113.61", "203.0.113.62"),
        "api.segment.io": ("203.0.113.35", "203.0.113.36"),
        "http-intake.logs.datadoghq.com": ("203.0.113.84", "203.0.113.85"),
        "api.datadoghq.com": ("203.0.113.86",),
    },
    dns_upstream="169.254.169.254",  # GKE's kube-dns forwards to the metadata server
    edges=_MEDIA_EDGES,
    load=prime_time_load,
    # gRPC channels, Kafka and Cassandra drivers keep their connections and rarely resolve;
    # pods inherit the node's two GCE search domains, so an external name walks five names
    dns=DnsHabits(
        lookup={"http": 0.04, "tcp": 0.02, "tls": 0.35},
        aaaa=0.5,
        search=("c.media-prod-311204.internal", "google.internal"),
        forward_misses=True,
    ),
    scraper="observability/vmagent",
    scrape_interval_s=60,
    node_scrape_interval_s=60,
    watchers=(
        "kube-system/coredns",
        "observability/vmagent",
        "observability/datadog-cluster-agent",
        "keda/keda-operator",
    ),
    visitor_prefix="35.191.8",  # Google front ends (35.191.0.0/16), not the viewers themselves
    periodic=(
        # cluster checks: every node agent asks the cluster agent for its share every 10 s
        Periodic(
            "observability/datadog-agent",
            "observability/datadog-cluster-agent",
            "http",
            10.0,
            (
                ("POST", "/api/v1/clusterchecks/status/node"),
                ("GET", "/api/v1/clusterchecks/configs/node"),
            ),
        ),
        Periodic(
            "observability/vmagent",
            "observability/victoria-metrics",
            "http",
            10.0,
            (("POST", "/api/v1/write"),),
        ),
        # KEDA reads the transcode topic's consumer lag to scale the workers (pollingInterval)
        Periodic("keda/keda-operator", "streaming-data/kafka", "tcp", 30.0),
        # Kafka consumers: the workers take transcode tasks, the dispatcher upload events
        Periodic("transcode/worker", "streaming-data/kafka", "tcp", 5.0),
        Periodic("transcode/dispatcher", "streaming-data/kafka", "tcp", 5.0),
    ),
    nightly=(
        NightlyJob(
            "streaming-data",
            "viewing-compaction",
            9.75,  # 04:45 Eastern, 01:45 Pacific: the trough
            (30, 45),
            "streaming-data/cassandra",
            "catalog/recommendations",
            ("POST", "/media.reco.v1.Popularity/IngestBatch"),
            "storage.googleapis.com",
            8080,
        ),
    ),
    roles=Roles(
        # transcode workers parse uploaded media (ffmpeg): the likeliest foothold here
        port_scan=(
            "transcode/worker",
            "catalog/recommendations",
            "playback/drm-license",
            "edge/auth",
            "catalog/metadata",
        ),
        lateral=(
            ("transcode/worker", "streaming-data/cassandra"),
            ("edge/edge-proxy", "streaming-data/cassandra"),
            ("catalog/recommendations", "playback/entitlements"),
            ("transcode/worker", "playback/drm-license"),
            ("edge/auth", "streaming-data/kafka"),
            ("catalog/catalog-api", "playback/drm-license"),
        ),
        exfiltration=(
            "playback/entitlements",
            "catalog/metadata",
            "streaming-data/cassandra",
            "catalog/recommendations",
            "transcode/worker",
        ),
        dns_tunnel=(
            "catalog/catalog-api",
            "transcode/worker",
            "playback/session-tracker",
            "edge/auth",
            "catalog/recommendations",
        ),
        apps=(
            "edge/edge-proxy",
            "edge/auth",
            "catalog/catalog-api",
            "catalog/metadata",
            "catalog/recommendations",
            "playback/playback-api",
            "playback/entitlements",
            "playback/drm-license",
            "playback/session-tracker",
            "transcode/dispatcher",
            "transcode/worker",
        ),
        slow_lateral=(
            ("transcode/worker", "streaming-data/cassandra"),
            ("edge/auth", "streaming-data/cassandra"),
            ("playback/drm-license", "streaming-data/cassandra"),
            ("catalog/metadata", "streaming-data/redis"),
            ("transcode/worker", "streaming-data/redis"),
            ("playback/session-tracker", "streaming-data/cassandra"),
        ),
        slow_scan=(
            "catalog/catalog-api",
            "playback/playback-api",
            "transcode/worker",
            "catalog/recommendations",
            "playback/entitlements",
        ),
        new_service=(
            NewServiceRole(
                "catalog",
                "continue-watching",
                "catalog/catalog-api",
                "streaming-data/cassandra",
                _grpc("media.catalog.v1.ContinueWatching", "GetRow"),
                4.0,
            ),
            NewServiceRole(
                "playback",
                "ad-decisioning",
                "playback/playback-api",
                "streaming-data/redis",
                _grpc("media.ads.v1.AdDecision", "GetBreaks"),
                2.5,
            ),
        ),
        saas=(
            SaasRole("playback/session-tracker", "api2.amplitude.com", 2.0),
            SaasRole("transcode/dispatcher", "api.bitmovin.com", 0.6),
            SaasRole("catalog/metadata", "api.themoviedb.org", 1.2),
            SaasRole("playback/drm-license", "lic.drmtoday.com", 1.0),
        ),
        new_job=(
            JobRole(
                "streaming-data",
                "kafka-topic-backfill",
                "Job",
                "streaming-data/kafka",
                "tcp",
                (),
                "storage.googleapis.com",
            ),
            JobRole(
                "catalog",
                "metadata-reindex",
                "Job",
                "catalog/metadata",
                "http",
                _grpc("media.catalog.v1.Metadata", "ListTitles"),
            ),
            JobRole(
                "transcode",
                "ladder-reencode",
                "CronJob",
                "transcode/dispatcher",
                "http",
                _grpc("media.transcode.v1.Dispatcher", "Enqueue"),
                "storage.googleapis.com",
            ),
        ),
        debug_namespaces=("playback", "catalog", "transcode"),
        autoscaled=(
            ("playback/playback-api", 2, 4),
            ("catalog/catalog-api", 1, 2),
            ("edge/edge-proxy", 1, 2),
        ),
        policy_namespaces=("streaming-data",),
    ),
)


CLUSTERS: dict[str, ClusterSpec] = {DEMO.key: DEMO, FINTECH.key: FINTECH, MEDIA.key: MEDIA}


def cluster_spec(cluster: str | ClusterSpec) -> ClusterSpec:
    """The spec for a cluster name (or the spec itself); unknown names list the valid ones."""
    if isinstance(cluster, ClusterSpec):
        return cluster
    spec = CLUSTERS.get(cluster)
    if spec is None:
        raise ValueError(f"unknown cluster {cluster!r}; valid: {', '.join(CLUSTERS)}")
    return spec

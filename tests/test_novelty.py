"""The edge memory, the novelty rules, changes and incidents (netwarden.detector.novelty,
changes, incidents, netwarden.models.edges): each rule on the traffic that should meet it and on
the benign traffic closest to it."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import orjson
import pytest

from netwarden.detector.changes import ChangeTracker, registrable_domain
from netwarden.detector.judge import WindowJudge
from netwarden.detector.novelty import NoveltyDetector, random_looking
from netwarden.detector.results import Reason, ScoredWindow
from netwarden.ingest.windows import ClosedWindow, WindowBuilder
from netwarden.models.edges import EdgeMemory, EdgeMemoryConfig, load_memory, save_memory
from tests.flowfactory import connection, decode, flow, pod, reserved, world

CART = pod("checkout", "cart", 30001, "10.244.1.10")
PAYMENTS = pod("checkout", "payments", 30002, "10.244.2.20")
ORDERS = pod("checkout", "orders", 30005, "10.244.2.21")
REDIS = pod("db", "redis", 30003, "10.244.3.30")
POSTGRES = pod("db", "postgres", 30004, "10.244.3.31")
MAILER = pod("shop", "mailer", 30006, "10.244.4.40")
NEWSVC = pod("checkout", "fraud-check", 30007, "10.244.4.41")
PROM = pod("monitoring", "prometheus", 30008, "10.244.5.50")
HOST = reserved("host", 1, "172.18.0.2")


def windows_of(lines: list[dict], offset: float = 0.0) -> list[ClosedWindow]:
    """The closed windows of ``lines`` (times shifted by ``offset`` seconds)."""
    builder = WindowBuilder()
    for line in lines:
        line["flow"]["time"] = line["time"] = _shift(line["time"], offset)
    return builder.add(decode(lines)) + builder.flush()


def _shift(stamp: str, offset: float) -> str:
    from datetime import datetime, timedelta

    t = datetime.fromisoformat(stamp.replace("Z", "+00:00")) + timedelta(seconds=offset)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def one(windows: list[ClosedWindow], identity: str) -> ClosedWindow:
    (found,) = [w for w in windows if w.identity == identity]
    return found


def trained(*lines_lists: list[dict]) -> EdgeMemory:
    """A memory that learned ``lines`` (a day before T0)."""
    lines = [line for lines in lines_lists for line in lines]
    return EdgeMemory.from_windows(windows_of(lines, -86_400))


def normal_day() -> list[dict]:
    """What the memory knows: cart -> redis, payments -> postgres and a named vendor,
    orders -> postgres, prometheus scraping, mailer -> an unnamed partner on 443."""
    out = connection(CART, REDIS, seconds=1, dport=6379)
    out += connection(PAYMENTS, POSTGRES, seconds=2, dport=5432)
    out += connection(ORDERS, POSTGRES, seconds=3, dport=5432)
    out += connection(PROM, CART, seconds=4, dport=8080)
    out += [flow(PAYMENTS, world("203.0.113.10"), seconds=5, dport=443,
                 destination_names=["api.stripe.com"])]  # fmt: skip
    out += [flow(MAILER, world("198.51.100.7"), seconds=6, dport=443)]
    return out


def rules(memory: EdgeMemory, lines: list[dict], identity: str) -> list[str]:
    detector = NoveltyDetector(memory)
    return [e.rule for e in detector.inspect(one(windows_of(lines), identity)).evidence]


# -- the memory --------------------------------------------------------------------------------


def test_memory_knows_edges_by_port_and_survives_saving(tmp_path) -> None:
    memory = trained(normal_day())
    cart = one(windows_of(connection(CART, REDIS, seconds=1, dport=6379)), "checkout/cart")
    (edge,) = cart.edges(True)
    assert memory.knows("checkout/cart", True, edge)
    other_port = one(windows_of(connection(CART, REDIS, seconds=1, dport=6380)), "checkout/cart")
    assert not memory.knows("checkout/cart", True, other_port.edges(True)[0])
    assert memory.serves("db/redis", 6, 6379) and not memory.serves("db/redis", 6, 6380)
    assert memory.names_visible
    path = tmp_path / "edges.json"
    assert save_memory(memory, path)
    again = load_memory(path)
    assert again.to_json() == memory.to_json()
    path.write_text("{not json")
    assert len(load_memory(path, log=lambda _: None)) == 0  # set aside, not fatal
    assert (tmp_path / "edges.json.bad").exists()


def test_memory_is_bounded_by_count_and_by_age_relative_to_activity() -> None:
    memory = EdgeMemory(EdgeMemoryConfig(max_edges_per_identity=16, max_age_seconds=7200))
    for port in range(40):
        memory.add("a/b", (True, "c/d", 6, port), when=float(port), flows=1)
    assert len(memory.edges_of("a/b")) == 16  # the most recently used kept
    assert (True, "c/d", 6, 39) in memory.edges_of("a/b")
    memory.touch("a/b", 10_000.0)  # active much later: edges unused for 2 h are forgotten
    assert memory.edges_of("a/b") == {}
    # a file scored long after training: nothing expires by the clock alone
    old = trained(normal_day())
    assert len(old) > 0 and len(
        EdgeMemory.from_json(orjson.loads(orjson.dumps(old.to_json())))
    ) == len(old)


def test_malformed_memory_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match="identity #0 is malformed"):
        EdgeMemory.from_json({"format": 1, "identities": [{"identity": "a/b", "edges": [[1]]}]})
    with pytest.raises(ValueError, match="expected format"):
        EdgeMemory.from_json({"format": 99})


# -- rules: evidence ---------------------------------------------------------------------------


def test_unnamed_internet_address_is_evidence_where_names_are_visible() -> None:
    memory = trained(normal_day())
    beacon = [flow(PAYMENTS, world("192.0.2.99"), seconds=5, dport=443)]
    assert rules(memory, beacon, "checkout/payments") == ["unnamed_internet"]
    # a new named vendor on 443 is a change, not evidence
    vendor = [flow(PAYMENTS, world("203.0.113.50"), seconds=5, dport=443,
                   destination_names=["api.twilio.com"])]  # fmt: skip
    assert rules(memory, vendor, "checkout/payments") == []
    # an identity that already reaches unnamed addresses on 443 changing its partner: change
    partner = [flow(MAILER, world("192.0.2.80"), seconds=5, dport=443)]
    assert rules(memory, partner, "shop/mailer") == []
    # a cluster without DNS visibility: an unnamed address alone proves nothing
    blind = trained([flow(MAILER, world("198.51.100.7"), seconds=6, dport=443)])
    assert rules(blind, beacon, "checkout/payments") == []


def test_internet_port_outside_the_web_ports() -> None:
    memory = trained(normal_day())
    ssh = [flow(PAYMENTS, world("203.0.113.60"), seconds=5, dport=22,
                destination_names=["bastion.example.com"])]  # fmt: skip
    assert rules(memory, ssh, "checkout/payments") == ["internet_port"]


def test_data_store_across_namespaces() -> None:
    memory = trained(normal_day())
    lateral = connection(MAILER, POSTGRES, seconds=5, dport=5432)  # shop -> db, never before
    assert rules(memory, lateral, "shop/mailer") == ["cross_namespace_data_store"]
    # postgres sees it too, naming the client
    detector = NoveltyDetector(memory)
    seen = detector.inspect(one(windows_of(lateral), "db/postgres")).evidence
    assert [(e.rule, e.peer) for e in seen] == [("cross_namespace_data_store", "shop/mailer")]
    # a new workload joining its namespace's data path (checkout reaches postgres): change
    joining = connection(NEWSVC, POSTGRES, seconds=5, dport=5432)
    assert rules(memory, joining, "checkout/fraud-check") == []
    # a port the peer does not serve is no data store: a probe, for the failing rule
    probe = connection(MAILER, REDIS, seconds=5, dport=5432)
    assert rules(memory, probe, "shop/mailer") == []


def test_random_looking_names() -> None:
    assert random_looking("fqdn:j2f5vqpgrgoqudzn6lehur5y73qfvlh6hulv5yvy.t.example.net")
    assert not random_looking("fqdn:o4507.ingest.sentry.io")
    assert not random_looking("fqdn:notifications-service-eu-west-1.example.com")


def _refused(client: dict, server: dict, seconds: float, port: int) -> list[dict]:
    return [
        flow(client, server, seconds=seconds, sport=40000 + port, dport=port, flags=("SYN",)),
        flow(server, client, seconds=seconds + 0.001, sport=port, dport=40000 + port,
             flags=("RST", "ACK"), reply=True, point="TO_ENDPOINT"),
    ]  # fmt: skip


def test_failing_new_edges_and_a_slow_port_sweep_over_the_horizon() -> None:
    """One new port a minute on a peer it knows, refused: by the third window it is a sweep
    of failing edges (the first two windows alone are not)."""
    memory = trained(normal_day())
    detector = NoveltyDetector(memory)
    found = []
    for minute, port in enumerate((22, 23, 25, 110)):
        w = one(windows_of(_refused(CART, REDIS, 60 * minute + 1, port)), "checkout/cart")
        found.append(sorted(e.rule for e in detector.inspect(w).evidence))
    assert found[0] == [] and found[1] == []
    assert "failing_new_edges" in found[2]
    assert "port_sweep" in found[3]


def test_one_new_port_that_fails_once_is_not_evidence() -> None:
    """A new dependency that is not ready yet refuses a connection or two: not an attack."""
    memory = trained(normal_day())
    lines = _refused(CART, REDIS, 1, 6380) + connection(CART, REDIS, seconds=2, dport=6380)
    assert rules(memory, lines, "checkout/cart") == []


def _answered(
    client: dict, server: dict, seconds: float, sport: int, names: list[str] | None = None
) -> list[dict]:
    names = names or ["cdn-sync.example.org"]
    return [
        flow(client, server, seconds=seconds, sport=sport, dport=443, destination_names=names),
        flow(server, client, seconds=seconds + 0.01, sport=443, dport=sport,
             flags=("SYN", "ACK"), reply=True, point="TO_ENDPOINT"),
    ]  # fmt: skip


def _calls_rules(
    memory: EdgeMemory,
    times: list[float],
    ip: str,
    names: list[str] | None = None,
    client: dict | None = None,
) -> list[str]:
    """The rules payments' (or its ``client`` pod's) answered connections to ``ip`` at
    ``times`` meet, window by window."""
    detector = NoveltyDetector(memory)
    out: list[str] = []
    for minute in range(int(max(times) // 60) + 1):
        lines = [
            line
            for i, t in enumerate(times)
            if minute * 60 <= t < minute * 60 + 60
            for line in _answered(client or PAYMENTS, world(ip), t, 41000 + i, names)
        ]
        if lines:
            w = one(windows_of(lines), "checkout/payments")
            out += [e.rule for e in detector.inspect(w).evidence]
    return out


def _reached_a_new_vendor_lately() -> EdgeMemory:
    """Payments as in :func:`normal_day`, which also started calling a new vendor two hours
    ago: its internet destinations are not a closed set."""
    lately = [flow(PAYMENTS, world("203.0.113.44"), seconds=5, dport=443,
                   destination_names=["api.avalara.com"])]  # fmt: skip
    return EdgeMemory.from_windows(windows_of(normal_day(), -86_400) + windows_of(lately, -7200))


def _user_calls(seed: int, mean: float = 32.0) -> list[float]:
    """Calls at random times (Poisson, ``mean`` seconds apart), for 15 minutes."""
    r = random.Random(seed)
    out, t = [], 1.0
    while t < 900:
        out.append(t)
        t += r.expovariate(1 / mean)
    return out


def test_beacon_rhythm_versus_user_driven_calls() -> None:
    """A check-in every 32 s (jitter +-1.5 s) is a beacon from its eighth connection on; calls
    at random times (Poisson, the same mean rate) are not, however long they go on. To a domain
    new to the cluster from a workload whose internet destinations held still for a day, two
    intervals are tested: random calls pass that test about once in 20 tries (here 6 of 200
    runs, not every run has three calls at a window's end); from a workload that called a new
    vendor two hours ago, never."""
    memory = trained(normal_day())
    timer = [1 + 32 * i + random.Random(i).uniform(-1.5, 1.5) for i in range(12)]
    assert _calls_rules(memory, timer, "192.0.2.61") == ["beacon"] * 3  # from the eighth
    closed = [s for s in range(200) if _calls_rules(memory, _user_calls(s), "192.0.2.62")]
    assert 0 < len(closed) <= 12, closed  # about 1 in 20 at most (seeds 0-199: 6)
    opened = _reached_a_new_vendor_lately()
    assert not [s for s in range(200) if _calls_rules(opened, _user_calls(s), "192.0.2.62")]


def test_a_running_pod_calling_a_service_of_its_namespace_it_never_used() -> None:
    """Lateral movement inside a namespace: pods that ran unchanged for an hour start calling an
    established service. Not when a release, restart or scale-up brought a new pod within the
    hour, nor for a new service's first callers, a hub client, or a port the peer does not
    serve (a probe: the failing and sweep rules' business)."""
    serves = connection(MAILER, PAYMENTS, seconds=9, dport=8080)  # payments serves 8080
    memory = trained(normal_day(), serves)
    call = connection(ORDERS, PAYMENTS, seconds=5, dport=8080)
    assert rules(memory, call, "checkout/orders") == ["running_pod"]
    assert (
        rules(memory, connection(ORDERS, PAYMENTS, seconds=5, dport=9999), "checkout/orders") == []
    )

    rolled = pod("checkout", "orders", 30005, "10.244.2.22", replica="5f6c7d8e9f-abcde")
    assert (
        rules(memory, connection(rolled, PAYMENTS, seconds=5, dport=8080), "checkout/orders") == []
    )
    half_hour = EdgeMemory.from_windows(
        windows_of(normal_day() + serves, -86_400)
        + windows_of(connection(rolled, POSTGRES, seconds=1, dport=5432), -1800)
    )  # orders' new pod started 30 minutes ago: its release may bring the call
    assert (
        rules(half_hour, connection(rolled, PAYMENTS, seconds=5, dport=8080), "checkout/orders")
        == []
    )

    fresh = EdgeMemory.from_windows(
        windows_of(normal_day(), -86_400)
        + windows_of(connection(CART, NEWSVC, seconds=1, dport=8080), -600)
    )  # fraud-check went live 10 minutes ago
    assert rules(fresh, connection(ORDERS, NEWSVC, seconds=5, dport=8080), "checkout/orders") == []

    backends = [pod("checkout", f"svc{i}", 31000 + i, f"10.244.6.{i + 1}") for i in range(8)]
    hub = trained(
        normal_day(),
        serves,
        *(connection(ORDERS, b, seconds=10 + i, dport=8080) for i, b in enumerate(backends)),
    )  # orders already routes to 8 workloads of its namespace: a gateway
    assert rules(hub, call, "checkout/orders") == []


def test_a_tight_beacon_to_a_domain_new_to_the_cluster_is_found_at_its_third_check_in() -> None:
    """Intervals within a few percent: from pods that ran unchanged for an hour, of a workload
    whose internet destinations held still for a day, three check-ins are enough for a domain
    nobody in the cluster uses; four when it called a new vendor within the day; from a pod
    started within the hour (a new agent's timer comes with its pods) five; a domain the cluster
    knows (a vendor's new host) waits for the eighth, and a rhythm of 9% deviation too."""
    memory = trained(normal_day())

    def rule_after(times: list[float], name: str) -> list[str]:
        return _calls_rules(memory, times, "192.0.2.70", [name])

    tight = [1 + 45 * i + random.Random(i).uniform(-0.5, 0.5) for i in range(8)]  # ~1%
    assert rule_after(tight, "cdn-sync-3f2a.example.org") == ["beacon"] * 5  # 91 s: minute 1
    opened = _reached_a_new_vendor_lately()
    found = _calls_rules(opened, tight, "192.0.2.70", ["cdn-sync-3f2a.example.org"])
    assert found == ["beacon"] * 4  # 136 s: minute 2
    # a check-in every 60 s starting at a window's start: three in the first three windows
    minute = [0.5 + 59.5 * i for i in range(4)]
    assert rule_after(minute, "cdn-sync-3f2a.example.org")[:1] == ["beacon"]
    assert _calls_rules(opened, minute[:3], "192.0.2.70", ["cdn-sync-3f2a.example.org"]) == []
    assert rule_after(tight, "hooks.stripe.com") == ["beacon"]  # 8th at 316 s
    looser = [1 + 32 * i + (2.9 if i % 2 else 0) for i in range(12)]  # 9% deviation
    assert rule_after(looser, "cdn-sync-3f2a.example.org") == ["beacon"] * 3  # 8th at 227 s

    rolled = pod("checkout", "payments", 30002, "10.244.2.23", replica="5f6c7d8e9f-fghij")
    restarted = EdgeMemory.from_windows(
        windows_of(normal_day(), -86_400)
        + windows_of(connection(rolled, POSTGRES, seconds=1, dport=5432), -1800)
    )  # payments' new pod started 30 minutes ago
    found = _calls_rules(restarted, tight, "192.0.2.70", ["cdn-sync-3f2a.example.org"], rolled)
    assert found == ["beacon"] * 3  # the fifth check-in, at 181 s


def test_volume_far_above_the_identitys_known_edges() -> None:
    memory = trained(normal_day())
    upload = [
        flow(PAYMENTS, world("192.0.2.123"), seconds=1 + i * 0.5, sport=42000 + i, dport=443,
             destination_names=["backup-76a2.example.net"])
        for i in range(60)
    ]  # fmt: skip
    assert "volume" in rules(memory, upload, "checkout/payments")


def test_volume_to_a_new_internet_peer_is_measured_against_the_internet_peers_it_knows() -> None:
    """A worker whose pooled database connections carry many flow records a window, and whose
    one vendor gets a call or two: an upload of 60 flows a window to a new domain is far past
    its internet norm (though under ten times its database edge); a new vendor at its old
    vendor's rate is a change, not evidence."""
    pooled = [
        flow(PAYMENTS, POSTGRES, seconds=2 + i * 0.5, sport=40100, dport=5432,
             flags=("ACK", "PSH"))
        for i in range(40)
    ]  # fmt: skip
    memory = trained(normal_day(), pooled)
    assert memory.busiest_egress("checkout/payments") >= 40
    assert memory.busiest_egress("checkout/payments", internet=True) == 1

    def to(name: str, ip: str, n: int) -> list[dict]:
        return [
            flow(PAYMENTS, world(ip), seconds=1 + i * 0.5, sport=42000 + i, dport=443,
                 destination_names=[name])
            for i in range(n)
        ]  # fmt: skip

    assert "volume" in rules(memory, to("backup-a1b4.example.net", "192.0.2.158", 60),
                             "checkout/payments")  # fmt: skip
    assert rules(memory, to("api.avalara.com", "192.0.2.77", 2), "checkout/payments") == []
    no_vendor = trained(connection(PAYMENTS, POSTGRES, seconds=2, dport=5432), pooled)
    assert "volume" not in rules(
        no_vendor, to("backup-a1b4.example.net", "192.0.2.158", 60), "checkout/payments"
    )  # no internet peer known: its busiest edge (40 a window) is the norm


# -- changes -----------------------------------------------------------------------------------


def test_a_new_service_its_caller_and_its_scraper_are_one_change() -> None:
    memory = trained(normal_day())
    detector = NoveltyDetector(memory)
    tracker = ChangeTracker(memory)
    for minute in range(3):
        lines = connection(CART, NEWSVC, seconds=60 * minute + 1, dport=8080)
        lines += connection(PROM, NEWSVC, seconds=60 * minute + 2, dport=9090)
        lines += connection(NEWSVC, POSTGRES, seconds=60 * minute + 3, dport=5432)
        for w in windows_of(lines):
            novelty = detector.inspect(w)
            assert novelty.evidence == []
            tracker.observe(w, novelty.new)
            memory.learn(w, skip=tracker.pending(w.identity))
    (change,) = tracker.changes()
    assert (change.kind, change.subject) == ("workload", "checkout/fraud-check")
    assert change.identities == {
        "checkout/cart",
        "monitoring/prometheus",
        "checkout/fraud-check",
        "db/postgres",
    }
    assert change.windows == 3
    # pending edges are not learned until accepted; accepting teaches the memory at once
    assert not memory.knows_identity("checkout/fraud-check")
    tracker.accept(change.id)
    assert memory.knows_identity("checkout/fraud-check")
    assert memory.get("checkout/cart", (True, "checkout/fraud-check", 6, 8080)) is not None


def test_a_vendors_names_are_one_change() -> None:
    assert registrable_domain("fqdn:api.eu.stripe.com") == "stripe.com"
    assert registrable_domain("x.example.co.uk") == "example.co.uk"
    memory = trained(normal_day())
    detector = NoveltyDetector(memory)
    tracker = ChangeTracker(memory)
    lines = [
        flow(PAYMENTS, world(ip), seconds=s, sport=41000 + s, dport=443, destination_names=[n])
        for s, ip, n in ((1, "203.0.113.50", "api.twilio.com"),
                         (2, "203.0.113.51", "media.twilio.com"))
    ]  # fmt: skip
    w = one(windows_of(lines), "checkout/payments")
    tracker.observe(w, detector.inspect(w).new)
    assert [(c.kind, c.subject) for c in tracker.changes()] == [("vendor", "twilio.com")]


def test_a_change_that_turns_into_evidence_is_escalated() -> None:
    memory = trained(normal_day())
    tracker = ChangeTracker(memory)
    detector = NoveltyDetector(memory)
    w = one(windows_of(connection(CART, PAYMENTS, seconds=1, dport=9000)), "checkout/cart")
    novelty = detector.inspect(w)
    assert novelty.evidence == []
    tracker.observe(w, novelty.new)
    (change,) = tracker.changes()
    assert (change.kind, change.subject) == ("edge", "checkout/cart -> checkout/payments")
    tracker.escalate("checkout/cart", {(True, "checkout/payments", 6, 22)})  # same peer
    assert change.status == "escalated" and tracker.pending("checkout/cart") == set()


def test_a_running_service_reaching_into_another_namespace() -> None:
    """A known workload calling a known workload of another namespace on its served port for
    the first time is evidence (lateral movement); a scraper that crosses namespaces by design
    (three or more already) is not, nor a new workload; a call within the namespace is the
    running-pod rule's (test below)."""
    memory = trained(normal_day(), connection(MAILER, PAYMENTS, seconds=9, dport=8080))
    lateral = connection(CART, MAILER, seconds=5, dport=8080)  # checkout -> shop
    assert rules(memory, lateral, "checkout/cart") == []  # mailer does not serve 8080 ...
    lateral = connection(ORDERS, PAYMENTS, seconds=5, dport=8080)  # same namespace
    assert rules(memory, lateral, "checkout/orders") == ["running_pod"]
    into = connection(MAILER, PAYMENTS, seconds=5, dport=8080)  # known already
    assert rules(memory, into, "shop/mailer") == []
    payments_serves = trained(normal_day(), connection(ORDERS, PAYMENTS, seconds=9, dport=8080))
    lateral = connection(MAILER, PAYMENTS, seconds=5, dport=8080)  # shop -> checkout
    assert rules(payments_serves, lateral, "shop/mailer") == ["cross_namespace_service"]
    scraper = trained(
        normal_day(),
        connection(ORDERS, PAYMENTS, seconds=9, dport=8080),
        connection(PROM, REDIS, seconds=10, dport=9121),
        connection(PROM, MAILER, seconds=11, dport=9100),
    )  # prometheus reaches checkout, db and shop
    scrape = connection(PROM, PAYMENTS, seconds=5, dport=8080)
    assert rules(scraper, scrape, "monitoring/prometheus") == []


def test_l7_only_requests_are_edges() -> None:
    """A connection Hubble shows only as proxied HTTP requests is still an edge."""
    lines = [
        flow(CART, PAYMENTS, seconds=1, dport=8080, event_type=129,
             l7={"type": "REQUEST", "http": {"method": "POST", "url": "/v1/charges"}}),
        flow(PAYMENTS, CART, seconds=1.01, sport=8080, dport=40000, event_type=129, reply=True,
             l7={"type": "RESPONSE", "http": {"code": 200, "method": "POST"}}),
    ]  # fmt: skip
    (edge,) = one(windows_of(lines), "checkout/cart").edges(True)
    assert (edge.peer, edge.port_text, edge.flows) == ("checkout/payments", "TCP/8080", 1)


def test_pods_starting_up_are_known_for_five_minutes() -> None:
    memory = EdgeMemory()
    first = one(windows_of(connection(CART, REDIS, seconds=1, dport=6379)), "checkout/cart")
    assert first.client.pods == {"cart-7d9f8b6c5d-x2k4q"}
    assert memory.new_pods(first) == {"cart-7d9f8b6c5d-x2k4q"}
    memory.learn(first)
    later = one(
        windows_of(connection(CART, REDIS, seconds=1, dport=6379), offset=240), "checkout/cart"
    )
    assert memory.new_pods(later) == {"cart-7d9f8b6c5d-x2k4q"}  # still starting
    memory.learn(later)
    settled = one(
        windows_of(connection(CART, REDIS, seconds=1, dport=6379), offset=600), "checkout/cart"
    )
    assert memory.new_pods(settled) == set()
    again = EdgeMemory.from_json(orjson.loads(orjson.dumps(memory.to_json())))
    assert again.new_pods(settled) == set()


class _ModelSays:
    """The model's verdict held fixed (past the threshold, with ``features`` as its reasons), so
    that what the judge makes of it is what is tested."""

    def __init__(self, *features: str, score: float = 1.2) -> None:
        self.features = features
        self.value = score

    def score(self, windows: list[ClosedWindow]) -> list[ScoredWindow]:
        return [
            ScoredWindow(
                identity=w.subject.id,
                namespace=w.subject.namespace,
                workload=w.subject.workload,
                window_start=datetime.fromtimestamp(w.start, UTC),
                window_end=datetime.fromtimestamp(w.end, UTC),
                score=self.value,
                threshold=1.0,
                anomalous=True,
                model=f"identity:{w.subject.id}",
                fallback=False,
                reasons=tuple(Reason(f, 5.0, 0.0, 1.0, 1.0, f) for f in self.features),
            )
            for w in windows
        ]


def test_a_change_in_progress_explains_the_traffic_to_its_new_peer() -> None:
    """Payments starts calling a new vendor: three windows in a row past the model's threshold
    for its internet flows and name lookups are the change's, not an alert, even at a clear score
    (1.5 thresholds) while the vendor gets no more flows than payments' busiest known edge or
    the volume rule's floor; a clear score with more is the model's alert (a bulk upload), and
    so are a run for bytes sent and the run without anything new."""
    vendor = [  # calls that follow users: not a minute apart to the second
        line
        for minute in range(3)
        for line in _answered(PAYMENTS, world("203.0.113.77"), 60 * minute + (5, 17, 41)[minute],
                              43000 + minute, ["api2.amplitude.com"])
    ]  # fmt: skip
    windows = [w for w in windows_of(vendor) if w.identity == "checkout/payments"]
    assert len(windows) == 3

    def pooled() -> list[dict]:
        """Payments' busiest known edges: five flow records a window on its database
        connection, and five calls a window to its payment provider."""
        return [
            flow(PAYMENTS, POSTGRES, seconds=2 + i, sport=40100, dport=5432, flags=("ACK", "PSH"))
            for i in range(5)
        ] + [
            flow(PAYMENTS, world("203.0.113.10"), seconds=3 + i, sport=40200 + i, dport=443,
                 destination_names=["api.stripe.com"])
            for i in range(5)
        ]  # fmt: skip

    def verdicts(
        *features: str, lines_windows: list[ClosedWindow] = windows, score: float = 1.2
    ) -> list[bool]:
        model = _ModelSays(*features, score=score)
        judge = WindowJudge(model, trained(normal_day(), pooled()))  # type: ignore[arg-type]
        return [s.anomalous for w in lines_windows for s in judge.judge([w])]

    assert verdicts("egress_world_flows", "egress_dns_queries", "egress_dns_nxdomain_share") == [
        False,
        False,
        False,
    ]
    assert verdicts("egress_world_flows", "egress_dns_queries", score=1.6) == [False] * 3

    def calls(per_minute: int) -> list[ClosedWindow]:
        lines = [
            line
            for minute in range(3)
            for k in range(per_minute)
            for line in _answered(PAYMENTS, world("203.0.113.77"), 60 * minute + 5 + k * 50 / per_minute,
                                  43000 + 100 * minute + k, ["api2.amplitude.com"])
        ]  # fmt: skip
        return [w for w in windows_of(lines) if w.identity == "checkout/payments"]

    # twenty calls a minute: more than its busiest known edge carries (seven), under the volume
    # rule's floor: any new dependency fits there, even at a clear score
    assert verdicts("egress_world_flows", score=1.6, lines_windows=calls(20)) == [False] * 3
    bulk = calls(40)  # forty a minute: past the floor, under the volume rule's 10x: the model's
    assert verdicts("egress_world_flows", score=1.6, lines_windows=bulk) == [True] * 3
    assert verdicts("egress_world_flows", lines_windows=bulk) == [False] * 3
    assert verdicts("egress_bytes_sent", "egress_world_flows") == [False, False, True]
    known = [  # the same calls to a vendor it knows: nothing new, the model's run alerts
        w
        for w in windows_of(
            [
                line
                for minute in range(3)
                for line in _answered(
                    PAYMENTS,
                    world("203.0.113.10"),
                    60 * minute + 5,
                    43000 + minute,
                    ["api.stripe.com"],
                )
            ]
        )
        if w.identity == "checkout/payments"
    ]
    assert verdicts("egress_world_flows", "egress_dns_queries", lines_windows=known) == [
        False,
        False,
        True,
    ]

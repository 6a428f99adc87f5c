"""Event-time windows, the once-per-subject rule, lateness, and each feature's meaning."""

from __future__ import annotations

import pytest

from netwarden.ingest.direction import CLIENT, SERVER, counted_sides
from netwarden.ingest.windows import WindowBuilder, WindowConfig
from tests.flowfactory import T0, connection, decode, flow, pod, reserved, world

CART = pod("checkout", "cart", 30001, "10.244.1.10")
PAYMENTS = pod("checkout", "payments", 30002, "10.244.2.20")
REDIS = pod("db", "redis", 30003, "10.244.3.30")
DNS = pod("kube-system", "kube-dns", 102, "10.244.0.53")
HOST = reserved("host", 1, "172.18.0.2")


def _build(lines, config: WindowConfig | None = None, batch: int = 10_000):
    builder = WindowBuilder(config)
    flows = decode(lines)
    windows = []
    for i in range(0, len(flows), batch):
        windows += builder.add(flows[i : i + batch])
    windows += builder.flush()
    return windows, builder


def _one(windows, identity: str, start_offset: float = 0.0):
    found = [
        w for w in windows if w.identity == identity and w.start == T0.timestamp() + start_offset
    ]
    assert len(found) == 1, [(w.identity, w.start) for w in windows]
    return found[0]


@pytest.mark.parametrize("both_ends", [True, False])
def test_connection_counts_once_per_subject(both_ends) -> None:
    lines = connection(CART, PAYMENTS, seconds=5, dport=8080, both_ends=both_ends)
    windows, builder = _build(lines)
    cart = _one(windows, "checkout/cart").client.features()
    assert cart["new_conns"] == 1 and cart["flows"] == 2  # SYN and ACK/PSH, no replies
    assert cart["distinct_peers"] == 1 and cart["distinct_dst_ports"] == 1
    assert cart["unanswered_syns"] == 0
    if both_ends:
        server = _one(windows, "checkout/payments").server.features()
        assert server["new_conns"] == 1 and server["flows"] == 2 and server["unanswered_syns"] == 0
    else:
        assert [w.identity for w in windows] == ["checkout/cart"]
    # neither subject counts the other side of the connection
    assert _one(windows, "checkout/cart").server.empty
    assert builder.stats.flows_counted == len(lines)


def test_counted_sides_rule() -> None:
    assert counted_sides("EGRESS", "FROM_ENDPOINT", False) == CLIENT
    assert counted_sides("EGRESS", "TO_ENDPOINT", True) == CLIENT
    assert counted_sides("INGRESS", "TO_ENDPOINT", False) == SERVER
    assert counted_sides(1, 0, True) == SERVER
    assert counted_sides("TRAFFIC_DIRECTION_UNKNOWN", "FROM_ENDPOINT", False) == CLIENT
    assert counted_sides("TRAFFIC_DIRECTION_UNKNOWN", "TO_ENDPOINT", False) == SERVER
    assert counted_sides("TRAFFIC_DIRECTION_UNKNOWN", "TO_ENDPOINT", True) == CLIENT
    assert counted_sides(0, "UNKNOWN_POINT", False) == CLIENT | SERVER


def test_reply_only_flow_from_real_sample_counts_for_the_server(hubble_samples) -> None:
    """hubble-otel line 1: reviews replies to the host (INGRESS, reply): reviews is the server."""
    from netwarden.ingest.reader import FlowReader

    path = next(p for p in hubble_samples if p.name == "basic-sample-10-flows.json")
    first = next(iter(FlowReader().read(path)))[0]
    builder = WindowBuilder()
    builder.add([first])
    (w,) = builder.flush()
    assert w.identity == "bookinfo/reviews"
    assert w.client.empty and w.server.empty  # a FIN/ACK reply adds no flow, peer or counter


def test_windows_are_tumbling_and_aligned() -> None:
    lines = [
        flow(CART, PAYMENTS, seconds=s, sport=41000 + i)
        for i, s in enumerate([0, 30, 59.999, 60, 119, 121])
    ]
    windows, _ = _build(lines)
    cart = sorted(
        (w.start - T0.timestamp(), w.client.flows) for w in windows if w.identity == "checkout/cart"
    )
    assert cart == [(0.0, 3), (60.0, 2), (120.0, 1)]
    assert all(w.end - w.start == 60 for w in windows)


def test_window_length_is_configurable() -> None:
    lines = [flow(CART, PAYMENTS, seconds=s, sport=41000 + i) for i, s in enumerate([0, 9, 10, 25])]
    windows, _ = _build(lines, WindowConfig(window_seconds=10, allowed_lateness=0))
    cart = sorted(
        (w.start - T0.timestamp(), w.client.flows) for w in windows if w.identity == "checkout/cart"
    )
    assert cart == [(0.0, 2), (10.0, 1), (20.0, 1)]


def test_late_flows_are_counted_not_added() -> None:
    lines = [
        flow(CART, PAYMENTS, seconds=10, sport=1),
        flow(CART, PAYMENTS, seconds=70, sport=2),
        flow(CART, PAYMENTS, seconds=55, sport=3),  # 15 s behind, lateness 15: still on time
        flow(CART, PAYMENTS, seconds=80, sport=4),  # watermark 65 closes [0, 60)
        flow(CART, PAYMENTS, seconds=59, sport=5),  # its window has closed: late
    ]
    windows, builder = _build(lines, WindowConfig(allowed_lateness=15), batch=1)
    assert builder.stats.late_flows == 1
    cart = {
        w.start - T0.timestamp(): w.client.flows for w in windows if w.identity == "checkout/cart"
    }
    assert cart == {0.0: 2, 60.0: 2}


@pytest.mark.parametrize("batch", [1, 3, 7, 1000])
def test_result_does_not_depend_on_batching(batch) -> None:
    lines = []
    for i in range(60):
        lines += connection(
            CART if i % 2 else PAYMENTS, REDIS, seconds=i * 7.3 % 300, sport=50000 + i
        )
    lines.sort(key=lambda x: x["time"])
    lines[10], lines[40] = lines[40], lines[10]  # some disorder
    reference, ref_builder = _build(lines, batch=10_000)
    windows, builder = _build(lines, batch=batch)
    assert [(w.identity, w.start) for w in windows] == [(w.identity, w.start) for w in reference]
    assert [w.features() for w in windows] == [w.features() for w in reference]
    assert builder.stats.late_flows == ref_builder.stats.late_flows


def test_open_windows_stay_bounded_on_a_long_stream() -> None:
    builder = WindowBuilder()
    peak = 0
    for minute in range(120):
        lines = connection(CART, REDIS, seconds=minute * 60 + 1, sport=40000 + minute)
        lines += connection(PAYMENTS, REDIS, seconds=minute * 60 + 2, sport=40000 + minute)
        builder.add(decode(lines))
        peak = max(peak, builder.open_windows)
    assert peak <= 3 * 2  # identities x (windows inside the lateness horizon + 1)
    assert builder.stats.windows_closed >= 3 * 118


def test_config_is_validated_with_clear_errors() -> None:
    with pytest.raises(ValueError, match="window_seconds must be between 1 and 86400, got 0"):
        WindowConfig(window_seconds=0)
    with pytest.raises(ValueError, match="allowed_lateness must be between 0 and 86400"):
        WindowConfig(allowed_lateness=-1)
    with pytest.raises(ValueError, match="window_seconds must be a number"):
        WindowConfig(window_seconds="60")  # type: ignore[arg-type]


def test_drops_by_reason_and_policy_drops() -> None:
    lines = [
        flow(
            CART,
            REDIS,
            seconds=1,
            dport=6379,
            verdict="DROPPED",
            drop_reason="POLICY_DENIED",
            event_type=1,
            direction="TRAFFIC_DIRECTION_UNKNOWN",
            point="UNKNOWN_POINT",
        ),
        flow(
            CART,
            REDIS,
            seconds=2,
            dport=6379,
            verdict="DROPPED",
            drop_reason="POLICY_DENY",
            event_type=1,
            direction="EGRESS",
        ),
        flow(
            CART,
            REDIS,
            seconds=3,
            dport=6379,
            verdict="DROPPED",
            drop_reason="CT_MAP_INSERTION_FAILED",
            event_type=1,
            direction="EGRESS",
        ),
        # the policy-verdict event for the same packet repeats it: not counted again
        flow(
            CART,
            REDIS,
            seconds=2,
            dport=6379,
            verdict="DROPPED",
            drop_reason="POLICY_DENY",
            event_type=5,
            direction="EGRESS",
        ),
    ]
    windows, builder = _build(lines)
    cart = _one(windows, "checkout/cart").client
    assert cart.drops == 3 and cart.policy_drops == 2
    assert dict(cart.drop_reasons) == {
        "POLICY_DENIED": 1,
        "POLICY_DENY": 1,
        "CT_MAP_INSERTION_FAILED": 1,
    }
    redis = _one(windows, "db/redis").server  # unknown direction: the drop counts for both ends
    assert redis.drops == 1 and redis.policy_drops == 1
    assert builder.stats.not_counted == {"event_type_5": 1}


def test_resets_and_unanswered_syns_of_a_port_scan() -> None:
    lines = []
    for i, port in enumerate(range(1000, 1100)):
        lines.append(flow(CART, REDIS, seconds=1 + i * 0.1, sport=50000, dport=port))
        lines.append(
            flow(
                REDIS,
                CART,
                seconds=1.001 + i * 0.1,
                sport=port,
                dport=50000,
                flags=("RST", "ACK"),
                reply=True,
            )
        )
    windows, _ = _build(lines)
    cart = _one(windows, "checkout/cart").client.features()
    assert cart["new_conns"] == 100 and cart["unanswered_syns"] == 100
    assert cart["tcp_resets"] == 100
    assert 95 <= cart["distinct_dst_ports"] <= 105  # sketch: within its error bound
    assert cart["dst_port_entropy"] > 6.0
    assert cart["distinct_peers"] == 1


def test_dns_features() -> None:
    def q(name: str, t: float) -> list[dict]:
        return [
            flow(
                CART,
                DNS,
                seconds=t,
                proto="UDP",
                dport=53,
                event_type=129,
                l7={"type": "REQUEST", "dns": {"query": name, "qtypes": ["A"]}},
            ),
            flow(
                DNS,
                CART,
                seconds=t + 0.01,
                proto="UDP",
                sport=53,
                reply=True,
                event_type=129,
                l7={"type": "RESPONSE", "dns": {"query": name, "rcode": 3 if "svc" in name else 0}},
            ),
        ]

    lines = (
        q("payments.checkout.svc.cluster.local.", 1)
        + q("api.stripe.com.", 2)
        + q("aaaa.example.", 3)
        + q("api.stripe.com.", 4)
    )
    windows, _ = _build(lines)
    cart = _one(windows, "checkout/cart").client.features()
    assert cart["dns_queries"] == 4
    assert cart["dns_nxdomain_share"] == 0.1  # 1 of 4 responses, counted as of 10
    assert cart["dns_distinct_names"] == 3
    lengths = [len("payments.checkout.svc.cluster.local"), 14, 12, 14]
    assert cart["dns_qname_len_mean"] == pytest.approx(sum(lengths) / 4)
    assert cart["dns_qname_len_max"] == max(lengths)
    assert 2.5 < cart["dns_qname_entropy_mean"] < 4.0
    assert cart["flows"] == 0  # L7 events feed only dns_* / http_* features


def test_http_features() -> None:
    lines = []
    for i, code in enumerate([200, 200, 404, 503]):
        lines.append(
            flow(
                CART,
                PAYMENTS,
                seconds=1 + i,
                event_type=129,
                sport=42000 + i,
                l7={"type": "REQUEST", "http": {"method": "GET", "url": "http://payments/x"}},
            )
        )
        lines.append(
            flow(
                PAYMENTS,
                CART,
                seconds=1.1 + i,
                event_type=129,
                reply=True,
                l7={"type": "RESPONSE", "http": {"code": code, "method": "GET"}},
            )
        )
    windows, _ = _build(lines)
    cart = _one(windows, "checkout/cart").client.features()
    assert cart["http_requests"] == 4
    assert cart["http_4xx_share"] == 0.1 and cart["http_5xx_share"] == 0.1  # 1 of 4, as of 10


def test_world_features() -> None:
    lines = [
        flow(
            PAYMENTS,
            world("203.0.113.10"),
            seconds=1,
            dport=443,
            destination_names=["api.stripe.com"],
        ),
        flow(
            PAYMENTS,
            world("203.0.113.11"),
            seconds=2,
            dport=443,
            destination_names=["api.stripe.com"],
        ),
        flow(
            PAYMENTS,
            world("198.51.100.5"),
            seconds=3,
            dport=443,
            destination_names=["evil.example"],
        ),
        flow(PAYMENTS, HOST, seconds=4, dport=10250),
    ]
    windows, _ = _build(lines)
    pay = _one(windows, "checkout/payments").client.features()
    assert pay["world_flows"] == 3
    assert pay["world_distinct_peers"] == 3
    assert pay["world_distinct_fqdns"] == 2
    assert pay["distinct_peers"] == 4  # three world addresses and the host


def test_icmp_counted() -> None:
    windows, _ = _build([flow(CART, REDIS, seconds=1, proto="ICMPv4")])
    assert _one(windows, "checkout/cart").client.icmp == 1


def test_edges_of_a_window() -> None:
    """Each side lists its (peer, protocol/port) edges with flows, SYNs, SYN-ACKs, resets and
    drops; a refused connection shows as a SYN and a reset, a dropped one as a drop."""
    lines = connection(CART, REDIS, seconds=1, dport=6379)
    lines += [
        flow(CART, PAYMENTS, seconds=2, sport=40100, dport=22, flags=("SYN",)),
        flow(PAYMENTS, CART, seconds=2.001, sport=22, dport=40100, flags=("RST", "ACK"),
             reply=True, point="TO_ENDPOINT"),
        flow(CART, PAYMENTS, seconds=3, sport=40200, dport=23, flags=("SYN",),
             verdict="DROPPED", drop_reason="POLICY_DENIED"),
    ]  # fmt: skip
    windows, _ = _build(lines)
    cart = {(e.peer, e.port_text): e for e in _one(windows, "checkout/cart").edges(True)}
    redis = cart[("db/redis", "TCP/6379")]
    assert (redis.flows, redis.syns, redis.syn_acks, redis.failures) == (2, 1, 1, 0)
    refused = cart[("checkout/payments", "TCP/22")]
    assert (refused.syns, refused.resets, refused.failures) == (1, 1, 2)
    dropped = cart[("checkout/payments", "TCP/23")]
    assert (dropped.drops, dropped.failures) == (1, 2)
    served = _one(windows, "db/redis").edges(False)
    assert [(e.peer, e.port_text, e.flows) for e in served] == [("checkout/cart", "TCP/6379", 2)]


def test_internet_edges_are_named_by_dns_name_or_network() -> None:
    """A vendor rotating its addresses is one edge; an address without a name is its /24."""
    lines = [
        flow(PAYMENTS, world(ip), seconds=s, sport=41000 + s, dport=443, destination_names=names)
        for s, ip, names in (
            (1, "203.0.113.10", ["api.stripe.com"]),
            (2, "203.0.113.77", ["api.stripe.com."]),
            (3, "198.51.100.5", None),
            (4, "198.51.100.9", None),
        )
    ]
    lines.append(
        flow(world("198.51.100.5"), PAYMENTS, seconds=3.001, sport=443, dport=41003,
             flags=("SYN", "ACK"), reply=True, point="TO_ENDPOINT")
    )  # fmt: skip
    windows, _ = _build(lines)
    edges = _one(windows, "checkout/payments").edges(True)
    assert sorted((e.peer, e.flows, e.syn_acks) for e in edges) == [
        ("cidr:198.51.100.0/24", 2, 1),
        ("fqdn:api.stripe.com", 2, 0),
    ]
    assert all(len(e.times) == e.flows for e in edges)  # connection starts, for rhythm


def test_windows_do_not_depend_on_earlier_windows() -> None:
    """The builder learns nothing across windows: novelty is the detector's (edge memory)."""
    early = connection(CART, REDIS, seconds=1)
    late = connection(CART, REDIS, seconds=1801) + connection(CART, PAYMENTS, seconds=1802)
    alone, _ = _build(late)
    both, _ = _build(early + late)
    assert _one(alone, "checkout/cart", 1800).client == _one(both, "checkout/cart", 1800).client


def test_advance_closes_windows_of_a_quiet_stream() -> None:
    t0 = T0.timestamp()
    builder = WindowBuilder(WindowConfig(window_seconds=60, allowed_lateness=15))
    assert builder.add(decode(connection(CART, REDIS, seconds=1))) == []
    assert builder.advance(t0 + 70) == []  # watermark t0 + 55: [t0, t0 + 60) is still open
    closed = builder.advance(t0 + 75.5)
    assert {w.identity for w in closed} >= {"checkout/cart"} and closed[0].end == t0 + 60
    assert builder.advance(t0) == [] and builder.stats.watermark == t0 + 60.5  # never backwards


def test_bytes_of_agent_flows_count_for_each_end_in_its_own_direction() -> None:
    """eBPF agent flows carry byte counts in the flow's orientation (source -> destination);
    the client's egress side and the server's ingress side each count them from their end."""
    close = flow(CART, REDIS, seconds=1, dport=6379, flags=("FIN",))
    close["flow"]["netwarden"] = {
        "bytes_sent": "100000",
        "bytes_received": "5000",
        "duration_ns": "2500000",
    }
    at_server = flow(
        CART,
        REDIS,
        seconds=1.001,
        dport=6379,
        flags=("FIN",),
        direction="INGRESS",
        point="TO_ENDPOINT",
    )
    at_server["flow"]["netwarden"] = {"bytes_sent": "100000", "bytes_received": "5000"}
    # a reply-oriented flow (source = the server): its "sent" are the server's bytes
    reply = flow(REDIS, CART, seconds=2, sport=6379, dport=40000, reply=True, flags=("ACK",))
    reply["flow"]["netwarden"] = {"bytes_sent": "70", "bytes_received": "30"}
    drop = flow(CART, REDIS, seconds=3, dport=6379, verdict="DROPPED", event_type=1)
    drop["flow"]["netwarden"] = {"kernel_drop_reason": "NETFILTER_DROP"}
    windows, _ = _build([close, at_server, reply, drop])
    cart = _one(windows, "checkout/cart").features()
    redis = _one(windows, "db/redis").features()
    assert (cart["egress_bytes_sent"], cart["egress_bytes_received"]) == (100_030.0, 5_070.0)
    assert (redis["ingress_bytes_sent"], redis["ingress_bytes_received"]) == (5_000.0, 100_000.0)
    assert cart["ingress_bytes_sent"] == 0.0 and redis["egress_bytes_sent"] == 0.0
    assert dict(_one(windows, "checkout/cart").client.drop_reasons) == {"NETFILTER_DROP": 1}


# -- the stream's time: flows far ahead of it ---------------------------------------------------

YEAR = 365 * 86_400


def _steady(n: int, start: float = 0.0, every: float = 1.0) -> list[dict]:
    """``n`` flows, one every ``every`` seconds, alternating between two clients."""
    return [
        flow(CART if i % 2 else PAYMENTS, REDIS, seconds=start + i * every, sport=20000 + i % 30000)
        for i in range(n)
    ]


def _feed(builder: WindowBuilder, flows: list, batch: int = 64) -> list:
    windows = []
    for i in range(0, len(flows), batch):
        windows += builder.add(flows[i : i + batch])
    return windows


@pytest.mark.parametrize("batch", [1, 64, 5000])
def test_one_far_future_flow_does_not_stop_the_stream(batch) -> None:
    """The reported case: one line stamped years ahead among 3,000 good flows. It is counted and
    logged once; no later flow is late, and windows keep closing while the stream runs."""
    lines = _steady(3000)
    lines.insert(1000, flow(CART, REDIS, seconds=7000 * YEAR, sport=1))
    logged: list[str] = []
    builder = WindowBuilder(log=logged.append)
    during = _feed(builder, decode(lines), batch)
    assert len({w.start for w in during}) >= 45  # ~50 one-minute windows closed on the way
    windows = during + builder.flush()
    stats = builder.stats
    assert (stats.late_flows, stats.future_flows, stats.flows_seen) == (0, 1, 3001)
    assert stats.flows_counted == 3000
    assert max(w.start for w in windows) < T0.timestamp() + 3000
    assert len(logged) == 1 and "ahead of the stream" in logged[0]
    assert "checkout/cart" in stats.future_example and "years ahead" in stats.future_example


def test_a_far_future_first_line_cannot_set_the_streams_time() -> None:
    lines = [flow(CART, REDIS, seconds=50 * YEAR, sport=1), *_steady(500)]
    builder = WindowBuilder(log=lambda _: None)
    _feed(builder, decode(lines))
    builder.flush()
    assert (builder.stats.late_flows, builder.stats.future_flows) == (0, 1)
    assert builder.stats.flows_counted == 500


def test_a_genuine_jump_is_followed() -> None:
    """The whole stream moves an hour on (a replay of later traffic, a node that was off):
    after a few dozen flows confirm it, windows follow, and nothing is lost."""
    lines = _steady(1500) + _steady(1500, start=1500 + 3600)
    builder = WindowBuilder()
    windows = _feed(builder, decode(lines))
    assert builder.held_flows == 0
    assert max(w.start for w in windows) > T0.timestamp() + 1500 + 3600  # closed while running
    windows += builder.flush()
    stats = builder.stats
    assert (stats.late_flows, stats.future_flows, stats.flows_counted) == (0, 0, 3000)
    cart = sum(w.client.flows for w in windows if w.identity == "checkout/cart")
    assert cart == 1500


def test_a_node_with_a_skewed_clock_cannot_make_the_others_late() -> None:
    """One node of three is an hour ahead: its flows are dropped as future, the others' are all
    counted (before: every other flow was late)."""
    lines = []
    for i in range(3000):
        skewed = i % 3 == 0
        lines.append(
            flow(
                PAYMENTS if skewed else CART,
                REDIS,
                seconds=i * 0.5 + (3600 if skewed else 0),
                sport=20000 + i,
                node="prod/worker-3" if skewed else "prod/worker-1",
            )
        )
    builder = WindowBuilder(log=lambda _: None)
    windows = _feed(builder, decode(lines)) + builder.flush()
    stats = builder.stats
    assert stats.late_flows == 0
    assert stats.future_flows == 1000
    assert sum(w.client.flows for w in windows if w.identity == "checkout/cart") == 2000


def test_a_far_future_flow_then_silence_is_dropped_when_the_stream_is_quiet() -> None:
    """Live: the garbage line is the last before a quiet spell. Settling (the service's idle
    tick) drops it, so the flows after the silence are not late."""
    builder = WindowBuilder(log=lambda _: None)
    _feed(builder, decode(_steady(200)))
    builder.add(decode([flow(CART, REDIS, seconds=3 * YEAR, sport=1)]))
    builder.settle()
    assert (builder.stats.future_flows, builder.held_flows) == (1, 0)
    builder.advance(T0.timestamp() + 230)
    _feed(builder, decode(_steady(100, start=231)))
    builder.flush()
    assert (builder.stats.late_flows, builder.stats.flows_counted) == (0, 300)


def test_held_flows_stay_bounded_and_the_log_is_once_per_burst() -> None:
    """Every third flow from a broken clock: held flows stay bounded by the votes needed, and
    the burst is logged once."""
    from netwarden.ingest.windows import CONFIRMATIONS

    logged: list[str] = []
    builder = WindowBuilder(log=logged.append)
    peak = 0
    for i in range(3000):
        ahead = 10 * YEAR if i % 3 == 0 else 0
        builder.add(decode([flow(CART, REDIS, seconds=i + ahead, sport=20000 + i)]))
        peak = max(peak, builder.held_flows)
    assert peak <= CONFIRMATIONS
    assert len(logged) == 1


def test_max_skew_is_validated() -> None:
    with pytest.raises(ValueError, match="max_skew must be between 1 and 86400"):
        WindowConfig(max_skew=0)
    assert WindowConfig(max_skew=15).max_skew == 15


def test_a_smaller_max_skew_stops_a_node_skewed_by_less_than_a_window() -> None:
    """A node 40 s ahead, lateness 15 s: with max_skew at the lateness, the others stay on time."""
    lines = [
        flow(
            PAYMENTS if i % 4 == 0 else CART,
            REDIS,
            seconds=i * 0.25 + (40 if i % 4 == 0 else 0),
            sport=20000 + i,
        )
        for i in range(2000)
    ]
    default = WindowBuilder(log=lambda _: None)
    _feed(default, decode(lines))
    default.flush()
    assert default.stats.late_flows >= 500  # within max_skew: the node moves the watermark
    strict = WindowBuilder(WindowConfig(max_skew=15), log=lambda _: None)
    _feed(strict, decode(lines))
    strict.flush()
    assert (strict.stats.late_flows, strict.stats.future_flows) == (0, 500)


def test_flows_from_any_source_with_any_time_never_raise() -> None:
    """Sources that do not go through the reader (tests, replays of records): impossible times
    are counted, never a window that cannot be turned into datetimes."""
    from datetime import UTC, datetime, timedelta, timezone

    import msgspec

    from netwarden.ingest.windows import windows_to_rows

    template = decode([flow(CART, REDIS, seconds=0)])[0]
    times = [
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, tzinfo=timezone(-timedelta(hours=23))),
        datetime(1969, 12, 31, tzinfo=UTC),
        T0,
        T0 + timedelta(seconds=1),
    ]
    builder = WindowBuilder(log=lambda _: None)
    flows = [msgspec.structs.replace(template, time=t) for t in times]
    windows = builder.add(flows) + builder.flush()
    rows = windows_to_rows(windows)
    assert {r["window_start"] for r in rows} == {T0}
    assert builder.stats.not_counted["time_out_of_range"] == 4


def test_the_live_detectors_idle_tick_settles_held_flows(tmp_path) -> None:
    """A stream of a few flows, then silence: the first flows are held until confirmed; the
    idle tick decides about them, so their windows still close (and are counted unscored)."""
    from prometheus_client import CollectorRegistry

    from netwarden.detector.live import DetectorMetrics, LiveDetector
    from netwarden.detector.store import AnomalyStore
    from netwarden.models.registry import CurrentModel

    now = [1000.0]
    config = WindowConfig()
    builder = WindowBuilder(config)
    metrics = DetectorMetrics(CollectorRegistry(), "file")
    with AnomalyStore(f"sqlite:///{tmp_path / 'n.db'}") as store:
        live = LiveDetector(
            builder,
            CurrentModel(tmp_path, windows=config),
            store,
            metrics=metrics,
            clock=lambda: now[0],
        )
        live.add(decode(connection(CART, REDIS, seconds=1, both_ends=False)))
        assert builder.held_flows == 3 and builder.open_windows == 0
        now[0] += 100
        live.tick(1.0)
    assert builder.held_flows == 0
    assert metrics.windows_unscored._value.get() == 1  # cart's window (seen at the client only)


def test_the_idle_tick_moves_event_time_with_the_wall_clock(tmp_path) -> None:
    """A quiet stream ticked every second for ten minutes: event time moves ten minutes past
    the last flow (each tick measures the quiet spell from the last flow, not from the time the
    previous tick moved to), so the next flow, a minute later, is not late."""
    from prometheus_client import CollectorRegistry

    from netwarden.detector.live import DetectorMetrics, LiveDetector
    from netwarden.detector.store import AnomalyStore
    from netwarden.models.registry import CurrentModel

    now = [1000.0]
    config = WindowConfig()
    builder = WindowBuilder(config)
    with AnomalyStore(f"sqlite:///{tmp_path / 'q.db'}") as store:
        live = LiveDetector(
            builder,
            CurrentModel(tmp_path, windows=config),
            store,
            metrics=DetectorMetrics(CollectorRegistry(), "file"),
            clock=lambda: now[0],
        )
        live.add(decode(connection(CART, REDIS, seconds=1)))
        now[0] += 30
        live.tick(30.0)  # quiet for 30 s: the held flows are decided, time moves 30 s on
        first = builder.stats.watermark
        for _ in range(570):
            now[0] += 1
            live.tick(30.0)
        assert builder.stats.watermark - first == pytest.approx(570)
        live.add(decode(connection(CART, REDIS, seconds=1 + 660)))
    assert builder.stats.late_flows == 0


def test_future_flows_in_the_summary_and_the_metric(tmp_path) -> None:
    import orjson
    from prometheus_client import generate_latest

    from netwarden.ingest.metrics import IngestMetrics
    from netwarden.ingest.pipeline import build_windows

    lines = _steady(600)
    lines.insert(300, flow(CART, REDIS, seconds=74 * YEAR, sport=1))  # in 2099
    path = tmp_path / "flows.json"
    path.write_bytes(b"\n".join(orjson.dumps(x) for x in lines))
    metrics = IngestMetrics()
    result = build_windows(
        [path], lambda _: None, metrics=metrics, builder=WindowBuilder(log=lambda _: None)
    )
    summary = "\n".join(result.summary_lines())
    assert "600 flows counted into windows, 0 late" in summary
    assert "1 flows stamped too far ahead of the stream's time" in summary
    assert "2099-12-18T12:00:00+00:00, 74 years ahead" in summary
    assert "netwarden_ingest_future_flows_total 1.0" in generate_latest(metrics.registry).decode()

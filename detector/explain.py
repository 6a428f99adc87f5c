"""Reasons in words: what a feature's value means, next to the identity's baseline.

Each feature has a phrase about the workload ("contacted 212 distinct destination ports");
a reason reads "<phrase> (baseline <median>)". A window's summary joins its top reasons behind the
workload's name, e.g. "cart contacted 212 distinct destination ports (baseline 3) and 38 peers
(baseline 4)".
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["examples_text", "phrase", "reason_text", "summary"]

# {v} is the value; phrases are written for the egress (client) side and adapted for ingress.
_EGRESS: Final[dict[str, str]] = {
    "flows": "sent {v} flows",
    "new_conns": "opened {v} new TCP connections",
    "distinct_peers": "contacted {v} peers",
    "distinct_dst_ports": "contacted {v} distinct destination ports",
    "dst_port_entropy": "spread its connections over ports with {v} bits of entropy",
    "new_peers": "talked to {v} peers it had never contacted before",
    "new_peer_flows": "sent {v} flows to peers it had never contacted before",
    "drops": "had {v} flows dropped",
    "policy_drops": "had {v} flows denied by network policy",
    "tcp_resets": "saw {v} TCP resets",
    "unanswered_syns": "sent {v} SYNs that got no answer",
    "icmp": "sent {v} ICMP packets",
    "dns_queries": "made {v} DNS queries",
    "dns_nxdomain_share": "got NXDOMAIN for {pct} of its DNS answers",
    "dns_qname_len_mean": "queried DNS names {v} characters long on average",
    "dns_qname_len_max": "queried a DNS name {v} characters long",
    "dns_qname_entropy_mean": "queried DNS names with {v} bits of character entropy",
    "dns_distinct_names": "queried {v} distinct DNS names",
    "dns_new_names": "queried {v} DNS names it had never queried before",
    "http_requests": "made {v} HTTP requests",
    "http_4xx_share": "got 4xx for {pct} of its HTTP responses",
    "http_5xx_share": "got 5xx for {pct} of its HTTP responses",
    "world_flows": "sent {v} flows to the internet",
    "world_distinct_peers": "contacted {v} internet addresses",
    "world_distinct_fqdns": "contacted {v} internet names",
}
_INGRESS: Final[dict[str, str]] = {
    "flows": "received {v} flows",
    "new_conns": "accepted {v} new TCP connection attempts",
    "distinct_peers": "was contacted by {v} peers",
    "distinct_dst_ports": "was contacted on {v} distinct ports",
    "dst_port_entropy": "was contacted on ports with {v} bits of entropy",
    "new_peers": "was contacted by {v} peers never seen before",
    "new_peer_flows": "received {v} flows from peers never seen before",
    "drops": "had {v} incoming flows dropped",
    "policy_drops": "had {v} incoming flows denied by network policy",
    "tcp_resets": "saw {v} TCP resets on incoming connections",
    "unanswered_syns": "left {v} incoming SYNs unanswered",
    "icmp": "received {v} ICMP packets",
    "dns_queries": "answered {v} DNS queries",
    "dns_nxdomain_share": "answered NXDOMAIN to {pct} of DNS queries",
    "dns_qname_len_mean": "was asked DNS names {v} characters long on average",
    "dns_qname_len_max": "was asked a DNS name {v} characters long",
    "dns_qname_entropy_mean": "was asked DNS names with {v} bits of character entropy",
    "dns_distinct_names": "was asked {v} distinct DNS names",
    "dns_new_names": "was asked {v} DNS names never asked before",
    "http_requests": "served {v} HTTP requests",
    "http_4xx_share": "answered 4xx to {pct} of HTTP requests",
    "http_5xx_share": "answered 5xx to {pct} of HTTP requests",
    "world_flows": "received {v} flows from the internet",
    "world_distinct_peers": "was contacted by {v} internet addresses",
    "world_distinct_fqdns": "was contacted by {v} internet names",
}
_TIME: Final = {
    "time_of_day_sin": "was active at an unusual time of day",
    "time_of_day_cos": "was active at an unusual time of day",
}


def _number(value: float) -> str:
    if abs(value - round(value)) < 1e-9:
        return f"{round(value):,}"
    return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"


def phrase(feature: str, value: float) -> str:
    """What ``feature`` at ``value`` says about the workload."""
    if feature in _TIME:
        return _TIME[feature]
    side, _, name = feature.partition("_")
    table = _EGRESS if side == "egress" else _INGRESS
    template = table.get(name, f"{feature} = {{v}}")
    if "distinct" in name:  # sketch estimates: a count of things reads as a whole number
        value = round(value)
    return template.format(v=_number(value), pct=f"{value:.0%}")


def reason_text(feature: str, value: float, baseline: float) -> str:
    """``phrase`` plus the baseline, e.g. "contacted 212 peers (baseline 4)"."""
    text = phrase(feature, value)
    if feature in _TIME:
        return text
    if feature.endswith("_share"):
        return f"{text} (baseline {baseline:.0%})"
    return f"{text} (baseline {_number(baseline)})"


def summary(workload: str, reasons: list[str], *, fallback: bool = False) -> str:
    """One sentence: the workload and its top reasons."""
    if not reasons:
        return f"{workload} behaved as usual"
    body = reasons[0] if len(reasons) == 1 else ", ".join(reasons[:-1]) + " and " + reasons[-1]
    tail = " (scored by a fallback model: too little history of its own)" if fallback else ""
    return f"{workload} {body}{tail}"


def examples_text(examples: dict[str, Any], side: str, *, limit: int = 4) -> str:
    """The example flows of one side (``"egress"`` or ``"ingress"``) in one line, e.g.
    "to shop/catalog TCP/8080 (41 flows), world:203.0.113.9 TCP/443 (12 flows); DNS names:
    x1.example.net; drops: POLICY_DENIED 30". Empty when the side has nothing to show."""
    data = examples.get(side) or {}
    parts = []
    pairs = data.get("to" if side == "egress" else "from") or []
    if pairs:
        shown = ", ".join(
            f"{p['peer']} {p['port']} ({p['flows']:,} flows)".replace("  ", " ")
            for p in pairs[:limit]
        )
        more = f" and {len(pairs) - limit} more" if len(pairs) > limit else ""
        parts.append(f"{'to' if side == 'egress' else 'from'} {shown}{more}")
    names = data.get("dns_names") or []
    if names:
        more = f" and {len(names) - limit} more" if len(names) > limit else ""
        parts.append(f"DNS names: {', '.join(names[:limit])}{more}")
    drops = data.get("drop_reasons") or {}
    if drops:
        top = sorted(drops.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
        parts.append("drops: " + ", ".join(f"{reason} {n:,}" for reason, n in top))
    return "; ".join(parts)

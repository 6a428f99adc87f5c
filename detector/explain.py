"""Reasons in words: what a feature's value means, next to the identity's baseline.

Each feature has a phrase about the workload ("contacted 212 distinct destination ports");
a reason reads "<phrase> (baseline <median>)". A window's summary joins its top reasons behind the
workload's name, e.g. "cart contacted about 212 distinct destination ports (baseline 3) and 38
peers (baseline 4)".

Numbers read as a person counts: counts are whole numbers with the noun in the right number ("1
peer", "2 peers"); a distinct count beyond the sketch's exact range is an estimate and says
"about"; an entropy is said as the number of equally used ports it amounts to (2 ** bits).
"""

from __future__ import annotations

import math
from typing import Any, Final

__all__ = ["SKETCH_EXACT_LIMIT", "examples_text", "phrase", "reason_text", "summary"]

#: Distinct counts (the ``*distinct*`` features) are exact up to this many values and
#: HyperLogLog estimates beyond (netwarden.ingest.features' sketches, ``exact_limit``).
SKETCH_EXACT_LIMIT: Final = 32
#: Mean character entropy (bits) above which queried names look random: readable names
#: (catalog.shop.svc.cluster.local, api.github.com) have 2.8-3.8, base32/hex labels of DNS
#: tunnels and DGAs 4.5 and more.
_RANDOM_NAME_BITS: Final = 4.3

# {v} is the value, {s}/{es}/{ies} the plural endings that follow it ("1 peer", "2 peers");
# phrases are written for the egress (client) side and adapted for ingress.
_EGRESS: Final[dict[str, str]] = {
    "flows": "sent {v} flow{s}",
    "new_conns": "opened {v} new TCP connection{s}",
    "distinct_peers": "contacted {v} peer{s}",
    "distinct_dst_ports": "contacted {v} distinct destination port{s}",
    "new_peers": "talked to {v} peer{s} it had never contacted before",
    "new_peer_flows": "sent {v} flow{s} to peers it had never contacted before",
    "drops": "had {v} flow{s} dropped",
    "policy_drops": "had {v} flow{s} denied by network policy",
    "tcp_resets": "saw {v} TCP reset{s}",
    "unanswered_syns": "sent {v} SYN{s} that got no answer",
    "icmp": "sent {v} ICMP packet{s}",
    "dns_queries": "made {v} DNS quer{ies}",
    "dns_nxdomain_share": "got NXDOMAIN for {pct} of its DNS answers",
    "dns_qname_len_mean": "queried DNS names {v} character{s} long on average",
    "dns_qname_len_max": "queried a DNS name {v} character{s} long",
    "dns_distinct_names": "queried {v} distinct DNS name{s}",
    "dns_new_names": "queried {v} DNS name{s} it had never queried before",
    "http_requests": "made {v} HTTP request{s}",
    "http_4xx_share": "got 4xx for {pct} of its HTTP responses",
    "http_5xx_share": "got 5xx for {pct} of its HTTP responses",
    "world_flows": "sent {v} flow{s} to the internet",
    "world_distinct_peers": "contacted {v} internet address{es}",
    "world_distinct_fqdns": "contacted {v} internet name{s}",
}
_INGRESS: Final[dict[str, str]] = {
    "flows": "received {v} flow{s}",
    "new_conns": "accepted {v} new TCP connection attempt{s}",
    "distinct_peers": "was contacted by {v} peer{s}",
    "distinct_dst_ports": "was contacted on {v} distinct port{s}",
    "new_peers": "was contacted by {v} peer{s} never seen before",
    "new_peer_flows": "received {v} flow{s} from peers never seen before",
    "drops": "had {v} incoming flow{s} dropped",
    "policy_drops": "had {v} incoming flow{s} denied by network policy",
    "tcp_resets": "saw {v} TCP reset{s} on incoming connections",
    "unanswered_syns": "left {v} incoming SYN{s} unanswered",
    "icmp": "received {v} ICMP packet{s}",
    "dns_queries": "answered {v} DNS quer{ies}",
    "dns_nxdomain_share": "answered NXDOMAIN to {pct} of DNS queries",
    "dns_qname_len_mean": "was asked DNS names {v} character{s} long on average",
    "dns_qname_len_max": "was asked a DNS name {v} character{s} long",
    "dns_distinct_names": "was asked {v} distinct DNS name{s}",
    "dns_new_names": "was asked {v} DNS name{s} never asked before",
    "http_requests": "served {v} HTTP request{s}",
    "http_4xx_share": "answered 4xx to {pct} of HTTP requests",
    "http_5xx_share": "answered 5xx to {pct} of HTTP requests",
    "world_flows": "received {v} flow{s} from the internet",
    "world_distinct_peers": "was contacted by {v} internet address{es}",
    "world_distinct_fqdns": "was contacted by {v} internet name{s}",
}
#: Features whose value is not a count: shares, means, entropies.
_NOT_COUNTS: Final = frozenset({"dns_qname_len_mean", "dst_port_entropy", "dns_qname_entropy_mean"})
_TIME: Final = {
    "time_of_day_sin": "was active at an unusual time of day",
    "time_of_day_cos": "was active at an unusual time of day",
}


def _number(value: float) -> str:
    if abs(value - round(value)) < 1e-9:
        return f"{round(value):,}"
    return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"


def _is_count(name: str) -> bool:
    return name not in _NOT_COUNTS and not name.endswith("_share")


def _count(value: float) -> int:
    """A count as a whole number, halves up (a median of 2 and 3 windows reads 3)."""
    return math.floor(value + 0.5)


def _plural(template: str, shown: str, **extra: str) -> str:
    one = shown == "1"
    return template.format(
        v=shown, s="" if one else "s", es="" if one else "es", ies="y" if one else "ies", **extra
    )


def _ports(bits: float) -> str:
    """An entropy in bits as the number of equally used ports it amounts to: "~195 ports"."""
    n = 2.0 ** max(bits, 0.0)
    if n < 1.05:
        return "1 port"
    return f"~{n:.1f}".rstrip("0").rstrip(".") + " ports" if n < 10 else f"~{round(n):,} ports"


def _port_spread(side: str, bits: float) -> str:
    entropy = f"(entropy {bits:.1f} bits)"
    if _ports(bits) == "1 port":
        single = (
            "used a single destination port"
            if side == "egress"
            else "was contacted on a single port"
        )
        return f"{single} {entropy}"
    if side == "egress":
        return f"spread its connections evenly over {_ports(bits)} {entropy}".replace(
            " ports (", " destination ports (", 1
        )
    return f"was contacted evenly on {_ports(bits)} {entropy}"


def _name_randomness(side: str, bits: float) -> str:
    names = "DNS names" if bits < _RANDOM_NAME_BITS else "random-looking DNS names"
    verb = "queried" if side == "egress" else "was asked"
    return f"{verb} {names} ({bits:.1f} bits of entropy per character)"


def phrase(feature: str, value: float) -> str:
    """What ``feature`` at ``value`` says about the workload."""
    if feature in _TIME:
        return _TIME[feature]
    side, _, name = feature.partition("_")
    if name == "dst_port_entropy":
        return _port_spread(side, value)
    if name == "dns_qname_entropy_mean":
        return _name_randomness(side, value)
    table = _EGRESS if side == "egress" else _INGRESS
    template = table.get(name, f"{feature} = {{v}}")
    if name.endswith("_share"):
        return template.format(v=_number(value), pct=f"{value:.0%}")
    if not _is_count(name):
        return _plural(template, _number(value))
    shown = f"{_count(value):,}"
    if "distinct" in name and value > SKETCH_EXACT_LIMIT:  # beyond the sketch's exact range
        template = template.replace("{v}", "about {v}", 1)
    return _plural(template, shown)


def _baseline(name: str, baseline: float) -> str:
    if name.endswith("_share"):
        return f"{baseline:.0%}"
    if name == "dst_port_entropy":
        return _ports(baseline)
    if name == "dns_qname_entropy_mean":
        return f"{baseline:.1f}"
    return f"{_count(baseline):,}" if _is_count(name) else _number(baseline)


def reason_text(feature: str, value: float, baseline: float) -> str:
    """``phrase`` plus the baseline, e.g. "contacted 38 peers (baseline 4)"."""
    text = phrase(feature, value)
    if feature in _TIME:
        return text
    name = feature.partition("_")[2]
    if name in ("dst_port_entropy", "dns_qname_entropy_mean"):  # one parenthesis, not two
        return f"{text[:-1]}; baseline {_baseline(name, baseline)})"
    return f"{text} (baseline {_baseline(name, baseline)})"


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
            f"{p['peer']} {p['port']} ({p['flows']:,} flow{'' if p['flows'] == 1 else 's'})".replace(
                "  ", " "
            )
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

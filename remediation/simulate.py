"""Replay recorded flows against proposed policies: what would have been dropped, and where.

Each request flow is judged by :class:`~netwarden.remediation.matcher.PolicySet`; a dropped flow
is grouped by (subject, direction, peer, port) where the subject is the endpoint whose egress or
ingress drops it, so a reviewer sees "shop/cart egress to world:1.2.3.4 TCP/443: 12 flows" with a
few example flows rather than a flat list. Hubble reports one connection several times (both
nodes, several packets), so each group also counts distinct connections (5-tuples).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from netwarden.ingest.identity import IdentityResolver
from netwarden.remediation.matcher import EGRESS, Decision, L4Key, PolicySet, Verdict, l4_key

__all__ = ["DropGroup", "SimulationReport", "drop_warnings", "simulate"]


@dataclass
class DropGroup:
    """Dropped flows that share subject, direction, peer and port."""

    subject: str
    direction: str
    peer: str
    port: str
    decision: Decision
    rule: str  # the deny rule, or "" for default deny
    flows: int = 0
    connections: set[tuple[str, str, str, int, int]] = field(default_factory=set, repr=False)
    examples: list[Any] = field(default_factory=list, repr=False)

    @property
    def connection_count(self) -> int:
        return len(self.connections)


@dataclass
class SimulationReport:
    """Totals and drop groups of one replay; :meth:`text` renders it for a person."""

    flows_seen: int = 0
    flows_judged: int = 0
    replies_skipped: int = 0
    other_skipped: int = 0  # not traffic (trace-sock, capture, agent events ...)
    allowed: int = 0
    dropped: int = 0
    dropped_by_default_deny: int = 0
    dropped_by_deny_rule: int = 0
    already_dropped: int = 0  # dropped flows that the recording shows as DROPPED anyway
    allowed_with_l7: int = 0  # allowed at L4 by a port rule whose L7 rules were not simulated
    groups: list[DropGroup] = field(default_factory=list)
    warnings: tuple[str, ...] = ()

    def text(self, *, max_groups: int = 20) -> str:
        lines = [
            f"flows: {self.flows_seen} seen, {self.flows_judged} judged "
            f"({self.replies_skipped} replies and {self.other_skipped} non-traffic events not judged)",
            f"would drop: {self.dropped} flows ({self.dropped_by_deny_rule} by deny rules, "
            f"{self.dropped_by_default_deny} by default deny; {self.already_dropped} were dropped "
            f"in the recording already)",
            f"allowed: {self.allowed} flows ({self.allowed_with_l7} only at L4: L7 rules not simulated)",
        ]
        if self.groups:
            lines.append("")
            lines.append("dropped, by subject / direction / peer / port:")
        for group in self.groups[:max_groups]:
            why = f"deny rule {group.rule}" if group.rule else "default deny"
            arrow = "->" if group.direction == EGRESS else "<-"
            lines.append(
                f"  {group.subject} {group.direction} {arrow} {group.peer} {group.port}: "
                f"{group.flows} flows, {group.connection_count} connections ({why})"
            )
            for example in group.examples:
                lines.append(f"      e.g. {_describe(example)}")
        if len(self.groups) > max_groups:
            lines.append(f"  ... {len(self.groups) - max_groups} more groups")
        for warning in self.warnings:
            lines.append(f"warning: {warning}")
        return "\n".join(lines)


def _port(l4: L4Key) -> str:
    if l4.protocol in ("ICMPv4", "ICMPv6"):
        return f"{l4.protocol}/type {l4.icmp_type}"
    if l4.protocol:
        return f"{l4.protocol}/{l4.port}"
    return "-"


def _five_tuple(flow: Any, l4: L4Key) -> tuple[str, str, str, int, int]:
    ip = getattr(flow, "IP", None)
    sport = 0
    layer = getattr(flow.l4, l4.protocol, None) if l4.protocol and flow.l4 is not None else None
    if layer is not None and hasattr(layer, "source_port"):
        sport = layer.source_port
    return (ip.source if ip else "", ip.destination if ip else "", l4.protocol, sport, l4.port)


def _describe(flow: Any) -> str:
    ip = getattr(flow, "IP", None)
    t = flow.time.isoformat() if getattr(flow, "time", None) else "?"
    src = ip.source if ip else "?"
    dst = ip.destination if ip else "?"
    l4 = l4_key(flow)
    return f"{t} {src} -> {dst} {_port(l4)} (recorded {flow.verdict})"


def _is_recorded_drop(flow: Any) -> bool:
    return flow.verdict in ("DROPPED", 2)


def simulate(
    policies: PolicySet | Iterable[Mapping[str, Any] | None],
    flows: Iterable[Any],
    *,
    examples: int = 3,
    resolver: IdentityResolver | None = None,
    **policy_options: Any,
) -> SimulationReport:
    """Judge every flow against ``policies`` and group what would be dropped.

    ``policies`` is a :class:`PolicySet` or policy dicts (then ``policy_options`` go to
    :class:`PolicySet`). Groups are sorted by flow count, largest first.
    """
    policy_set = (
        policies if isinstance(policies, PolicySet) else PolicySet(policies, **policy_options)
    )
    resolver = resolver or IdentityResolver()
    report = SimulationReport(warnings=policy_set.warnings)
    groups: dict[tuple[str, str, str, str, Decision, str], DropGroup] = {}
    for flow in flows:
        report.flows_seen += 1
        verdict: Verdict = policy_set.verdict(flow)
        if verdict.decision is Decision.NOT_JUDGED:
            if verdict.reason == "reply":
                report.replies_skipped += 1
            else:
                report.other_skipped += 1
            continue
        report.flows_judged += 1
        point = verdict.dropped_at
        if point is None:
            report.allowed += 1
            if any(p is not None and p.l7 for p in (verdict.egress, verdict.ingress)):
                report.allowed_with_l7 += 1
            continue
        report.dropped += 1
        if point.decision is Decision.DENIED_RULE:
            report.dropped_by_deny_rule += 1
        else:
            report.dropped_by_default_deny += 1
        if _is_recorded_drop(flow):
            report.already_dropped += 1
        src_subject, src_peer, dst_subject, dst_peer = resolver.ends(flow)
        if point.direction == EGRESS:
            subject = src_subject.id if src_subject else src_peer.key
            peer = dst_peer.key
        else:
            subject = dst_subject.id if dst_subject else dst_peer.key
            peer = src_peer.key
        l4 = l4_key(flow)
        rule = str(point.rule) if point.rule else ""
        key = (subject, point.direction, peer, _port(l4), point.decision, rule)
        group = groups.get(key)
        if group is None:
            group = groups[key] = DropGroup(
                subject, point.direction, peer, _port(l4), point.decision, rule
            )
        group.flows += 1
        group.connections.add(_five_tuple(flow, l4))
        if len(group.examples) < examples:
            group.examples.append(flow)
    report.groups = sorted(groups.values(), key=lambda g: (-g.flows, g.subject, g.peer, g.port))
    return report


def drop_warnings(
    policy: Mapping[str, Any],
    flows: Iterable[Any],
    *,
    current: Mapping[str, Any] | None = None,
    part_of_anomaly: Callable[[Any], bool] | None = None,
    limit: int = 4,
) -> tuple[str, ...]:
    """Warnings for a proposal that would drop normal traffic: replay ``flows`` except those
    ``part_of_anomaly`` (what the proposal is meant to stop) through ``policy`` and describe what
    it drops, e.g. "would drop 1,234 normal flows: monitoring/prometheus -> shop/catalog
    TCP/9090 (1,200), ...". With ``current`` (the policy the proposal replaces), only flows that
    ``current`` lets through count: a drop the cluster already makes is not the proposal's."""
    kept = [f for f in flows if part_of_anomaly is None or not part_of_anomaly(f)]
    if current is not None:
        before = PolicySet([current])
        kept = [f for f in kept if before.verdict(f).dropped_at is None]
    report = simulate([policy], kept, examples=0)
    if not report.dropped:
        return ()
    shown = []
    for group in report.groups[:limit]:
        ends = (
            (group.subject, group.peer)
            if group.direction == EGRESS
            else (group.peer, group.subject)
        )
        shown.append(f"{ends[0]} -> {ends[1]} {group.port} ({group.flows:,})")
    more = len(report.groups) - limit
    tail = f" and {more} more peer/port group{'s' * (more != 1)}" if more > 0 else ""
    return (
        f"would drop {report.dropped:,} normal flow{'s' * (report.dropped != 1)} "
        f"(not part of the anomaly): {', '.join(shown)}{tail}",
    )

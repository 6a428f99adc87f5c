"""Slack messages for anomalies (incoming webhooks, Block Kit) and the sender.

A message covers one group of anomalies: up to ``detail_limit`` are shown in full (what
happened, which workload, why, example flows, a link); a bigger group becomes a *digest* that
counts every anomaly in it, lists the most severe and links to the rest, so that a burst of
anomalies is a few messages, never hundreds, and nothing is left out of the count.

An anomaly that was still going on when its message went out gets a second, short one when it
is over (:func:`over_message`, grouped the same way): the channel sees it fire, then end. An
anomaly that is part of an incident names it, its attacker and its victims.

New changes (ordinary-looking new traffic waiting for review, not alerts) are announced in
their own message (:func:`change_message`), marked as information.

Conditions of the models rather than of the traffic (a model that no longer fits an identity,
failing scheduled retraining) are short notices (:func:`notice`): one when the condition
starts, one when it ends (:mod:`netwarden.detector.alerts.notices`).

Block Kit limits respected here: 50 blocks per message, 150 characters in a header, 3000 in a
section's text, 10 fields of 2000 characters.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import httpx

from netwarden.detector.alerts.alertmanager import (
    anomaly_url,
    change_url,
    listed,
    score_plot_url,
)
from netwarden.detector.alerts.outbox import post_json
from netwarden.detector.change_store import ChangeRecord
from netwarden.detector.explain import examples_text
from netwarden.detector.lifecycle import RESOLVED, SUPPRESSED
from netwarden.detector.severity import severity
from netwarden.detector.store import AnomalyRecord

__all__ = ["MAX_DETAIL", "SlackSender", "change_message", "message", "notice", "over_message"]

#: The most anomalies one message shows in full (each takes up to 6 of Slack's 50 blocks).
MAX_DETAIL: Final = 8
_HEADER_CHARS: Final = 150
_SECTION_CHARS: Final = 3000
_FIELD_CHARS: Final = 2000
_TOP_REASONS: Final = 3
_ICON: Final = {"critical": ":rotating_light:", "warning": ":warning:"}

Block = dict[str, Any]
#: The victims of an anomaly's incident (none for one that is not an attacker's).
Victims = Callable[[AnomalyRecord], Sequence[str]]


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _esc(text: str) -> str:
    """Slack mrkdwn needs only these three escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _when(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _mrkdwn(text: str, limit: int = _SECTION_CHARS) -> dict[str, str]:
    return {"type": "mrkdwn", "text": _clip(text, limit)}


def _section(text: str) -> Block:
    return {"type": "section", "text": _mrkdwn(text)}


def _order(anomalies: Sequence[AnomalyRecord]) -> list[AnomalyRecord]:
    """Most severe first, then highest score, then oldest."""
    return sorted(
        anomalies,
        key=lambda a: (
            severity(a.peak_score) != "critical",
            -a.peak_score,
            a.first_window_start,
            a.id,
        ),
    )


def _examples(a: AnomalyRecord) -> str:
    top = a.reasons[0].feature.split("_", 1)[0] if a.reasons else "egress"
    sides = [top] + [s for s in ("egress", "ingress") if s != top]
    lines = [examples_text(a.examples, s) for s in sides if s in ("egress", "ingress")]
    return "\n".join(_esc(line) for line in lines if line)


def _no_victims(_: AnomalyRecord) -> Sequence[str]:
    return ()


def _detail(a: AnomalyRecord, public_url: str, victims: Victims = _no_victims) -> list[Block]:
    level = severity(a.peak_score)
    link = anomaly_url(public_url, a.id)
    what = a.summary or f"{a.workload} behaved unusually on the network"
    status = "ongoing" if a.ongoing else f"ended {_when(a.last_window_end)}"
    blocks: list[Block] = [
        _section(
            f"{_ICON[level]} *{level.upper()}* · *{_esc(a.workload)}* in namespace "
            f"`{_esc(a.namespace)}`\n*What happened:* {_esc(what)}"
        ),
        {
            "type": "section",
            "fields": [
                _mrkdwn(f"*Workload*\n`{_esc(a.identity)}`", _FIELD_CHARS),
                _mrkdwn(
                    f"*Score*\n{a.peak_score:.3g} (threshold {a.peak_threshold:.3g})", _FIELD_CHARS
                ),
                _mrkdwn(f"*Since*\n{_when(a.first_window_start)}", _FIELD_CHARS),
                _mrkdwn(f"*Windows*\n{a.window_count}, {status}", _FIELD_CHARS),
            ],
        },
    ]
    if a.incident:
        hit = sorted(victims(a))
        blocks.append(
            _section(
                f"*Incident* `{_esc(a.incident)}`: attacker `{_esc(a.identity)}`"
                + (f", victims {_esc(listed(hit))}" if hit else ", no victims so far")
            )
        )
    reasons = [r.text for r in a.reasons[:_TOP_REASONS] if r.text]
    if reasons:
        blocks.append(_section("*Why*\n" + "\n".join(f"• {_esc(r)}" for r in reasons)))
    flows = _examples(a)
    if flows:
        blocks.append(_section(f"*Example flows*\n{flows}"))
    model = "fallback model " if a.fallback else "model "
    blocks.append(
        {
            "type": "context",
            "elements": [
                _mrkdwn(
                    f"<{link}|Anomaly #{a.id}> · <{score_plot_url(public_url, a.identity)}|score "
                    f"plot> · {model}`{_esc(a.model)}` · netwarden"
                )
            ],
        }
    )
    return blocks


def _digest(anomalies: list[AnomalyRecord], public_url: str, lines: int) -> list[Block]:
    n = len(anomalies)
    levels = Counter(severity(a.peak_score) for a in anomalies)
    spaces = Counter(a.namespace for a in anomalies).most_common(5)
    first = min(a.first_window_start for a in anomalies)
    last = max(a.first_window_start for a in anomalies)
    blocks: list[Block] = [
        _section(
            f"*{n} anomalies* starting between {_when(first)} and {_when(last)}: "
            f"{levels['critical']} critical, {levels['warning']} warning.\n"
            "Namespaces: "
            + ", ".join(f"`{_esc(ns)}` ({k})" for ns, k in spaces)
            + (" and more" if len({a.namespace for a in anomalies}) > len(spaces) else "")
        )
    ]
    rows = []
    for a in anomalies[:lines]:
        level = severity(a.peak_score)
        what = _clip(a.summary or "unusual network behaviour", 160)
        rows.append(
            f"{_ICON[level]} `{_esc(a.identity)}` {_esc(what)} "
            f"<{anomaly_url(public_url, a.id)}|#{a.id}>"
        )
    blocks.append(_section("\n".join(rows)))
    if n > lines:
        everything = f"{public_url.rstrip('/')}/api/v1/anomalies?state=open"
        blocks.append(_section(f"…and {n - lines} more: <{everything}|open anomalies>"))
    blocks.append(
        {
            "type": "context",
            "elements": [
                _mrkdwn(
                    "Many anomalies at once: sent as one digest (grouping and Slack rate limit) · netwarden"
                )
            ],
        }
    )
    return blocks


def message(
    anomalies: Sequence[AnomalyRecord],
    *,
    public_url: str,
    detail_limit: int = 3,
    digest_lines: int = 10,
    victims: Victims = _no_victims,
) -> dict[str, Any]:
    """The webhook payload for one group of anomalies (``text`` is the notification's
    fallback; ``blocks`` what Slack shows); ``victims`` names the victims of an attacker's
    incident."""
    if not anomalies:
        raise ValueError("a Slack message needs at least one anomaly")
    if not 1 <= detail_limit <= MAX_DETAIL:
        raise ValueError(f"detail_limit must be in [1, {MAX_DETAIL}], got {detail_limit}")
    ordered = _order(anomalies)
    n, top = len(ordered), ordered[0]
    crit = sum(severity(a.peak_score) == "critical" for a in ordered)
    if n == 1:
        level = severity(top.peak_score)
        title = f"{_ICON[level]} Network anomaly in {top.identity}"
        text = f"Network anomaly ({level}) in {top.identity}: {top.summary}"
    else:
        title = f":rotating_light: {n} network anomalies ({crit} critical)"
        text = f"{n} network anomalies ({crit} critical), e.g. {top.identity}: {top.summary}"
    blocks: list[Block] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": _clip(title, _HEADER_CHARS), "emoji": True},
        }
    ]
    if n <= detail_limit:
        for i, a in enumerate(ordered):
            if i:
                blocks.append({"type": "divider"})
            blocks.extend(_detail(a, public_url, victims))
    else:
        blocks.extend(_digest(ordered, public_url, digest_lines))
    return {"text": _clip(_esc(text), _SECTION_CHARS), "blocks": blocks}


def _how_it_ended(a: AnomalyRecord) -> str:
    if a.state == RESOLVED:
        return f"resolved by {_esc(a.state_actor or 'someone')}"
    if a.state == SUPPRESSED:
        return f"ended while suppressed by {_esc(a.state_actor or 'someone')}"
    return "ended"


def over_message(
    anomalies: Sequence[AnomalyRecord], *, public_url: str, lines: int = 10
) -> dict[str, Any]:
    """The webhook payload telling that these anomalies (each announced earlier) are over:
    one line each, the most severe first, at most ``lines`` of them and a count of the rest."""
    if not anomalies:
        raise ValueError("a Slack message needs at least one anomaly")
    ordered = _order(anomalies)
    n, top = len(ordered), ordered[0]
    if n == 1:
        title = f":white_check_mark: Network anomaly over in {top.identity}"
        text = f"Network anomaly over in {top.identity} (#{top.id})"
    else:
        title = f":white_check_mark: {n} network anomalies over"
        text = f"{n} network anomalies over, e.g. {top.identity} (#{top.id})"
    rows = [
        f"{_ICON[severity(a.peak_score)]} `{_esc(a.identity)}` {_how_it_ended(a)} "
        f"{_when(a.last_window_end)} after {a.window_count} window(s), peak score "
        f"{a.peak_score:.3g} <{anomaly_url(public_url, a.id)}|#{a.id}>"
        for a in ordered[:lines]
    ]
    if n > lines:
        rows.append(f"…and {n - lines} more")
    return {
        "text": _clip(_esc(text), _SECTION_CHARS),
        "blocks": [
            {
                "type": "header",
                "text": {"type": "plain_text", "text": _clip(title, _HEADER_CHARS), "emoji": True},
            },
            _section("\n".join(rows)),
            {
                "type": "context",
                "elements": [_mrkdwn("Announced earlier in this channel · netwarden")],
            },
        ],
    }


def _change_lines(c: ChangeRecord, edges: int) -> str:
    rows = [
        f"• `{_esc(e['identity'])}` {'to' if e['direction'] == 'egress' else 'from'} "
        f"`{_esc(e['peer'])}`"
        + (f" {_esc(e['port'])}" if e["port"] else "")
        + f" ({e['flows']} flows)"
        for e in c.edges[:edges]
    ]
    more = len(c.edges) + c.edges_omitted - len(rows)
    if more > 0:
        rows.append(f"…and {more} more")
    return "\n".join(rows)


def change_message(
    changes: Sequence[ChangeRecord], *, public_url: str, detail_limit: int = 5, edges: int = 5
) -> dict[str, Any]:
    """The webhook payload announcing new changes: information, not an alert. Up to
    ``detail_limit`` are shown with their first ``edges`` edges, the rest listed by name."""
    if not changes:
        raise ValueError("a Slack message needs at least one change")
    ordered = sorted(changes, key=lambda c: (c.first_seen, c.change_id))
    n, top = len(ordered), ordered[0]
    if n == 1:
        what = top.description.split(",")[0].split(":")[0]  # "new workload shop/reviews"
        title = f":information_source: Change in the cluster: {what}"
        text = f"Change in the cluster (not an alert): {top.description}"
    else:
        title = f":information_source: {n} changes in the cluster"
        text = f"{n} changes in the cluster (not alerts), e.g. {top.description}"
    blocks: list[Block] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": _clip(title, _HEADER_CHARS), "emoji": True},
        }
    ]
    for i, c in enumerate(ordered[:detail_limit]):
        if i:
            blocks.append({"type": "divider"})
        link = change_url(public_url, c.change_id)
        blocks.append(
            _section(
                f"*{_esc(c.description)}*\nfirst seen {_when(c.first_seen)}\n"
                + _change_lines(c, edges)
            )
        )
        blocks.append(
            {
                "type": "context",
                "elements": [
                    _mrkdwn(
                        f"<{link}|Change {c.change_id}> · accept (its policy amendment is "
                        f"proposed) or reject (it becomes an anomaly): POST {link}/accept or "
                        "/reject"
                    )
                ],
            }
        )
    if n > detail_limit:
        rest = ", ".join(
            f"<{change_url(public_url, c.change_id)}|{_esc(c.subject)}>"
            for c in ordered[detail_limit : detail_limit + 20]
        )
        blocks.append(_section(f"…and {n - detail_limit} more: {rest}"))
    blocks.append(
        {
            "type": "context",
            "elements": [
                _mrkdwn(
                    "New traffic that looks like ordinary service traffic, kept out of the "
                    "baseline until someone accepts it · netwarden"
                )
            ],
        }
    )
    return {"text": _clip(_esc(text), _SECTION_CHARS), "blocks": blocks}


def notice(
    *, title: str, text: str, lines: Sequence[str], link: tuple[str, str] | None, footer: str
) -> dict[str, Any]:
    """The webhook payload of a short notice: a header (``title``, may hold an emoji code),
    ``lines`` (plain text, escaped here; `backticks` stay code), a ``(url, label)`` link and a
    ``footer``; ``text`` is the notification's fallback."""
    context = _esc(footer) if link is None else f"<{link[0]}|{_esc(link[1])}> · {_esc(footer)}"
    return {
        "text": _clip(_esc(text), _SECTION_CHARS),
        "blocks": [
            {
                "type": "header",
                "text": {"type": "plain_text", "text": _clip(title, _HEADER_CHARS), "emoji": True},
            },
            _section("\n".join(_esc(line) for line in lines) or _esc(text)),
            {"type": "context", "elements": [_mrkdwn(context)]},
        ],
    }


class SlackSender:
    """POSTs outbox payloads to one Slack incoming webhook."""

    def __init__(self, url: str, http: httpx.Client, *, timeout: float) -> None:
        self.url = url
        self._http = http
        self._timeout = timeout

    def send(self, payload: dict[str, Any]) -> None:
        """Deliver, or raise :class:`netwarden.detector.alerts.outbox.DeliveryError` (a 429 carries
        Slack's ``Retry-After``)."""
        post_json(self._http, self.url, payload, timeout=self._timeout)

"""Where attacks and changes go in a generated range, so that a test day fits them all.

Planning, in order:

1. *Persistent* changes (``node_drain``, ``new_service``, ``new_saas_vendor``,
   ``dns_provider_change``: they last to the end of the range) start in the last part of the
   range, one step apart (5 % of the range, at least 20 min), the last one at least 10 % of the
   range (20 min) before the end so it is seen for a while. ``node_drain`` goes first: the node
   stays cordoned, so pods that later changes create avoid it, and every pod it moves exists
   from the start.
2. Everything else is *transient*: every attack (fast ones 3-15 min, low-and-slow ones 60-90
   min) and the transient changes (``new_job`` 20-40 min, ``surge`` 45-60 min plus its
   scale-down, ``debug_pod`` 10-20 min). They are shuffled and laid end to end, with gaps of
   random size around an even share, between 10 % into the range and the first persistent
   change; durations shrink towards their minimum if the range is tight, and a range too short
   for the minimums is an error naming the hours needed. A surge comes from users (a campaign,
   a push notification), so it takes the place in that order which puts it nearest the busiest
   time of the cluster's load curve.

So nothing overlaps but the persistent changes among themselves (benign changes do pile up in
real clusters); an attack never overlaps a change, which keeps every label's flows its own.
Changes start on a minute boundary of the range, where the generator's chunks start, because
some of them (a drain) change the cluster between chunks. 24 h fit every attack and every
change with hours to spare. Without changes and low-and-slow attacks, ``generate`` keeps the
original placement of :func:`~.attacks.plan_attacks`, so existing files stay byte-identical.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from .attacks import Attack, max_duration_ns, min_duration_ns
from .change_new import debug_pod, new_job, new_saas_vendor, new_service
from .change_shift import SURGE_TAIL_NS, dns_provider_change, node_drain, surge
from .changes import Change, ChangeContext

__all__ = ["CHANGES", "PERSISTENT", "plan_change", "plan_day"]

CHANGES: tuple[str, ...] = (
    "new_service",
    "new_saas_vendor",
    "new_job",
    "surge",
    "debug_pod",
    "node_drain",
    "dns_provider_change",
)
#: Changes that last to the end of the range, in the order they are placed.
PERSISTENT: tuple[str, ...] = (
    "node_drain",
    "new_service",
    "new_saas_vendor",
    "dns_provider_change",
)

_S = 1_000_000_000
_MIN = 60 * _S
_PLANNERS: dict[str, Callable[[ChangeContext, int, int], Change]] = {
    "new_service": new_service,
    "new_saas_vendor": new_saas_vendor,
    "new_job": new_job,
    "surge": surge,
    "debug_pod": debug_pod,
    "node_drain": node_drain,
    "dns_provider_change": dns_provider_change,
}
# transient changes: (shortest, longest) span in minutes, scale-down included
_SPANS = {"new_job": (20, 40), "debug_pod": (10, 20), "surge": (45, 60)}


def plan_change(name: str, ctx: ChangeContext, start_ns: int, end_ns: int) -> Change:
    """Plan one change of kind ``name`` over [start, end) (end: the range's end if it lasts)."""
    planner = _PLANNERS.get(name)
    if planner is None:
        raise ValueError(f"unknown change {name!r}; valid: {', '.join(CHANGES)}")
    return planner(ctx, start_ns, end_ns)


def _span(name: str, rnd: random.Random) -> tuple[int, int]:
    """(drawn span, shortest span) of a transient item in ns."""
    if name in _SPANS:
        lo, hi = _SPANS[name]
        tail = SURGE_TAIL_NS if name == "surge" else 0
        return int(rnd.uniform(lo, hi)) * _MIN + tail, lo * _MIN + tail
    lo_ns, hi_ns = min_duration_ns(name), max_duration_ns(name)
    return int(rnd.uniform(lo_ns / _S, hi_ns / _S)) * _S, lo_ns


def _segments(range_ns: int, n_persistent: int) -> tuple[int, int, int]:
    """(transient start, first persistent start, persistent step) as offsets in the range."""
    head = range_ns // 10
    if not n_persistent:
        return head, range_ns - range_ns // 20, 0
    step = max(20 * _MIN, range_ns // 20)
    tail = max(20 * _MIN, range_ns // 10)
    return head, range_ns - tail - (n_persistent - 1) * step, step


def plan_day(
    attacks: Sequence[str],
    changes: Sequence[str],
    start_ns: int,
    end_ns: int,
    rnd: random.Random,
    plan_attack: Callable[[str, int, int], Attack],
    plan_one_change: Callable[[str, int, int], Change],
    load: Callable[[int], float] | None = None,
) -> tuple[list[Attack], list[Change]]:
    """Place and plan ``attacks`` and ``changes`` in [start, end) (see the module doc)."""
    persistent = [c for c in PERSISTENT if c in changes]
    transient = [("attack", a) for a in attacks] + [
        ("change", c) for c in changes if c not in PERSISTENT
    ]
    spans = [_span(name, rnd) for _, name in transient]
    head, p0, step = _segments(end_ns - start_ns, len(persistent))
    room = p0 - head - len(transient) * _MIN - (5 * _MIN if persistent else 0)
    need = sum(lo for _, lo in spans)
    if room < need or (persistent and p0 < head):
        hours = _hours_needed(need + len(transient) * _MIN, len(persistent))
        raise ValueError(
            f"a {(end_ns - start_ns) / 3600e9:g} h range is too short for {len(attacks)} "
            f"attack(s) and {len(changes)} change(s): use hours >= {hours:.2f}"
        )
    drawn = sum(d for d, _ in spans)
    if drawn > room:  # shrink towards the minimums, keeping their order
        f = (room - need) / (drawn - need)
        spans = [(lo + int((d - lo) * f) // _S * _S, lo) for d, lo in spans]
    order = list(range(len(transient)))
    rnd.shuffle(order)
    free = room - sum(d for d, _ in spans)
    weights = [rnd.uniform(0.5, 1.5) for _ in order]
    gaps = [int(free * w / (sum(weights) + 1.0)) for w in weights]
    if load is not None and ("change", "surge") in transient:
        order = _busiest(
            order, transient.index(("change", "surge")), spans, gaps, start_ns + head, load
        )

    planned_a: list[Attack] = []
    planned_c: list[Change] = []
    cursor = start_ns + head
    for gap, i in zip(gaps, order):
        kind, name = transient[i]
        cursor += gap
        t0 = _align(cursor, start_ns, _S if kind == "attack" else _MIN)
        t1 = t0 + spans[i][0]
        if kind == "attack":
            planned_a.append(plan_attack(name, t0, t1))
        else:
            planned_c.append(plan_one_change(name, t0, t1))
        cursor = t1
    for k, name in enumerate(persistent):
        t0 = _align(start_ns + p0 + k * step, start_ns, _MIN)
        planned_c.append(plan_one_change(name, t0, end_ns))
    return planned_a, planned_c


def _busiest(
    order: list[int],
    surge: int,
    spans: list[tuple[int, int]],
    gaps: list[int],
    origin: int,
    load: Callable[[int], float],
) -> list[int]:
    """``order`` with the surge moved to the place where the load at its middle is highest."""
    rest = [i for i in order if i != surge]
    best, best_load = order, -1.0
    for k in range(len(rest) + 1):
        trial = [*rest[:k], surge, *rest[k:]]
        t = origin + sum(gaps[: k + 1]) + sum(spans[i][0] for i in trial[:k])
        value = load(t + spans[surge][0] // 2)
        if value > best_load:
            best, best_load = trial, value
    return best


def _align(t: int, origin: int, unit: int) -> int:
    """``t`` rounded up to ``origin`` plus a whole number of ``unit``."""
    return origin + -(-(t - origin) // unit) * unit


def _hours_needed(transient_ns: int, n_persistent: int) -> float:
    hours = 0.25
    while hours < 24 * 30:
        range_ns = int(hours * 3600) * _S
        head, p0, _ = _segments(range_ns, n_persistent)
        if p0 - head - (5 * _MIN if n_persistent else 0) >= transient_ns:
            return hours
        hours += 0.25
    return hours

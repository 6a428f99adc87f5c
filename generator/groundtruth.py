"""Which flows of an attacked day are the attack's, exactly.

The generator keeps a day's normal traffic identical with and without attacks (same seed, same
start), so the flows of the attacked day that its clean twin lacks are the attack's flows. Used
by the remediation benchmark and its tests to count attack connections a policy blocks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from netwarden.ingest.reader import read_flows

__all__ = ["flow_key", "split_attack_flows"]


def flow_key(f: Any) -> tuple:
    """What tells two flow events apart (time, addresses, ports, direction, node, verdict)."""
    p = (f.l4.TCP or f.l4.UDP) if f.l4 else None
    return (
        f.time,
        f.IP.source if f.IP else "",
        f.IP.destination if f.IP else "",
        p.source_port if p else 0,
        p.destination_port if p else 0,
        f.traffic_direction,
        f.node_name,
        f.is_reply,
        f.verdict,
    )


def split_attack_flows(attacked: Path, clean: Path) -> Iterator[tuple[Any, bool]]:
    """Every flow of ``attacked`` with True when it is an attack flow (absent from ``clean``)."""
    twin = Counter(flow_key(f) for f in read_flows([clean]))
    for f in read_flows([attacked]):
        key = flow_key(f)
        if twin[key] > 0:
            twin[key] -= 1
            yield f, False
        else:
            yield f, True

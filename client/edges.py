"""A window's edges as a DataFrame: the input of :func:`netwarden.client.plots.service_graph`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import pandas as pd

from netwarden.ingest.windows import ClosedWindow

__all__ = ["EDGE_COLUMNS", "window_edges"]

EDGE_COLUMNS: Final = ["window_start", "source", "target", "port", "flows", "failed"]


def window_edges(windows: Iterable[ClosedWindow]) -> pd.DataFrame:
    """One row per (window, client, server, port) seen from the client's side (egress), so a
    connection observed at both ends is counted once: ``failed`` counts its unanswered SYNs,
    resets and drops."""
    rows = [
        {
            "window_start": w.start_datetime(),
            "source": w.identity,
            "target": e.peer,
            "port": e.port_text,
            "flows": e.flows,
            "failed": max(e.syns - e.syn_acks, 0) + e.resets + e.drops,
        }
        for w in windows
        for e in w.edges(True)
    ]
    return pd.DataFrame(rows, columns=EDGE_COLUMNS)

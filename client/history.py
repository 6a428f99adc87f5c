"""The window history offline: what a service scored, read from its Parquet files without it.

A service keeps its history under ``<data_dir>/history`` (``windows/date=YYYY-MM-DD/*.parquet``,
one row per scored identity-window with every feature and the verdict); copy that folder to a
laptop and read it here. The reading is :mod:`netwarden.storage.history`'s (the same code
retraining uses), so both see the same rows. DuckDB reads the same files directly::

    duckdb.sql("SELECT * FROM read_parquet('history/windows/*/*.parquet', hive_partitioning=1)")
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import pandas as pd

from netwarden.storage import history

__all__ = ["read_history", "read_history_flows"]


def _root(root: str | Path) -> Path:
    path = Path(root).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"no history at {path}: give the service's history folder "
            "(<data_dir>/history) or its windows folder"
        )
    return path


def read_history(
    root: str | Path,
    start: datetime | None = None,
    end: datetime | None = None,
    identities: Iterable[str] | None = None,
) -> pd.DataFrame:
    """Window rows with ``start <= window_start < end`` (either may be None) of
    ``identities`` (all when None), sorted by window start and identity; an empty frame with
    the columns when there are none. Day folders outside the range are not read."""
    frame: pd.DataFrame = history.read_windows(_root(root), start, end, identities)
    return frame


def read_history_flows(
    root: str | Path, start: datetime | None = None, end: datetime | None = None
) -> pd.DataFrame:
    """The compact flow records the service kept (``history.flows: true``) in ``[start,
    end)``, sorted by time."""
    frame: pd.DataFrame = history.read_flows(_root(root), start, end)
    return frame

"""The model's view of a window: which columns, in which order, transformed how.

Columns are every window feature (``egress_*`` then ``ingress_*``, see
:func:`netwarden.ingest.features.feature_columns`) plus two time-of-day columns (sine and
cosine of the hour), so that a quiet night and a busy noon are both normal for a workload with a
daily cycle. Counts are heavy-tailed, so count-like features enter as ``log1p``; shares and
entropies, already bounded, enter as they are. The shape of queried DNS names enters only
beyond what readable names reach (:data:`NAME_SHAPE_FLOORS`): a workload that starts resolving
names (new pods looking up their dependencies) is not an anomaly for the length of
``catalog.shop.svc.cluster.local``; names of encoded data are. Robust scaling (median/IQR)
happens inside the stored pipeline, fitted per model.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

import numpy as np

from netwarden.ingest.features import FEATURE_NAMES, feature_columns

__all__ = [
    "DEVIATION_FLOOR",
    "LOG_COLUMNS",
    "MODEL_COLUMNS",
    "TIME_COLUMNS",
    "data_hash",
    "matrix",
    "raw_matrix",
]

TIME_COLUMNS: Final[tuple[str, ...]] = ("time_of_day_sin", "time_of_day_cos")
MODEL_COLUMNS: Final[tuple[str, ...]] = (*feature_columns(), *TIME_COLUMNS)
_BOUNDED: Final = frozenset(
    name for name in FEATURE_NAMES if name.endswith(("_share", "_entropy", "_entropy_mean"))
)
#: Columns that enter the model as log1p(value).
LOG_COLUMNS: Final[frozenset[str]] = frozenset(
    col for col in feature_columns() if col.split("_", 1)[1] not in _BOUNDED
)
_LOG_MASK: Final = np.array([col in LOG_COLUMNS for col in MODEL_COLUMNS])
#: Readable-name levels of the DNS name-shape features, subtracted before use (the part above
#: counts): cluster names with their search-path suffixes run to about 40 characters on average
#: and 64 at most (``o4507.ingest.sentry.io.checkout.svc.cluster.local``); readable names have a
#: character entropy of 2.8-3.8 bits, base32/hex labels 4.5 and more.
NAME_SHAPE_FLOORS: Final[dict[str, float]] = {
    "dns_qname_len_mean": 40.0,
    "dns_qname_len_max": 64.0,
    "dns_qname_entropy_mean": 3.9,
}
_FLOORS: Final = np.array(
    [NAME_SHAPE_FLOORS.get(col.split("_", 1)[1], 0.0) if col not in TIME_COLUMNS else 0.0
     for col in MODEL_COLUMNS]
)  # fmt: skip
_FLOOR_MASK: Final = _FLOORS > 0


def _floor(col: str) -> float:
    if col in TIME_COLUMNS:
        return np.inf  # time of day is context, never a deviation by itself
    if col in LOG_COLUMNS:
        return 0.5  # log1p units: a factor of about 1.65
    if col.endswith("_share"):
        return 0.1  # 10 percentage points
    return 1.0  # entropies, in bits


#: Smallest spread the deviation score divides by, per column (transformed units), so that a
#: column constant in training still has a finite, meaningful scale.
DEVIATION_FLOOR: Final = np.array([_floor(col) for col in MODEL_COLUMNS])


def _time_of_day(start: datetime) -> tuple[float, float]:
    hours = start.hour + start.minute / 60 + start.second / 3600
    angle = 2 * math.pi * hours / 24
    return math.sin(angle), math.cos(angle)


def raw_matrix(rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Rows (``window_start`` plus every feature column) -> untransformed values, float64."""
    out = np.empty((len(rows), len(MODEL_COLUMNS)), dtype=np.float64)
    cols = feature_columns()
    for i, row in enumerate(rows):
        out[i, : len(cols)] = [row[c] for c in cols]
        out[i, len(cols) :] = _time_of_day(row["window_start"])
    return out


def matrix(rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """The model input: :func:`raw_matrix` with count columns as log1p."""
    return transform(raw_matrix(rows))


def transform(raw: np.ndarray) -> np.ndarray:
    out = raw.copy()
    out[:, _FLOOR_MASK] = np.maximum(out[:, _FLOOR_MASK] - _FLOORS[_FLOOR_MASK], 0.0)
    out[:, _LOG_MASK] = np.log1p(np.maximum(out[:, _LOG_MASK], 0.0))
    return out


def data_hash(raw: np.ndarray) -> str:
    """SHA-256 of the training matrix (float64, C order): identifies the data a model saw."""
    return hashlib.sha256(np.ascontiguousarray(raw, dtype=np.float64).tobytes()).hexdigest()

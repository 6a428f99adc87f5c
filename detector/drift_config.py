"""How drift is measured and judged: :class:`DriftConfig`, its defaults and valid ranges.

In a module of its own, apart from the monitor (:mod:`netwarden.detector.drift`, which needs
the model registry and scikit-learn), so that the service configuration
(:mod:`netwarden.config`, the ``drift:`` section) takes its defaults and ranges from here
without loading the models: ``netwarden db`` and ``--print-config`` read the configuration too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from netwarden.models.drift import DRIFT_COLUMNS
from netwarden.validation import check_ranges

__all__ = ["RANGES", "DriftConfig"]

#: option -> (lowest, highest) allowed; the one place the valid values are declared.
RANGES: Final[dict[str, tuple[float, float]]] = {
    "horizon_seconds": (600.0, 30 * 86400.0),
    "buckets": (2, 96),
    "min_windows": (30, 1_000_000),
    "psi_alert": (0.01, 10.0),
    "psi_clear": (0.0, 10.0),
    "above_share_alert": (1e-4, 1.0),
    "above_ratio": (1.0, 1e6),
    "min_above": (1, 1_000_000),
    "top_features": (1, len(DRIFT_COLUMNS)),
    "metric_identities": (0, 10_000),
    "max_identities": (1, 10_000_000),
}


@dataclass(frozen=True)
class DriftConfig:
    """How drift is measured and judged (see :mod:`netwarden.detector.drift` for why these numbers).

    Parameters
    ----------
    horizon_seconds:
        How far back (event time) live windows are counted (default 24 h: a whole daily cycle).
    buckets:
        Steps the horizon slides in (default 8: 3 h each, so between 21 and 24 h are counted).
    min_windows:
        Windows an identity needs in the horizon before it is judged (default 240).
    psi_alert, psi_clear:
        Score PSI from which the model no longer fits, and under which it fits again.
    above_share_alert, above_ratio, min_above:
        The share of windows above the threshold that says the same: at least
        ``above_share_alert`` and ``above_ratio`` times the training share, ``min_above``
        windows at least.
    top_features:
        Drifting features named per identity (alert, API summary, metrics).
    metric_identities:
        Identities with ``netwarden_drift_psi`` and ``netwarden_drift_score_psi`` series: the
        most drifting ones, so the series stay bounded however large the cluster.
    max_identities:
        Identities tracked at most; past it the one quiet longest is forgotten.
    """

    horizon_seconds: float = 86400.0
    buckets: int = 8
    min_windows: int = 240
    psi_alert: float = 0.25
    psi_clear: float = 0.1
    above_share_alert: float = 0.01
    above_ratio: float = 10.0
    min_above: int = 5
    top_features: int = 3
    metric_identities: int = 50
    max_identities: int = 20_000

    def __post_init__(self) -> None:
        check_ranges(self, RANGES)
        if self.psi_clear > self.psi_alert:
            raise ValueError(
                f"psi_clear ({self.psi_clear:g}) must not be above psi_alert ({self.psi_alert:g})"
            )

    @property
    def bucket_seconds(self) -> float:
        return self.horizon_seconds / self.buckets

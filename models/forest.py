"""One fitted model: robust scaling + IsolationForest, a deviation detector, thresholds, baseline.

Two detectors, each calibrated on the model's training windows to the same expected rate:

* the **isolation forest** scores how easily a window is isolated among its training windows:
  unusual *combinations* (a busy night, a quiet noon, many flows but few peers);
* the **deviation** detector looks at each column alone: its robust z-score above the training
  median, ``(x - median) / max(spread, floor)`` on the transformed (log) columns, against that
  column's own limit, the largest z-score seen in training plus a margin of
  :data:`DEVIATION_MARGIN` spreads. It catches what a forest cannot: a feature that was constant
  in training (no DNS ever, no internet peer ever) gives the forest nothing to split on, so
  novelty there would be invisible to it. Per-column limits keep a naturally jumpy feature from
  masking a quiet one.

A window's score is the larger of the two, each in units of its own threshold, so the
threshold is 1.0: a score of 2.5 means 2.5 times past what training allowed.

Scores follow one direction everywhere in netwarden: **higher is more anomalous**. scikit-learn's
``score_samples`` is the opposite (higher is more normal); :func:`anomaly_score` flips it, once.
The flipped value is the anomaly score of Liu et al. (2008), between 0 and 1, where values near 1
are isolated quickly (anomalous) and values well below 0.5 are ordinary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import numpy as np
from sklearn.base import clone
from sklearn.ensemble import IsolationForest
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import RobustScaler

__all__ = ["GLOBAL", "FittedModel", "anomaly_score", "fit_model"]

GLOBAL: Final = "global"
#: How far (in robust spreads) a column must go past the largest value seen in training.
DEVIATION_MARGIN: Final = 3.0
_IQR_TO_SIGMA: Final = 1.349  # IQR of a normal distribution in standard deviations


def anomaly_score(pipeline: Pipeline, x: np.ndarray) -> np.ndarray:
    """Higher = more anomalous: the negation of scikit-learn's ``score_samples``."""
    return -pipeline.score_samples(x)


@dataclass
class FittedModel:
    """A pipeline with the threshold calibrated on its training scores and its baseline.

    ``median`` and ``spread`` are per model column, in raw units (before log/scaling): the
    baseline an explanation compares a window with.
    """

    key: str  # "identity:<ns>/<wl>", "namespace:<ns>" or "global"
    pipeline: Pipeline
    forest_threshold: float
    deviation_limits: np.ndarray  # per column, z-score units
    rows: int
    median: np.ndarray  # raw units, for explanations
    spread: np.ndarray  # raw units
    t_median: np.ndarray  # transformed units, for the deviation score
    t_scale: np.ndarray  # transformed units, spread with its floor
    train_score_quantiles: dict[str, float] = field(default_factory=dict)
    threshold: float = 1.0

    def forest_score(self, x: np.ndarray) -> np.ndarray:
        return anomaly_score(self.pipeline, x)

    def deviations(self, x: np.ndarray) -> np.ndarray:
        """Per-column robust z-scores above the median, in units of each column's limit."""
        return np.maximum((x - self.t_median) / self.t_scale, 0.0) / self.deviation_limits

    def score(self, x: np.ndarray) -> np.ndarray:
        """Combined score of transformed rows ``x``, in units of threshold (1.0)."""
        forest = self.forest_score(x) / self.forest_threshold
        return np.maximum(forest, self.deviations(x).max(axis=1))

    def contributions(self, x_row: np.ndarray) -> np.ndarray:
        """Each column's share of the verdict, in threshold units: the larger of its own
        deviation and how much the forest score falls when it alone is reset to the median
        (occlusion: one batched call of ``len(x_row)`` rows)."""
        center = self.pipeline.named_steps["scale"].center_
        probes = np.repeat(x_row[None, :], len(x_row), axis=0)
        np.fill_diagonal(probes, center)
        base = self.forest_score(x_row[None, :])[0]
        occlusion = (base - self.forest_score(probes)) / self.forest_threshold
        return np.maximum(occlusion, self.deviations(x_row[None, :])[0])


def _held_out_threshold(pipeline: Pipeline, x: np.ndarray, q: float, seed: int) -> float:
    """The forest's threshold from scores of windows it did not learn from.

    Two forests are fitted on alternate halves of the windows (in time order) and each scores
    the other half; the threshold is the ``q`` quantile of those out-of-sample scores (and never
    below the in-sample one). A forest's scores for its own training windows run slightly low,
    so an in-sample threshold would flag ordinary new windows too often.
    """
    in_sample = float(np.quantile(anomaly_score(pipeline, x), q, method="higher"))
    if len(x) < 64:
        return in_sample
    held_out = []
    for part in (0, 1):
        learn, check = x[part::2], x[1 - part :: 2]
        half = clone(pipeline).set_params(
            forest__random_state=seed + 1 + part,
            forest__max_samples=min(pipeline.named_steps["forest"].max_samples, len(learn)),
        )
        half.fit(learn)
        held_out.append(anomaly_score(half, check))
    return max(in_sample, float(np.quantile(np.concatenate(held_out), q, method="higher")))


def fit_model(
    key: str,
    x: np.ndarray,
    raw: np.ndarray,
    *,
    expected_rate: float,
    n_estimators: int,
    max_samples: int,
    seed: int,
    floor: np.ndarray,
) -> FittedModel:
    """Fit scaling + forest on transformed rows ``x``; calibrate the threshold on them.

    The threshold is the ``1 - expected_rate`` quantile of the training scores: with the default
    rate, about one window in 5,000 of normal traffic scores above it. Each tree sees only a
    subsample (``max_samples``), so in-sample scores are close to out-of-sample ones.
    """
    pipeline = Pipeline(
        [
            ("scale", RobustScaler(quantile_range=(25.0, 75.0), unit_variance=False)),
            (
                "forest",
                IsolationForest(
                    n_estimators=n_estimators,
                    max_samples=min(max_samples, len(x)),
                    contamination="auto",
                    random_state=seed,
                ),
            ),
        ]
    )
    pipeline.fit(x)
    q = 1.0 - expected_rate
    forest_threshold = _held_out_threshold(pipeline, x, q, seed)
    t_median = np.median(x, axis=0)
    t_q25, t_q75 = np.percentile(x, [25, 75], axis=0)
    t_scale = np.maximum((t_q75 - t_q25) / _IQR_TO_SIGMA, floor)
    z = np.maximum((x - t_median) / t_scale, 0.0)
    limits = z.max(axis=0) + DEVIATION_MARGIN
    q25, q75 = np.percentile(raw, [25, 75], axis=0)
    model = FittedModel(
        key=key,
        pipeline=pipeline,
        forest_threshold=forest_threshold,
        deviation_limits=limits,
        rows=len(x),
        median=np.median(raw, axis=0),
        spread=(q75 - q25) / _IQR_TO_SIGMA,
        t_median=t_median,
        t_scale=t_scale,
    )
    combined = model.score(x)
    model.train_score_quantiles = {
        k: float(np.quantile(combined, float(k))) for k in ("0.5", "0.9", "0.99", "0.999")
    }
    return model

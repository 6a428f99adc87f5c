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

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from netwarden.models.flatforest import FlatForest, FlatForestError

if TYPE_CHECKING:  # scikit-learn is imported only to fit, or to load a model without its arrays
    from sklearn.pipeline import Pipeline

__all__ = ["GLOBAL", "FittedModel", "anomaly_score", "fit_model"]

GLOBAL: Final = "global"
#: How far (in robust spreads) a column must go past the largest value seen in training.
DEVIATION_MARGIN: Final = 3.0
_IQR_TO_SIGMA: Final = 1.349  # IQR of a normal distribution in standard deviations


def anomaly_score(pipeline: Pipeline, x: np.ndarray) -> np.ndarray:
    """Higher = more anomalous: the negation of scikit-learn's ``score_samples``."""
    return -pipeline.score_samples(x)


class _LazyPipeline:
    """:attr:`FittedModel.pipeline`: the scikit-learn pipeline given, or else read on first use
    with the model's ``load_pipeline`` (a model loaded from its flat arrays scores without it)."""

    _slot: Final = "_pipeline"

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return None  # the field's default
        value = obj.__dict__.get(self._slot)
        if value is None and obj.load_pipeline is not None:
            value = obj.__dict__[self._slot] = obj.load_pipeline()
        return value

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__[self._slot] = value


@dataclass
class FittedModel:
    """A pipeline with the threshold calibrated on its training scores and its baseline.

    ``median`` and ``spread`` are per model column, in raw units (before log/scaling): the
    baseline an explanation compares a window with.

    The forest is scored from its flat arrays (:class:`~netwarden.models.flatforest.FlatForest`,
    scikit-learn's scores bit for bit without scikit-learn): ``flat`` when the model was loaded
    with them, else made from the fitted pipeline. ``pipeline`` is the scikit-learn pipeline;
    a loaded model reads it (``load_pipeline``) only if something asks for it: a row the flat
    arrays leave to scikit-learn (not float64, or not finite), or a pipeline they cannot hold.
    """

    key: str  # "identity:<ns>/<wl>", "namespace:<ns>" or "global"
    forest_threshold: float
    deviation_limits: np.ndarray  # per column, z-score units
    rows: int
    median: np.ndarray  # raw units, for explanations
    spread: np.ndarray  # raw units
    t_median: np.ndarray  # transformed units, for the deviation score
    t_scale: np.ndarray  # transformed units, spread with its floor
    train_score_quantiles: dict[str, float] = field(default_factory=dict)
    threshold: float = 1.0
    pipeline: Pipeline | None = _LazyPipeline()  # type: ignore[assignment]
    flat: FlatForest | None = field(default=None, repr=False, compare=False)
    load_pipeline: Callable[[], Pipeline] | None = field(default=None, repr=False, compare=False)

    @cached_property
    def _flat(self) -> FlatForest | None:
        if self.flat is not None:
            return self.flat
        try:
            return FlatForest.from_pipeline(self.pipeline)  # type: ignore[arg-type]
        except FlatForestError:
            return None  # another pipeline than fit_model's, or another scikit-learn

    def forest_score(self, x: np.ndarray) -> np.ndarray:
        """The forest's anomaly score of transformed rows ``x``; one call for any number of
        rows costs little more than for one, so callers batch."""
        flat = self._flat
        if flat is None or x.dtype != np.float64 or not np.isfinite(x).all():
            # scikit-learn's own conversions, checks and errors
            return anomaly_score(self.pipeline, x)  # type: ignore[arg-type]
        return flat.score(x)

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
        (occlusion)."""
        return self.contributions_many(x_row[None, :])[0]

    def contributions_many(self, x: np.ndarray, *, chunk: int = 256) -> np.ndarray:
        """:meth:`contributions` of each row of ``x`` (shape rows x columns), with one forest
        call per ``chunk`` rows instead of two per row: the forest scores each row on its own,
        so the numbers are those of one row at a time. ``chunk`` bounds the probe matrix
        (``chunk * (columns + 1)`` rows)."""
        rows, cols = x.shape
        out = np.empty((rows, cols))
        if not rows:
            return out
        flat = self._flat
        # the scaler's centre: the median each column is reset to
        if flat is not None:
            center = flat.center
        else:
            center = self.pipeline.named_steps["scale"].center_  # type: ignore[union-attr]
        eye = np.eye(cols, dtype=bool)
        for at in range(0, rows, chunk):
            part = x[at : at + chunk]
            # per row: the row itself, then the row with column j reset to the median, j = 0..
            probes = np.repeat(part[:, None, :], cols + 1, axis=1)
            probes[:, 1:, :][:, eye] = center
            scores = self.forest_score(probes.reshape(-1, cols)).reshape(len(part), cols + 1)
            occlusion = (scores[:, :1] - scores[:, 1:]) / self.forest_threshold
            out[at : at + chunk] = np.maximum(occlusion, self.deviations(part))
        return out


def _held_out_threshold(pipeline: Pipeline, x: np.ndarray, q: float, seed: int) -> float:
    """The forest's threshold from scores of windows it did not learn from.

    Two forests are fitted on alternate halves of the windows (in time order) and each scores
    the other half; the threshold is the ``q`` quantile of those out-of-sample scores (and never
    below the in-sample one). A forest's scores for its own training windows run slightly low,
    so an in-sample threshold would flag ordinary new windows too often.
    """
    from sklearn.base import clone

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
    from sklearn.ensemble import IsolationForest
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import RobustScaler

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

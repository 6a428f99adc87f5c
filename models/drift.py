"""Drift references: how each model's training windows and scores were distributed.

A model fits an identity as long as the identity's windows look like the ones the model learned
from. To tell, training keeps, per model (identity, namespace and global alike), a histogram of
every feature and of the model's score over its training windows, and live scoring
(:mod:`netwarden.detector.drift`) compares the identity's recent windows with it, by the
population stability index (:func:`psi`).

Bins are the deciles of the training values (:data:`BINS` bins), so each holds about a tenth of
the training windows and a shift anywhere in the range shows. A feature that is mostly one
value (zero drops, zero DNS) has tied deciles: the ties are merged, leaving fewer bins, one of
them holding that value alone (a feature always zero has two bins, zero and above), so a
feature that starts to move off its usual value is still seen. Bins are closed on the right:
``(-inf, e0], (e0, e1], ..., (e_last, inf)``, so a value equal to an edge (zero) falls below it.
Values are binned raw: quantile bins do not change under the model's monotone transforms.

The score histogram has its own deciles and the count of windows above the threshold (1.0):
by construction about ``expected_rate`` of them. The reference is saved as one JSON file of the
model version (``drift.json``, named with its digest in the signed manifest:
:mod:`netwarden.models.artifact`), so it is as trustworthy as the thresholds. Versions saved
before drift references existed have none; their drift is unavailable, not zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from netwarden.models.spec import MODEL_COLUMNS, TIME_COLUMNS

__all__ = [
    "BINS",
    "DRIFT_COLUMNS",
    "FORMAT",
    "PSEUDO_COUNT",
    "DriftReference",
    "DriftReferenceError",
    "GroupReference",
    "Histogram",
    "bin_counts",
    "build_group",
    "build_reference",
    "psi",
    "psi_noise",
]

FORMAT: Final = "netwarden-drift/1"
#: Quantile bins per feature (deciles); tied deciles are merged.
BINS: Final = 10
#: The model columns whose drift is measured: every window feature, not the time of day (which
#: is context: a live horizon shorter than a day is not "drift" in it).
DRIFT_COLUMNS: Final[tuple[str, ...]] = tuple(c for c in MODEL_COLUMNS if c not in TIME_COLUMNS)
_DRIFT_INDEX: Final = np.array([MODEL_COLUMNS.index(c) for c in DRIFT_COLUMNS])
#: Added to every bin's count (both sides) before shares are compared: an empty bin would make
#: the PSI infinite. Half a window is Jeffreys' prior; its weight falls as windows add up.
PSEUDO_COUNT: Final = 0.5
#: z of the 99.9th percentile of a standard normal (for :func:`psi_noise`).
_Z999: Final = 3.090232


class DriftReferenceError(ValueError):
    """A drift reference that cannot be read; the message names the field."""


@dataclass(frozen=True, slots=True)
class Histogram:
    """Training counts per bin; ``edges`` are the inner bin edges (ascending, unique)."""

    edges: np.ndarray  # float64, len k-1
    counts: np.ndarray  # int64, len k

    @property
    def bins(self) -> int:
        return len(self.counts)


def _edges(values: np.ndarray) -> np.ndarray:
    if len(values) == 0:
        return np.zeros(0)
    inner = np.quantile(values, np.arange(1, BINS) / BINS)
    return np.unique(inner)  # ties merged (sorted)


def _histogram(values: np.ndarray) -> Histogram:
    edges = _edges(values)
    index = np.searchsorted(edges, values, side="left")  # right-closed bins
    return Histogram(edges, np.bincount(index, minlength=len(edges) + 1).astype(np.int64))


@dataclass(frozen=True, slots=True)
class GroupReference:
    """One model's training distributions.

    ``features[i]`` is the histogram of :data:`DRIFT_COLUMNS` ``[i]``; ``score`` that of the
    model's score, with ``above`` windows over ``threshold`` out of ``windows``.
    """

    windows: int
    features: tuple[Histogram, ...]
    score: Histogram
    above: int
    threshold: float

    @property
    def above_share(self) -> float:
        return self.above / self.windows if self.windows else 0.0

    def histograms(self) -> tuple[Histogram, ...]:
        """Every histogram, features first, the score last (the live counts' order)."""
        return (*self.features, self.score)

    def padded_edges(self) -> np.ndarray:
        """The edges as one ``(len(DRIFT_COLUMNS) + 1, BINS - 1)`` array padded with +inf, so
        one comparison bins every column of many windows (:func:`bin_counts`)."""
        out = np.full((len(self.features) + 1, BINS - 1), np.inf)
        for i, h in enumerate(self.histograms()):
            out[i, : len(h.edges)] = h.edges
        return out

    def padded_counts(self) -> np.ndarray:
        """Training counts as ``(columns + 1, BINS)``; bins a column lacks hold 0."""
        out = np.zeros((len(self.features) + 1, BINS), dtype=np.int64)
        for i, h in enumerate(self.histograms()):
            out[i, : h.bins] = h.counts
        return out

    def bins(self) -> np.ndarray:
        """How many bins each histogram has (features, then the score)."""
        return np.array([h.bins for h in self.histograms()])


def build_group(raw: np.ndarray, scores: np.ndarray, threshold: float) -> GroupReference:
    """The reference of one model from its training rows (``raw``: untransformed, every model
    column) and their scores."""
    values = raw[:, _DRIFT_INDEX]
    return GroupReference(
        windows=len(raw),
        features=tuple(_histogram(values[:, j]) for j in range(values.shape[1])),
        score=_histogram(scores),
        above=int(np.count_nonzero(scores > threshold)),
        threshold=float(threshold),
    )


def bin_counts(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Bin indices of ``values`` (``(n, columns)``: features then the score) against
    :meth:`GroupReference.padded_edges` (``(columns, BINS - 1)``): how many edges lie below
    each value, i.e. right-closed bins. Returns ``(n, columns)`` int."""
    return (values[:, :, None] > edges[None, :, :]).sum(axis=2)


def psi(expected: np.ndarray, actual: np.ndarray, bins: np.ndarray | int | None = None) -> Any:
    """Population stability index of ``actual`` counts against ``expected`` counts.

    ``PSI = sum((a_i - e_i) * ln(a_i / e_i))`` over the bins, with shares ``a_i``, ``e_i``
    taken after adding :data:`PSEUDO_COUNT` to every bin. Works on one histogram (1-d) or on
    rows of histograms (2-d: one PSI per row), where ``bins`` says how many leading bins each
    row has (the rest are padding and ignored). Practice reads < 0.1 as no real change, 0.1 to
    0.25 as a moderate one, > 0.25 as a population that is no longer the same.
    """
    if np.ndim(expected) == 1:  # one histogram (the live path, per window): the short way
        e1 = np.asarray(expected, dtype=np.float64) + PSEUDO_COUNT
        a1 = np.asarray(actual, dtype=np.float64) + PSEUDO_COUNT
        e1 /= e1.sum()
        a1 /= a1.sum()
        return float(np.dot(a1 - e1, np.log(a1 / e1)))
    e = np.atleast_2d(np.asarray(expected, dtype=np.float64))
    a = np.atleast_2d(np.asarray(actual, dtype=np.float64))
    width = e.shape[1]
    k = np.full(e.shape[0], width) if bins is None else np.broadcast_to(bins, (e.shape[0],))
    mask = np.arange(width)[None, :] < np.asarray(k)[:, None]
    e = np.where(mask, e + PSEUDO_COUNT, 0.0)
    a = np.where(mask, a + PSEUDO_COUNT, 0.0)
    e /= e.sum(axis=1, keepdims=True)
    a /= a.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(mask, (a - e) * np.log(a / e), 0.0)
    return terms.sum(axis=1)


def psi_noise(bins: np.ndarray | int, live: int, training: int) -> Any:
    """The PSI that sampling alone exceeds one time in 1,000 when nothing changed.

    With ``live`` and ``training`` windows from one population, ``PSI / (1/live + 1/training)``
    is approximately chi-square with ``bins - 1`` degrees of freedom (PSI is a symmetric
    Kullback-Leibler divergence, whose scaled value is the G-test statistic); its 99.9th
    percentile is taken with the Wilson-Hilferty approximation (within 1% for 1-9 degrees of
    freedom). A PSI below this says nothing, whatever band it falls in: with 120 training and
    120 live windows over 10 bins, same-population samples exceed 0.25 one time in 1,000.
    """
    df = np.maximum(np.asarray(bins, dtype=np.float64) - 1.0, 1.0)
    c = 2.0 / (9.0 * df)
    chi2 = df * (1.0 - c + _Z999 * np.sqrt(c)) ** 3
    scale = (1.0 / max(live, 1)) + (1.0 / max(training, 1))
    return chi2 * scale


@dataclass(frozen=True, slots=True)
class DriftReference:
    """The references of every model of one training run, by model key."""

    groups: dict[str, GroupReference]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "bins": BINS,
            "columns": list(DRIFT_COLUMNS),
            "groups": {
                key: {
                    "windows": g.windows,
                    "threshold": g.threshold,
                    "above": g.above,
                    "score": _hist_json(g.score),
                    "features": {
                        col: _hist_json(h) for col, h in zip(DRIFT_COLUMNS, g.features, strict=True)
                    },
                }
                for key, g in sorted(self.groups.items())
            },
        }

    @classmethod
    def from_json(cls, data: Any) -> DriftReference:
        """Read :meth:`to_json`'s output; :class:`DriftReferenceError` names the first bad
        field (the file is covered by the version's signature, so this is about bugs and other
        releases, not attackers)."""
        _need(isinstance(data, dict), "drift", "an object", data)
        _need(data.get("format") == FORMAT, "drift.format", repr(FORMAT), data.get("format"))
        _need(
            data.get("columns") == list(DRIFT_COLUMNS),
            "drift.columns",
            "this netwarden's drift columns",
            data.get("columns"),
        )
        groups = data.get("groups")
        _need(isinstance(groups, dict), "drift.groups", "an object", groups)
        out: dict[str, GroupReference] = {}
        for key, g in groups.items():
            where = f"drift.groups[{key!r}]"
            _need(isinstance(g, dict), where, "an object", g)
            windows, above = g.get("windows"), g.get("above")
            _need(_count(windows), f"{where}.windows", "a count", windows)
            _need(_count(above), f"{where}.above", "a count", above)
            threshold = g.get("threshold")
            _need(_number(threshold), f"{where}.threshold", "a number", threshold)
            features = g.get("features")
            _need(isinstance(features, dict), f"{where}.features", "an object", features)
            out[key] = GroupReference(
                windows=windows,
                threshold=float(threshold),
                above=above,
                score=_hist(g.get("score"), f"{where}.score"),
                features=tuple(
                    _hist(features.get(col), f"{where}.features.{col}") for col in DRIFT_COLUMNS
                ),
            )
        return cls(out)


def build_reference(
    groups: Mapping[str, tuple[np.ndarray, np.ndarray, float]],
) -> DriftReference:
    """A :class:`DriftReference` from ``key -> (raw rows, scores, threshold)``."""
    return DriftReference({k: build_group(*v) for k, v in groups.items()})


def _hist_json(h: Histogram) -> dict[str, list[Any]]:
    return {"edges": h.edges.tolist(), "counts": h.counts.tolist()}


def _hist(data: Any, where: str) -> Histogram:
    _need(isinstance(data, dict), where, "an object with edges and counts", data)
    edges, counts = data.get("edges"), data.get("counts")
    _need(
        isinstance(edges, list) and len(edges) < BINS and all(_number(x) for x in edges),
        f"{where}.edges",
        f"at most {BINS - 1} numbers",
        edges,
    )
    _need(
        isinstance(counts, list)
        and len(counts) == len(edges) + 1
        and all(_count(x) for x in counts),
        f"{where}.counts",
        f"{len(edges) + 1} counts (one more than the edges)",
        counts,
    )
    e = np.asarray(edges, dtype=np.float64)
    _need(bool(np.all(np.diff(e) > 0)), f"{where}.edges", "ascending numbers", edges)
    return Histogram(e, np.asarray(counts, dtype=np.int64))


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _need(ok: bool, where: str, expected: str, got: Any) -> None:
    if not ok:
        shown = repr(got)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise DriftReferenceError(f"{where}: expected {expected}, got {type(got).__name__} {shown}")

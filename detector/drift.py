"""Live drift: does the model still fit each identity?

For every scored window, :class:`DriftMonitor` bins the window's features and its model score
with the bins of the model's training reference (:mod:`netwarden.models.drift`) and keeps the
counts per identity over a sliding horizon (default the last 24 h of event time, in
:attr:`DriftConfig.buckets` steps: a ring of count arrays, so memory per identity is fixed,
about 10 KB, and at most :attr:`DriftConfig.max_identities` identities are kept, the longest
quiet forgotten first). From the counts it computes the population stability index (PSI) of
each feature and of the score against training, and the share of windows above the threshold.

**When a model no longer fits.** Judged only for identities scored by their own model (a
newcomer scored by its namespace's or the global model differs from that mix by nature; it
gets its own model at the next retraining with enough history), and only with at least
:attr:`~DriftConfig.min_windows` windows in the horizon (default 240: four hours of 60 s
windows). The model no longer fits when

* the **score** PSI is at least 0.25, the usual "significant shift" band, *and* above what
  sampling alone reaches one time in 1,000 (:func:`~netwarden.models.drift.psi_noise`: with
  an identity's 120 training windows the noise alone can pass 0.25), or
* the **share of windows above the threshold** is at least 1% and at least 10 times the
  training share (the threshold is calibrated to about 0.02%: 1% is 50 times as many
  windows past it as the model was built for), with at least 5 such windows.

It fits again when the score PSI falls below 0.1 (the "no change" band) or below the noise
level, and the share above the threshold is under its limit: the gap between 0.25 and 0.1 keeps
an identity near the edge from alerting on and off. Feature PSIs do not decide anything: they
say *what* moved (the top drifting features are named), and a feature can move in a way the
model absorbs (the daily cycle it learned through the time of day) without the score moving.

Windows that met a novelty rule (an attack's evidence) are not counted: they are alerted as
anomalies, and one attack must not read as the model's misfit. A new model version starts the
counts afresh (its bins are other bins).

Every number here is a :class:`~netwarden.detector.drift_config.DriftConfig` option, set in the
service's ``drift:`` configuration section (``NETWARDEN_DRIFT__<OPTION>``) and given to the
monitor by ``netwarden serve``.

Thread-safety: the pipeline thread calls :meth:`DriftMonitor.observe`; the API, the metrics
scrape and the alerter read reports, all under one lock.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from netwarden.detector.drift_config import DriftConfig
from netwarden.detector.results import ScoredWindow
from netwarden.ingest.windows import ClosedWindow
from netwarden.models.drift import (
    BINS,
    DRIFT_COLUMNS,
    GroupReference,
    bin_counts,
    psi,
    psi_noise,
)
from netwarden.models.forest import GLOBAL
from netwarden.models.registry import CurrentModel
from netwarden.models.spec import MODEL_COLUMNS, raw_matrix

__all__ = [
    "DRIFTED",
    "FALLBACK",
    "FITS",
    "SHIFTING",
    "STATES",
    "UNAVAILABLE",
    "WARMING_UP",
    "DriftConfig",
    "DriftMonitor",
    "DriftReport",
    "FeatureDrift",
]

FITS: Final = "fits"  # the model fits: no significant shift
SHIFTING: Final = "shifting"  # a moderate score shift (PSI 0.1-0.25, past the noise): watch it
DRIFTED: Final = "drifted"  # the model no longer fits: alerted
WARMING_UP: Final = "warming_up"  # too few windows in the horizon to judge
FALLBACK: Final = "fallback"  # scored by a namespace or global model: not judged
UNAVAILABLE: Final = "unavailable"  # the model version has no drift reference
STATES: Final = (FITS, SHIFTING, DRIFTED, WARMING_UP, FALLBACK, UNAVAILABLE)

_DRIFT_INDEX: Final = np.array([MODEL_COLUMNS.index(c) for c in DRIFT_COLUMNS])
_ROWS: Final = len(DRIFT_COLUMNS) + 1  # every feature, then the score


@dataclass(frozen=True, slots=True)
class FeatureDrift:
    """One feature's PSI against training, with the level sampling alone reaches (``noise``)."""

    feature: str
    psi: float
    noise: float


@dataclass(frozen=True, slots=True)
class DriftReport:
    """What is known about one identity's drift now."""

    identity: str
    namespace: str
    workload: str
    state: str
    model: str  # the model key scoring it ("identity:...", "namespace:...", "global")
    scored_by: str  # "own", "namespace" or "global"
    version: str | None
    windows: int  # live windows in the horizon
    training_windows: int  # windows the model's reference was built from
    score_psi: float | None
    score_noise: float | None
    above_share: float | None  # live windows above the threshold, as a share
    above: int
    training_above_share: float | None
    features: tuple[FeatureDrift, ...] = ()  # every feature, most drifting first
    top: tuple[FeatureDrift, ...] = ()  # those past their noise level and 0.1, at most N
    windows_seen: int = 0  # since this model version was loaded (not only in the horizon)
    #: Windows of history an identity needs for a model of its own at the next retraining.
    own_model_windows: int = 0
    reason: str = ""  # the state in words

    @property
    def rank(self) -> tuple[int, float, float]:
        """Sort key, most drifting first: drifted, shifting, the rest; then by score PSI."""
        order = {DRIFTED: 0, SHIFTING: 1, FITS: 2}.get(self.state, 3)
        top = self.top[0].psi if self.top else 0.0
        return (order, -(self.score_psi or 0.0), -top)


@dataclass(slots=True)
class _Track:
    """The live counts of one identity: a ring of buckets and their running total."""

    key: str
    namespace: str
    workload: str
    ring: np.ndarray  # (buckets, rows, BINS) counts
    ring_ids: np.ndarray  # (buckets,) bucket number held in each slot, -1: empty
    above_ring: np.ndarray  # (buckets,)
    total: np.ndarray  # (rows, BINS) int64
    above: int = 0
    seen: int = 0
    drifted: bool = False
    report: DriftReport | None = None
    late: int = 0  # windows older than the horizon when they came

    def expire(self, newest: int, buckets: int) -> None:
        """Drop the buckets that left the horizon ending in bucket ``newest``."""
        old = (self.ring_ids >= 0) & (self.ring_ids <= newest - buckets)
        for slot in np.flatnonzero(old):
            self.total -= self.ring[slot]
            self.above -= int(self.above_ring[slot])
            self.ring[slot] = 0
            self.above_ring[slot] = 0
            self.ring_ids[slot] = -1

    def add(self, bucket: int, bins: np.ndarray, above: bool, buckets: int) -> bool:
        """Count one window (its bin per row) in ``bucket``; False if older than the horizon."""
        newest = int(self.ring_ids.max())
        if bucket <= newest - buckets:
            self.late += 1
            return False
        if bucket > newest:
            self.expire(bucket, buckets)
        slot = bucket % buckets
        if self.ring_ids[slot] != bucket:
            self.total -= self.ring[slot]
            self.above -= int(self.above_ring[slot])
            self.ring[slot] = 0
            self.above_ring[slot] = 0
            self.ring_ids[slot] = bucket
        rows = np.arange(len(bins))
        self.ring[slot, rows, bins] += 1
        self.total[rows, bins] += 1
        self.above_ring[slot] += int(above)
        self.above += int(above)
        self.seen += 1
        return True

    @property
    def windows(self) -> int:
        return int(self.total[0].sum())


def _scored_by(key: str) -> str:
    if key.startswith("identity:"):
        return "own"
    return "global" if key == GLOBAL else "namespace"


def _rule_window(s: ScoredWindow) -> bool:
    """A window the novelty rules (or its victims) made an anomaly: its score is the rule's."""
    return bool(s.evidence) or any(r.feature.startswith("rule:") for r in s.reasons)


class DriftMonitor:
    """Counts live windows per identity against the current model's drift reference and
    judges whether the model still fits (see the module docstring)."""

    def __init__(
        self,
        model: CurrentModel,
        config: DriftConfig | None = None,
        *,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.model = model
        self.config = config or DriftConfig()
        self._lock = threading.Lock()
        self._tracks: OrderedDict[str, _Track] = OrderedDict()
        self._version: str | None = None
        self._newest = -1  # newest bucket seen (any identity)
        self._refs: dict[str, tuple[GroupReference, np.ndarray, np.ndarray, np.ndarray]] = {}
        self._dtype: Any = np.uint16
        if registry is not None:
            registry.register(_DriftCollector(self))

    # -- the pipeline thread -----------------------------------------------------------------

    def observe(self, windows: Sequence[ClosedWindow], scored: Sequence[ScoredWindow]) -> None:
        """Count judged windows (``scored[i]`` is ``windows[i]``'s verdict) and judge the
        identities they belong to."""
        loaded = self.model.loaded
        with self._lock:
            if loaded is None or loaded.version != self._version:
                self._start(loaded)
            if loaded is None or loaded.bundle.drift is None or not windows:
                return
            keep = [
                i for i, s in enumerate(scored) if not _rule_window(s) and s.model in self._refs
            ]
            if not keep:
                return
            rows = [{"window_start": windows[i].start_datetime(), **windows[i].features()}
                    for i in keep]  # fmt: skip
            values = np.empty((len(keep), _ROWS))
            values[:, :-1] = raw_matrix(rows)[:, _DRIFT_INDEX]
            values[:, -1] = [scored[i].score for i in keep]
            by_key: dict[str, list[int]] = {}
            for j, i in enumerate(keep):
                by_key.setdefault(scored[i].model, []).append(j)
            bins = np.empty((len(keep), _ROWS), dtype=np.int64)
            for key, js in by_key.items():
                bins[js] = bin_counts(self._refs[key][1], values[js])
            width = self.config.bucket_seconds
            touched: dict[str, _Track] = {}
            for j, i in enumerate(keep):
                s = scored[i]
                track = self._track(s)
                bucket = int(windows[i].start // width)
                if track.add(bucket, bins[j], s.score > s.threshold, self.config.buckets):
                    self._newest = max(self._newest, bucket)
                touched[s.identity] = track
            for identity, track in touched.items():
                self._judge(identity, track)

    def _start(self, loaded: Any) -> None:
        """A new model version: its references, and the counts started afresh."""
        self._tracks.clear()
        self._refs.clear()
        self._newest = -1
        self._version = loaded.version if loaded is not None else None
        if loaded is None or loaded.bundle.drift is None:
            return
        for key, ref in loaded.bundle.drift.groups.items():
            self._refs[key] = (ref, ref.padded_edges(), ref.padded_counts(), ref.bins())
        per_bucket = self.config.bucket_seconds / loaded.bundle.windows.window_seconds
        self._dtype = np.uint16 if per_bucket < 65_000 else np.uint32

    def _track(self, s: ScoredWindow) -> _Track:
        track = self._tracks.get(s.identity)
        if track is not None and track.key == s.model:
            self._tracks.move_to_end(s.identity)
            return track
        b = self.config.buckets
        track = _Track(
            key=s.model,
            namespace=s.namespace,
            workload=s.workload,
            ring=np.zeros((b, _ROWS, BINS), dtype=self._dtype),
            ring_ids=np.full(b, -1, dtype=np.int64),
            above_ring=np.zeros(b, dtype=np.int64),
            total=np.zeros((_ROWS, BINS), dtype=np.int64),
        )
        self._tracks[s.identity] = track
        self._tracks.move_to_end(s.identity)
        while len(self._tracks) > self.config.max_identities:
            self._tracks.popitem(last=False)
        return track

    # -- judging -----------------------------------------------------------------------------

    def _judge(self, identity: str, track: _Track, *, full: bool = False) -> DriftReport:
        """The identity's report from its counts now (lock held). The state needs the score's
        histogram only; ``full`` adds every feature's PSI (for readers, not per window)."""
        c = self.config
        track.expire(self._newest, c.buckets)
        ref, _, expected, bins = self._refs[track.key]
        n, m = track.windows, ref.windows
        loaded = self.model.loaded
        own_needed = (
            loaded.bundle.config.min_windows + loaded.bundle.config.warmup_windows if loaded else 0
        )
        scored_by = _scored_by(track.key)
        base: dict[str, Any] = {
            "identity": identity,
            "namespace": track.namespace,
            "workload": track.workload,
            "model": track.key,
            "scored_by": scored_by,
            "version": self._version,
            "windows": n,
            "training_windows": m,
            "windows_seen": track.seen,
            "own_model_windows": own_needed,
            "above": track.above,
            "training_above_share": ref.above_share,
        }
        if n == 0:
            report = DriftReport(
                **base,
                state=FALLBACK if scored_by != "own" else WARMING_UP,
                score_psi=None,
                score_noise=None,
                above_share=None,
                reason="no windows in the horizon",
            )
            track.report, track.drifted = report, False
            return report
        k = int(bins[-1])
        score_psi = float(psi(expected[-1, :k], track.total[-1, :k]))
        score_noise = float(psi_noise(k, n, m))
        above_share = track.above / n
        above_limit = max(
            c.above_share_alert,
            c.above_ratio * max(ref.above_share, self._expected_rate()),
        )
        too_many_above = track.above >= c.min_above and above_share >= above_limit
        score_moved = score_psi >= max(c.psi_alert, score_noise)
        settled = score_psi < max(c.psi_clear, score_noise)
        if scored_by != "own":
            state = FALLBACK
            reason = (
                f"scored by the {scored_by} model; compared with its training windows for "
                f"information only, and a model of its own comes with the next retraining "
                f"once it has {own_needed} windows of history"
            )
        elif n < c.min_windows:
            state = WARMING_UP
            reason = f"{n} of the {c.min_windows} windows needed to judge"
        elif too_many_above or score_moved:
            state = DRIFTED
            why = []
            if score_moved:
                why.append(f"score PSI {score_psi:.2f}")
            if too_many_above:
                why.append(
                    f"{above_share:.1%} of windows above the threshold "
                    f"(training {ref.above_share:.2%})"
                )
            reason = "the model no longer fits: " + ", ".join(why)
        elif track.drifted and not settled:
            state = DRIFTED
            reason = (
                f"still drifting: score PSI {score_psi:.2f} (fits again below "
                f"{max(c.psi_clear, score_noise):.2f})"
            )
        elif not settled:
            state = SHIFTING
            reason = f"a moderate shift: score PSI {score_psi:.2f} (no longer fits from " + (
                f"{max(c.psi_alert, score_noise):.2f})"
            )
        else:
            state = FITS
            reason = f"score PSI {score_psi:.2f}, within what sampling explains"
        features: tuple[FeatureDrift, ...] = ()
        top: tuple[FeatureDrift, ...] = ()
        if full:
            values = psi(expected[:-1], track.total[:-1], bins[:-1])
            noise = psi_noise(bins[:-1], n, m)
            order = np.argsort(-values, kind="stable")
            features = tuple(
                FeatureDrift(DRIFT_COLUMNS[j], float(values[j]), float(noise[j])) for j in order
            )
            top = tuple(f for f in features if f.psi >= max(c.psi_clear, f.noise))
            top = top[: c.top_features]
        report = DriftReport(
            **base,
            state=state,
            score_psi=score_psi,
            score_noise=score_noise,
            above_share=above_share,
            features=features,
            top=top,
            reason=reason,
        )
        track.report, track.drifted = report, state == DRIFTED
        return report

    def _expected_rate(self) -> float:
        loaded = self.model.loaded
        return loaded.bundle.config.expected_rate if loaded is not None else 0.0

    # -- readers (any thread) ----------------------------------------------------------------

    @property
    def version(self) -> str | None:
        return self._version

    @property
    def loaded_version(self) -> str | None:
        """The model version loaded now (drift is judged for it from its next window on)."""
        loaded = self.model.loaded
        return loaded.version if loaded is not None else None

    @property
    def available(self) -> bool:
        """Whether the loaded model version carries a drift reference."""
        loaded = self.model.loaded
        return loaded is not None and loaded.bundle.drift is not None

    def report(self, identity: str) -> DriftReport | None:
        """The identity's report now; None when it has no live windows and no model of its
        own (unknown to the model and not seen since it was loaded)."""
        with self._lock:
            track = self._tracks.get(identity)
            if track is not None and track.key in self._refs:
                return self._judge(identity, track, full=True)
        return self._unseen(identity)

    def _unseen(self, identity: str) -> DriftReport | None:
        """An identity with no live windows yet: known to the model (its own or from
        training), or None."""
        loaded = self.model.loaded
        if loaded is None:
            return None
        bundle = loaded.bundle
        namespace = bundle.namespaces.get(identity)
        if namespace is None:
            return None
        model, _ = bundle.model_for(identity, namespace)
        ref = bundle.drift.groups.get(model.key) if bundle.drift is not None else None
        scored_by = _scored_by(model.key)
        unavailable = ref is None
        return DriftReport(
            identity=identity,
            namespace=namespace,
            workload=identity.partition("/")[2],
            state=UNAVAILABLE if unavailable else (WARMING_UP if scored_by == "own" else FALLBACK),
            model=model.key,
            scored_by=scored_by,
            version=loaded.version,
            windows=0,
            training_windows=ref.windows if ref is not None else model.rows,
            score_psi=None,
            score_noise=None,
            above_share=None,
            above=0,
            training_above_share=ref.above_share if ref is not None else None,
            own_model_windows=bundle.config.min_windows + bundle.config.warmup_windows,
            reason=(
                f"model version {loaded.version} has no drift reference (saved before netwarden "
                "kept one): retrain to measure drift"
                if unavailable
                else "no windows in the horizon yet"
            ),
        )

    def reports(self) -> list[DriftReport]:
        """Every tracked identity's report, most drifting first."""
        with self._lock:
            out = [
                self._judge(identity, track, full=True)
                for identity, track in self._tracks.items()
                if track.key in self._refs
            ]
        return sorted(out, key=lambda r: (r.rank, r.identity))

    def drifted(self) -> list[DriftReport]:
        """The identities whose model no longer fits, as last judged (the alerter's view)."""
        with self._lock:
            return [
                self._judge(identity, t, full=True)
                for identity, t in self._tracks.items()
                if t.drifted and t.key in self._refs
            ]

    def most_drifting(self, limit: int) -> list[DriftReport]:
        """Full reports of the ``limit`` identities judged on their own model that drift most
        (as last judged), most drifting first: the metrics' bounded set."""
        with self._lock:
            judged = [
                (t.report.rank, identity, t)
                for identity, t in self._tracks.items()
                if t.report is not None
                and t.report.score_psi is not None
                and t.report.scored_by == "own"
                and t.key in self._refs
            ]
            judged.sort(key=lambda x: (x[0], x[1]))
            return [self._judge(identity, t, full=True) for _, identity, t in judged[:limit]]

    def counts(self) -> dict[str, int]:
        """Identities by state, as last judged."""
        out = dict.fromkeys(STATES, 0)
        with self._lock:
            for t in self._tracks.values():
                if t.report is not None:
                    out[t.report.state] += 1
        return out

    def memory_bytes(self) -> int:
        """Bytes of count arrays held (bytes per identity: divide by the identities)."""
        with self._lock:
            return sum(
                t.ring.nbytes + t.ring_ids.nbytes + t.above_ring.nbytes + t.total.nbytes
                for t in self._tracks.values()
            )


class _DriftCollector(Collector):
    """The drift metrics, computed from the last judgements at scrape time.

    ``netwarden_drift_identities{state}`` counts every tracked identity. The per-identity
    series are bounded: ``netwarden_drift_score_psi{namespace,workload}`` for the
    ``metric_identities`` most drifting identities judged on their own model, and
    ``netwarden_drift_psi{namespace,workload,feature}`` for their top drifting features only
    (at most ``top_features`` each): at most 50 + 150 series by default, however many
    identities and features there are.
    """

    def __init__(self, monitor: DriftMonitor) -> None:
        self.monitor = monitor

    def collect(self) -> Any:
        m = self.monitor
        states = GaugeMetricFamily(
            "netwarden_drift_identities",
            "Identities by drift state (fits, shifting, drifted, warming_up, fallback, "
            "unavailable), as last judged.",
            labels=["state"],
        )
        for state, n in m.counts().items():
            states.add_metric([state], n)
        yield states
        score = GaugeMetricFamily(
            "netwarden_drift_score_psi",
            "Population stability index of the model score, live vs training (the most "
            "drifting identities only).",
            labels=["namespace", "workload"],
        )
        features = GaugeMetricFamily(
            "netwarden_drift_psi",
            "Population stability index of a feature, live vs training (each of the most "
            "drifting identities' top drifting features only).",
            labels=["namespace", "workload", "feature"],
        )
        for r in m.most_drifting(m.config.metric_identities):
            assert r.score_psi is not None
            score.add_metric([r.namespace, r.workload], r.score_psi)
            for f in r.top:
                features.add_metric([r.namespace, r.workload, f.feature], f.psi)
        yield score
        yield features

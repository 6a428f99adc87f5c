"""Batch scoring gives exactly what scoring one window at a time gives.

The scorer makes one forest call per model per batch for the scores, and one per model for the
explanations of the batch's anomalous windows; none of that may change a score, a verdict or a
reason. Every field of every :class:`ScoredWindow` is compared, floats bit for bit, and the
numbers are checked against scikit-learn's own ``score_samples``, one row at a time, as the
scorer computed them before it batched.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from netwarden.detector.judge import WindowJudge
from netwarden.detector.results import ScoredWindow
from netwarden.detector.scorer import Scorer
from netwarden.detector.stream import StreamScorer
from netwarden.generator import generate
from netwarden.ingest.pipeline import build_windows
from netwarden.ingest.windows import ClosedWindow, WindowBuilder, windows_to_rows
from netwarden.models.edges import EdgeMemory
from netwarden.models.forest import FittedModel
from netwarden.models.spec import MODEL_COLUMNS, raw_matrix, transform
from netwarden.models.training import ModelBundle
from tests.modelfactory import train_on_generated

T0 = datetime(2026, 3, 2, tzinfo=UTC)


@pytest.fixture(scope="module")
def scored_day(tmp_path_factory) -> tuple[ModelBundle, list[ClosedWindow]]:
    """Models trained on three hours; the windows of the next hour with attacks in it (so
    that some windows are anomalous and some identities are scored by fallback models)."""
    out: Path = tmp_path_factory.mktemp("batch")
    bundle, _ = train_on_generated(out / "train", hours=3, seed=61, start=T0)
    test = generate(
        out / "test",
        hours=1,
        seed=62,
        start=T0 + timedelta(hours=3),
        attacks=["port_scan", "dns_tunnel", "exfiltration", "drop_storm"],
    )
    windows: list[ClosedWindow] = []
    build_windows([test.flows_path], windows.extend, builder=WindowBuilder(bundle.windows))
    return bundle, windows


def _one_by_one(scorer: Scorer, windows: list[ClosedWindow]) -> list[ScoredWindow]:
    return [s for w in windows for s in scorer.score([w])]


def test_batches_score_every_field_as_one_window_at_a_time(scored_day) -> None:
    bundle, windows = scored_day
    scorer = Scorer(bundle)
    single = _one_by_one(scorer, windows)
    assert len(single) == len(windows)
    flagged = [s for s in single if s.anomalous]
    # the comparison means something only if it covers anomalies with reasons, several models
    # in one batch and a fallback
    assert flagged and all(s.reasons and s.summary and s.examples for s in flagged)
    assert len({s.model for s in single}) >= 3
    assert any(s.fallback for s in single)
    assert all(
        not s.reasons and not s.examples and not s.summary for s in single if not s.anomalous
    )
    whole = scorer.score(windows)
    assert whole == single  # dataclass equality: every field, floats exactly
    rng = random.Random(7)
    shuffled = list(range(len(windows)))
    rng.shuffle(shuffled)  # any order, any identities together
    by_position = dict(zip(shuffled, scorer.score([windows[i] for i in shuffled]), strict=True))
    assert [by_position[i] for i in range(len(windows))] == single
    chunks: list[ScoredWindow] = []
    i = 0
    while i < len(windows):
        n = rng.randint(1, 300)
        chunks += scorer.score(windows[i : i + n])
        i += n
    assert chunks == single


def _reference_contributions(model: FittedModel, x_row: np.ndarray) -> np.ndarray:
    """Occlusion, one window at a time, straight from scikit-learn (the unbatched method)."""
    center = model.pipeline.named_steps["scale"].center_
    probes = np.repeat(x_row[None, :], len(x_row), axis=0)
    np.fill_diagonal(probes, center)
    base = -model.pipeline.score_samples(x_row[None, :])[0]
    occlusion = (base - -model.pipeline.score_samples(probes)) / model.forest_threshold
    deviation = np.maximum((x_row - model.t_median) / model.t_scale, 0.0) / model.deviation_limits
    return np.maximum(occlusion, deviation)


def test_scores_and_reasons_match_scikit_learn_row_by_row(scored_day) -> None:
    bundle, windows = scored_day
    scored = Scorer(bundle).score(windows)
    raw = raw_matrix(windows_to_rows(windows))
    x = transform(raw)
    checked = 0
    for i, s in enumerate(scored):
        model = bundle.models[s.model]
        forest = -model.pipeline.score_samples(x[i : i + 1])[0] / model.forest_threshold
        deviation = (
            np.maximum((x[i] - model.t_median) / model.t_scale, 0.0) / model.deviation_limits
        )
        assert s.score == max(forest, deviation.max())
        assert s.anomalous == (s.score > model.threshold)
        if not s.anomalous:
            continue
        contributions = _reference_contributions(model, x[i])
        order = [j for j in np.argsort(-contributions, kind="stable")[:5] if contributions[j] > 0]
        assert [r.feature for r in s.reasons] == [MODEL_COLUMNS[j] for j in order]
        assert [r.contribution for r in s.reasons] == [float(contributions[j]) for j in order]
        assert [r.value for r in s.reasons] == [float(raw[i, j]) for j in order]
        checked += 1
    assert checked


def test_forest_scores_of_a_batch_are_scikit_learns(scored_day) -> None:
    """The model's batched forest score is scikit-learn's ``score_samples``, bit for bit, on
    real windows and on rows far outside anything trained on; so are batched explanations."""
    bundle, windows = scored_day
    x = transform(raw_matrix(windows_to_rows(windows)))
    rng = np.random.default_rng(3)
    wild = np.vstack([x, rng.normal(0, 5, size=(64, x.shape[1])), np.zeros((1, x.shape[1]))])
    for model in bundle.models.values():
        assert np.array_equal(model.forest_score(wild), -model.pipeline.score_samples(wild))
        assert np.array_equal(model.forest_score(wild[:1]), -model.pipeline.score_samples(wild[:1]))
    # a missing value is left to scikit-learn (its own handling), with the same result
    holes = wild[:3].copy()
    holes[1, 4] = np.nan
    model = bundle.models["global"]
    assert np.array_equal(model.forest_score(holes), -model.pipeline.score_samples(holes))
    # explanations in chunks of any size are those of one row at a time
    many = model.contributions_many(wild[60:70], chunk=3)
    assert many.shape == (10, x.shape[1])
    for row, got in zip(wild[60:70], many, strict=True):
        assert np.array_equal(got, _reference_contributions(model, row))


def _by_start(windows: list[ClosedWindow]) -> list[list[ClosedWindow]]:
    groups: list[list[ClosedWindow]] = []
    for w in windows:
        if groups and groups[-1][0].start == w.start:
            groups[-1].append(w)
        else:
            groups.append([w])
    return groups


def _collect(out: list[ScoredWindow]) -> Callable[[list[ClosedWindow], list[ScoredWindow]], None]:
    def keep(_: list[ClosedWindow], scored: list[ScoredWindow]) -> None:
        out.extend(scored)

    return keep


def test_judged_stream_is_the_same_whatever_the_batch_size(scored_day) -> None:
    """What ``netwarden score`` and the service write: the judge's verdicts, every field, with
    one window's identities per batch, a few windows per batch, or all of them in one."""
    bundle, windows = scored_day
    runs = []
    for max_windows in (1, 37, 4096):
        out: list[ScoredWindow] = []
        judge = WindowJudge(Scorer(bundle), EdgeMemory.from_json(bundle.edges.to_json()))
        stream = StreamScorer(judge, _collect(out), max_windows=max_windows)
        for group in _by_start(
            windows
        ):  # as the builder closes them: a window's identities together
            stream.add(group)
        stream.flush()
        runs.append(out)
    assert len(runs[0]) == len(windows)
    assert any(s.anomalous for s in runs[0])
    assert runs[0] == runs[1] == runs[2]

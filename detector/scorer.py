"""Scoring closed windows with a trained bundle: score, threshold, verdict and reasons.

Each window is scored by its identity's own model, else its namespace's, else the global one
(marked ``fallback``). An anomalous window gets reasons: the features whose reset to the model's
median lowers the score most (occlusion, see ``FittedModel.contributions``), each with the
observed value and the model's baseline, and a one-sentence summary.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from netwarden.detector.explain import reason_text, summary
from netwarden.detector.results import Reason, ScoredWindow
from netwarden.ingest.windows import ClosedWindow
from netwarden.models.forest import FittedModel
from netwarden.models.spec import MODEL_COLUMNS, raw_matrix, transform
from netwarden.models.training import ModelBundle

__all__ = ["Scorer"]


class Scorer:
    """Scores windows with a :class:`ModelBundle`; stateless between calls."""

    def __init__(self, bundle: ModelBundle, *, max_reasons: int = 5) -> None:
        if tuple(bundle.columns) != MODEL_COLUMNS:
            raise ValueError("the bundle's feature columns do not match this netwarden's")
        self.bundle = bundle
        self.max_reasons = max_reasons

    def score(self, windows: Sequence[ClosedWindow]) -> list[ScoredWindow]:
        """Score windows (any identities, any order); results keep the input order.

        Per model, one forest call scores all of its windows and one more explains those of
        them past the threshold: scikit-learn's cost is mostly per call, and a forest scores
        each row on its own, so a batch gives exactly what one window at a time gives. Only
        the anomalous windows get reasons, examples and a summary.
        """
        if not windows:
            return []
        rows = [_row(w) for w in windows]
        raw = raw_matrix(rows)
        x = transform(raw)
        model_for = self.bundle.model_for
        groups: dict[str, list[int]] = defaultdict(list)
        chosen = []
        for i, w in enumerate(windows):
            subject = w.subject
            model, fallback = model_for(subject.id, subject.namespace)
            chosen.append((model, fallback))
            groups[model.key].append(i)
        scores = np.empty(len(windows))
        explained: dict[int, np.ndarray] = {}
        for indices in groups.values():
            model = chosen[indices[0]][0]
            members = np.asarray(indices)
            mine = model.score(x[members])
            scores[members] = mine
            flagged = members[mine > model.threshold]
            if len(flagged):
                explained.update(zip(flagged.tolist(), model.contributions_many(x[flagged])))
        out = []
        for i, (w, row, (model, fallback), score) in enumerate(
            zip(windows, rows, chosen, scores.tolist(), strict=True)
        ):
            subject = w.subject
            reasons: tuple[Reason, ...] = ()
            examples: dict[str, Any] = {}
            text = ""
            anomalous = score > model.threshold
            if anomalous:
                reasons = self._reasons(model, explained[i], raw[i])
                examples = w.examples()
                text = summary(subject.workload, [r.text for r in reasons[:3]], fallback=fallback)
            out.append(
                ScoredWindow(
                    identity=subject.id,
                    namespace=subject.namespace,
                    workload=subject.workload,
                    window_start=row["window_start"],
                    window_end=w.end_datetime(),
                    score=score,
                    threshold=model.threshold,
                    anomalous=anomalous,
                    model=model.key,
                    fallback=fallback,
                    reasons=reasons,
                    examples=examples,
                    summary=text,
                )
            )
        return out

    def _reasons(
        self, model: FittedModel, contributions: np.ndarray, raw_row: np.ndarray
    ) -> tuple[Reason, ...]:
        """The columns that contribute most (see :meth:`FittedModel.contributions`), largest
        first, at most ``max_reasons``."""
        order = np.argsort(-contributions, kind="stable")
        reasons = []
        for j in order[: self.max_reasons]:
            if contributions[j] <= 0:
                break
            feature = MODEL_COLUMNS[j]
            value, baseline = float(raw_row[j]), float(model.median[j])
            reasons.append(
                Reason(
                    feature=feature,
                    value=value,
                    baseline=baseline,
                    spread=float(model.spread[j]),
                    contribution=float(contributions[j]),
                    text=reason_text(feature, value, baseline),
                )
            )
        return tuple(reasons)


def _row(w: ClosedWindow) -> dict[str, Any]:
    row: dict[str, Any] = {"window_start": w.start_datetime()}
    row.update(w.features())
    return row

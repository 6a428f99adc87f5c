"""Training: one model per identity with enough history, per-namespace and global fallbacks.

Settings are validated once, when :class:`TrainConfig` is made (names and ranges in the error).
Retraining is a fresh :func:`train` on new data; a fitted bundle is never modified.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from netwarden.ingest.windows import WindowConfig
from netwarden.models.drift import DriftReference, build_group
from netwarden.models.edges import EdgeMemory
from netwarden.models.forest import GLOBAL, FittedModel, fit_model
from netwarden.models.spec import (
    DEVIATION_FLOOR,
    MODEL_COLUMNS,
    data_hash,
    raw_matrix,
    transform,
)
from netwarden.validation import check_ranges

__all__ = ["ModelBundle", "NotEnoughData", "TrainConfig", "train"]


class NotEnoughData(ValueError):
    """Too little training data for even the global model; the message says how much is needed."""


_CONSTRAINTS: Final[dict[str, tuple[float, float]]] = {
    "expected_rate": (1e-6, 0.2),
    "min_windows": (16, 1_000_000),
    "warmup_windows": (0, 10_000),
    "n_estimators": (10, 5_000),
    "max_samples": (16, 100_000),
}


@dataclass(frozen=True)
class TrainConfig:
    """How models are trained.

    Parameters
    ----------
    expected_rate:
        Share of normal windows expected to score above the threshold (default 2e-4: about 0.3
        windows per identity per day at 60 s windows, so under the target of 0.5 false alerts
        per identity-day).
    min_windows:
        Windows an identity (or namespace) needs for its own model (default 120: two hours at
        60 s windows); identities with fewer are scored by their namespace's or the global model.
    warmup_windows:
        Each identity's first windows left out of training (default 0: window features do not
        depend on what came before, so the first windows are as good as any).
    """

    expected_rate: float = 2e-4
    min_windows: int = 120
    warmup_windows: int = 0
    n_estimators: int = 100
    max_samples: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        check_ranges(self, _CONSTRAINTS)


@dataclass
class ModelBundle:
    """Every model of one training run, with what is needed to use and audit them."""

    models: dict[str, FittedModel]
    columns: tuple[str, ...]
    config: TrainConfig
    #: The windows the models were trained on; scoring must build the same (length above all).
    windows: WindowConfig
    training_start: datetime
    training_end: datetime
    rows: int
    data_hash: str
    namespaces: dict[str, str] = field(default_factory=dict)  # identity -> namespace
    #: Every edge seen in training (and, in the service, since), so scoring starts from it.
    edges: EdgeMemory = field(default_factory=EdgeMemory)
    #: Each model's training distributions (netwarden.models.drift); None in versions saved
    #: before they were kept: their drift is unavailable.
    drift: DriftReference | None = None

    def model_for(self, identity: str, namespace: str) -> tuple[FittedModel, bool]:
        """The model that scores ``identity``, and whether it is a fallback."""
        own = self.models.get(f"identity:{identity}")
        if own is not None:
            return own, False
        ns = self.models.get(f"namespace:{namespace}")
        if ns is not None:
            return ns, True
        return self.models[GLOBAL], True


def train(
    rows: Sequence[Mapping[str, Any]],
    *,
    config: TrainConfig | None = None,
    windows: WindowConfig | None = None,
    progress: Callable[[int, int], Any] | None = None,
) -> ModelBundle:
    """Train every model from window rows (``identity``, ``namespace``, ``window_start``,
    ``window_end`` and the feature columns), sorted or not, built with ``windows`` (default:
    :class:`WindowConfig`'s defaults), which the bundle records."""
    config = config or TrainConfig()
    windows = windows or WindowConfig()
    by_identity: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        by_identity[row["identity"]].append(row)
    kept: dict[str, list[Mapping[str, Any]]] = {}
    for identity, items in by_identity.items():
        items.sort(key=lambda r: r["window_start"])
        kept[identity] = items[config.warmup_windows :]
    total = sum(len(v) for v in kept.values())
    if total < config.min_windows:
        raise NotEnoughData(
            f"not enough training data: {total:,} usable identity-windows, need at least "
            f"{config.min_windows:,} (e.g. {config.min_windows:,} minutes of one workload's "
            f"traffic at {windows.window_seconds:g} s windows, after the first "
            f"{config.warmup_windows} windows of each identity)"
        )
    namespaces = {identity: items[0]["namespace"] for identity, items in by_identity.items()}
    groups: dict[str, list[Mapping[str, Any]]] = {}
    by_namespace: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for identity, items in sorted(kept.items()):
        if len(items) >= config.min_windows:
            groups[f"identity:{identity}"] = items
        by_namespace[namespaces[identity]].extend(items)
    for namespace, items in sorted(by_namespace.items()):
        if len(items) >= config.min_windows:
            groups[f"namespace:{namespace}"] = items
    all_rows = [row for items in kept.values() for row in items]
    groups[GLOBAL] = all_rows
    models: dict[str, FittedModel] = {}
    drift = DriftReference({})
    for done, (key, items) in enumerate(groups.items()):
        raw = raw_matrix(items)
        x = transform(raw)
        models[key] = fit_model(
            key,
            x,
            raw,
            expected_rate=config.expected_rate,
            n_estimators=config.n_estimators,
            max_samples=config.max_samples,
            seed=config.seed,
            floor=DEVIATION_FLOOR,
        )
        # the drift reference: what live windows of this model's identities are compared with
        drift.groups[key] = build_group(raw, models[key].score(x), models[key].threshold)
        if progress is not None:
            progress(done + 1, len(groups))
    all_raw = raw_matrix(sorted(all_rows, key=lambda r: (r["identity"], r["window_start"])))
    return ModelBundle(
        models=models,
        columns=MODEL_COLUMNS,
        config=config,
        windows=windows,
        training_start=min(r["window_start"] for r in all_rows),
        training_end=max(r["window_end"] for r in all_rows),
        rows=len(all_rows),
        data_hash=data_hash(all_raw),
        namespaces=namespaces,
        drift=drift,
    )

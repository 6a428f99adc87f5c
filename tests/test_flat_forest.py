"""Models scored from their flat arrays (netwarden.models.flatforest): scikit-learn's scores bit
for bit, loaded without importing scikit-learn or skops, and versions saved before the arrays
existed still loading through skops."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from netwarden.detector.scorer import Scorer
from netwarden.ingest.windows import ClosedWindow, windows_to_rows
from netwarden.models import artifact
from netwarden.models.artifact import library_mismatch, load_bundle, save_bundle
from netwarden.models.flatforest import _ARRAYS, FlatForest, FlatForestError
from netwarden.models.spec import raw_matrix, transform
from netwarden.models.training import ModelBundle
from tests.modelfactory import train_on_generated

T0 = datetime(2026, 2, 9, tzinfo=UTC)
# rows of 1e300 overflow the trees' float32, in scikit-learn as in the flat arrays
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[ModelBundle, list[ClosedWindow], Path]:
    out = tmp_path_factory.mktemp("flat")
    bundle, windows = train_on_generated(out / "train", hours=3, seed=53, start=T0)
    save_bundle(bundle, out / "m")
    return bundle, windows, out / "m"


def _rows(windows: list[ClosedWindow], n_features: int) -> np.ndarray:
    """Real windows, then rows far outside anything trained on: wide noise, zeros, huge and
    tiny magnitudes (huge ones overflow the trees' float32 to infinity, as in scikit-learn)."""
    x = transform(raw_matrix(windows_to_rows(windows)))
    rng = np.random.default_rng(11)
    extreme = [rng.normal(0, 5, size=(64, n_features)), np.zeros((1, n_features))]
    for magnitude in (1e-300, 1e6, 1e30, 1e300):
        extreme.append(np.full((1, n_features), magnitude))
        extreme.append(np.full((1, n_features), -magnitude))
        extreme.append(rng.choice([-magnitude, magnitude, 0.0], size=(8, n_features)))
    return np.vstack([x, *extreme])


def test_flat_scores_are_scikit_learns_bit_for_bit(trained, tmp_path) -> None:
    """On real and extreme rows, and rows on either side of the first tree's thresholds, for
    every model: made from the pipeline, and written and read back as a file."""
    bundle, windows, _ = trained
    for model in bundle.models.values():
        pipeline = model.pipeline
        flat = FlatForest.from_pipeline(pipeline)
        rows = np.vstack([_rows(windows, flat.n_features), flat._probes()])
        expected = -pipeline.score_samples(rows)
        assert np.array_equal(flat.score(rows), expected)
        assert np.array_equal(flat.score(rows[-5:]), expected[-5:])  # a small batch
        flat.save(tmp_path / "f.npz")
        again = FlatForest.load(tmp_path / "f.npz")
        assert np.array_equal(again.score(rows), expected)
        # one row at a time, as scikit-learn scored before batching
        for i in range(0, len(rows), 97):
            assert again.score(rows[i : i + 1])[0] == -pipeline.score_samples(rows[i : i + 1])[0]


def test_a_loaded_model_scores_and_explains_as_scikit_learn(trained) -> None:
    """The loaded model has its arrays and no pipeline read; its scores and explanations are
    those of the fitted model's scikit-learn pipeline, and ``netwarden score``'s scorer gives
    the same windows field for field."""
    bundle, windows, models = trained
    loaded = load_bundle(models)
    rows = _rows(windows, len(bundle.columns))
    for key, model in loaded.models.items():
        assert model.flat is not None and vars(model).get("_pipeline") is None  # not read
        fitted = bundle.models[key]
        assert np.array_equal(model.forest_score(rows), -fitted.pipeline.score_samples(rows))
        center = fitted.pipeline.named_steps["scale"].center_
        some = rows[:: max(1, len(rows) // 12)]
        got = model.contributions_many(some, chunk=5)
        for row, mine in zip(some, got, strict=True):
            probes = np.repeat(row[None, :], len(row), axis=0)
            np.fill_diagonal(probes, center)
            base = -fitted.pipeline.score_samples(row[None, :])[0]
            occlusion = (base + fitted.pipeline.score_samples(probes)) / fitted.forest_threshold
            assert np.array_equal(mine, np.maximum(occlusion, fitted.deviations(row[None, :])[0]))
    assert Scorer(loaded).score(windows) == Scorer(bundle).score(windows)


_CHILD = """
import json, sys
import numpy as np
from netwarden.models.artifact import load_bundle
bundle = load_bundle(sys.argv[1])
rows = np.load(sys.argv[2])
model = bundle.models["global"]
scores = model.score(rows)
reasons = model.contributions_many(rows[:20])
before = sorted({m.split(".")[0] for m in sys.modules} & {"sklearn", "skops", "scipy", "joblib"})
pipeline = model.pipeline  # asked for: read now, from the skops file
after = sorted({m.split(".")[0] for m in sys.modules} & {"sklearn", "skops"})
print(json.dumps({"before": before, "after": after, "scores": scores.tolist(),
                  "reasons": reasons.tolist(), "type": type(pipeline).__name__}))
"""


def test_loading_and_scoring_import_neither_scikit_learn_nor_skops(trained, tmp_path) -> None:
    bundle, windows, models = trained
    rows = _rows(windows, len(bundle.columns))
    np.save(tmp_path / "rows.npy", rows)
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(models), str(tmp_path / "rows.npy")],
        capture_output=True,
        text=True,
        check=True,
    )
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["before"] == []
    assert got["after"] == ["sklearn", "skops"] and got["type"] == "Pipeline"
    model = bundle.models["global"]
    assert got["scores"] == model.score(rows).tolist()  # floats through JSON: exact
    assert got["reasons"] == model.contributions_many(rows[:20]).tolist()


def test_a_version_saved_without_flat_arrays_loads_through_skops(
    trained, tmp_path, monkeypatch
) -> None:
    """As every version saved before the arrays existed: no .npz, no ``flat`` entries."""
    bundle, windows, _ = trained
    with monkeypatch.context() as m:
        m.setattr(artifact, "_flat_of", lambda model: None)
        folder = save_bundle(bundle, tmp_path / "old")
    assert not list((folder / "models").glob("*.npz"))
    manifest = json.loads((folder / "manifest.json").read_text())
    assert all("flat" not in entry for entry in manifest["models"])
    loaded = load_bundle(tmp_path / "old")
    for model in loaded.models.values():
        assert model.flat is None and type(model.pipeline).__name__ == "Pipeline"
    assert Scorer(loaded).score(windows) == Scorer(bundle).score(windows)
    # the scikit-learn release matters again for such a version (not for one with arrays)
    manifest["libraries"]["scikit-learn"] = "0.1.0"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert "scikit-learn 0.1.0" in (library_mismatch(tmp_path / "old") or "")
    new = save_bundle(bundle, tmp_path / "new")
    manifest = json.loads((new / "manifest.json").read_text())
    assert all(entry["flat"]["file"].endswith(".npz") for entry in manifest["models"])
    manifest["libraries"]["scikit-learn"] = "0.1.0"
    (new / "manifest.json").write_text(json.dumps(manifest))
    assert library_mismatch(tmp_path / "new") is None


def test_arrays_a_walk_could_go_wrong_on_are_refused(trained) -> None:
    bundle, _, _ = trained
    flat = FlatForest.from_pipeline(bundle.models["global"].pipeline)
    fields = {name: getattr(flat, name) for name in _ARRAYS}

    def refused(**changes: object) -> str:
        with pytest.raises(FlatForestError) as info:
            FlatForest(**{**fields, **changes}, max_samples=flat.max_samples)  # type: ignore[arg-type]
        return str(info.value)

    inner = int(np.flatnonzero(flat.children_left >= 0)[1])
    right = flat.children_right.copy()
    right[inner] = 10**6
    assert "outside their tree" in refused(children_right=right)
    feature = flat.feature.copy()
    feature[0] = flat.n_features
    assert "feature" in refused(feature=feature)
    assert "center/scale" in refused(center=flat.center[:-1])
    assert "tree_offsets" in refused(tree_offsets=flat.tree_offsets[:-1])
    depth = flat.node_depth.copy()
    depth[int(flat.children_left[0])] = 5
    assert "node_depth" in refused(node_depth=depth)
    assert "expected a 1-d array" in refused(threshold=flat.threshold.astype(str))

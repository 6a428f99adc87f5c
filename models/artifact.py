"""Model artifacts on disk: a folder per version, safe to load.

Layout of ``MODEL_DIR``::

    CURRENT                     name of the version in use
    <version>/manifest.json     format, columns, config, windows, training window, rows, data
                                hash, library versions, and per model: file, sha256, threshold,
                                baseline
    <version>/models/<n>.skops  scaling + IsolationForest pipelines (skops, never pickle)
    <version>/models/<n>.npz    the same pipeline as flat numpy arrays (netwarden.models.flatforest),
                                what scoring reads; absent in versions saved before it existed
    <version>/edges.json        the edge memory (netwarden.models.edges)
    <version>/drift.json        training distributions per model (netwarden.models.drift);
                                absent in versions saved before it existed

Loading never runs code from the files: a model's ``.npz`` is read with
``np.load(allow_pickle=False)`` (plain arrays, checked for shape and consistency), and where
there is none (versions saved before it existed) skops rebuilds only the types it is told to
trust, and netwarden trusts exactly the scikit-learn types of its pipeline. With the arrays,
neither scikit-learn nor skops is imported: the skops file is read only if something asks for
the scikit-learn pipeline itself (:class:`~netwarden.models.forest.FittedModel`). Every file's
SHA-256 is checked against the manifest first (the ``.npz`` is parsed from the very bytes
checked), so a changed or truncated file is refused with its name, and a manifest from another
format or with other feature columns is refused with what differs.

With a signing key (:mod:`netwarden.models.signing`) the manifest is signed when saved and its
signature is checked before anything in it is used, so an edited threshold or a swapped file
with a matching digest is refused too; a manifest without a signature is then refused as well.
Every field is checked for its type before use: a malformed manifest is one
:class:`ArtifactError` line naming the field, never a traceback.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import warnings
import zipfile
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson

from netwarden import __version__
from netwarden.ingest.windows import WindowConfig
from netwarden.models.drift import DriftReference, DriftReferenceError
from netwarden.models.edges import EdgeMemory
from netwarden.models.flatforest import FlatForest, FlatForestError
from netwarden.models.forest import FittedModel
from netwarden.models.signing import sign, signature_problem
from netwarden.models.spec import MODEL_COLUMNS
from netwarden.models.training import ModelBundle, TrainConfig

__all__ = [
    "FORMAT",
    "ArtifactError",
    "ModelVersion",
    "current_name",
    "list_versions",
    "load_bundle",
    "read_version",
    "save_bundle",
]

#: 2: baselines hold first-use times; 3: byte features; 4: the edge memory replaces the peer
#: baselines and the novelty features are gone
FORMAT: Final = "netwarden-models/4"
#: The only types skops may rebuild beyond its defaults (numpy, builtins, sklearn estimators).
TRUSTED_TYPES: Final = frozenset({"sklearn.tree._tree.Tree"})


class ArtifactError(ValueError):
    """A model folder that cannot be used: missing, corrupted, tampered with or incompatible."""


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """One saved model version (a folder under the model directory), from its manifest."""

    version: str
    created: datetime
    current: bool
    format: str
    window_seconds: float
    rows: int  # training windows
    models: int  # fitted models: per identity, namespace and global
    identities: tuple[str, ...] = ()  # identities with a model of their own
    training_start: datetime | None = None
    training_end: datetime | None = None
    data_hash: str = ""
    libraries: dict[str, str] = field(default_factory=dict)
    path: Path | None = None
    signed: bool = False  # its manifest carries a signature (checked only when loading)


def list_versions(model_dir: str | Path) -> list[ModelVersion]:
    """Every version folder with a readable manifest, newest first; an empty list when the
    folder does not exist. Reads manifests only (cheap), and checks nothing else: loading does."""
    root = Path(model_dir)
    if not root.is_dir():
        return []
    current = current_name(root)
    found = (read_version(folder, current=current) for folder in root.iterdir())
    return sorted(
        (v for v in found if v is not None), key=lambda v: (v.created, v.version), reverse=True
    )


def read_version(folder: str | Path, *, current: str | None = None) -> ModelVersion | None:
    """The version in ``folder`` from its manifest alone, or None when it has no readable one
    (not a version folder, or a broken one: loading says why). ``current``: the name
    ``CURRENT`` holds, read from the folder's parent when not given."""
    folder = Path(folder)
    if current is None:
        current = current_name(folder.parent)
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        return ModelVersion(
            version=folder.name,
            created=datetime.fromisoformat(manifest["created"]),
            current=folder.name == current,
            format=str(manifest.get("format", "")),
            window_seconds=_windows(manifest).window_seconds,
            rows=int(manifest["rows"]),
            models=len(manifest["models"]),
            identities=tuple(
                sorted(
                    m["key"].split(":", 1)[1]
                    for m in manifest["models"]
                    if m["key"].startswith("identity:")
                )
            ),
            training_start=datetime.fromisoformat(manifest["training_start"]),
            training_end=datetime.fromisoformat(manifest["training_end"]),
            data_hash=str(manifest.get("data_hash", "")),
            libraries=dict(manifest.get("libraries", {})),
            path=folder,
            signed=manifest.get("signature") is not None,
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def current_name(root: str | Path) -> str:
    """The version ``CURRENT`` in ``root`` names ("" when there is none)."""
    current_file = Path(root) / "CURRENT"
    try:
        return current_file.read_text().strip() if current_file.is_file() else ""
    except OSError:
        return ""


def _windows(manifest: dict[str, Any]) -> WindowConfig:
    """The windows a version was trained on: its manifest's ``windows`` or, in manifests written
    before that was recorded, ``window_seconds`` with the other settings at their defaults.
    Settings this netwarden does not know (a newer writer's) are left out."""
    saved = manifest.get("windows")
    if saved is None:
        return WindowConfig(window_seconds=float(manifest["window_seconds"]))
    if not isinstance(saved, dict):
        raise TypeError(f"windows: expected an object, got {type(saved).__name__}")
    known = {f.name for f in fields(WindowConfig)}
    return WindowConfig(**{k: v for k, v in saved.items() if k in known})


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _installed(distribution: str) -> str:
    """The installed version of ``distribution``, without importing it ("" when absent)."""
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return ""


def _libraries() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scikit-learn": _installed("scikit-learn"),
        "skops": _installed("skops"),
        "netwarden": __version__,
    }


def _flat_of(model: FittedModel) -> FlatForest | None:
    """The flat arrays to save beside ``model``'s skops file, or None (with a warning) when its
    pipeline cannot be held by them exactly; that version then loads through skops."""
    if model.flat is not None:
        return model.flat
    try:
        return FlatForest.from_pipeline(model.pipeline)  # checked against scikit-learn
    except FlatForestError as exc:
        warnings.warn(
            f"model {model.key}: saved without flat arrays ({exc}); it will load through skops",
            stacklevel=3,
        )
        return None


def save_bundle(
    bundle: ModelBundle, model_dir: str | Path, *, key: bytes | None = None, current: bool = True
) -> Path:
    """Write ``bundle`` as a new version under ``model_dir`` and make it current (unless
    ``current`` is False: a retraining candidate waiting for the promotion gate); signed with
    ``key`` (see :mod:`netwarden.models.signing`), or marked unsigned without one."""
    import skops.io as sio

    root = Path(model_dir)
    created = datetime.now(UTC)
    version = f"v{created:%Y%m%dT%H%M%S}Z-{bundle.data_hash[:8]}"
    folder = root / version
    (folder / "models").mkdir(parents=True, exist_ok=False)
    entries = []
    for n, (model_key, model) in enumerate(sorted(bundle.models.items())):
        rel = f"models/{n:04d}.skops"
        sio.dump(model.pipeline, folder / rel, compression=zipfile.ZIP_DEFLATED)
        flat = _flat_of(model)
        flat_entry = {}
        if flat is not None:  # what loading reads instead of the skops file
            flat_rel = f"models/{n:04d}.npz"
            flat.save(folder / flat_rel)
            flat_entry = {"flat": {"file": flat_rel, "sha256": _sha256(folder / flat_rel)}}
        entries.append(
            {
                "key": model_key,
                "file": rel,
                "sha256": _sha256(folder / rel),
                **flat_entry,
                "rows": model.rows,
                "forest_threshold": model.forest_threshold,
                "deviation_limits": [
                    x if np.isfinite(x) else None for x in model.deviation_limits.tolist()
                ],
                "median": model.median.tolist(),
                "spread": model.spread.tolist(),
                "t_median": model.t_median.tolist(),
                "t_scale": [x if np.isfinite(x) else None for x in model.t_scale.tolist()],
                "train_score_quantiles": model.train_score_quantiles,
            }
        )
    edges = folder / "edges.json"
    edges.write_bytes(orjson.dumps(bundle.edges.to_json()))
    drift = None
    if bundle.drift is not None:  # the drift reference (netwarden.models.drift)
        (folder / "drift.json").write_bytes(orjson.dumps(bundle.drift.to_json()))
        drift = {"file": "drift.json", "sha256": _sha256(folder / "drift.json")}
    manifest = {
        "format": FORMAT,
        "version": version,
        "created": created.isoformat(),
        "libraries": _libraries(),
        "columns": list(bundle.columns),
        "config": {k: getattr(bundle.config, k) for k in bundle.config.__dataclass_fields__},
        "windows": asdict(bundle.windows),
        # the window length alone, as netwarden releases before "windows" read it
        "window_seconds": bundle.windows.window_seconds,
        "training_start": bundle.training_start.isoformat(),
        "training_end": bundle.training_end.isoformat(),
        "rows": bundle.rows,
        "data_hash": bundle.data_hash,
        "namespaces": bundle.namespaces,
        "edges": {"file": "edges.json", "sha256": _sha256(edges)},
        **({"drift": drift} if drift is not None else {}),
        "models": entries,
    }
    manifest = json.loads(json.dumps(manifest))  # sign exactly what a reader will parse
    manifest["signature"] = sign(manifest, key) if key is not None else None
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    if not current:
        return folder
    tmp = root / "CURRENT.tmp"
    tmp.write_text(version + "\n")
    os.replace(tmp, root / "CURRENT")  # atomic: readers see the old or the new version
    return folder


def _read_manifest(root: Path, version: str | None = None) -> tuple[Path, dict[str, Any]]:
    if not root.is_dir():
        raise ArtifactError(f"{root}: no such model folder; create one with `netwarden train`")
    current = root / "CURRENT"
    if version is None and not current.is_file():
        raise ArtifactError(
            f"{root}: holds no trained model (no CURRENT file); "
            "run `netwarden train --model-dir` first"
        )
    version = version or current.read_text().strip()
    folder = root / version
    if not version or "/" in version or not (folder / "manifest.json").is_file():
        raise ArtifactError(f"{root}: CURRENT names version {version!r}, which has no manifest")
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        if not isinstance(manifest, dict):
            raise TypeError("not a JSON object")
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{folder / 'manifest.json'}: corrupted manifest ({exc})") from None
    return folder, manifest


def _check_compatible(folder: Path, manifest: dict[str, Any]) -> None:
    fmt = manifest.get("format")
    if fmt != FORMAT:
        libraries = manifest.get("libraries")
        made_by = (
            libraries.get("netwarden", "an unknown version")
            if isinstance(libraries, dict)
            else "an unknown version"
        )
        raise ArtifactError(
            f"{folder}: model format {fmt!r} (written by netwarden {made_by}) cannot be read by "
            f"netwarden {__version__}, which reads {FORMAT!r}; retrain with `netwarden train`"
        )
    columns = manifest.get("columns")
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        shown = repr(columns)[:60]
        raise ArtifactError(
            f"{folder / 'manifest.json'}: malformed manifest: columns: expected a list of "
            f"feature names, got {type(columns).__name__} {shown}"
        )
    if columns != list(MODEL_COLUMNS):
        theirs = set(columns)
        ours = set(MODEL_COLUMNS)
        detail = []
        if ours - theirs:
            detail.append("missing " + ", ".join(sorted(ours - theirs)))
        if theirs - ours:
            detail.append("unknown " + ", ".join(sorted(theirs - ours)))
        if not detail:
            detail.append("same features in another order")
        raise ArtifactError(
            f"{folder}: the model's feature columns do not match this netwarden's "
            f"({'; '.join(detail)}); retrain with `netwarden train`"
        )


def _inside(folder: Path, rel: str) -> Path:
    path = (folder / rel).resolve()
    if folder.resolve() not in path.parents:
        raise ArtifactError(f"{folder}: manifest points outside the model folder: {rel!r}")
    if not path.is_file():
        raise ArtifactError(f"{path}: missing from the model folder")
    return path


def _refuse_changed(path: Path, actual: str, expected: str) -> None:
    if actual != expected:
        raise ArtifactError(
            f"{path}: changed since it was written (sha256 {actual[:12]}..., "
            f"manifest says {str(expected)[:12]}...); refusing to load it"
        )


def _verified(folder: Path, rel: str, expected: str) -> Path:
    path = _inside(folder, rel)
    _refuse_changed(path, _sha256(path), expected)
    return path


def _verified_bytes(folder: Path, rel: str, expected: str) -> tuple[Path, bytes]:
    """The bytes of a checked file: what is parsed is exactly what was checked."""
    path = _inside(folder, rel)
    data = path.read_bytes()
    _refuse_changed(path, hashlib.sha256(data).hexdigest(), expected)
    return path, data


def _load_flat(folder: Path, entry: dict[str, Any]) -> FlatForest:
    path, data = _verified_bytes(folder, entry["file"], entry["sha256"])
    try:
        flat = FlatForest.load(path, data=data)
    except FlatForestError as exc:
        raise ArtifactError(f"{path}: cannot be loaded ({exc})") from None
    if flat.n_features != len(MODEL_COLUMNS):
        raise ArtifactError(
            f"{path}: holds a forest of {flat.n_features} columns, the model has "
            f"{len(MODEL_COLUMNS)}; refusing to load it"
        )
    return flat


class _PipelineReader:
    """Reads a model's skops file when its scikit-learn pipeline is first asked for (a model
    loaded from its flat arrays), checking its digest again: the file is read then, not now."""

    def __init__(self, folder: Path, rel: str, expected: str) -> None:
        self.folder, self.rel, self.expected = folder, rel, expected

    def __call__(self) -> Any:
        return _load_pipeline(_verified(self.folder, self.rel, self.expected))


def _load_pipeline(path: Path) -> Any:
    import skops.io as sio

    try:
        untrusted = set(sio.get_untrusted_types(file=path))
    except Exception as exc:
        raise ArtifactError(f"{path}: not a readable skops file ({exc})") from None
    unexpected = untrusted - TRUSTED_TYPES
    if unexpected:
        raise ArtifactError(
            f"{path}: contains types netwarden does not trust "
            f"({', '.join(sorted(unexpected))}); refusing to load it"
        )
    try:
        return sio.load(path, trusted=sorted(untrusted))
    except Exception as exc:
        raise ArtifactError(f"{path}: cannot be loaded ({exc})") from None


def _floats(values: list[float | None]) -> np.ndarray:
    """A manifest vector (None stands for infinity) with the length of the model columns."""
    if not isinstance(values, list) or len(values) != len(MODEL_COLUMNS):
        raise ValueError(f"expected {len(MODEL_COLUMNS)} numbers")
    return np.asarray([np.inf if v is None else float(v) for v in values], dtype=np.float64)


class _Malformed(Exception):
    """A manifest field of the wrong type or value (``where``: its path in the manifest)."""

    def __init__(self, where: str, expected: str, got: Any) -> None:
        shown = repr(got)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        super().__init__(f"{where}: expected {expected}, got {type(got).__name__} {shown}")


def _is_number(v: Any, *, finite: bool = True) -> bool:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool)
    return ok and (not finite or math.isfinite(v))


def _need(ok: bool, where: str, expected: str, got: Any) -> None:
    if not ok:
        raise _Malformed(where, expected, got)


def _timestamp(m: dict[str, Any], name: str) -> None:
    v = m.get(name)
    _need(isinstance(v, str), name, "an ISO 8601 timestamp", v)
    try:
        datetime.fromisoformat(v)
    except ValueError:
        raise _Malformed(name, "an ISO 8601 timestamp", v) from None


def _vector(entry: dict[str, Any], name: str, where: str, *, infinite: bool) -> None:
    v = entry.get(name)
    n = len(MODEL_COLUMNS)
    what = f"a list of {n} numbers" + (" (null: unbounded)" if infinite else "")
    _need(isinstance(v, list) and len(v) == n, f"{where}.{name}", what, v)
    for i, x in enumerate(v):
        _need(
            _is_number(x) or (infinite and x is None), f"{where}.{name}[{i}]", "a finite number", x
        )


def _check_fields(m: dict[str, Any]) -> None:
    """Raise :class:`_Malformed` for the first field of the wrong type (compatible format)."""
    _need(
        isinstance(m.get("columns"), list) and all(isinstance(c, str) for c in m["columns"]),
        "columns",
        "a list of feature names",
        m.get("columns"),
    )
    _need(isinstance(m.get("config"), dict), "config", "an object", m.get("config"))
    if "windows" in m:
        _need(isinstance(m["windows"], dict), "windows", "an object", m["windows"])
    else:
        _need(
            _is_number(m.get("window_seconds")),
            "window_seconds",
            "a number",
            m.get("window_seconds"),
        )
    for name in ("created", "training_start", "training_end"):
        _timestamp(m, name)
    rows = m.get("rows")
    _need(
        isinstance(rows, int) and not isinstance(rows, bool) and rows >= 0, "rows", "a count", rows
    )
    _need(isinstance(m.get("data_hash"), str), "data_hash", "a string", m.get("data_hash"))
    ns = m.get("namespaces")
    _need(
        isinstance(ns, dict) and all(isinstance(v, str) for v in ns.values()),
        "namespaces",
        "an object of identity: namespace",
        ns,
    )
    if "libraries" in m:
        _need(isinstance(m["libraries"], dict), "libraries", "an object", m["libraries"])
    _file_entry(m.get("edges"), "edges")
    if "drift" in m:
        _file_entry(m["drift"], "drift")
    models = m.get("models")
    _need(isinstance(models, list) and len(models) > 0, "models", "a non-empty list", models)
    keys: set[str] = set()
    for i, entry in enumerate(models):
        where = f"models[{i}]"
        _file_entry(entry, where)
        if "flat" in entry:
            _file_entry(entry["flat"], f"{where}.flat")
        key = entry.get("key")
        _need(isinstance(key, str) and key not in keys, f"{where}.key", "a unique model key", key)
        keys.add(key)
        rows = entry.get("rows")
        _need(
            isinstance(rows, int) and not isinstance(rows, bool) and rows >= 0,
            f"{where}.rows",
            "a count",
            rows,
        )
        _need(
            _is_number(entry.get("forest_threshold")),
            f"{where}.forest_threshold",
            "a finite number",
            entry.get("forest_threshold"),
        )
        for name in ("median", "spread", "t_median"):
            _vector(entry, name, where, infinite=False)
        for name in ("deviation_limits", "t_scale"):
            _vector(entry, name, where, infinite=True)
        quantiles = entry.get("train_score_quantiles", {})
        _need(
            isinstance(quantiles, dict) and all(_is_number(v) for v in quantiles.values()),
            f"{where}.train_score_quantiles",
            "an object of numbers",
            quantiles,
        )
    _need("global" in keys, "models", "a global model among them", sorted(keys)[:5])


def _file_entry(entry: Any, where: str) -> None:
    _need(isinstance(entry, dict), where, "an object", entry)
    _need(isinstance(entry.get("file"), str), f"{where}.file", "a file name", entry.get("file"))
    digest = entry.get("sha256")
    _need(
        isinstance(digest, str) and len(digest) == 64,
        f"{where}.sha256",
        "a SHA-256 hex digest",
        digest,
    )


def load_bundle(
    model_dir: str | Path,
    *,
    key: bytes | None = None,
    require_signature: bool | None = None,
    version: str | None = None,
) -> ModelBundle:
    """Load the current version of ``model_dir`` (or ``version``), verifying it before
    trusting any of it.

    With ``key``, a signed manifest must carry that key's signature, and an unsigned one is
    refused unless ``require_signature`` is False (by default it is required exactly when a
    key is given). Without a key, signatures cannot be checked: the file digests still are.
    """
    root = Path(model_dir)
    folder, manifest = _read_manifest(root, version)
    required = key is not None if require_signature is None else require_signature
    problem = signature_problem(manifest, key, required=required)
    if problem is not None:
        raise ArtifactError(f"{folder}: refusing the model: {problem}")
    _check_compatible(folder, manifest)
    try:
        _check_fields(manifest)
    except _Malformed as exc:
        raise ArtifactError(f"{folder / 'manifest.json'}: malformed manifest: {exc}") from None
    settings: dict[str, Any] = {}
    for name, make in (
        ("config", lambda: TrainConfig(**manifest["config"])),
        ("windows", lambda: _windows(manifest)),
    ):
        try:
            settings[name] = make()
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(
                f"{folder / 'manifest.json'}: corrupted manifest ({name}: {exc})"
            ) from None
    try:
        models: dict[str, FittedModel] = {}
        for entry in manifest["models"]:
            path = _verified(folder, entry["file"], entry["sha256"])
            flat = reader = pipeline = None
            if "flat" in entry:  # scored from its arrays; the skops file only if asked for
                flat = _load_flat(folder, entry["flat"])
                reader = _PipelineReader(folder, entry["file"], entry["sha256"])
            else:  # saved before flat arrays existed
                pipeline = _load_pipeline(path)
            models[entry["key"]] = FittedModel(
                key=entry["key"],
                pipeline=pipeline,
                flat=flat,
                load_pipeline=reader,
                forest_threshold=float(entry["forest_threshold"]),
                deviation_limits=_floats(entry["deviation_limits"]),
                rows=int(entry["rows"]),
                median=_floats(entry["median"]),
                spread=_floats(entry["spread"]),
                t_median=_floats(entry["t_median"]),
                t_scale=_floats(entry["t_scale"]),
                train_score_quantiles=dict(entry.get("train_score_quantiles", {})),
            )
        entry = manifest["edges"]
        edges = EdgeMemory.from_json(
            orjson.loads(_verified(folder, entry["file"], entry["sha256"]).read_bytes())
        )
        drift = None  # versions saved before drift references: drift unavailable
        if "drift" in manifest:
            entry = manifest["drift"]
            try:
                drift = DriftReference.from_json(
                    orjson.loads(_verified(folder, entry["file"], entry["sha256"]).read_bytes())
                )
            except DriftReferenceError as exc:
                raise ArtifactError(f"{folder / entry['file']}: malformed: {exc}") from None
        return ModelBundle(
            models=models,
            columns=tuple(manifest["columns"]),
            config=settings["config"],
            windows=settings["windows"],
            training_start=datetime.fromisoformat(manifest["training_start"]),
            training_end=datetime.fromisoformat(manifest["training_end"]),
            rows=int(manifest["rows"]),
            data_hash=str(manifest["data_hash"]),
            namespaces=dict(manifest["namespaces"]),
            edges=edges,
            drift=drift,
        )
    except ArtifactError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(
            f"{folder / 'manifest.json'}: corrupted manifest ({type(exc).__name__}: {exc})"
        ) from None


def library_mismatch(model_dir: str | Path) -> str | None:
    """A warning when the current version was written with another scikit-learn release and
    is scored with scikit-learn (saved without flat arrays: their scores are the saved
    forest's whatever scikit-learn is installed)."""
    _, manifest = _read_manifest(Path(model_dir))
    models = manifest.get("models")
    if isinstance(models, list) and all(isinstance(m, dict) and "flat" in m for m in models):
        return None
    libraries = manifest.get("libraries")
    theirs = libraries.get("scikit-learn", "") if isinstance(libraries, dict) else ""
    theirs = theirs if isinstance(theirs, str) else ""
    ours = _libraries()["scikit-learn"]
    if theirs.split(".")[:2] != ours.split(".")[:2]:
        return (
            f"models were trained with scikit-learn {theirs}, this is {ours}: scores may "
            "differ slightly; retrain when convenient"
        )
    return None

"""Signed model artifacts: an edited or unsigned manifest is refused when a key is configured,
and a malformed manifest is one ArtifactError line naming the field, never a traceback."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import shutil
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netwarden.detector.scorer import Scorer
from netwarden.ingest.windows import ClosedWindow, WindowConfig
from netwarden.models.artifact import ArtifactError, list_versions, load_bundle, save_bundle
from netwarden.models.registry import CurrentModel
from netwarden.models.signing import SigningKeyError, ensure_key, key_id, load_key
from netwarden.models.training import ModelBundle
from tests.modelfactory import train_on_generated

T0 = datetime(2026, 2, 2, tzinfo=UTC)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[ModelBundle, list[ClosedWindow]]:
    out = tmp_path_factory.mktemp("signing")
    return train_on_generated(out / "train", hours=3, seed=47, start=T0, n_estimators=20)


@pytest.fixture(scope="module")
def key(tmp_path_factory) -> bytes:
    return ensure_key(tmp_path_factory.mktemp("key") / "model-signing.key")


@pytest.fixture(scope="module")
def unsigned_dir(trained, tmp_path_factory) -> Path:
    """A model folder saved once without a key; tests change copies of it."""
    root = tmp_path_factory.mktemp("unsigned") / "m"
    save_bundle(trained[0], root)
    return root


def copy_of(model_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A fresh copy of ``model_dir`` and its current version folder."""
    root = tmp_path / "m"
    shutil.copytree(model_dir, root)
    return root, root / (root / "CURRENT").read_text().strip()


def manifest_of(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "manifest.json").read_text())


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    (folder / "manifest.json").write_text(json.dumps(manifest))


def refused(model_dir: Path, **kwargs: Any) -> str:
    """The one-line reason load_bundle refuses the current version."""
    with pytest.raises(ArtifactError) as info:
        load_bundle(model_dir, **kwargs)
    message = str(info.value)
    assert "\n" not in message and len(message) < 600, message
    return message


def test_a_signed_version_loads_with_its_key_and_scores_the_same(trained, tmp_path, key) -> None:
    bundle, windows = trained
    folder = save_bundle(bundle, tmp_path / "m", key=key)
    signature = manifest_of(folder)["signature"]
    assert signature["algorithm"] == "hmac-sha256" and signature["key_id"] == key_id(key)
    assert key.hex() not in json.dumps(signature) and key.decode() not in json.dumps(signature)
    loaded = load_bundle(tmp_path / "m", key=key)
    assert [s.score for s in Scorer(loaded).score(windows[-50:])] == [
        s.score for s in Scorer(bundle).score(windows[-50:])
    ]
    assert load_bundle(tmp_path / "m").rows == bundle.rows  # no key: digests checked only
    assert list_versions(tmp_path / "m")[0].signed


def test_an_edited_threshold_in_a_signed_manifest_is_refused(trained, tmp_path, key) -> None:
    bundle, _ = trained
    folder = save_bundle(bundle, tmp_path / "m", key=key)
    manifest = manifest_of(folder)
    for entry in manifest["models"]:
        entry["forest_threshold"] = 1e9  # no window would ever be anomalous
    write_manifest(folder, manifest)
    reason = refused(tmp_path / "m", key=key)
    assert "manifest was changed after it was signed" in reason and folder.name in reason


def test_a_swapped_file_with_a_fixed_digest_is_refused(trained, tmp_path, key) -> None:
    bundle, _ = trained
    folder = save_bundle(bundle, tmp_path / "m", key=key)
    victim, other = sorted((folder / "models").glob("*.skops"))[:2]
    shutil.copyfile(other, victim)  # a valid model in the wrong place
    manifest = manifest_of(folder)
    for entry in manifest["models"]:
        if entry["file"] == f"models/{victim.name}":
            entry["sha256"] = hashlib.sha256(victim.read_bytes()).hexdigest()
    write_manifest(folder, manifest)
    assert load_bundle(tmp_path / "m").rows == bundle.rows  # digests alone cannot tell
    assert "changed after it was signed" in refused(tmp_path / "m", key=key)


def test_swapped_or_tampered_flat_arrays_are_refused_with_a_key(trained, tmp_path, key) -> None:
    """A model's .npz is named in the signed manifest like its skops file: another model's
    arrays with the digest fixed load without a key (digests alone cannot tell) and are
    refused with one; a changed byte is refused either way."""
    bundle, _ = trained
    folder = save_bundle(bundle, tmp_path / "m", key=key)
    signed = manifest_of(folder)
    manifest = copy.deepcopy(signed)
    assert all(entry["flat"]["file"].endswith(".npz") for entry in manifest["models"])
    victim, other = sorted((folder / "models").glob("*.npz"))[:2]
    original = victim.read_bytes()
    shutil.copyfile(other, victim)
    for entry in manifest["models"]:
        if entry["flat"]["file"] == f"models/{victim.name}":
            entry["flat"]["sha256"] = hashlib.sha256(victim.read_bytes()).hexdigest()
    write_manifest(folder, manifest)
    assert load_bundle(tmp_path / "m").rows == bundle.rows
    assert "changed after it was signed" in refused(tmp_path / "m", key=key)
    victim.write_bytes(original[:-1])  # truncated, the manifest as it was signed
    write_manifest(folder, signed)
    reason = refused(tmp_path / "m", key=key)
    assert victim.name in reason and "changed since it was written" in reason


def test_unsigned_or_foreign_versions_are_refused_when_a_key_is_configured(
    trained, unsigned_dir, tmp_path, key
) -> None:
    bundle, _ = trained
    _, folder = copy_of(unsigned_dir, tmp_path)  # `netwarden train` without --signing-key
    assert manifest_of(folder)["signature"] is None and not list_versions(tmp_path / "m")[0].signed
    assert "unsigned" in refused(tmp_path / "m", key=key)
    assert load_bundle(tmp_path / "m").rows == bundle.rows  # no key configured: accepted
    assert load_bundle(tmp_path / "m", key=key, require_signature=False).rows == bundle.rows
    other = ensure_key(tmp_path / "other.key")
    save_bundle(bundle, tmp_path / "n", key=other)
    assert "signed with another key" in refused(tmp_path / "n", key=key)
    assert "no signing key is configured" in refused(tmp_path / "n", require_signature=True)
    manifest = manifest_of(tmp_path / "n" / (tmp_path / "n" / "CURRENT").read_text().strip())
    manifest["signature"] = "trust me"
    write_manifest(tmp_path / "n" / manifest["version"], manifest)
    assert "signature: expected" in refused(tmp_path / "n", key=other)


def test_the_service_keeps_its_model_when_a_new_version_is_refused(trained, tmp_path, key) -> None:
    bundle, _ = trained
    models = tmp_path / "m"
    first = save_bundle(bundle, models, key=key)
    current = CurrentModel(models, windows=WindowConfig(window_seconds=60), key=key)
    assert current.refresh() and current.loaded is not None
    assert current.loaded.version == first.name
    second = save_bundle(dataclasses.replace(bundle, data_hash="f" * 64), models, key=key)
    manifest = manifest_of(second)
    manifest["models"][0]["forest_threshold"] = 1e9
    write_manifest(second, manifest)
    assert not current.refresh()
    assert current.loaded.version == first.name  # still in service
    assert current.error is not None and "\n" not in current.error
    assert current.error.startswith(f"model {second.name} refused: ")
    assert "changed after it was signed" in current.error
    third = save_bundle(dataclasses.replace(bundle, data_hash="e" * 64), models)  # unsigned
    assert not current.refresh() and current.loaded.version == first.name
    assert "unsigned" in (current.error or "") and third.name in (current.error or "")
    # what the status shows: the version in service, as the list of versions has it
    (listed,) = [v for v in list_versions(models) if v.version == first.name]
    assert current.current() == listed and current.current() is not None
    unchecked = CurrentModel(models, windows=WindowConfig(window_seconds=60))  # no key: as before
    assert unchecked.refresh() and unchecked.loaded is not None


def test_key_files(tmp_path) -> None:
    path = tmp_path / "data" / "model-signing.key"
    path.parent.mkdir()
    made = ensure_key(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # the embedded default's own key
    assert len(made) == 64 and ensure_key(path) == made == load_key(path)  # made once
    secret = tmp_path / "secret"  # a mounted Secret: the key and the newline kubectl kept
    secret.write_bytes(b"k" * 40 + b"\n")
    assert load_key(secret) == b"k" * 40
    secret.write_bytes(b"short\n")
    with pytest.raises(SigningKeyError, match="5 bytes, at least 32"):
        load_key(secret)
    with pytest.raises(SigningKeyError, match="cannot read"):
        load_key(tmp_path / "absent")
    secret.write_bytes(b"x" * 10_000)
    with pytest.raises(SigningKeyError, match="not a signing key"):
        load_key(secret)


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("columns", 5, "columns: expected a list of feature names, got int 5"),
        ("rows", "many", "rows: expected a count"),
        ("models", {}, "models: expected a non-empty list"),
        ("namespaces", [], "namespaces: expected an object"),
        ("training_start", "yesterday", "training_start: expected an ISO 8601 timestamp"),
        ("edges", None, "edges: expected an object"),
        ("libraries", "sklearn", "libraries: expected an object"),
        ("config", {"n_estimators": "lots"}, "config: "),
    ],
)
def test_malformed_manifests_name_the_field(unsigned_dir, tmp_path, field, value, named) -> None:
    _, folder = copy_of(unsigned_dir, tmp_path)
    manifest = manifest_of(folder)
    manifest[field] = value
    write_manifest(folder, manifest)
    assert named in refused(tmp_path / "m")


def test_malformed_model_entries_name_the_field(unsigned_dir, tmp_path) -> None:
    _, folder = copy_of(unsigned_dir, tmp_path)
    manifest = manifest_of(folder)
    manifest["models"][1]["forest_threshold"] = "high"
    write_manifest(folder, manifest)
    assert "models[1].forest_threshold: expected a finite number" in refused(tmp_path / "m")
    manifest["models"][1]["forest_threshold"] = 0.5
    manifest["models"][2]["median"] = manifest["models"][2]["median"][:-1]
    write_manifest(folder, manifest)
    assert "models[2].median: expected a list of" in refused(tmp_path / "m")
    del manifest["models"][2]["median"]
    write_manifest(folder, manifest)
    assert "models[2].median: expected a list of" in refused(tmp_path / "m")


# ---------------------------------------------------------------------------------------- fuzz

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON document (object keys and list indexes), parents first."""
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value[:3]):  # the first few elements of long vectors suffice
            out += _paths(v, (*prefix, i))
    return out


@pytest.fixture(scope="module")
def saved(unsigned_dir, tmp_path_factory) -> tuple[Path, dict[str, Any], list[tuple[Any, ...]]]:
    root, folder = copy_of(unsigned_dir, tmp_path_factory.mktemp("fuzz"))
    manifest = manifest_of(folder)
    # three models (the global one among them) keep each load short; still a valid version
    models = manifest["models"]
    manifest["models"] = [m for m in models if m["key"] == "global"] + [
        m for m in models if m["key"] != "global"
    ][:2]
    write_manifest(folder, manifest)
    assert load_bundle(root).models.keys() == {m["key"] for m in manifest["models"]}
    return root, manifest, _paths(manifest)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_any_mutated_manifest_loads_or_is_refused_in_one_line(saved, data) -> None:
    root, original, paths = saved
    manifest = copy.deepcopy(original)
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        path = data.draw(st.sampled_from(paths), label="path")
        parent: Any = manifest
        try:
            for step in path[:-1]:
                parent = parent[step]
            if data.draw(st.booleans(), label="delete") and isinstance(parent, dict):
                parent.pop(path[-1], None)
            else:
                parent[path[-1]] = data.draw(_values, label="value")
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced this place
    folder = root / original["version"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    try:
        for key in (None, b"k" * 32):
            try:
                load_bundle(root, key=key)
            except ArtifactError as exc:
                assert "\n" not in str(exc)
    finally:
        (folder / "manifest.json").write_text(json.dumps(original))

"""The model a running service scores with, reloaded when a new version becomes current.

``netwarden train`` (or a scheduled retraining) writes a new version and switches the model
folder's ``CURRENT`` file atomically; :class:`CurrentModel` notices on its next :meth:`refresh`
and swaps the loaded bundle in one assignment, so scoring threads see the old or the new model, never a
mix. A version that cannot be used (tampered, incompatible, another window length) is refused
with its reason kept in :attr:`error`, and the previous model stays in service. With a signing
key, a version must carry that key's signature (:mod:`netwarden.models.signing`): an edited
manifest or an unsigned version is refused the same way.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from netwarden.ingest.windows import WindowConfig
from netwarden.models.artifact import (
    ArtifactError,
    ModelVersion,
    current_name,
    list_versions,
    load_bundle,
    read_version,
)
from netwarden.models.spec import MODEL_COLUMNS
from netwarden.models.training import ModelBundle

__all__ = [
    "GATE_FILE",
    "CurrentModel",
    "LoadedModel",
    "RegistryError",
    "current_version",
    "promotions",
    "prune_versions",
    "read_gate",
    "rollback_target",
    "set_current",
    "write_gate",
]


@dataclass(frozen=True, slots=True)
class LoadedModel:
    version: str
    bundle: ModelBundle


class CurrentModel:
    """Holds the loaded current version of ``model_dir``; thread-safe to read.

    ``windows`` are the windows the service builds: a version trained on another window length
    is refused (its scores would mean nothing). Other settings (lateness) may differ. ``key``
    is the signing key: with one, only versions it signed are loaded; without one (None),
    signatures are not checked.
    """

    def __init__(self, model_dir: Path, *, windows: WindowConfig, key: bytes | None = None) -> None:
        self.model_dir = Path(model_dir)
        self.windows = windows
        self._key = key
        self.loaded: LoadedModel | None = None
        self.error: str | None = None
        self._lock = threading.Lock()
        self._seen: str | None = None

    @property
    def key(self) -> bytes | None:
        """The signing key versions are verified with (None: not checked)."""
        return self._key

    def _current_name(self) -> str | None:
        try:
            return (self.model_dir / "CURRENT").read_text().strip() or None
        except OSError:
            return None

    def refresh(self) -> bool:
        """Load the current version if it changed; True when a new model is now in service."""
        with self._lock:
            name = self._current_name()
            if name is None or name == self._seen:
                return False
            self._seen = name
            try:
                bundle = load_bundle(self.model_dir, key=self._key)
                theirs, ours = bundle.windows.window_seconds, self.windows.window_seconds
                if abs(theirs - ours) > 1e-9:
                    raise ArtifactError(
                        f"model {name} uses {theirs:g} s windows, the service {ours:g} s; "
                        "set windows.seconds to match or retrain"
                    )
                if tuple(bundle.columns) != MODEL_COLUMNS:
                    raise ArtifactError("its feature columns do not match this netwarden's")
            except (ArtifactError, ValueError) as exc:
                self.error = f"model {name} refused: {exc}"
                return False
            self.loaded = LoadedModel(name, bundle)
            self.error = None
            return True

    def versions(self) -> list[ModelVersion]:
        return list_versions(self.model_dir)

    def current(self) -> ModelVersion | None:
        """The loaded version, from its manifest alone (the status asks for it often: not a
        read of every version's manifest each time)."""
        loaded = self.loaded
        if loaded is None:
            return None
        return read_version(Path(self.model_dir) / loaded.version)


# -- versions: promotion, rollback, retention ------------------------------------------------

#: One JSON object per switch of ``CURRENT`` (time, version, previous, actor, action, reason),
#: oldest first: what ``rollback`` goes back along and ``models list`` shows.
PROMOTIONS = "promotions.jsonl"
#: The promotion gate's decision and figures, written into a version's folder.
GATE_FILE = "gate.json"


class RegistryError(ValueError):
    """A version that does not exist, or a switch that cannot be made; the message says why."""


def current_version(model_dir: Path) -> str | None:
    """The version ``CURRENT`` names, or None."""
    return current_name(model_dir) or None


def _check_version(model_dir: Path, version: str) -> None:
    if not version or "/" in version or version.startswith("."):
        raise RegistryError(f"{version!r} is not a version name")
    if not (Path(model_dir) / version / "manifest.json").is_file():
        known = ", ".join(v.version for v in list_versions(model_dir)[:5]) or "none"
        raise RegistryError(f"{model_dir}: no version {version!r} (newest: {known})")


def set_current(
    model_dir: Path,
    version: str,
    *,
    actor: str,
    action: str,
    reason: str = "",
    key: bytes | None = None,
) -> str | None:
    """Make ``version`` current, atomically (a service's next :meth:`CurrentModel.refresh`
    picks it up); returns the version it replaced. The version is loaded (and its signature
    checked with ``key``) first, so a broken version is refused before anything changes."""
    from netwarden.models.artifact import load_bundle

    model_dir = Path(model_dir)
    _check_version(model_dir, version)
    try:
        load_bundle(model_dir, key=key, version=version)
    except (ArtifactError, ValueError) as exc:
        raise RegistryError(f"version {version} cannot be made current: {exc}") from None
    previous = current_version(model_dir)
    tmp = model_dir / f"CURRENT.{os.getpid()}.{threading.get_ident()}.tmp"
    tmp.write_text(version + "\n")
    os.replace(tmp, model_dir / "CURRENT")
    entry = {
        "at": datetime.now(UTC).isoformat(),
        "action": action,
        "version": version,
        "previous": previous,
        "actor": actor,
        "reason": reason,
    }
    with open(model_dir / PROMOTIONS, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry, sort_keys=True) + "\n")
    return previous


def promotions(model_dir: Path) -> list[dict[str, Any]]:
    """The switches of ``CURRENT`` recorded in :data:`PROMOTIONS`, oldest first."""
    path = Path(model_dir) / PROMOTIONS
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a torn last line: the others still count
        if isinstance(entry, dict):
            out.append(entry)
    return out


def rollback_target(model_dir: Path) -> str:
    """The version that was current before the current one (following rollbacks back: a
    second rollback goes one further), for ``rollback`` without a version."""
    current = current_version(model_dir)
    if current is None:
        raise RegistryError(f"{model_dir}: no current version to roll back from")
    # The newest switch that made `current` current other than by a rollback names what it
    # replaced (after promote v2, promote v3, rollback to v2, the next rollback goes to v1).
    for entry in reversed(promotions(model_dir)):
        if entry.get("version") == current and entry.get("action") != "rollback":
            previous = entry.get("previous")
            if previous and (Path(model_dir) / str(previous) / "manifest.json").is_file():
                return str(previous)
            break
    versions = list_versions(model_dir)  # newest first
    mine = next((v for v in versions if v.version == current), None)
    older = [v.version for v in versions if mine is not None and v.created < mine.created]
    if not older:
        raise RegistryError(f"{model_dir}: no earlier version to roll back to")
    return older[0]


def read_gate(model_dir: Path, version: str) -> dict[str, Any] | None:
    """The promotion gate's report of ``version`` (None for versions not made by retraining)."""
    path = Path(model_dir) / version / GATE_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_gate(model_dir: Path, version: str, report: dict[str, Any]) -> Path:
    """Write (atomically) the gate's report into ``version``'s folder."""
    folder = Path(model_dir) / version
    tmp = folder / f".{GATE_FILE}.tmp"
    tmp.write_text(json.dumps(report, indent=1, sort_keys=True))
    os.replace(tmp, folder / GATE_FILE)
    return folder / GATE_FILE


def prune_versions(model_dir: Path, keep: int) -> list[str]:
    """Delete all but the ``keep`` newest versions, never the current one nor the one a
    rollback would return to; returns the deleted versions."""
    if keep < 1:
        raise RegistryError(f"models.keep_versions must be at least 1, got {keep}")
    model_dir = Path(model_dir)
    current = current_version(model_dir)
    protected = {current}
    try:
        protected.add(rollback_target(model_dir))
    except RegistryError:
        pass
    versions = list_versions(model_dir)  # newest first
    deleted = []
    for v in versions[keep:]:
        if v.version in protected or v.path is None:
            continue
        shutil.rmtree(v.path, ignore_errors=True)
        deleted.append(v.version)
    return deleted

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

import threading
from dataclasses import dataclass
from pathlib import Path

from netwarden.ingest.windows import WindowConfig
from netwarden.models.artifact import ArtifactError, ModelVersion, list_versions, load_bundle
from netwarden.models.spec import MODEL_COLUMNS
from netwarden.models.training import ModelBundle

__all__ = ["CurrentModel", "LoadedModel"]


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
        loaded = self.loaded
        if loaded is None:
            return None
        return next((v for v in self.versions() if v.version == loaded.version), None)

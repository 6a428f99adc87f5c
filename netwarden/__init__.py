"""netwarden: network anomaly detection for Kubernetes.

The repository's top-level folders (``ingest/``, ``detector/``, ``models/``, ...) are installed
as subpackages of this package (``netwarden.ingest``, ...) through setuptools' package-dir
mapping; see ``pyproject.toml``.
"""

__version__ = "0.1.0"

"""Shared fixtures: where the reference data lives, and small flow builders."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.netns import pods  # noqa: F401 - the stand-in pods fixture of the eBPF tests
from tests.storage_backends import (  # noqa: F401 - store tests on SQLite and PostgreSQL
    backend_url,
    postgres,
    postgres_url,
)

#: Reference data copied into the repository (sources and licences in tests/data/README.md):
#: tests never read outside it.
DATA = Path(__file__).resolve().parent / "data"
HUBBLE_SAMPLES = sorted((DATA / "hubble").glob("*/*.json*"))


@pytest.fixture(scope="session")
def hubble_samples() -> list[Path]:
    assert HUBBLE_SAMPLES, f"the real Hubble samples are missing from {DATA / 'hubble'}"
    return HUBBLE_SAMPLES

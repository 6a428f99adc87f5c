"""Shared fixtures: where the reference data lives, and small flow builders."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.netns import pods  # noqa: F401 - the stand-in pods fixture of the eBPF tests

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
HUBBLE_SAMPLES = sorted((SHARED_DATA / "hubble").glob("*/*.json*"))


@pytest.fixture(scope="session")
def hubble_samples() -> list[Path]:
    if not HUBBLE_SAMPLES:
        pytest.skip(f"reference samples not found under {SHARED_DATA}")
    return HUBBLE_SAMPLES

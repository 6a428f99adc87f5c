"""notebooks/: stored without outputs, and each runs top to bottom in a real kernel against a
real ``netwarden serve`` on generated traffic with attacks (notebooks/demo.py, as ``make
notebooks`` runs them)."""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
PATHS = sorted(NOTEBOOKS.glob("[0-9]*.ipynb"))


def _demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("notebook_demo", NOTEBOOKS / "demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being made
    spec.loader.exec_module(module)
    return module


def test_three_notebooks_stored_without_outputs() -> None:
    assert [p.name for p in PATHS] == [
        "1-tour.ipynb",
        "2-investigate-an-anomaly.ipynb",
        "3-the-model.ipynb",
    ]
    for path in PATHS:
        book = nbformat.read(path, as_version=4)
        nbformat.validate(book)
        code = [c for c in book.cells if c.cell_type == "code"]
        assert code, path.name
        for cell in code:
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{path.name}: a cell is stored with its outputs; clear them before committing"
            )
        assert book.metadata["kernelspec"]["name"] == "python3"


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[Any, dict[str, str]]]:
    demo = _demo()
    prepared = demo.prepare(tmp_path_factory.mktemp("notebooks"))
    with demo.serving(prepared) as (url, token):
        yield demo, demo.environment(prepared, url, token)


@pytest.mark.slow
@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_notebook_runs_top_to_bottom(served, path: Path) -> None:
    demo, env = served
    started = time.monotonic()
    demo.run_notebook(path, env, timeout=240)
    took = time.monotonic() - started
    assert took < 120, f"{path.name} took {took:.0f} s; keep the generated data small"
    # executing never writes outputs back into the stored notebook
    assert all(c.get("outputs", []) == [] for c in nbformat.read(path, as_version=4).cells)

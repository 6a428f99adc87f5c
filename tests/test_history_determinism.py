"""The lifecycle benchmark's two arms must agree before the first retraining.

``benchmarks/lifecycle.py`` runs every step (``netwarden history``, ``retrain``) as a process.
Run against the live checkout, an arm that ran a day after an edit of the tree ran other code
than the other arm, and carried the difference on through its store and edge memory: a run
showed the static arm differing from day 3 on, with no retraining before day 7. So the
benchmark takes one snapshot of the tree at its start and runs every step from it.

And the history path itself is deterministic: two arms over the same days, in processes with
different hash seeds, write the same window history, the same anomalies and the same edge
memory (the pods' order in ``edges.json`` aside: a window's pods are a set).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "lifecycle_benchmark", ROOT / "benchmarks" / "lifecycle.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_snapshot_lays_packages_out_as_installed_and_keeps_them(tmp_path: Path) -> None:
    lifecycle = _benchmark()
    tree = tmp_path / "tree"
    (tree / "pkg").mkdir(parents=True)
    (tree / "sub" / "__pycache__").mkdir(parents=True)
    (tree / "pyproject.toml").write_text(
        '[tool.setuptools.package-dir]\n"pkg" = "pkg"\n"pkg.sub" = "sub"\n'
    )
    (tree / "pkg" / "__init__.py").write_text("")
    (tree / "sub" / "__init__.py").write_text("")
    (tree / "sub" / "rule.py").write_text("LIMIT = 1\n")
    (tree / "sub" / "__pycache__" / "rule.cpython-312.pyc").write_bytes(b"stale")
    site = lifecycle.snapshot(tmp_path / "site", root=tree)
    (tree / "sub" / "rule.py").write_text("LIMIT = 2\n")  # someone edits the checkout
    assert (site / "pkg" / "sub" / "rule.py").read_text() == "LIMIT = 1\n"
    assert not (site / "pkg" / "sub" / "__pycache__").exists()
    assert (site / "pkg" / "__init__.py").is_file()


def test_every_step_runs_the_snapshot_not_the_checkout(tmp_path: Path) -> None:
    lifecycle = _benchmark()
    assert lifecycle.command("score")[:3] == [sys.executable, "-m", "netwarden"]
    lifecycle.SITE = lifecycle.snapshot(tmp_path / "site")
    for module in ("detector/judge.py", "models/edges.py", "commands/lifecycle.py"):
        assert (lifecycle.SITE / "netwarden" / module).is_file()
    # the snapshot's entry point, not the checkout's, answers
    (lifecycle.SITE / "netwarden" / "__main__.py").write_text(
        "import sys\nprint('snapshot', *sys.argv[1:])\n"
    )
    out = lifecycle.netwarden("history", "--flows", "x")
    assert out.strip() == "snapshot history --flows x"


def _run(*args: str, seed: str = "0") -> None:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    done = subprocess.run(
        [sys.executable, "-m", "netwarden", *args], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr


def _anomalies(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as c:
        return c.execute(
            "SELECT identity, first_window_start, last_window_end, window_count, peak_score,"
            " incident, role FROM anomalies ORDER BY identity, first_window_start"
        ).fetchall()


def _memory(path: Path) -> dict:
    data = json.loads(path.read_text())
    data["pods"] = {k: sorted(v) for k, v in data["pods"].items()}
    return data


@pytest.mark.slow
def test_two_arms_of_the_history_path_agree(tmp_path: Path) -> None:
    from netwarden.storage.history import read_windows

    lifecycle = _benchmark()
    gen = tmp_path / "gen"
    _run(
        "generate", "--hours", "48", "--rate", "0.05", "--seed", "5", "--out", str(gen),
        "--start", lifecycle.START.isoformat(), "--changes", "all",
    )  # fmt: skip
    days = lifecycle.split_by_day(gen / "flows.jsonl", tmp_path / "days", 4.0)
    key = tmp_path / "signing.key"
    from netwarden.models.signing import ensure_key

    ensure_key(key)
    first = tmp_path / "first"
    _run(
        "train", "--flows", str(days[-1]), "--model-dir", str(first),
        "--signing-key", str(key), "--min-windows", "60",
    )  # fmt: skip
    arms = {"static": "1", "retrained": "2"}  # different hash seeds
    for arm, seed in arms.items():
        base = tmp_path / arm
        (base / "models").mkdir(parents=True)
        subprocess.run(["cp", "-r", f"{first}/.", str(base / "models")], check=True)
        for day in (0, 1):
            _run(
                "history", "--flows", str(days[day]), "--model-dir", str(base / "models"),
                "--out", str(base / "history"), "--db", str(base / "s.db"),
                "--edges", str(base / "edges.json"), "--signing-key", str(key), seed=seed,
            )  # fmt: skip
    a, b = (tmp_path / arm for arm in arms)
    keys = ["identity", "window_start"]
    wa = read_windows(a / "history").sort_values(keys).reset_index(drop=True)
    wb = read_windows(b / "history").sort_values(keys).reset_index(drop=True)
    assert len(wa) and wa.equals(wb)
    assert _anomalies(a / "s.db") and _anomalies(a / "s.db") == _anomalies(b / "s.db")
    assert _memory(a / "edges.json") == _memory(b / "edges.json")

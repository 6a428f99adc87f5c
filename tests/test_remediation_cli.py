"""`netwarden propose` and `netwarden simulate` end to end, in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from netwarden.generator import generate
from netwarden.remediation.schema import validate_policy

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "netwarden", *args], capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def flows(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("flows"), hours=0.5, seed=5, start=T0).flows_path


def test_propose_then_simulate(flows, tmp_path) -> None:
    out = tmp_path / "policies"
    done = run("propose", "--flows", str(flows), "--out", str(out))
    assert done.returncode == 0, done.stderr
    files = sorted(p.name for p in out.iterdir())
    assert "shop-storefront.yaml" in files and "checkout-payments.yaml" in files
    for path in out.iterdir():
        (policy,) = list(yaml.safe_load_all(path.read_text()))
        assert validate_policy(policy) == []
    assert f"wrote {len(files)} policy files" in done.stderr
    assert "shop/storefront:" in done.stderr and "rules ->" in done.stderr
    assert "simulation on the same flows: 0 of " in done.stderr  # shown with its simulation
    sim = run("simulate", "--policies", str(out), "--flows", str(flows))
    assert sim.returncode == 0, sim.stderr
    assert "would drop: 0 flows" in sim.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["propose", "--flows", "/no/such/file.jsonl", "--out", "OUT"],
        ["propose", "--flows", "FLOWS", "--out", "/proc/no-such-dir/x"],
        ["simulate", "--policies", "/no/such/dir", "--flows", "FLOWS"],
        ["simulate", "--policies", "INVALID", "--flows", "FLOWS"],
        ["simulate", "--policies", "OUT", "--flows", "/no/such/file.jsonl"],
    ],
)
def test_bad_input_exits_2_with_one_line(args, flows, tmp_path) -> None:
    invalid = tmp_path / "invalid"
    invalid.mkdir()
    (invalid / "bad.yaml").write_text(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\n"
        "metadata: {name: Bad_Name}\nspec: {}\n"
    )
    (tmp_path / "out").mkdir()
    subst = {"FLOWS": str(flows), "OUT": str(tmp_path / "out"), "INVALID": str(invalid)}
    done = run(*[subst.get(a, a) for a in args])
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("netwarden: error:"), done.stderr


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "no valid flows in {path}: the input is empty"),
        (
            b"{}\nnot json\n",
            "no valid flows in {path}: 2 lines, 2 skipped as bad (first: {path}:1:",
        ),
    ],
)
def test_propose_without_a_valid_flow_fails(tmp_path, content, expected) -> None:
    path = tmp_path / "flows.json"
    path.write_bytes(content)
    out = tmp_path / "policies"
    done = run("propose", "--flows", str(path), "--out", str(out))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("netwarden: error: " + expected.format(path=path)), done.stderr
    assert list(out.iterdir()) == []


def test_propose_that_learns_no_policy_fails(tmp_path) -> None:
    """Valid flows, none a forwarded request of a workload (here: only drops): no policy."""
    import orjson

    from tests.flowfactory import flow, pod

    a, b = pod("x", "a", 300, "10.244.0.1"), pod("x", "b", 301, "10.244.0.2")
    path = tmp_path / "drops.json"
    path.write_bytes(
        b"\n".join(orjson.dumps(flow(a, b, seconds=s, verdict="DROPPED")) for s in range(5))
    )
    done = run("propose", "--flows", str(path), "--out", str(tmp_path / "p"))
    assert done.returncode == 2, done.stderr
    assert "netwarden: error: no policy written to" in done.stderr
    assert "0 of 5 valid flows were forwarded requests" in done.stderr

"""`netwarden serve` with the pipeline in a process of its own (``api.pipeline_process``).

The API process serves what the pipeline process knows (readiness, metrics, drift, the recent
flows through a proposal's baseline) and what the store holds; SIGTERM stops both in order
(every closed window recorded); a pipeline process whose API process is killed stops itself;
and with ``api.pipeline_process: false`` everything is one process again.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from netwarden.api.auth import new_token
from netwarden.models.artifact import save_bundle
from netwarden.models.signing import ensure_key
from tests.modelfactory import train_on_generated
from tests.test_service import T0, _wait
from tests.test_service_apply import start_serve, stop_serve
from tests.test_service_stop import _STOPPED, _stored_windows, generator_config

_PIDS = re.compile(r"pipeline running in process (\d+); the API in process (\d+)")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three hours of generator seed 31, signed (the service refuses unsigned models)."""
    out = tmp_path_factory.mktemp("split-model")
    bundle, _ = train_on_generated(out / "history", hours=3, seed=31, start=T0, train_seed=1)
    save_bundle(bundle, out / "models", key=ensure_key(out / "signing.key"))
    return out / "models"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def promtool_ok(text: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        return
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.slow
def test_the_api_serves_what_the_pipeline_process_knows(tmp_path: Path, model_dir: Path) -> None:
    token, entry = new_token("ops", "admin")
    proc, base = start_serve(
        tmp_path, generator_config(tmp_path, model_dir), {"NETWARDEN_API_TOKENS": entry.line}
    )
    output = ""
    try:
        found = _PIDS.search((tmp_path / "serve.log").read_text())
        assert found, (tmp_path / "serve.log").read_text()
        pipeline_pid, api_pid = map(int, found.groups())
        assert api_pid == proc.pid and pipeline_pid != proc.pid and alive(pipeline_pid)
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=base, timeout=30, headers=headers) as http:
            _wait(lambda: http.get("/readyz").status_code == 200, 60, "/readyz")
            ready = http.get("/readyz").json()
            assert ready["source"] == "generator" and ready["model"]

            def anomalies() -> list[dict[str, Any]]:
                return http.get("/api/v1/anomalies", params={"limit": 50}).json()["items"]

            _wait(lambda: bool(anomalies()), 90, "an anomaly recorded by the pipeline process")
            metrics = http.get("/metrics").text
            promtool_ok(metrics)
            # the pipeline's own metrics, collected in its process
            flows = re.search(r"^netwarden_ingest_flows_total (\S+)", metrics, re.M)
            assert flows is not None and float(flows[1]) > 0, metrics[:2000]
            assert re.search(r"^netwarden_model_info\{version=", metrics, re.M)
            # drift is the pipeline's: judged there, read here
            drift = http.get("/api/v1/drift")
            assert drift.status_code == 200, drift.text
            assert drift.json()["model_version"] == ready["model"]
            # the recent flows are the pipeline's: a baseline proposal learns from them
            identity = anomalies()[0]["identity"]
            proposed = http.post("/api/v1/proposals", json={"identity": identity})
            assert proposed.status_code == 201, proposed.text

            # and a containment from the pipeline's inputs (normal edges, flows, labels)
            # (the attacker's: a victim's has nothing of its own to contain, a 422)
            # an attacker's anomaly whose peers are all normal ones has nothing to contain (a
            # 422 saying so): the live generator decides which comes first, so ask for each
            # attacker's anomaly until one is contained
            def contained() -> Any:
                for a in anomalies():
                    if a["role"] != "attacker":
                        continue
                    answer = http.post("/api/v1/proposals", json={"anomaly_id": a["id"]})
                    if answer.status_code != 422:
                        return answer
                    assert "nothing to contain" in answer.text, answer.text
                return None

            answer = _wait(contained, 90, "an attacker's anomaly with something to contain")
            assert answer.status_code in (201, 409), answer.text  # 409: proposed already
            # the models the API lists are the folder's; the current one is what the pipeline
            # loaded
            listed = http.get("/api/v1/models").json()
            current = [v["version"] for v in listed["items"] if v["current"]]
            assert current == [ready["model"]]
    finally:
        code = stop_serve(proc)
        output = (tmp_path / "serve.log").read_text()
    assert code == 0, output
    assert "Traceback" not in output and "pipeline error" not in output, output
    (stopped,) = _STOPPED.findall(output)
    closed, recorded = map(int, stopped)
    assert closed == recorded == _stored_windows(tmp_path / "data"), output
    assert not alive(pipeline_pid)


@pytest.mark.slow
def test_a_pipeline_process_whose_api_process_is_killed_stops(
    tmp_path: Path, model_dir: Path
) -> None:
    proc, base = start_serve(tmp_path, generator_config(tmp_path, model_dir), {})
    found = _PIDS.search((tmp_path / "serve.log").read_text())
    assert found
    pipeline_pid = int(found[1])
    with httpx.Client(base_url=base, timeout=10) as http:
        _wait(lambda: http.get("/readyz").status_code == 200, 60, "/readyz")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    deadline = time.monotonic() + 30
    while alive(pipeline_pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    output = (tmp_path / "serve.log").read_text()
    assert not alive(pipeline_pid), output
    assert "the API process is gone: stopping the pipeline" in output
    (stopped,) = _STOPPED.findall(output)  # its orderly shutdown, all the same
    closed, recorded = map(int, stopped)
    assert closed == recorded == _stored_windows(tmp_path / "data"), output


@pytest.mark.slow
def test_one_process_when_asked(tmp_path: Path, model_dir: Path) -> None:
    proc, base = start_serve(
        tmp_path, generator_config(tmp_path, model_dir, pipeline_process=False), {}
    )
    try:
        with httpx.Client(base_url=base, timeout=10) as http:
            _wait(lambda: http.get("/readyz").status_code == 200, 60, "/readyz")
    finally:
        code = stop_serve(proc)
    output = (tmp_path / "serve.log").read_text()
    assert code == 0, output
    assert not _PIDS.search(output)
    assert _STOPPED.search(output)


@pytest.mark.slow
def test_a_dead_pipeline_process_takes_the_api_down(tmp_path: Path, model_dir: Path) -> None:
    """An API over a pipeline that reads nothing would answer /healthz forever: when the
    pipeline process dies on its own, `netwarden serve` exits non-zero, saying so."""
    proc, _ = start_serve(tmp_path, generator_config(tmp_path, model_dir), {})
    found = _PIDS.search((tmp_path / "serve.log").read_text())
    assert found
    os.kill(int(found[1]), signal.SIGKILL)
    code = proc.wait(timeout=60)
    output = (tmp_path / "serve.log").read_text()
    assert code != 0, output
    assert f"the pipeline process {found[1]} died (exit code -9)" in output, output


@pytest.mark.slow
def test_ctrl_c_stops_both_in_order(tmp_path: Path, model_dir: Path) -> None:
    """SIGINT to the whole process group (a Ctrl-C in a terminal): exit 0, every closed window
    recorded, not taken for a dead pipeline."""
    proc, base = start_serve(tmp_path, generator_config(tmp_path, model_dir), {})
    with httpx.Client(base_url=base, timeout=10) as http:
        _wait(lambda: http.get("/readyz").status_code == 200, 60, "/readyz")
    found = _PIDS.search((tmp_path / "serve.log").read_text())
    assert found
    for pid in found.groups():
        os.kill(int(pid), signal.SIGINT)
    code = proc.wait(timeout=60)
    output = (tmp_path / "serve.log").read_text()
    assert code == 0, output
    assert "died" not in output, output
    (stopped,) = _STOPPED.findall(output)
    closed, recorded = map(int, stopped)
    assert closed == recorded == _stored_windows(tmp_path / "data"), output

"""Run the analyst notebooks against a real ``netwarden serve`` on generated traffic.

``make notebooks`` (``python notebooks/demo.py``) and ``tests/test_notebooks.py`` do the same:

1. generate labelled traffic (``netwarden.generator``): a few quiet hours to learn from, then
   a live stretch with attacks in it (``labels.csv`` says which workload, when);
2. train a model on the quiet hours with ``netwarden train``, signed with the service's key;
3. start ``netwarden serve`` on a loopback port, reading the live stretch as a followed file,
   with a viewer token for the notebooks, and wait until every flow is scored;
4. execute each notebook top to bottom with nbclient (a real kernel), giving it
   ``NETWARDEN_URL``, ``NETWARDEN_TOKEN``, ``NETWARDEN_DATA_DIR`` (the service's data folder,
   its Parquet history inside) and ``NETWARDEN_DEMO`` (the generated traffic and labels).

The notebooks read those variables and nothing else, so an analyst points them at any service.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import nbformat
from nbclient import NotebookClient
from prometheus_client.parser import text_string_to_metric_families

from netwarden.api.auth import new_token
from netwarden.generator import generate
from netwarden.models.signing import ensure_key

HERE = Path(__file__).resolve().parent
NOTEBOOKS = tuple(sorted(HERE.glob("[0-9]*.ipynb")))
#: The generated stretch: quiet hours to train on, then the live part with attacks.
START = datetime(2026, 5, 4, 6, tzinfo=UTC)
TRAIN_HOURS = 2.5
LIVE_HOURS = 1.5
ATTACKS = ("port_scan", "dns_tunnel", "exfiltration")


@dataclass(frozen=True)
class Demo:
    """A prepared folder: where the service's data and the generated traffic are."""

    folder: Path
    data_dir: Path
    train: Path  # generated quiet traffic (flows.jsonl) the model learned from
    live: Path  # generated live traffic with attacks (flows.jsonl, labels.csv)

    @classmethod
    def at(cls, folder: Path) -> Demo:
        folder = folder.resolve()
        return cls(folder, folder / "data", folder / "train", folder / "live")


def _netwarden(*args: str, env: Mapping[str, str] | None = None) -> None:
    subprocess.run([sys.executable, "-m", "netwarden", *args], check=True, env=env)


def prepare(folder: Path, *, seed: int = 41) -> Demo:
    """Generate the traffic and train the first model (skipped when already there)."""
    demo = Demo.at(folder)
    if not (demo.train / "flows.jsonl").exists():
        generate(demo.train, hours=TRAIN_HOURS, seed=seed, start=START)
    if not (demo.live / "flows.jsonl").exists():
        live_start = START + timedelta(hours=TRAIN_HOURS)
        generate(demo.live, hours=LIVE_HOURS, seed=seed + 1, start=live_start, attacks=ATTACKS)
    key = demo.data_dir / "model-signing.key"  # where the service looks for it
    demo.data_dir.mkdir(parents=True, exist_ok=True)
    ensure_key(key)
    if not (demo.data_dir / "models" / "CURRENT").exists():
        _netwarden(
            "train",
            "--flows",
            str(demo.train / "flows.jsonl"),
            "--model-dir",
            str(demo.data_dir / "models"),
            "--signing-key",
            str(key),
        )
    return demo


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _metric(text: str, name: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    return None


@contextmanager
def serving(demo: Demo, *, timeout: float = 300.0) -> Iterator[tuple[str, str]]:
    """``netwarden serve`` on the demo's live traffic: yields (url, viewer token) once every
    flow of it is scored and every window closed; stops it (SIGTERM) after."""
    token, entry = new_token("analyst", "viewer")
    port = free_port()
    env = {
        **os.environ,
        "NETWARDEN_DATA_DIR": str(demo.data_dir),
        "NETWARDEN_SOURCE__SPEC": str(demo.live / "flows.jsonl"),
        "NETWARDEN_API__PORT": str(port),
        "NETWARDEN_API_TOKENS": entry.line,
        "NETWARDEN_MODELS__BOOTSTRAP": "false",
        "NETWARDEN_WINDOWS__IDLE_CLOSE": "0.5",
        "NETWARDEN_HISTORY__FLUSH_SECONDS": "1",
    }
    lines = sum(1 for _ in (demo.live / "flows.jsonl").open("rb"))
    log_path = demo.folder / "serve.log"
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "netwarden", "serve"], env=env, stdout=log, stderr=log
        )
        try:
            _wait_scored(proc, url, lines, log_path, timeout)
            yield url, token
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_scored(
    proc: subprocess.Popen[bytes], url: str, lines: int, log: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=5.0) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"netwarden serve exited ({proc.returncode}):\n{log.read_text()}"
                )
            try:
                metrics = http.get(f"{url}/metrics").text
            except httpx.HTTPError:
                metrics = ""
            read = _metric(metrics, "netwarden_ingest_lines_total")
            open_windows = _metric(metrics, "netwarden_ingest_open_windows")
            if read is not None and read >= lines and open_windows == 0:
                time.sleep(2.0)  # the history's next flush (flush_seconds 1)
                return
            time.sleep(0.5)
    raise TimeoutError(f"netwarden serve did not score {lines} lines in {timeout:.0f} s")


def run_notebook(path: Path, env: Mapping[str, str], *, timeout: float = 300.0) -> None:
    """Execute the notebook at ``path`` top to bottom in a fresh kernel with ``env`` added to
    its environment; the first failing cell raises (nbclient's CellExecutionError). Nothing is
    written back: notebooks are stored without outputs."""
    notebook = nbformat.read(path, as_version=4)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        NotebookClient(
            notebook,
            timeout=timeout,
            kernel_name="python3",
            resources={"metadata": {"path": str(path.parent)}},
        ).execute()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def environment(demo: Demo, url: str, token: str) -> dict[str, str]:
    """What the notebooks read."""
    return {
        "NETWARDEN_URL": url,
        "NETWARDEN_TOKEN": token,
        "NETWARDEN_DATA_DIR": str(demo.data_dir),
        "NETWARDEN_DEMO": str(demo.live),
        "NETWARDEN_TRAIN": str(demo.train),
    }


def clear_outputs(path: Path) -> bool:
    """Strip outputs and execution counts from the notebook at ``path``; whether it changed."""
    notebook = nbformat.read(path, as_version=4)
    changed = False
    for cell in notebook.cells:
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None):
            cell.outputs, cell.execution_count, changed = [], None, True
    if changed:
        nbformat.write(notebook, path)
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--folder",
        type=Path,
        default=HERE / ".demo",
        help="where the generated traffic and the service's data go (reused when there)",
    )
    parser.add_argument(
        "notebooks",
        nargs="*",
        type=Path,
        help="notebooks to run (default: every numbered notebook in notebooks/)",
    )
    parser.add_argument(
        "--clear",
        action="store_true",
        help="only strip the notebooks' outputs (they are committed without them)",
    )
    args = parser.parse_args(argv)
    chosen = [p.resolve() for p in args.notebooks] or list(NOTEBOOKS)
    missing = [str(p) for p in chosen if not p.is_file()]
    if missing:
        parser.error(f"no such notebook: {', '.join(missing)}")
    if args.clear:
        for path in chosen:
            print(f"{path.name}: {'cleared' if clear_outputs(path) else 'no outputs'}")
        return 0
    demo = prepare(args.folder)
    with serving(demo) as (url, token):
        for path in chosen:
            started = time.monotonic()
            run_notebook(path, environment(demo, url, token))
            print(f"{path.name}: ran top to bottom in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Scheduled retraining inside ``netwarden serve``: ``netwarden retrain`` on a cron schedule.

Each run is a child process (``python -m netwarden retrain ...``) that a worker thread waits
for: training takes minutes of CPU and memory, and in its own process it cannot hold up the
pipeline's scoring (no shared interpreter lock, no shared heap). The new version reaches the
pipeline the way any version does: the run switches the model folder's ``CURRENT`` atomically
and the pipeline's next :meth:`~netwarden.models.registry.CurrentModel.refresh` loads it.

Per run: one log line, ``netwarden_retrain_runs_total{result}`` (``promoted``, ``kept``: the
gate refused the candidate, ``failed``), ``netwarden_retrain_last_success_timestamp_seconds``
(a run that finished, promoted or not). An alert (``NetwardenRetrainingFailing``, through the
alert outbox to Alertmanager and Slack) fires when a run fails or when no run succeeded for two
periods of the schedule, and is resolved by the next success.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from croniter import croniter
from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["ALERT_NAME", "RetrainSchedule", "retrain_alert"]

ALERT_NAME: Final = "NetwardenRetrainingFailing"
#: The outbox key of the alert: one alert, superseded by its newer state.
ALERT_KEY: Final = "netwarden-retraining"
RESULTS: Final = ("promoted", "kept", "failed")


def retrain_alert(*, firing: bool, summary: str, now: datetime, public_url: str) -> dict[str, Any]:
    """The Alertmanager alert of failing retraining (resolved with ``firing`` False)."""
    return {
        "labels": {"alertname": ALERT_NAME, "severity": "warning", "service": "netwarden"},
        "annotations": {"summary": summary},
        "startsAt": now.isoformat().replace("+00:00", "Z"),
        "endsAt": (now + timedelta(hours=6 if firing else 0)).isoformat().replace("+00:00", "Z"),
        "generatorURL": f"{public_url.rstrip('/')}/api/v1/models",
    }


class RetrainSchedule:
    """Runs ``command`` (the retrain arguments after ``netwarden``) at each time of the cron
    ``schedule`` (UTC) on its own thread; see the module docstring.

    ``alert(firing, summary)`` is called when a run fails or runs are overdue (firing) and on
    the next success after that (resolved). ``clock`` (Unix seconds) is injectable for tests.
    """

    def __init__(
        self,
        schedule: str,
        command: Sequence[str],
        registry: CollectorRegistry,
        *,
        timeout: float = 3600.0,
        log: Callable[[str], Any] = print,
        alert: Callable[[bool, str], Any] | None = None,
        clock: Callable[[], float] = time.time,
        before: Callable[[], Any] | None = None,
    ) -> None:
        if not croniter.is_valid(schedule):
            raise ValueError(f"retrain.schedule: not a cron expression: {schedule!r}")
        self.schedule = schedule
        self.command = [sys.executable, "-m", "netwarden", *command]
        self.timeout = timeout
        self.log = log
        self.alert = alert
        self.clock = clock
        #: Called before each run (the service writes its buffered history first).
        self.before = before
        self.runs = Counter(
            "netwarden_retrain_runs",
            "Scheduled retrainings, by result: promoted (a new model is current), kept (the "
            "gate refused the candidate), failed.",
            ["result"],
            registry=registry,
        )
        for result in RESULTS:
            self.runs.labels(result)
        self.last_success = Gauge(
            "netwarden_retrain_last_success_timestamp_seconds",
            "When a scheduled retraining last finished (promoted or kept), Unix time; 0: never.",
            registry=registry,
        )
        self._started = clock()
        self._last_ok: float | None = None
        self._firing = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen[str] | None = None

    def next_run(self, after: float) -> float:
        return float(croniter(self.schedule, datetime.fromtimestamp(after, UTC)).get_next(float))

    def period(self, at: float) -> float:
        """Seconds between the schedule's next two runs after ``at``."""
        first = self.next_run(at)
        return self.next_run(first) - first

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="retrain", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop waiting; a run in progress is terminated (its version, if written, stays)."""
        self._stop.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            due = self.next_run(self.clock())
            while not self._stop.is_set() and self.clock() < due:
                self.check_overdue()
                self._stop.wait(min(60.0, max(0.05, due - self.clock())))
            if not self._stop.is_set():
                self.run_once()

    def check_overdue(self) -> bool:
        """Fire the alert when no run succeeded for two periods (since start, at first)."""
        now = self.clock()
        since = self._last_ok if self._last_ok is not None else self._started
        overdue = now - since > 2 * self.period(since)
        if overdue and not self._firing:
            hours = (now - since) / 3600
            self._notify(True, f"no scheduled retraining succeeded for {hours:.1f} h")
        return overdue

    def run_once(self) -> str:
        """Run one retraining now; returns its result (one of :data:`RESULTS`)."""
        started = self.clock()
        if self.before is not None:
            try:
                self.before()
            except Exception as exc:
                self.log(f"before retraining: {type(exc).__name__}: {exc}")
        try:
            self._proc = subprocess.Popen(
                self.command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            out, err = self._proc.communicate(timeout=self.timeout)
            code = self._proc.returncode
        except subprocess.TimeoutExpired:
            assert self._proc is not None
            self._proc.kill()
            out, err = self._proc.communicate()
            code, err = -1, f"timed out after {self.timeout:g} s"
        except OSError as exc:
            out, err, code = "", str(exc), -1
        finally:
            self._proc = None
        took = self.clock() - started
        if code == 0:
            try:
                summary = json.loads(out.strip().splitlines()[-1])
            except (ValueError, IndexError):
                summary = {}
            result = "promoted" if summary.get("promoted") else "kept"
            gate = [line for line in err.splitlines() if line.startswith("gate:")]
            self.log(
                f"scheduled retraining {result} {summary.get('version', '?')} in {took:.0f} s"
                + (f"; {gate[-1]}" if gate else "")
            )
            self._last_ok = self.clock()
            self.last_success.set(self._last_ok)
            if self._firing:
                self._notify(False, "scheduled retraining succeeded again")
        else:
            result = "failed"
            reason = (err.strip().splitlines() or ["no output"])[-1]
            self.log(f"scheduled retraining failed after {took:.0f} s: {reason}")
            self._notify(True, f"scheduled retraining failed: {reason}")
        self.runs.labels(result).inc()
        return result

    def _notify(self, firing: bool, summary: str) -> None:
        self._firing = firing
        if self.alert is None:
            return
        try:
            self.alert(firing, summary)
        except Exception as exc:  # the outbox's database may be down: say so, go on
            self.log(f"retraining alert not queued: {type(exc).__name__}: {exc}")

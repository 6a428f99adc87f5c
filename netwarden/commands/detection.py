"""The `train` and `score` commands: flows in, models or scored windows out.

``score`` writes one JSON object per scored identity-window, a format other tools script
against (keep it exactly)::

    {"identity": "<namespace>/<workload>", "window_start": "<RFC3339>", "window_end": "<RFC3339>",
     "score": <float, higher is more anomalous>, "threshold": <float>, "anomalous": <bool>,
     "reasons": [{"feature": "<name>", "value": <float>, "baseline": <float>}, ...]}

plus, as extra keys tools may ignore: ``model``, ``fallback``, ``new_edges`` (edges new to the
identity in this window), ``changes`` (ids of the changes they belong to), ``model_anomalous``
(the model's verdict before the novelty rules), ``summary`` and, for anomalous windows, each
reason's ``text``/``contribution``, ``evidence`` (the novelty rules met), ``examples`` (peers,
ports, DNS names, drop reasons behind the window), ``incident``, ``attacker`` and ``role``
(``attacker``, ``victim`` or ``subject``: see :mod:`netwarden.detector.incidents`; a victim's
window is linked to its attacker's incident, not an alert of its own).

``score --changes FILE`` writes one JSON object per change (see
:class:`netwarden.detector.changes.Change`): id, kind, subject, identities, edges, first and
last seen.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson
from rich.console import Console

from netwarden.commands.common import (
    check_flow_paths,
    check_writable_folder,
    ingest_with_progress,
    no_flows_error,
    progress_bar,
    time_span,
)
from netwarden.commands.common import signing_key as signing_key_from
from netwarden.detector.explain import examples_text
from netwarden.detector.results import ScoredWindow
from netwarden.errors import UserError
from netwarden.ingest.windows import ClosedWindow, WindowBuilder, WindowConfig, windows_to_rows

__all__ = ["score", "scored_to_json", "train"]

#: Windows scored per model call: scikit-learn's per-call cost is large, so batch.
_SCORE_BATCH = 2048


def train(
    flows: Sequence[str],
    model_dir: Path,
    *,
    window_config: WindowConfig,
    expected_rate: float,
    min_windows: int,
    seed: int,
    console: Console,
    signing_key: Path | None = None,
) -> None:
    """Train models on ``flows`` and save them as a new current version of ``model_dir``,
    signed with the key in ``signing_key`` (unsigned without one)."""
    from netwarden.models.artifact import save_bundle
    from netwarden.models.edges import EdgeMemory
    from netwarden.models.training import NotEnoughData, TrainConfig
    from netwarden.models.training import train as train_models

    check_flow_paths(flows)
    key = signing_key_from(signing_key)
    try:
        config = TrainConfig(expected_rate=expected_rate, min_windows=min_windows, seed=seed)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    check_writable_folder("--model-dir", model_dir)  # before minutes of reading and training
    builder = WindowBuilder(window_config)
    windows: list[ClosedWindow] = []
    result = ingest_with_progress(flows, windows.extend, console=console, builder=builder)
    for line in result.summary_lines():
        console.print(line, markup=False)
    error = no_flows_error(flows, result.read)
    if error is not None:
        raise error
    rows = windows_to_rows(windows)
    with progress_bar(console, unit="models") as progress:
        task = progress.add_task("training models", total=None)
        try:
            bundle = train_models(
                rows,
                config=config,
                windows=window_config,
                progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
        except NotEnoughData as exc:
            raise UserError(str(exc)) from None
    bundle.edges = EdgeMemory.from_windows(windows)
    try:
        folder = save_bundle(bundle, model_dir, key=key)
    except OSError as exc:
        raise UserError(f"--model-dir {model_dir}: cannot write: {exc.strerror or exc}") from None
    own = sum(1 for key in bundle.models if key.startswith("identity:"))
    identities = len(bundle.namespaces)
    console.print(
        f"trained {len(bundle.models)} models on {bundle.rows:,} identity-windows "
        f"({bundle.training_start:%Y-%m-%d %H:%M} to {bundle.training_end:%Y-%m-%d %H:%M} UTC): "
        f"{own} of {identities} identities have their own model, the rest use their "
        "namespace's or the global model",
        markup=False,
    )
    console.print(f"saved as {folder} (now current in {model_dir})", markup=False)


def scored_to_json(s: ScoredWindow) -> dict[str, Any]:
    out: dict[str, Any] = {
        "identity": s.identity,
        "window_start": _rfc3339(s.window_start),
        "window_end": _rfc3339(s.window_end),
        "score": round(s.score, 6),
        "threshold": round(s.threshold, 6),
        "anomalous": s.anomalous,
        "reasons": [
            {
                "feature": r.feature,
                "value": r.value,
                "baseline": r.baseline,
                "text": r.text,
                "contribution": round(r.contribution, 6),
            }
            for r in s.reasons
        ],
        "model": s.model,
        "fallback": s.fallback,
        "model_anomalous": s.model_anomalous,
        "new_edges": s.new_edges,
    }
    if s.changes:
        out["changes"] = list(s.changes)
    if s.anomalous:
        out["summary"] = s.summary
        out["examples"] = s.examples
        out["incident"] = s.incident
        out["role"] = s.role
        out["attacker"] = s.attacker
        if s.evidence:
            out["evidence"] = list(s.evidence)
    return out


def _rfc3339(value: Any) -> str:
    return value.isoformat().replace("+00:00", "Z")


def score(
    model_dir: Path,
    flows: Sequence[str],
    out: Path,
    *,
    db: Path | None,
    console: Console,
    signing_key: Path | None = None,
    changes_out: Path | None = None,
) -> None:
    """Score ``flows`` with the current version of ``model_dir`` (verified with the key in
    ``signing_key``: then an unsigned or foreign-signed version is refused)."""
    from netwarden.detector.judge import WindowJudge
    from netwarden.detector.scorer import Scorer
    from netwarden.detector.stream import StreamScorer
    from netwarden.models.artifact import ArtifactError, library_mismatch, load_bundle

    check_flow_paths(flows)
    key = signing_key_from(signing_key)
    try:
        bundle = load_bundle(model_dir, key=key)
        warning = library_mismatch(model_dir)
    except ArtifactError as exc:
        raise UserError(str(exc)) from None
    if warning:
        console.print(f"warning: {warning}", markup=False)
    judge = WindowJudge(Scorer(bundle), bundle.edges)
    builder = WindowBuilder(bundle.windows)  # as the models were trained
    store = None
    if db is not None:
        from netwarden.detector.store import AnomalyStore

        try:
            db.parent.mkdir(parents=True, exist_ok=True)
            store = AnomalyStore(f"sqlite:///{db}")
        except Exception as exc:
            raise UserError(f"--db {db}: cannot open: {exc}") from None
    try:
        sink: IO[bytes] = open(out, "wb")
    except OSError as exc:
        raise UserError(f"--out {out}: cannot write: {exc.strerror or exc}") from None
    anomalies: dict[str, list[ScoredWindow]] = defaultdict(list)
    totals = {"windows": 0, "anomalous": 0, "fallback": 0}

    def write(_: list[ClosedWindow], scored: list[ScoredWindow]) -> None:
        sink.write(
            b"".join(
                orjson.dumps(scored_to_json(s), option=orjson.OPT_APPEND_NEWLINE) for s in scored
            )
        )
        if store is not None:
            store.record(scored)
        for s in scored:
            totals["windows"] += 1
            totals["fallback"] += s.fallback
            if s.anomalous:
                totals["anomalous"] += 1
                anomalies[s.identity].append(s)

    stream = StreamScorer(judge, write, max_windows=_SCORE_BATCH)

    try:
        result = ingest_with_progress(
            flows, stream.add, console=console, builder=builder, label="scoring windows"
        )
        stream.flush()
    finally:
        sink.close()
        if store is not None:
            store.close()
    for line in result.summary_lines():
        console.print(line, markup=False)
    found = judge.changes.changes()
    reported = [c for c in found if c.status != "escalated"]
    incidents = judge.incidents.incidents()
    if changes_out is not None:
        _write_changes(changes_out, found)
    console.print(
        f"scored {totals['windows']:,} identity-windows ({totals['fallback']:,} by a "
        f"fallback model); {totals['anomalous']:,} anomalous in {len(incidents):,} "
        f"incident{'' if len(incidents) == 1 else 's'}; {len(reported):,} "
        f"change{'' if len(reported) == 1 else 's'}; wrote {out}"
        + (f" and {changes_out}" if changes_out is not None else ""),
        markup=False,
    )
    _print_incidents(incidents, anomalies, console)
    _print_changes(found, console)


def _write_changes(path: Path, changes: list[Any]) -> None:
    try:
        with open(path, "wb") as fh:
            for change in changes:
                fh.write(orjson.dumps(change.to_json(), option=orjson.OPT_APPEND_NEWLINE))
    except OSError as exc:
        raise UserError(f"--changes {path}: cannot write: {exc.strerror or exc}") from None


def _print_changes(changes: list[Any], console: Console, limit: int = 20) -> None:
    """One line per change: when, what, who it touched."""
    escalated = [c for c in changes if c.status == "escalated"]
    changes = [c for c in changes if c.status != "escalated"]
    if escalated:
        console.print(
            f"{len(escalated)} change{'s' if len(escalated) != 1 else ''} turned into evidence "
            "later (escalated, part of the incidents above)",
            markup=False,
        )
    if not changes:
        return
    console.print(f"changes (new edges that look like ordinary traffic): {len(changes)}")
    for change in changes[:limit]:
        console.print(
            f"  {time_span(change.first_datetime, change.last_datetime)} {change.description()}",
            markup=False,
        )
    if len(changes) > limit:
        console.print(f"  ... and {len(changes) - limit} more", markup=False)


def _print_incidents(
    incidents: list[Any], anomalies: dict[str, list[ScoredWindow]], console: Console
) -> None:
    """Per incident: when, the attacker and its victims, the peak window's reasons and flows."""
    by_incident: dict[str, list[ScoredWindow]] = defaultdict(list)
    for items in anomalies.values():
        for s in items:
            by_incident[s.incident].append(s)
    for incident in incidents[:50]:
        mine = by_incident.get(incident.id, [])
        own = [s for s in mine if s.identity == incident.attacker] or mine
        peak = max(own, key=lambda s: s.score) if own else None
        victims = sorted(incident.victims)
        shown = ", ".join(victims[:5]) + (
            f" and {len(victims) - 5} more" if len(victims) > 5 else ""
        )
        end = _dt(incident.last_seen + _window(mine))
        console.print(
            f"incident {incident.id}: {incident.attacker}"
            + (f" -> {shown}" if victims else "")
            + f", {time_span(_dt(incident.first_seen), end)}, peak score "
            f"{incident.peak_score:.2f}",
            markup=False,
        )
        if peak is None:
            continue
        console.print(f"  {peak.summary}", markup=False)
        side = peak.reasons[0].feature.split("_", 1)[0] if peak.reasons else "egress"
        flows = examples_text(peak.examples, side if side in ("egress", "ingress") else "egress")
        if flows:
            console.print(f"    e.g. {flows}", markup=False)
    if len(incidents) > 50:
        console.print(f"... and {len(incidents) - 50} more incidents", markup=False)


def _dt(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def _window(windows: list[ScoredWindow]) -> float:
    if not windows:
        return 0.0
    w = windows[0]
    return (w.window_end - w.window_start).total_seconds()

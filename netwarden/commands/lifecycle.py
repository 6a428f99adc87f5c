"""Model lifecycle: ``retrain`` (history -> candidate -> promotion gate) and ``models``
(list, show, promote, rollback), shared by the command line, the API and ``serve``'s schedule.

What retraining learns from (feedback from people):

* the windows of the last ``days`` of history, minus the held-out validation slice (the last
  ``validation_days``), which the gate scores instead;
* **not** the windows of anomalies people *confirmed* (their verdict ``confirmed``), nor, for a
  confirmed anomaly that is part of an incident, any window of the incident's identities during
  the incident's minutes; nor those of rejected changes: these are attacks, and the gate's
  positives;
* **not** windows the detector flagged that nobody reviewed (an unreviewed anomaly may be an
  attack: an isolation forest must never learn one as normal);
* **but** flagged windows people called *expected* (suppressed with a reason, resolved with the
  verdict ``expected``) and the windows of changes they accepted: what people said is normal
  becomes normal.

The edge memory saved with the candidate is the current model's, plus the service's live
memory when given (``<data_dir>/edges.json``), plus every edge of an accepted change, so what
was accepted stays known. Labels come from the store (``--store``) or, without one, from the
snapshot the service exports into ``<history>/labels`` at each flush.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console

from netwarden.commands.common import signing_key as signing_key_from
from netwarden.errors import UserError
from netwarden.models.artifact import ArtifactError, ModelVersion, list_versions, load_bundle
from netwarden.models.edges import EdgeMemory, load_memory
from netwarden.models.gate import GateConfig, GateReport, evaluate
from netwarden.models.registry import (
    RegistryError,
    current_version,
    prune_versions,
    read_gate,
    rollback_target,
    set_current,
    write_gate,
)
from netwarden.models.spec import MODEL_COLUMNS, TIME_COLUMNS
from netwarden.models.training import ModelBundle, NotEnoughData, TrainConfig, train
from netwarden.storage.history import (
    AnomalyLabel,
    ChangeLabel,
    Labels,
    latest_window_end,
    read_labels,
    read_windows,
)

__all__ = [
    "RetrainResult",
    "history_rows",
    "labels_from_store",
    "promote",
    "retrain",
    "rollback",
]

_FEATURES = [c for c in MODEL_COLUMNS if c not in TIME_COLUMNS]


@dataclass
class RetrainResult:
    """What one retraining did."""

    version: str
    folder: Path
    report: GateReport
    promoted: bool
    trained_rows: int
    excluded: dict[str, int] = field(default_factory=dict)
    pruned: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------- the history


def history_rows(closed: list[Any], scored: list[Any], version: str) -> list[dict[str, Any]]:
    """History rows (:data:`netwarden.storage.history.WINDOW_SCHEMA`) of windows the detector
    judged: each closed window's features with its scored verdict."""
    by_key = {(s.identity, s.window_start): s for s in scored}
    rows = []
    for w in closed:
        start = w.start_datetime()
        s = by_key.get((w.subject.id, start))
        if s is None:
            continue
        row: dict[str, Any] = {
            "identity": s.identity,
            "namespace": s.namespace,
            "workload": s.workload,
            "window_start": start,
            "window_end": w.end_datetime(),
        }
        row.update(w.features())
        row.update(
            score=float(s.score),
            threshold=float(s.threshold),
            anomalous=bool(s.anomalous),
            model_anomalous=bool(s.model_anomalous),
            model=s.model,
            model_version=version,
            incident=s.incident,
            new_edges=int(s.new_edges),
        )
        rows.append(row)
    return rows


def labels_from_store(url: str) -> Labels:
    """Every anomaly with its verdict, and every decided change, from the store at ``url``."""
    from netwarden.detector.change_store import ChangeStore
    from netwarden.detector.store import AnomalyStore

    store = AnomalyStore(url)
    changes = ChangeStore(url)
    try:
        return labels_of(store, changes)
    finally:
        store.close()
        changes.close()


def labels_of(store: Any, changes: Any) -> Labels:
    """The :class:`Labels` of an open anomaly store and change store."""
    from netwarden.detector.change_store import ACCEPTED, REJECTED

    anomalies = [
        AnomalyLabel(
            anomaly_id=record.id,
            identity=record.identity,
            start=record.first_window_start,
            end=record.last_window_end,
            state=record.state,
            verdict=verdict,
            incident=record.incident,
            note=note,
        )
        for record, verdict, note in store.verdicts()
    ]
    decided = [
        ChangeLabel(
            change_id=r.change_id,
            status=r.status,
            identities=tuple(r.identities),
            first_seen=r.first_seen,
            last_seen=r.last_seen,
            edges=tuple(r.edges),
        )
        for r in changes.by_status(ACCEPTED, REJECTED)
    ]
    return Labels(anomalies=anomalies, changes=decided)


def _mask(frame: Any, spans: list[tuple[str, datetime, datetime]]) -> Any:
    """Rows of ``frame`` whose identity and window start fall in one of ``spans``."""
    import numpy as np

    out = np.zeros(len(frame), dtype=bool)
    if not spans or frame.empty:
        return out
    identity = frame["identity"].to_numpy()
    start = frame["window_start"]
    for ident, lo, hi in spans:
        out |= (identity == ident) & (start >= lo).to_numpy() & (start < hi).to_numpy()
    return out


def _spans(labels: Labels, window: timedelta) -> dict[str, Any]:
    """The (identity, start, end) spans of each kind of label (see the module docstring)."""
    confirmed = labels.confirmed()
    incidents = {a.incident for a in confirmed if a.incident}
    excluded = [(a.identity, a.start, a.end) for a in confirmed]
    for incident in incidents:
        members = [a for a in labels.anomalies if a.incident == incident]
        lo, hi = min(a.start for a in members), max(a.end for a in members)
        excluded += [(i, lo, hi) for i in {a.identity for a in members}]
    expected = [(a.identity, a.start, a.end) for a in labels.expected()]
    for c in labels.changes:
        spans = [(i, c.first_seen, c.last_seen + window) for i in c.identities]
        (expected if c.status == "accepted" else excluded).extend(spans)
    return {"excluded": excluded, "expected": expected}


def _records(frame: Any) -> list[dict[str, Any]]:
    if frame.empty:
        return []
    cols = ["identity", "namespace", "window_start", "window_end", *_FEATURES]
    present = [c for c in cols if c in frame.columns]
    out = frame[present].to_dict("records")
    for row in out:
        row["window_start"] = row["window_start"].to_pydatetime()
        row["window_end"] = row["window_end"].to_pydatetime()
        for c in _FEATURES:
            value = row.get(c)
            if value is None or value != value:  # a column older files lack: no activity
                row[c] = 0.0
    return out


def _edge_memory(
    current: ModelBundle | None, live_edges: Path | None, labels: Labels
) -> EdgeMemory:
    from netwarden.detector.changes import Change

    memory = EdgeMemory()
    if current is not None:
        memory.merge(current.edges)
    if live_edges is not None and live_edges.is_file():
        memory.merge(load_memory(live_edges))
    for c in labels.changes:
        if c.status != "accepted":
            continue
        change = Change.from_json(
            {
                "id": c.change_id,
                "kind": "",
                "subject": "",
                "first_seen": c.first_seen.isoformat(),
                "last_seen": c.last_seen.isoformat(),
                "edges": list(c.edges),
            }
        )
        for (identity, egress, peer, proto, port), flows in change.edges.items():
            key = (egress, peer, proto, port)
            memory.add(identity, key, change.first_seen, flows, 1)
            memory.add(identity, key, change.last_seen, 0, 0)
    return memory


# ------------------------------------------------------------------------------- retrain


def retrain(
    model_dir: Path,
    *,
    history: Path,
    store_url: str | None = None,
    days: float = 14.0,
    validation_days: float = 1.0,
    until: datetime | None = None,
    signing_key: Path | None = None,
    live_edges: Path | None = None,
    keep_versions: int | None = None,
    promote: bool = True,
    gate: GateConfig | None = None,
    min_windows: int | None = None,
    seed: int = 0,
    actor: str = "netwarden retrain",
    console: Console,
) -> RetrainResult:
    """Train a candidate on ``history``, judge it with the promotion gate, save it as a new
    version (never over the current one) and, when it passes and ``promote`` is set, make it
    current. See the module docstring for what is trained on."""
    if days <= 0 or validation_days <= 0 or validation_days >= days:
        raise UserError(
            f"--days ({days:g}) and --validation-days ({validation_days:g}) must be positive, "
            "with the validation slice shorter than the history used"
        )
    log = lambda line: console.print(line, markup=False)  # noqa: E731
    key = signing_key_from(signing_key)
    current: ModelBundle | None = None
    current_name = current_version(model_dir)
    if current_name is not None:
        try:
            current = load_bundle(model_dir, key=key)
        except ArtifactError as exc:
            raise UserError(f"the current model cannot be loaded to compare with: {exc}") from None
    end = until or latest_window_end(history)
    if end is None:
        raise UserError(
            f"--history {history}: no window history (netwarden serve writes it under "
            "<data_dir>/history/windows)"
        )
    start = end - timedelta(days=days)
    split = end - timedelta(days=validation_days)
    frame = read_windows(history, start=start, end=end)
    log(
        f"history: {len(frame):,} identity-windows from {start:%Y-%m-%d %H:%M} to "
        f"{end:%Y-%m-%d %H:%M} UTC ({frame['identity'].nunique() if len(frame) else 0} "
        "identities)"
    )
    if store_url is not None:
        labels = labels_from_store(store_url)
        where = f"store {store_url}"
    else:
        labels = read_labels(history) or Labels()
        where = f"{history}/labels"
    log(
        f"labels ({where}): {len(labels.confirmed())} confirmed anomalies, "
        f"{len(labels.expected())} expected, "
        f"{sum(c.status == 'accepted' for c in labels.changes)} accepted changes, "
        f"{sum(c.status == 'rejected' for c in labels.changes)} rejected"
    )
    windows = current.windows if current is not None else None
    window = timedelta(seconds=windows.window_seconds if windows is not None else 60.0)
    spans = _spans(labels, window)
    excluded = _mask(frame, spans["excluded"])
    expected = _mask(frame, spans["expected"])
    if len(frame):
        flagged = frame["anomalous"].fillna(False).to_numpy(dtype=bool)
        in_train = (frame["window_start"] < split).to_numpy()
    else:
        flagged = in_train = excluded
    unreviewed = flagged & ~expected & ~excluded
    keep = in_train & ~excluded & ~unreviewed
    counts = {
        "confirmed_or_rejected": int((in_train & excluded).sum()),
        "flagged_unreviewed": int((in_train & unreviewed).sum()),
        "expected_included": int((in_train & expected & flagged).sum()),
    }
    train_rows = _records(frame[keep])
    log(
        f"training on {len(train_rows):,} windows before {split:%Y-%m-%d %H:%M}: left out "
        f"{counts['confirmed_or_rejected']:,} of confirmed anomalies, incidents and rejected "
        f"changes, {counts['flagged_unreviewed']:,} flagged and never reviewed; kept "
        f"{counts['expected_included']:,} flagged windows people called expected"
    )
    base = current.config if current is not None else TrainConfig()
    try:
        config = TrainConfig(
            expected_rate=base.expected_rate,
            min_windows=min_windows if min_windows is not None else base.min_windows,
            warmup_windows=base.warmup_windows,
            n_estimators=base.n_estimators,
            max_samples=base.max_samples,
            seed=seed,
        )
        candidate = train(train_rows, config=config, windows=windows, progress=None)
    except NotEnoughData as exc:
        raise UserError(str(exc)) from None
    except ValueError as exc:
        raise UserError(str(exc)) from None
    candidate.edges = _edge_memory(current, live_edges, labels)
    validation = frame[~in_train & ~excluded] if len(frame) else frame
    confirmed_rows = {
        str(a.anomaly_id): _records(frame[_mask(frame, [(a.identity, a.start, a.end)])])
        for a in labels.confirmed()
    }
    from netwarden.models.artifact import save_bundle

    try:
        folder = save_bundle(candidate, model_dir, key=key, current=False)
    except OSError as exc:
        raise UserError(f"--model-dir {model_dir}: cannot write: {exc.strerror or exc}") from None
    version = folder.name
    report = evaluate(
        candidate,
        current,
        _records(validation),
        confirmed=confirmed_rows,
        expected=_records(frame[expected & flagged]) if len(frame) else [],
        config=gate,
        candidate_version=version,
        current_version=current_name or "",
    )
    record = report.to_json()
    record["training"] = {
        "history": str(history),
        "labels": where,
        "start": start.isoformat(),
        "split": split.isoformat(),
        "end": end.isoformat(),
        "rows": len(train_rows),
        "excluded": counts,
    }
    log(f"candidate {version}: {len(candidate.models)} models on {candidate.rows:,} windows")
    for line in report.lines():
        log(line)
    promoted = False
    if report.promoted and promote:
        try:
            set_current(
                model_dir,
                version,
                actor=actor,
                action="promote",
                reason="; ".join(report.reasons),
                key=key,
            )
        except RegistryError as exc:
            raise UserError(str(exc)) from None
        promoted = True
        log(f"promoted {version}: now current in {model_dir}")
    elif report.promoted:
        log(f"not promoted (--no-promote): netwarden models promote {version}")
    else:
        log(f"kept {current_name} current; the refused candidate stays as {version} for review")
    record["promoted"] = promoted
    write_gate(model_dir, version, record)
    pruned = prune_versions(model_dir, keep_versions) if keep_versions else []
    if pruned:
        log(f"deleted {len(pruned)} old versions (models.keep_versions {keep_versions})")
    return RetrainResult(
        version=version,
        folder=folder,
        report=report,
        promoted=promoted,
        trained_rows=len(train_rows),
        excluded=counts,
        pruned=pruned,
    )


# -------------------------------------------------------------------------------- models


def version_json(v: ModelVersion, model_dir: Path) -> dict[str, Any]:
    """One version as ``models list/show`` print it."""
    gate = read_gate(model_dir, v.version)
    return {
        "version": v.version,
        "current": v.current,
        "created": v.created.isoformat(),
        "rows": v.rows,
        "models": v.models,
        "training_start": v.training_start.isoformat() if v.training_start else None,
        "training_end": v.training_end.isoformat() if v.training_end else None,
        "signed": v.signed,
        "gate": gate,
    }


def find_version(model_dir: Path, version: str) -> ModelVersion:
    for v in list_versions(model_dir):
        if v.version == version:
            return v
    raise UserError(f"{model_dir}: no version {version!r} (see `netwarden models list`)")


def promote(
    model_dir: Path,
    version: str,
    *,
    actor: str,
    reason: str = "",
    signing_key: Path | None = None,
    key: bytes | None = None,
) -> str | None:
    """Make ``version`` current by hand (whatever its gate said); returns the previous one."""
    try:
        return set_current(
            model_dir,
            version,
            actor=actor,
            action="promote",
            reason=reason or "promoted by hand",
            key=key if key is not None else signing_key_from(signing_key),
        )
    except RegistryError as exc:
        raise UserError(str(exc)) from None


def rollback(
    model_dir: Path,
    version: str | None = None,
    *,
    actor: str,
    reason: str = "",
    signing_key: Path | None = None,
    key: bytes | None = None,
) -> tuple[str | None, str]:
    """Make ``version`` (default: the one before the current) current again; returns
    (previous, now current)."""
    try:
        target = version or rollback_target(model_dir)
        previous = set_current(
            model_dir,
            target,
            actor=actor,
            action="rollback",
            reason=reason or "rolled back",
            key=key if key is not None else signing_key_from(signing_key),
        )
    except RegistryError as exc:
        raise UserError(str(exc)) from None
    return previous, target


# ------------------------------------------------------------------------------ backfill


def backfill(
    flows: list[str],
    model_dir: Path,
    history: Path,
    *,
    db: Path | None = None,
    edges: Path | None = None,
    signing_key: Path | None = None,
    console: Console,
) -> int:
    """Score ``flows`` with the current model as ``serve`` would (windows, judge, store) and
    append the judged windows to ``history``; with ``edges``, the live edge memory is read
    from and saved back to that file, as the service keeps ``<data_dir>/edges.json``. Returns
    the windows written."""
    from netwarden.commands.common import check_flow_paths, ingest_with_progress
    from netwarden.detector.judge import WindowJudge
    from netwarden.detector.scorer import Scorer
    from netwarden.detector.stream import StreamScorer
    from netwarden.ingest.windows import WindowBuilder
    from netwarden.models.edges import save_memory
    from netwarden.storage.history import WINDOW_SCHEMA, write_rows

    check_flow_paths(flows)
    key = signing_key_from(signing_key)
    name = current_version(model_dir)
    try:
        bundle = load_bundle(model_dir, key=key)
    except ArtifactError as exc:
        raise UserError(str(exc)) from None
    memory = EdgeMemory()
    memory.merge(bundle.edges)
    if edges is not None and edges.is_file():
        memory.merge(load_memory(edges))
    judge = WindowJudge(Scorer(bundle), memory)
    store = None
    if db is not None:
        from netwarden.detector.store import AnomalyStore

        db.parent.mkdir(parents=True, exist_ok=True)
        store = AnomalyStore(f"sqlite:///{db}")
    rows: list[dict[str, Any]] = []

    def on_scored(closed: list[Any], scored: list[Any]) -> None:
        if store is not None:
            store.record(scored)
        rows.extend(history_rows(closed, scored, name or ""))

    stream = StreamScorer(judge, on_scored, max_windows=2048)
    try:
        ingest_with_progress(
            flows,
            stream.add,
            console=console,
            builder=WindowBuilder(bundle.windows),
            label="scoring windows",
        )
        stream.flush()
    finally:
        if store is not None:
            store.close()
    write_rows(history / "windows", rows, WINDOW_SCHEMA)
    if edges is not None:
        save_memory(memory, edges)
    flagged = sum(r["anomalous"] for r in rows)
    console.print(
        f"wrote {len(rows):,} judged windows ({flagged:,} flagged) by {name} to {history}",
        markup=False,
    )
    return len(rows)

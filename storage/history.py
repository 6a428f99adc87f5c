"""Window history: what the service scored, kept as Parquet partitioned by day.

Retraining learns from it, the promotion gate validates on it, analysts read it with pandas or
DuckDB. Layout under the history root (``<data_dir>/history`` for ``netwarden serve``)::

    windows/date=YYYY-MM-DD/part-<time>-<id>.parquet   one row per scored identity-window
    flows/date=YYYY-MM-DD/part-<time>-<id>.parquet     compact flow records (history.flows)
    labels/anomalies.parquet, labels/changes.parquet   people's verdicts, a snapshot per flush

A window row holds the identity (``identity``, ``namespace``, ``workload``), the window
(``window_start``, ``window_end``: UTC timestamps), every model feature (``egress_*``,
``ingress_*``), and how it was judged: ``score``, ``threshold``, ``anomalous`` (the verdict),
``model_anomalous`` (the model's alone), ``model`` (which model of the version), ``model_version``,
``incident``, ``new_edges``. The day partition is hive-style, so both readers prune by it::

    read_windows("netwarden-data/service/history", start=..., identities=["shop/cart"])
    duckdb.sql("SELECT * FROM read_parquet('history/windows/*/*.parquet', hive_partitioning=1)")

Labels are exported, not read from the store at retrain time only, so that a retraining job
given the history folder alone (a Kubernetes CronJob on shared storage) has them too; with a
store URL, retraining reads them fresh from the store instead (same :class:`Labels`).

:class:`HistoryWriter` buffers rows in memory and writes them from its own thread every
``flush_seconds`` and on :meth:`~HistoryWriter.close`, so the pipeline only appends to a list.
A part file is written under a dot-name and renamed, so readers never see half a file. Rows
beyond ``max_rows`` waiting (a disk that stopped taking writes) are dropped and counted, never
buffered without bound. Day folders older than ``retention_days`` are deleted.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from netwarden.ingest.features import feature_columns

__all__ = [
    "CONFIRMED",
    "EXPECTED",
    "WINDOW_SCHEMA",
    "AnomalyLabel",
    "ChangeLabel",
    "HistoryWriter",
    "Labels",
    "latest_window_end",
    "read_flows",
    "read_labels",
    "read_windows",
    "write_labels",
    "write_rows",
]

#: A person said the anomaly is real: kept out of training, a positive for the gate.
CONFIRMED: Final = "confirmed"
#: A person said it is expected (suppressed with a reason, resolved as benign): trained on.
EXPECTED: Final = "expected"

_UTC_TS = pa.timestamp("us", tz="UTC")
WINDOW_SCHEMA: Final = pa.schema(
    [
        ("identity", pa.string()),
        ("namespace", pa.string()),
        ("workload", pa.string()),
        ("window_start", _UTC_TS),
        ("window_end", _UTC_TS),
        *((name, pa.float64()) for name in feature_columns()),
        ("score", pa.float64()),
        ("threshold", pa.float64()),
        ("anomalous", pa.bool_()),
        ("model_anomalous", pa.bool_()),
        ("model", pa.string()),
        ("model_version", pa.string()),
        ("incident", pa.string()),
        ("new_edges", pa.int32()),
    ]
)
FLOW_SCHEMA: Final = pa.schema(
    [
        ("time", _UTC_TS),
        ("verdict", pa.string()),
        ("drop_reason", pa.string()),
        ("source", pa.string()),  # namespace/pod, or the IP address
        ("destination", pa.string()),
        ("protocol", pa.string()),
        ("port", pa.int32()),
        ("dns_query", pa.string()),
        ("reply", pa.bool_()),
        ("node", pa.string()),
    ]
)
_PARTITIONING: Final = ds.partitioning(pa.schema([("date", pa.string())]), flavor="hive")
_TIME_COLUMN: Final = {"windows": "window_start", "flows": "time"}


# ------------------------------------------------------------------------------- writing


def write_rows(
    folder: Path,
    rows: Sequence[Mapping[str, Any]],
    schema: pa.Schema = WINDOW_SCHEMA,
    *,
    time_column: str = "window_start",
) -> list[Path]:
    """Write ``rows`` (dicts with ``schema``'s columns; missing ones are null) as one new part
    file per day of ``time_column`` under ``folder/date=YYYY-MM-DD/``, atomically each.
    Returns the files."""
    by_day: dict[date, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        by_day[_utc(row[time_column]).date()].append(row)
    written = []
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    for day, items in sorted(by_day.items()):
        table = pa.Table.from_pylist([dict(r) for r in items], schema=schema)
        target = folder / f"date={day.isoformat()}"
        target.mkdir(parents=True, exist_ok=True)
        name = f"part-{stamp}-{uuid.uuid4().hex[:12]}.parquet"
        tmp = target / f".{name}.tmp"
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, target / name)
        written.append(target / name)
    return written


def _utc(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return datetime.fromtimestamp(float(value), UTC)


def prune(root: Path, retention_days: float, *, now: datetime | None = None) -> int:
    """Delete day folders (windows and flows) whose whole day ended more than
    ``retention_days`` ago; returns how many were deleted."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=retention_days)
    deleted = 0
    for kind in _TIME_COLUMN:
        folder = root / kind
        if not folder.is_dir():
            continue
        for day in folder.glob("date=*"):
            try:
                ends = datetime.fromisoformat(day.name[5:]).replace(tzinfo=UTC) + timedelta(1)
            except ValueError:
                continue  # not ours
            if ends < cutoff:
                shutil.rmtree(day, ignore_errors=True)
                deleted += 1
    return deleted


@dataclass
class HistoryStats:
    """What the writer did (read by the service's metrics and logs)."""

    rows_written: int = 0
    flows_written: int = 0
    rows_dropped: int = 0
    files_written: int = 0
    failures: int = 0
    last_error: str = ""


class HistoryWriter:
    """Buffers window rows (and flow records) and writes them as Parquet on its own thread.

    ``labels`` is called at each flush for a fresh :class:`Labels` snapshot to export (None:
    no export). ``flows`` says whether :meth:`add_flows` keeps anything.
    """

    def __init__(
        self,
        root: Path,
        *,
        flush_seconds: float = 300.0,
        retention_days: float = 30.0,
        flows: bool = False,
        max_rows: int = 1_000_000,
        labels: Callable[[], Labels] | None = None,
        log: Callable[[str], Any] = print,
    ) -> None:
        if flush_seconds <= 0 or retention_days <= 0 or max_rows <= 0:
            raise ValueError("flush_seconds, retention_days and max_rows must be positive")
        self.root = Path(root)
        self.flush_seconds = flush_seconds
        self.retention_days = retention_days
        self.keep_flows = flows
        self.max_rows = max_rows
        self.labels = labels
        self.log = log
        self.stats = HistoryStats()
        self._windows: list[Mapping[str, Any]] = []
        self._flows: list[Mapping[str, Any]] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pruned_at = 0.0

    def add_windows(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Queue window rows; never waits for a write."""
        with self._lock:
            self._windows.extend(rows)
            self._bound(self._windows)

    def add_flows(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Queue compact flow records (see :func:`flow_record`), when flows are kept."""
        if not self.keep_flows:
            return
        with self._lock:
            self._flows.extend(rows)
            self._bound(self._flows)

    def _bound(self, items: list[Mapping[str, Any]]) -> None:
        extra = len(items) - self.max_rows
        if extra > 0:
            del items[:extra]
            self.stats.rows_dropped += extra

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="history", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            self.flush()

    def flush(self) -> int:
        """Write what is buffered (and the labels, and prune once an hour); returns the window
        rows written. A failed write keeps its rows for the next flush (within ``max_rows``)."""
        with self._write_lock:
            with self._lock:
                windows, self._windows = self._windows, []
                flows, self._flows = self._flows, []
            written = 0
            for kind, rows, schema in (
                ("windows", windows, WINDOW_SCHEMA),
                ("flows", flows, FLOW_SCHEMA),
            ):
                if not rows:
                    continue
                try:
                    files = write_rows(
                        self.root / kind, rows, schema, time_column=_TIME_COLUMN[kind]
                    )
                except (OSError, pa.ArrowException, ValueError, TypeError) as exc:
                    self.stats.failures += 1
                    self.stats.last_error = f"{type(exc).__name__}: {exc}"
                    self.log(f"history: {len(rows):,} {kind} rows not written yet: {exc}")
                    with self._lock:
                        target = self._windows if kind == "windows" else self._flows
                        target[:0] = rows
                        self._bound(target)
                    continue
                self.stats.files_written += len(files)
                if kind == "windows":
                    self.stats.rows_written += len(rows)
                    written = len(rows)
                else:
                    self.stats.flows_written += len(rows)
            self._export_labels()
            if time.monotonic() - self._pruned_at > 3600.0:
                self._pruned_at = time.monotonic()
                deleted = prune(self.root, self.retention_days)
                if deleted:
                    self.log(f"history: deleted {deleted} day folders past retention")
            return written

    def _export_labels(self) -> None:
        if self.labels is None:
            return
        try:
            write_labels(self.root, self.labels())
        except Exception as exc:  # the store may be down: the previous snapshot stays
            self.log(f"history: labels not exported: {type(exc).__name__}: {exc}")

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread and write what is left."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.flush()


def flow_record(flow: Any) -> dict[str, Any]:
    """A compact history record of one Flow (or CompactFlow): who talked to whom, how."""
    l4 = getattr(flow, "l4", None)
    protocol, port = "", 0
    for name in ("TCP", "UDP", "SCTP", "ICMPv4", "ICMPv6"):
        part = getattr(l4, name, None) if l4 is not None else None
        if part is not None:
            protocol, port = name, int(getattr(part, "destination_port", 0) or 0)
            break
    l7 = getattr(flow, "l7", None)
    dns = getattr(l7, "dns", None) if l7 is not None else None
    ip = getattr(flow, "IP", None)
    when = getattr(flow, "time", None)
    return {
        "time": _utc(when) if when is not None else datetime.now(UTC),
        "verdict": str(getattr(flow, "verdict", "")),
        "drop_reason": str(getattr(flow, "drop_reason_desc", "") or ""),
        "source": _endpoint(getattr(flow, "source", None), getattr(ip, "source", "")),
        "destination": _endpoint(
            getattr(flow, "destination", None), getattr(ip, "destination", "")
        ),
        "protocol": protocol,
        "port": port,
        "dns_query": getattr(dns, "query", "") if dns is not None else "",
        "reply": bool(getattr(flow, "is_reply", None) or getattr(flow, "reply", False)),
        "node": str(getattr(flow, "node_name", "")),
    }


def _endpoint(endpoint: Any, address: str) -> str:
    if endpoint is not None and getattr(endpoint, "pod_name", ""):
        return f"{endpoint.namespace}/{endpoint.pod_name}"
    return address or ""


# ------------------------------------------------------------------------------- reading


def _dataset(root: Path, kind: str) -> ds.Dataset | None:
    folder = Path(root) / kind
    if not folder.is_dir():
        folder = Path(root)  # given the windows folder itself
        if not any(folder.glob("date=*")):
            return None
    files = sorted(str(p) for p in folder.glob("date=*/part-*.parquet"))
    if not files:
        return None
    schemas = [pq.read_schema(f) for f in files]
    schema = pa.unify_schemas(schemas)  # older files may lack newer columns: null there
    return ds.dataset(
        files,
        schema=schema.append(pa.field("date", pa.string())),
        format="parquet",
        partitioning=_PARTITIONING,
        partition_base_dir=str(folder),
    )


def _read(
    root: Path,
    kind: str,
    schema: pa.Schema,
    start: datetime | None,
    end: datetime | None,
    extra: Any = None,
) -> Any:
    dataset = _dataset(root, kind)
    column = _TIME_COLUMN[kind]
    if dataset is None:
        return schema.empty_table().to_pandas()
    condition = extra
    if start is not None:
        start = _utc(start)
        c = (ds.field(column) >= pa.scalar(start, _UTC_TS)) & (
            ds.field("date") >= start.date().isoformat()
        )
        condition = c if condition is None else condition & c
    if end is not None:
        end = _utc(end)
        c = (ds.field(column) < pa.scalar(end, _UTC_TS)) & (
            ds.field("date") <= end.date().isoformat()
        )
        condition = c if condition is None else condition & c
    table = dataset.to_table(filter=condition)
    table = table.drop_columns(["date"]) if "date" in table.column_names else table
    frame = table.to_pandas()
    keys = [column, "identity"] if kind == "windows" else [column]
    return frame.sort_values(keys, kind="stable", ignore_index=True)


def read_windows(
    root: str | Path,
    start: datetime | None = None,
    end: datetime | None = None,
    identities: Iterable[str] | None = None,
) -> Any:
    """The history's window rows with ``start <= window_start < end`` (either open), of
    ``identities`` (all when None), as a pandas DataFrame sorted by window start and identity;
    an empty frame with the columns when there are none. ``root`` is the history folder (or
    its ``windows`` folder)."""
    wanted = None if identities is None else sorted(set(identities))
    extra = None if wanted is None else ds.field("identity").isin(wanted)
    return _read(Path(root), "windows", WINDOW_SCHEMA, start, end, extra)


def latest_window_end(root: str | Path) -> datetime | None:
    """The end of the newest window in the history (reads only the newest day's files)."""
    dataset = _dataset(Path(root), "windows")
    if dataset is None:
        return None
    newest = max(Path(f).parent.name for f in dataset.files)
    table = dataset.to_table(columns=["window_end"], filter=ds.field("date") == newest[5:])
    if table.num_rows == 0:
        return None
    value = pc.max(table["window_end"]).as_py()
    return _utc(value) if value is not None else None


def read_flows(root: str | Path, start: datetime | None = None, end: datetime | None = None) -> Any:
    """The compact flow records with ``start <= time < end``, as a DataFrame (see
    :func:`read_windows`)."""
    return _read(Path(root), "flows", FLOW_SCHEMA, start, end)


# -------------------------------------------------------------------------------- labels


@dataclass(frozen=True, slots=True)
class AnomalyLabel:
    """One anomaly and what people said about it: ``verdict`` is :data:`CONFIRMED`,
    :data:`EXPECTED` or "" (nobody said). ``start``/``end`` bound its windows."""

    anomaly_id: int
    identity: str
    start: datetime
    end: datetime
    state: str
    verdict: str
    incident: str = ""
    note: str = ""


@dataclass(frozen=True, slots=True)
class ChangeLabel:
    """A change people accepted or rejected: its identities, time span and edges (as
    :meth:`netwarden.detector.changes.Change.to_json` writes them)."""

    change_id: str
    status: str
    identities: tuple[str, ...]
    first_seen: datetime
    last_seen: datetime
    edges: tuple[dict[str, Any], ...] = ()


@dataclass
class Labels:
    """Everything people said that retraining and the promotion gate use."""

    anomalies: list[AnomalyLabel] = field(default_factory=list)
    changes: list[ChangeLabel] = field(default_factory=list)

    def confirmed(self) -> list[AnomalyLabel]:
        return [a for a in self.anomalies if a.verdict == CONFIRMED]

    def expected(self) -> list[AnomalyLabel]:
        return [a for a in self.anomalies if a.verdict == EXPECTED]


_ANOMALY_SCHEMA: Final = pa.schema(
    [
        ("anomaly_id", pa.int64()),
        ("identity", pa.string()),
        ("start", _UTC_TS),
        ("end", _UTC_TS),
        ("state", pa.string()),
        ("verdict", pa.string()),
        ("incident", pa.string()),
        ("note", pa.string()),
    ]
)
_CHANGE_SCHEMA: Final = pa.schema(
    [
        ("change_id", pa.string()),
        ("status", pa.string()),
        ("identities", pa.list_(pa.string())),
        ("first_seen", _UTC_TS),
        ("last_seen", _UTC_TS),
        ("edges", pa.string()),  # JSON list
    ]
)


def _write_atomic(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def write_labels(root: str | Path, labels: Labels) -> None:
    """Replace the labels snapshot under ``root/labels`` (each file atomically)."""
    folder = Path(root) / "labels"
    anomalies = [
        {
            "anomaly_id": a.anomaly_id,
            "identity": a.identity,
            "start": a.start,
            "end": a.end,
            "state": a.state,
            "verdict": a.verdict,
            "incident": a.incident,
            "note": a.note,
        }
        for a in labels.anomalies
    ]
    changes = [
        {
            "change_id": c.change_id,
            "status": c.status,
            "identities": list(c.identities),
            "first_seen": c.first_seen,
            "last_seen": c.last_seen,
            "edges": orjson.dumps(list(c.edges)).decode(),
        }
        for c in labels.changes
    ]
    _write_atomic(
        pa.Table.from_pylist(anomalies, schema=_ANOMALY_SCHEMA), folder / "anomalies.parquet"
    )
    _write_atomic(pa.Table.from_pylist(changes, schema=_CHANGE_SCHEMA), folder / "changes.parquet")


def read_labels(root: str | Path) -> Labels | None:
    """The labels snapshot under ``root/labels``, or None when there is none."""
    folder = Path(root) / "labels"
    a_path, c_path = folder / "anomalies.parquet", folder / "changes.parquet"
    if not a_path.is_file() or not c_path.is_file():
        return None
    anomalies = [AnomalyLabel(**row) for row in pq.read_table(a_path).to_pylist()]
    changes = [
        ChangeLabel(
            change_id=row["change_id"],
            status=row["status"],
            identities=tuple(row["identities"] or ()),
            first_seen=row["first_seen"],
            last_seen=row["last_seen"],
            edges=tuple(orjson.loads(row["edges"] or "[]")),
        )
        for row in pq.read_table(c_path).to_pylist()
    ]
    return Labels(anomalies=anomalies, changes=changes)

"""The window history: Parquet by day, readable by pandas and DuckDB, labels, retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from netwarden.ingest.features import feature_columns
from netwarden.storage.history import (
    AnomalyLabel,
    ChangeLabel,
    HistoryWriter,
    Labels,
    flow_record,
    latest_window_end,
    prune,
    read_flows,
    read_labels,
    read_windows,
    write_labels,
)

T0 = datetime(2026, 1, 5, 23, 50, tzinfo=UTC)
LONG = 10 * 365.0  # days: the rows here are older than any default retention


def _rows(n: int, identities: tuple[str, ...] = ("shop/cart", "shop/web")) -> list[dict]:
    rows = []
    for i in range(n):
        identity = identities[i % len(identities)]
        start = T0 + timedelta(minutes=i // len(identities))
        row = {
            "identity": identity,
            "namespace": identity.split("/")[0],
            "workload": identity.split("/")[1],
            "window_start": start,
            "window_end": start + timedelta(minutes=1),
            "score": 0.1 * i,
            "threshold": 1.0,
            "anomalous": i % 7 == 0,
            "model_anomalous": False,
            "model": "global",
            "model_version": "v1",
            "incident": "",
            "new_edges": i % 3,
        }
        row.update({c: float(i) for c in feature_columns()})
        rows.append(row)
    return rows


def test_writer_partitions_by_day_and_reads_back(tmp_path: Path) -> None:
    writer = HistoryWriter(tmp_path, retention_days=LONG, flush_seconds=3600)
    rows = _rows(40)  # 20 minutes of two identities, across midnight
    writer.add_windows(rows)
    assert not (tmp_path / "windows").exists()  # buffered: nothing written before a flush
    assert writer.flush() == 40
    days = sorted(p.name for p in (tmp_path / "windows").iterdir())
    assert days == ["date=2026-01-05", "date=2026-01-06"]
    assert not list(tmp_path.rglob("*.tmp"))
    frame = read_windows(tmp_path)
    assert len(frame) == 40
    assert str(frame["window_start"].dt.tz) == "UTC"
    assert list(frame["window_start"]) == sorted(frame["window_start"])
    assert frame["egress_flows"].sum() == sum(r["egress_flows"] for r in rows)
    assert writer.stats.rows_written == 40 and writer.stats.files_written == 2


def test_read_windows_filters_time_and_identities(tmp_path: Path) -> None:
    writer = HistoryWriter(tmp_path, retention_days=LONG)
    writer.add_windows(_rows(40))
    writer.flush()
    start, end = T0 + timedelta(minutes=5), T0 + timedelta(minutes=15)
    frame = read_windows(tmp_path, start=start, end=end, identities=["shop/web"])
    assert set(frame["identity"]) == {"shop/web"}
    assert frame["window_start"].min() == start
    assert frame["window_start"].max() == end - timedelta(minutes=1)
    assert len(frame) == 10
    # the windows folder itself works as a root too, and an empty history is an empty frame
    assert len(read_windows(tmp_path / "windows")) == 40
    empty = read_windows(tmp_path / "nothing")
    assert empty.empty and "egress_flows" in empty.columns
    assert latest_window_end(tmp_path) == T0 + timedelta(minutes=20)
    assert latest_window_end(tmp_path / "nothing") is None


def test_duckdb_reads_the_same_rows_with_hive_partitions(tmp_path: Path) -> None:
    duckdb = pytest.importorskip("duckdb")
    writer = HistoryWriter(tmp_path, retention_days=LONG)
    writer.add_windows(_rows(40))
    writer.flush()
    writer.add_windows(_rows(4, ("db/postgres",)))  # a second part file in the same days
    writer.flush()
    pattern = f"{tmp_path}/windows/*/*.parquet"
    per_day = duckdb.sql(
        f"SELECT CAST(date AS VARCHAR), count(*) FROM read_parquet('{pattern}', "
        "hive_partitioning = true) GROUP BY 1 ORDER BY 1"
    ).fetchall()
    frame = read_windows(tmp_path)
    by_pandas = frame.groupby(frame["window_start"].dt.strftime("%Y-%m-%d")).size()
    assert per_day == list(by_pandas.items())
    assert sum(n for _, n in per_day) == 44


def test_failed_write_keeps_rows_and_bound_counts_drops(tmp_path: Path) -> None:
    blocker = tmp_path / "windows"
    blocker.write_text("a file where the folder should be")
    logged: list[str] = []
    writer = HistoryWriter(tmp_path, retention_days=LONG, max_rows=30, log=logged.append)
    writer.add_windows(_rows(40))
    assert writer.stats.rows_dropped == 10  # bounded: the oldest beyond max_rows go
    assert writer.flush() == 0
    assert writer.stats.failures == 1 and "not written yet" in logged[0]
    blocker.unlink()
    assert writer.flush() == 30  # kept for the next flush


def test_thread_flushes_on_close(tmp_path: Path) -> None:
    writer = HistoryWriter(tmp_path, retention_days=LONG, flush_seconds=3600)
    writer.start()
    writer.add_windows(_rows(6))
    writer.close(timeout=2)
    assert len(read_windows(tmp_path)) == 6


def test_retention_deletes_old_days(tmp_path: Path) -> None:
    writer = HistoryWriter(tmp_path, retention_days=LONG)
    writer.add_windows(_rows(40))
    writer.flush()
    now = datetime(2026, 1, 8, 12, tzinfo=UTC)
    assert prune(tmp_path, retention_days=2.0, now=now) == 1  # 5 Jan ended > 2 days before
    assert sorted(p.name for p in (tmp_path / "windows").iterdir()) == ["date=2026-01-06"]
    assert prune(tmp_path, retention_days=2.0, now=now) == 0


def test_flows_kept_only_when_enabled(tmp_path: Path) -> None:
    from netwarden.ingest.flow import Flow

    flow = Flow(time=T0, verdict="FORWARDED", node_name="node-1")
    off = HistoryWriter(tmp_path / "off", retention_days=LONG)
    off.add_flows([flow_record(flow)])
    off.flush()
    assert read_flows(tmp_path / "off").empty
    on = HistoryWriter(tmp_path / "on", retention_days=LONG, flows=True)
    on.add_flows([flow_record(flow)] * 3)
    on.flush()
    frame = read_flows(tmp_path / "on")
    assert len(frame) == 3 and set(frame["node"]) == {"node-1"}
    assert set(frame["verdict"]) == {"FORWARDED"}


def test_labels_roundtrip(tmp_path: Path) -> None:
    labels = Labels(
        anomalies=[
            AnomalyLabel(1, "shop/cart", T0, T0 + timedelta(minutes=3), "resolved", "confirmed"),
            AnomalyLabel(2, "shop/web", T0, T0 + timedelta(minutes=1), "suppressed", "expected"),
        ],
        changes=[
            ChangeLabel(
                "chg-1",
                "accepted",
                ("shop/web",),
                T0,
                T0 + timedelta(hours=1),
                (
                    {
                        "identity": "shop/web",
                        "direction": "egress",
                        "peer": "x",
                        "port": "TCP/80",
                        "flows": 4,
                    },
                ),
            )
        ],
    )
    assert read_labels(tmp_path) is None
    write_labels(tmp_path, labels)
    back = read_labels(tmp_path)
    assert back == labels
    assert [a.anomaly_id for a in back.confirmed()] == [1]
    assert [a.anomaly_id for a in back.expected()] == [2]

"""Writing closed windows: Parquet (analysts, history) or JSON lines, streamed as they close.

One row per identity-window: ``identity``, ``namespace``, ``workload``, ``window_start``,
``window_end`` (UTC), every feature of :func:`~netwarden.ingest.features.feature_columns` as a
float, and the drop counts by reason of each side as a map (``egress_drop_reasons``,
``ingress_drop_reasons``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

import orjson

from netwarden.ingest.features import feature_columns
from netwarden.ingest.windows import ClosedWindow, windows_to_rows

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

__all__ = ["WindowWriter", "read_windows", "window_schema"]


@functools.cache
def window_schema() -> pa.Schema:
    """The Arrow schema of a windows file. Built on first use: pyarrow is imported only when
    Parquet is written or read, so writing JSON lines does not pay for its import."""
    import pyarrow as pa

    reasons = pa.map_(pa.string(), pa.int64())
    return pa.schema(
        [
            pa.field("identity", pa.string(), nullable=False),
            pa.field("namespace", pa.string(), nullable=False),
            pa.field("workload", pa.string(), nullable=False),
            pa.field("window_start", pa.timestamp("us", tz="UTC"), nullable=False),
            pa.field("window_end", pa.timestamp("us", tz="UTC"), nullable=False),
            *(pa.field(name, pa.float64(), nullable=False) for name in feature_columns()),
            pa.field("egress_drop_reasons", reasons),
            pa.field("ingress_drop_reasons", reasons),
        ]
    )


def __getattr__(name: str) -> Any:
    if name == "WINDOW_SCHEMA":  # the module constant of earlier releases, now built lazily
        return window_schema()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class WindowWriter:
    """Streams windows to ``path``; the format follows the suffix (``.parquet`` or ``.jsonl``)."""

    def __init__(self, path: str | Path, *, row_group_rows: int = 50_000) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in (".parquet", ".jsonl"):
            raise ValueError(f"{self.path}: output must end in .parquet or .jsonl")
        self.format = suffix[1:]
        self.rows = 0
        self._pending: list[dict[str, Any]] = []
        self._row_group_rows = row_group_rows
        self._parquet: pq.ParquetWriter | None = None
        self._jsonl: IO[bytes] | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.format == "parquet":
                import pyarrow.parquet as pq

                self._parquet = pq.ParquetWriter(self.path, window_schema(), compression="zstd")
            else:
                self._jsonl = open(self.path, "wb")
        except OSError as exc:
            raise ValueError(f"{self.path}: cannot write: {exc.strerror or exc}") from None

    def write(self, windows: list[ClosedWindow]) -> None:
        if self._jsonl is not None:
            self.rows += len(windows)
            dumps, newline = orjson.dumps, orjson.OPT_APPEND_NEWLINE
            self._jsonl.write(b"".join([dumps(row, option=newline) for row in _json_rows(windows)]))
            return
        rows = windows_to_rows(windows)
        self.rows += len(rows)
        self._pending.extend(rows)
        if len(self._pending) >= self._row_group_rows:
            self._flush()

    def _flush(self) -> None:
        if self._pending and self._parquet is not None:
            import pyarrow as pa

            rows = self._pending
            for row in rows:
                row["egress_drop_reasons"] = list(row["egress_drop_reasons"].items())
                row["ingress_drop_reasons"] = list(row["ingress_drop_reasons"].items())
            self._parquet.write_table(pa.Table.from_pylist(rows, schema=window_schema()))
            self._pending = []

    def close(self) -> None:
        if self._parquet is not None:
            self._flush()
            self._parquet.close()
            self._parquet = None
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None

    def __enter__(self) -> WindowWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _json_rows(windows: list[ClosedWindow]) -> Iterator[dict[str, Any]]:
    """The rows of :func:`windows_to_rows` with RFC 3339 times, made directly (no datetime per
    window: windows share their bounds, whose text is cached)."""
    for w in windows:
        subject = w.subject
        row: dict[str, Any] = {
            "identity": subject.id,
            "namespace": subject.namespace,
            "workload": subject.workload,
            "window_start": _rfc3339(w.start),
            "window_end": _rfc3339(w.end),
        }
        row.update(w.features())
        row["egress_drop_reasons"] = dict(w.client.drop_reasons)
        row["ingress_drop_reasons"] = dict(w.server.drop_reasons)
        yield row


@functools.lru_cache(maxsize=1024)
def _rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat().replace("+00:00", "Z")


def read_windows(path: str | Path) -> pa.Table:
    """Read a windows file written by :class:`WindowWriter` (either format) as an Arrow table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = Path(path)
    if p.suffix.lower() == ".parquet":
        return pq.read_table(p)
    rows = [orjson.loads(line) for line in p.read_bytes().splitlines() if line.strip()]
    for row in rows:
        row["egress_drop_reasons"] = list(row["egress_drop_reasons"].items())
        row["ingress_drop_reasons"] = list(row["ingress_drop_reasons"].items())
    table = pa.Table.from_pylist(
        rows,
        schema=pa.schema(
            [
                f if not pa.types.is_timestamp(f.type) else pa.field(f.name, pa.string())
                for f in window_schema()
            ]
        ),
    )
    return table.set_column(
        3, "window_start", table["window_start"].cast(pa.timestamp("us", tz="UTC"))
    ).set_column(4, "window_end", table["window_end"].cast(pa.timestamp("us", tz="UTC")))

"""Writing closed windows: Parquet (analysts, history) or JSON lines, streamed as they close.

One row per identity-window: ``identity``, ``namespace``, ``workload``, ``window_start``,
``window_end`` (UTC), every feature of :func:`~netwarden.ingest.features.feature_columns` as a
float, and the drop counts by reason of each side as a map (``egress_drop_reasons``,
``ingress_drop_reasons``).
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import IO, Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from netwarden.ingest.features import feature_columns
from netwarden.ingest.windows import ClosedWindow, windows_to_rows

__all__ = ["WINDOW_SCHEMA", "WindowWriter", "read_windows"]

_REASONS = pa.map_(pa.string(), pa.int64())
WINDOW_SCHEMA = pa.schema(
    [
        pa.field("identity", pa.string(), nullable=False),
        pa.field("namespace", pa.string(), nullable=False),
        pa.field("workload", pa.string(), nullable=False),
        pa.field("window_start", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("window_end", pa.timestamp("us", tz="UTC"), nullable=False),
        *(pa.field(name, pa.float64(), nullable=False) for name in feature_columns()),
        pa.field("egress_drop_reasons", _REASONS),
        pa.field("ingress_drop_reasons", _REASONS),
    ]
)


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
                self._parquet = pq.ParquetWriter(self.path, WINDOW_SCHEMA, compression="zstd")
            else:
                self._jsonl = open(self.path, "wb")
        except OSError as exc:
            raise ValueError(f"{self.path}: cannot write: {exc.strerror or exc}") from None

    def write(self, windows: list[ClosedWindow]) -> None:
        rows = windows_to_rows(windows)
        self.rows += len(rows)
        if self._jsonl is not None:
            self._jsonl.write(
                b"".join(
                    orjson.dumps(_jsonable(row), option=orjson.OPT_APPEND_NEWLINE) for row in rows
                )
            )
            return
        self._pending.extend(rows)
        if len(self._pending) >= self._row_group_rows:
            self._flush()

    def _flush(self) -> None:
        if self._pending and self._parquet is not None:
            rows = self._pending
            for row in rows:
                row["egress_drop_reasons"] = list(row["egress_drop_reasons"].items())
                row["ingress_drop_reasons"] = list(row["ingress_drop_reasons"].items())
            self._parquet.write_table(pa.Table.from_pylist(rows, schema=WINDOW_SCHEMA))
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


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["window_start"] = row["window_start"].isoformat().replace("+00:00", "Z")
    out["window_end"] = row["window_end"].isoformat().replace("+00:00", "Z")
    return out


def read_windows(path: str | Path) -> pa.Table:
    """Read a windows file written by :class:`WindowWriter` (either format) as an Arrow table."""
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
                for f in WINDOW_SCHEMA
            ]
        ),
    )
    return table.set_column(
        3, "window_start", table["window_start"].cast(pa.timestamp("us", tz="UTC"))
    ).set_column(4, "window_end", table["window_end"].cast(pa.timestamp("us", tz="UTC")))

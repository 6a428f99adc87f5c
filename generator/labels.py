"""Ground truth for detection benchmarks: one CSV row per injected attack."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["LABEL_FIELDS", "AttackLabel", "format_rfc3339", "read_labels", "write_labels"]

LABEL_FIELDS = ("scenario", "identity", "start", "end", "description")


@dataclass(frozen=True)
class AttackLabel:
    """One attack: which workload (``namespace/workload``) misbehaved, when, and how."""

    scenario: str
    identity: str
    start: datetime
    end: datetime
    description: str


def format_rfc3339(dt: datetime) -> str:
    """UTC with a ``Z`` suffix; fractional seconds only when present."""
    dt = dt.astimezone(UTC)
    frac = f".{dt.microsecond:06d}" if dt.microsecond else ""
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + frac + "Z"


def _parse(value: str) -> datetime:
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        raise ValueError(f"label time {value!r} has no timezone")
    return dt.astimezone(UTC)


def write_labels(path: Path, labels: tuple[AttackLabel, ...] | list[AttackLabel]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(LABEL_FIELDS)
    for lab in labels:
        writer.writerow(
            (
                lab.scenario,
                lab.identity,
                format_rfc3339(lab.start),
                format_rfc3339(lab.end),
                lab.description,
            )
        )
    path.write_text(buf.getvalue(), encoding="utf-8")


def read_labels(path: Path) -> list[AttackLabel]:
    """Read a ``labels.csv`` written by :func:`generate`; times come back tz-aware UTC."""
    with Path(path).open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != LABEL_FIELDS:
            raise ValueError(
                f"{path}: expected header {','.join(LABEL_FIELDS)}, "
                f"got {','.join(reader.fieldnames or ())}"
            )
        return [
            AttackLabel(
                r["scenario"], r["identity"], _parse(r["start"]), _parse(r["end"]), r["description"]
            )
            for r in reader
        ]

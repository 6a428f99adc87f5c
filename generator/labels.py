"""Ground truth for detection benchmarks: one CSV row per injected attack (``labels.csv``) and
one per benign change (``changes.csv``)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

__all__ = [
    "CHANGE_FIELDS",
    "LABEL_FIELDS",
    "AttackLabel",
    "ChangeLabel",
    "format_rfc3339",
    "read_changes",
    "read_labels",
    "write_changes",
    "write_labels",
]

LABEL_FIELDS = ("scenario", "identity", "start", "end", "description")
CHANGE_FIELDS = ("change", "identities", "start", "end", "description")


@dataclass(frozen=True)
class AttackLabel:
    """One attack: which workload (``namespace/workload``) misbehaved, when, and how."""

    scenario: str
    identity: str
    start: datetime
    end: datetime
    description: str


@dataclass(frozen=True)
class ChangeLabel:
    """One benign change: its kind, every ``namespace/workload`` whose traffic it affects (the
    new or changed workloads and the existing ones that gain a peer, name, address or volume
    because of it), and when; ``end`` is the end of the generated range if it persists."""

    change: str
    identities: tuple[str, ...]
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


def write_changes(path: Path, changes: tuple[ChangeLabel, ...] | list[ChangeLabel]) -> None:
    """Write ``changes.csv``: one row per change, ``identities`` space-separated."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CHANGE_FIELDS)
    for ch in changes:
        writer.writerow(
            (
                ch.change,
                " ".join(ch.identities),
                format_rfc3339(ch.start),
                format_rfc3339(ch.end),
                ch.description,
            )
        )
    path.write_text(buf.getvalue(), encoding="utf-8")


def _rows(path: Path, fields: tuple[str, ...]) -> list[dict[str, str]]:
    with Path(path).open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != fields:
            raise ValueError(
                f"{path}: expected header {','.join(fields)}, "
                f"got {','.join(reader.fieldnames or ())}"
            )
        return list(reader)


def read_changes(path: Path) -> list[ChangeLabel]:
    """Read a ``changes.csv`` written by :func:`generate`; times come back tz-aware UTC."""
    return [
        ChangeLabel(
            r["change"],
            tuple(r["identities"].split()),
            _parse(r["start"]),
            _parse(r["end"]),
            r["description"],
        )
        for r in _rows(path, CHANGE_FIELDS)
    ]


def read_labels(path: Path) -> list[AttackLabel]:
    """Read a ``labels.csv`` written by :func:`generate`; times come back tz-aware UTC."""
    return [
        AttackLabel(
            r["scenario"], r["identity"], _parse(r["start"]), _parse(r["end"]), r["description"]
        )
        for r in _rows(path, LABEL_FIELDS)
    ]

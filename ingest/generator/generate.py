"""``generate``: write a labelled Hubble flow file (and its ground truth) for a time range.

Time advances in one-minute chunks. Every chunk's sessions are encoded into a pending buffer that
is ordered by arrival time (event time plus a constant per-node lag), and everything that can no
longer be preceded by a later chunk is written out. Each node's lines are therefore in time
order, while the merged file is out of order by at most the lag spread (under 1.5 s), like a
Relay or exporter stream that merges several nodes.
"""

from __future__ import annotations

import gzip as _gzip
import io
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .attacks import SCENARIOS, plan_attacks
from .encode import FlowEncoder, Sink
from .labels import AttackLabel, write_labels
from .sessions import Conversations
from .topology import build_topology
from .traffic import NormalTraffic

__all__ = ["DEFAULT_START", "GenerateResult", "generate"]

DEFAULT_START = datetime(2026, 1, 5, tzinfo=timezone.utc)  # a Monday
_S = 1_000_000_000
_MIN = 60 * _S


@dataclass(frozen=True)
class GenerateResult:
    """What was written: paths, line count, the attack labels and the covered time range."""

    flows_path: Path
    labels_path: Path
    flows: int
    labels: tuple[AttackLabel, ...]
    start: datetime
    end: datetime


def _to_ns(dt: datetime) -> int:
    delta = dt - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86400 + delta.seconds) * _S + delta.microseconds * 1000


def _from_ns(ns: int) -> datetime:
    return datetime.fromtimestamp(ns // _S, tz=timezone.utc).replace(microsecond=ns % _S // 1000)


def _check(attacks: Sequence[str], hours: float, rate: float) -> list[str]:
    if isinstance(attacks, str):
        attacks = [attacks]
    bad = [a for a in attacks if a not in SCENARIOS]
    if bad:
        raise ValueError(f"unknown attack scenario {bad[0]!r}; valid: {', '.join(SCENARIOS)}")
    if not hours > 0:
        raise ValueError(f"hours must be > 0, got {hours!r}")
    if not rate > 0:
        raise ValueError(f"rate must be > 0, got {rate!r}")
    return list(attacks)


def generate(out_dir: Path, *, hours: float = 24.0, seed: int = 0, attacks: Sequence[str] = (),
             start: datetime | None = None, rate: float = 1.0, gzip: bool = False,
             progress: Callable[[float], None] | None = None) -> GenerateResult:
    """Write ``flows.jsonl`` (or ``.jsonl.gz``) and ``labels.csv`` into ``out_dir``.

    Same arguments give byte-identical files. ``rate`` scales user-driven traffic; fixed-period
    background (scrapes, watches) stays as it is. A naive ``start`` is taken as UTC.
    """
    names = _check(attacks, hours, rate)
    start = DEFAULT_START if start is None else start
    if start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)
    start = start.astimezone(timezone.utc)
    t_start = _to_ns(start)
    t_end = t_start + int(round(hours * 3600 * _S))

    seeds = np.random.SeedSequence(seed).spawn(7)

    def rnd_of(ss: np.random.SeedSequence) -> random.Random:
        return random.Random(int(ss.generate_state(2, np.uint64)[0]))

    topo = build_topology(rnd_of(seeds[0]))
    sink = Sink()
    enc = FlowEncoder(np.random.Generator(np.random.PCG64(seeds[1])), sink)
    normal = NormalTraffic(topo, Conversations(topo, enc, rnd_of(seeds[2])),
                           np.random.Generator(np.random.PCG64(seeds[3])), rnd_of(seeds[4]), rate)
    planned = plan_attacks(names, topo, Conversations(topo, enc, rnd_of(seeds[5])),
                           rnd_of(seeds[6]), t_start, t_end)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    flows_path = out_dir / ("flows.jsonl.gz" if gzip else "flows.jsonl")
    labels_path = out_dir / "labels.csv"
    pending = _ArrivalBuffer(min(n.lag_ns for n in topo.nodes))
    written = 0
    chunks = max(1, -(-(t_end - t_start) // _MIN))
    last_pct = -1
    with flows_path.open("wb", buffering=1 << 20) as raw:
        out: io.BufferedIOBase = raw
        if gzip:  # no name and mtime 0 in the header keep the bytes reproducible
            out = _gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=1, mtime=0)
        for i in range(chunks):
            t0 = t_start + i * _MIN
            t1 = min(t0 + _MIN, t_end)
            normal.emit(t0, t1)
            for a in planned:
                if a.start_ns < t1 and a.end_ns >= t0:
                    a.emit(t0, t1)
            pending.add(sink)
            batch = pending.release(t1) if i < chunks - 1 else pending.drain(t_end)
            if batch:
                out.write(("\n".join(batch) + "\n").encode())
                written += len(batch)
            pct = (i + 1) * 100 // chunks
            if progress is not None and pct != last_pct:
                last_pct = pct
                progress((i + 1) / chunks)
        if gzip:
            out.close()
    labels = tuple(AttackLabel(a.scenario, a.identity, _from_ns(a.start_ns), _from_ns(a.end_ns),
                               a.description) for a in planned)
    write_labels(labels_path, labels)
    return GenerateResult(flows_path, labels_path, written, labels, start, _from_ns(t_end))


class _ArrivalBuffer:
    """Lines waiting for every line that could still precede them (by arrival time)."""

    def __init__(self, min_lag_ns: int) -> None:
        self.min_lag = min_lag_ns
        self.keys: list[int] = []
        self.lines: list[str] = []

    def add(self, sink: Sink) -> None:
        self.keys += sink.keys
        self.lines += sink.lines
        sink.keys.clear()
        sink.lines.clear()

    def release(self, t_next_ns: int) -> list[str]:
        """Lines no later session can precede: sessions from ``t_next_ns`` on arrive later."""
        order = sorted(range(len(self.keys)), key=self.keys.__getitem__)
        cut = t_next_ns + self.min_lag
        n = next((i for i, j in enumerate(order) if self.keys[j] >= cut), len(order))
        out = [self.lines[j] for j in order[:n]]
        self.keys = [self.keys[j] for j in order[n:]]
        self.lines = [self.lines[j] for j in order[n:]]
        return out

    def drain(self, t_end_ns: int) -> list[str]:
        """Everything left, minus packets of sessions that spill past the end of the range."""
        order = sorted(range(len(self.keys)), key=self.keys.__getitem__)
        out = [self.lines[j] for j in order]
        self.keys, self.lines = [], []
        return [line for line in out if _event_ns(line) < t_end_ns]


def _event_ns(line: str) -> int:
    """Event time of an encoded line (only used for the few lines spilling past the end)."""
    ts = line[17:line.index('"', 17)]
    dt = datetime.fromisoformat(ts[:19] + "+00:00")
    frac = ts[20:-1] if len(ts) > 20 else ""
    return _to_ns(dt) + (int(frac.ljust(9, "0")) if frac else 0)

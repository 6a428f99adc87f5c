"""``generate``: write a labelled Hubble flow file (and its ground truth) for a time range.

Ground truth is ``labels.csv`` (attacks) and ``changes.csv`` (benign changes); ``cluster``
picks the cluster shape (:mod:`.clusters`).

Time advances in one-minute chunks (:class:`Simulation`, :func:`generate_chunks`). Every chunk's
sessions are encoded into a pending buffer that is ordered by arrival time (event time plus a
constant per-node lag), and everything that can no longer be preceded by a later chunk is
released. Each node's lines are therefore in time order, while the merged output is out of order
by at most the lag spread (under 1.5 s), like a Relay or exporter stream that merges several
nodes. The same chunks feed files here and the live stream in ``realtime.py``.
"""

from __future__ import annotations

import gzip as _gzip
import io
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from .attacks import ALL_SCENARIOS, SCENARIOS, Attack, plan_attack, plan_attacks
from .changes import Change, ChangeContext
from .clusters import CLUSTERS, ClusterSpec, cluster_spec
from .encode import FlowEncoder, Sink
from .labels import AttackLabel, ChangeLabel, write_changes, write_labels
from .schedule import CHANGES, plan_change, plan_day
from .sessions import Conversations
from .topology import Topology, build_topology
from .traffic import NormalTraffic

__all__ = [
    "DEFAULT_START",
    "GenerateResult",
    "Simulation",
    "change_label_of",
    "chunk_count",
    "generate",
    "generate_chunks",
    "label_of",
]

DEFAULT_START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday
_S = 1_000_000_000
_MIN = 60 * _S


@dataclass(frozen=True)
class GenerateResult:
    """What was written: paths, line count, the attack and change labels, the covered time
    range and the cluster shape."""

    flows_path: Path
    labels_path: Path
    flows: int
    labels: tuple[AttackLabel, ...]
    start: datetime
    end: datetime
    changes_path: Path | None = None
    changes: tuple[ChangeLabel, ...] = ()
    cluster: str = "demo"


def _to_ns(dt: datetime) -> int:
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * _S + delta.microseconds * 1000


def _from_ns(ns: int) -> datetime:
    return datetime.fromtimestamp(ns // _S, tz=UTC).replace(microsecond=ns % _S // 1000)


def _utc(dt: datetime) -> datetime:
    """``dt`` as aware UTC; a naive time is taken as UTC."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def _names(values: Sequence[str] | str, valid: tuple[str, ...], what: str) -> list[str]:
    values = [values] if isinstance(values, str) else list(values)
    bad = [v for v in values if v not in valid]
    if bad:
        raise ValueError(f"unknown {what} {bad[0]!r}; valid: {', '.join(valid)}")
    return values


def _check(attacks: Sequence[str], hours: float, rate: float) -> list[str]:
    names = _names(attacks, ALL_SCENARIOS, "attack scenario")
    if not hours > 0:
        raise ValueError(f"hours must be > 0, got {hours!r}")
    if not rate > 0:
        raise ValueError(f"rate must be > 0, got {rate!r}")
    return names


def label_of(attack: Attack) -> AttackLabel:
    """The ground-truth record of a planned attack."""
    return AttackLabel(
        attack.scenario,
        attack.identity,
        _from_ns(attack.start_ns),
        _from_ns(attack.end_ns),
        attack.description,
    )


def change_label_of(change: Change) -> ChangeLabel:
    """The ground-truth record of a planned change."""
    return ChangeLabel(
        change.change,
        change.identities,
        _from_ns(change.start_ns),
        _from_ns(change.end_ns),
        change.description,
    )


class Simulation:
    """One seeded cluster and its random streams, stepped through time one chunk at a time.

    Eleven independent streams are spawned from ``seed`` (topology, uuids, normal sessions,
    normal counts, normal choices, attack sessions, attack planning, change sessions, change
    choices, change counts, schedule): the cluster depends on the seed (and ``cluster``) alone,
    and normal sessions are the same with or without attacks and changes (their uuids are not:
    one uuid stream serves all), except where a change alters them itself (a drained node's
    pods, a new DNS upstream). Spawned children are stable by index, so the first seven are
    those of the generator before changes existed.
    """

    def __init__(
        self, seed: int = 0, rate: float = 1.0, cluster: str | ClusterSpec = "demo"
    ) -> None:
        self.spec = cluster_spec(cluster)
        seeds = np.random.SeedSequence(seed).spawn(11)
        self.topo: Topology = build_topology(_rnd_of(seeds[0]), self.spec)
        self._sink = Sink()
        enc = FlowEncoder(np.random.Generator(np.random.PCG64(seeds[1])), self._sink)
        self.normal = NormalTraffic(
            self.topo,
            Conversations(self.topo, enc, _rnd_of(seeds[2])),
            np.random.Generator(np.random.PCG64(seeds[3])),
            _rnd_of(seeds[4]),
            rate,
        )
        self._attack_conv = Conversations(self.topo, enc, _rnd_of(seeds[5]))
        self._attack_rnd = _rnd_of(seeds[6])
        self._change_ctx = ChangeContext(
            self.topo,
            self.normal,
            Conversations(self.topo, enc, _rnd_of(seeds[7])),
            _rnd_of(seeds[8]),
            np.random.Generator(np.random.PCG64(seeds[9])),
            rate,
            0,
        )
        self._schedule_rnd = _rnd_of(seeds[10])
        self.min_lag_ns = min(n.lag_ns for n in self.topo.nodes)
        self._pending = _ArrivalBuffer(self.min_lag_ns)

    def plan(
        self, attacks: Sequence[str], changes: Sequence[str], start_ns: int, end_ns: int
    ) -> tuple[list[Attack], list[Change]]:
        """Attacks and changes over [start, end): the original attack slots when there are only
        fast attacks (``plan_attacks``), else the joint plan of :func:`~.schedule.plan_day`."""
        if not changes and all(a in SCENARIOS for a in attacks):
            return self.plan_attacks(list(attacks), start_ns, end_ns), []
        self._change_ctx.range_end_ns = end_ns
        return plan_day(
            attacks,
            changes,
            start_ns,
            end_ns,
            self._schedule_rnd,
            self.plan_attack,
            self.plan_change,
            self.spec.load,
        )

    def plan_change(self, name: str, start_ns: int, end_ns: int) -> Change:
        """One change of kind ``name`` over exactly [start, end)."""
        return plan_change(name, self._change_ctx, start_ns, end_ns)

    def plan_attacks(self, names: list[str], start_ns: int, end_ns: int) -> list[Attack]:
        """Attacks in non-overlapping slots across [start, end) (see ``plan_attacks``)."""
        return plan_attacks(names, self.topo, self._attack_conv, self._attack_rnd, start_ns, end_ns)

    def plan_attack(self, name: str, start_ns: int, end_ns: int) -> Attack:
        """One attack of scenario ``name`` over exactly [start, end)."""
        return plan_attack(name, self.topo, self._attack_conv, self._attack_rnd, start_ns, end_ns)

    def step(
        self, t0: int, t1: int, attacks: Iterable[Attack] = (), changes: Iterable[Change] = ()
    ) -> None:
        """Generate the sessions (normal, then ``attacks``, then ``changes``) that start in
        [t0, t1), after the changes' state transitions due by ``t0``."""
        changes = list(changes)
        for c in changes:
            c.apply(t0)
        self.normal.emit(t0, t1)
        for a in attacks:
            if a.start_ns < t1 and a.end_ns >= t0:
                a.emit(t0, t1)
        for c in changes:
            if c.start_ns < t1 and c.end_ns >= t0:
                c.emit(t0, t1)
        self._pending.add(self._sink)

    def release(self, t_next_ns: int) -> tuple[list[int], list[str]]:
        """(arrival keys, lines) that no session starting at ``t_next_ns`` or later can precede.

        Keys are event time plus node lag, ascending; everything later has a key of at least
        ``t_next_ns + min_lag_ns``.
        """
        return self._pending.release(t_next_ns)

    def drain(self, t_end_ns: int) -> tuple[list[int], list[str]]:
        """Everything still pending, minus lines whose event time is at or after ``t_end_ns``."""
        return self._pending.drain(t_end_ns)


def _rnd_of(ss: np.random.SeedSequence) -> random.Random:
    return random.Random(int(ss.generate_state(2, np.uint64)[0]))


def generate_chunks(
    sim: Simulation,
    attacks: Sequence[Attack],
    start_ns: int,
    end_ns: int,
    changes: Sequence[Change] = (),
) -> Iterator[list[str]]:
    """The lines of [start, end), one list per minute chunk (one per chunk, possibly empty).

    The last chunk also drains what is pending, cutting the lines that spill past the end.
    """
    chunks = chunk_count(start_ns, end_ns)
    for i in range(chunks):
        t0 = start_ns + i * _MIN
        t1 = min(t0 + _MIN, end_ns)
        sim.step(t0, t1, attacks, changes)
        _, lines = sim.release(t1) if i < chunks - 1 else sim.drain(end_ns)
        yield lines


def chunk_count(start_ns: int, end_ns: int) -> int:
    """How many chunks :func:`generate_chunks` yields for [start, end)."""
    return max(1, -(-(end_ns - start_ns) // _MIN))


def generate(
    out_dir: Path,
    *,
    hours: float = 24.0,
    seed: int = 0,
    attacks: Sequence[str] = (),
    start: datetime | None = None,
    rate: float = 1.0,
    gzip: bool = False,
    progress: Callable[[float], None] | None = None,
    changes: Sequence[str] = (),
    cluster: str = "demo",
) -> GenerateResult:
    """Write ``flows.jsonl`` (or ``.jsonl.gz``), ``labels.csv`` and ``changes.csv`` into
    ``out_dir``.

    Same arguments give byte-identical files. ``rate`` scales user-driven traffic; fixed-period
    background (scrapes, watches) stays as it is. A naive ``start`` is taken as UTC.
    ``attacks`` are names from ``ALL_SCENARIOS``, ``changes`` from ``CHANGES``, ``cluster`` a
    key of ``CLUSTERS`` (see :mod:`.schedule` for where they go in the range).
    """
    names = _check(attacks, hours, rate)
    change_names = _names(changes, CHANGES, "change")
    if cluster not in CLUSTERS:
        raise ValueError(f"unknown cluster {cluster!r}; valid: {', '.join(CLUSTERS)}")
    start = _utc(DEFAULT_START if start is None else start)
    t_start = _to_ns(start)
    t_end = t_start + round(hours * 3600 * _S)

    sim = Simulation(seed, rate, cluster)
    planned, planned_changes = sim.plan(names, change_names, t_start, t_end)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    flows_path = out_dir / ("flows.jsonl.gz" if gzip else "flows.jsonl")
    labels_path = out_dir / "labels.csv"
    changes_path = out_dir / "changes.csv"
    written = 0
    chunks = chunk_count(t_start, t_end)
    last_pct = -1
    with flows_path.open("wb", buffering=1 << 20) as raw:
        out: io.BufferedIOBase = raw
        if gzip:  # no name and mtime 0 in the header keep the bytes reproducible
            out = _gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=1, mtime=0)
        chunked = generate_chunks(sim, planned, t_start, t_end, planned_changes)
        for i, batch in enumerate(chunked):
            if batch:
                out.write(("\n".join(batch) + "\n").encode())
                written += len(batch)
            pct = (i + 1) * 100 // chunks
            if progress is not None and pct != last_pct:
                last_pct = pct
                progress((i + 1) / chunks)
        if gzip:
            out.close()
    labels = tuple(label_of(a) for a in planned)
    write_labels(labels_path, labels)
    change_labels = tuple(change_label_of(c) for c in planned_changes)
    write_changes(changes_path, change_labels)
    return GenerateResult(
        flows_path,
        labels_path,
        written,
        labels,
        start,
        _from_ns(t_end),
        changes_path,
        change_labels,
        cluster,
    )


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

    def release(self, t_next_ns: int) -> tuple[list[int], list[str]]:
        """Lines no later session can precede: sessions from ``t_next_ns`` on arrive later."""
        order = sorted(range(len(self.keys)), key=self.keys.__getitem__)
        cut = t_next_ns + self.min_lag
        n = next((i for i, j in enumerate(order) if self.keys[j] >= cut), len(order))
        keys = [self.keys[j] for j in order[:n]]
        out = [self.lines[j] for j in order[:n]]
        self.keys = [self.keys[j] for j in order[n:]]
        self.lines = [self.lines[j] for j in order[n:]]
        return keys, out

    def drain(self, t_end_ns: int) -> tuple[list[int], list[str]]:
        """Everything left, minus packets of sessions that spill past the end of the range."""
        order = sorted(range(len(self.keys)), key=self.keys.__getitem__)
        kept = [j for j in order if _event_ns(self.lines[j]) < t_end_ns]
        keys = [self.keys[j] for j in kept]
        out = [self.lines[j] for j in kept]
        self.keys, self.lines = [], []
        return keys, out


def _event_ns(line: str) -> int:
    """Event time of an encoded line (only used for the few lines spilling past the end)."""
    ts = line[17 : line.index('"', 17)]
    dt = datetime.fromisoformat(ts[:19] + "+00:00")
    frac = ts[20:-1] if len(ts) > 20 else ""
    return _to_ns(dt) + (int(frac.ljust(9, "0")) if frac else 0)

"""The traffic generator as an open-ended live stream, paced to the clock, with scheduled attacks.

``generate`` writes a fixed time range as fast as it can; :class:`RealtimeGenerator` runs the same
:class:`~.generate.Simulation` minute by minute from a start time (default: when it begins) and
releases each line when the clock reaches its arrival time (event time plus its node's stream
lag), ``speed`` times faster than real time. Attacks are injected on a schedule (the first after
``first_attack_after`` seconds, then one every ``attack_every`` seconds, cycling through the
scenarios), so a new user sees a detection within minutes and a test can wait for one.

Determinism: for the same seed, start and settings the stream is the same line for line, however
fast or slow it is consumed. Without attacks, the lines of [start, start + duration) are exactly
those ``generate(hours=duration / 3600, seed=seed, start=start)`` writes.

Continuing a generated history (``generate(..., seed=S, start=T - H, hours=H)``, then a stream
with ``seed=S, start=T``): the *cluster* continues, because the topology is drawn from the seed
alone: same nodes, pods, pod and service IPs, identities, endpoint IDs, internet visitors,
scrape and watch phases (aligned to absolute time), the same load cycle by time of day and the
same per-edge rates. What does *not* continue is the random state: the stream draws its sessions
afresh (different uuids, ephemeral ports, per-edge wobble restarting from zero), sessions in
flight at ``T`` are cut (the history drops lines at or after its end; the stream only starts new
sessions from ``T``), and attacks in the history, if any, are unrelated to the stream's.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime

from .attacks import ALL_SCENARIOS, SCENARIOS, Attack, min_duration_ns
from .generate import Simulation, _from_ns, _to_ns, _utc, label_of
from .labels import AttackLabel

__all__ = ["RealtimeGenerator", "default_attack_duration"]

_S = 1_000_000_000
_MIN = 60 * _S
#: How long a live attack lasts by default: a few minutes; a beacon needs repeats to look periodic.
_LIVE_DURATION_NS = 4 * _MIN


def default_attack_duration(name: str, attack_every: float) -> float:
    """Seconds a live attack of scenario ``name`` lasts when not set: a few minutes, at most 80%
    of the gap between attacks so that attacks never overlap."""
    base = max(_LIVE_DURATION_NS, min_duration_ns(name)) / _S
    return min(base, 0.8 * attack_every)


class RealtimeGenerator:
    """Lines of an endless (or ``duration``-long) generated Hubble stream, paced to a clock.

    Parameters
    ----------
    seed, rate:
        As for :func:`~.generate.generate`: the seed draws the cluster and all traffic; ``rate``
        scales user-driven traffic.
    start:
        Event time of the stream's beginning (naive = UTC). Default: the ``clock`` time when
        :meth:`batches` begins.
    speed:
        Event-time seconds per clock second (1.0 = real time; 600 = a minute in 0.1 s). The line
        with arrival time ``t`` is released ``(t - start) / speed`` seconds after :meth:`batches`
        begins. A slow consumer is never skipped ahead of: the stream falls behind and catches
        up, losing nothing.
    attacks:
        Scenario names injected in this order, cycling; default every scenario of ``SCENARIOS``
        (the fast ones); ``()`` for none. Low-and-slow ones (``SLOW_SCENARIOS``) may be named,
        with an ``attack_every`` long enough for their hour.
    first_attack_after, attack_every:
        Seconds of event time from ``start`` to the first attack, and between attack starts.
    attack_duration:
        Seconds each attack lasts; default :func:`default_attack_duration`.
    duration:
        Seconds of event time after which the stream ends; default None (never).
    tick:
        Shortest clock wait between batches in seconds, so lines are handed over in batches
        rather than one by one.
    cluster:
        The cluster shape, a key of ``CLUSTERS`` (default ``"demo"``).
    clock, monotonic, sleep:
        Injectable time: ``clock`` gives aware UTC now (for the default start), ``monotonic``
        paces the stream, ``sleep(seconds)`` waits (default: ``stop.wait`` so stopping is
        prompt, or ``time.sleep`` without a stop event).
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        rate: float = 1.0,
        start: datetime | None = None,
        speed: float = 1.0,
        attacks: Sequence[str] | None = None,
        first_attack_after: float = 60.0,
        attack_every: float = 600.0,
        attack_duration: float | None = None,
        duration: float | None = None,
        tick: float = 0.05,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
        cluster: str = "demo",
    ) -> None:
        names = list(
            SCENARIOS if attacks is None else [attacks] if isinstance(attacks, str) else attacks
        )
        bad = [a for a in names if a not in ALL_SCENARIOS]
        if bad:
            raise ValueError(
                f"unknown attack scenario {bad[0]!r}; valid: {', '.join(ALL_SCENARIOS)}"
            )
        _positive("rate", rate)
        _positive("speed", speed)
        _positive("tick", tick)
        if not first_attack_after >= 0:
            raise ValueError(f"first_attack_after must be >= 0 seconds, got {first_attack_after!r}")
        if not attack_every >= 15:
            raise ValueError(f"attack_every must be >= 15 seconds, got {attack_every!r}")
        if attack_duration is not None and not 10 <= attack_duration <= attack_every:
            raise ValueError(
                f"attack_duration must be in [10, attack_every={attack_every:g}] "
                f"seconds, got {attack_duration!r}"
            )
        if duration is not None:
            _positive("duration", duration)
        self.seed = seed
        self.speed = float(speed)
        self.attack_names = tuple(names)
        self.first_attack_after = float(first_attack_after)
        self.attack_every = float(attack_every)
        self.attack_duration = attack_duration
        self.duration = duration
        self.tick = float(tick)
        self._start = None if start is None else _utc(start)
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep
        self._sim = Simulation(seed, rate, cluster)
        self.cluster = self._sim.spec.key
        # every attack planned so far, as (start, label): the Attack objects themselves (with
        # their event lists) are dropped once they are over, so memory stays bounded
        self._planned: list[tuple[int, AttackLabel]] = []
        self._labels: tuple[AttackLabel, ...] = ()
        self._through_ns: int | None = None
        self._started = False

    # -- what the stream has done ---------------------------------------------------------------
    @property
    def start(self) -> datetime | None:
        """Event time of the stream's beginning; None until known (default start, not begun)."""
        return self._start

    @property
    def position(self) -> datetime | None:
        """Event time up to which lines have been released (by arrival time); None before."""
        return None if self._through_ns is None else _from_ns(self._through_ns)

    @property
    def labels(self) -> tuple[AttackLabel, ...]:
        """The attacks injected so far: those whose start the stream has reached, in order."""
        return self._labels

    def _update_labels(self) -> None:
        through = self._through_ns
        if through is None:
            return
        n = len(self._labels)
        while n < len(self._planned) and self._planned[n][0] <= through:
            n += 1
        if n != len(self._labels):
            self._labels = tuple(label for _, label in self._planned[:n])

    # -- schedule -------------------------------------------------------------------------------
    def _attack_start_ns(self, k: int, start_ns: int) -> int:
        t = start_ns + round((self.first_attack_after + k * self.attack_every) * _S)
        return -(-t // _S) * _S  # whole seconds, so labels contain their flows exactly

    def _plan_until(self, t1: int, start_ns: int, active: list[Attack]) -> None:
        """Plan every scheduled attack that starts before ``t1``."""
        if not self.attack_names:
            return
        while True:
            k = len(self._planned)
            s0 = self._attack_start_ns(k, start_ns)
            if s0 >= t1:
                return
            name = self.attack_names[k % len(self.attack_names)]
            secs = (
                self.attack_duration
                if self.attack_duration is not None
                else default_attack_duration(name, self.attack_every)
            )
            attack = self._sim.plan_attack(name, s0, s0 + int(secs) * _S)
            self._planned.append((s0, label_of(attack)))
            active.append(attack)

    # -- the stream -----------------------------------------------------------------------------
    def batches(self, stop: threading.Event | None = None) -> Iterator[list[str]]:
        """Yield lists of JSON lines in arrival order as their time comes, until ``stop`` is
        set or ``duration`` is reached. Runs once."""
        if self._started:
            raise RuntimeError("a RealtimeGenerator streams once; make a new one")
        self._started = True
        if self._start is None:
            self._start = _utc(self._clock())
        start_ns = _to_ns(self._start)
        end_ns = None if self.duration is None else start_ns + round(self.duration * _S)
        sim = self._sim
        per_ns = 1.0 / (self.speed * _S)  # clock seconds per event-time nanosecond
        wall0 = self._monotonic()
        sleep = self._sleep
        if sleep is None:
            sleep = stop.wait if stop is not None else time.sleep
        keys: list[int] = []
        lines: list[str] = []
        pos = 0  # keys[:pos] are handed out
        released_until = start_ns  # every line with an arrival key below this is in `lines`
        t_next = start_ns  # start of the next chunk to simulate
        active: list[Attack] = []
        done = False  # the last chunk (at ``duration``) has been simulated

        while stop is None or not stop.is_set():
            now_ns = start_ns + int((self._monotonic() - wall0) / per_ns)
            if not done and now_ns >= released_until:  # one chunk per pass bounds memory
                t0, t1 = t_next, t_next + _MIN
                if end_ns is not None:
                    t1 = min(t1, end_ns)
                self._plan_until(t1, start_ns, active)
                sim.step(t0, t1, active)
                done = end_ns is not None and t1 >= end_ns
                new_keys, new_lines = sim.drain(end_ns) if done else sim.release(t1)  # type: ignore[arg-type]
                keys = keys[pos:] + new_keys
                lines = lines[pos:] + new_lines
                pos = 0
                released_until = t1 + sim.min_lag_ns
                t_next = t1
                active = [a for a in active if a.end_ns >= t1]
            n = bisect.bisect_right(keys, now_ns, pos)
            if n > pos:
                out = lines[pos:n]
                pos = n
                self._through_ns = min(now_ns, released_until)
                self._update_labels()
                yield out
                continue
            if done and pos == len(keys):
                return
            due = keys[pos] if pos < len(keys) else released_until  # > now_ns here
            sleep(max((due - now_ns) * per_ns, self.tick))


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")

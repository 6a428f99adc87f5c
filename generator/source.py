"""The built-in traffic generator as a live source (``netwarden serve generator``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from netwarden.generator.labels import AttackLabel
from netwarden.generator.realtime import RealtimeGenerator
from netwarden.ingest.sources.base import Clock, LineSource, utcnow

__all__ = ["GeneratorSource"]


class GeneratorSource(LineSource):
    """The built-in traffic generator as a live source: a seeded cluster in (scaled) real time.

    Lines come from :class:`~netwarden.generator.realtime.RealtimeGenerator` (see it for
    pacing, the attack schedule and what continues from a history made by ``generate`` with the
    same seed) and are decoded through the same reader as files. ``labels`` lists the attacks
    injected so far, so a demo or a test can tell what it should detect.
    """

    kind = "generator"

    def __init__(
        self,
        *,
        seed: int = 0,
        start: datetime | None = None,
        rate: float = 1.0,
        speed: float = 1.0,
        attacks: Sequence[str] | None = None,
        first_attack_after: float = 60.0,
        attack_every: float = 600.0,
        attack_duration: float | None = None,
        duration: float | None = None,
        batch_lines: int = 64,
        clock: Clock = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
        max_examples: int = 5,
        cluster: str = "demo",
    ) -> None:
        super().__init__(
            f"generator:seed={seed}" + ("" if cluster == "demo" else f",cluster={cluster}"),
            batch_lines=batch_lines,
            clock=clock,
            max_examples=max_examples,
        )
        self.generator = RealtimeGenerator(
            seed=seed,
            rate=rate,
            start=start,
            speed=speed,
            attacks=attacks,
            first_attack_after=first_attack_after,
            attack_every=attack_every,
            attack_duration=attack_duration,
            duration=duration,
            clock=clock,
            monotonic=monotonic,
            sleep=sleep,
            cluster=cluster,
        )

    @property
    def labels(self) -> tuple[AttackLabel, ...]:
        """Attacks injected so far (their start has been streamed), in order."""
        return self.generator.labels

    def run(self, emit: Callable[[list[Any]], None], stop: threading.Event) -> None:
        self._set_state(True)
        line_no = 1
        ended = "stopped"
        try:
            for lines in self.generator.batches(stop):
                raw = [line.encode() for line in lines]
                self._deliver(self._decode(line_no, raw), emit)
                line_no += len(raw)
            if not stop.is_set():
                ended = "end of the generated range"
        finally:
            self._set_state(False, ended)

"""Live flow sources for ``netwarden serve``: one interface for every stream of flows.

(Being written: see the LiveSource protocol below; implementations follow.)
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from netwarden.ingest.reader import ReadStats

__all__ = ["LiveSource", "SourceStatus"]


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """A live source as the service sees it now."""

    kind: str  # "file", "stdin", "generator"; later "hubble", "ebpf"
    name: str  # what it reads, e.g. the file path
    up: bool  # connected / readable and not failed
    error: str | None = None  # why it is down, in words
    flows: int = 0  # flows delivered since start
    last_flow_at: datetime | None = None  # wall-clock time of the last delivered batch (UTC)


class LiveSource(Protocol):
    """A stream of decoded flows. ``run`` blocks, calling ``emit`` with batches of flows in
    arrival order until ``stop`` is set or the source ends; ``emit`` may block, which is how a
    slow consumer pushes back. Bad input never raises: it is counted in ``stats``."""

    kind: str
    name: str
    stats: ReadStats

    def status(self) -> SourceStatus: ...

    def run(self, emit: Callable[[list[Any]], None], stop: threading.Event) -> None: ...

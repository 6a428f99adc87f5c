"""The ``ebpf`` live source: the agent's flows straight into ``netwarden serve``'s pipeline.

Flows go through the same decoder as every other source (:meth:`FlowReader.decode_lines` on
their JSON), so the pipeline sees exactly what ``netwarden agent --out -`` piped into
``netwarden serve -`` would give. A host that cannot run the probes (not root, no BTF, no
headers, no bcc) leaves the source down with the reason as its status, not a traceback.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from netwarden.bpf.agent import Agent, AgentOptions
from netwarden.ingest.sources.base import LineSource, utcnow

__all__ = ["EbpfSource"]


class EbpfSource(LineSource):
    """Flows from netwarden's own eBPF probes on this host (see :mod:`netwarden.bpf.agent`)."""

    kind = "ebpf"

    def __init__(
        self,
        *,
        node_name: str | None = None,
        identity_map: str | Path | None = None,
        kubernetes: str = "auto",
        udp_peers: bool = True,
        cgroup_root: str | Path | None = None,
        batch_lines: int = 64,
        log: Callable[[str], Any] = print,
        clock: Callable[[], datetime] = utcnow,
        max_examples: int = 5,
    ) -> None:
        super().__init__("ebpf", batch_lines=batch_lines, clock=clock, max_examples=max_examples)
        self.options = AgentOptions(
            node_name=node_name or "",
            identity_map=Path(identity_map) if identity_map else None,
            kubernetes=kubernetes,
            udp_peers=udp_peers,
            cgroup_root=Path(cgroup_root) if cgroup_root else None,
        )
        self.log = log
        self.agent: Agent | None = None
        self._line_no = 1

    def run(self, emit: Callable[[list[Any]], None], stop: threading.Event) -> None:
        from netwarden.bpf.preflight import AgentUnavailable

        try:
            self.agent = Agent.open(self.options, log=self.log)
        except AgentUnavailable as exc:
            self._set_state(False, str(exc))
            self.log(f"ebpf source: {exc}")
            return
        self._set_state(True)
        stopped = "stopped"
        try:
            self.agent.run(lambda lines: self._deliver_lines(lines, emit), stop)
        finally:
            self._set_state(False, stopped)

    def _deliver_lines(self, lines: list[bytes], emit: Callable[[list[Any]], None]) -> None:
        first, self._line_no = self._line_no, self._line_no + len(lines)
        self._deliver(self._decode(first, lines), emit)

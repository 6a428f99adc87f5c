"""Labelled synthetic Hubble traffic: a seeded cluster, a daily load cycle and injected attacks.

``generate`` writes ``flows.jsonl`` in the ``hubble observe -o json`` / exporter envelope exactly
as Hubble 1.20 prints it, plus ``labels.csv`` with one row per attack, so detectors can be
measured without a cluster (see DESIGN.md, "A built-in traffic generator"). ``RealtimeGenerator``
streams the same cluster open-endedly, paced to the clock, with attacks on a schedule.
"""

from .attacks import SCENARIOS
from .generate import GenerateResult, Simulation, generate, generate_chunks
from .labels import AttackLabel, read_labels
from .realtime import RealtimeGenerator

__all__ = [
    "SCENARIOS",
    "AttackLabel",
    "GenerateResult",
    "RealtimeGenerator",
    "Simulation",
    "generate",
    "generate_chunks",
    "read_labels",
]

"""Labelled synthetic Hubble traffic: a seeded cluster, a daily load cycle, injected attacks and
benign change.

``generate`` writes ``flows.jsonl`` in the ``hubble observe -o json`` / exporter envelope exactly
as Hubble 1.20 prints it, plus ``labels.csv`` with one row per attack and ``changes.csv`` with one
row per benign change, so detectors can be measured without a cluster (see DESIGN.md, "A built-in
traffic generator"). ``cluster`` picks the cluster shape (``CLUSTERS``: ``demo``, ``fintech``,
``media``). ``RealtimeGenerator`` streams the same cluster open-endedly, paced to the clock, with attacks on
a schedule.
"""

from .attacks import ALL_SCENARIOS, SCENARIOS, SLOW_SCENARIOS
from .clusters import CLUSTERS
from .generate import GenerateResult, Simulation, generate, generate_chunks
from .labels import AttackLabel, ChangeLabel, read_changes, read_labels
from .realtime import RealtimeGenerator
from .schedule import CHANGES

__all__ = [
    "ALL_SCENARIOS",
    "CHANGES",
    "CLUSTERS",
    "SCENARIOS",
    "SLOW_SCENARIOS",
    "AttackLabel",
    "ChangeLabel",
    "GenerateResult",
    "RealtimeGenerator",
    "Simulation",
    "generate",
    "generate_chunks",
    "read_changes",
    "read_labels",
]

"""`netwarden windows` output and every closed window's contents (edges, examples, pods, peer
names) stay exactly what they were before the speed and memory work on ``ingest/``: the
expected files in ``tests/data/windows/`` were written by commit c3f8a07 from the same flows."""

from __future__ import annotations

import gzip
import lzma
from pathlib import Path
from typing import Any

import orjson
import pytest

from netwarden.cli import main
from netwarden.ingest.pipeline import build_windows
from netwarden.ingest.windows import ClosedWindow, Edge

DATA = Path(__file__).parent / "data" / "windows"
CLUSTERS = ("demo", "fintech")


def _flows(cluster: str, tmp_path: Path) -> Path:
    path = tmp_path / f"{cluster}.flows.jsonl"
    path.write_bytes(lzma.decompress((DATA / f"{cluster}-15m.flows.jsonl.xz").read_bytes()))
    return path


def _edge(e: Edge) -> list[Any]:
    return [e.peer, e.peer_hash, e.protocol, e.port, e.flows, e.syns, e.syn_acks, e.resets,
            e.drops, list(e.times)]  # fmt: skip


def _dump(w: ClosedWindow) -> dict[str, Any]:
    return {
        "id": w.identity,
        "start": w.start,
        "f": w.features(),
        "eg": [_edge(e) for e in w.edges(True)],
        "in": [_edge(e) for e in w.edges(False)],
        "ex": w.examples(),
        "pods": [sorted(w.client.pods), sorted(w.server.pods)],
        "names": sorted(w.peer_names.items()),
    }


@pytest.mark.parametrize("cluster", CLUSTERS)
def test_windows_command_output_unchanged(cluster: str, tmp_path: Path) -> None:
    out = tmp_path / "windows.jsonl"
    with pytest.raises(SystemExit) as exit_:
        main(["windows", "--flows", str(_flows(cluster, tmp_path)), "--out", str(out)])
    assert exit_.value.code in (0, None)
    expected = gzip.decompress((DATA / f"{cluster}-15m.windows.jsonl.gz").read_bytes())
    assert out.read_bytes() == expected


@pytest.mark.parametrize("cluster", CLUSTERS)
def test_closed_windows_unchanged(cluster: str, tmp_path: Path) -> None:
    got: list[dict[str, Any]] = []
    build_windows([_flows(cluster, tmp_path)], lambda ws: got.extend(map(_dump, ws)))
    lines = gzip.decompress((DATA / f"{cluster}-15m.edges.jsonl.gz").read_bytes()).splitlines()
    expected = [orjson.loads(line) for line in lines]
    assert len(got) == len(expected)
    for mine, theirs in zip(got, expected, strict=True):
        assert orjson.loads(orjson.dumps(mine, option=orjson.OPT_NON_STR_KEYS)) == theirs, (
            mine["id"],
            mine["start"],
        )

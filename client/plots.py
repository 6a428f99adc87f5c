"""Pictures where people would rather look than read: a score over time, an explanation's
feature contributions, a namespace's service graph.

Every function returns a :class:`matplotlib.figure.Figure` made without pyplot, on an Agg
canvas: no global state and no display, so it is safe in the API's threads and on a server,
and it leaves a notebook's own backend alone. :func:`png` turns one into PNG bytes; a notebook
(after ``%matplotlib inline``) shows a figure that ends a cell.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import networkx as nx
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

__all__ = ["EDGE_COLOURS", "contributions", "png", "score_over_time", "service_graph"]

#: Edge colours of the service graph, by status.
EDGE_COLOURS: Final = {"normal": "#9e9e9e", "new": "#f59e0b", "anomalous": "#dc2626"}
_NORMAL: Final = "#2563eb"
_ALERT: Final = "#dc2626"


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png(fig: Figure) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _require(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{what} needs the columns {', '.join(missing)}; got {list(frame.columns)}"
        )


def score_over_time(
    windows: pd.DataFrame,
    *,
    anomalies: pd.DataFrame | None = None,
    title: str = "",
    width: float = 10.0,
    height: float = 3.6,
) -> Figure:
    """An identity's score per window, its threshold, the anomalous windows marked and the
    anomalies (``first_window_start`` .. ``last_window_end``) shaded.

    ``windows`` has ``window_start``, ``score``, ``threshold`` and ``anomalous`` (as
    :meth:`Client.windows <netwarden.client.Client.windows>` returns them); scores are in
    units of the threshold's scale, higher is worse. An empty frame draws an empty, labelled
    plot rather than failing: an identity with no windows in a range is an answer too.
    """
    _require(windows, ("window_start", "score", "threshold", "anomalous"), "score_over_time")
    fig = _figure(width, height)
    ax = fig.add_subplot()
    data = windows.sort_values("window_start")
    t = pd.to_datetime(data["window_start"], utc=True)
    ax.plot(t, data["score"], color=_NORMAL, linewidth=1.2, label="score")
    ax.step(
        t,
        data["threshold"],
        where="post",
        color="#525252",
        linestyle="--",
        linewidth=1,
        label="threshold",
    )
    hits = data["anomalous"].astype(bool)
    if hits.any():
        ax.scatter(
            t[hits], data["score"][hits], color=_ALERT, s=18, zorder=3, label="anomalous window"
        )
    if anomalies is not None and len(anomalies):
        for _, a in anomalies.iterrows():
            ax.axvspan(
                pd.Timestamp(a["first_window_start"]),
                pd.Timestamp(a["last_window_end"]),
                color=_ALERT,
                alpha=0.12,
                linewidth=0,
            )
    if len(data):
        locator = AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    else:
        ax.text(0.5, 0.5, "no scored windows", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylabel("score")
    ax.set_xlabel("window start (UTC)")
    ax.set_title(title or "score over time")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize="small")
    return fig


def contributions(
    reasons: pd.DataFrame | Iterable[Mapping[str, Any]],
    *,
    title: str = "",
    top: int = 12,
    width: float = 8.0,
) -> Figure:
    """An explanation as bars: each feature's contribution to the score, strongest on top,
    labelled with the window's value against the identity's baseline.

    ``reasons`` has ``feature``, ``contribution``, ``value`` and ``baseline`` (an anomaly's or
    a window's reasons: :meth:`Client.reasons <netwarden.client.Client.reasons>`)."""
    frame = reasons if isinstance(reasons, pd.DataFrame) else pd.DataFrame(list(reasons))
    if frame.empty:
        frame = pd.DataFrame(columns=["feature", "contribution", "value", "baseline"])
    _require(frame, ("feature", "contribution", "value", "baseline"), "contributions")
    data = frame.sort_values("contribution", ascending=False).head(top).iloc[::-1]
    fig = _figure(width, 1.2 + 0.38 * max(len(data), 1))
    ax = fig.add_subplot()
    colours = [_ALERT if c > 0 else _NORMAL for c in data["contribution"]]
    ax.barh(data["feature"].astype(str), data["contribution"], color=colours)
    for y, (_, r) in enumerate(data.iterrows()):
        ax.annotate(
            f" {r['value']:.3g} (baseline {r['baseline']:.3g})",
            (max(float(r["contribution"]), 0.0), y),
            va="center",
            fontsize="small",
        )
    if data.empty:
        ax.text(0.5, 0.5, "no reasons", ha="center", va="center", transform=ax.transAxes)
    ax.margins(x=0.35)
    ax.set_xlabel("contribution to the score")
    ax.set_title(title or "what drove the score")
    ax.grid(axis="x", alpha=0.3)
    return fig


def _layout(graph: nx.DiGraph, seed: int) -> dict[Any, Any]:
    """Kamada-Kawai (path lengths become distances: readable for a namespace's few dozen
    nodes), started from a seeded spring layout so the same graph always draws the same way;
    a spring layout alone for large graphs, where Kamada-Kawai's O(n²) memory hurts."""
    start = nx.spring_layout(graph, seed=seed)
    if graph.number_of_nodes() > 200:
        return dict(start)
    return dict(nx.kamada_kawai_layout(graph.to_undirected(), pos=start))


def service_graph(
    edges: pd.DataFrame,
    *,
    namespace: str | None = None,
    title: str = "",
    seed: int = 1,
    width: float = 9.0,
    height: float = 7.0,
) -> Figure:
    """A namespace's service graph: who calls whom, new edges and anomalous ones highlighted.

    ``edges`` has ``source``, ``target`` (``namespace/workload`` or a peer such as
    ``reserved:world``), ``flows`` and ``status`` (``normal``, ``new`` or ``anomalous``;
    missing means normal). With ``namespace``, only edges with an end in it are drawn. The
    layout (networkx) depends only on the graph and ``seed``: the same graph draws the same way.
    """
    _require(edges, ("source", "target", "flows"), "service_graph")
    data = edges.copy()
    if "status" not in data.columns:
        data["status"] = "normal"
    unknown = set(data["status"]) - set(EDGE_COLOURS)
    if unknown:
        raise ValueError(f"unknown edge status {sorted(unknown)}; valid: {list(EDGE_COLOURS)}")
    if namespace is not None:
        prefix = f"{namespace}/"
        inside = data["source"].str.startswith(prefix) | data["target"].str.startswith(prefix)
        data = data[inside]
    rank = {"normal": 0, "new": 1, "anomalous": 2}  # one edge per pair, its worst status
    data = data.assign(rank=data["status"].map(rank))
    grouped = data.groupby(["source", "target"], as_index=False).agg(
        flows=("flows", "sum"), rank=("rank", "max")
    )
    status_of = {v: k for k, v in rank.items()}
    graph = nx.DiGraph()
    for r in grouped.itertuples(index=False):
        graph.add_edge(r.source, r.target, flows=int(r.flows), status=status_of[int(r.rank)])
    fig = _figure(width, height)
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_title(title or (f"service graph of {namespace}" if namespace else "service graph"))
    if not graph.number_of_edges():
        ax.text(0.5, 0.5, "no edges", ha="center", va="center", transform=ax.transAxes)
        return fig
    pos = _layout(graph, seed)
    own = [n for n in graph if namespace is None or str(n).startswith(f"{namespace}/")]
    other = [n for n in graph if n not in own]
    nx.draw_networkx_nodes(graph, pos, nodelist=own, node_color="#dbeafe", node_size=900, ax=ax)
    nx.draw_networkx_nodes(graph, pos, nodelist=other, node_color="#f5f5f5", node_size=700, ax=ax)
    heaviest = max(d["flows"] for _, _, d in graph.edges(data=True)) or 1
    for status in ("normal", "new", "anomalous"):  # the worst drawn last, on top
        chosen = [(u, v) for u, v, d in graph.edges(data=True) if d["status"] == status]
        if not chosen:
            continue
        widths = [1.0 + 3.0 * graph.edges[e]["flows"] / heaviest for e in chosen]
        nx.draw_networkx_edges(
            graph,
            pos,
            edgelist=chosen,
            width=widths if status == "normal" else [max(w, 2.5) for w in widths],
            edge_color=EDGE_COLOURS[status],
            arrows=True,
            arrowsize=14,
            node_size=900,
            connectionstyle="arc3,rad=0.08",
            ax=ax,
        )
    labels = {n: str(n).removeprefix(f"{namespace}/") if namespace else str(n) for n in graph}
    nx.draw_networkx_labels(graph, pos, labels=labels, font_size=8, ax=ax)
    ax.margins(0.15)  # room for the labels of the outermost nodes
    shown = {d["status"] for _, _, d in graph.edges(data=True)}  # the legend names what is drawn
    handles = [
        Line2D([0], [0], color=c, linewidth=3, label=s)
        for s, c in EDGE_COLOURS.items()
        if s in shown
    ]
    ax.legend(handles=handles, loc="lower left", fontsize="small")
    return fig

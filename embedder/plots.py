"""Plotly figure builders for the app: the embedding map, training curves, metrics next to baselines.

No Streamlit here: every function takes arrays or dicts and returns a ``go.Figure`` (or plain rows).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

OTHER = "other"
TOP_N = 20  # labels that get their own colour and legend entry; the rest share the grey "other" trace
PALETTE = (
    "#1F77B4",
    "#FF7F0E",
    "#2CA02C",
    "#D62728",
    "#9467BD",
    "#8C564B",
    "#E377C2",
    "#17BECF",
    "#BCBD22",
    "#7F7F7F",
)  # D3's ten: distinct on white and for most colour-blind viewers
OTHER_COLOR = "#C8C8C8"
# Beyond ten labels the colours repeat, so the symbol changes. Scatter3d only knows these eight symbols.
SYMBOLS_2D = ("circle", "square", "diamond", "triangle-up", "cross", "x", "pentagon", "hexagon")
SYMBOLS_3D = ("circle", "square", "diamond", "cross", "x", "circle-open", "square-open", "diamond-open")
QUERY_COLOR = "#FFD400"


def top_labels(labels: Sequence[str], top_n: int = TOP_N) -> list[str]:
    """The ``top_n`` most frequent labels, most frequent first (ties: alphabetical), or all when fewer."""
    counts = Counter(labels)
    return sorted(counts, key=lambda lab: (-counts[lab], lab))[:top_n]


def label_style(index: int, dims: int = 2) -> tuple[str, str]:
    """(colour, symbol) of the label at ``index`` in the legend order: colours first, then symbols."""
    symbols = SYMBOLS_2D if dims == 2 else SYMBOLS_3D
    return PALETTE[index % len(PALETTE)], symbols[(index // len(PALETTE)) % len(symbols)]


def embedding_map(
    coords: np.ndarray,
    labels: Sequence[str],
    row_ids: Sequence[int] | None = None,
    hover: Sequence[str] | None = None,
    *,
    top_n: int = TOP_N,
    query_coords: np.ndarray | None = None,
    query_names: Sequence[str] | None = None,
    height: int = 620,
) -> go.Figure:
    """Scatter map of a gallery, one trace per label (2-D: WebGL ``Scattergl``; 3-D: ``Scatter3d``).

    Args:
        coords: (N, 2) or (N, 3) map positions.
        labels: (N,) label names; beyond the ``top_n`` most frequent they are drawn in one grey "other" trace
            whose symbols still tell the labels apart, and the hover names the real label.
        row_ids: (N,) stable ids put in ``customdata`` (Plotly's point indices restart in every trace, so a
            selection is mapped back to gallery rows through these). Default: 0..N-1.
        hover: (N,) extra hover text, e.g. file names.
        query_coords: (Q, dims) query positions, drawn on top as stars (3-D has no star: large diamonds).
        query_names: (Q,) their names.
    """
    coords = np.asarray(coords, dtype=np.float32)
    n, dims = coords.shape
    labels = [str(x) for x in labels]
    row_ids = np.arange(n) if row_ids is None else np.asarray(row_ids)
    hover = list(hover) if hover is not None else [""] * n
    shown = top_labels(labels, top_n)
    fig = go.Figure()
    for label, rows in _groups(labels, shown):
        color, symbols = _group_style(label, rows, labels, shown, dims)
        group, custom = OTHER if label is None else label, _customdata(rows, row_ids, labels, hover)
        fig.add_trace(_label_trace(coords[rows], color, symbols, f"{group} ({len(rows)})", group, custom))
    if query_coords is not None and len(query_coords):
        fig.add_trace(_query_trace(np.asarray(query_coords, dtype=np.float32), query_names))
    _lay_out(fig, dims, height)
    return fig


def _groups(labels: list[str], shown: list[str]) -> list[tuple[str | None, np.ndarray]]:
    """(label, its rows) in legend order: the shown labels sorted naturally, then (None, the rest) if any. The
    rest is keyed apart from the labels: a class may well be called "other"."""
    rows_by_label: dict[str, list[int]] = {lab: [] for lab in shown}
    rest: list[int] = []
    for i, lab in enumerate(labels):
        rows_by_label.get(lab, rest).append(i)
    groups = [(lab, rows_by_label[lab]) for lab in sorted(shown, key=_natural)] + ([(None, rest)] if rest else [])
    return [(lab, np.array(rows, dtype=np.int64)) for lab, rows in groups]


def _group_style(label: str | None, rows: np.ndarray, labels: list[str], shown: list[str], dims: int):
    """(colour, symbol or symbols): a shown label's own; the rest is grey, each point with its label's symbol."""
    if label is not None:
        return label_style(shown.index(label), dims)
    every_label = top_labels(labels, len(labels))  # a fixed symbol per label, also inside "other"
    return OTHER_COLOR, [label_style(every_label.index(labels[i]), dims)[1] for i in rows]


def _customdata(rows: np.ndarray, row_ids: np.ndarray, labels: list[str], hover: list[str]) -> np.ndarray | None:
    """(len(rows), 3) [row id, label, hover text] per point, or None for no points."""
    if not len(rows):
        return None
    names = np.array([labels[i] for i in rows], dtype=object)
    return np.stack([row_ids[rows], names, np.array([hover[i] for i in rows], dtype=object)], axis=1)


def _scatter(xyz: np.ndarray, marker: dict, **kw) -> go.Scattergl | go.Scatter3d:
    """WebGL markers for a 2-D map, a Scatter3d for a 3-D one."""
    if xyz.shape[1] == 2:
        return go.Scattergl(x=xyz[:, 0], y=xyz[:, 1], marker=marker, **kw)
    return go.Scatter3d(x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2], marker=marker, **kw)


def _label_trace(xyz: np.ndarray, color, symbols, name: str, group: str, custom) -> go.Scattergl | go.Scatter3d:
    if xyz.shape[1] == 2:
        marker = dict(color=color, symbol=symbols, size=7, opacity=0.8, line=dict(width=0))
    else:
        marker = dict(color=color, symbol=symbols, size=3, opacity=0.8)
    return _scatter(
        xyz,
        marker,
        name=name,
        legendgroup=group,
        customdata=custom,
        mode="markers",
        hovertemplate="<b>%{customdata[1]}</b><br>%{customdata[2]}<extra></extra>",
    )


def _query_trace(q: np.ndarray, names: Sequence[str] | None) -> go.Scattergl | go.Scatter3d:
    """The queries as stars (2-D) or large diamonds (3-D has no star), named on the map."""
    names = list(names) if names is not None else [f"query {i + 1}" for i in range(len(q))]
    if q.shape[1] == 2:
        marker = dict(symbol="star", size=22, color=QUERY_COLOR, line=dict(color="#111111", width=1.5))
    else:
        marker = dict(symbol="diamond", size=9, color=QUERY_COLOR, line=dict(color="#111111", width=2))
    return _scatter(
        q,
        marker,
        name="your images",
        mode="markers+text",
        text=names,
        textposition="top center",
        hovertemplate="<b>%{text}</b> (query)<extra></extra>",
    )


def _lay_out(fig: go.Figure, dims: int, height: int) -> None:
    fig.update_layout(
        height=height,
        margin=dict(l=10, r=10, t=30, b=10),
        legend=dict(itemsizing="constant", title="label"),
        dragmode="lasso" if dims == 2 else "orbit",
        plot_bgcolor="white",
        uirevision="map",
    )
    if dims == 2:
        # Map axes carry no units; equal scale keeps distances honest.
        fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False, title=None)
        fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, title=None, scaleanchor="x")
    else:
        axis = dict(showticklabels=False, title="", backgroundcolor="white", gridcolor="#EEEEEE")
        fig.update_layout(scene=dict(xaxis=axis, yaxis=axis, zaxis=axis))


def _natural(label: str):
    """Sort "2" before "10" when labels are numbers, else alphabetically."""
    return (0, int(label), "") if label.lstrip("-").isdigit() else (1, 0, label)

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
    group_of = {lab: lab for lab in shown}
    groups = shown + ([OTHER] if len(set(labels)) > len(shown) else [])
    rows_by_group: dict[str, list[int]] = {g: [] for g in groups}
    for i, lab in enumerate(labels):
        rows_by_group[group_of.get(lab, OTHER)].append(i)
    every_label = top_labels(labels, len(labels))  # a fixed symbol per label, also inside "other"

    fig = go.Figure()
    for group in sorted(shown, key=_natural) + ([OTHER] if OTHER in groups else []):
        rows = np.array(rows_by_group[group], dtype=np.int64)
        if group == OTHER:
            color = OTHER_COLOR
            symbols = [label_style(every_label.index(labels[i]), dims)[1] for i in rows]
        else:
            color, symbols = label_style(shown.index(group), dims)
        custom = (
            np.stack(
                [
                    row_ids[rows],
                    np.array([labels[i] for i in rows], dtype=object),
                    np.array([hover[i] for i in rows], dtype=object),
                ],
                axis=1,
            )
            if len(rows)
            else None
        )
        common = dict(
            name=f"{group} ({len(rows)})",
            legendgroup=group,
            customdata=custom,
            mode="markers",
            hovertemplate="<b>%{customdata[1]}</b><br>%{customdata[2]}<extra></extra>",
        )
        if dims == 2:
            fig.add_trace(
                go.Scattergl(
                    x=coords[rows, 0],
                    y=coords[rows, 1],
                    marker=dict(color=color, symbol=symbols, size=7, opacity=0.8, line=dict(width=0)),
                    **common,
                )
            )
        else:
            fig.add_trace(
                go.Scatter3d(
                    x=coords[rows, 0],
                    y=coords[rows, 1],
                    z=coords[rows, 2],
                    marker=dict(color=color, symbol=symbols, size=3, opacity=0.8),
                    **common,
                )
            )
    if query_coords is not None and len(query_coords):
        q = np.asarray(query_coords, dtype=np.float32)
        names = list(query_names) if query_names is not None else [f"query {i + 1}" for i in range(len(q))]
        common = dict(
            name="your images",
            mode="markers+text",
            text=names,
            textposition="top center",
            hovertemplate="<b>%{text}</b> (query)<extra></extra>",
        )
        if dims == 2:
            fig.add_trace(
                go.Scattergl(
                    x=q[:, 0],
                    y=q[:, 1],
                    marker=dict(symbol="star", size=22, color=QUERY_COLOR, line=dict(color="#111111", width=1.5)),
                    **common,
                )
            )
        else:
            fig.add_trace(
                go.Scatter3d(
                    x=q[:, 0],
                    y=q[:, 1],
                    z=q[:, 2],
                    marker=dict(symbol="diamond", size=9, color=QUERY_COLOR, line=dict(color="#111111", width=2)),
                    **common,
                )
            )
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
    return fig


def _natural(label: str):
    """Sort "2" before "10" when labels are numbers, else alphabetically."""
    return (0, int(label), "") if label.lstrip("-").isdigit() else (1, 0, label)

"""The embedding map as a Plotly figure: compact enough for 100,000 points in a browser.

No Streamlit here: arrays in, a ``MapFigure`` out. What makes it compact: every point array is a numpy array,
which plotly >= 6 sends as a base64 typed array; positions go as uint16 on a 65,536-step grid (x and y: 5.3
bytes a point, where float32 took 11.5 with the JSON escaping of "/"); one trace per colour group,
so a group's name, colour, symbol and hover text are written once per trace, never once per point; and no
``customdata``: a selection names (trace, point index), and ``MapFigure.trace_rows`` turns that back into
gallery rows on the server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
import plotly.io

from .density import density_layer

OTHER = "other"
TOP_N = 20  # groups that get their own colour and legend entry; the rest are grey, behind one legend entry
MAX_TRACES = 200  # beyond this many groups the rest share one trace (hover then says "other")
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
FADED = 0.12  # opacity of points outside the focus or the selection: greyed out, still there for context
# Beyond ten groups the colours repeat, so the symbol changes. Scatter3d only knows these eight symbols.
SYMBOLS_2D = ("circle", "square", "diamond", "triangle-up", "cross", "x", "pentagon", "hexagon")
SYMBOLS_3D = ("circle", "square", "diamond", "cross", "x", "circle-open", "square-open", "diamond-open")
QUERY_COLOR = "#FFD400"
GRID = 65535  # positions are sent as uint16 steps of the map's extent
IMAGE_SIZE = 0.035  # images drawn on a map: this share of its extent wide
# Scores from low (blue) to high (red), every shade at least 4:1 against the white plot (WCAG asks 3:1 of a
# graphic): YlOrRd's low end, #FFFFCC, was 1.03:1, so low scores vanished.
SCORE_SCALE = [[0.0, "#4C7FC0"], [0.5, "#9B4BB0"], [1.0, "#C0101E"]]


@dataclass
class MapFigure:
    """A map and the gallery rows behind each of its point traces (queries, drawn last, have none)."""

    figure: go.Figure | None
    trace_rows: list[np.ndarray]  # trace i's point j is gallery row trace_rows[i][j]
    grid: tuple[np.ndarray, float] | None = None  # (low (dims,), scale): map units -> the grid the points are sent on

    def to_grid(self, coords: np.ndarray) -> np.ndarray:
        """(N, dims) map positions -> where this figure draws them, in the axis units a box or lasso on it is
        reported in (float64; a drawn point's position exactly, rounding included)."""
        return on_grid(coords, self.grid)[0].astype(np.float64)

    @property
    def n_points(self) -> int:
        return sum(len(r) for r in self.trace_rows)

    def rows_of(self, points: Iterable[dict]) -> np.ndarray:
        """Gallery rows (sorted, unique) of selected points as Streamlit reports them
        ({"curve_number", "point_index", ...}); query stars and unknown traces are ignored."""
        rows = [
            int(self.trace_rows[p["curve_number"]][p["point_index"]])
            for p in points
            if 0 <= p.get("curve_number", -1) < len(self.trace_rows)
            and 0 <= p.get("point_index", -1) < len(self.trace_rows[p["curve_number"]])
        ]
        return np.unique(np.array(rows, dtype=np.int64))

    def highlight(self, rows: np.ndarray) -> None:
        """Mark ``rows`` selected and grey out the rest (not removed): how a selection made on another, linked
        map is shown on this one. 2-D only: Plotly's 3-D scatter has no selection (nor per-point opacity)."""
        for trace, in_trace in zip(self.figure.data, self.trace_rows):
            if not isinstance(trace, go.Scattergl):
                continue
            trace.selectedpoints = np.flatnonzero(np.isin(in_trace, rows)).astype(np.int32)
            trace.unselected = dict(marker=dict(opacity=FADED))

    def show_images(self, rows: Sequence[int], sources: Sequence[str], size: float = IMAGE_SIZE) -> int:
        """Draw images (``sources``: data URIs or URLs) on a 2-D map where gallery ``rows`` are, each ``size`` of
        the map's extent wide: fixed in map units, so zooming in makes them bigger and pulls them apart. Returns
        how many were placed (rows not drawn on this map, or a 3-D map, get none)."""
        where: dict[int, tuple[float, float]] = {}
        for trace, in_trace in zip(self.figure.data, self.trace_rows):
            if not isinstance(trace, go.Scattergl):
                return 0
            hit = np.flatnonzero(np.isin(in_trace, rows))
            xs, ys = np.asarray(trace.x)[hit], np.asarray(trace.y)[hit]
            where.update({int(in_trace[j]): (float(x), float(y)) for j, x, y in zip(hit, xs, ys)})
        images = [
            dict(source=src, xref="x", yref="y", x=where[r][0], y=where[r][1], sizex=size * GRID, sizey=size * GRID)
            for r, src in zip(rows, sources)
            if int(r) in where
        ]
        for image in images:
            self.figure.add_layout_image(image, xanchor="center", yanchor="middle", layer="above", sizing="contain")
        return len(images)

    def payload_bytes(self) -> int:
        """Bytes of the figure as Streamlit sends it to the browser (``st.plotly_chart`` writes exactly this)."""
        return len(plotly.io.to_json(self.figure, validate=False).encode())

    def bytes_per_point(self) -> float:
        return self.payload_bytes() / max(1, self.n_points)


def top_labels(labels: Sequence[str], top_n: int = TOP_N) -> list[str]:
    """The ``top_n`` most frequent labels, most frequent first (ties: alphabetical), or all when fewer."""
    values, counts = np.unique(np.asarray(labels, dtype=str), return_counts=True)
    return [str(values[i]) for i in sorted(range(len(values)), key=lambda i: (-counts[i], values[i]))[:top_n]]


def label_style(index: int, dims: int = 2) -> tuple[str, str]:
    """(colour, symbol) of the group at ``index`` in the legend order: colours first, then symbols."""
    symbols = SYMBOLS_2D if dims == 2 else SYMBOLS_3D
    return PALETTE[index % len(PALETTE)], symbols[(index // len(PALETTE)) % len(symbols)]


@dataclass(frozen=True)
class Colouring:
    """What colours each point of a map: its group, or a score."""

    groups: Sequence[str]  # (N,) label, predicted label, "right"/"wrong", ...: one trace per group
    score: np.ndarray | None = None  # (N,) in [0, 1]: colour by this instead (one trace, a colour scale, hover in %)
    score_name: str = "score"  # the score's name in the colour bar and the hover
    legend_title: str = "label"  # what the groups are
    top_n: int = TOP_N  # the largest groups with colours and legend entries; the rest grey behind one "other"
    focus: Sequence[str] = ()  # groups to bring forward; every other group is drawn faded and grey, but drawn


@dataclass(frozen=True)
class Queries:
    """New images placed on a map, drawn on top as stars (3-D has no star: large diamonds)."""

    coords: np.ndarray  # (Q, dims) their map positions
    names: Sequence[str] | None = None  # (Q,) what the stars are called; default "query 1", "query 2", ...


def embedding_map(
    coords: np.ndarray,
    colouring: Colouring,
    rows: np.ndarray | None = None,
    *,
    queries: Queries | None = None,
    height: int = 620,
    everything: np.ndarray | None = None,
) -> MapFigure:
    """Scatter map of a gallery (2-D: WebGL ``Scattergl``; 3-D: ``Scatter3d``).

    Args:
        coords: (N, 2) or (N, 3) map positions.
        colouring: what colours each point (``Colouring``). By group: one trace per group; the ``top_n`` largest
            have colours and legend entries, the rest are grey behind one "other" legend entry (each still its own
            trace with its name in the hover, up to MAX_TRACES).
        rows: (N,) the gallery row of each point. Default: 0..N-1.
        queries: new images to draw on top (``Queries``).
        everything: (M, dims) every point of the map, when ``coords`` is a sample of them: the grid spans them all
            (a box or lasso then maps back onto every point, ``MapFigure.to_grid``), and a 2-D map draws their
            density beneath the sample, so a region the sample missed still shows.
    """
    low, scale = grid_of(coords if everything is None else everything)
    coords, to_grid = on_grid(coords, (low, scale))
    dims = coords.shape[1]
    rows = np.arange(len(coords)) if rows is None else np.asarray(rows, dtype=np.int64)
    c = colouring
    fig, trace_rows = go.Figure(), []
    if c.score is not None:
        fig.add_trace(_score_trace(coords, np.asarray(c.score, dtype=np.float32), c.score_name))
        trace_rows.append(rows)
    else:
        for trace, members in _group_traces(coords, np.asarray(c.groups, dtype=str), c.top_n, set(c.focus), dims):
            fig.add_trace(trace)
            trace_rows.append(rows[members])
    if queries is not None and len(queries.coords):
        fig.add_trace(_query_trace(to_grid(queries.coords), queries.names))
    _lay_out(fig, dims, height, c.legend_title)
    if everything is not None and dims == 2:
        fig.add_layout_image(density_layer(to_grid(everything), GRID))
    return MapFigure(fig, trace_rows, (low, scale))


def grid_of(coords: np.ndarray) -> tuple[np.ndarray, float]:
    """(low (dims,), scale): the one grid for all axes (distances keep their proportions) that spans ``coords``."""
    coords = np.asarray(coords)
    low = coords.min(axis=0).astype(np.float64) if len(coords) else np.zeros(coords.shape[1])
    extent = float((coords.max(axis=0) - low).max()) if len(coords) else 0.0
    return low, GRID / extent if extent > 0 else 1.0


def on_grid(
    coords: np.ndarray, grid: tuple[np.ndarray, float] | None = None
) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """(N, dims) positions -> uint16 positions on ``grid`` (default: the grid spanning them), and the same
    mapping for other points (queries, which may fall outside: float32). A step is 1/65,535 of the map's
    extent: finer than a pixel until the map is zoomed in more than 60 times."""
    coords = np.asarray(coords, dtype=np.float64)
    low, scale = grid_of(coords) if grid is None else grid

    def to_grid(points: np.ndarray) -> np.ndarray:
        return ((np.asarray(points, dtype=np.float64) - low) * scale).astype(np.float32)

    return np.clip(np.round(to_grid(coords)), 0, GRID).astype(np.uint16), to_grid


def _group_traces(coords: np.ndarray, groups: np.ndarray, top_n: int, focus: set[str], dims: int):
    """(trace, its point positions) per group, in legend order: the ``top_n`` largest sorted naturally, then the
    rest, grey, behind one legend entry. The rest is keyed apart from the names: a class may be called "other"."""
    ranked = top_labels(groups, len(groups))
    order = np.argsort(groups, kind="stable")
    names, starts = np.unique(groups[order], return_index=True)
    members = dict(zip(names.tolist(), np.split(order, starts[1:])))
    shown, rest = sorted(ranked[:top_n], key=_natural), ranked[top_n:]
    rank = {g: i for i, g in enumerate(ranked)}
    rest_label = f"{OTHER} ({len(rest)} groups, {sum(len(members[g]) for g in rest)})"
    for i, name in enumerate(shown + rest[: MAX_TRACES - len(shown)]):
        color, symbol = label_style(rank[name], dims)
        faded = bool(focus) and name not in focus
        if i < len(shown):
            kw = dict(name=f"{name} ({len(members[name])})", legendgroup=name)
        else:
            color, kw = OTHER_COLOR, dict(name=rest_label, legendgroup=f"\0{OTHER}", showlegend=i == len(shown))
        yield (
            _points_trace(coords[members[name]], OTHER_COLOR if faded else color, symbol, name, faded, **kw),
            members[name],
        )
    leftover = [members[g] for g in rest[MAX_TRACES - len(shown) :]]
    if leftover:
        where = np.sort(np.concatenate(leftover))
        kw = dict(name=rest_label, legendgroup=f"\0{OTHER}", showlegend=False)
        yield _points_trace(coords[where], OTHER_COLOR, "circle", OTHER, bool(focus), **kw), where


def _points_trace(xyz: np.ndarray, color: str, symbol: str, hover: str, faded: bool, **kw):
    """One group's points; ``hover`` is written once in the trace (``meta``), not once per point."""
    opacity = FADED if faded else 0.8
    if xyz.shape[1] == 2:
        marker = dict(color=color, symbol=symbol, size=6, opacity=opacity, line=dict(width=0))
    else:
        marker = dict(color=color, symbol=symbol, size=3, opacity=opacity)
    return _scatter(xyz, marker, mode="markers", meta=hover, hovertemplate="<b>%{meta}</b><extra></extra>", **kw)


def _score_trace(xyz: np.ndarray, score: np.ndarray, name: str):
    """All points coloured by ``score`` in [0, 1], sent as whole percents (uint8: 1.3 bytes a point)."""
    percent = np.clip(np.round(np.nan_to_num(score) * 100), 0, 100).astype(np.uint8)
    marker = dict(
        color=percent,
        colorscale=SCORE_SCALE,
        cmin=0,
        cmax=100,
        size=6 if xyz.shape[1] == 2 else 3,
        opacity=0.85,
        colorbar=dict(title=dict(text=name), ticksuffix="%"),
    )
    return _scatter(
        xyz, marker, mode="markers", name=name, meta=name, hovertemplate="%{meta}: %{marker.color}%<extra></extra>"
    )


def _scatter(xyz: np.ndarray, marker: dict, **kw) -> go.Scattergl | go.Scatter3d:
    """WebGL markers for a 2-D map, a Scatter3d for a 3-D one. Coordinates stay numpy arrays (typed arrays)."""
    if xyz.shape[1] == 2:
        return go.Scattergl(x=xyz[:, 0], y=xyz[:, 1], marker=marker, **kw)
    return go.Scatter3d(x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2], marker=marker, **kw)


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


def _lay_out(fig: go.Figure, dims: int, height: int, legend_title: str) -> None:
    fig.update_layout(
        height=height,
        margin=dict(l=10, r=10, t=30, b=10),
        legend=dict(itemsizing="constant", title=legend_title),
        dragmode="lasso" if dims == 2 else "orbit",
        plot_bgcolor="white",
        uirevision="map",
        hovermode="closest",
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

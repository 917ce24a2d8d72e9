"""Plotly charts of a run's numbers: training curves, metrics next to baselines, confusion, the "unknown" trade-off.

No Streamlit here: every function takes a run's records (runs/records.py; the training history's rows, which are
open-ended, as dicts) and returns a ``go.Figure`` (or plain rows).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..runs.records import Confusion, CurvePoint, PerClass, Reliability, Scores
from .plots import PALETTE, QUERY_COLOR

MODEL_NAMES = {
    "trained": "trained (triplet)",
    "raw_pixels": "raw pixels",
    "untrained": "untrained network",
    "pretrained": "pretrained features",
}
METRIC_NAMES = {
    "precision_at_1": "P@1",
    "r_precision": "R-Precision",
    "map_at_r": "MAP@R",
    "knn_accuracy": "kNN accuracy",
}


def training_curves(history: Sequence[dict], height: int = 300, max_epochs: int | None = None) -> go.Figure:
    """Per-epoch loss, active-triplet fraction and validation P@1 side by side; improving epochs starred.

    ``history`` rows are ``EpochStats.to_dict()`` (as in history.json). ``max_epochs`` fixes the x range, so
    live curves of a running job grow into a stable frame instead of rescaling every epoch.
    """
    fig = make_subplots(
        rows=1,
        cols=3,
        subplot_titles=("triplet loss", "active triplets (share)", "validation P@1"),
        horizontal_spacing=0.08,
    )
    epochs = [h["epoch"] for h in history]
    for col, key, color in (
        (1, "loss", PALETTE[0]),
        (2, "active_fraction", PALETTE[1]),
        (3, "val_precision_at_1", PALETTE[2]),
    ):
        values = [h.get(key) for h in history]
        fig.add_trace(
            go.Scatter(
                x=epochs,
                y=values,
                mode="lines+markers",
                line=dict(color=color, width=2),
                name=key,
                showlegend=False,
                hovertemplate="epoch %{x}: %{y:.3f}<extra></extra>",
            ),
            row=1,
            col=col,
        )
        best = [(h["epoch"], h.get(key)) for h in history if h.get("best")]
        if best:
            fig.add_trace(
                go.Scatter(
                    x=[b[0] for b in best],
                    y=[b[1] for b in best],
                    mode="markers",
                    marker=dict(symbol="star", size=11, color=color, line=dict(color="#111", width=1)),
                    name="improved",
                    showlegend=False,
                    hovertemplate="epoch %{x}: %{y:.3f} (improved)<extra></extra>",
                ),
                row=1,
                col=col,
            )
    last = max([max_epochs or 0, *epochs, 1])
    fig.update_xaxes(title_text="epoch", dtick=1 if last <= 15 else None, gridcolor="#EEEEEE", range=[0.5, last + 0.5])
    fig.update_yaxes(gridcolor="#EEEEEE", rangemode="tozero")
    fig.update_yaxes(range=[0, 1.02], row=1, col=3)
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=40, b=10), plot_bgcolor="white")
    return fig


def metrics_rows(test: Scores, baselines: dict[str, Scores]) -> list[dict]:
    """The trained model and each baseline as rows {model, P@1, R-Precision, MAP@R, kNN accuracy}.

    ``test`` is the record of ``metrics.json["test"]`` (or its ``class_disjoint``); a metric a row lacks is None.
    """
    rows = []
    for key, m in [("trained", test), *baselines.items()]:
        rows.append({"model": MODEL_NAMES.get(key, key), **{name: getattr(m, k) for k, name in METRIC_NAMES.items()}})
    return rows


def metrics_bars(test: Scores, baselines: dict[str, Scores], height: int = 320) -> go.Figure:
    """Grouped bars: each metric, trained model next to the baselines."""
    fig = go.Figure()
    for i, row in enumerate(metrics_rows(test, baselines)):
        names = list(METRIC_NAMES.values())
        fig.add_trace(
            go.Bar(
                x=names,
                y=[row[n] for n in names],
                name=row["model"],
                marker_color=PALETTE[i],
                text=[f"{row[n]:.3f}" if row[n] is not None else "" for n in names],
                textposition="outside",
                hovertemplate="%{x}: %{y:.3f}<extra>" + row["model"] + "</extra>",
            )
        )
    fig.update_layout(
        barmode="group",
        height=height,
        yaxis=dict(range=[0, 1.1], gridcolor="#EEEEEE"),
        margin=dict(l=10, r=10, t=20, b=10),
        plot_bgcolor="white",
        legend=dict(orientation="h", y=-0.15),
    )
    return fig


def confusion_heatmap(confusion: Confusion, max_labels: int = 40, height: int = 480) -> go.Figure:
    """The kNN vote's confusion matrix (rows: true label, columns: predicted), as row shares.

    With more than ``max_labels`` labels only the ones with the most errors are drawn, so the cells stay readable.
    """
    labels = list(confusion.labels)
    m = np.asarray(confusion.matrix, dtype=float)
    keep = np.flatnonzero(m.sum(axis=1) + m.sum(axis=0))
    if len(keep) > max_labels:
        errors = m.sum(axis=1) - np.diag(m) + m.sum(axis=0) - np.diag(m)
        keep = np.sort(keep[np.argsort(-errors[keep], kind="stable")[:max_labels]])
    m = m[np.ix_(keep, keep)]
    names = [labels[i] for i in keep]
    shares = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    fig = go.Figure(
        go.Heatmap(
            z=shares,
            x=names,
            y=names,
            customdata=m,
            colorscale="Blues",
            zmin=0,
            zmax=1,
            hovertemplate="true %{y} → predicted %{x}: %{customdata:.0f} (%{z:.0%})<extra></extra>",
            colorbar=dict(title="share", tickformat=".0%"),
        )
    )
    if len(names) <= 15:
        fig.update_traces(text=m.astype(int), texttemplate="%{text}")
    fig.update_layout(
        height=height,
        margin=dict(l=10, r=10, t=10, b=10),
        plot_bgcolor="white",
        xaxis=dict(title="predicted", type="category"),
        yaxis=dict(title="true", type="category", autorange="reversed"),
    )
    return fig


def per_class_bars(per_class: dict[str, PerClass], height: int = 320) -> go.Figure:
    """Per-class kNN accuracy, worst first, with each class's number of queries on hover."""
    items = sorted(per_class.items(), key=lambda kv: (kv[1].accuracy, kv[0]))
    fig = go.Figure(
        go.Bar(
            x=[k for k, _ in items],
            y=[v.accuracy for _, v in items],
            customdata=[v.n for _, v in items],
            marker_color=[PALETTE[3] if v.accuracy < 0.9 else PALETTE[0] for _, v in items],
            hovertemplate="%{x}: %{y:.1%} of %{customdata} queries<extra></extra>",
        )
    )
    fig.update_layout(
        height=height,
        margin=dict(l=10, r=10, t=10, b=10),
        plot_bgcolor="white",
        xaxis=dict(type="category"),
        yaxis=dict(range=[0, 1.02], tickformat=".0%", gridcolor="#EEEEEE"),
    )
    return fig


def threshold_curve(
    curve: Sequence[CurvePoint], threshold: float, chosen: float | None = None, height: int = 320
) -> go.Figure:
    """Accuracy and coverage of known queries, and unknowns wrongly accepted, against the distance threshold."""
    t = [p.threshold for p in curve]
    fig = go.Figure()
    for key, name, color in (
        ("accuracy", "accuracy of answered queries", PALETTE[2]),
        ("coverage", "coverage (queries answered)", PALETTE[0]),
        ("unknown_accepted", "unknown images accepted", PALETTE[3]),
    ):
        fig.add_trace(
            go.Scatter(
                x=t,
                y=[getattr(p, key) for p in curve],
                name=name,
                mode="lines",
                line=dict(color=color),
                hovertemplate="threshold %{x:.3f}: %{y:.1%}<extra>" + name + "</extra>",
            )
        )
    fig.add_vline(
        x=threshold,
        line=dict(color="#555555", dash="dash"),
        annotation_text="calibrated",
        annotation_position="top left",
    )
    if chosen is not None and abs(chosen - threshold) > 1e-9:
        fig.add_vline(
            x=chosen, line=dict(color=QUERY_COLOR, width=3), annotation_text="chosen", annotation_position="top right"
        )
    fig.update_layout(
        height=height,
        margin=dict(l=10, r=10, t=30, b=10),
        plot_bgcolor="white",
        xaxis=dict(title="nearest-neighbour distance threshold", gridcolor="#EEEEEE"),
        yaxis=dict(range=[0, 1.02], tickformat=".0%", gridcolor="#EEEEEE"),
        legend=dict(orientation="h", y=-0.25),
    )
    return fig


def at_threshold(curve: Sequence[CurvePoint], value: float) -> CurvePoint:
    """The curve point nearest ``value`` (the slider's reading)."""
    return min(curve, key=lambda p: abs(p.threshold - value))


def reliability_diagram(before: Reliability, after: Reliability, height: int = 320) -> go.Figure:
    """Confidence against the share actually right, per confidence bin: the raw vote share and the calibrated
    probability, with the diagonal a calibrated model would follow. Marker size is the bin's count."""
    fig = go.Figure(
        go.Scatter(
            x=[0, 1],
            y=[0, 1],
            mode="lines",
            line=dict(color="#999", dash="dot"),
            name="perfectly calibrated",
            hoverinfo="skip",
        )
    )
    for name, data, color in (("vote share", before, "#BCBD22"), ("calibrated", after, PALETTE[0])):
        bins = data.bins
        fig.add_trace(
            go.Scatter(
                x=[b.confidence for b in bins],
                y=[b.accuracy for b in bins],
                mode="lines+markers",
                name=f"{name} (ECE {data.ece:.3f})",
                line=dict(color=color),
                marker=dict(size=[6 + 14 * np.sqrt(b.count / max(1, data.n)) for b in bins]),
                customdata=[b.count for b in bins],
                hovertemplate="confidence %{x:.2f}<br>right %{y:.2f}<br>%{customdata} images<extra></extra>",
            )
        )
    fig.update_layout(
        height=height,
        margin=dict(l=10, r=10, t=10, b=10),
        xaxis_title="confidence",
        yaxis_title="share right",
        xaxis_range=[0, 1.02],
        yaxis_range=[0, 1.02],
        legend=dict(orientation="h", y=-0.25),
    )
    return fig

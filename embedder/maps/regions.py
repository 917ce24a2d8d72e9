"""Which gallery points lie inside a box or a lasso drawn on a map: the selection of a map that draws a sample.

A map of a million points draws a sample (the browser cannot take them all), but a box or a lasso means a region,
and a region holds every point in it, drawn or not. Streamlit reports the region's outline besides the drawn points
it caught (``selection.box`` / ``selection.lasso``: ``{"x": [...], "y": [...]}`` in the chart's axis units), so the
server answers it over all points. No Streamlit here: arrays in, row ids out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
from matplotlib.path import Path

BLOCK = 262_144  # points tested at a time: a block's temporaries stay a few MB at any gallery size


def inside_box(xy: np.ndarray, xs: Iterable[float], ys: Iterable[float]) -> np.ndarray:
    """(N,) bool: the points of ``xy`` (N, 2) inside the axis-aligned box spanned by ``xs`` and ``ys`` (two
    corners, in any order), edges included."""
    xs, ys = np.asarray(list(xs), np.float64), np.asarray(list(ys), np.float64)
    if len(xs) < 2 or len(ys) < 2:
        return np.zeros(len(xy), bool)
    x, y = xy[:, 0], xy[:, 1]
    return (x >= xs.min()) & (x <= xs.max()) & (y >= ys.min()) & (y <= ys.max())


def inside_lasso(xy: np.ndarray, xs: Iterable[float], ys: Iterable[float]) -> np.ndarray:
    """(N,) bool: the points of ``xy`` (N, 2) inside the closed polygon through (``xs``, ``ys``). Points outside
    the polygon's bounding box are ruled out first (a vectorised test), so only the few near it pay for the exact
    one (matplotlib's C++ point-in-polygon, even-odd rule: where a lasso crosses itself, a part wound twice is
    outside)."""
    xs, ys = np.asarray(list(xs), np.float64), np.asarray(list(ys), np.float64)
    out = np.zeros(len(xy), bool)
    if len(xs) < 3:
        return out
    polygon = Path(np.column_stack([xs, ys]), closed=False)
    near = np.flatnonzero(inside_box(xy, xs, ys))
    for s in range(0, len(near), BLOCK):
        part = near[s : s + BLOCK]
        out[part] = polygon.contains_points(np.asarray(xy[part], np.float64))
    return out


def rows_inside(xy: np.ndarray, selection: Mapping) -> np.ndarray | None:
    """Sorted row ids of the points of ``xy`` (N, 2) inside any box or lasso of a Streamlit Plotly ``selection``
    (several when the user added to one with shift), or None when it holds neither (a click picks points)."""
    boxes, lassos = selection.get("box") or [], selection.get("lasso") or []
    if not boxes and not lassos:
        return None
    hit = np.zeros(len(xy), bool)
    for region in boxes:
        hit |= inside_box(xy, region.get("x", ()), region.get("y", ()))
    for region in lassos:
        hit |= inside_lasso(xy, region.get("x", ()), region.get("y", ()))
    return np.flatnonzero(hit)

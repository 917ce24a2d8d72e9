"""embedder/maps/regions.py: a box or lasso drawn on a map selects every point inside it, drawn or not; checked on
hand-placed points and against a brute-force even-odd crossing test."""

from __future__ import annotations

import numpy as np
import pytest

from embedder.images.data import stratified_sample
from embedder.maps import regions
from embedder.maps.plots import Colouring, embedding_map


def _even_odd(px: float, py: float, xs, ys) -> bool:
    """The oracle: a ray from the point to +x crosses the polygon's edges an odd number of times."""
    inside, n = False, len(xs)
    for i in range(n):
        x1, y1, x2, y2 = xs[i], ys[i], xs[(i + 1) % n], ys[(i + 1) % n]
        if (y1 > py) != (y2 > py) and px < x1 + (py - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


def test_inside_box__edges_count_and_corners_in_any_order():
    xy = np.array([[0, 0], [1, 1], [2, 2], [1, 3], [3, 1], [2, 0.5]], np.float64)
    assert regions.inside_box(xy, [2, 1], [2, 0.5]).tolist() == [False, True, True, False, False, True]
    assert not regions.inside_box(xy, [1], [1]).any()  # no box: nothing


def test_inside_lasso__a_hand_placed_l_shape_leaves_its_notch_out():
    # An L: the square [0, 2]^2 without its top-right quarter.
    xs, ys = [0, 2, 2, 1, 1, 0], [0, 0, 1, 1, 2, 2]
    xy = np.array([[0.5, 0.5], [1.5, 0.5], [0.5, 1.5], [1.5, 1.5], [3, 3], [-1, 1]])
    assert regions.inside_lasso(xy, xs, ys).tolist() == [True, True, True, False, False, False]
    assert not regions.inside_lasso(xy, [0, 1], [0, 1]).any()  # two points are no region


@pytest.mark.parametrize("seed", range(4))
def test_inside_lasso__matches_the_brute_force_oracle_on_random_and_self_crossing_polygons(seed, monkeypatch):
    monkeypatch.setattr(regions, "BLOCK", 97)  # many blocks, and a ragged last one
    rng = np.random.default_rng(seed)
    xy = rng.uniform(-1, 1, (600, 2))
    xs, ys = rng.uniform(-1, 1, 9), rng.uniform(-1, 1, 9)  # random vertices: the polygon crosses itself
    expected = [_even_odd(px, py, xs, ys) for px, py in xy]
    assert regions.inside_lasso(xy, xs, ys).tolist() == expected
    assert 0 < sum(expected) < len(xy)


def test_rows_inside__the_union_of_every_box_and_lasso_and_none_for_a_click():
    xy = np.array([[0, 0], [5, 5], [10, 10], [5, 0]], np.float64)
    selection = {"box": [{"x": [-1, 1], "y": [-1, 1]}], "lasso": [{"x": [9, 11, 11, 9], "y": [9, 9, 11, 11]}]}
    assert regions.rows_inside(xy, selection).tolist() == [0, 2]
    assert regions.rows_inside(xy, {"points": [{"curve_number": 0, "point_index": 1}], "box": [], "lasso": []}) is None


def test_a_lasso_on_a_sampled_map_selects_every_point_inside_drawn_or_not():
    rng = np.random.default_rng(0)
    coords = rng.normal(size=(20_000, 2)).astype(np.float32)
    labels = rng.integers(0, 5, len(coords))
    drawn = stratified_sample(labels, 2_000)
    m = embedding_map(coords[drawn], Colouring(labels[drawn].astype(str)), drawn, everything=coords)
    # A lasso in the chart's axis units (the grid the points are sent on), as Streamlit reports it.
    angle = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    xs, ys = 30_000 + 12_000 * np.cos(angle), 33_000 + 9_000 * np.sin(angle)
    rows = regions.rows_inside(m.to_grid(coords), {"lasso": [{"x": xs.tolist(), "y": ys.tolist()}]})
    grid = m.to_grid(coords)
    assert rows.tolist() == [i for i in range(len(coords)) if _even_odd(*grid[i], xs, ys)]
    in_drawn = np.intersect1d(rows, drawn)
    assert len(rows) > 5 * len(in_drawn) > 0  # about 10x: the undrawn points inside count too
    # The drawn points the lasso holds are exactly those at their sent (uint16) positions inside it.
    sent = np.concatenate([np.column_stack([t.x, t.y]) for t in m.figure.data])
    sent_rows = np.concatenate(m.trace_rows)
    assert sorted(sent_rows[[_even_odd(x, y, xs, ys) for x, y in sent]].tolist()) == in_drawn.tolist()

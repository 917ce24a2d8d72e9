"""The embedding map: one trace per group, rows behind every point, greyed context, and a payload small enough
for 100,000 points (what st.plotly_chart sends, measured)."""

import numpy as np
import plotly.graph_objects as go
import pytest

from embedder.maps.plots import (
    FADED,
    GRID,
    OTHER_COLOR,
    PALETTE,
    Colouring,
    Queries,
    embedding_map,
    label_style,
    on_grid,
    top_labels,
)


def _rows(m) -> dict[str, list[int]]:
    return {t.name: m.trace_rows[i].tolist() for i, t in enumerate(m.figure.data[: len(m.trace_rows)])}


def test_embedding_map__2d_uses_webgl_and_one_trace_per_label_with_its_rows():
    coords = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], dtype=np.float32)
    m = embedding_map(coords, Colouring(["b", "a", "b", "a"]), rows=[10, 11, 12, 13])
    assert all(isinstance(t, go.Scattergl) for t in m.figure.data)
    assert _rows(m) == {"a (2)": [11, 13], "b (2)": [10, 12]}
    assert [t.meta for t in m.figure.data] == ["a", "b"]  # the hover names the label once per trace


def test_rows_of__a_selection_names_trace_and_point_and_gets_gallery_rows_back():
    groups = Colouring(["b", "a", "b", "a"])
    m = embedding_map(np.zeros((4, 2)), groups, [10, 11, 12, 13], queries=Queries(np.ones((1, 2))))
    points = [{"curve_number": 1, "point_index": 1}, {"curve_number": 0, "point_index": 0}]
    assert m.rows_of(points).tolist() == [11, 12]
    assert m.rows_of([{"curve_number": 2, "point_index": 0}]).tolist() == []  # the query star is no gallery row


def test_highlight__selected_rows_stay_bright_and_the_rest_is_greyed_not_removed():
    m = embedding_map(np.zeros((4, 2)), Colouring(["b", "a", "b", "a"]), rows=[10, 11, 12, 13])
    m.highlight(np.array([13, 10]))
    assert [list(t.selectedpoints) for t in m.figure.data] == [[1], [0]]
    assert all(t.unselected.marker.opacity == FADED for t in m.figure.data)
    assert sum(len(t.x) for t in m.figure.data) == 4


def test_show_images__each_image_sits_on_its_rows_point_and_3d_maps_get_none():
    coords = np.array([[0.0, 0.0], [1.0, 0.5], [0.5, 1.0], [1.0, 1.0]])
    m = embedding_map(coords, Colouring(["a", "b", "a", "b"]), rows=np.array([10, 11, 12, 13]))
    assert m.show_images([12, 11, 99], ["data:12", "data:11", "data:99"]) == 2  # row 99 is not on this map
    placed = {im.source: (im.x, im.y) for im in m.figure.layout.images}
    half = round(GRID / 2)  # positions are whole grid steps
    assert placed == {"data:12": (half, GRID), "data:11": (GRID, half)}
    assert {im.sizex for im in m.figure.layout.images} == {0.035 * GRID}  # map units: bigger when zoomed in
    flat = embedding_map(np.c_[coords, coords[:, :1]], Colouring(["a", "b", "a", "b"]))
    assert flat.show_images([0], ["data:0"]) == 0 and not flat.figure.layout.images


def test_embedding_map__3d_uses_scatter3d_and_queries_are_a_last_trace():
    coords = np.eye(4, 3, dtype=np.float32) + np.arange(4)[:, None]
    m = embedding_map(coords, Colouring(["x", "x", "y", "y"]), queries=Queries(np.zeros((1, 3)), ["q.png"]))
    assert all(isinstance(t, go.Scatter3d) for t in m.figure.data)
    assert m.figure.data[-1].name == "your images" and list(m.figure.data[-1].text) == ["q.png"]
    assert len(m.trace_rows) == 2


def test_embedding_map__beyond_top_n_groups_are_grey_behind_one_legend_entry_with_their_names_in_hover():
    labels = ["a"] * 3 + ["b"] * 2 + ["c", "d"]
    m = embedding_map(np.zeros((7, 2)), Colouring(labels, top_n=2))
    assert [t.meta for t in m.figure.data] == ["a", "b", "c", "d"]
    assert [t.marker.color for t in m.figure.data[2:]] == [OTHER_COLOR, OTHER_COLOR]
    assert [t.showlegend for t in m.figure.data[2:]] == [True, False]
    assert m.figure.data[2].name == "other (2 groups, 2)"
    assert [r.tolist() for r in m.trace_rows] == [[0, 1, 2], [3, 4], [5], [6]]


def test_embedding_map__a_class_named_other_keeps_its_colour():
    m = embedding_map(np.zeros((5, 2)), Colouring(["other", "other", "a", "b", "c"], top_n=2))
    assert [(t.meta, t.marker.color) for t in m.figure.data[:2]] == [("a", PALETTE[1]), ("other", PALETTE[0])]


def test_embedding_map__focus_greys_out_the_other_labels_and_keeps_their_points():
    m = embedding_map(np.zeros((4, 2)), Colouring(["a", "b", "b", "c"], focus=["b"]))
    styles = {t.meta: (t.marker.color, t.marker.opacity) for t in m.figure.data}
    assert styles["b"][1] > FADED and styles["b"][0] != OTHER_COLOR
    assert styles["a"] == styles["c"] == (OTHER_COLOR, FADED)
    assert m.n_points == 4


def test_embedding_map__score_colours_one_trace_in_whole_percents():
    m = embedding_map(np.zeros((3, 2)), Colouring(["a", "a", "b"], np.array([0.0, 0.504, 1.0]), "mislabel"))
    (trace,) = m.figure.data
    assert trace.marker.color.dtype == np.uint8 and trace.marker.color.tolist() == [0, 50, 100]
    assert m.trace_rows[0].tolist() == [0, 1, 2]


def contrast_on_white(colour: str) -> float:
    """WCAG contrast ratio of an "rgb(r, g, b)" or "#RRGGBB" colour against white."""
    from plotly.colors import hex_to_rgb, unlabel_rgb

    rgb = hex_to_rgb(colour) if colour.startswith("#") else unlabel_rgb(colour)
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in (v / 255 for v in rgb)]
    return 1.05 / (0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2] + 0.05)


def test_embedding_map__every_score_colour_stands_out_on_the_white_plot():
    from plotly.colors import sample_colorscale

    m = embedding_map(np.zeros((2, 2)), Colouring(["a", "b"], np.array([0.0, 1.0]), "mislabel"))
    scale = m.figure.data[0].marker.colorscale
    shades = sample_colorscale([list(stop) for stop in scale], list(np.linspace(0, 1, 21)))
    assert min(contrast_on_white(c) for c in shades) >= 3.0  # WCAG's ratio for graphics; YlOrRd's low end: 1.03
    assert m.figure.layout.plot_bgcolor == "white"


def test_embedding_map__numeric_labels_sort_naturally():
    m = embedding_map(np.zeros((3, 2)), Colouring(["10", "2", "1"]))
    assert [t.legendgroup for t in m.figure.data] == ["1", "2", "10"]


def test_on_grid__one_scale_for_every_axis_so_distances_keep_their_proportions():
    coords = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    grid, to_grid = on_grid(coords)
    assert grid.dtype == np.uint16 and grid.tolist() == [[0, 0], [GRID, 0], [0, round(GRID / 2)]]
    np.testing.assert_allclose(to_grid(np.array([[1.0, 0.5], [3.0, 0.0]])), [[GRID / 2, GRID / 4], [1.5 * GRID, 0]])


def test_label_style__colours_cycle_then_symbols_change():
    assert label_style(0) == label_style(0, 2)
    assert label_style(10)[0] == label_style(0)[0] and label_style(10)[1] != label_style(0)[1]


def test_top_labels__most_frequent_first_ties_alphabetical():
    assert top_labels(["c", "b", "a", "b", "c"], 2) == ["b", "c"]


@pytest.mark.parametrize("colour", ["label", "score"])
def test_bytes_per_point__100k_points_fit_16_bytes_each(colour):
    """Issue 8's budget, at 100,000 points over 300 labels (more traces than MAX_TRACES) with a query star."""
    rng = np.random.default_rng(0)
    n = 100_000
    labels = np.array([f"class {i:03d}" for i in range(300)])[rng.integers(0, 300, n)]
    score = rng.random(n) if colour == "score" else None
    m = embedding_map(rng.normal(size=(n, 2)), Colouring(labels, score), queries=Queries(np.zeros((1, 2))))
    assert m.n_points == n
    assert m.bytes_per_point() <= 16
    assert m.bytes_per_point() > 5  # the figure really holds the points: 2 x uint16 in base64 is 5.3 bytes


def _chart_script():
    import numpy as np
    import streamlit as st

    from embedder.maps.plots import Colouring, embedding_map

    rng = np.random.default_rng(1)
    m = embedding_map(rng.normal(size=(5000, 2)), Colouring(rng.integers(0, 40, 5000).astype(str)))
    st.session_state["measured"] = m.payload_bytes()
    st.plotly_chart(m.figure, key="map")


def test_payload_bytes__is_what_st_plotly_chart_sends():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_chart_script).run()
    assert len(at.get("plotly_chart")[0].proto.spec.encode()) == at.session_state["measured"]


def test_to_grid__a_drawn_points_position_is_exactly_where_the_figure_sends_it():
    rng = np.random.default_rng(1)
    coords = rng.normal(size=(300, 2)).astype(np.float32)
    m = embedding_map(coords, Colouring(rng.integers(0, 3, 300).astype(str)))
    sent = np.concatenate([np.column_stack([t.x, t.y]) for t in m.figure.data]).astype(np.float64)
    assert np.array_equal(m.to_grid(coords[np.concatenate(m.trace_rows)]), sent)


def test_embedding_map__a_sample_sits_on_the_grid_of_all_points_over_their_density_image():
    rng = np.random.default_rng(2)
    everything = rng.normal(size=(5_000, 2)).astype(np.float32)
    everything[0] = (40, 40)  # far out, and left out of the sample: the grid must still reach it
    rows = np.arange(1, 500)
    m = embedding_map(everything[rows], Colouring(np.zeros(len(rows), str)), rows, everything=everything)
    assert m.to_grid(everything).max() == m.to_grid(everything[:1]).max() == GRID
    (image,) = m.figure.layout.images
    assert image.layer == "below" and image.source.startswith("data:image/png;base64,")
    assert not embedding_map(everything[rows], Colouring(np.zeros(len(rows), str)), rows).figure.layout.images
    flat = embedding_map(np.c_[everything, everything[:, :1]], Colouring(np.zeros(len(everything), str)))
    assert not flat.figure.layout.images  # 3-D, nothing sampled: no density

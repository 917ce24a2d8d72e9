"""The embedding map: traces per label, stable row ids in customdata, the "other" group."""

import numpy as np
import plotly.graph_objects as go

from embedder.plots import OTHER, OTHER_COLOR, PALETTE, embedding_map, label_style, top_labels


def _points(fig: go.Figure) -> dict[str, list[int]]:
    return {t.name: [int(c[0]) for c in t.customdata] for t in fig.data if t.customdata is not None}


def test_embedding_map__2d_uses_webgl_and_one_trace_per_label():
    coords = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], dtype=np.float32)
    fig = embedding_map(coords, ["b", "a", "b", "a"], row_ids=[10, 11, 12, 13])
    assert all(isinstance(t, go.Scattergl) for t in fig.data)
    assert _points(fig) == {"a (2)": [11, 13], "b (2)": [10, 12]}


def test_embedding_map__3d_uses_scatter3d_and_queries_are_a_last_trace():
    coords = np.eye(4, 3, dtype=np.float32) + np.arange(4)[:, None]
    fig = embedding_map(coords, ["x", "x", "y", "y"], query_coords=np.zeros((1, 3)), query_names=["q.png"])
    assert all(isinstance(t, go.Scatter3d) for t in fig.data)
    assert fig.data[-1].name == "your images" and list(fig.data[-1].text) == ["q.png"]


def test_embedding_map__2d_query_is_a_star():
    fig = embedding_map(np.zeros((3, 2)), ["a", "a", "b"], query_coords=np.ones((2, 2)))
    assert fig.data[-1].marker.symbol == "star" and len(fig.data[-1].x) == 2


def test_embedding_map__beyond_top_n_labels_share_the_other_trace_with_real_labels_in_hover():
    labels = ["a"] * 3 + ["b"] * 2 + ["c", "d"]
    fig = embedding_map(np.zeros((7, 2)), labels, top_n=2)
    assert _points(fig) == {"a (3)": [0, 1, 2], "b (2)": [3, 4], f"{OTHER} (2)": [5, 6]}
    other = fig.data[-1]
    assert [c[1] for c in other.customdata] == ["c", "d"]
    assert len(set(other.marker.symbol)) == 1  # c and d are 3rd and 4th: same symbol band, told apart by hover


def test_embedding_map__numeric_labels_sort_naturally():
    fig = embedding_map(np.zeros((3, 2)), ["10", "2", "1"])
    assert [t.legendgroup for t in fig.data] == ["1", "2", "10"]


def test_label_style__colours_cycle_then_symbols_change():
    assert label_style(0) == label_style(0, 2)
    assert label_style(10)[0] == label_style(0)[0] and label_style(10)[1] != label_style(0)[1]


def test_top_labels__most_frequent_first_ties_alphabetical():
    assert top_labels(["c", "b", "a", "b", "c"], 2) == ["b", "c"]


def test_embedding_map__a_class_named_other_keeps_its_colour_and_every_point_is_drawn_once():
    def drawn(fig):
        return [(t.name, [int(c[0]) for c in t.customdata], t.marker.color) for t in fig.data]

    fig = embedding_map(np.zeros((2, 2)), ["other", "a"])
    assert drawn(fig) == [("a (1)", [1], PALETTE[0]), ("other (1)", [0], PALETTE[1])]
    fig = embedding_map(np.zeros((5, 2)), ["other", "other", "a", "b", "c"], top_n=2)
    assert drawn(fig) == [
        ("a (1)", [2], PALETTE[1]),
        ("other (2)", [0, 1], PALETTE[0]),
        ("other (2)", [3, 4], OTHER_COLOR),
    ]

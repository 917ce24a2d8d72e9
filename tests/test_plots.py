"""Figure builders: traces per label, stable row ids in customdata, the "other" group, sampling, curves."""

import numpy as np
import plotly.graph_objects as go

from embedder.plots import (
    OTHER,
    embedding_map,
    label_style,
    metrics_rows,
    stratified_sample,
    top_labels,
    training_curves,
)


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


def test_stratified_sample__keeps_every_label_and_the_cap():
    labels = np.array([0] * 90 + [1] * 9 + [2])
    rows = stratified_sample(labels, cap=20, seed=0)
    assert len(rows) == 20
    assert set(labels[rows]) == {0, 1, 2}
    assert np.all(np.diff(rows) > 0)
    assert np.array_equal(rows, stratified_sample(labels, cap=20, seed=0))


def test_stratified_sample__under_the_cap_is_everything():
    assert stratified_sample([1, 2, 3], cap=5).tolist() == [0, 1, 2]


def test_training_curves__three_panels_and_best_epochs_marked():
    history = [
        {"epoch": 1, "loss": 0.2, "active_fraction": 0.5, "val_precision_at_1": 0.8, "best": True},
        {"epoch": 2, "loss": 0.1, "active_fraction": 0.3, "val_precision_at_1": 0.7, "best": False},
    ]
    fig = training_curves(history)
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    assert [list(t.y) for t in lines] == [[0.2, 0.1], [0.5, 0.3], [0.8, 0.7]]
    stars = [t for t in fig.data if t.name == "improved"]
    assert [list(t.x) for t in stars] == [[1], [1], [1]]


def test_metrics_rows__trained_then_baselines():
    test = {
        "precision_at_1": 0.9,
        "r_precision": 0.8,
        "map_at_r": 0.7,
        "knn_accuracy": 0.95,
        "baselines": {"raw_pixels": {"precision_at_1": 0.5}},
    }
    rows = metrics_rows(test)
    assert rows[0] == {"model": "trained (triplet)", "P@1": 0.9, "R-Precision": 0.8, "MAP@R": 0.7, "kNN accuracy": 0.95}
    assert rows[1] == {"model": "raw pixels", "P@1": 0.5, "R-Precision": None, "MAP@R": None, "kNN accuracy": None}

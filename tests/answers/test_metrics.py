import numpy as np
import pytest

from embedder.answers.metrics import Labelled, diagnostics, knn_accuracies, retrieval_metrics
from tests.helpers import unit as _unit

# Two tight clusters on the unit circle: class 0 near 0 degrees, class 1 near 90 degrees.
GALLERY = _unit([[1, 0.00], [1, 0.05], [1, -0.05], [0.00, 1], [0.05, 1], [-0.05, 1]])
G_LABELS = np.array([0, 0, 0, 1, 1, 1])


def test_retrieval_metrics__perfect_separation():
    q = _unit([[1, 0.02], [0.02, 1]])
    m = retrieval_metrics(q, np.array([0, 1]), GALLERY, G_LABELS)
    assert (m["precision_at_1"], m["r_precision"], m["map_at_r"], m["knn_accuracy"]) == (1.0, 1.0, 1.0, 1.0)
    assert m["n_queries"] == 2 and m["n_unmatched_queries"] == 0


def test_retrieval_metrics__exact_ranking_values():
    # A class-0 query a little closer to class 1: its 3 nearest (R = 3) are all class 1.
    q = _unit([[0.9, 1]])
    m = retrieval_metrics(q, np.array([0]), GALLERY, G_LABELS)
    assert m["precision_at_1"] == 0.0 and m["r_precision"] == 0.0 and m["map_at_r"] == 0.0


def test_retrieval_metrics__queries_without_gallery_class_are_counted_not_scored():
    q = _unit([[1, 0.02], [-1, 0]])
    m = retrieval_metrics(q, np.array([0, 7]), GALLERY, G_LABELS)
    assert m["n_queries"] == 1 and m["n_unmatched_queries"] == 1 and m["precision_at_1"] == 1.0


def test_retrieval_metrics__leave_one_out_never_finds_itself():
    m = retrieval_metrics(GALLERY, G_LABELS, GALLERY, G_LABELS, leave_one_out=True)
    assert m["precision_at_1"] == 1.0 and m["map_at_r"] == 1.0  # R = 2 other members each
    lonely = retrieval_metrics(
        GALLERY[:4], np.array([0, 0, 0, 1]), GALLERY[:4], np.array([0, 0, 0, 1]), leave_one_out=True
    )
    assert lonely["n_unmatched_queries"] == 1 and lonely["n_queries"] == 3


def test_knn_accuracies__vote_outvotes_a_single_close_mistake():
    gallery = _unit([[1, 0.30], [1, -0.4], [1, 0.45], [0.9, 0.35]])
    labels = np.array([1, 0, 0, 0])
    acc = knn_accuracies(_unit([[1, 0.3]]), np.array([0]), gallery, labels, ks=(1, 3))
    assert acc[1] == (0.0, 0.0)  # 1-NN is the class-1 item sitting on the query
    assert acc[3][0] == 0.0  # the exact duplicate still dominates a distance-weighted vote


def test_diagnostics__confusion_matrix_and_pairs():
    q = _unit([[1, 0.01], [0.02, 1], [0.9, 1.1]])  # the third is class 0 but sits with class 1
    paths = ["q0.png", "q1.png", "q2.png"]
    g_paths = [f"g{i}.png" for i in range(6)]
    d = diagnostics(Labelled(q, np.array([0, 1, 0]), paths), Labelled(GALLERY, G_LABELS, g_paths), ["zero", "one"])
    assert d["confusion"]["matrix"] == [[1, 1], [0, 1]]
    assert d["per_class"] == {"zero": {"n": 2, "accuracy": 0.5}, "one": {"n": 1, "accuracy": 1.0}}
    assert d["confused_pairs"][0]["true"] == "zero" and d["confused_pairs"][0]["predicted"] == "one"
    assert d["confused_pairs"][0]["examples"][0]["query"] == "q2.png"
    assert d["confused_pairs"][0]["examples"][0]["neighbor"] in g_paths[3:]


def test_retrieval_metrics__blocks_of_queries_give_the_whole_sets_numbers(monkeypatch):
    """MAP@R holds a block of queries x R neighbours at a time; the means over blocks are the one-shot ones, and
    one search per block serves the metrics and the votes."""
    import torch

    from embedder.answers import metrics

    rng = np.random.default_rng(0)
    g, gl = _unit(rng.normal(size=(300, 8))), rng.integers(0, 3, 300)
    q, ql = _unit(rng.normal(size=(50, 8))), rng.integers(0, 3, 50)
    oracle = metrics._accuracy_calculator().get_accuracy(*map(torch.from_numpy, (q, ql, g, gl)))
    whole = retrieval_metrics(q, ql, g, gl)
    whole_loo = retrieval_metrics(g, gl, g, gl, leave_one_out=True)
    monkeypatch.setattr(metrics, "MAX_KNN_ENTRIES", 7 * 120)  # blocks of 7 queries: R is about 100
    blocked = retrieval_metrics(q, ql, g, gl)
    blocked_loo = retrieval_metrics(g, gl, g, gl, leave_one_out=True)
    assert whole["map_at_r"] == pytest.approx(float(oracle["mean_average_precision_at_r"]), abs=1e-6)
    votes = knn_accuracies(q, ql, g, gl, ks=(1, 5))  # the votes' own search, apart from the metrics'
    assert (whole["knn_accuracy_at_1"], whole["knn_accuracy"], whole["macro_accuracy"]) == pytest.approx(
        (votes[1][0], votes[5][0], votes[5][1])
    )
    assert blocked["knn_accuracy"] == whole["knn_accuracy"] and blocked["best_k"] == whole["best_k"]
    for key in ("precision_at_1", "r_precision", "map_at_r"):
        assert blocked[key] == pytest.approx(whole[key], abs=1e-6)
        assert blocked_loo[key] == pytest.approx(whole_loo[key], abs=1e-6)
    assert 0 < whole["map_at_r"] < 1 and 0 < whole_loo["map_at_r"] < 1

"""Charts of a run's numbers."""

from embedder.maps.charts import metrics_rows, training_curves
from embedder.runs.records import Evaluation, Reliability


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
    record = Evaluation.of(test)
    rows = metrics_rows(record, record.baselines)
    assert rows[0] == {"model": "trained (triplet)", "P@1": 0.9, "R-Precision": 0.8, "MAP@R": 0.7, "kNN accuracy": 0.95}
    assert rows[1] == {"model": "raw pixels", "P@1": 0.5, "R-Precision": None, "MAP@R": None, "kNN accuracy": None}


def test_reliability_diagram__diagonal_then_both_curves_named_with_their_ece():
    from embedder.maps.charts import reliability_diagram

    data = {
        "bins": [{"confidence": 0.55, "accuracy": 0.5, "count": 2}, {"confidence": 0.95, "accuracy": 0.75, "count": 4}],
        "ece": 0.14,
        "n": 6,
    }
    fig = reliability_diagram(Reliability.of(data), Reliability.of({**data, "ece": 0.02}))
    assert [t.name for t in fig.data] == ["perfectly calibrated", "vote share (ECE 0.140)", "calibrated (ECE 0.020)"]
    assert list(fig.data[1].x) == [0.55, 0.95] and list(fig.data[1].y) == [0.5, 0.75]

"""A run's answer for new images: the label, its calibrated confidence, the neighbours, a flat row for a CSV."""

import json

import pytest

from embedder.predict import Predictor
from embedder.run import load_run

pytestmark = pytest.mark.slow


def test_predict__confidence_is_the_calibrated_probability_and_the_vote_share_stays(digits_run):
    run = load_run(digits_run)
    predictor = Predictor(run)
    assert predictor.calibration is not None and predictor.k == run.train_config.k
    paths, labels = run.queries("test")
    preds = predictor.predict([str(p) for p in paths[:30]])
    assert all(len(p.neighbors) == run.train_config.k for p in preds)
    assert all(0 < p.confidence < 1 and 0 < p.vote_share <= 1 for p in preds)
    right = [p.label == run.classes[label] for p, label in zip(preds, labels[:30])]
    confident = [p.confidence for p, ok in zip(preds, right) if ok]
    assert sum(right) >= 27 and min(confident) > 0.5


def test_prediction_to_row__relative_paths_when_asked(digits_run):
    run = load_run(digits_run)
    pred = Predictor(run).predict([str(run.queries("test")[0][0])], names=["a.png"], k=2)[0]
    row = pred.to_row(run.gallery_paths)
    assert row["file"] == "a.png" and set(json.loads(row["votes"])) <= set(run.classes)
    assert row["neighbours"].count(" | ") == 1 and str(run.data_root) not in row["neighbours"]
    assert str(run.data_root) in pred.to_row()["neighbours"]

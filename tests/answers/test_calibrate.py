"""The "unknown" threshold: calibrated on validation queries against hand-placed clusters."""

import numpy as np
import pytest

from embedder.answers.calibrate import Answers, calibrated_on, open_set
from embedder.answers.metrics import Labelled
from embedder.runs.records import Confidence, Metrics
from tests.helpers import unit as _unit

GALLERY = _unit([[1, 0.00], [1, 0.05], [1, -0.05], [0.00, 1], [0.05, 1], [-0.05, 1]])
G_LABELS = np.array([0, 0, 0, 1, 1, 1])


def test_open_set__threshold_separates_known_from_unknown():
    q = _unit([[1, 0.01], [1, -0.02], [0.01, 1], [-0.02, 1]])
    result = open_set(Labelled(q, np.array([0, 0, 1, 1])), Labelled(GALLERY, G_LABELS), target_precision=0.95)
    assert result["auroc"] == 1.0
    known = 0.06  # every query is within this of its own cluster ...
    assert known < result["threshold"] < 1.3  # ... and about 1.4 from the other one
    assert result["coverage"] == 1.0 and result["precision"] == 1.0
    assert [p["coverage"] for p in result["curve"]][0] == 0.0 and result["curve"][-1]["coverage"] == 1.0


def test_fit_confidence__learns_that_split_votes_are_wrong_more_often():
    from embedder.answers.calibrate import apply_confidence, fit_confidence

    rng = np.random.default_rng(0)
    share = rng.uniform(0.3, 1.0, 2000)
    nearest = rng.uniform(0.1, 0.6, 2000)
    truth = rng.uniform(size=2000) < share  # by construction P(right) = share
    cal = fit_confidence(np.stack([share, nearest], 1), truth)
    assert cal["kind"] == "logistic" and cal["n"] == 2000
    p = apply_confidence(Confidence.of(cal), np.array([[0.4, 0.3], [0.95, 0.3]]))
    assert p[0] == pytest.approx(0.4, abs=0.08) and p[1] == pytest.approx(0.95, abs=0.05)


def test_fit_confidence__without_distance_reads_the_vote_share_alone():
    from embedder.answers.calibrate import apply_confidence, fit_confidence

    rng = np.random.default_rng(1)
    share = rng.uniform(0.3, 1.0, 2000)
    nearest = rng.uniform(0.1, 0.6, 2000)
    truth = rng.uniform(size=2000) < share * (1.2 - nearest)  # the distance matters here ...
    cal = fit_confidence(np.stack([share, nearest], 1), truth, distance=False)
    assert cal["kind"] == "logistic" and cal["coef"][1] == 0.0  # ... but another network's distances do not transfer
    near, far = apply_confidence(Confidence.of(cal), np.array([[0.9, 0.1], [0.9, 0.6]]))
    assert near == far
    low, high = apply_confidence(Confidence.of(cal), np.array([[0.4, 0.3], [0.95, 0.3]]))
    assert low < high - 0.2


def test_fit_confidence__all_right_on_validation_gives_the_smoothed_rate_not_certainty():
    from embedder.answers.calibrate import apply_confidence, fit_confidence

    cal = fit_confidence(np.array([[1.0, 0.2]] * 38), np.ones(38, dtype=bool))
    assert cal == {"kind": "constant", "value": 39 / 40, "n": 38, "right": 38}
    assert apply_confidence(Confidence.of(cal), np.array([[0.5, 0.9]])).tolist() == [39 / 40]
    assert apply_confidence(None, np.array([[0.5, 0.9]])).tolist() == [0.5]  # no calibration: the vote share


def test_reliability__bins_and_expected_calibration_error_by_hand():
    from embedder.answers.calibrate import reliability

    conf = np.array([0.95, 0.95, 0.95, 0.95, 0.55, 0.55])
    right = np.array([True, True, True, False, True, False])
    r = reliability(conf, right, bins=10)
    assert [(b["count"], b["accuracy"]) for b in r["bins"]] == [(2, 0.5), (4, 0.75)]
    assert r["ece"] == pytest.approx(2 / 6 * 0.05 + 4 / 6 * 0.2)


def test_reliability__the_ece_interval_holds_it_and_narrows_with_more_queries():
    from embedder.answers.calibrate import reliability

    rng = np.random.default_rng(0)
    conf = rng.uniform(0.5, 1.0, 4000)
    right = rng.uniform(size=4000) < conf  # calibrated by construction: the ECE is sampling noise alone
    few, many = reliability(conf[:200], right[:200]), reliability(conf, right)
    for r in (few, many):
        low, high = r["ece_ci"]
        assert 0 <= low <= r["ece"] <= high
    assert many["ece_ci"][1] - many["ece_ci"][0] < (few["ece_ci"][1] - few["ece_ci"][0]) / 2
    assert many["ece"] < 0.03


def test_answers__a_query_whose_class_the_gallery_lacks_is_left_out_as_open_set_does():
    rng = np.random.default_rng(0)
    gallery = rng.normal(size=(60, 8)).astype(np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    gallery_labels = np.repeat([0, 1, 2], 20)
    queries = gallery[::6] + 0.05 * rng.normal(size=(10, 8)).astype(np.float32)
    query_labels = gallery_labels[::6].copy()
    query_labels[:3] = 7  # a class the gallery does not have
    answers = Answers.of(queries[:4], query_labels[:4], gallery, gallery_labels)
    answers = Answers.concat([answers, Answers.of(queries[4:], query_labels[4:], gallery, gallery_labels)])
    assert np.isnan(answers.d_unknown[:3]).all() and not np.isnan(answers.d_unknown[3:]).any()
    assert answers.neighbours.shape == (10, 20)  # enough neighbours for every k tried
    pooled = answers.open_set(answers.at(5)[1], 0.95)
    direct = open_set(Labelled(queries, query_labels), Labelled(gallery, gallery_labels), k=5)
    assert pooled["threshold"] == pytest.approx(direct["threshold"]) and pooled["auroc"] == direct["auroc"]


@pytest.mark.parametrize(
    "metrics, words",
    [
        (
            {"confidence": {"kind": "logistic", "n": 179, "right": 178}, "unknown": {"calibrated_on": "validation"}},
            "179 validation images, 178 of them labelled right",
        ),
        (
            {"confidence": {"kind": "logistic", "n": 30, "right": 24}, "unknown": {"calibrated_on": "validation"}},
            "30 validation images, 24 of them labelled right: so few that it is a rough estimate",
        ),
        (
            {
                "confidence": {"kind": "constant", "n": 10, "right": 10},
                "unknown": {"calibrated_on": "cross-validation"},
            },
            "10 cross-validated answers (every training image, labelled by a network that never saw it), 10 of them "
            "labelled right: with none wrong to learn from it says 92% for every answer",
        ),
        ({"confidence": None, "unknown": {"calibrated_on": "validation"}}, "validation images"),
        ({"confidence": {"n": 5, "right": 9}}, "validation images"),
    ],
)
def test_calibrated_on__says_how_many_answers_and_whether_that_is_enough(metrics, words):
    assert calibrated_on(Metrics.of(metrics)) == words


def test_calibrated_on__for_the_threshold_says_nothing_of_a_constant_confidence():
    metrics = {"confidence": {"kind": "constant", "n": 10, "right": 10}, "unknown": {"calibrated_on": "validation"}}
    words = calibrated_on(Metrics.of(metrics), confidence=False)
    assert words == "10 validation images, 10 of them labelled right: so few that it is a rough estimate"

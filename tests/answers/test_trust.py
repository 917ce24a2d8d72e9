"""What a run's answers promise, said once: the calibration's promise, and "unknown" that would swallow them."""

from __future__ import annotations

from embedder.answers.trust import expected_wrong, promise, unknown_swallows
from embedder.runs.records import Metrics


def test_promise__names_the_level_and_what_it_rests_on():
    metrics = {"confidence": {"kind": "logistic", "coef": [1, 0], "intercept": 0, "n": 120, "right": 118}}
    assert promise(Metrics.of(metrics)) == (
        "answers at confidence >= 0.95: expected >= 95% right "
        "(confidence calibrated on 120 validation images, 118 of them labelled right)"
    )
    assert "not a probability" in promise(Metrics())


def test_unknown_swallows__where_no_distance_reaches_the_target():
    """The 100,000 overlapping images of issue 26: P@1 0.71, no threshold keeps answers 95% right."""
    said = unknown_swallows(Metrics.of({"unknown": {"target_precision": 0.95, "precision": 0.71, "coverage": 0.001}}))
    assert said.startswith("no distance keeps this run's answers 95% right (the best on validation: 71%)")
    turned_away = unknown_swallows(
        Metrics.of({"unknown": {"target_precision": 0.95, "precision": 0.95, "coverage": 0.2}})
    )
    assert "turns away 80% of them" in turned_away
    assert (
        unknown_swallows(Metrics.of({"unknown": {"target_precision": 0.95, "precision": 0.96, "coverage": 0.9}}))
        is None
    )
    assert unknown_swallows(Metrics()) is None


def test_expected_wrong__sums_the_chances_of_being_wrong():
    assert expected_wrong([0.99, 0.95, 0.5]) == 0.01 + 0.05 + 0.5

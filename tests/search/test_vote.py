import pytest

from embedder.search.vote import vote


def test_vote__distance_weighted_shares():
    label, confidence, shares = vote(["a", "b", "a"], [0.1, 0.2, 0.4])
    # weights 10, 5, 2.5 (plus a negligible epsilon)
    assert label == "a"
    assert confidence == pytest.approx(12.5 / 17.5, rel=1e-4)
    assert list(shares) == ["a", "b"]
    assert shares["b"] == pytest.approx(5 / 17.5, rel=1e-4)


def test_vote__nearer_minority_can_win():
    label, confidence, _ = vote(["a", "b", "b"], [0.05, 0.5, 0.5])
    assert label == "a" and confidence == pytest.approx(20 / 24, rel=1e-4)


def test_vote__tie_goes_to_nearest_neighbour_label():
    label, confidence, _ = vote(["b", "a"], [0.3, 0.3])
    assert label == "b" and confidence == pytest.approx(0.5)


def test_vote__exact_duplicate_dominates():
    label, confidence, _ = vote(["x", "y", "y", "y"], [0.0, 0.1, 0.1, 0.1])
    assert label == "x" and confidence > 0.999


def test_vote__needs_a_neighbour():
    with pytest.raises(ValueError):
        vote([], [])

"""Validation: capped, stratified samples that say so, and a score of labels first."""

import numpy as np

from embedder.training.validate import MAX_GALLERY, ValidationSet
from tests.helpers import unit


def test_validation_set__caps_each_side_keeping_every_label_and_says_so():
    labels = np.repeat(np.arange(4), 10_000)  # 40,000 images
    rows = np.arange(len(labels))
    v = ValidationSet.of(labels, rows[::10], rows, np.zeros(0, dtype=np.int64), seed=0)
    assert len(v.queries) == 2_000 and len(v.gallery) == MAX_GALLERY
    assert set(labels[v.queries]) == set(labels[v.gallery]) == {0, 1, 2, 3}
    assert v.note == (
        "validation each epoch scores a seeded sample: 2,000 of 4,000 validation images, "
        "20,000 of 40,000 training images"
    )
    again = ValidationSet.of(labels, rows[::10], rows, np.zeros(0, dtype=np.int64), seed=0)
    assert np.array_equal(v.queries, again.queries)


def test_validation_set__small_sets_are_used_whole_and_say_nothing():
    labels = np.array([0, 0, 1, 1, 0, 1])
    v = ValidationSet.of(labels, np.array([4, 5]), np.array([0, 1, 2, 3]), np.zeros(0, dtype=np.int64), seed=0)
    assert v.note is None and v.rows.tolist() == [4, 5, 0, 1, 2, 3]


def test_score__label_accuracy_with_an_interval_and_which_queries_were_right():
    # Gallery: two clusters. Query 4 sits in class 0's cluster but is labelled 1: the vote gets it wrong.
    emb = unit([[1, 0.1], [0.1, 1], [1, 0], [1, 0.05], [0, 1], [0.05, 1]])
    labels = np.array([0, 0, 0, 0, 1, 1])
    labels_q = labels.copy()
    labels_q[1] = 1  # query 1 (near class 1) is class 1: right
    v = ValidationSet.of(labels_q, np.array([0, 1]), np.array([2, 3, 4, 5]), np.zeros(0, dtype=np.int64), seed=0)
    s = v.score(emb, labels_q, k=1)
    assert s.correct.tolist() == [True, True] and s.key[0] == 1.0
    low, high = s.metrics["label_accuracy_ci"]
    assert 0.3 < low < 1.0 and high == 1.0  # two queries prove little
    labels_q[0] = 1  # now query 0 (in class 0's cluster) claims class 1
    s = v.score(emb, labels_q, k=1)
    assert s.correct.tolist() == [False, True] and s.metrics["label_accuracy"] == 0.5

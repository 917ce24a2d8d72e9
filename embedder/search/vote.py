"""The k-NN vote: nearer neighbours weigh more, ties go to the label of the nearest neighbour."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

EPS = 1e-6  # keeps an exact duplicate (distance 0) from dividing by zero; it then wins the vote outright


def vote(labels: Sequence[str], distances: Sequence[float]) -> tuple[str, float, dict[str, float]]:
    """Distance-weighted vote: each neighbour adds 1 / (distance + eps) to its label.

    Returns:
        (label, confidence, shares): the label with the largest share (ties go to the label of the nearer
        neighbour), its share, and all shares sorted largest first.
    """
    if len(labels) == 0:
        raise ValueError("vote needs at least one neighbour")
    weight: dict[str, float] = {}
    first_seen: dict[str, int] = {}
    for rank, (label, d) in enumerate(zip(labels, distances)):
        weight[label] = weight.get(label, 0.0) + 1.0 / (float(d) + EPS)
        first_seen.setdefault(label, rank)
    total = sum(weight.values())
    order = sorted(weight, key=lambda lab: (-weight[lab], first_seen[lab]))
    shares = {lab: weight[lab] / total for lab in order}
    return order[0], shares[order[0]], shares


def knn_votes(idx: np.ndarray, dist: np.ndarray, gallery_labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Distance-weighted vote over the first k neighbours of each row -> predicted labels (Q,), vote shares (Q,)."""
    return label_votes(gallery_labels[idx], dist, k)


def label_votes(labels: np.ndarray, dist: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``knn_votes`` from the neighbours' labels (Q, K) themselves, nearest first."""
    votes = [vote(lab[:k].tolist(), d[:k]) for lab, d in zip(labels, dist)]
    return np.array([int(v[0]) for v in votes], dtype=np.int64), np.array([v[1] for v in votes], dtype=np.float64)


def knn_predictions(idx: np.ndarray, dist: np.ndarray, gallery_labels: np.ndarray, k: int) -> np.ndarray:
    """Distance-weighted vote over the first k neighbours of each row -> predicted labels (Q,)."""
    return knn_votes(idx, dist, gallery_labels, k)[0]

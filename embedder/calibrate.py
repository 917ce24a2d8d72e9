"""Calibration on validation images: where "unknown" starts (a nearest-neighbour distance threshold).

Everything here is fitted on validation queries only; test queries are never used for it.
"""

from __future__ import annotations

import numpy as np

from .config import DEFAULT_K
from .knn import topk
from .predict import knn_predictions


def open_set(
    queries: np.ndarray,
    query_labels: np.ndarray,
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    target_precision: float = 0.95,
    k: int = DEFAULT_K,
    points: int = 41,
) -> dict:
    """How well the nearest-neighbour distance tells known from unknown, and where to cut.

    Each query is asked twice: as itself (a known class: right or wrong by the kNN vote) and as an
    "unknown" (its own class removed from the gallery: any answer is wrong). The threshold is the
    largest distance at which accepted answers are still right ``target_precision`` of the time
    (placed midway to the next observed distance).

    Returns:
        auroc (known vs unknown by distance), threshold, its precision and coverage of known queries,
        and a curve of (threshold, coverage, accuracy, unknown_accepted) for a slider.
    """
    from sklearn.metrics import roc_auc_score

    present = np.isin(query_labels, gallery_labels)
    q, ql = queries[present], query_labels[present]
    if len(q) == 0 or len(np.unique(gallery_labels)) < 2:
        return {}
    idx, dist = topk(q, gallery, k)
    correct = knn_predictions(idx, dist, gallery_labels, k) == ql
    d_known = dist[:, 0]
    d_unknown = topk(q, gallery, 1, other_label=(ql, gallery_labels))[1][:, 0]  # its own class removed
    auroc = float(roc_auc_score(np.r_[np.zeros(len(q)), np.ones(len(q))], np.r_[d_known, d_unknown]))

    def at(t: float) -> tuple[float, float, float, float]:
        known = d_known <= t
        accepted = known.sum() + (d_unknown <= t).sum()
        precision = correct[known].sum() / accepted if accepted else 1.0
        accuracy = correct[known].mean() if known.any() else 1.0
        return float(precision), float(known.mean()), float(accuracy), float((d_unknown <= t).mean())

    candidates = np.unique(np.r_[d_known, d_unknown])
    ok = [i for i, t in enumerate(candidates) if at(t)[0] >= target_precision]
    if not ok:
        threshold = float(candidates.min())
    elif ok[-1] + 1 < len(candidates):  # midway to the next distance, so the cut is not on a known example
        threshold = float((candidates[ok[-1]] + candidates[ok[-1] + 1]) / 2)
    else:
        threshold = float(candidates[-1])
    precision, coverage, accuracy, unknown_accepted = at(threshold)
    grid = np.linspace(0, float(candidates.max()) * 1.05, points)
    return {
        "auroc": auroc,
        "threshold": threshold,
        "target_precision": target_precision,
        "precision": precision,
        "coverage": coverage,
        "accuracy": accuracy,
        "unknown_accepted": unknown_accepted,
        "curve": [
            dict(zip(("threshold", "coverage", "accuracy", "unknown_accepted"), (float(t), *at(t)[1:]))) for t in grid
        ],
    }

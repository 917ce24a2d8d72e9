"""Calibration on validation images: how far a confident answer may be (the "unknown" distance threshold),
and how often an answer is right (a probability from the vote share and the nearest distance).

Everything here is fitted on validation queries only; test queries are never used for it, only to report
how well it holds (``reliability``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import DEFAULT_K
from ..runs.records import Confidence, Metrics
from ..search.knn import topk
from ..search.vote import knn_predictions, knn_votes, label_votes
from .metrics import KNN_KS, Labelled


def open_set(
    queries: Labelled,
    gallery: Labelled,
    target_precision: float = 0.95,
    k: int = DEFAULT_K,
    points: int = 41,
    neighbours: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict:
    """How well the nearest-neighbour distance tells known from unknown, and where to cut.

    Each query is asked twice: as itself (a known class: right or wrong by the kNN vote) and as an
    "unknown" (its own class removed from the gallery: any answer is wrong). The threshold is the
    largest distance at which accepted answers are still right ``target_precision`` of the time
    (placed midway to the next observed distance).

    ``neighbours``: the queries' k nearest (indices, distances) when the caller has them already.

    Returns:
        auroc (known vs unknown by distance), threshold, its precision and coverage of known queries,
        and a curve of (threshold, coverage, accuracy, unknown_accepted) for a slider.
    """
    gallery_labels = gallery.labels
    present = np.isin(queries.labels, gallery_labels)
    q, ql = queries.vectors[present], queries.labels[present]
    if len(q) == 0 or len(np.unique(gallery_labels)) < 2:
        return {}
    idx, dist = topk(q, gallery.vectors, k) if neighbours is None else (neighbours[0][present], neighbours[1][present])
    correct = knn_predictions(idx, dist, gallery_labels, k) == ql
    d_unknown = topk(q, gallery.vectors, 1, other_label=(ql, gallery_labels))[1][:, 0]  # its own class removed
    return open_set_from(dist[:, 0], correct, d_unknown, target_precision, points)


ROUGH = 50  # fitted on fewer answers than this, the confidence is a rough estimate, and the pages say so


def calibrated_on(metrics: Metrics, confidence: bool = True) -> str:
    """What a run's calibration was fitted on, in words for the pages: how many answers, how many right, and
    whether that is enough to go on. ``confidence=False`` words it for the "unknown" threshold, which the same
    answers set: what a constant confidence says does not concern it."""
    cv = metrics.unknown is not None and metrics.unknown.calibrated_on == "cross-validation"
    what = (
        "cross-validated answers (every training image, labelled by a network that never saw it)"
        if cv
        else "validation images"
    )
    fit = metrics.confidence
    n, right = (fit.n, fit.right) if fit is not None else (None, None)
    if n is None or right is None or not 0 <= right <= n:
        return what
    words = f"{n:,} {what}, {right:,} of them labelled right"
    if confidence and fit.kind == "constant" and right == n:
        return f"{words}: with none wrong to learn from it says {(n + 1) / (n + 2):.0%} for every answer"
    return words + (": so few that it is a rough estimate" if n < ROUGH else "")


@dataclass
class Answers:
    """Validation queries answered from the training images: what calibration and the choice of k are fitted on.

    Kept per query (Q rows): its label, the labels and distances of its ``K`` nearest training images (enough
    for every k tried), and its nearest distance with its own class removed (NaN when the gallery lacks its
    class: it is unknown already, and ``open_set_from`` leaves it out). Cross-validation keeps these for every
    out-of-fold image and pools them (``concat``)."""

    labels: np.ndarray  # (Q,)
    neighbours: np.ndarray  # (Q, K) labels, nearest first
    distances: np.ndarray  # (Q, K)
    d_unknown: np.ndarray  # (Q,)

    @classmethod
    def of(cls, queries, query_labels, gallery, gallery_labels, k: int = max(KNN_KS)) -> Answers:
        """The queries (Q, D) answered by their ``k`` nearest in the gallery (N, D); labels as for ``open_set``."""
        idx, dist = topk(queries, gallery, min(k, len(gallery)))
        d_unknown = topk(queries, gallery, 1, other_label=(query_labels, gallery_labels))[1][:, 0].astype(np.float64)
        d_unknown[~np.isin(query_labels, gallery_labels)] = np.nan
        return cls(np.asarray(query_labels), gallery_labels[idx], dist, d_unknown)

    @classmethod
    def concat(cls, parts: list[Answers]) -> Answers:
        k = min(p.neighbours.shape[1] for p in parts)  # as many neighbours as every part has
        return cls(
            np.concatenate([p.labels for p in parts]),
            np.concatenate([p.neighbours[:, :k] for p in parts]),
            np.concatenate([p.distances[:, :k] for p in parts]),
            np.concatenate([p.d_unknown for p in parts]),
        )

    def __len__(self) -> int:
        return len(self.labels)

    def at(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k-NN vote: (vote share, nearest distance) (Q, 2) per query, and whether it was right (Q,)."""
        predicted, shares = label_votes(self.neighbours, self.distances, k)
        return np.stack([shares, self.distances[:, 0]], axis=1), predicted == self.labels

    def open_set(self, right: np.ndarray, target_precision: float) -> dict:
        """``open_set`` of these answers, ``right`` saying which votes were right (``at(k)[1]``)."""
        return open_set_from(self.distances[:, 0], right, self.d_unknown, target_precision)


def open_set_from(
    d_known: np.ndarray, correct: np.ndarray, d_unknown: np.ndarray, target_precision: float = 0.95, points: int = 41
) -> dict:
    """``open_set`` from each query's nearest distance, whether its vote was right, and its nearest distance
    with its own class removed (NaN: the gallery lacks its class; left out)."""
    from sklearn.metrics import roc_auc_score

    known = ~np.isnan(d_unknown)
    d_known, correct, d_unknown = d_known[known], correct[known], d_unknown[known]
    if not len(d_known):
        return {}
    n = len(d_known)
    auroc = float(roc_auc_score(np.r_[np.zeros(n), np.ones(n)], np.r_[d_known, d_unknown]))
    at = _cuts(d_known, correct, d_unknown)
    threshold = _threshold(np.unique(np.r_[d_known, d_unknown]), at, target_precision)
    (precision,), (coverage,), (accuracy,), (unknown_accepted,) = at(np.array([threshold]))
    grid = np.linspace(0, float(max(d_known.max(), d_unknown.max())) * 1.05, points)
    curve = np.stack([grid, *at(grid)[1:]], axis=1)
    keys = ("threshold", "coverage", "accuracy", "unknown_accepted")
    return {
        "auroc": auroc,
        "threshold": threshold,
        "target_precision": target_precision,
        "precision": precision,
        "coverage": coverage,
        "accuracy": accuracy,
        "unknown_accepted": unknown_accepted,
        "curve": [dict(zip(keys, map(float, row))) for row in curve],
    }


def _cuts(d_known: np.ndarray, correct: np.ndarray, d_unknown: np.ndarray):
    """at(thresholds) -> (precision, coverage, accuracy, unknown accepted) of each threshold, by sorted counts:
    O((Q + T) log Q), not Q x T."""
    known, right, unknown = np.sort(d_known), np.sort(d_known[correct]), np.sort(d_unknown)

    def at(ts: np.ndarray) -> tuple[np.ndarray, ...]:
        n_known = np.searchsorted(known, ts, side="right")
        n_right = np.searchsorted(right, ts, side="right")
        n_unknown = np.searchsorted(unknown, ts, side="right")
        accepted = n_known + n_unknown
        precision = np.where(accepted > 0, n_right / np.maximum(accepted, 1), 1.0)
        accuracy = np.where(n_known > 0, n_right / np.maximum(n_known, 1), 1.0)
        return precision, n_known / len(known), accuracy, n_unknown / len(unknown)

    return at


def _threshold(candidates: np.ndarray, at, target_precision: float) -> float:
    """The largest candidate distance whose accepted answers are right ``target_precision`` of the time, placed
    midway to the next observed distance so the cut is not on a known example."""
    ok = np.flatnonzero(at(candidates)[0] >= target_precision)
    if not len(ok):
        return float(candidates.min())
    if ok[-1] + 1 < len(candidates):
        return float((candidates[ok[-1]] + candidates[ok[-1] + 1]) / 2)
    return float(candidates[-1])


def vote_outcomes(
    queries: np.ndarray,
    query_labels: np.ndarray,
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    k: int,
    neighbours: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per query: the features confidence is read from, (vote share, nearest distance) (Q, 2), and whether the
    vote was right (Q,). ``neighbours``: the queries' k nearest, when the caller has them already."""
    idx, dist = topk(queries, gallery, k) if neighbours is None else neighbours
    predicted, shares = knn_votes(idx, dist, gallery_labels, k)
    return np.stack([shares, dist[:, 0]], axis=1), predicted == query_labels


def fit_confidence(features: np.ndarray, correct: np.ndarray, distance: bool = True) -> dict:
    """P(right | vote share, nearest distance): a logistic regression (Platt scaling on two features) fitted on
    validation queries; with no wrong (or no right) answer to learn from, the smoothed rate (right + 1) / (n + 2).
    Plain numbers, so the run stores it as JSON.

    ``distance=False`` fits on the vote share alone (the distance's weight is 0): for answers of other networks
    (cross-validation's folds), whose distances are on another scale than the kept network's: fewer training
    images of a class leave its images farther apart."""
    n, right = len(correct), int(correct.sum())
    if 0 < right < n:
        from sklearn.linear_model import LogisticRegression

        used = features if distance else features[:, :1]
        model = LogisticRegression(C=1.0).fit(used, correct.astype(int))
        return {
            "kind": "logistic",
            "coef": [float(c) for c in model.coef_[0]] + ([] if distance else [0.0]),
            "intercept": float(model.intercept_[0]),
            "n": n,
            "right": right,
        }
    return {"kind": "constant", "value": (right + 1) / (n + 2), "n": n, "right": right}


def apply_confidence(calibration: Confidence | None, features: np.ndarray) -> np.ndarray:
    """Calibrated probabilities (Q,) for features (Q, 2); without a calibration, the raw vote share."""
    if not calibration:
        return features[:, 0].astype(np.float64)
    if calibration.kind == "constant":
        return np.full(len(features), calibration.value)
    z = features @ np.asarray(calibration.coef) + calibration.intercept
    return 1.0 / (1.0 + np.exp(-z))


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> dict:
    """Reliability diagram data and the expected calibration error: in each confidence bin, the mean confidence
    against the share actually right, weighted by the bin's size; with a 95% bootstrap interval (``ece_ci``: with
    a few hundred queries and a handful wrong, two ECEs 0.002 apart cannot be told apart)."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    conf_f, right_f = np.asarray(confidence, float), np.asarray(correct, float)
    ece, interval = _ece(conf_f, right_f, which, bins), _ece_interval(conf_f, right_f, which, bins)
    rows = []
    for b in range(bins):
        inside = which == b
        if inside.any():
            conf, acc = float(confidence[inside].mean()), float(correct[inside].mean())
            rows.append(
                {
                    "low": float(edges[b]),
                    "high": float(edges[b + 1]),
                    "confidence": conf,
                    "accuracy": acc,
                    "count": int(inside.sum()),
                }
            )
    return {"bins": rows, "ece": ece, "ece_ci": interval, "n": int(len(correct))}


def _ece(confidence: np.ndarray, correct: np.ndarray, which: np.ndarray, bins: int) -> float:
    """Sum over bins of (bin size / n) |mean confidence - share right| = sum |sum (confidence - right)| / n."""
    gap = np.bincount(which, confidence - correct, minlength=bins)
    return float(np.abs(gap).sum() / max(len(correct), 1))


def _ece_interval(confidence, correct, which, bins: int, draws: int = 500, seed: int = 0) -> list[float]:
    """The 2.5th and 97.5th percentiles of the ECE over queries resampled with replacement (seeded: the before and
    after diagrams of one evaluation draw the same resamples)."""
    n = len(correct)
    if n == 0:
        return [0.0, 0.0]
    rng, eces = np.random.default_rng(seed), np.empty(draws)
    for i in range(draws):
        pick = rng.integers(0, n, n)
        eces[i] = _ece(confidence[pick], correct[pick], which[pick], bins)
    return [float(v) for v in np.percentile(eces, [2.5, 97.5])]

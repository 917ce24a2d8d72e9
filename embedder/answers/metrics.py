"""Retrieval metrics of embeddings: P@1, R-Precision, MAP@R (pytorch-metric-learning), the kNN vote's accuracy,
and per-class diagnostics. Every search goes through the streaming top-k."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..config import DEFAULT_K
from ..search.knn import StreamingKNN, topk
from ..search.vote import knn_predictions

KNN_KS = (1, 3, 5, 10, 20)
MAX_KNN_ENTRIES = 1 << 22  # query rows x neighbours MAP@R holds at once (R is a class's size: 8,000 at 100k images)
_PML_KEYS = ("precision_at_1", "r_precision", "mean_average_precision_at_r")


def _accuracy_calculator():
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    # The streaming top-k keeps AccuracyCalculator off faiss (not installed) and off a queries x gallery matrix.
    return AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
        k="max_bin_count",
        knn_func=StreamingKNN(),
    )


def neighbours(
    queries: np.ndarray, gallery: np.ndarray, k: int, leave_one_out: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Exact kNN (Q, k). With ``leave_one_out`` the queries are the gallery and nobody finds itself."""
    return topk(queries, gallery, k, exclude=np.arange(len(queries)) if leave_one_out else None)


def knn_accuracies(
    queries: np.ndarray,
    query_labels: np.ndarray,
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    ks: Sequence[int] = KNN_KS,
    leave_one_out: bool = False,
) -> dict[int, tuple[float, float]]:
    """Distance-weighted kNN vote for each k -> {k: (accuracy, macro accuracy)} on exact neighbours."""
    idx, dist = neighbours(queries, gallery, max(ks), leave_one_out)
    out = {}
    for k in ks:
        if k > idx.shape[1]:
            continue
        correct = knn_predictions(idx, dist, gallery_labels, k) == query_labels
        per_class = [correct[query_labels == c].mean() for c in np.unique(query_labels)]
        out[k] = (float(correct.mean()), float(np.mean(per_class)))
    return out


def vote_correct(queries, query_labels, gallery, gallery_labels, k: int = DEFAULT_K, leave_one_out: bool = False):
    """(Q,) bool: whether the distance-weighted vote of each query's k nearest gallery images is its label.
    Arrays as for ``retrieval_metrics``."""
    if len(queries) == 0:
        return np.zeros(0, dtype=bool)
    idx, dist = neighbours(queries, gallery, k, leave_one_out)
    return knn_predictions(idx, dist, gallery_labels, k) == query_labels


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% confidence interval of a proportion (Wilson score): honest for small n and for 0% or 100%."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def retrieval_metrics(
    queries: np.ndarray,
    query_labels: np.ndarray,
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    leave_one_out: bool = False,
    k: int = DEFAULT_K,
) -> dict:
    """Queries (Q, D) against a gallery (N, D), both L2-normalised.

    Queries whose label has no gallery image (with ``leave_one_out``: no other image) cannot be
    answered right by retrieval; they are left out of the metrics and counted in ``n_unmatched_queries``.
    """
    labels, counts = np.unique(gallery_labels, return_counts=True)
    answerable = labels[counts >= (2 if leave_one_out else 1)]
    present = np.isin(query_labels, answerable)
    q, ql = queries[present], query_labels[present]
    if leave_one_out:
        gallery, gallery_labels = q, ql
    result = {"n_queries": int(len(q)), "n_unmatched_queries": int((~present).sum())}
    if len(q) == 0:
        return result
    acc, correct = _blockwise_scores(q, ql, gallery, gallery_labels, leave_one_out, sorted({*KNN_KS, k}))
    knn = {
        j: (float(c.mean()), float(np.mean([c[ql == label].mean() for label in np.unique(ql)])))
        for j, c in correct.items()
    }
    best_k = max(knn, key=lambda j: (knn[j][0], -j))
    default_k = k if k in knn else max(knn)
    result.update(
        precision_at_1=float(acc["precision_at_1"]),
        r_precision=float(acc["r_precision"]),
        map_at_r=float(acc["mean_average_precision_at_r"]),
        knn_accuracy=knn[default_k][0],
        knn_k=default_k,
        knn_accuracy_at_1=knn[1][0],
        best_k=best_k,
        knn_accuracy_at_best_k=knn[best_k][0],
        knn_accuracy_by_k={str(j): acc for j, (acc, _) in knn.items()},
        macro_accuracy=knn[default_k][1],
    )
    return result


class _Found:
    """pytorch-metric-learning's ``knn_func`` hook answering with neighbours already found: (B, K) rows into the
    reference it is given, nearest first."""

    def __init__(self, idx: np.ndarray, dist: np.ndarray) -> None:
        self.idx, self.dist = torch.from_numpy(idx), torch.from_numpy(dist)

    def __call__(self, query: torch.Tensor, k: int, reference: torch.Tensor, ref_includes_query: bool = False):
        return self.dist[:, :k], self.idx[:, :k]


def _blockwise_scores(
    q: np.ndarray, ql: np.ndarray, gallery: np.ndarray, gallery_labels: np.ndarray, leave_one_out: bool, ks
) -> tuple[dict, dict[int, np.ndarray]]:
    """P@1, R-Precision and MAP@R (pytorch-metric-learning), and whether each query's k-NN vote is right for each
    of ``ks``, from one exact search per block of queries.

    MAP@R reads each query's R nearest gallery items, R its class's count there: all queries at once would hold
    Q x R neighbours (20,000 x 8,000 at 100k images of 10 classes: gigabytes). Each metric is a mean over
    queries, so the blocks' means weighted by their sizes are exactly the whole set's.

    Returns:
        (the three means, {k: (Q,) bool}) for each k the gallery is large enough for.
    """
    _, counts = np.unique(gallery_labels, return_counts=True)
    depth = max(int(counts.max()), max(ks))  # R of the largest class, or the largest vote
    step = max(1, MAX_KNN_ENTRIES // depth)
    calculator, sums = _accuracy_calculator(), dict.fromkeys(_PML_KEYS, 0.0)
    correct: dict[int, list] = {j: [] for j in ks}
    for start in range(0, len(q), step):
        stop = min(start + step, len(q))
        idx, dist = topk(q[start:stop], gallery, depth, exclude=np.arange(start, stop) if leave_one_out else None)
        ref, ref_labels, ref_idx = gallery, gallery_labels, idx  # (B, K) rows of the gallery
        if leave_one_out:  # pml's contract: the reference starts with the queries themselves
            order = np.r_[start:stop, :start, stop : len(q)]
            where = np.empty_like(order)
            where[order] = np.arange(len(order))
            ref, ref_labels, ref_idx = gallery[order], gallery_labels[order], where[idx]
        calculator.knn_func = _Found(ref_idx, dist)
        acc = calculator.get_accuracy(
            *map(torch.from_numpy, (q[start:stop], ql[start:stop], ref, ref_labels)), ref_includes_query=leave_one_out
        )
        for key in _PML_KEYS:
            sums[key] += float(acc[key]) * (stop - start)
        for j in ks:
            if j <= idx.shape[1]:
                correct[j].append(knn_predictions(idx, dist, gallery_labels, j) == ql[start:stop])
    means = {key: total / len(q) for key, total in sums.items()}
    return means, {j: np.concatenate(c) for j, c in correct.items() if c}


@dataclass(frozen=True)
class Labelled:
    """Embeddings and their labels: the queries or the gallery of an evaluation."""

    vectors: np.ndarray  # (N, D)
    labels: np.ndarray  # (N,) class ids
    paths: Sequence = ()  # (N,) each one's image, named in examples; empty where none are named


def diagnostics(
    queries: Labelled,
    gallery: Labelled,
    classes: list[str],
    k: int = DEFAULT_K,
    top_pairs: int = 6,
    neighbours: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict:
    """Per-class accuracy, the confusion matrix of the kNN vote, and the most confused pairs with examples (the
    queries' and the gallery's ``paths``). ``neighbours``: the queries' k nearest (indices, distances) when the
    caller has them already."""
    gallery_labels, gallery_paths = gallery.labels, gallery.paths
    present = np.isin(queries.labels, gallery_labels)
    q, ql = queries.vectors[present], queries.labels[present]
    paths = [p for p, ok in zip(queries.paths, present) if ok]
    if len(q) == 0:
        return {}
    idx, dist = topk(q, gallery.vectors, k) if neighbours is None else (neighbours[0][present], neighbours[1][present])
    pred = knn_predictions(idx, dist, gallery_labels, k)
    n = len(classes)
    matrix = np.zeros((n, n), dtype=np.int64)
    np.add.at(matrix, (ql, pred), 1)
    per_class = {
        classes[c]: {"n": int(matrix[c].sum()), "accuracy": float(matrix[c, c] / matrix[c].sum())}
        for c in range(n)
        if matrix[c].sum()
    }
    off = [(int(matrix[a, b]), a, b) for a in range(n) for b in range(n) if a != b and matrix[a, b]]
    pairs = []
    for count, a, b in sorted(off, reverse=True)[:top_pairs]:
        rows = np.flatnonzero((ql == a) & (pred == b))[:3]
        examples = []
        for r in rows:  # the query and its nearest neighbour of the wrongly predicted class
            j = next(int(j) for j in idx[r] if gallery_labels[j] == b)
            examples.append({"query": str(paths[r]), "neighbor": str(gallery_paths[j])})
        pairs.append({"true": classes[a], "predicted": classes[b], "count": count, "examples": examples})
    return {
        "per_class": per_class,
        "confusion": {"labels": classes, "matrix": matrix.tolist()},
        "confused_pairs": pairs,
    }

"""The measurement behind the index choice: probes that are not the gallery, exact search as the truth, and each
approximate index tuned one probe at a time until it reaches its recall target or stops paying.

A probe is timed as queries come, one at a time, best of a few passes (a pass slowed by another process says
nothing about the search). Recall@10 counts the exact 10 nearest each probe's answer holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..config import IndexConfig
from .knn import as_float32

TIMED_PROBES = 100  # probes timed one at a time for each method
# An index is tuned until its probes' recall is this sure (one-sided 95%) to reach the target on queries like them:
# at 1,000,000 a graph tuned on 200 probes' mean recall (0.954) gave held-out queries 0.943.
CONFIDENCE_Z = 1.645
TIMING_REPEATS = 3
EF_START = 16  # the graph's first search depth; raised by half until recall reaches the target
EF_MAX = 4096


@dataclass(frozen=True)
class Probes:
    """What an index is tuned on: probe vectors and the exact answers they must find."""

    vectors: np.ndarray  # (P, D) float32
    truth: np.ndarray  # (P, k) the exact k nearest gallery rows of each probe
    skip: np.ndarray | None  # (P,) the gallery row each probe is (and must not find), or None: held-out probes


def probes(embeddings: np.ndarray, given: np.ndarray | None, config: IndexConfig):
    """(probe vectors (P, D), the gallery row each must not find or None, what they are)."""
    rng = np.random.default_rng(config.seed)
    if given is None or len(given) == 0:
        skip = np.sort(rng.choice(len(embeddings), size=min(config.recall_sample, len(embeddings)), replace=False))
        return as_float32(embeddings[skip]), skip, "gallery, self excluded"
    if len(given) > config.recall_sample:
        given = given[np.sort(rng.choice(len(given), size=config.recall_sample, replace=False))]
    return as_float32(given), None, "held-out"


def best_ms(search: Callable[[np.ndarray], object], vectors: np.ndarray) -> float:
    """``search`` of one (D,) probe, timed on ``TIMED_PROBES`` probes one at a time: ms per query, the best of
    ``TIMING_REPEATS`` passes."""
    sample, best = vectors[:TIMED_PROBES], np.inf
    for _ in range(TIMING_REPEATS):
        t0 = time.perf_counter()
        for v in sample:
            search(v)
        best = min(best, 1000 * (time.perf_counter() - t0) / len(sample))
    return float(best)


def recall(found: Callable[[int, np.ndarray, int], list], vectors, truth: np.ndarray, skip) -> np.ndarray:
    """Each probe's recall@k (P,) against ``truth`` (P, k) of ``found(i, vector, n) -> rows``, a probe at a time. A
    probe that is a gallery item (``skip``) is not its own answer (finding itself would flatter the recall)."""
    k, hits = truth.shape[1], np.zeros(len(vectors))
    for i, v in enumerate(vectors):
        got = list(found(i, v, k + (skip is not None)))
        if skip is not None:
            got = [j for j in got if j != skip[i]][:k]
        hits[i] = len(set(got) & set(truth[i].tolist()))
    return hits / max(k, 1)


def reaches(per_probe: np.ndarray, target: float) -> bool:
    """Whether the probes' recall reaches ``target`` with confidence: their mean less ``CONFIDENCE_Z`` standard
    errors (a recall measured on few probes must clear the target by more)."""
    if len(per_probe) < 2:
        return bool(per_probe.mean() >= target) if len(per_probe) else True
    low = per_probe.mean() - CONFIDENCE_Z * per_probe.std(ddof=1) / np.sqrt(len(per_probe))
    return bool(low >= target)


def tune_annoy(annoy, probe_set: Probes, config: IndexConfig, give_up_ms: float) -> tuple[int, float, float]:
    """Raise ``search_k`` until Annoy's recall surely reaches the target (``reaches``), search is exhaustive, or
    Annoy is slower than ``give_up_ms`` (more search_k only costs more): (search_k, mean recall, ms per query)."""
    vectors, truth, skip = probe_set.vectors, probe_set.truth, probe_set.skip
    exhaustive = annoy.get_n_items() * config.n_trees  # far beyond this Annoy is already visiting every item
    k = truth.shape[1] + (skip is not None)
    search_k = max(truth.shape[1] * config.n_trees, 100)
    while True:
        found = lambda i, v, n, s=search_k: annoy.get_nns_by_vector(v.tolist(), n, search_k=s)
        got = recall(found, vectors, truth, skip)
        ms = best_ms(lambda v, s=search_k: annoy.get_nns_by_vector(v.tolist(), k, search_k=s), vectors)
        if reaches(got, config.target_recall) or search_k >= exhaustive or ms > give_up_ms:
            return int(search_k), float(got.mean()), ms
        search_k = min(search_k * 2, exhaustive)


def tune_graph(graph, gallery, probe_set: Probes, config: IndexConfig, give_up_ms: float):
    """Raise the graph's search depth ``ef`` until its recall surely reaches the target (``reaches``), the depth
    covers the gallery, or the graph is slower than ``give_up_ms``: (ef, mean recall, ms per query, re-ranking
    included)."""
    vectors, truth, skip = probe_set.vectors, probe_set.truth, probe_set.skip
    k = truth.shape[1] + (skip is not None)
    ef = max(EF_START, k)
    while True:
        got = recall(lambda i, v, n, e=ef: graph.query(v[None], gallery, n, e)[0][0].tolist(), vectors, truth, skip)
        ms = best_ms(lambda v, e=ef: graph.query(v[None], gallery, k, e), vectors)
        if reaches(got, config.target_recall) or ef >= min(graph.size, EF_MAX) or ms > give_up_ms:
            return int(ef), float(got.mean()), ms
        ef = min(ef * 3 // 2, EF_MAX)  # finer than doubling: cost grows with ef, the cheapest ef that reaches it

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


def _tune(at: Callable[[int], tuple[np.ndarray, float]], first: int, grow, last: int, give_up_ms: float, target):
    """The cheapest setting that surely reaches ``target``: from ``first``, ``grow`` it until ``at(setting)`` ->
    (each probe's recall, ms per query) reaches it, the setting is ``last`` or slower than ``give_up_ms``; then
    halve the step back to within a sixteenth. Returns (setting, mean recall, ms per query)."""
    setting, below = first, None
    while True:
        got, ms = at(setting)
        if reaches(got, target):
            break
        if setting >= last or ms > give_up_ms:
            return int(setting), float(got.mean()), ms
        below, setting = setting, min(grow(setting), last)
    while below is not None and setting - below > max(1, setting // 16):
        middle = (below + setting) // 2
        got_m, ms_m = at(middle)
        if reaches(got_m, target):
            setting, got, ms = middle, got_m, ms_m
        else:
            below = middle
    return int(setting), float(got.mean()), ms


def tune_annoy(annoy, probe_set: Probes, config: IndexConfig, give_up_ms: float) -> tuple[int, float, float]:
    """The cheapest ``search_k`` at which Annoy's recall surely reaches the target (``reaches``; doubled, then
    narrowed), else where search is exhaustive or slower than ``give_up_ms`` (more only costs more):
    (search_k, mean recall, ms per query)."""
    vectors, truth, skip = probe_set.vectors, probe_set.truth, probe_set.skip
    exhaustive = annoy.get_n_items() * config.n_trees  # far beyond this Annoy is already visiting every item
    k = truth.shape[1] + (skip is not None)

    def at(search_k: int) -> tuple[np.ndarray, float]:
        found = lambda i, v, n: annoy.get_nns_by_vector(v.tolist(), n, search_k=search_k)  # noqa: E731
        ms = best_ms(lambda v: annoy.get_nns_by_vector(v.tolist(), k, search_k=search_k), vectors)
        return recall(found, vectors, truth, skip), ms

    first = max(truth.shape[1] * config.n_trees, 100)
    return _tune(at, first, lambda s: s * 2, max(first, exhaustive), give_up_ms, config.target_recall)


def tune_graph(graph, gallery, probe_set: Probes, config: IndexConfig, give_up_ms: float):
    """The cheapest search depth ``ef`` at which the graph's recall surely reaches the target (``reaches``; raised
    by half, then narrowed), else where it covers the gallery or is slower than ``give_up_ms``: (ef, mean recall,
    ms per query, re-ranking included)."""
    vectors, truth, skip = probe_set.vectors, probe_set.truth, probe_set.skip
    k = truth.shape[1] + (skip is not None)

    def at(ef: int) -> tuple[np.ndarray, float]:
        got = recall(lambda i, v, n: graph.query(v[None], gallery, n, ef)[0][0].tolist(), vectors, truth, skip)
        return got, best_ms(lambda v: graph.query(v[None], gallery, k, ef), vectors)

    first = max(EF_START, k)
    last = max(first, min(graph.size, EF_MAX))
    return _tune(at, first, lambda ef: ef * 3 // 2, last, give_up_ms, config.target_recall)

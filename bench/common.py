"""What the benchmarks share: timing, memory, and the synthetic data that is as hard as real embeddings."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable

import numpy as np


def ms_per_call(fn: Callable[[], object], calls: int, repeats: int = 3) -> float:
    """Milliseconds per call of ``fn``: the best of ``repeats`` passes of ``calls`` calls (a pass slowed by another
    process on this shared machine says nothing about the code)."""
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls)
    return 1000 * best


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    """This process's resident memory now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def mixture(
    n: int, centres: np.ndarray, spread: float, rng: np.random.Generator, chunk: int = 100_000
) -> tuple[np.ndarray, np.ndarray]:
    """(n, D) unit vectors around random class centres with noise ``spread`` (relative to the centres' scale), and
    their labels; made a chunk at a time in float32 (a million rows never pass through float64)."""
    classes, dim = centres.shape
    x, labels = np.empty((n, dim), dtype=np.float32), rng.integers(0, classes, n)
    for s in range(0, n, chunk):
        part = centres[labels[s : s + chunk]] + spread * rng.standard_normal(
            (len(labels[s : s + chunk]), dim), np.float32
        )
        x[s : s + len(part)] = part / np.linalg.norm(part, axis=1, keepdims=True)
    return x, labels


def table(header: list[str], rows: list[list]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)

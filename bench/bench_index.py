"""Annoy against exact search on the same gallery, in the same process, on data that can make Annoy lose.

Queries are never gallery items: they are drawn from the same mixture as the gallery. Two regimes:
"overlapping" (many classes whose clouds overlap, as embeddings of hard data do) and "separated" (few, far apart).
The exact baseline is done right: float32, one BLAS matrix product per block, ``torch.topk`` per block
(``embedder.knn.topk``), all queries at once. Reported per regime: ms per query for both, recall@10 of Annoy against
exact, the recall the index build measured for itself, and the 1-NN label accuracy of each — so a user can tell
which case they are in.

    python -m bench.bench_index [--n 100000] [--dim 128] [--queries 300]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from embedder.config import IndexConfig
from embedder.index import build_index
from embedder.knn import topk


def mixture(rng, n: int, dim: int, classes: int, spread: float) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around ``classes`` random centres; ``spread`` is the noise scale relative to the centres."""
    centres = rng.normal(size=(classes, dim)).astype(np.float32)
    labels = rng.integers(0, classes, n)
    x = centres[labels] + spread * rng.normal(size=(n, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


def regime(name: str, n: int, dim: int, classes: int, spread: float, n_queries: int) -> None:
    rng = np.random.default_rng(0)
    both, labels = mixture(rng, n + n_queries, dim, classes, spread)
    gallery, g_labels, queries, q_labels = both[:n], labels[:n], both[n:], labels[n:]
    t0 = time.perf_counter()
    index = build_index(gallery, IndexConfig(), probes=queries[: n_queries // 2])  # its own probes: half the queries
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    want, _ = topk(queries, gallery, 10)
    exact_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for q in queries[:50]:  # what one uploaded image costs: one float32 matrix-vector product, argpartition
        scores = gallery @ q  # unit vectors: the nearest have the largest dot product
        top = np.argpartition(-scores, 10)[:10]
        top[np.argsort(-scores[top])]
    single_s = (time.perf_counter() - t0) / 50 * n_queries
    t0 = time.perf_counter()
    got, _ = index.query(queries, 10)
    annoy_s = time.perf_counter() - t0
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, want)])
    print(f"\n{name}: {n:,} x {dim} gallery, {classes} classes, {n_queries} held-out queries, k=10")
    print(
        f"  build {build_s:.1f} s: {index.n_trees} trees, search_k {index.search_k}, "
        f"measured recall@10 {index.recall_at_10:.3f}"
    )
    truth = np.mean(g_labels[want[:, 0]] == q_labels)
    print(f"  exact, batched    {1000 * exact_s / n_queries:7.2f} ms/query   1-NN label accuracy {truth:.3f}")
    print(f"  exact, one by one {1000 * single_s / n_queries:7.2f} ms/query")
    found = np.mean(g_labels[got[:, 0]] == q_labels)
    print(
        f"  annoy             {1000 * annoy_s / n_queries:7.2f} ms/query   1-NN label accuracy {found:.3f}   "
        f"recall@10 {recall:.3f}"
    )
    for what, base in (("batched", exact_s), ("one by one", single_s)):
        print(
            f"  -> annoy is {base / annoy_s:.2f}x exact search's speed {what} "
            f"({'faster' if annoy_s < base else 'SLOWER'})"
        )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=100_000, help="gallery size")
    ap.add_argument("--dim", type=int, default=128, help="embedding size")
    ap.add_argument("--queries", type=int, default=300, help="number of held-out queries")
    args = ap.parse_args(argv)
    regime("overlapping", args.n, args.dim, 1000, 1.5, args.queries)  # exact 1-NN label accuracy about 0.97
    regime("separated", args.n, args.dim, 100, 0.3, args.queries)


if __name__ == "__main__":
    main()

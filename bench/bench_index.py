"""Annoy against exact (numpy) search on the same gallery, in the same process: speed ratio and recall.

python -m bench.bench_index [--n 50000] [--dim 128] [--queries 500]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from embedder.config import IndexConfig
from embedder.index import build_index
from embedder.knn import topk as exact_neighbors


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=50_000, help="gallery size")
    ap.add_argument("--dim", type=int, default=128, help="embedding size")
    ap.add_argument("--queries", type=int, default=500, help="number of queries")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    # Clustered data (like real embeddings), not uniform noise, where every neighbour is equally far.
    centres = rng.normal(size=(100, args.dim))
    gallery = centres[rng.integers(0, 100, args.n)] + 0.3 * rng.normal(size=(args.n, args.dim))
    gallery = (gallery / np.linalg.norm(gallery, axis=1, keepdims=True)).astype(np.float32)
    queries = gallery[rng.choice(args.n, args.queries, replace=False)] + 0.01

    t0 = time.perf_counter()
    index = build_index(gallery, IndexConfig())
    build_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    want, _ = exact_neighbors(queries, gallery, 10)
    exact_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    got, _ = index.query(queries, 10)
    annoy_s = time.perf_counter() - t0
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, want)])
    print(f"gallery {args.n} x {args.dim}, {args.queries} queries, k=10")
    print(
        f"build: {build_s:.1f} s (n_trees {index.n_trees}, search_k {index.search_k}, "
        f"probe recall@10 {index.recall_at_10:.3f})"
    )
    print(f"exact search (baseline): {1000 * exact_s / args.queries:.2f} ms/query")
    print(
        f"annoy:                   {1000 * annoy_s / args.queries:.2f} ms/query  "
        f"-> {exact_s / annoy_s:.2f}x the baseline's speed, recall@10 {recall:.3f}"
    )


if __name__ == "__main__":
    main()

"""How the graph keeps its vectors: Voyager's float32, 8-bit fixed point (Float8) and 8-bit float (E4M3) storage, and
its links a node (M), on the same overlapping unit vectors, in one process.

A graph walk at 300,000 vectors and more is bound by fetching the vectors it visits (the same ms at the same depth
at 300,000 as at 1,000,000), so smaller vectors walk faster; their coarse distances are made up for by asking the
walk for more neighbours (k') and re-ranking them by exact float32 distance, as the product does
(``search/graph.py``). Recall@10 against exact search on held-out queries, one query at a time (best of 2 passes),
the re-rank included.

    python -m bench.bench_graph_storage --n 300000 --variants f32-32 f8-32 e4m3-32 f8-48
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from bench.bench_knn import CLASSES, DIM, SPREAD, recall
from bench.common import mixture, table
from embedder.search.graph import EF_CONSTRUCTION, rerank
from embedder.search.knn import topk

EFS, KS, QUERIES = (64, 96, 128, 192, 256), (10, 20, 40), 300


def build(gallery: np.ndarray, variant: str):
    """A Voyager graph over ``gallery``: "<storage>-<M>", storage f32 | f8 | e4m3."""
    import voyager

    storage, m = variant.split("-")
    kind = {"f32": "Float32", "f8": "Float8", "e4m3": "E4M3"}[storage]
    storage_type = getattr(voyager.StorageDataType, kind)
    graph = voyager.Index(voyager.Space.Euclidean, DIM, M=int(m), ef_construction=EF_CONSTRUCTION, random_seed=1,
                          max_elements=len(gallery), storage_data_type=storage_type)  # fmt: skip
    for s in range(0, len(gallery), 50_000):
        graph.add_items(gallery[s : s + 50_000], ids=list(range(s, min(len(gallery), s + 50_000))), num_threads=-1)
    return graph


def sweep(graph, gallery: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> list[tuple[int, int, float, float]]:
    """(ef, k', recall@10, ms per query) at each depth and candidate count."""
    rows = []
    for ef in EFS:
        for k in KS:
            best, got = np.inf, []
            for _ in range(2):
                t0, got = time.perf_counter(), []
                for v in queries:
                    ids, _ = graph.query(v[None], k, num_threads=1, query_ef=ef)
                    got.append(rerank(v[None], gallery, np.asarray(ids, dtype=np.int64).reshape(1, -1))[0][0, :10])
                best = min(best, 1000 * (time.perf_counter() - t0) / len(queries))
            rows.append((ef, k, recall(np.array(got), truth), best))
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300_000)
    ap.add_argument("--variants", nargs="+", default=["f32-32", "f8-32", "e4m3-32", "f8-48"])
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.n)
    centres = rng.standard_normal((CLASSES, DIM), np.float32)
    gallery, _ = mixture(args.n, centres, SPREAD[1_000_000], rng)  # the 1M benchmark's noise
    queries, _ = mixture(QUERIES, centres, SPREAD[1_000_000], rng)
    truth, _ = topk(queries, gallery, 10)
    print(f"{args.n:,} vectors, d={DIM}, {QUERIES} held-out queries; load average {os.getloadavg()[0]:.1f}", flush=True)
    out = []
    for variant in args.variants:
        t0 = time.perf_counter()
        graph = build(gallery, variant)
        built = time.perf_counter() - t0
        for ef, k, r, ms in sweep(graph, gallery, queries, truth):
            out.append([variant, f"{built:.0f}", ef, k, f"{r:.3f}", f"{ms:.3f}"])
        print(table(["storage-M", "build s", "ef", "k'", "recall@10", "ms/query"], out), flush=True)


if __name__ == "__main__":
    main()

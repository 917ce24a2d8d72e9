"""Projections and the map's size: PCA at 100k, UMAP and t-SNE at 10k, Plotly payload bytes per point; and which
t-SNE the product uses: scikit-learn's (Barnes-Hut) against openTSNE's (FFT-accelerated), timed in the same process
on the same data, at equal quality. Each gets one thread (as the product's background job does) and is timed in CPU
seconds as well as wall seconds: on a machine shared with other work, CPU time is what the code costs.

Quality is measured on structure neither method was given: on ``EVAL`` points picked at random, the share of each
one's 10 nearest neighbours in the embedding space that are still among its 10 nearest on the map (kNN
preservation, neighbours among all N points), scikit-learn's trustworthiness (k = 10) among a 2,000-point sample,
and the 10-NN label vote of those points on the map (the labels never reach t-SNE). The data is a mixture of 100
overlapping classes in 128-D (``bench.common.mixture``, spread 1.2: as hard as real embeddings).

python -m bench.bench_projection [--quick] [--tsne 10000 100000] [--full-sklearn]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from bench.common import mixture, peak_rss_mb, table
from embedder.maps.plots import Colouring, embedding_map
from embedder.maps.project import place_rest, project
from embedder.search.knn import topk

FULL = {"pca": 100_000, "umap": 10_000, "tsne": 10_000}
QUICK = {"pca": 10_000, "umap": 1_000, "tsne": 1_000}
EVAL, TRUST_SAMPLE, K = 1_000, 2_000, 10
SAMPLE = 10_000  # above this, the product's way: fit a sample, place the rest at their neighbours' mean


def data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((100, 128), np.float32)
    return mixture(n, centres, 1.2, rng)


THREADS = 1  # as the product computes maps: one thread, beside a server that answers queries (--threads changes it)


def sklearn_tsne(x: np.ndarray, seed: int = 0) -> np.ndarray:
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    with threadpool_limits(THREADS):  # its Barnes-Hut gradient runs on OpenMP threads
        tsne = TSNE(perplexity=30.0, init="pca", random_state=seed, n_jobs=THREADS)
        return tsne.fit_transform(x).astype(np.float32)


def open_tsne(x: np.ndarray, seed: int = 0) -> np.ndarray:
    from openTSNE import TSNE
    from threadpoolctl import threadpool_limits

    with threadpool_limits(THREADS):
        tsne = TSNE(perplexity=30.0, initialization="pca", random_state=seed, n_jobs=THREADS)
        return np.asarray(tsne.fit(x), np.float32)


def sampled(fit):
    """``fit`` on a stratified SAMPLE of the points, the rest placed by their nearest sample points (the product's
    way above its fit cap)."""
    from embedder.images.data import stratified_sample

    def go(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
        rows = stratified_sample(labels, SAMPLE, seed=0)
        return place_rest(x, rows, fit(x[rows]))

    return go


def quality(x: np.ndarray, y: np.ndarray, labels: np.ndarray, seed: int = 0) -> dict[str, float]:
    """kNN preservation, trustworthiness and the map's 10-NN label vote on points picked at random (see the
    module docstring); no N x N matrix (streaming top-k)."""
    from sklearn.manifold import trustworthiness

    rng = np.random.default_rng(seed + 1)
    ev = rng.choice(len(x), min(EVAL, len(x)), replace=False)
    high, _ = topk(x[ev], x, K, exclude=ev)  # (E, K)
    low, _ = topk(y[ev], y, K, exclude=ev)
    shares = np.array([len(np.intersect1d(h, lo)) / K for h, lo in zip(high, low)])  # (E,)
    votes = np.array([np.bincount(labels[row]).argmax() for row in low])
    sub = rng.choice(len(x), min(TRUST_SAMPLE, len(x)), replace=False)
    trust = trustworthiness(x[sub], y[sub], n_neighbors=K)
    ci = 1.96 * shares.std(ddof=1) / np.sqrt(len(shares))  # a 95% interval of the mean over the E points
    return {
        "knn": float(shares.mean()),
        "knn_ci": float(ci),
        "trust": float(trust),
        "label": float(np.mean(votes == labels[ev])),
    }


def tsne_comparison(sizes: list[int], full_sklearn: bool = False, each=None) -> str:
    """Both t-SNEs at each size: fitted on every point up to SAMPLE; above it on a SAMPLE-point sample (the rest
    placed) and openTSNE on every point too (scikit-learn on every point only with ``full_sklearn``: hours).
    ``each(row)`` is called with every row as it is measured."""
    rows = []
    for n in sizes:
        x, labels = data(n)
        runs = [
            ("scikit-learn (Barnes-Hut)", sklearn_tsne),
            ("openTSNE (FFT from 10,000 points, else Barnes-Hut)", open_tsne),
        ]
        if n > SAMPLE:
            runs = [(f"{name}, {SAMPLE:,} fitted + rest placed", sampled(fn)) for name, fn in runs]
            runs.append((f"openTSNE (FFT), all {n:,} fitted", open_tsne))
            if full_sklearn:
                runs.append((f"scikit-learn (Barnes-Hut), all {n:,} fitted", sklearn_tsne))
        base = None
        for name, fn in runs:
            t0, c0 = time.perf_counter(), time.process_time()
            y = fn(x, labels) if n > SAMPLE and "placed" in name else fn(x)
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
            base = base or cpu
            q = quality(x, y, labels)
            rows.append(
                [f"{n:,}", name, f"{seconds:.1f}", f"{cpu:.1f}", f"{base / cpu:.2f}x"]
                + [f"{q['knn']:.3f} ± {q['knn_ci']:.3f}", f"{q['trust']:.3f}", f"{q['label']:.3f}"]
            )
            if each is not None:
                each(rows[-1])
        hd = quality(x, x, labels)["label"]
        rows.append([f"{n:,}", "(the 128-D embeddings themselves)", "", "", "", "1.000", "1.000", f"{hd:.3f}"])
    head = ["points", "t-SNE", "wall s", "CPU s", "speed (CPU) vs first row", "10-NN kept (95% CI)", "trustworthiness"]
    head.append("10-NN label")
    return table(head, rows)


def run(quick: bool, out: Path) -> str:
    sizes = QUICK if quick else FULL
    emb, labels = data(max(sizes.values()))
    rows, coords = [], {}
    for method, n in sizes.items():
        t0 = time.perf_counter()
        coords[method] = project(emb[:n], method).coords
        rows.append([method, f"{n:,}", f"{time.perf_counter() - t0:.1f}"])
    n_map = sizes["pca"]  # the map of every PCA point: what Explore sends at that size
    names = [f"class {c}" for c in labels[:n_map]]
    per_point = embedding_map(coords["pca"][:n_map], Colouring(names)).bytes_per_point()
    return "\n".join([
        "### Projection", "", table(["method", "points", "seconds"], rows), "",
        f"Plotly payload of the 2-D map (`embedding_map`, {n_map:,} points, {len(set(names)):,} labels): "
        f"**{per_point:.1f} bytes/point** (goal ≤ 16; `MapFigure.bytes_per_point()`: the JSON `st.plotly_chart` "
        f"sends, over the points). Peak RSS of this process so far: {peak_rss_mb():,.0f} MB.", "",
        "t-SNE, scikit-learn against openTSNE (2-D, perplexity 30, PCA start, each library's default schedule):", "",
        tsne_comparison([1_000] if quick else [10_000]),
    ])  # fmt: skip


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small sizes (CI)")
    ap.add_argument("--tsne", type=int, nargs="+", help="only the t-SNE comparison, at these sizes (e.g. 10000 100000)")
    ap.add_argument("--full-sklearn", action="store_true", help="also scikit-learn's t-SNE on every point above 10k")
    ap.add_argument("--threads", type=int, default=THREADS, help="threads each t-SNE may use (default 1)")
    args = ap.parse_args(argv)
    globals()["THREADS"] = args.threads
    if args.tsne:
        each = lambda row: print(" | ".join(row), f"(load {os.getloadavg()[0]:.1f})", flush=True)  # noqa: E731
        print(tsne_comparison(args.tsne, args.full_sklearn, each), flush=True)
        print(f"\nload average at the end: {' / '.join(f'{v:.1f}' for v in os.getloadavg())}")
        return
    print(run(args.quick, Path(".")))


if __name__ == "__main__":
    main()

"""Projections and the map's size: PCA at 100k, UMAP and t-SNE at 10k, Plotly payload bytes per point.

python -m bench.bench_projection [--quick]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from bench.common import mixture, peak_rss_mb, table
from embedder.maps.plots import embedding_map
from embedder.maps.project import project

FULL = {"pca": 100_000, "umap": 10_000, "tsne": 10_000}
QUICK = {"pca": 10_000, "umap": 1_000, "tsne": 1_000}


def run(quick: bool, out: Path) -> str:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((100, 128), np.float32)
    sizes = QUICK if quick else FULL
    emb, labels = mixture(max(sizes.values()), centres, 1.2, rng)
    rows, coords = [], {}
    for method, n in sizes.items():
        t0 = time.perf_counter()
        coords[method] = project(emb[:n], method).coords
        rows.append([method, f"{n:,}", f"{time.perf_counter() - t0:.1f}"])
    n_map = sizes["pca"]  # the map of every PCA point: what Explore sends at that size
    names = [f"class {c}" for c in labels[:n_map]]
    per_point = embedding_map(coords["pca"][:n_map], names).bytes_per_point()
    return "\n".join([
        "### Projection", "", table(["method", "points", "seconds"], rows), "",
        f"Plotly payload of the 2-D map (`embedding_map`, {n_map:,} points, {len(set(names)):,} labels): "
        f"**{per_point:.1f} bytes/point** (goal ≤ 16; `MapFigure.bytes_per_point()`: the JSON `st.plotly_chart` "
        f"sends, over the points). Peak RSS of this process so far: {peak_rss_mb():,.0f} MB.",
    ])  # fmt: skip


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small sizes (CI)")
    args = ap.parse_args(argv)
    print(run(args.quick, Path(".")))


if __name__ == "__main__":
    main()

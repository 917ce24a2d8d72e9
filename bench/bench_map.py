"""A million points on the Explore map: what each way of showing them sends to the browser and costs the server.

python -m bench.bench_map [--quick] [--datashader-only]

Measured on one map of N points (a 100-class overlapping mixture in 64-D, PCA to 2-D):
  (a) Plotly Scattergl with every point (the baseline), and with the stratified sample Explore draws (POINT_CAP);
  (b) a density image of all N points: numpy ``bincount`` + a palette PNG (``embedder/maps/density.py``), and datashader
      when it is installed (it is not a dependency: ``--datashader-only`` runs that part alone, e.g. in a venv that
      has it);
  (c) the ``embedding-atlas`` Streamlit component's payload: the component receives the DataFrame as Arrow IPC
      (what Streamlit sends for a component's data frame, measured with Streamlit's own serialiser);
and the chosen path (the sample, over the density image) per rerun, and a lasso/box over all N on the server.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from bench.common import mixture, peak_rss_mb, table

FULL, QUICK = 1_000_000, 100_000


def _timed(fn, repeats: int = 3):
    """(best seconds, result) of ``repeats`` calls: the best, since a pass slowed by another process says nothing."""
    best, out = np.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _map(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    emb, labels = mixture(n, rng.standard_normal((100, 64), np.float32), 1.2, rng)
    from embedder.maps.project import project

    return project(emb, "pca").coords, labels


def datashader_row(xy: np.ndarray) -> list | None:
    """[what, seconds, bytes] of a 512 x 512 datashader density PNG of all points, or None without datashader."""
    try:
        import datashader as ds
        import datashader.transfer_functions as tf
        import pandas as pd
    except ImportError:
        return None
    frame = pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1]})

    def image() -> bytes:
        agg = ds.Canvas(plot_width=512, plot_height=512).points(frame, "x", "y")
        return _png(tf.shade(agg, how="log"))

    image()  # numba compiles on the first call: not a rerun's cost
    seconds, png = _timed(image)
    return ["(b) datashader density PNG, all points", f"{seconds:.3f}", f"{len(png) / 1e6:.3f}"]


def _png(shaded) -> bytes:
    import io

    buf = io.BytesIO()
    shaded.to_pil().save(buf, format="PNG")
    return buf.getvalue()


def payload_rows(coords: np.ndarray, labels: np.ndarray, cap: int) -> tuple[list[list], float]:
    """Table rows for (a), (b), (c), and the chosen path's seconds per rerun."""
    import pandas as pd
    import plotly.io
    from streamlit.dataframe_util import convert_anything_to_arrow_bytes

    from embedder.images.data import stratified_sample
    from embedder.maps.density import density_png
    from embedder.maps.plots import GRID, Colouring, embedding_map, on_grid

    names = np.array([f"class {c}" for c in range(labels.max() + 1)])[labels]
    n, rows = len(coords), []

    def plotly_map(sample: bool, density: bool) -> int:
        keep = stratified_sample(labels, cap) if sample else np.arange(n)
        m = embedding_map(coords[keep], Colouring(names[keep]), keep, everything=coords if density else None)
        return len(plotly.io.to_json(m.figure, validate=False).encode())

    for what, sample, density in [
        (f"(a) Plotly Scattergl, all {n:,} points (baseline)", False, False),
        (f"(a) Plotly Scattergl, stratified sample of {min(cap, n):,}", True, False),
        (f"chosen: the sample over a density image of all {n:,}", True, True),
    ]:
        seconds, size = _timed(lambda s=sample, d=density: plotly_map(s, d), repeats=2)
        rows.append([what, f"{seconds:.3f}", f"{size / 1e6:.3f}"])
    chosen = seconds
    grid = on_grid(coords)[0]
    seconds, png = _timed(lambda: density_png(grid, GRID))
    rows.append(
        [f"(b) numpy density PNG (embedder/maps/density.py), all {n:,}", f"{seconds:.3f}", f"{len(png) / 1e6:.3f}"]
    )
    shaded = datashader_row(grid.astype(np.float32))
    rows.append(shaded or ["(b) datashader: not a dependency (`--datashader-only` in a venv that has it)", "–", "–"])
    frame = pd.DataFrame({"x": coords[:, 0], "y": coords[:, 1], "label": pd.Categorical(names)})
    seconds, arrow = _timed(lambda: convert_anything_to_arrow_bytes(frame))
    atlas = f"(c) embedding-atlas component: Arrow of x, y, label ({n:,})"
    rows.append([atlas, f"{seconds:.3f}", f"{len(arrow) / 1e6:.3f}"])
    return rows, chosen


def selection_rows(coords: np.ndarray, cap: int) -> list[list]:
    """A lasso (60 vertices) and a box over every point, from the outline in the chart's units to row ids, as
    ``ui.maps.selected_rows`` answers them; and the drawn-only answer Plotly gives (for the ratio)."""
    from embedder.images.data import stratified_sample
    from embedder.maps.plots import Colouring, embedding_map
    from embedder.maps.regions import rows_inside

    n = len(coords)
    keep = stratified_sample(np.zeros(n, int), cap)
    m = embedding_map(coords[keep], Colouring(np.zeros(len(keep), str)), keep, everything=coords)
    angle = np.linspace(0, 2 * np.pi, 60, endpoint=False)
    lasso = {"lasso": [{"x": list(30_000 + 8_000 * np.cos(angle)), "y": list(30_000 + 6_000 * np.sin(angle))}]}
    box = {"box": [{"x": [20_000, 40_000], "y": [20_000, 40_000]}]}
    out = []
    for what, selection in (("lasso, 60 vertices", lasso), ("box", box)):
        seconds, hit = _timed(lambda s=selection: rows_inside(m.to_grid(coords), s))
        drawn = len(np.intersect1d(hit, keep))
        out.append([what, f"{len(hit):,}", f"{drawn:,}", f"{1000 * seconds:.0f}"])
    return out


def chosen_memory(coords: np.ndarray, labels: np.ndarray, cap: int) -> int:
    """Peak bytes Python allocates (tracemalloc: numpy's arrays included) to build the chosen figure's JSON once."""
    import plotly.io

    from embedder.images.data import stratified_sample
    from embedder.maps.plots import Colouring, embedding_map

    tracemalloc.start()
    keep = stratified_sample(labels, cap)
    m = embedding_map(coords[keep], Colouring(labels[keep].astype(str)), keep, everything=coords)
    plotly.io.to_json(m.figure, validate=False)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def run(quick: bool, out=None) -> str:
    from ui.maps import POINT_CAP

    n = QUICK if quick else FULL
    coords, labels = _map(n)
    payload, chosen = payload_rows(coords, labels, POINT_CAP)
    traced = chosen_memory(coords, labels, POINT_CAP)
    select = selection_rows(coords, POINT_CAP)
    return "\n".join([
        f"### A million points on the map ({n:,} points, POINT_CAP {POINT_CAP:,})", "",
        "What the server builds per rerun and sends (`st.plotly_chart` sends the figure's JSON; best of 2-3):", "",
        table(["what", "server s", "payload MB"], payload), "",
        f"Chosen path: **{chosen:.2f} s per rerun** to build the sampled figure with its density image and its JSON; "
        f"peak Python allocations while building it {traced / 2**20:,.0f} MiB (tracemalloc, a separate pass); peak "
        f"RSS of this process {peak_rss_mb():,.0f} MB (includes the {n:,}-point mixture and its PCA).", "",
        f"A box or lasso over all {n:,} points, on the server (`ui.maps.selected_rows`: to the chart's grid, "
        "then `embedder.maps.regions`), against the drawn points Plotly alone would report:", "",
        table(["selection", "points inside (all)", "of them drawn", "ms"], select),
    ])  # fmt: skip


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="100,000 points instead of a million (CI)")
    ap.add_argument("--datashader-only", action="store_true", help="only the datashader row (numpy + datashader)")
    args = ap.parse_args(argv)
    if args.datashader_only:
        rng = np.random.default_rng(0)
        xy = mixture(QUICK if args.quick else FULL, rng.standard_normal((100, 2), np.float32), 1.2, rng)[0]
        print(datashader_row(xy) or "datashader is not installed")
        return
    print(run(args.quick))


if __name__ == "__main__":
    main()

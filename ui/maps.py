"""The embedding map as Explore and Query share it: the chosen projection, the point cap, query stars."""

from __future__ import annotations

import numpy as np
import streamlit as st

from embedder.data import stratified_sample
from embedder.errors import EmbedderError
from embedder.plots import embedding_map
from embedder.project import Projection
from embedder.run import Run

from . import cache

POINT_CAP = 50_000  # above this the browser gets sluggish even with WebGL; a stratified sample is drawn
METHODS = {"PCA": "pca", "t-SNE": "tsne", "UMAP": "umap"}
SETTINGS = "map_settings"  # session_state: (method, dims); a plain key, so it outlives Explore's widgets
WAIT = {
    "pca": "Projecting…",
    "tsne": "Running t-SNE (can take a minute)…",
    "umap": "Running UMAP (the first time loads numba: ~15 s)…",
}


def settings() -> tuple[str, int]:
    return st.session_state.get(SETTINGS, ("pca", 2))


def controls() -> tuple[str, int]:
    """Method and dimension pickers; the choice is remembered for the Query page's map."""
    method, dims = settings()
    names = list(METHODS)
    c1, c2 = st.columns([3, 1])
    label = c1.segmented_control(
        "Projection",
        names,
        default=names[list(METHODS.values()).index(method)],
        key="map_method",
        help="PCA is instant; t-SNE and UMAP show local clusters better",
    )
    shape = c2.segmented_control("View", ["2D", "3D"], default=f"{dims}D", key="map_dims")
    chosen = (METHODS[label or "PCA"], int((shape or "2D")[0]))
    st.session_state[SETTINGS] = chosen
    return chosen


def projection(run: Run, method: str, dims: int) -> Projection | None:
    try:
        with st.spinner(WAIT[method]):
            return cache.get_projection(run.path, method, dims)
    except EmbedderError as exc:
        st.error(str(exc))
        return None


def sample_rows(run: Run, rows: np.ndarray) -> np.ndarray:
    if len(rows) > POINT_CAP:
        keep = rows[stratified_sample(run.gallery_labels[rows], POINT_CAP)]
        st.caption(f"Showing {len(keep):,} of {len(rows):,} points (a sample that keeps every label's share).")
        return keep
    return rows


def query_map(run: Run, embeddings: np.ndarray, names: list[str], neighbor_idx: np.ndarray) -> None:
    """The current map with the queries as stars (t-SNE cannot place new points: at their neighbours' mean)."""
    method, dims = settings()
    proj = projection(run, method, dims)
    if proj is None:
        return
    rows = sample_rows(run, np.arange(len(run.gallery_paths)))
    fig = embedding_map(
        proj.coords[rows],
        run.label_names(run.gallery_labels[rows]),
        row_ids=rows,
        hover=[run.gallery_paths[i] for i in rows],
        query_coords=proj.place(embeddings, neighbor_idx),
        query_names=names,
        height=520,
    )
    st.plotly_chart(fig, key="query-map")
    st.caption(
        f"{method.upper() if method != 'tsne' else 't-SNE'} {dims}D map — change it on the Explore page."
        + (" t-SNE cannot place new points, so each star sits at its neighbours' mean." if method == "tsne" else "")
    )

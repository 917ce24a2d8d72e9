"""2-D / 3-D maps of embeddings: PCA, t-SNE (scikit-learn), UMAP (umap-learn, imported lazily: ~12 s)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import EmbedderError

METHODS = ("pca", "tsne", "umap")


@dataclass
class Projection:
    method: str
    coords: np.ndarray  # (N, dims) float32
    model: Any = None  # the fitted PCA / UMAP, used to place new points; None for t-SNE

    def place(self, embeddings: np.ndarray, neighbor_idx: np.ndarray | None = None) -> np.ndarray:
        """Map new embeddings (Q, D) onto this map. t-SNE cannot transform new points, so a query is
        placed at the mean position of its gallery neighbours ``neighbor_idx`` (Q, k)."""
        if self.model is not None:
            return np.asarray(self.model.transform(embeddings), dtype=np.float32)
        if neighbor_idx is None:
            raise ValueError("t-SNE maps place new points by their neighbours: pass neighbor_idx")
        return self.coords[neighbor_idx].mean(axis=1)


def project(
    embeddings: np.ndarray,
    method: str = "pca",
    dims: int = 2,
    seed: int = 0,
    perplexity: float = 30.0,
    n_neighbors: int = 15,
) -> Projection:
    """(N, D) embeddings -> a ``dims``-dimensional map. Same input and seed -> same coordinates."""
    if method not in METHODS:
        raise EmbedderError(f"unknown projection '{method}': choose one of {', '.join(METHODS)}")
    if dims not in (2, 3):
        raise EmbedderError("--dims must be 2 or 3")
    n = len(embeddings)
    if n < dims + 2:
        raise EmbedderError(f"need at least {dims + 2} embeddings to draw a map, got {n}")
    x = np.asarray(embeddings, dtype=np.float32)
    if method == "pca":
        from sklearn.decomposition import PCA

        model = PCA(n_components=dims, random_state=seed).fit(x)
        return Projection(method, model.transform(x).astype(np.float32), model)
    if method == "tsne":
        from sklearn.manifold import TSNE

        tsne = TSNE(n_components=dims, perplexity=min(perplexity, (n - 1) / 3), random_state=seed, init="pca")
        return Projection(method, tsne.fit_transform(x).astype(np.float32), None)
    import umap  # lazy: importing numba costs seconds

    reducer = umap.UMAP(n_components=dims, n_neighbors=min(n_neighbors, n - 1), random_state=seed, metric="euclidean")
    return Projection(method, reducer.fit_transform(x).astype(np.float32), reducer)

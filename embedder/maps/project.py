"""2-D / 3-D maps of embeddings: PCA, t-SNE (scikit-learn), UMAP (umap-learn, imported lazily: ~12 s).

Big galleries: t-SNE and UMAP are fitted on a stratified sample of FIT_CAP points and every other point is placed
at the mean position of its PLACE_K nearest sample points (streaming top-k), so a 100,000-image map costs a
10,000-point fit. PCA is fitted on everything (seconds at a million).

Maps of a run are cached in the run folder (``projections/``, see ``cached_project``), keyed by method, dims,
seed and a fingerprint of the gallery embeddings: a gallery that grows or changes gets a new map.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EmbedderError

METHODS = ("pca", "tsne", "umap")
FIT_CAP = 10_000  # t-SNE / UMAP fit on at most this many points; the rest are placed by their nearest sample points
PLACE_K = 5  # sample points whose mean position places a point outside the fitted sample (and a t-SNE query)
CACHE_DIR = "projections"  # inside a run folder
CACHE_KEEP = 12  # cached maps kept per run (oldest removed first): each is N x dims float32


@dataclass
class Projection:
    method: str
    coords: np.ndarray  # (N, dims) float32
    model: Any = None  # the fitted PCA / UMAP, used to place new points; None for t-SNE and for a cached UMAP
    fitted_on: int = 0  # how many points the fit saw (fewer than N: the rest were placed by their neighbours)
    linear: tuple[np.ndarray, np.ndarray] | None = None  # PCA as (mean (D,), components (dims, D)): cacheable

    def place(self, embeddings: np.ndarray, neighbor_idx: np.ndarray | None = None) -> np.ndarray:
        """Map new embeddings (Q, D) onto this map. PCA and a fitted UMAP transform them; otherwise (t-SNE, a map
        read from the cache) a query goes to the mean position of its gallery neighbours ``neighbor_idx`` (Q, k)."""
        if self.linear is not None:
            mean, components = self.linear
            return ((np.asarray(embeddings, dtype=np.float32) - mean) @ components.T).astype(np.float32)
        if self.model is not None:
            return np.asarray(self.model.transform(embeddings), dtype=np.float32)
        if neighbor_idx is None:
            raise ValueError(f"{self.method} maps place new points by their neighbours: pass neighbor_idx")
        return self.coords[neighbor_idx].mean(axis=1)

    @property
    def sampled(self) -> bool:
        return 0 < self.fitted_on < len(self.coords)


def project(
    embeddings: np.ndarray,
    method: str = "pca",
    dims: int = 2,
    seed: int = 0,
    perplexity: float = 30.0,
    n_neighbors: int = 15,
    labels: np.ndarray | None = None,
    fit_cap: int = FIT_CAP,
) -> Projection:
    """(N, D) embeddings -> a ``dims``-dimensional map. Same input and seed -> same coordinates.

    t-SNE and UMAP above ``fit_cap`` points fit a sample that keeps every label's share (``labels`` (N,)) and
    place the rest by their PLACE_K nearest sample points."""
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
        linear = (model.mean_.astype(np.float32), model.components_.astype(np.float32))
        return Projection(method, model.transform(x).astype(np.float32), model, n, linear)
    from ..images.data import stratified_sample

    sample = stratified_sample(np.zeros(n) if labels is None else labels, fit_cap, seed=seed)
    coords, model = _fit_nonlinear(x[sample], method, dims, seed, perplexity, n_neighbors)
    if len(sample) == n:
        return Projection(method, coords, model, n)
    return Projection(method, _place_rest(x, sample, coords), None, len(sample))


def _fit_nonlinear(x: np.ndarray, method: str, dims: int, seed: int, perplexity: float, n_neighbors: int):
    n = len(x)
    if method == "tsne":
        from sklearn.manifold import TSNE

        tsne = TSNE(n_components=dims, perplexity=min(perplexity, (n - 1) / 3), random_state=seed, init="pca")
        return tsne.fit_transform(x).astype(np.float32), None
    import umap  # lazy: importing numba costs seconds

    reducer = umap.UMAP(n_components=dims, n_neighbors=min(n_neighbors, n - 1), random_state=seed, metric="euclidean")
    return reducer.fit_transform(x).astype(np.float32), reducer


def _place_rest(x: np.ndarray, sample: np.ndarray, sample_coords: np.ndarray) -> np.ndarray:
    """(N, dims): the sample where it was fitted, every other point at its PLACE_K nearest sample points' mean."""
    from ..search.knn import topk

    coords = np.empty((len(x), sample_coords.shape[1]), dtype=np.float32)
    coords[sample] = sample_coords
    rest = np.setdiff1d(np.arange(len(x)), sample)
    idx, _ = topk(x[rest], x[sample], PLACE_K)  # (R, k) positions in the sample
    coords[rest] = sample_coords[idx].mean(axis=1)
    return coords


def fingerprint(embeddings: np.ndarray) -> str:
    """A short hash of the gallery embeddings: a cached map is only reused for the very same gallery."""
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    return hashlib.sha256(np.array(x.shape, dtype=np.int64).tobytes() + x.tobytes()).hexdigest()[:16]


def cached_project(
    run_dir: str | os.PathLike,
    embeddings: np.ndarray,
    method: str,
    dims: int,
    seed: int = 0,
    labels: np.ndarray | None = None,
    tag: str = "",
) -> Projection:
    """``project`` through a cache in ``run_dir/projections/``, written only when ``run_dir`` is a run bundle
    (and silently skipped where it cannot be written). Files are .npz read with allow_pickle=False; at most
    CACHE_KEEP are kept. ``tag`` tells apart maps of other embeddings of the same run (e.g. "before")."""
    from ..runs.bundle import is_run

    folder = Path(run_dir) / CACHE_DIR
    name = f"{tag + '-' if tag else ''}{method}-{dims}d-s{seed}-f{FIT_CAP}-{fingerprint(embeddings)}.npz"
    hit = _read_cached(folder / name, len(embeddings), dims, method)
    if hit is not None:
        return hit
    proj = project(embeddings, method, dims, seed=seed, labels=labels)
    if is_run(run_dir):
        arrays = {"coords": proj.coords, "fitted_on": np.array(proj.fitted_on)}
        if proj.linear is not None:
            arrays.update(mean=proj.linear[0], components=proj.linear[1])
        _write_cached(folder, name, arrays)
    return proj


def cached_array(
    run_dir: str | os.PathLike, name: str, compute: Callable[[], np.ndarray], shape: tuple[int | None, ...]
) -> np.ndarray:
    """``compute()``, cached as ``run_dir/projections/<name>.npz`` like the maps (only in a run, never unpickled,
    at most CACHE_KEEP files); a cached array whose shape does not fit ``shape`` (None: any size) is recomputed."""
    from ..runs.bundle import is_run

    folder, file = Path(run_dir) / CACHE_DIR, f"{name}.npz"
    try:
        with np.load(folder / file, allow_pickle=False) as npz:
            value = npz["value"]
        if value.ndim == len(shape) and all(w is None or w == g for w, g in zip(shape, value.shape)):
            return value
    except (OSError, ValueError, KeyError, EOFError):
        pass  # missing or unreadable: compute it again
    value = compute()
    if is_run(run_dir):
        _write_cached(folder, file, {"value": value})
    return value


def _read_cached(path: Path, n: int, dims: int, method: str) -> Projection | None:
    try:
        with np.load(path, allow_pickle=False) as npz:
            coords, fitted_on = npz["coords"], int(npz["fitted_on"])
            linear = (npz["mean"], npz["components"]) if "mean" in npz else None
    except (OSError, ValueError, KeyError, EOFError):
        return None  # missing or unreadable: compute it again
    if coords.shape != (n, dims) or coords.dtype != np.float32 or not np.isfinite(coords).all():
        return None
    return Projection(method, coords, None, fitted_on, linear)


def _write_cached(folder: Path, name: str, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` as ``folder/name`` atomically, then drop the oldest files beyond CACHE_KEEP."""
    tmp = None
    try:
        folder.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, folder / name)  # readers see the whole file or none
        tmp = None
        for p in sorted(folder.glob("*.npz"), key=lambda p: p.stat().st_mtime)[:-CACHE_KEEP]:
            p.unlink(missing_ok=True)
    except OSError:
        pass  # a read-only run still gets its map, just not cached
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)

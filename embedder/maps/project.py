"""2-D / 3-D maps of embeddings: PCA (scikit-learn), t-SNE (openTSNE: FFT-accelerated in 2-D, faster than
scikit-learn's Barnes-Hut at equal quality, see BENCHMARKS.md "Projection"), UMAP (umap-learn, imported lazily: ~12 s).

Big galleries: t-SNE and UMAP are fitted on a stratified sample of FIT_CAP points and every other point is placed
at the mean position of its PLACE_K nearest sample points (streaming top-k), so a 100,000-image map costs a
10,000-point fit. PCA is fitted on everything (seconds at a million).

Maps of a run are cached in the run folder (``projections/``, see ``cached_project``), keyed by method, dims,
seed and a fingerprint of the gallery embeddings: a gallery that grows or changes gets a new map. They are written
under the run's write lock (runs/lock.py) and only into the run they were computed from: a run swapped in meanwhile
(``run_version`` changed) gets nothing (maps/precompute.py computes its own).
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
from ..runs.bundle_read import run_version

METHODS = ("pca", "tsne", "umap")
FIT_CAP = 10_000  # t-SNE / UMAP fit on at most this many points; the rest are placed by their nearest sample points
PLACE_K = 5  # sample points whose mean position places a point outside the fitted sample (and a t-SNE query)
CACHE_DIR = "projections"  # inside a run folder
CACHE_KEEP = 24  # cached files kept per run (oldest removed first): the standard set (precompute.py) is 14
LOCK_WAIT = 5.0  # seconds a map waits for another writer of the run before it is left unstored
TSNE_TICK = 25  # t-SNE iterations between progress reports (each one may stop it)
Tick = Callable[[float], None]  # called with the share of a fit done (0..1); raising stops the fit


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
    tick: Tick | None = None,
) -> Projection:
    """(N, D) embeddings -> a ``dims``-dimensional map. Same input and seed -> same coordinates.

    t-SNE and UMAP above ``fit_cap`` points fit a sample that keeps every label's share (``labels`` (N,)) and
    place the rest by their PLACE_K nearest sample points. ``tick(share done)`` is called as a t-SNE fit goes on
    (every TSNE_TICK iterations); an exception it raises (e.g. ``Cancelled``) stops the fit and comes out here."""
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
    if method == "tsne":
        coords, model = tsne(x[sample], dims, seed, perplexity, tick), None
    else:
        coords, model = _umap(x[sample], dims, seed, n_neighbors)
    if len(sample) == n:
        return Projection(method, coords, model, n)
    return Projection(method, place_rest(x, sample, coords), None, len(sample))


def tsne(x: np.ndarray, dims: int, seed: int, perplexity: float = 30.0, tick: Tick | None = None) -> np.ndarray:
    """(n, D) -> (n, dims) float32 by openTSNE: PCA start, its default schedule (250 early-exaggeration iterations,
    then 500), its own choice of gradient: FFT-accelerated from 10,000 points in 2-D, Barnes-Hut below (the FFT's
    fixed grid costs more there) and in 3-D (its FFT has at most 2 dimensions). One thread: a map is computed
    beside a server that answers queries."""
    from openTSNE import TSNE

    iterations = 250 + 500
    calls = [0]

    def report(*_) -> bool:
        calls[0] += 1
        if tick is not None:
            tick(min(1.0, calls[0] * TSNE_TICK / iterations))
        return False  # go on

    fit = TSNE(
        n_components=dims,
        perplexity=min(perplexity, (len(x) - 1) / 3),
        initialization="pca",
        random_state=seed,
        negative_gradient_method="auto" if dims <= 2 else "bh",
        n_jobs=1,
        callbacks=report,
        callbacks_every_iters=TSNE_TICK,
    )
    return np.asarray(fit.fit(x), dtype=np.float32)


def _umap(x: np.ndarray, dims: int, seed: int, n_neighbors: int):
    import umap  # lazy: importing numba costs seconds

    reducer = umap.UMAP(
        n_components=dims, n_neighbors=min(n_neighbors, len(x) - 1), random_state=seed, metric="euclidean"
    )
    return reducer.fit_transform(x).astype(np.float32), reducer


def place_rest(x: np.ndarray, sample: np.ndarray, sample_coords: np.ndarray) -> np.ndarray:
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


def map_file(method: str, dims: int, fp: str, seed: int = 0, tag: str = "") -> str:
    """The file name of a stored map: method, dims, seed, fit cap and the embeddings' ``fingerprint`` ``fp``;
    ``tag`` tells apart maps of other embeddings of the same run (e.g. "before-pretrained")."""
    return f"{tag + '-' if tag else ''}{method}-{dims}d-s{seed}-f{FIT_CAP}-{fp}.npz"


def stored_projection(run_dir: str | os.PathLike, n: int, file: str, method: str, dims: int) -> Projection | None:
    """The map stored as ``run_dir/projections/<file>`` (``map_file``) for ``n`` points, or None when it is not
    there yet (or unreadable: it is computed again). Milliseconds: nothing is fitted."""
    return _read_cached(Path(run_dir) / CACHE_DIR / file, n, dims, method)


@dataclass(frozen=True)
class MapKey:
    """Which of a run's maps: what ``map_file`` names it by, beside the embeddings' fingerprint."""

    method: str  # one of METHODS
    dims: int  # 2 or 3
    seed: int = 0
    tag: str = ""  # tells apart maps of other embeddings of the same run (e.g. "before-pretrained")


def cached_project(
    run_dir: str | os.PathLike,
    embeddings: np.ndarray,
    key: MapKey,
    labels: np.ndarray | None = None,
    *,
    tick: Tick | None = None,
    version: str | None = None,
) -> Projection:
    """``project`` through a cache in ``run_dir/projections/``, written only when ``run_dir`` is a run bundle
    that is still the one of ``version`` (``run_version``, read now when None: the run the embeddings came from),
    and silently skipped where it cannot be written. Files are .npz read with allow_pickle=False; at most
    CACHE_KEEP are kept. ``tick``: see ``project``."""
    method, dims = key.method, key.dims
    version = run_version(run_dir) if version is None else version
    name = map_file(method, dims, fingerprint(embeddings), key.seed, key.tag)
    hit = stored_projection(run_dir, len(embeddings), name, method, dims)
    if hit is not None:
        return hit
    proj = project(embeddings, method, dims, seed=key.seed, labels=labels, tick=tick)
    arrays = {"coords": proj.coords, "fitted_on": np.array(proj.fitted_on)}
    if proj.linear is not None:
        arrays.update(mean=proj.linear[0], components=proj.linear[1])
    _write_cached(run_dir, name, arrays, version)
    return proj


def cached_array(
    run_dir: str | os.PathLike,
    name: str,
    compute: Callable[[], np.ndarray],
    shape: tuple[int | None, ...],
    version: str | None = None,
) -> np.ndarray:
    """``compute()``, cached as ``run_dir/projections/<name>.npz`` like the maps (only in the run of ``version``,
    never unpickled, at most CACHE_KEEP files); a cached array whose shape does not fit ``shape`` (None: any
    size) is recomputed."""
    version = run_version(run_dir) if version is None else version
    value = stored_array(run_dir, name, shape)
    if value is not None:
        return value
    value = compute()
    _write_cached(run_dir, f"{name}.npz", {"value": value}, version)
    return value


def stored_array(run_dir: str | os.PathLike, name: str, shape: tuple[int | None, ...]) -> np.ndarray | None:
    """The array ``cached_array`` stored as ``name``, or None when it is missing, unreadable or of another shape."""
    try:
        with np.load(Path(run_dir) / CACHE_DIR / f"{name}.npz", allow_pickle=False) as npz:
            value = npz["value"]
    except (OSError, ValueError, KeyError, EOFError):
        return None  # missing or unreadable: compute it again
    if value.ndim == len(shape) and all(w is None or w == g for w, g in zip(shape, value.shape)):
        return value
    return None


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


def _write_cached(run_dir: str | os.PathLike, name: str, arrays: dict[str, np.ndarray], version: str | None) -> bool:
    """Write ``arrays`` as ``run_dir/projections/name`` atomically, holding the run's write lock, and only while
    the run is still the one of ``version``; then drop the oldest files beyond CACHE_KEEP. False when nothing was
    written: not a run, another writer holds it past LOCK_WAIT, the run changed, or it cannot be written."""
    from ..runs.lock import writing

    if version is None:
        return False
    folder, tmp = Path(run_dir) / CACHE_DIR, None
    try:
        with writing(run_dir, wait=LOCK_WAIT):
            if run_version(run_dir) != version:
                return False  # a writer swapped in another run meanwhile: these maps are not of it
            folder.mkdir(exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".", suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, folder / name)  # readers see the whole file or none
            tmp = None
            for p in sorted(folder.glob("*.npz"), key=lambda p: p.stat().st_mtime)[:-CACHE_KEEP]:
                p.unlink(missing_ok=True)
        return True
    except (OSError, EmbedderError):
        return False  # a read-only or busy run still gets its map, just not stored
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)

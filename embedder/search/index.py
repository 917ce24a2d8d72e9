"""The gallery's neighbour search: Annoy or exact, whichever measured better for this gallery; save, load, query.

Annoy only pays where its recall is cheap: on well-separated or large galleries. On overlapping embeddings it has
to visit most of the gallery to reach its recall target, and one float32 matrix-vector product (exact search) is
faster and never wrong. ``build_index`` times both on held-out probes and records the choice in the run.
"""

from __future__ import annotations

import shutil
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from annoy import AnnoyIndex

from ..config import IndexConfig
from ..errors import EmbedderError
from .knn import as_float32, squared_norms, topk
from .shards import BROKEN_ANNOY, ShardedAnnoy, build_shards, fill_annoy, load_shards, open_annoy

METHODS = ("auto", "exact", "annoy")
TIMED_PROBES = 100  # probes timed one at a time for each method
TIMING_REPEATS = 3


@dataclass
class GalleryIndex:
    """An Annoy ``angular`` index (for unit vectors its distance sqrt(2 - 2cos) is exactly their L2 distance), or
    one per shard of a large gallery (``ShardedAnnoy``, answering with gallery-wide rows), and the gallery itself
    for the galleries that are answered exactly (``method == "exact"``)."""

    annoy: AnnoyIndex | ShardedAnnoy
    dim: int
    size: int
    n_trees: int
    search_k: int
    recall_at_10: float  # recall@10 queries get: 1.0 when answered exactly
    method: str = "annoy"
    gallery: np.ndarray | None = field(default=None, repr=False)  # (N, D) float32, for exact answers
    measured: dict = field(default_factory=dict)  # annoy_recall_at_10, annoy_ms, exact_ms, probes, probe_kind
    disk_file: Path | None = None  # where an on-disk build lives (a temporary file the index owns)
    _norms: np.ndarray | None = field(default=None, repr=False)

    def query(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(Q, D) -> indices (Q, k') and distances (Q, k'), k' = min(k, size), nearest first."""
        if self.method == "exact":
            return self._exact(vectors, k)
        return self._annoy(vectors, k)

    def _exact(self, vectors: np.ndarray, k: int, exclude: np.ndarray | None = None):
        if self._norms is None:
            self._norms = squared_norms(self.gallery)
        return topk(vectors, self.gallery, k, exclude=exclude, gallery_norms=self._norms)

    def _annoy(self, vectors: np.ndarray, k: int, search_k: int | None = None):
        k = min(k, self.size)
        idx = np.zeros((len(vectors), k), dtype=np.int64)
        dist = np.zeros((len(vectors), k), dtype=np.float32)
        search_k = search_k or self.search_k
        for i, v in enumerate(vectors):
            items, ds = self.annoy.get_nns_by_vector(v.tolist(), k, search_k=search_k, include_distances=True)
            if len(items) != k:
                raise EmbedderError(BROKEN_ANNOY.format(got=len(items), want=k))
            idx[i], dist[i] = items, ds
        return idx, dist

    def neighbors_of(self, row: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest gallery items of gallery item ``row``, itself left out: indices (k',), distances (k',)."""
        if self.method == "exact":
            idx, dist = self._exact(self.gallery[row : row + 1], k, exclude=np.array([row]))
            return idx[0], dist[0]
        items, ds = self.annoy.get_nns_by_item(
            int(row), min(k + 1, self.size), search_k=self.search_k, include_distances=True
        )
        pairs = [(i, d) for i, d in zip(items, ds) if i != row][:k]
        return np.array([i for i, _ in pairs], dtype=np.int64), np.array([d for _, d in pairs], dtype=np.float32)

    @property
    def shards(self) -> list[dict] | None:
        """Each shard's file and gallery rows when the index is sharded (``ShardedAnnoy.ranges``), else None."""
        return self.annoy.ranges() if isinstance(self.annoy, ShardedAnnoy) else None

    def save(self, path: Path) -> None:
        """The single Annoy file to ``path`` (a sharded index is written by ``save_into``)."""
        if self.shards is not None:
            raise EmbedderError("a sharded index is several files: write it into a folder with save_into")
        if self.disk_file is not None:  # built in a file: Annoy's save() would do nothing
            shutil.copyfile(self.disk_file, path)
        else:
            self.annoy.save(str(path))

    def save_into(self, folder: Path) -> list[str]:
        """The index's files into ``folder``: ``index.ann``, or ``index-<n>.ann`` per shard. Returns their names."""
        if self.shards is not None:
            return self.annoy.save_into(folder)
        self.save(folder / "index.ann")
        return ["index.ann"]

    def stats(self) -> dict:
        shards = {"shards": self.shards} if self.shards is not None else {}
        return {
            "n_trees": self.n_trees,
            "search_k": self.search_k,
            "recall_at_10": self.recall_at_10,
            "size": self.size,
            "method": self.method,
            **self.measured,
            **shards,
        }

    def describe(self) -> str:
        """One line for a person: how queries are answered, and the measurement that chose it."""
        return describe(self.stats())


def describe(stats: dict) -> str:
    """The index choice of a run's stats (``GalleryIndex.stats``) in one line; runs from before it say less."""
    n = f"{stats.get('size', 0):,} images" + (f" in {len(stats['shards'])} shards" if stats.get("shards") else "")
    if stats.get("exact_ms") is None:
        return f"Annoy index over {n}: {stats.get('n_trees')} trees, recall@10 {stats.get('recall_at_10', 0):.3f}."
    exact, annoy = stats["exact_ms"], stats["annoy_ms"]
    measured = (
        f"exact {exact:.2f} ms/query, Annoy {annoy:.2f} ms at recall@10 {stats['annoy_recall_at_10']:.3f} "
        f"({stats['probes']} probes, {stats['probe_kind']})"
    )
    if stats.get("method") == "exact":
        return f"Exact search for {n}: the Annoy index was not clearly faster at its recall target — {measured}."
    return f"Annoy index for {n}: {exact / annoy:.1f}x faster than exact search — {measured}."


def _probes(embeddings: np.ndarray, probes: np.ndarray | None, config: IndexConfig):
    """(probe vectors (P, D), the gallery row each must not find or None, what they are)."""
    rng = np.random.default_rng(config.seed)
    if probes is None or len(probes) == 0:
        skip = np.sort(rng.choice(len(embeddings), size=min(config.recall_sample, len(embeddings)), replace=False))
        return as_float32(embeddings[skip]), skip, "gallery, self excluded"
    if len(probes) > config.recall_sample:
        probes = probes[np.sort(rng.choice(len(probes), size=config.recall_sample, replace=False))]
    return as_float32(probes), None, "held-out"


def _annoy_recall(annoy: AnnoyIndex, probes, truth, search_k: int, skip) -> float:
    """Annoy's recall@k against ``truth`` (P, k), a probe at a time. A probe that is a gallery item (``skip``) is
    not its own answer (finding itself would flatter the recall)."""
    k, hits = truth.shape[1], 0
    for i, v in enumerate(probes):
        got = annoy.get_nns_by_vector(v.tolist(), k + (skip is not None), search_k=search_k)
        if skip is not None:
            got = [j for j in got if j != skip[i]][:k]
        hits += len(set(got) & set(truth[i].tolist()))
    return hits / truth.size


def _best_ms(search, probes: np.ndarray) -> float:
    """``search`` of one (D,) probe, timed on ``TIMED_PROBES`` probes one at a time as queries come: ms per query,
    the best of ``TIMING_REPEATS`` passes (a pass slowed by another process says nothing about the search)."""
    sample, best = probes[:TIMED_PROBES], np.inf
    for _ in range(TIMING_REPEATS):
        t0 = time.perf_counter()
        for v in sample:
            search(v)
        best = min(best, 1000 * (time.perf_counter() - t0) / len(sample))
    return float(best)


def _tune_annoy(annoy, probes, truth, skip, config: IndexConfig, n: int, give_up_ms: float) -> tuple[int, float, float]:
    """Raise ``search_k`` until Annoy's recall reaches the target, search is exhaustive, or Annoy is slower than
    ``give_up_ms`` (more search_k only costs more): (search_k, recall, ms per query)."""
    exhaustive = n * config.n_trees  # far beyond this Annoy is already visiting every item
    k = truth.shape[1] + (skip is not None)
    search_k = max(truth.shape[1] * config.n_trees, 100)
    while True:
        recall = _annoy_recall(annoy, probes, truth, search_k, skip)
        ms = _best_ms(lambda v, s=search_k: annoy.get_nns_by_vector(v.tolist(), k, search_k=s), probes)
        if recall >= config.target_recall or search_k >= exhaustive or ms > give_up_ms:
            return int(search_k), float(recall), ms
        search_k = min(search_k * 2, exhaustive)


def _check(config: IndexConfig, n: int) -> None:
    if config.method not in METHODS:
        raise EmbedderError(f"index method must be one of {', '.join(METHODS)}, not {config.method!r}")
    if n == 0:
        raise EmbedderError("cannot build an index over an empty gallery")
    if config.shard_items < 1:
        raise EmbedderError(f"shard_items must be at least 1, not {config.shard_items}")


def _fill(embeddings: np.ndarray, config: IndexConfig, previous: GalleryIndex | None, progress):
    """The Annoy index (one, or one per ``config.shard_items`` rows) and the temporary file of a one-file build
    in a file (from ``config.on_disk_items`` rows on)."""
    n = len(embeddings)
    if n > config.shard_items:
        return build_shards(embeddings, config, previous.annoy if previous else None, progress), None
    return fill_annoy(embeddings, config.n_trees, config.seed, n >= config.on_disk_items)


def build_index(
    embeddings: np.ndarray,
    config: IndexConfig | None = None,
    probes: np.ndarray | None = None,
    previous: GalleryIndex | None = None,
    progress=None,
) -> GalleryIndex:
    """Build the Annoy index over (N, D) unit vectors, tune it, and choose how queries will be answered.

    ``search_k`` is raised until recall@10 against exact search reaches ``config.target_recall``; both Annoy and
    exact search are timed one probe at a time. With ``config.method == "auto"`` Annoy answers queries only when it
    reached the target and is ``config.min_speedup`` times faster; otherwise queries are answered exactly. The
    Annoy file is written either way (the run bundle holds it; the next, larger gallery may choose it).

    Recall is measured on ``probes`` (Q, D) — images that are not in the gallery, as real queries are — or,
    without them, on a sample of gallery items each looking for its neighbours other than itself.

    A gallery of more than ``config.shard_items`` rows is indexed in shards (``index_shards.build_shards``), and
    the full shards of ``previous`` (the index of the gallery before it grew) are kept; ``progress(built,
    to build)`` follows the Annoy files being built.
    """
    config = config or IndexConfig()
    n, dim = embeddings.shape
    _check(config, n)
    annoy, disk_file = _fill(embeddings, config, previous, progress)
    gallery = as_float32(embeddings)
    norms = squared_norms(gallery)
    probes, skip, kind = _probes(embeddings, probes, config)
    truth, _ = topk(probes, gallery, 10, exclude=skip, gallery_norms=norms)
    if truth.shape[1] == 0:  # a gallery of one image: nothing to miss, nothing to time
        search_k, annoy_recall, annoy_ms, exact_ms = n * config.n_trees, 1.0, 0.0, 0.0
    else:
        k = truth.shape[1]
        exact_ms = _best_ms(lambda v: topk(v[None], gallery, k, gallery_norms=norms), probes)
        forced = config.method == "annoy" or config.min_speedup <= 0
        give_up = np.inf if forced else exact_ms / config.min_speedup
        search_k, annoy_recall, annoy_ms = _tune_annoy(annoy, probes, truth, skip, config, n, give_up)
    annoy_wins = annoy_recall >= config.target_recall and annoy_ms * config.min_speedup <= exact_ms
    method = "annoy" if config.method == "annoy" or (config.method == "auto" and annoy_wins) else "exact"
    measured = {
        "annoy_recall_at_10": round(annoy_recall, 4),
        "annoy_ms": round(annoy_ms, 4),
        "exact_ms": round(exact_ms, 4),
        "probes": len(probes),
        "probe_kind": kind,
    }
    recall = 1.0 if method == "exact" else annoy_recall
    index = GalleryIndex(
        annoy, dim, n, config.n_trees, search_k, recall, method, gallery if method == "exact" else None, measured
    )
    index._norms = norms if method == "exact" else None
    if disk_file is not None:
        index.disk_file = disk_file
        weakref.finalize(index, disk_file.unlink, missing_ok=True)
    return index


MEASURED = ("annoy_recall_at_10", "annoy_ms", "exact_ms", "probes", "probe_kind")


def load_index(path: Path, embeddings: np.ndarray, stats: dict) -> GalleryIndex:
    """Open a saved one-file index over ``embeddings`` (N, D), memory-mapped and checked against them
    (``index_shards.open_annoy``).

    Raises:
        EmbedderError: the file is not an Annoy index of these embeddings (one line, without the path).
    """
    return _loaded(open_annoy(path, embeddings), embeddings, stats)


def open_index(folder: Path, embeddings: np.ndarray, stats: dict) -> GalleryIndex:
    """The index a run folder holds for ``embeddings`` (N, D): ``index.ann``, or the shards ``stats`` records, each
    memory-mapped and checked against its gallery rows.

    Raises:
        EmbedderError: a file missing, or not the index of these embeddings (one line naming the file).
    """
    if stats.get("shards"):
        return _loaded(load_shards(folder, embeddings, stats["shards"]), embeddings, stats)
    try:
        return load_index(folder / "index.ann", embeddings, stats)
    except EmbedderError as exc:
        raise EmbedderError(f"index.ann: {exc}") from None


def _loaded(annoy: AnnoyIndex | ShardedAnnoy, embeddings: np.ndarray, stats: dict) -> GalleryIndex:
    n, dim = embeddings.shape
    method = stats.get("method") or "annoy"  # runs from before the choice were all Annoy
    measured = {k: stats[k] for k in MEASURED if stats.get(k) is not None}
    gallery = as_float32(embeddings) if method == "exact" else None
    return GalleryIndex(
        annoy, dim, n, stats["n_trees"], stats["search_k"], stats["recall_at_10"], method, gallery, measured
    )

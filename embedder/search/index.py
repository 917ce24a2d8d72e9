"""The gallery's neighbour search: exact, Annoy or an HNSW graph, whichever measured best for this gallery; save,
load, query.

Annoy only pays where its recall is cheap: on well-separated galleries. On overlapping embeddings it has to visit
most of the gallery to reach its recall target, and one float32 matrix-vector product (exact search) is faster and
never wrong. A graph (graph.py) walks to the neighbours of large overlapping galleries where neither does.
``build_index`` times each on held-out probes (measure.py) and records the choice in the run: the fastest that
reaches the recall target and is ``min_speedup`` times faster than exact search, else exact search.
"""

from __future__ import annotations

import shutil
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from annoy import AnnoyIndex

from ..config import IndexConfig
from ..errors import EmbedderError
from . import measure
from .graph import Graph, build_graph, open_graph
from .knn import SearchFrame, as_float32, search_frame, topk
from .shards import BROKEN_ANNOY, ShardedAnnoy, build_shards, fill_annoy, load_shards, open_annoy

METHODS = ("auto", "exact", "annoy", "graph")


@dataclass
class GalleryIndex:
    """How a gallery's queries are answered (``method``): exactly (the gallery itself, in a frame that keeps
    nearly parallel vectors apart: ``knn.search_frame``), by an Annoy ``angular`` index (for unit vectors its
    distance sqrt(2 - 2cos) is exactly their L2 distance), one per shard of a large gallery (``ShardedAnnoy``), or by
    the HNSW ``graph`` (graph.py), whose candidates are re-ranked on the gallery. The Annoy index is always built
    and saved (the run's base index); the graph is kept only when it answers."""

    annoy: AnnoyIndex | ShardedAnnoy
    dim: int
    size: int
    n_trees: int
    search_k: int
    recall_at_10: float  # recall@10 queries get: 1.0 when answered exactly
    method: str = "annoy"
    gallery: np.ndarray | None = field(default=None, repr=False)  # (N, D) float32, for exact answers and re-ranking
    measured: dict = field(default_factory=dict)  # {annoy,graph}_recall_at_10, {annoy,graph,exact}_ms, probes, ...
    disk_file: Path | None = None  # where an on-disk build lives (a temporary file the index owns)
    graph: Graph | None = None  # the HNSW graph, when it answers (method "graph")
    ef: int = 0  # the graph's search depth
    _frame: SearchFrame | None = field(default=None, repr=False)

    def query(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(Q, D) -> indices (Q, k') and distances (Q, k'), k' = min(k, size), nearest first."""
        if self.method == "exact":
            return self._exact(vectors, k)
        if self.method == "graph":
            return self.graph.query(vectors, self.gallery, k, self.ef)
        return self._annoy(vectors, k)

    def _exact(self, vectors: np.ndarray, k: int, exclude: np.ndarray | None = None):
        if self._frame is None:
            self._frame = search_frame(self.gallery)
        f = self._frame
        return topk(f.moved(vectors), f.gallery, k, exclude=exclude, gallery_norms=f.norms)

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

    def neighbours_of(self, row: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest gallery items of gallery item ``row``, itself left out: indices (k',), distances (k',)."""
        if self.method == "exact":
            idx, dist = self._exact(self.gallery[row : row + 1], k, exclude=np.array([row]))
            return idx[0], dist[0]
        if self.method == "graph":
            idx, dist = self.graph.query(self.gallery[row : row + 1], self.gallery, min(k + 1, self.size), self.ef)
            keep = idx[0] != row
            return idx[0][keep][:k], dist[0][keep][:k]
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
        """The index's files into ``folder``: ``index.ann`` or ``index-<n>.ann`` per shard, and the graph's
        ``graph.voy`` or ``graph-<n>.voy`` when it answers. Returns their names."""
        names = self.annoy.save_into(folder) if self.shards is not None else None
        if names is None:
            self.save(folder / "index.ann")
            names = ["index.ann"]
        return names + (self.graph.save_into(folder) if self.graph is not None else [])

    def stats(self) -> dict:
        shards = {"shards": self.shards} if self.shards is not None else {}
        graph = {"graph": self.graph.ranges(), "ef": self.ef} if self.graph is not None else {}
        return {
            "n_trees": self.n_trees,
            "search_k": self.search_k,
            "recall_at_10": self.recall_at_10,
            "size": self.size,
            "method": self.method,
            **self.measured,
            **shards,
            **graph,
        }

    def describe(self) -> str:
        """One line for a person: how queries are answered, and the measurement that chose it."""
        return describe(self.stats())


def describe(stats: dict) -> str:
    """The index choice of a run's stats (``GalleryIndex.stats``) in one line; runs from before it say less."""
    n = f"{stats.get('size', 0):,} images" + (f" in {len(stats['shards'])} shards" if stats.get("shards") else "")
    if stats.get("exact_ms") is None:
        return f"Annoy index over {n}: {stats.get('n_trees')} trees, recall@10 {stats.get('recall_at_10', 0):.3f}."
    exact, options = stats["exact_ms"], []
    for name, label in (("annoy", "Annoy"), ("graph", "the graph")):
        if stats.get(f"{name}_ms") is not None:
            options.append(f"{label} {stats[f'{name}_ms']:.2f} ms at recall@10 {stats[f'{name}_recall_at_10']:.3f}")
    measured = f"exact {exact:.2f} ms/query, {', '.join(options)} ({stats['probes']} probes, {stats['probe_kind']})"
    method = stats.get("method")
    if method == "exact":
        return f"Exact search for {n}: no index was clearly faster at its recall target — {measured}."
    label = "HNSW graph" if method == "graph" else "Annoy index"
    return f"{label} for {n}: {exact / max(stats[f'{method}_ms'], 1e-9):.1f}x faster than exact search — {measured}."


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
    """Build the indexes over (N, D) unit vectors, tune them, and choose how queries will be answered.

    The Annoy index is always built: ``search_k`` is raised until recall@10 against exact search reaches
    ``config.target_recall``. From ``config.graph_min_items`` rows (or with ``config.method == "graph"``, or when
    ``previous`` was answered by its graph) the HNSW graph is built too and its search depth raised the same way.
    Exact search and each index are timed one probe at a time. With ``config.method == "auto"`` the fastest index
    that reached the target and is ``config.min_speedup`` times faster than exact search answers queries;
    otherwise they are answered exactly. The Annoy file is written either way (the run bundle holds it); the graph
    is kept when it answers.

    Recall is measured on ``probes`` (Q, D) — images that are not in the gallery, as real queries are — or,
    without them, on a sample of gallery items each looking for its neighbours other than itself.

    A gallery of more than ``config.shard_items`` rows is indexed in shards (``shards.build_shards``, a graph per
    shard likewise), and what ``previous`` (the index of the gallery before it grew) holds for unchanged rows is
    kept; ``progress(done, to do)`` follows the Annoy files built, then the rows inserted into the graph.
    """
    config = config or IndexConfig()
    n, dim = embeddings.shape
    _check(config, n)
    annoy, disk_file = _fill(embeddings, config, previous, progress)
    gallery = as_float32(embeddings)
    frame = search_frame(gallery)
    vectors, skip, kind = measure.probes(embeddings, probes, config)
    truth, _ = topk(frame.moved(vectors), frame.gallery, 10, exclude=skip, gallery_norms=frame.norms)
    probe_set = measure.Probes(vectors, truth, skip)
    graph, ef = None, 0
    if truth.shape[1] == 0:  # a gallery of one image: nothing to miss, nothing to time
        measured, search_k = dict(annoy_recall_at_10=1.0, annoy_ms=0.0, exact_ms=0.0), n * config.n_trees
    else:
        measured, search_k, give_up = _tune_annoy(annoy, frame, probe_set, config)
        grown = previous is not None and previous.graph is not None  # a gallery answered by its graph keeps it
        if config.method == "graph" or (config.method == "auto" and (n >= config.graph_min_items or grown)):
            graph = build_graph(gallery, config, previous and previous.graph, progress)
            ef, recall, ms = measure.tune_graph(graph, gallery, probe_set, config, give_up)
            measured.update(graph_recall_at_10=round(recall, 4), graph_ms=round(ms, 4))
    measured.update(probes=len(vectors), probe_kind=kind)
    method = _choose(config, measured)
    if method == "graph" and graph is None:  # a gallery of one image: there was nothing to build a graph for
        method = "exact"
    recall = 1.0 if method == "exact" else measured[f"{method}_recall_at_10"]
    keep = method in ("exact", "graph")
    index = GalleryIndex(annoy, dim, n, config.n_trees, search_k, recall, method, gallery if keep else None, measured)
    if method == "graph":
        index.graph, index.ef = graph, ef
    index._frame = frame if method == "exact" else None
    if disk_file is not None:
        index.disk_file = disk_file
        weakref.finalize(index, disk_file.unlink, missing_ok=True)
    return index


def _tune_annoy(annoy, frame: SearchFrame, probe_set: measure.Probes, config: IndexConfig) -> tuple[dict, int, float]:
    """Exact search timed, then Annoy's ``search_k`` raised to its recall target: (what was measured, search_k,
    the ms per query beyond which an index is not worth tuning further)."""
    k = probe_set.truth.shape[1]
    exact = lambda v: topk(frame.moved(v[None]), frame.gallery, k, gallery_norms=frame.norms)
    exact_ms = measure.best_ms(exact, probe_set.vectors)
    unbounded = config.method != "auto" or config.min_speedup <= 0
    give_up = np.inf if unbounded else exact_ms / config.min_speedup
    search_k, recall, ms = measure.tune_annoy(annoy, probe_set, config, np.inf if config.method == "annoy" else give_up)
    measured = dict(annoy_recall_at_10=round(recall, 4), annoy_ms=round(ms, 4), exact_ms=round(exact_ms, 4))
    return measured, search_k, give_up


def _choose(config: IndexConfig, measured: dict) -> str:
    """The method queries are answered by: the forced one, or the fastest index at its recall target and
    ``min_speedup`` times faster than exact search, else exact search."""
    if config.method != "auto":
        return config.method
    fast = [
        m
        for m in ("annoy", "graph")
        if measured.get(f"{m}_ms") is not None
        and measured[f"{m}_recall_at_10"] >= config.target_recall
        and measured[f"{m}_ms"] * config.min_speedup <= measured["exact_ms"]
    ]
    return min(fast, key=lambda m: measured[f"{m}_ms"], default="exact")


MEASURED = ("annoy_recall_at_10", "annoy_ms", "graph_recall_at_10", "graph_ms", "exact_ms", "probes", "probe_kind")


def load_index(path: Path, embeddings: np.ndarray, stats: dict) -> GalleryIndex:
    """Open a saved one-file Annoy index over ``embeddings`` (N, D), memory-mapped and checked against them
    (``shards.open_annoy``); a run answered by its graph is opened from its folder (``open_index``).

    Raises:
        EmbedderError: the file is not an Annoy index of these embeddings (one line, without the path).
    """
    return _loaded(open_annoy(path, embeddings), embeddings, stats)


def open_index(folder: Path, embeddings: np.ndarray, stats: dict) -> GalleryIndex:
    """The index a run folder holds for ``embeddings`` (N, D): ``index.ann``, or the shards ``stats`` records, each
    memory-mapped and checked against its gallery rows, and the graph files when the graph answers.

    Raises:
        EmbedderError: a file missing, or not the index of these embeddings (one line naming the file).
    """
    graph = None
    if stats.get("method") == "graph":
        if not stats.get("graph"):
            raise EmbedderError("the index is answered by its graph, and records no graph file")
        graph = open_graph(folder, embeddings, stats["graph"])
    if stats.get("shards"):
        return _loaded(load_shards(folder, embeddings, stats["shards"]), embeddings, stats, graph)
    try:
        annoy = open_annoy(folder / "index.ann", embeddings)
    except EmbedderError as exc:
        raise EmbedderError(f"index.ann: {exc}") from None
    return _loaded(annoy, embeddings, stats, graph)


def _loaded(annoy, embeddings: np.ndarray, stats: dict, graph: Graph | None = None) -> GalleryIndex:
    n, dim = embeddings.shape
    method = stats.get("method") or "annoy"  # runs from before the choice were all Annoy
    if method == "graph" and graph is None:
        raise EmbedderError("the index is answered by its graph, and the graph's files were not opened")
    measured = {k: stats[k] for k in MEASURED if stats.get(k) is not None}
    gallery = as_float32(embeddings) if method in ("exact", "graph") else None
    index = GalleryIndex(
        annoy, dim, n, stats["n_trees"], stats["search_k"], stats["recall_at_10"], method, gallery, measured
    )
    index.graph, index.ef = graph, int(stats.get("ef") or 0)
    return index

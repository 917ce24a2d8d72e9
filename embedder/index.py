"""Annoy over gallery embeddings: build with a measured recall, save, load, query."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from annoy import AnnoyIndex

from .config import IndexConfig
from .errors import EmbedderError
from .knn import topk


@dataclass
class GalleryIndex:
    """An Annoy ``angular`` index. For unit vectors its distance sqrt(2 - 2cos) is exactly their L2 distance."""

    annoy: AnnoyIndex
    dim: int
    size: int
    n_trees: int
    search_k: int
    recall_at_10: float

    def query(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(Q, D) -> indices (Q, k') and distances (Q, k'), k' = min(k, size), nearest first."""
        k = min(k, self.size)
        idx = np.zeros((len(vectors), k), dtype=np.int64)
        dist = np.zeros((len(vectors), k), dtype=np.float32)
        for i, v in enumerate(vectors):
            items, ds = self.annoy.get_nns_by_vector(v.tolist(), k, search_k=self.search_k, include_distances=True)
            if len(items) != k:
                raise EmbedderError(
                    f"Annoy returned {len(items)} of {k} neighbours (a known broken annoy build): "
                    "reinstall it with pip install --force-reinstall --no-binary annoy annoy==1.17.3"
                )
            idx[i], dist[i] = items, ds
        return idx, dist

    def neighbors_of(self, row: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest gallery items of gallery item ``row``, itself left out: indices (k',), distances (k',)."""
        items, ds = self.annoy.get_nns_by_item(
            int(row), min(k + 1, self.size), search_k=self.search_k, include_distances=True
        )
        pairs = [(i, d) for i, d in zip(items, ds) if i != row][:k]
        return np.array([i for i, _ in pairs], dtype=np.int64), np.array([d for _, d in pairs], dtype=np.float32)

    def save(self, path: Path) -> None:
        self.annoy.save(str(path))

    def stats(self) -> dict:
        return {
            "n_trees": self.n_trees,
            "search_k": self.search_k,
            "recall_at_10": self.recall_at_10,
            "size": self.size,
        }


def _recall(annoy: AnnoyIndex, probes: np.ndarray, truth: np.ndarray, search_k: int, skip: np.ndarray | None) -> float:
    """Share of the true neighbours Annoy finds; a probe that is a gallery item (``skip``) is not its own answer."""
    k = truth.shape[1]
    hits = 0
    for i, (v, true_row) in enumerate(zip(probes, truth)):
        got = annoy.get_nns_by_vector(v.tolist(), k + (skip is not None), search_k=search_k)
        if skip is not None:
            got = [j for j in got if j != skip[i]][:k]
        hits += len(set(got) & set(true_row.tolist()))
    return hits / truth.size


def build_index(
    embeddings: np.ndarray, config: IndexConfig | None = None, probes: np.ndarray | None = None
) -> GalleryIndex:
    """Build an Annoy index over (N, D) unit vectors, then raise ``search_k`` until recall@10 against exact
    search reaches ``config.target_recall`` (or search is exhaustive).

    Recall is measured on ``probes`` (Q, D) — images that are not in the gallery, as real queries are — or,
    without them, on a sample of gallery items each looking for its neighbours other than itself (finding
    itself would be free and flatter the recall).
    """
    config = config or IndexConfig()
    n, dim = embeddings.shape
    if n == 0:
        raise EmbedderError("cannot build an index over an empty gallery")
    annoy = AnnoyIndex(dim, "angular")
    annoy.set_seed(config.seed)
    for i, v in enumerate(embeddings):
        annoy.add_item(i, v.tolist())
    annoy.build(config.n_trees, n_jobs=1)

    rng = np.random.default_rng(config.seed)
    skip = None
    if probes is None or len(probes) == 0:
        skip = np.sort(rng.choice(n, size=min(config.recall_sample, n), replace=False))
        probes = embeddings[skip]
    elif len(probes) > config.recall_sample:
        probes = probes[np.sort(rng.choice(len(probes), size=config.recall_sample, replace=False))]
    truth, _ = topk(probes, embeddings, 10, exclude=skip)
    if truth.shape[1] == 0:  # a gallery of one image: nothing to miss
        return GalleryIndex(annoy, dim, n, config.n_trees, n * config.n_trees, 1.0)
    exhaustive = n * config.n_trees  # far beyond this Annoy is already visiting every item
    search_k = max(truth.shape[1] * config.n_trees, 100)
    recall = _recall(annoy, probes, truth, search_k, skip)
    while recall < config.target_recall and search_k < exhaustive:
        search_k = min(search_k * 2, exhaustive)
        recall = _recall(annoy, probes, truth, search_k, skip)
    return GalleryIndex(annoy, dim, n, config.n_trees, int(search_k), float(recall))


def load_index(path: Path, embeddings: np.ndarray, stats: dict) -> GalleryIndex:
    """Open a saved index over ``embeddings`` (N, D) and check that it is one: file size, item count, and a
    sample of stored vectors against the gallery (an index from another run of the same size is caught).

    Raises:
        EmbedderError: the file is not an Annoy index of these embeddings (one line, without the path).
    """
    n, dim = embeddings.shape
    node = 4 * (dim + 3)  # an angular node: descendant count, two children, the vector (float32 each)
    size = path.stat().st_size
    if size == 0 or size % node:
        raise EmbedderError(f"not an Annoy index of {dim}-d vectors ({size} bytes)")
    annoy = AnnoyIndex(dim, "angular")
    try:
        annoy.load(str(path))
    except OSError as exc:
        raise EmbedderError(f"Annoy cannot load it ({exc})") from None
    if annoy.get_n_items() != n:
        raise EmbedderError(f"it holds {annoy.get_n_items()} items, the gallery {n}")
    for i in np.random.default_rng(0).choice(n, size=min(n, 16), replace=False):
        if not np.allclose(annoy.get_item_vector(int(i)), embeddings[i], atol=1e-5):
            raise EmbedderError(f"its item {i} is not gallery image {i}")
    return GalleryIndex(annoy, dim, n, stats["n_trees"], stats["search_k"], stats["recall_at_10"])

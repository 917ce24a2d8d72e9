"""The gallery's HNSW graph (Spotify's Voyager): where Annoy and exact search are both slow, on large overlapping
galleries, a graph walk finds the neighbours in a fraction of a millisecond.

One graph per contiguous range of ``IndexConfig.shard_items`` gallery rows, like the Annoy shards: a query asks
every graph for its k nearest and keeps the k nearest of them. Distances are Euclidean on the stored vectors, each
a sum of squared differences (no 2 - 2·a·b expansion, so nearly parallel vectors keep their distances), and the
graph's candidates are re-ranked by their exact float32 distance to the query, ties by row (what exact search
answers for the same candidates).

A gallery of unit vectors (every run's embeddings) is stored in the graph as 8-bit fixed point (Voyager's Float8:
steps of 1/127 in [-1, 1]): a walk is bound by fetching the vectors it visits, and 128 bytes for a 128-d vector
fetch faster than 512. The walk's distances are then coarse, so it returns twice the neighbours asked for and the
exact re-rank keeps the nearest. On 300,000 overlapping 128-d vectors (1,000 classes, the 1M benchmark's noise)
that gave the same recall@10 as float32 storage at every depth (0.958 against 0.956 at ef 256) in 0.8x the time
(2.2 against 2.7 ms), and a smaller file (BENCHMARKS.md, issue 25).

What the graph promises: the same file answers the same query with the same neighbours, every time (a search is a
deterministic walk; queries never change the graph), and the same distances as exact search for the neighbours it
returns, ties by row. What it cannot promise: that its k neighbours are the exact k nearest (recall@10 is
measured on held-out probes and recorded), which of several gallery items at exactly the same distance it reaches,
or that two builds of one gallery are the same graph: a build inserts with every core (``IndexConfig.
graph_threads``), and threads reach the graph in no fixed order. With one thread two builds with one seed are byte
for byte the same. ``add`` inserts the new rows into the last graph instead of rebuilding it, so a grown
gallery's graph is not the graph a fresh build would make.

Files load without pickle: Voyager reads its own binary format (a header with its version, space, dimensions and
storage type, then the graph) and the run checks the item count and a sample of stored vectors against the gallery.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import EmbedderError, one_line
from .knn import squared_norms
from .shards import shard_ranges

GRAPH_FILE = re.compile(r"graph(-\d{3,6})?\.voy")  # the only graph file names a bundle may record
M = 32  # links per node: on overlapping 128-d embeddings 16 left recall@10 at 0.94 where 32 gave 0.97 (bench_graph)
EF_CONSTRUCTION = 200  # search depth while inserting: a better graph for a slower build
ADD_CHUNK = 10_000  # rows inserted between progress reports (and chances to cancel)


def graph_file(number: int | None) -> str:
    return "graph.voy" if number is None else f"graph-{number:03d}.voy"


CANDIDATES = 2  # an 8-bit graph returns this many times the neighbours asked for, for the exact re-rank
UNIT = 1e-3  # rows whose lengths are within this of 1 are unit vectors: they fit Float8's [-1, 1]


def _storage(rows: np.ndarray):
    """Float8 for unit vectors (every component in [-1, 1]), else float32; read a chunk at a time (no copy of a
    million rows)."""
    import voyager

    norms = np.sqrt(squared_norms(rows))
    unit = len(rows) > 0 and bool(np.all(np.abs(norms - 1) <= UNIT)) and rows.min() >= -1 and rows.max() <= 1
    return voyager.StorageDataType.Float8 if unit else voyager.StorageDataType.Float32


def _eight_bit(graph) -> bool:
    import voyager

    return graph.storage_data_type != voyager.StorageDataType.Float32


def _tolerance(graph) -> float:
    """How far a stored vector may be from its row: a Float8 step (Voyager truncates), else float32 rounding."""
    return 1.01 / 127 if _eight_bit(graph) else 1e-5


def _new(dim: int, seed: int, capacity: int, rows: np.ndarray):
    import voyager

    return voyager.Index(voyager.Space.Euclidean, dim, M=M, ef_construction=EF_CONSTRUCTION, random_seed=seed + 1,
                         max_elements=max(capacity, 1), storage_data_type=_storage(rows))  # fmt: skip


def _insert(graph, rows: np.ndarray, first_id: int, threads: int, progress: Callable[[int], None] | None) -> None:
    """Insert (n, D) rows with ids ``first_id`` on, a chunk at a time, by ``threads`` threads (0: every core)."""
    for s in range(0, len(rows), ADD_CHUNK):
        part = np.ascontiguousarray(rows[s : s + ADD_CHUNK], dtype=np.float32)
        graph.add_items(part, ids=list(range(first_id + s, first_id + s + len(part))), num_threads=threads or -1)
        if progress is not None:
            progress(len(part))


def _grown(previous, rows: np.ndarray) -> bool:
    """Whether ``previous`` (a graph over an earlier, shorter run of these rows) still holds them unchanged."""
    n = previous.num_elements
    if n > len(rows) or n == 0:
        return False
    sample = np.random.default_rng(n).choice(n, size=min(n, 16), replace=False)
    return bool(np.allclose(previous.get_vectors(sample.tolist()), rows[sample], atol=_tolerance(previous), rtol=0))


def _copy(graph):
    """A copy of ``graph`` to grow: the index it belongs to (a loaded run's) keeps answering over its own rows."""
    import io

    import voyager

    return voyager.Index.load(io.BytesIO(graph.as_bytes()))


class Graph:
    """HNSW graphs over contiguous gallery row ranges, queried as one, answering with gallery-wide rows."""

    def __init__(self, parts: list, starts: list[int], sharded: bool) -> None:
        self.parts = parts
        self.starts = np.asarray(starts, dtype=np.int64)  # (S,) the first gallery row of each graph
        self.sizes = np.array([p.num_elements for p in parts], dtype=np.int64)  # (S,)
        self.sharded = sharded  # one file per shard (graph-<n>.voy), else the one graph.voy
        self.asked = [CANDIDATES if _eight_bit(p) else 1 for p in parts]  # candidates a graph gives per neighbour

    @property
    def size(self) -> int:
        return int(self.sizes.sum())

    def candidates(self, vectors: np.ndarray, k: int, ef: int) -> np.ndarray:
        """(Q, D) -> (Q, c) candidate gallery rows: each graph's k nearest by its own distance (``CANDIDATES``
        times k from an 8-bit graph), searched ``ef`` deep (ef >= k), side by side (the re-rank orders them)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        found = []
        for part, start, size, times in zip(self.parts, self.starts, self.sizes, self.asked):
            want = int(min(k * times, size))
            ids, _ = part.query(vectors, want, num_threads=1 if len(vectors) == 1 else -1, query_ef=max(ef, want))
            found.append(np.asarray(ids, dtype=np.int64).reshape(len(vectors), want) + start)
        return found[0] if len(found) == 1 else np.concatenate(found, axis=1)

    def query(self, vectors: np.ndarray, gallery: np.ndarray, k: int, ef: int) -> tuple[np.ndarray, np.ndarray]:
        """(Q, D) -> rows (Q, k') and exact L2 distances (Q, k'), k' = min(k, size), nearest first, ties by row."""
        rows, d = rerank(vectors, gallery, self.candidates(vectors, k, ef))
        return rows[:, :k], d[:, :k]

    def ranges(self) -> list[dict]:
        """What the bundle records: each graph's file name and [start, stop) gallery rows."""
        return [
            {"file": graph_file(s if self.sharded else None), "start": int(a), "stop": int(a + m)}
            for s, (a, m) in enumerate(zip(self.starts, self.sizes))
        ]

    def save_into(self, folder: Path) -> list[str]:
        for part, r in zip(self.parts, self.ranges()):
            part.save(str(folder / r["file"]))
        return [r["file"] for r in self.ranges()]


def rerank(vectors: np.ndarray, gallery: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Q, D) queries and (Q, c) candidate gallery rows -> the rows by exact distance (sum of squared differences,
    float32), then by row, and those distances (Q, c)."""
    cand = np.asarray(gallery[rows.ravel()], dtype=np.float32).reshape(*rows.shape, -1)  # (Q, c, D)
    diff = cand - np.asarray(vectors, dtype=np.float32)[:, None, :]
    d = np.sqrt(np.einsum("qcd,qcd->qc", diff, diff))  # (Q, c)
    order = np.lexsort((rows, d), axis=1)
    return np.take_along_axis(rows, order, 1), np.take_along_axis(d, order, 1)


def build_graph(embeddings: np.ndarray, config, previous: Graph | None = None, progress=None) -> Graph:
    """The graph(s) over the (N, D) gallery: one per ``config.shard_items`` rows. A graph of ``previous`` (the
    gallery's graph before it grew) whose rows are unchanged is kept, and the one that was partial grows by the new
    rows (HNSW inserts, it does not rebuild). ``progress(inserted, to insert)`` follows the rows inserted."""
    n, dim = embeddings.shape
    ranges = shard_ranges(n, config.shard_items)
    kept = {int(s): p for p, s in zip(previous.parts, previous.starts)} if previous is not None else {}
    parts, todo, done = [], 0, 0
    plan = []
    for start, stop in ranges:
        old = kept.get(start)
        reuse = old is not None and _grown(old, embeddings[start:stop])
        plan.append((start, stop, old if reuse else None))
        todo += (stop - start) - (old.num_elements if reuse else 0)

    def step(m: int) -> None:
        nonlocal done
        done += m
        if progress is not None:
            progress(done, todo)

    for start, stop, old in plan:
        graph = _copy(old) if old is not None else _new(dim, config.seed, stop - start, embeddings[start:stop])
        have = graph.num_elements
        if have < stop - start:
            graph.resize(stop - start)
            _insert(graph, embeddings[start + have : stop], have, config.graph_threads, step)
        parts.append(graph)
    return Graph(parts, [a for a, _ in ranges], len(ranges) > 1)


def _open(path: Path, rows: np.ndarray, first_row: int):
    """One graph file over (n, D) gallery rows, read (no pickle: Voyager's own format) and checked against them."""
    import voyager

    try:
        with open(path, "rb") as f:
            graph = voyager.Index.load(f)
    except Exception as exc:  # Voyager raises RuntimeError/ValueError for a file it cannot read
        raise EmbedderError(f"not a Voyager graph ({one_line(str(exc) or 'unreadable', 120)})") from None
    if graph.num_dimensions != rows.shape[1] or graph.num_elements != len(rows):
        raise EmbedderError(
            f"it holds {graph.num_elements} items of {graph.num_dimensions}-d, the gallery {len(rows)} of "
            f"{rows.shape[1]}-d"
        )
    sample = np.random.default_rng(0).choice(len(rows), size=min(len(rows), 16), replace=False)
    got = np.asarray(graph.get_vectors(sample.tolist()))
    bad = np.flatnonzero(~np.isclose(got, rows[sample], atol=_tolerance(graph), rtol=0).all(axis=1))
    if len(bad):
        raise EmbedderError(f"its item {sample[bad[0]]} is not gallery image {first_row + sample[bad[0]]}")
    return graph


def open_graph(folder: Path, embeddings: np.ndarray, files: list[dict]) -> Graph:
    """The graph files a bundle records ({"file", "start", "stop"} each), read and checked against their rows.

    Raises:
        EmbedderError: a file missing, damaged, or not over its rows (one line naming the file).
    """
    parts = []
    for r in files:
        if not GRAPH_FILE.fullmatch(r["file"]) or not (folder / r["file"]).is_file():
            raise EmbedderError(f"graph file {r['file']!r} is missing")
        try:
            parts.append(_open(folder / r["file"], embeddings[r["start"] : r["stop"]], r["start"]))
        except EmbedderError as exc:
            raise EmbedderError(f"{r['file']}: {exc}") from None
    return Graph(parts, [r["start"] for r in files], len(files) > 1)

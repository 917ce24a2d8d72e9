"""The gallery's Annoy files: one built (in memory, or in a file for galleries bigger than memory), one opened
memory-mapped and checked against the gallery, and many queried as one (``ShardedAnnoy``).

Past ``IndexConfig.shard_items`` rows the gallery gets one Annoy index per contiguous range of that many rows.
One big Annoy build holds all its nodes at once and adding images rebuilds all of it; shards are built one at a
time (a build's peak memory is one shard's), ``add`` rebuilds only the last, partial shard and builds the new
ones, and each shard is its own file in the run bundle (``index-<n>.ann``), mapped on load. A query asks every
shard for its k nearest and keeps the k nearest of those k x S candidates: the merge itself loses nothing, so the
sharded answer is as good as its shards' answers.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import weakref
from pathlib import Path

import numpy as np
from annoy import AnnoyIndex

from ..errors import EmbedderError

SHARD_FILE = re.compile(r"index-\d{3,6}\.ann")  # the only shard names a bundle may record (never a path)
BROKEN_ANNOY = (
    "Annoy returned {got} of {want} neighbours (a known broken annoy build): "
    "reinstall it with pip install --force-reinstall --no-binary annoy annoy==1.17.3"
)


def shard_file(number: int) -> str:
    return f"index-{number:03d}.ann"


def shard_ranges(n: int, shard_items: int) -> list[tuple[int, int]]:
    """Contiguous [start, stop) row ranges of ``shard_items`` rows each (the last one may be shorter)."""
    return [(start, min(start + shard_items, n)) for start in range(0, n, shard_items)]


def fill_annoy(embeddings: np.ndarray, n_trees: int, seed: int, on_disk: bool) -> tuple[AnnoyIndex, Path | None]:
    """The Annoy index of the (N, D) vectors, built; with ``on_disk`` it is built in a temporary file (mapped, so
    the OS can page it out) rather than in memory, and that file is returned too."""
    annoy = AnnoyIndex(embeddings.shape[1], "angular")
    annoy.set_seed(seed)
    disk_file = None
    if on_disk:
        fd, name = tempfile.mkstemp(prefix="embedder-index-", suffix=".ann")
        os.close(fd)
        disk_file = Path(name)
        annoy.on_disk_build(name)
    for i, v in enumerate(embeddings):
        annoy.add_item(i, v.tolist())
    annoy.build(n_trees, n_jobs=1)  # one thread: two builds with one seed are byte-identical
    return annoy, disk_file


def open_annoy(path: Path, embeddings: np.ndarray, first_row: int = 0) -> AnnoyIndex:
    """Open the Annoy file over ``embeddings`` (N, D) (gallery rows ``first_row`` on) and check that it is theirs:
    file size, item count, and a sample of stored vectors (an index from another run of the same size is caught).
    Annoy maps the file rather than reading it: a large index costs memory only where queries touch it.

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
        annoy.load(str(path))  # mmap, no prefault
    except OSError as exc:
        raise EmbedderError(f"Annoy cannot load it ({exc})") from None
    if annoy.get_n_items() != n:
        raise EmbedderError(f"it holds {annoy.get_n_items()} items, the gallery {n}")
    for i in np.random.default_rng(0).choice(n, size=min(n, 16), replace=False):
        if not np.allclose(annoy.get_item_vector(int(i)), embeddings[i], atol=1e-5):
            raise EmbedderError(f"its item {i} is not gallery image {first_row + i}")
    return annoy


def merge_nearest(ids: np.ndarray, dists: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(Q, M) candidate rows and distances -> the k nearest of each row (Q, k'), k' = min(k, M), nearest first and
    ties by row, at the k-th place too (a partition would cut a tie there arbitrarily). Only the M candidates (a
    shard's k each) are sorted, never the gallery."""
    order = np.lexsort((ids, dists), axis=1)[:, : min(k, ids.shape[1])]
    return np.take_along_axis(ids, order, 1), np.take_along_axis(dists, order, 1)


class ShardedAnnoy:
    """Annoy indexes over contiguous row ranges of one gallery, answering as one ``AnnoyIndex`` would (the calls
    ``GalleryIndex`` and the index tuning make) with gallery-wide row ids."""

    def __init__(self, parts: list[AnnoyIndex], starts: list[int], files: list[Path | None], owned=()) -> None:
        self.parts = parts
        self.starts = np.asarray(starts, dtype=np.int64)  # (S,) the first gallery row of each shard
        self.sizes = np.array([p.get_n_items() for p in parts], dtype=np.int64)  # (S,)
        self.files = files  # each shard's bytes: a bundle's file, a temporary on-disk build, or None (in memory)
        for file in owned:  # temporary builds go with the index
            weakref.finalize(self, Path(file).unlink, missing_ok=True)

    def get_n_items(self) -> int:
        return int(self.sizes.sum())

    def get_n_trees(self) -> int:
        return self.parts[0].get_n_trees()

    def get_item_vector(self, row: int) -> list[float]:
        s = int(np.searchsorted(self.starts, row, side="right")) - 1
        return self.parts[s].get_item_vector(int(row - self.starts[s]))

    def get_nns_by_vector(self, vector, n: int, search_k: int = -1, include_distances: bool = False):
        """Each shard's ``n`` nearest (``search_k`` nodes inspected in each), merged into the ``n`` nearest."""
        ids, dists = [], []
        for part, start, size in zip(self.parts, self.starts, self.sizes):
            want = int(min(n, size))
            got, ds = part.get_nns_by_vector(vector, want, search_k=search_k, include_distances=True)
            if len(got) != want:
                raise EmbedderError(BROKEN_ANNOY.format(got=len(got), want=want))
            ids.append(np.asarray(got, dtype=np.int64) + start)
            dists.append(np.asarray(ds, dtype=np.float32))
        idx, dist = merge_nearest(np.concatenate(ids)[None], np.concatenate(dists)[None], n)
        return (idx[0].tolist(), dist[0].tolist()) if include_distances else idx[0].tolist()

    def get_nns_by_item(self, row: int, n: int, search_k: int = -1, include_distances: bool = False):
        """As Annoy does it: a search from the item's own vector (so it finds itself)."""
        return self.get_nns_by_vector(self.get_item_vector(row), n, search_k, include_distances)

    def ranges(self) -> list[dict]:
        """What the bundle records: each shard's file name and [start, stop) gallery rows."""
        return [
            {"file": shard_file(s), "start": int(a), "stop": int(a + m)}
            for s, (a, m) in enumerate(zip(self.starts, self.sizes))
        ]

    def save_into(self, folder: Path) -> list[str]:
        """Write every shard's file into ``folder``; returns their names."""
        for part, file, shard in zip(self.parts, self.files, self.ranges()):
            if file is not None:  # mapped from a file (Annoy's save() of a file-built index does nothing)
                shutil.copyfile(file, folder / shard["file"])
            else:
                part.save(str(folder / shard["file"]))
        return [shard["file"] for shard in self.ranges()]


def _reusable(previous, embeddings: np.ndarray, n_trees: int, shard_items: int) -> dict[int, tuple]:
    """{start: (AnnoyIndex, its file)} of the shards of ``previous`` (the index a grown gallery had) that a build now
    would make byte for byte: full shards (``shard_items`` rows), as many trees, whose rows still hold the same
    vectors (a sample checked). The seed is the run's own: ``add`` builds with the run's settings."""
    if not isinstance(previous, ShardedAnnoy) or previous.get_n_trees() != n_trees:
        return {}
    kept = {}
    for part, file, start, size in zip(previous.parts, previous.files, previous.starts, previous.sizes):
        start, size = int(start), int(size)
        if size != shard_items or start + size > len(embeddings):
            continue
        sample = np.random.default_rng(start).choice(size, size=min(size, 16), replace=False)
        if all(np.allclose(part.get_item_vector(int(i)), embeddings[start + i], atol=1e-5) for i in sample):
            kept[start] = (part, file)
    return kept


def build_shards(embeddings: np.ndarray, config, previous=None, progress=None) -> ShardedAnnoy:
    """One Annoy index per ``config.shard_items`` rows of the (N, D) gallery, built one at a time: in temporary
    files from ``config.on_disk_items`` gallery rows on, each unmapped once built, so no more than one shard's
    build is in memory at once. Full shards of ``previous`` (a ``ShardedAnnoy`` over the gallery's first rows)
    are kept as they are; ``progress(built, to build)`` follows the others."""
    n = len(embeddings)
    ranges = shard_ranges(n, config.shard_items)
    kept = _reusable(previous, embeddings, config.n_trees, config.shard_items)
    on_disk, todo, built = n >= config.on_disk_items, len(ranges) - len(kept), 0
    parts, files, owned = [], [], []
    for start, stop in ranges:
        if start in kept:
            part, file = kept[start]
        else:
            part, file = fill_annoy(embeddings[start:stop], config.n_trees, config.seed, on_disk)
            if file is not None:  # map it again, untouched: its built pages leave this process's memory
                part.unload()
                part.load(str(file))
                owned.append(file)
            built += 1
            if progress is not None:
                progress(built, todo)
        parts.append(part)
        files.append(file)
    return ShardedAnnoy(parts, [a for a, _ in ranges], files, owned)


def coverage_problem(shards: list[dict], n: int) -> str | None:
    """Why the recorded shards are not contiguous, non-empty [start, stop) ranges covering rows 0..n-1, or None."""
    bounds = [0, *(s["stop"] for s in shards)]
    contiguous = bool(shards) and [s["start"] for s in shards] == bounds[:-1] and bounds[-1] == n
    if contiguous and all(s["stop"] > s["start"] for s in shards):
        return None
    return f"the index shards do not cover the gallery's {n} rows once each"


def load_shards(folder: Path, embeddings: np.ndarray, shards: list[dict]) -> ShardedAnnoy:
    """The shards a bundle records (``ShardedAnnoy.ranges``), each file opened memory-mapped and checked against
    its rows of ``embeddings`` (N, D).

    Raises:
        EmbedderError: a shard missing, damaged, or not over its rows (one line naming the file).
    """
    problem = coverage_problem(shards, len(embeddings))
    if problem:
        raise EmbedderError(problem)
    parts = []
    for s in shards:
        if not SHARD_FILE.fullmatch(s["file"]) or not (folder / s["file"]).is_file():
            raise EmbedderError(f"index shard {s['file']!r} is missing")
        try:
            parts.append(open_annoy(folder / s["file"], embeddings[s["start"] : s["stop"]], s["start"]))
        except EmbedderError as exc:
            raise EmbedderError(f"{s['file']}: {exc}") from None
    return ShardedAnnoy(parts, [s["start"] for s in shards], [folder / s["file"] for s in shards])

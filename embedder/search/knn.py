"""Exact k-nearest-neighbour search that streams: the one top-k routine behind every exact search.

Queries x gallery never exists as a whole matrix: the gallery is read in chunks, each chunk's k best are
taken with ``np.argpartition`` and merged into a running (Q, k) answer, so memory is O(Q·k + block) whatever the
gallery size. float32 throughout, distances from one BLAS matrix product per block. The block is shaped by the
number of queries: one query reads the gallery in one matrix-vector product (what serving one upload costs), a
large batch in chunks of 8,192 rows.

Distances come from |q|² + |g|² − 2·q·g, whose float32 rounding is relative to the norms: for nearly parallel
vectors (an imported network whose outputs share a large offset, L2-normalised) every distance rounds to the same
few values and the neighbours are lost. A gallery whose mean carries most of its rows' length is therefore
searched about that mean (``search_frame``): a translation changes no distance, only the rounding.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from ..cores import one_core, small

NEAR_PARALLEL = 0.5  # the gallery mean's share of its rows' squared length from which it is searched about the mean
BLOCK_ELEMENTS = 1 << 24  # query rows x gallery rows per distance block: 64 MB of float32
MAX_QUERY_ROWS = 2048  # queries per block; with them the gallery is read 8,192 rows at a time
# A few queries against a gallery of at most this many floats (64 MB: 100k x 128) are searched on one core
# (cores.py); a larger gallery is read from memory faster by every core on a quiet machine.
ONE_CORE_ELEMENTS = 1 << 24


def as_float32(x: np.ndarray) -> np.ndarray:
    """A float32 C-contiguous view when ``x`` already is one (no copy), else a float32 copy."""
    return np.ascontiguousarray(x, dtype=np.float32)


def squared_norms(gallery: np.ndarray, step: int = 65536, centre: np.ndarray | None = None) -> np.ndarray:
    """(N,) squared L2 norms of the gallery rows (about ``centre`` when given), read a chunk at a time (a
    memory-mapped gallery stays on disk)."""
    out = np.empty(len(gallery), dtype=np.float32)
    for s in range(0, len(gallery), step):
        g = as_float32(gallery[s : s + step])
        g = g - centre if centre is not None else g
        out[s : s + len(g)] = np.einsum("ij,ij->i", g, g)
    return out


def _mean_and_norms(gallery: np.ndarray, step: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """(D,) the mean row and (N,) the squared norms, in one chunked pass (float64 sums: a million rows)."""
    total, norms = np.zeros(gallery.shape[1], dtype=np.float64), np.empty(len(gallery), dtype=np.float32)
    for s in range(0, len(gallery), step):
        g = as_float32(gallery[s : s + step])
        total += g.sum(axis=0, dtype=np.float64)
        norms[s : s + len(g)] = np.einsum("ij,ij->i", g, g)
    return (total / max(len(gallery), 1)).astype(np.float32), norms


def frame_centre(gallery: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """(the point to search the gallery about, or None: the origin will do, (N,) squared norms about it). The
    gallery mean, when it holds more than ``NEAR_PARALLEL`` of the rows' mean squared length."""
    mean, norms = _mean_and_norms(gallery)
    if len(gallery) == 0 or float(mean @ mean) <= NEAR_PARALLEL * float(norms.mean()):
        return None, norms
    return mean, squared_norms(gallery, centre=mean)


@dataclass
class SearchFrame:
    """The gallery as exact search reads it: as it is, or moved by ``-centre`` (a copy) when its rows are nearly
    parallel; queries are moved alike (``moved``)."""

    gallery: np.ndarray  # (N, D) float32
    norms: np.ndarray  # (N,) squared norms in this frame
    centre: np.ndarray | None = None  # (D,)

    def moved(self, vectors: np.ndarray) -> np.ndarray:
        return as_float32(vectors) if self.centre is None else as_float32(vectors) - self.centre


def search_frame(gallery: np.ndarray) -> SearchFrame:
    """The frame an index searching ``gallery`` (N, D) often keeps: ``frame_centre`` applied once."""
    centre, norms = frame_centre(gallery)
    if centre is None:
        return SearchFrame(as_float32(gallery), norms)
    moved = np.empty(gallery.shape, dtype=np.float32)
    for s in range(0, len(gallery), 65536):
        moved[s : s + 65536] = as_float32(gallery[s : s + 65536]) - centre
    return SearchFrame(moved, norms, centre)


def _smallest(d2: np.ndarray, k: int, rows: np.ndarray | None = None) -> np.ndarray:
    """Column positions of the k smallest entries of each row of (q, m), in any order. Entries equal to the k-th
    smallest (exact duplicates in the gallery) are taken lowest ``rows`` first (q, m; default: the column), so
    the answer is the same for every k and every block size."""
    if k >= d2.shape[1]:
        return np.broadcast_to(np.arange(d2.shape[1]), d2.shape)
    pos = np.argpartition(d2, k - 1, axis=1)[:, :k]
    taken = np.take_along_axis(d2, pos, 1)
    kth = taken.max(axis=1, keepdims=True)  # (q, 1): the k-th smallest value
    left_out = np.count_nonzero(d2 == kth, axis=1) > np.count_nonzero(taken == kth, axis=1)
    for r in np.flatnonzero(left_out):  # a tie at the k-th value that argpartition cut arbitrarily: rare
        below, tied = np.flatnonzero(d2[r] < kth[r]), np.flatnonzero(d2[r] == kth[r])
        if rows is not None:
            tied = tied[np.argsort(rows[r, tied], kind="stable")]
        pos[r] = np.concatenate([below, tied[: k - len(below)]])
    return pos


def _query_block(q: np.ndarray, gallery: np.ndarray, g_norms: np.ndarray, k: int, g_step: int, rules) -> tuple:
    """(q, D) queries (already moved by ``-centre``) against the whole gallery, chunk by chunk -> squared distances
    and indices (q, k)."""
    exclude, same, centre = rules
    best_d, best_i = np.empty((len(q), 0), np.float32), np.empty((len(q), 0), np.int64)
    q_norms = np.einsum("ij,ij->i", q, q)[:, None]  # (q, 1)
    for start in range(0, len(gallery), g_step):
        g = as_float32(gallery[start : start + g_step])  # (g, D)
        g = g - centre if centre is not None else g
        d2 = q @ g.T  # (q, g): BLAS
        d2 *= -2.0
        d2 += q_norms + g_norms[None, start : start + len(g)]
        if exclude is not None:
            local = exclude - start
            rows = np.flatnonzero((local >= 0) & (local < len(g)))
            d2[rows, local[rows]] = np.inf
        if same is not None:
            d2[same[0][:, None] == same[1][None, start : start + len(g)]] = np.inf
        pos = _smallest(d2, k)
        if start == 0:  # nothing to merge with yet (a whole gallery in one block: a single query's case)
            best_d, best_i = np.take_along_axis(d2, pos, 1), pos + start
            continue
        all_d = np.concatenate([best_d, np.take_along_axis(d2, pos, 1)], axis=1)
        all_i = np.concatenate([best_i, pos + start], axis=1)
        keep = _smallest(all_d, k, all_i)
        best_d, best_i = np.take_along_axis(all_d, keep, 1), np.take_along_axis(all_i, keep, 1)
    return best_d, best_i


def _block_rules(start: int, n: int, exclude: np.ndarray | None, other_label: tuple[np.ndarray, np.ndarray] | None):
    """``exclude`` and ``other_label`` for the queries ``start:start+n`` (or None each)."""
    ex = None if exclude is None else np.asarray(exclude[start : start + n], dtype=np.int64)
    if other_label is None:
        return ex, None
    return ex, (np.asarray(other_label[0][start : start + n]), np.asarray(other_label[1]))


def _nearest_first(d2: np.ndarray, i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(q, k) squared distances and rows in any order -> rows and distances by distance, then by row."""
    order = np.lexsort((i, d2), axis=1)  # ties by row: the same answer on every run
    return np.take_along_axis(i, order, 1), np.sqrt(np.clip(np.take_along_axis(d2, order, 1), 0, None))  # inf stays


def topk(
    queries: np.ndarray,
    gallery: np.ndarray,
    k: int,
    *,
    exclude: np.ndarray | None = None,
    other_label: tuple[np.ndarray, np.ndarray] | None = None,
    progress: Callable[[int, int], None] | None = None,
    block_elements: int = BLOCK_ELEMENTS,
    gallery_norms: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest gallery rows of each query by L2 distance, nearest first (ties: lower row first).

    Args:
        queries: (Q, D) float array.
        gallery: (N, D) float array; may be a memory-mapped file, it is read a chunk at a time.
        k: neighbours per query; capped at what the gallery can give.
        exclude: (Q,) a gallery row each query must not return (leave-one-out: the query itself), or -1.
        other_label: (query labels (Q,), gallery labels (N,)): return only gallery rows of another label
            (how near the nearest wrong answer is); rows that cannot qualify come back at distance inf.
        progress: called with (queries done, Q).
        gallery_norms: (N,) the gallery's ``squared_norms``, when a caller searching it often keeps them (then
            the caller chose the frame: ``search_frame``); without them a nearly parallel gallery is searched
            about its mean (``frame_centre``).

    Returns:
        indices (Q, k') int64 and distances (Q, k') float32, k' = min(k, N - (exclude is not None)).
    """
    k = max(0, min(k, len(gallery) - (exclude is not None)))
    idx, dist = np.zeros((len(queries), k), dtype=np.int64), np.zeros((len(queries), k), dtype=np.float32)
    if len(queries) == 0 or k == 0:
        return idx, dist
    q_rows = min(len(queries), MAX_QUERY_ROWS)
    g_step = max(k, min(len(gallery), block_elements // q_rows))
    q_step = max(1, block_elements // g_step)
    centre, g_norms = frame_centre(gallery) if gallery_norms is None else (None, gallery_norms)  # (D,) or None, (N,)
    one = small(len(queries)) and gallery.size <= ONE_CORE_ELEMENTS  # an upload's query: cores.py
    with one_core(blas=True) if one else nullcontext():
        for start in range(0, len(queries), q_step):
            q = as_float32(queries[start : start + q_step])  # (q, D)
            q = q - centre if centre is not None else q
            rules = (*_block_rules(start, len(q), exclude, other_label), centre)
            d2, i = _query_block(q, gallery, g_norms, k, g_step, rules)
            idx[start : start + len(q)], dist[start : start + len(q)] = _nearest_first(d2, i)
            if progress is not None:
                progress(start + len(q), len(queries))
    return idx, dist


class StreamingKNN:
    """pytorch-metric-learning's ``knn_func`` hook on ``topk``: AccuracyCalculator without a Q x N matrix."""

    def __call__(self, query: torch.Tensor, k: int, reference: torch.Tensor, ref_includes_query: bool = False):
        q, r = query.detach().cpu().float().numpy(), reference.detach().cpu().float().numpy()
        # With ref_includes_query the first len(query) reference rows are the queries: each skips itself.
        exclude = np.arange(len(q)) if ref_includes_query else None
        idx, dist = topk(q, r, k, exclude=exclude)
        return torch.from_numpy(dist).to(query.device), torch.from_numpy(idx).to(query.device)

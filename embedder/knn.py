"""Exact k-nearest-neighbour search that streams: the one top-k routine behind every exact search.

Queries x gallery never exists as a whole matrix: the gallery is read in chunks, each chunk's k best are
taken with ``torch.topk`` and merged into a running (Q, k) answer, so memory is O(Q·k + block) whatever the
gallery size. float32 throughout, distances from one matrix product per block (BLAS).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

BLOCK_ELEMENTS = 1 << 24  # query rows x gallery rows per distance block: 64 MB of float32


def _merge(best_d: torch.Tensor, best_i: torch.Tensor, d: torch.Tensor, i: torch.Tensor, k: int):
    """Keep the k smallest of the running answer and a new block's candidates (both (q, *))."""
    all_d, all_i = torch.cat([best_d, d], dim=1), torch.cat([best_i, i], dim=1)
    kept_d, pos = torch.topk(all_d, min(k, all_d.shape[1]), dim=1, largest=False, sorted=False)
    return kept_d, torch.gather(all_i, 1, pos)


def _query_block(
    q: torch.Tensor,
    gallery: np.ndarray,
    g_norms: torch.Tensor,
    k: int,
    g_step: int,
    exclude: torch.Tensor | None,
    same: tuple[torch.Tensor, torch.Tensor] | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(q, D) queries against the whole gallery, chunk by chunk -> squared distances and indices (q, k)."""
    best_d = torch.empty((len(q), 0))
    best_i = torch.empty((len(q), 0), dtype=torch.int64)
    q_norms = (q * q).sum(1, keepdim=True)  # (q, 1)
    for start in range(0, len(gallery), g_step):
        g = torch.from_numpy(np.array(gallery[start : start + g_step], dtype=np.float32))  # a copy: mmap is read-only
        d2 = torch.addmm(q_norms + g_norms[start : start + len(g)][None, :], q, g.T, alpha=-2.0)  # (q, g)
        if exclude is not None:
            local = exclude - start
            rows = torch.nonzero((local >= 0) & (local < len(g))).flatten()
            d2[rows, local[rows]] = float("inf")
        if same is not None:
            q_labels, g_labels = same
            d2.masked_fill_(q_labels[:, None] == g_labels[None, start : start + len(g)], float("inf"))
        d, i = torch.topk(d2, min(k, len(g)), dim=1, largest=False, sorted=False)
        best_d, best_i = _merge(best_d, best_i, d, i + start, k)
    return best_d, best_i


def _gallery_norms(gallery: np.ndarray, g_step: int) -> torch.Tensor:
    """(N,) squared L2 norms of the gallery rows, read a chunk at a time."""
    chunks = (np.array(gallery[s : s + g_step], dtype=np.float32) for s in range(0, len(gallery), g_step))
    return torch.cat([torch.from_numpy(g).pow(2).sum(1) for g in chunks])


def _block_rules(
    start: int, n: int, exclude: np.ndarray | None, other_label: tuple[np.ndarray, np.ndarray] | None
) -> tuple[torch.Tensor | None, tuple[torch.Tensor, torch.Tensor] | None]:
    """``exclude`` and ``other_label`` for the queries ``start:start+n``, as tensors (or None)."""
    ex = None if exclude is None else torch.from_numpy(np.asarray(exclude[start : start + n], dtype=np.int64))
    if other_label is None:
        return ex, None
    q_labels = torch.from_numpy(np.asarray(other_label[0][start : start + n], dtype=np.int64))
    return ex, (q_labels, torch.from_numpy(np.asarray(other_label[1], dtype=np.int64)))


def _nearest_first(d2: torch.Tensor, i: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(q, k) squared distances and rows in any order -> rows and distances by distance, then by row."""
    d2, i = d2.numpy(), i.numpy()
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

    Returns:
        indices (Q, k') int64 and distances (Q, k') float32, k' = min(k, N - (exclude is not None)).
    """
    k = max(0, min(k, len(gallery) - (exclude is not None)))
    idx, dist = np.zeros((len(queries), k), dtype=np.int64), np.zeros((len(queries), k), dtype=np.float32)
    if len(queries) == 0 or k == 0:
        return idx, dist
    g_step = max(k, min(len(gallery), 8192))
    q_step = max(1, block_elements // g_step)
    g_norms = _gallery_norms(gallery, g_step)  # (N,)
    with torch.no_grad():
        for start in range(0, len(queries), q_step):
            q = torch.from_numpy(np.array(queries[start : start + q_step], dtype=np.float32))  # (q, D)
            ex, same = _block_rules(start, len(q), exclude, other_label)
            d2, i = _query_block(q, gallery, g_norms, k, g_step, ex, same)
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

"""The streaming top-k against a brute-force oracle: full distance matrix, stable argsort."""

import numpy as np
import pytest
import torch

from embedder.search.knn import BLOCK_ELEMENTS, StreamingKNN, topk


def _oracle(q, g, k, exclude=None, other_label=None):
    d = np.sqrt(((q[:, None, :].astype(np.float64) - g[None, :, :]) ** 2).sum(-1))  # (Q, N)
    if exclude is not None:
        d[np.arange(len(q)), exclude] = np.inf
    if other_label is not None:
        d[other_label[0][:, None] == other_label[1][None, :]] = np.inf
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(d, idx, 1)


def _data(n_q=37, n=211, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n_q, dim)).astype(np.float32), rng.normal(size=(n, dim)).astype(np.float32)


@pytest.mark.parametrize("block_elements", [1 << 24, 64, 1000])  # one block, and many tiny ones
def test_topk__equals_the_full_matrix(block_elements):
    q, g = _data()
    idx, dist = topk(q, g, 10, block_elements=block_elements)
    want_idx, want_d = _oracle(q, g, 10)
    assert idx.tolist() == want_idx.tolist()
    np.testing.assert_allclose(dist, want_d, atol=1e-4)
    assert idx.dtype == np.int64 and dist.dtype == np.float32


def test_topk__hand_placed_points_and_ties_go_to_the_lower_row():
    g = np.array([[0, 0], [1, 0], [0, 1], [3, 3], [1, 0]], dtype=np.float32)
    idx, dist = topk(np.array([[0.9, 0.0]], dtype=np.float32), g, 4)
    assert idx.tolist() == [[1, 4, 0, 2]]
    np.testing.assert_allclose(dist[0], [0.1, 0.1, 0.9, np.sqrt(0.81 + 1)], atol=1e-6)


@pytest.mark.parametrize("block_elements", [BLOCK_ELEMENTS, 64])  # one block; many, merged
def test_topk__duplicates_tied_at_the_kth_place_the_same_neighbours_for_every_k(block_elements):
    """Eleven copies of one gallery image: a query near them gets the lowest rows among the copies whatever k it
    asks for, so that evaluation (k = 20) and a prediction (the run's k) agree on its first neighbours."""
    g = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    g[100:110] = g[5]
    q = g[5:6] + 0.01
    widest = topk(q, g, 30, block_elements=block_elements)[0][0]
    assert widest[:11].tolist() == [5, *range(100, 110)]
    for k in (1, 3, 5, 9, 11, 12):
        assert topk(q, g, k, block_elements=block_elements)[0][0].tolist() == widest[:k].tolist()


def test_topk__leave_one_out_never_returns_the_query_itself():
    _, g = _data()
    rows = np.arange(len(g))
    idx, dist = topk(g, g, 5, exclude=rows, block_elements=500)
    assert not (idx == rows[:, None]).any()
    want_idx, want_d = _oracle(g, g, 5, exclude=rows)
    assert idx.tolist() == want_idx.tolist()


def test_topk__other_label_finds_the_nearest_wrong_answer():
    q, g = _data()
    ql, gl = np.arange(len(q)) % 3, np.arange(len(g)) % 3
    idx, dist = topk(q, g, 2, other_label=(ql, gl), block_elements=300)
    assert (gl[idx] != ql[:, None]).all()
    want_idx, want_d = _oracle(q, g, 2, other_label=(ql, gl))
    assert idx.tolist() == want_idx.tolist()


def test_topk__k_is_capped_and_empty_inputs_work():
    q, g = _data(n_q=3, n=4)
    assert topk(q, g, 10)[0].shape == (3, 4)
    assert topk(q, g, 10, exclude=np.zeros(3, dtype=np.int64))[0].shape == (3, 3)
    assert topk(q[:0], g, 5)[0].shape == (0, 4)


def test_topk__reads_a_memory_mapped_gallery(tmp_path):
    q, g = _data()
    np.save(tmp_path / "g.npy", g)
    mm = np.load(tmp_path / "g.npy", mmap_mode="r")
    assert topk(q, mm, 7, block_elements=2000)[0].tolist() == _oracle(q, g, 7)[0].tolist()


def test_streaming_knn__drives_accuracy_calculator_like_the_full_matrix():
    from pytorch_metric_learning.distances import LpDistance
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    q, g = _data(n_q=60, n=200, dim=4)
    ql, gl = np.arange(60) % 4, np.arange(200) % 4
    args = [torch.from_numpy(q), torch.from_numpy(ql), torch.from_numpy(g), torch.from_numpy(gl)]
    include = ("precision_at_1", "r_precision", "mean_average_precision_at_r")
    ours = AccuracyCalculator(include=include, k="max_bin_count", knn_func=StreamingKNN()).get_accuracy(*args)
    theirs = AccuracyCalculator(
        include=include, k="max_bin_count", knn_func=CustomKNN(LpDistance(normalize_embeddings=False))
    ).get_accuracy(*args)
    assert ours == pytest.approx(theirs)
    loo = [torch.from_numpy(g), torch.from_numpy(gl), torch.from_numpy(g), torch.from_numpy(gl)]
    ours = AccuracyCalculator(include=include, k="max_bin_count", knn_func=StreamingKNN()).get_accuracy(
        *loo, ref_includes_query=True
    )
    theirs = AccuracyCalculator(
        include=include, k="max_bin_count", knn_func=CustomKNN(LpDistance(normalize_embeddings=False))
    ).get_accuracy(*loo, ref_includes_query=True)
    assert ours == pytest.approx(theirs)


def test_topk__nearly_parallel_vectors_keep_their_neighbours():
    # Unit rows of a large common offset plus a little spread (an imported network's outputs): |q|² + |g|² − 2q·g
    # rounds every distance in float32 to the same few values; searching about the gallery's mean does not.
    rng = np.random.default_rng(0)
    raw = 2e4 + rng.normal(scale=1.0, size=(400, 16))
    rows = (raw / np.linalg.norm(raw, axis=1, keepdims=True)).astype(np.float32)
    gallery, queries = rows[:300], rows[300:]
    want = np.argsort(((queries[:, None].astype(np.float64) - gallery[None]) ** 2).sum(-1), axis=1)[:, :5]
    got, _ = topk(queries, gallery, 5)
    assert np.mean(got[:, 0] == want[:, 0]) >= 0.99
    assert np.mean([len(set(a) & set(b)) / 5 for a, b in zip(got, want)]) >= 0.95

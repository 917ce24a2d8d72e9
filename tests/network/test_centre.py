"""embedder/network/centre.py: a gallery whose embeddings share a large offset is centred, one without is left as
it is, and centring moves then normalises."""

from __future__ import annotations

import numpy as np

from embedder.network.centre import centred, choose_centre
from tests.helpers import unit


def _classes(offset: float, n: int = 600, dim: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 6, n)
    raw = 4 * rng.normal(size=(6, dim))[labels] + rng.normal(size=(n, dim)) + offset  # the offset shared by all
    return unit(raw).astype(np.float32), labels


def test_centred__moves_by_the_centre_then_normalises_and_none_leaves_the_rows():
    rows = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    got = centred(rows, np.array([0.5, 0.5], dtype=np.float32))
    np.testing.assert_allclose(got, [[2**-0.5, -(2**-0.5)], [-(2**-0.5), 2**-0.5]], atol=1e-6)
    assert centred(rows, None) is rows


def test_choose_centre__a_large_common_offset_is_taken_away():
    emb, labels = _classes(offset=1e4)
    centre, measured = choose_centre(emb, labels)
    assert centre is not None and measured["centred"] and measured["offset_share"] > 0.99
    np.testing.assert_allclose(centre, emb.mean(axis=0), atol=1e-6)
    moved = centred(emb, centre)
    assert np.linalg.norm(moved.mean(axis=0)) < 0.3  # spread over the sphere, no longer one direction
    assert measured["loo_1nn_centred"] >= 0.9


def test_choose_centre__embeddings_without_an_offset_stay_as_they_are():
    emb, labels = _classes(offset=0.0)
    centre, measured = choose_centre(emb, labels)
    assert centre is None and not measured["centred"] and measured["offset_share"] < 0.5

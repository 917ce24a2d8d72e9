"""Centring a run's embeddings by its gallery mean: whether to, measured on the gallery's own labels, and how.

A network whose outputs share a large common offset (an LDA-style projection without centring, all-positive ReLU
features) gives L2-normalised embeddings that are nearly parallel: every distance is a small difference of large
numbers, the map shows one dot, and a distance threshold means nothing. Taking the gallery's mean away before
normalising again spreads them over the sphere. The mean is the run's (stored in config.json as ``centre``) and
every image the run's own network embeds afterwards, gallery and queries alike, is moved by it (``Run.embed``).

The choice: centre when the mean carries most of the embeddings' length (``search.knn.NEAR_PARALLEL``, the case
above) unless leave-one-out 1-NN on a sample of the gallery is measurably worse centred; otherwise centre only when
it is measurably better (by two standard errors of the paired difference).
"""

from __future__ import annotations

import numpy as np

from ..search.knn import NEAR_PARALLEL, topk

SAMPLE = 4000  # gallery rows whose leave-one-out 1-NN label decides


def centred(embeddings: np.ndarray, centre: np.ndarray | None) -> np.ndarray:
    """(N, D) unit rows -> the rows minus ``centre``, L2-normalised again (float32); as they are without a centre."""
    if centre is None:
        return embeddings
    moved = np.asarray(embeddings, dtype=np.float32) - centre
    return moved / np.maximum(np.linalg.norm(moved, axis=1, keepdims=True), 1e-12)


def _loo_right(emb: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(n,) whether each row's nearest other row has its label."""
    idx, _ = topk(emb, emb, 1, exclude=np.arange(len(emb)))
    return labels[idx[:, 0]] == labels


def choose_centre(embeddings: np.ndarray, labels: np.ndarray, seed: int = 0) -> tuple[np.ndarray | None, dict]:
    """(the centre to use or None, what was measured) for the (N, D) unit-row gallery with labels (N,)."""
    centre = embeddings.mean(axis=0, dtype=np.float64).astype(np.float32)  # (D,)
    share = float(centre @ centre) / max(float(np.mean(np.einsum("ij,ij->i", embeddings, embeddings))), 1e-12)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(embeddings), size=min(SAMPLE, len(embeddings)), replace=False))
    raw = _loo_right(embeddings[rows], labels[rows])
    moved = _loo_right(centred(embeddings[rows], centre), labels[rows])
    diff = moved.astype(float) - raw.astype(float)  # paired: +1 where only centring is right, -1 the other way
    margin = 2 * diff.std() / np.sqrt(max(len(diff), 1))
    better, worse = diff.mean() > margin, diff.mean() < -margin
    use = (share > NEAR_PARALLEL and not worse) or better
    measured = {
        "centred": bool(use),
        "offset_share": round(share, 4),  # the mean's share of the embeddings' squared length
        "loo_1nn_raw": round(float(raw.mean()), 4),
        "loo_1nn_centred": round(float(moved.mean()), 4),
        "sample": len(rows),
    }
    return (centre if use else None), measured


def describe(measured: dict) -> str:
    """One line for the run's notes."""
    what = "centred by the gallery mean" if measured["centred"] else "not centred"
    return (
        f"embeddings {what}: the mean holds {measured['offset_share']:.0%} of their length; leave-one-out 1-NN on "
        f"{measured['sample']} gallery images {measured['loo_1nn_raw']:.3f} as they are, "
        f"{measured['loo_1nn_centred']:.3f} centred"
    )

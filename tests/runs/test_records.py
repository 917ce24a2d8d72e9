"""embedder/runs/records.py: a run's metrics.json read as typed records: the fields of a run written now, the parts
an older run lacks read as missing, a part of another type refused on load in one line naming its field, and the
file on disk unchanged."""

import json

import pytest

from embedder.answers.trust import promise
from embedder.errors import EmbedderError
from embedder.runs.records import Evaluation, Metrics
from embedder.runs.run import load_run
from tests.helpers import copy_run


def test_a_written_run_reads_as_records_and_keeps_its_file_as_written(tmp_path, shapes_run):
    run_dir = copy_run(shapes_run, tmp_path / "run")
    raw = json.loads((run_dir / "metrics.json").read_text())
    run = load_run(run_dir)
    record = run.record
    test, stored = record.test, raw["test"]
    assert (test.n_queries, test.precision_at_1, test.map_at_r) == (
        stored["n_queries"],
        stored["precision_at_1"],
        stored["map_at_r"],
    )
    assert test.knn_accuracy_by_k == stored["knn_accuracy_by_k"] and len(test.knn_accuracy_by_k) > 1
    assert {name: b.knn_accuracy for name, b in test.baselines.items()} == {
        name: b["knn_accuracy"] for name, b in stored["baselines"].items()
    }
    assert [p.coverage for p in test.open_set.curve] == [p["coverage"] for p in stored["open_set"]["curve"]]
    assert test.calibration.before.ece == stored["calibration"]["before"]["ece"]
    assert record.unknown.threshold == raw["unknown"]["threshold"] and record.kept == raw["kept"]
    assert record.k.k == raw["k"]["k"] == run.train_config.k
    run.save(overwrite=True)
    assert json.loads((run_dir / "metrics.json").read_text()) == raw  # the same keys and values on disk


def test_the_json_keys_stay_spelled_as_written():
    pair = {"true": "cat", "predicted": "dog", "count": 2, "examples": [{"query": "q.png", "neighbor": "g.png"}]}
    test = Evaluation.of({"confused_pairs": [pair]})
    assert test.confused_pairs[0].examples[0].neighbour == "g.png"


def test_an_older_runs_metrics_lack_newer_parts_and_read_as_missing(tmp_path, shapes_run):
    """metrics.json as the first releases wrote it: test scores and baselines, no calibration, open set, choice of
    k, novelty or upgrade record. The run loads, and what it lacks reads as missing."""
    old = {
        "kept": "epoch 3",
        "test": {
            "n_queries": 30,
            "precision_at_1": 0.9,
            "map_at_r": 0.7,
            "baselines": {"raw_pixels": {"map_at_r": 0.4}},
        },
    }
    record = load_run(copy_run(shapes_run, tmp_path / "old", metrics_json=old)).record
    assert record.test.precision_at_1 == 0.9 and record.test.baselines["raw_pixels"].map_at_r == 0.4
    assert record.test.baselines["raw_pixels"].knn_accuracy is None and record.test.knn_accuracy_by_k == {}
    assert record.test.open_set is None and record.test.calibration is None and record.test.confused_pairs == []
    assert (record.confidence, record.unknown, record.k, record.novelty, record.upgrade) == (None,) * 5
    assert not record.not_reevaluated and record.validation_candidates == {}


def test_a_part_written_empty_reads_as_missing():
    record = Metrics.of({"confidence": {}, "not_reevaluated": {}, "test": {}})
    assert not record.confidence and not record.not_reevaluated and not record.test
    assert "not a probability" in promise(record)  # no calibration, as the empty dict said before
    assert Metrics.of({"confidence": {"kind": "constant", "value": 0.9}}).confidence


@pytest.mark.parametrize(
    "part, value, field",
    [
        ("upgrade", {"result": "replaced", "before": {"test": "high"}}, "field upgrade.before.test"),
        ("test", {"open_set": {"curve": [{"threshold": "far"}]}}, "field test.open_set.curve.0.threshold"),
        (
            "test",
            {"confused_pairs": [{"examples": [{"neighbor": 3}]}]},
            "field test.confused_pairs.0.examples.0.neighbor",
        ),
        ("not_reevaluated", {"images": "many"}, "field not_reevaluated.images"),
        ("unknown", None, "field unknown"),
    ],
)
def test_a_part_of_another_type_is_refused_on_load_in_one_line(tmp_path, shapes_run, part, value, field):
    raw = json.loads((shapes_run / "metrics.json").read_text())
    run_dir = copy_run(shapes_run, tmp_path / "odd", metrics_json={**raw, part: value})
    with pytest.raises(EmbedderError) as info:
        load_run(run_dir)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"damaged run {run_dir}: metrics.json {field}"), message

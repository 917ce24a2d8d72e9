"""embedder/progress.py: the stages a training goes through (first answer, then improvement), and what an epoch
reports."""

from __future__ import annotations

import pytest

from embedder.progress import EpochStats, Progress, Stage, counter, silent
from tests.helpers import cfg

ORDER = [
    "scan",
    "plan",
    "note",
    "validate",
    "train",
    "epoch",
    "embed",
    "index",
    "calibrate",
    "evaluate",
    "baselines",
    "write",
    "queryable",
    "map",
    "done",
]


def test_stage__listed_in_pipeline_order_and_equal_to_its_name():
    assert [s.value for s in Stage] == ORDER
    assert Stage.TRAIN == "train" and str(Stage.TRAIN) == "train" and f"{Stage.EMBED}" == "embed"
    assert Stage("epoch") is Stage.EPOCH
    with pytest.raises(ValueError):
        Stage("sleep")


def test_epoch_stats__to_dict_holds_every_field_as_history_json_stores_it():
    stats = EpochStats(1, 0.5, 0.25, 0.4, 0.9, 0.8, 0.7, 1.5)
    assert stats.to_dict() == {
        "epoch": 1,
        "loss": 0.5,
        "active_fraction": 0.25,
        "ap_distance": 0.4,
        "an_distance": 0.9,
        "val_precision_at_1": 0.8,
        "val_map_at_r": 0.7,
        "seconds": 1.5,
        "val_unseen_map_at_r": None,
        "val_label_accuracy": None,
        "best": False,
    }


def test_progress__defaults_and_silent_listens_to_nothing():
    p = Progress(Stage.SCAN)
    assert (p.done, p.total, p.epoch, p.loss, p.message, p.stats, p.extra) == (0, 0, 0, None, "", None, {})
    assert Progress(Stage.SCAN).extra is not p.extra
    assert silent(p) is None


@pytest.mark.slow  # trains for a second on generated shapes
def test_stage__a_training_answers_first_then_trains_each_part_in_order(shapes_folder, tmp_path):
    from embedder.verbs.pipeline import train

    events: list[Progress] = []
    train(cfg(shapes_folder, tmp_path / "run"), progress=events.append)
    stages = [e.stage for e in events if e.stage not in (Stage.NOTE, Stage.VALIDATE)]
    assert all(isinstance(s, Stage) for s in stages)
    assert stages[0] == Stage.SCAN and stages[-1] == Stage.DONE
    # The first answer: scanned, planned, embedded, indexed, calibrated and written before any training step.
    first = stages[: stages.index(Stage.QUERYABLE) + 1]
    assert Stage.TRAIN not in first and Stage.EPOCH not in first
    seen = list(dict.fromkeys(first))
    assert seen == ["scan", "plan", "embed", "index", "calibrate", "write", "queryable"]
    # Then the improvement: its evaluation, the training's epochs, and the run written once more at the end.
    later = list(dict.fromkeys(stages[len(first) :]))
    assert later.index(Stage.EVALUATE) < later.index(Stage.TRAIN) < later.index(Stage.EPOCH) < later.index(Stage.DONE)
    assert stages[-2] == Stage.WRITE
    assert set(ORDER) - {"note", "validate", "map"} == set(stages)  # every stage says when it runs
    # Validation embeds its images before training (epoch 0) and after the epoch's steps, before its line.
    assert all(e.total and 0 < e.done <= e.total for e in events if e.stage == Stage.VALIDATE)


def test_counter__reports_done_and_total_as_a_stage():
    events: list[Progress] = []
    counter(events.append, Stage.EMBED, "the gallery", epoch=2)(3, 10)
    (p,) = events
    assert (p.stage, p.done, p.total, p.message, p.epoch) == (Stage.EMBED, 3, 10, "the gallery", 2)

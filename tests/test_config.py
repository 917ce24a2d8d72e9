"""embedder/config.py: every setting described once. The messages name the CLI flag and the range in words;
bounds are inclusive unless ``below``; the cross-field checks of ``validate``; every train field is described."""

from __future__ import annotations

from dataclasses import fields

import pytest

from embedder.config import (
    STAGES,
    IndexConfig,
    IndexSettings,
    ModelConfig,
    SelectionSettings,
    TrainConfig,
    TrainingSettings,
)
from embedder.errors import EmbedderError
from embedder.settings import check_settings, field_type, setting_of, settings_of
from tests.helpers import TRAIN_OF_SCHEMA_2


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"margin": 5}, "--margin must be in [0.001, 2], got 5"),
        ({"margin": 0.0}, "--margin must be in [0.001, 2], got 0.0"),
        ({"dim": 1}, "--dim must be in [2, 4096], got 1"),
        ({"epochs": -1}, "--epochs must be in [0, 10000], got -1"),
        ({"lr": 0}, "--lr must be above 0, got 0"),
        ({"backbone_lr": -1e-4}, "--backbone-lr must be at least 0, got -0.0001"),
        ({"test_fraction": 1.0}, "--test-fraction must be in [0, 1), got 1.0"),
        ({"unseen_classes": 0.8}, "--unseen-classes must be in [0, 0.8), got 0.8"),
        ({"k": 0}, "--k must be in [1, 100], got 0"),
        (
            {"backbone": "vgg"},
            "unknown --backbone 'vgg': choose one of auto, convnet, resnet18, resnet50, efficientnet_lite0",
        ),
        ({"miner": "easy"}, "unknown --miner 'easy': choose one of semihard, hard, all, batch-hard"),
        (
            {"backbone": "vgg", "margin": 5},
            "unknown --backbone 'vgg': choose one of auto, convnet, resnet18, resnet50, efficientnet_lite0",
        ),  # the first field in declaration order
    ],
)
def test_check_settings__the_first_bad_field_names_its_flag_and_range(changes, message):
    assert check_settings(TrainConfig(**changes)) == message
    with pytest.raises(EmbedderError) as info:
        TrainConfig(**changes).validate()
    assert str(info.value) == message


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"margin": 0.001},
        {"margin": 2.0},  # inclusive bounds
        {"epochs": 0},
        {"test_fraction": 0.0, "val_fraction": 0.0},
        {"test_fraction": 0.99999, "val_fraction": 0.0},  # ``below``: anything under it
        {"image_size": None, "unseen_classes": None, "pretrained": None},  # unset: "auto", never checked
        {"pretrained": True, "freeze_bn": False},
        {"backbone_lr": 0.0},
    ],
)
def test_check_settings__values_at_the_bounds_and_unset_ones_pass(changes):
    assert check_settings(TrainConfig(**changes)) is None


def test_check_settings__a_brute_force_walk_over_every_numeric_field_agrees_with_its_setting():
    for f, s in settings_of(TrainConfig):
        if field_type(TrainConfig, f.name) not in (int, float) or s.choices:
            continue
        for value in (-1e9, -1, -1e-9, 0, 1e-9, 0.5, 1, 2, 3, 100, 4096, 1e9):
            if field_type(TrainConfig, f.name) is int and value != int(value):
                continue
            ok = (
                (s.low is None or value >= s.low)
                and (s.high is None or value <= s.high)
                and (s.below is None or value < s.below)
                and (not s.positive or value > 0)
            )
            problem = check_settings(TrainConfig(**{f.name: value}))
            assert (problem is None) == ok, (f.name, value, problem)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"test_fraction": 0.5, "val_fraction": 0.4}, "test and validation fractions leave too little to train on"),
        (
            {"classes_per_batch": 1024, "per_class": 5},
            "a batch (classes-per-batch x per-class) holds at most 4096 images",
        ),
    ],
)
def test_validate__settings_fine_alone_but_not_together(changes, message):
    assert check_settings(TrainConfig(**changes)) is None
    with pytest.raises(EmbedderError) as info:
        TrainConfig(**changes).validate()
    assert str(info.value) == message


def test_validate__just_inside_the_cross_field_limits():
    TrainConfig(test_fraction=0.45, val_fraction=0.44).validate()
    TrainConfig(classes_per_batch=1024, per_class=4).validate()


def test_settings_of__every_train_field_is_described_and_none_of_the_model_fields():
    assert [f.name for f, _ in settings_of(TrainConfig)] == [f.name for f in fields(TrainConfig)]
    assert settings_of(ModelConfig) == []


def test_from_dict__ignores_what_it_does_not_know_and_round_trips():
    cfg = TrainConfig(epochs=7, miner="hard")
    assert TrainConfig.from_dict({**cfg.to_dict(), "from_the_future": 1}) == cfg


@pytest.mark.parametrize(
    "changes, problem",
    [
        ({}, None),
        ({"backbone": "auto"}, "unknown backbone 'auto'"),
        ({"backbone": "vgg"}, "unknown backbone 'vgg'"),
        ({"dim": 1}, "model.dim must be in [2, 4096], got 1"),
        ({"dim": None}, None),
        ({"image_size": 4}, "model.image_size must be in [8, 1024], got 4"),
        ({"image_size": 4096}, "model.image_size must be in [8, 1024], got 4096"),  # what --image-size allows
        ({"backbone": "onnx", "image_size": 2048, "dim": 65536}, None),  # what import-model allows
        ({"backbone": "onnx", "image_size": 4096}, "model.image_size must be in [8, 2048], got 4096"),
        ({"resize": "pad"}, "unknown resize 'pad'"),
        ({"augment": "heavy"}, "unknown augmentation 'heavy'"),
        ({"std": (0.5, 0.0, 0.5)}, "std must be positive"),
    ],
)
def test_model_config_problem__what_a_file_may_hold_that_no_network_can_be_built_from(changes, problem):
    assert ModelConfig(**changes).problem() == problem


def test_stages__every_train_field_belongs_to_exactly_one_stage_in_the_order_they_are_shown():
    owners = {
        f.name: [stage.__name__ for stage in STAGES if f.name in {g.name for g in fields(stage)}]
        for f in fields(TrainConfig)
    }
    assert {name: len(stages) for name, stages in owners.items()} == {f.name: 1 for f in fields(TrainConfig)}
    assert sum(len(fields(stage)) for stage in STAGES) == len(fields(TrainConfig))
    assert [f.name for f in fields(TrainConfig)] == [f.name for stage in STAGES for f in fields(stage)]
    assert owners["n_trees"] == ["IndexSettings"] and owners["backbone"] == ["ModelSettings"]


def test_stage__a_view_carries_its_own_settings_and_nothing_else():
    cfg = TrainConfig(n_trees=7, shard_items=500, seed=3, epochs=2, margin=0.3)
    index = cfg.stage(IndexSettings)
    assert index == IndexSettings(n_trees=7, shard_items=500)
    assert not hasattr(index, "seed") and not hasattr(index, "epochs")
    training = cfg.stage(TrainingSettings)
    assert (training.epochs, training.margin) == (2, 0.3) and not hasattr(training, "n_trees")
    assert [f.name for f in fields(training)] == [f.name for f in fields(TrainingSettings)]


def test_index_config__its_run_settings_and_their_defaults_are_the_index_stages():
    assert IndexConfig().n_trees == IndexSettings().n_trees == TrainConfig().n_trees
    assert IndexConfig().shard_items == IndexSettings().shard_items == TrainConfig().shard_items
    shared = {f.name for f in fields(IndexSettings)}
    assert {f.name for f in fields(IndexConfig)} >= shared
    for f in fields(IndexConfig):
        if f.name in shared:  # the same field, not a copy with its own default
            assert f.metadata["setting"] is setting_of(IndexSettings, f.name)
    config = IndexConfig.of(TrainConfig(n_trees=7, shard_items=500).stage(IndexSettings), seed=3)
    assert (config.n_trees, config.shard_items, config.seed) == (7, 500, 3)
    assert config.target_recall == IndexConfig().target_recall  # the tuning no flag sets stays at its default


def test_from_dict__an_old_flat_train_section_loads_into_the_same_config():
    cfg = TrainConfig.from_dict(TRAIN_OF_SCHEMA_2)
    assert {k: v for k, v in cfg.to_dict().items() if k in TRAIN_OF_SCHEMA_2} == TRAIN_OF_SCHEMA_2
    assert (cfg.finetune, cfg.cv_patience) == (True, 5)  # what it lacks: today's defaults
    assert cfg.to_dict() == {
        **TRAIN_OF_SCHEMA_2,
        "finetune": True,
        "cv_patience": 5,
    }  # written back flat, nothing nested
    assert cfg.stage(TrainingSettings).classes_per_batch == 3 and cfg.stage(SelectionSettings).selection == "holdout"

"""embedder/settings.py: a setting's range in words, and the field helpers the CLI and the Train page are made
with."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, make_dataclass
from typing import ClassVar

import pytest

from embedder.config import TrainConfig
from embedder.settings import Setting, default_of, field_type, groups_of, setting


@pytest.mark.parametrize(
    "setting, words",
    [
        (Setting("h", low=0, high=1), "in [0, 1]"),
        (Setting("h", low=0.001, high=2.0), "in [0.001, 2]"),
        (Setting("h", low=0, below=1), "in [0, 1)"),
        (Setting("h", low=2), "at least 2"),
        (Setting("h", positive=True), "above 0"),
        (Setting("h"), ""),
        (Setting("h", choices=("a", "b")), ""),
    ],
)
def test_bounds_text__the_range_in_words(setting, words):
    assert setting.bounds_text() == words


def test_field_type__without_its_optional_none():
    assert [
        field_type(TrainConfig, n) for n in ("image_size", "pretrained", "margin", "backbone", "unseen_classes")
    ] == [
        int,
        bool,
        float,
        str,
        float,
    ]


def test_default_of__a_plain_default_and_a_factory():
    @dataclass
    class C:
        plain: int = 3
        made: list = field(default_factory=lambda: [1, 2])

    assert [default_of(f) for f in fields(C)] == [3, [1, 2]]
    assert default_of(next(f for f in fields(TrainConfig) if f.name == "miner")) == "semihard"


@dataclass
class _Fit:
    """How it fits."""

    title: ClassVar[str] = "Fit"
    rate: float = setting(0.1, "how fast", positive=True)
    rounds: int = setting(3, "how long", low=1)


@dataclass
class _Out:
    """Where it goes."""

    title: ClassVar[str] = "Out"
    folder: str = setting("x", "where")


@dataclass
class _Both(_Out, _Fit):
    plain: int = 0  # not a setting: no flag, no widget


def test_groups_of__a_config_of_stages_groups_its_settings_by_the_stage_that_declares_them():
    groups = groups_of(_Both)
    assert [(g.title, g.about, [f.name for f, _ in g.settings]) for g in groups] == [
        ("Fit", "How it fits.", ["rate", "rounds"]),
        ("Out", "Where it goes.", ["folder"]),
    ]
    assert groups_of(_Fit) == groups[:1]


def test_groups_of__settings_declared_outside_any_stage_are_one_untitled_group():
    extended = make_dataclass("Extended", [("knob", int, setting(1, "a knob"))], bases=(_Both,))
    assert [(g.title, [f.name for f, _ in g.settings]) for g in groups_of(extended)] == [
        ("Fit", ["rate", "rounds"]),
        ("Out", ["folder"]),
        (None, ["knob"]),
    ]
    assert [g.title for g in groups_of(Setting)] == []  # no described fields, no groups

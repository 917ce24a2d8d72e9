"""embedder/settings.py: a setting's range in words, and the field helpers the CLI and the Train page are made
with."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import pytest

from embedder.config import TrainConfig
from embedder.settings import Setting, default_of, field_type


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

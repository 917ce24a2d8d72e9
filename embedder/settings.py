"""How a config field is described once and shown, parsed and checked from that one description: its help, range
and choices (``Setting``). The CLI's flags (cli.py) and the Train page's widgets (ui/forms.py) are made from these
descriptions, and ``check_settings`` checks a config against them. A config made of stage dataclasses shows its
settings grouped by stage (``groups_of``)."""

from __future__ import annotations

import typing
from dataclasses import MISSING, dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class Setting:
    """How a config field is shown and checked. Ranges are inclusive; ``None`` values skip the range check."""

    help: str
    low: float | None = None
    high: float | None = None
    below: float | None = None  # an exclusive upper bound (shares of a dataset: < 1)
    positive: bool = False  # must be above 0 (learning rates)
    choices: tuple | None = None
    label: str | None = None  # the Train page's label (default: the help's first words)
    main: bool = False  # on the Train page's first row; the rest sit under "More settings"
    app: bool = True  # the Train page offers it (data and output folders have their own widgets)
    step: float | None = None  # the Train page's step for numbers

    def bounds_text(self) -> str:
        """The range in words: "in [0, 1)", "at least 2", "above 0"."""
        if self.low is not None and (self.high is not None or self.below is not None):
            return f"in [{self.low:g}, " + (f"{self.high:g}]" if self.high is not None else f"{self.below:g})")
        if self.low is not None:
            return f"at least {self.low:g}"
        return "above 0" if self.positive else ""


def setting(default: Any, help: str, **kw) -> Any:
    return field(default=default, metadata={"setting": Setting(help, **kw)})


def share(default: float | None, help: str, label: str, below: float | None = 1.0, high: float | None = None) -> Any:
    """A setting that is a share (of each class, of the classes, of a network): from 0 up to ``below`` (or
    ``high``, inclusive)."""
    return setting(default, help, low=0.0, below=None if high else below, high=high, step=0.05, label=label)


def settings_of(cls) -> list[tuple[Any, Setting]]:
    """(dataclass field, Setting) of every described field of ``cls``, in declaration order."""
    return [(f, f.metadata["setting"]) for f in fields(cls) if "setting" in f.metadata]


@dataclass(frozen=True)
class Group:
    """The described fields one stage dataclass declares, under its heading: a group of flags in --help, a group
    of widgets on the Train page. ``title`` is None for fields declared outside any stage."""

    title: str | None
    about: str | None  # the stage's docstring: one line on what its settings decide
    settings: list[tuple[Any, Setting]]


def groups_of(cls) -> list[Group]:
    """``cls``'s described fields grouped by the dataclass that declares each, in field order. A stage is a
    dataclass with a ``title`` class variable (``ModelSettings``, ...); a config made of stages (``TrainConfig``)
    gets one group a stage, a config with none one untitled group."""
    groups: list[Group] = []
    last = None
    for f, s in settings_of(cls):
        owner = next(c for c in cls.__mro__ if f.name in vars(c).get("__annotations__", {}))
        if owner is not last:
            title = vars(owner).get("title")
            groups.append(Group(title, owner.__doc__ if title else None, []))
            last = owner
        groups[-1].settings.append((f, s))
    return groups


def value_problem(s: Setting, value: Any, name: str) -> str | None:
    """Why ``value`` is outside the choices or range of ``s``, in words that start with ``name`` (a flag, or a
    field of a file); None when it fits, or is None or a flag's bool."""
    if value is None or isinstance(value, bool):
        return None
    if s.choices and value not in s.choices:
        return f"unknown {name} '{value}': choose one of {', '.join(map(str, s.choices))}"
    too_low = (s.low is not None and value < s.low) or (s.positive and value <= 0)
    too_high = (s.high is not None and value > s.high) or (s.below is not None and value >= s.below)
    return f"{name} must be {s.bounds_text()}, got {value}" if too_low or too_high else None


def check_settings(obj, prefix: str | None = None) -> str | None:
    """The first field of ``obj`` outside its choices or range, as a message naming the CLI flag (or, with
    ``prefix``, the field ``prefix.name`` of a file); or None."""
    for f, s in settings_of(type(obj)):
        name = f"{prefix}.{f.name}" if prefix else "--" + f.name.replace("_", "-")
        problem = value_problem(s, getattr(obj, f.name), name)
        if problem:
            return problem
    return None


def setting_of(cls, name: str) -> Setting:
    """The description of ``cls``'s field ``name``."""
    return next(s for f, s in settings_of(cls) if f.name == name)


def default_of(f) -> Any:
    """A dataclass field's default value."""
    return f.default if f.default is not MISSING else f.default_factory()


def field_type(cls, name: str) -> type:
    """A field's type without ``| None``: int for ``int | None``."""
    hint = typing.get_type_hints(cls)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint

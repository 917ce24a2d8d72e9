"""The shape of a run's split.json, history.json and metrics.json (whose records are records.py's), checked on load
(pydantic, strict) so that a damaged or hand-edited file is named with its field, never met later as a TypeError in
``predict`` or a page.

What the program reads is typed; what only a person reads (curves, notes) may be any JSON, within the depth and
size limits of limits.py. A key may be missing (older runs lack newer keys) but never of another type.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any

from annotated_types import Len
from typing_extensions import TypedDict

from .records import Metrics, Number

Row = Annotated[list[str], Len(2, 2)]  # [path relative to its root, label name]


class Split(TypedDict, total=False):
    """split.json: the recorded parts (run.RECORDED_PARTS) and where separate test queries live."""

    test: list[Row]
    val: list[Row]
    unseen_val: list[Row]
    unseen_test: list[Row]
    queries_root: str | None


class Epoch(TypedDict, total=False):
    """A row of history.json (training.train.EpochStats)."""

    epoch: int
    loss: Number
    active_fraction: Number
    ap_distance: Number
    an_distance: Number
    val_precision_at_1: Number
    val_map_at_r: Number
    val_unseen_map_at_r: Number
    val_label_accuracy: Number
    seconds: Number
    best: bool


History = list[Epoch]


SCHEMAS = {"split.json": Split, "history.json": History, "metrics.json": Metrics}  # Metrics: records.py


@functools.cache
def _adapter(name: str):
    from pydantic import TypeAdapter

    return TypeAdapter(SCHEMAS[name])


def problem(name: str, value: Any) -> str | None:
    """Why ``value`` (the parsed ``name``) does not fit its schema, as "field a.b.2: what is wrong"; or None."""
    from pydantic import ValidationError

    try:
        _adapter(name).validate_python(value, strict=True)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"]) or "(top level)"
        return f"field {where}: {error['msg'].lower()}"
    return None

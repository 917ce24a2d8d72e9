"""The shape of a run's split.json, history.json and metrics.json, checked on load (pydantic, strict) so that a
damaged or hand-edited file is named with its field, never met later as a TypeError in ``predict`` or a page.

What the program reads is typed; what only a person reads (curves, notes) may be any JSON, within the depth and
size limits of limits.py. A key may be missing (older runs lack newer keys) but never of another type.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any

from annotated_types import Len
from typing_extensions import TypedDict

Number = float | None  # a metric may be missing (None) where nothing could be scored
Count = int | None
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


class Scores(TypedDict, total=False):
    """One evaluation: of the kept network, a candidate or a baseline (answers/evaluate.py, metrics.py)."""

    n_queries: Count
    n_unmatched_queries: Count
    n_scored: Count
    precision_at_1: Number
    r_precision: Number
    map_at_r: Number
    knn_accuracy: Number
    knn_k: Count
    knn_accuracy_at_1: Number
    best_k: Count
    knn_accuracy_at_best_k: Number
    knn_accuracy_by_k: dict[str, Number]
    macro_accuracy: Number
    label_accuracy: Number
    label_accuracy_ci: list[float]
    score_map_at_r: Number
    queries: str


class PerClass(TypedDict, total=False):
    n: int
    accuracy: Number


class Confusion(TypedDict, total=False):
    labels: list[str]
    matrix: list[list[int]]


class Test(Scores, total=False):
    baselines: dict[str, Scores]
    per_class: dict[str, PerClass]
    confusion: Confusion
    open_set: dict[str, Any]
    calibration: dict[str, Any]
    confused_pairs: list[dict[str, Any]]
    novelty: dict[str, Any]


class Unknown(TypedDict, total=False):
    threshold: Number
    target_precision: Number
    precision: Number
    coverage: Number
    auroc: Number
    calibrated_on: str


class Confidence(TypedDict, total=False):
    kind: str
    coef: list[float]
    intercept: float
    n: int
    right: int


class Novelty(TypedDict, total=False):
    threshold: Number
    rate: Number
    reference: Count
    space: str
    off: str


class KChoice(TypedDict, total=False):
    k: int
    why: str
    label_accuracy_by_k: dict[str, Number]


class NotReevaluated(TypedDict, total=False):
    images: int
    new_classes: list[str]
    note: str


class Metrics(TypedDict, total=False):
    """metrics.json: what predict, evaluate, the CLI and the pages read; other keys are kept as they are."""

    kept: str
    index: dict[str, Any]
    validation: Scores
    validation_candidates: dict[str, Scores]
    unknown: Unknown
    confidence: Confidence | None
    k: KChoice
    novelty: Novelty
    test: Test
    not_reevaluated: NotReevaluated


SCHEMAS = {"split.json": Split, "history.json": History, "metrics.json": Metrics}


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

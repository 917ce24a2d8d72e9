"""The typed records of a run's metrics.json: its scores next to the baselines, calibration, the "unknown" threshold,
novelty, the choice of k, what was kept and what training did to the first answer.

One description serves twice: bundle_read.py checks a run's metrics.json against it strictly on load (a field of
another type is named in one line, schemas.py), and the readers (pages, ui/, the CLI, predict) take the parsed
record and read fields, where they once followed ``.get`` chains through a dict. The file on disk is unchanged:
the writers (verbs/, answers/, training/) still fill ``Run.metrics``, the JSON dict, and ``Run.record`` parses it.

Older runs lack newer keys: every field may be missing (None, or an empty list or dict), never of another type. A
part (an object) may be missing but not null, as the file's schema always said (``Part``); a number may be null
where nothing could be scored. Keys no reader needs (notes, skipped files) stay in the dict as they were written and
are left out here.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from typing_extensions import Self

Number = float | None  # a metric may be missing (None) where nothing could be scored
Count = int | None


def _not_null(value: Any) -> Any:
    if value is None:
        raise ValueError("null where a part was expected: a part may be missing, never null")
    return value


P = TypeVar("P")
Part = Annotated[P | None, BeforeValidator(_not_null)]  # None when missing; written as null, refused


class Record(BaseModel):
    """A part of metrics.json: frozen, other keys ignored (they stay in ``Run.metrics``)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    @classmethod
    def of(cls, value: dict | None) -> Self:
        """``value``, this part's JSON (from a file checked on load, or a writer in this process), as its record;
        None or {} as an empty one."""
        return cls.model_validate(value or {})

    def __bool__(self) -> bool:
        """Whether the part holds anything: one written empty (``{}``) reads as missing, as the dict did."""
        return bool(self.model_fields_set)


class Scores(Record):
    """One evaluation: of the kept network, a candidate or a baseline (answers/evaluate.py, answers/metrics.py)."""

    n_queries: Count = None
    n_unmatched_queries: Count = None
    n_scored: Count = None
    precision_at_1: Number = None
    r_precision: Number = None
    map_at_r: Number = None
    knn_accuracy: Number = None
    knn_k: Count = None
    knn_accuracy_at_1: Number = None
    best_k: Count = None
    knn_accuracy_at_best_k: Number = None
    knn_accuracy_by_k: dict[str, Number] = {}  # "1", "5", ... -> accuracy
    macro_accuracy: Number = None
    label_accuracy: Number = None
    label_accuracy_ci: Part[list[float]] = None  # [low, high], 95% Wilson
    score_map_at_r: Number = None
    unseen_map_at_r: Number = None
    unseen_precision_at_1: Number = None
    queries: str | None = None  # what the queries were: "held-out split", or a folder
    scored_on: str | None = None  # "out-of-fold" where cross-validation scored it


class Disjoint(Scores):
    """Classes held out of training retrieving each other (leave-one-out), next to the baselines."""

    baselines: dict[str, Scores] = {}


class PerClass(Record):
    n: int = 0
    accuracy: Number = None


class Confusion(Record):
    labels: list[str] = []
    matrix: list[list[int]] = []  # rows: the true label, columns: the vote's


class Example(Record):
    query: str = ""
    neighbour: str = Field("", alias="neighbor")  # the gallery image that pulled the query the wrong way


class ConfusedPair(Record):
    true: str = ""
    predicted: str = ""
    count: int = 0
    examples: list[Example] = []


class CurvePoint(Record):
    """The "unknown" trade-off at one distance threshold."""

    threshold: Number = None
    coverage: Number = None  # share of known queries answered
    accuracy: Number = None  # share of the answered that are right
    unknown_accepted: Number = None  # share of unknown queries wrongly answered


class OpenSet(Record):
    """Held-out queries asked again with their own class removed: known against unknown by nearest distance."""

    auroc: Number = None  # known against unknown by nearest distance
    threshold: Number = None  # the distance set for target_precision on these queries; what follows is at it
    target_precision: Number = None
    curve: list[CurvePoint] = []  # the trade-off at 41 thresholds, for the Evaluate page's slider
    precision: Number = None
    coverage: Number = None
    accuracy: Number = None
    unknown_accepted: Number = None


class Bin(Record):
    """One confidence bin of a reliability diagram: [low, high), its answers' mean confidence and share right."""

    low: Number = None
    high: Number = None
    count: Count = None  # answers in the bin
    confidence: Number = None
    accuracy: Number = None


class Reliability(Record):
    """A reliability diagram and its expected calibration error, with a 95% bootstrap interval."""

    bins: list[Bin] = []
    ece: Number = None
    ece_ci: list[float] | None = None
    n: Count = None


class Calibration(Record):
    """The raw vote share (before) against the calibrated confidence (after) on held-out answers."""

    before: Reliability | None = None
    after: Reliability | None = None


class Flagged(Record):
    """How many held-out images, all of the gallery's kind, novelty took for unlike it."""

    novel: Count = None
    n: Count = None
    share: Number = None
    threshold: Number = None


class Evaluation(Scores):
    """The held-out evaluation: the scores, the baselines beside them, and where the run goes wrong."""

    baselines: dict[str, Scores] = {}
    per_class: dict[str, PerClass] = {}
    confusion: Part[Confusion] = None
    confused_pairs: list[ConfusedPair] = []
    open_set: Part[OpenSet] = None
    calibration: Part[Calibration] = None
    novelty: Part[Flagged] = None
    class_disjoint: Part[Disjoint] = None


class Unknown(Record):
    """The "unknown" distance threshold, set for ``target_precision`` on validation (or out-of-fold) answers."""

    threshold: Number = None
    calibrated_on: str | None = None  # "validation" or "cross-validation"
    target_precision: Number = None
    precision: Number = None  # what the threshold gives on those answers: too low, and it would swallow them
    coverage: Number = None
    auroc: Number = None


class Confidence(Record):
    """The map from (vote share, nearest distance) to the probability of being right (calibrate.py)."""

    kind: str | None = None  # "logistic" or "constant"
    coef: list[float] | None = None
    intercept: Number = None
    value: Number = None  # a constant's
    n: Count = None
    right: Count = None


class Novelty(Record):
    """How far from every gallery image a query may be and still be like them; or why the run has no such test."""

    threshold: Number = None
    rate: Number = None
    reference: Count = None
    space: str | None = None
    off: str | None = None


class KChoice(Record):
    k: Count = None
    why: str | None = None
    label_accuracy_by_k: dict[str, Number] = {}


class NotReevaluated(Record):
    """Images ``add`` put in the gallery after the run was evaluated."""

    images: Count = None
    new_classes: list[str] = []
    note: str | None = None


class Standing(Record):
    """A run's label accuracy before or after training replaced it."""

    kept: str | None = None
    validation: Number = None
    test: Number = None


class Upgrade(Record):
    """What training did to the run's first answer: "replaced", "kept" or "cancelled"."""

    result: str | None = None
    why: str | None = None
    at: str | None = None
    before: Standing | None = None
    after: Standing | None = None


class Improving(Record):
    """A first answer that a training is still improving."""

    status: str | None = None
    pending: str | None = None
    pid: Count = None
    since: str | None = None


class Metrics(Record):
    """metrics.json."""

    kept: str | None = None  # which model the run keeps, and why
    index: dict[str, Any] = {}  # the index's stats, as config.json records them (search/index.py describes them)
    validation: Part[Scores] = None
    validation_candidates: dict[str, Scores] = {}
    unknown: Part[Unknown] = None
    confidence: Confidence | None = None
    k: Part[KChoice] = None
    novelty: Part[Novelty] = None
    test: Part[Evaluation] = None
    not_reevaluated: Part[NotReevaluated] = None
    upgrade: Upgrade | None = None
    improving: Improving | None = None

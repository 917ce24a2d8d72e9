"""What long jobs report while they run: a stage, how far along, and per-epoch statistics.

The library never prints: the CLI turns these reports into tqdm bars, the app into st.progress.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import Enum


class Stage(str, Enum):
    """The pipeline's stages, in order (a str, so ``Stage.TRAIN == "train"``)."""

    SCAN = "scan"
    PLAN = "plan"  # splits, model and batch shape decided: ``message`` says what
    NOTE = "note"  # a message for the user, not a stage of its own
    VALIDATE = "validate"  # embedding validation images (before training: epoch 0, then after each epoch)
    TRAIN = "train"  # steps of one epoch
    EPOCH = "epoch"  # an epoch finished: ``stats`` holds its numbers
    EMBED = "embed"
    INDEX = "index"
    CALIBRATE = "calibrate"
    EVALUATE = "evaluate"
    BASELINES = "baselines"  # the same evaluation for raw pixels, the untrained and the pretrained network
    WRITE = "write"
    QUERYABLE = "queryable"  # the run at ``out`` answers now (its first answer): ``message`` says what it holds
    MAP = "map"  # the run's maps computed after it is written (maps/precompute.py): ``extra`` says how far
    DONE = "done"

    def __str__(self) -> str:
        return self.value


@dataclass
class EpochStats:
    """What one epoch reports through the callback, and what history.json stores."""

    epoch: int
    loss: float
    active_fraction: float  # share of all valid triplets in a batch that still violate the margin
    ap_distance: float  # mean anchor-positive distance
    an_distance: float  # mean anchor-negative distance
    val_precision_at_1: float
    val_map_at_r: float
    seconds: float
    val_unseen_map_at_r: float | None = None  # classes never trained on (leave-one-out among them)
    val_label_accuracy: float | None = None  # share of validation images the k-NN vote labels right
    best: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Progress:
    """One progress report from a long job."""

    stage: Stage
    done: int = 0
    total: int = 0
    epoch: int = 0
    loss: float | None = None
    message: str = ""
    stats: EpochStats | None = None
    extra: dict = field(default_factory=dict)


Reporter = Callable[[Progress], None]


def epoch_ended(epoch: int, epochs: int, stats: EpochStats, seconds_left: float) -> Progress:
    """The report of an epoch that ended: its statistics, and the estimate of the time left (``seconds_left``)."""
    return Progress(
        Stage.EPOCH,
        epoch=epoch,
        done=epoch,
        total=epochs,
        loss=stats.loss,
        stats=stats,
        extra={"seconds_left": seconds_left},
    )


def silent(_: Progress) -> None:
    """The reporter used when nobody listens."""


def counter(report: Reporter, stage: Stage, message: str = "", epoch: int = 0) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` callback (embed_images, topk, scan_folder) that reports ``stage``."""
    return lambda done, total: report(Progress(stage, done=done, total=total, epoch=epoch, message=message))


def seconds_left(epoch: int, bad: int, epochs: int, patience: int, seconds: float, after: float = 0.0) -> float:
    """Training time still to come after ``epoch``, estimated from the time it took (``seconds``): early stopping
    runs at most ``patience - bad`` more epochs without a better one, and none past ``epochs``; ``after`` is what
    follows the epochs (cross-validation's last network). An estimate that errs long: a better epoch restarts the
    count, and the last one may stop sooner."""
    return max(0, min(epochs - epoch, patience - bad)) * seconds + after

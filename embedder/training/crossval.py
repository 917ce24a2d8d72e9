"""Choosing the kept model by k-fold cross-validation, where one validation split is too small to decide.

With 20 validation images a class, one or two images decide between fine-tuning and the pretrained features,
and between epochs: noise. Here the training and validation images are split into K stratified folds and K
networks train side by side, each on K-1 folds, on the same schedule. After every epoch each labels
its own held-out fold against the folds it trained on; pooled, every image is labelled by a network that never
saw it. The epoch, early stopping and the choice against the pretrained features (select.py's paired rule) are
decided on all N images instead of a tenth of them. A last network then trains on all the images to the chosen
epoch; calibration (confidence and "unknown") is fitted on the chosen candidate's pooled out-of-fold answers.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..answers.calibrate import Answers
from ..answers.metrics import wilson_interval
from ..config import TrainConfig
from ..images.transforms import eval_transform, train_transform
from ..network.embed import DecodedImages
from ..network.model import EmbeddingNet
from ..progress import EpochStats, Progress, Reporter, Stage, epoch_ended, seconds_left
from .objective import optimizer_for, set_learning_rate
from .plan import Plan
from .select import Candidate, averaged_state, improves, keep
from .shared import FrozenStages
from .train import Fitted, Loop, averaged_candidate, decoded_cache, starting_points
from .trainee import new_network
from .validate import Score

SMALL_VALIDATION = 50  # validation images a class below which "auto" cross-validates
MAX_IMAGES = 20_000  # above this K extra trainings cost too much, and the validation share is large enough


def use_cv(pl: Plan, cfg: TrainConfig) -> bool:
    """Whether the kept model is chosen by cross-validation: ``cfg.selection``; for "auto", small data with a
    pretrained backbone, or with no validation images at all.

    The question cross-validation answers well is whether fine-tuning beats the pretrained features. A network
    trained from scratch has no such fallback, and its validation split checks the very network it keeps, which
    the last all-images training here does not: on the digits (seed 10, never reported) holdout kept a network
    with held-out P@1 0.997, cross-validation 0.992.
    """
    if cfg.selection == "holdout" or cfg.epochs == 0 or not folds(pl, cfg):
        return False
    if cfg.selection == "cv":
        return True
    n_images = len(pl.train_idx) + len(pl.val_idx)
    per_class = len(pl.val_idx) / max(1, len(pl.trainable_classes))
    small = per_class < SMALL_VALIDATION and n_images <= MAX_IMAGES and not len(pl.unseen_val_idx)
    return small and (pl.model_config.pretrained or not len(pl.val_idx))


def merged(pl: Plan) -> Plan:
    """The plan a cross-validated run trains on: the validation share joins the training images."""
    rows = np.sort(np.concatenate([pl.train_idx, pl.val_idx]))
    return replace(pl, train_idx=rows, val_idx=np.zeros(0, dtype=np.int64))


def folds(pl: Plan, cfg: TrainConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """K stratified (train rows, held-out rows) pairs over the training and validation images; [] where the
    data cannot make two folds that each train on two classes."""
    from sklearn.model_selection import StratifiedKFold

    rows = np.sort(np.concatenate([pl.train_idx, pl.val_idx]))
    labels = pl.images.labels[rows]
    k = min(cfg.folds, int(np.bincount(labels).max()))
    if k < 2:
        return []
    with warnings.catch_warnings():  # classes smaller than K: sklearn warns, and puts them in fewer folds
        warnings.simplefilter("ignore", UserWarning)
        splits = list(StratifiedKFold(k, shuffle=True, random_state=cfg.seed).split(rows, labels))
    out = [(rows[tr], rows[te]) for tr, te in splits]
    ok = all((np.bincount(pl.images.labels[tr]) >= 2).sum() >= 2 for tr, _ in out)
    return out if ok else []


def pool(scores: list[Score], how: str) -> Score:
    """One score from the folds' scores of the same candidate: every out-of-fold image once."""
    scores = [s for s in scores if s]
    if not scores:
        return Score({}, np.zeros(0, dtype=bool))
    right = np.concatenate([s.correct for s in scores])
    n = np.array([len(s.correct) for s in scores], dtype=float)
    low, high = wilson_interval(int(right.sum()), len(right))
    m = {"label_accuracy": float(right.mean()), "label_accuracy_ci": [low, high], "n_scored": len(right)}
    for key in ("precision_at_1", "map_at_r", "score_map_at_r"):
        if all(key in s.metrics for s in scores):
            m[key] = float(np.average([s.metrics[key] for s in scores], weights=n))
    m["scored_on"] = how
    outcomes = [s.outcomes for s in scores]
    return Score(m, right, None if any(o is None for o in outcomes) else Answers.concat(outcomes))


@dataclass
class _Shared:
    """What the fold networks and the last one share: images decoded once, and the frozen stages' output."""

    decoded: DecodedImages
    device: torch.device | str  # where every network of the cross-validation trains
    frozen: FrozenStages | None = None  # set with the first network (pretrained backbones with frozen stages)

    def attach(self, loop: Loop, pl: Plan) -> None:
        """Let ``loop`` take the frozen stages' output from here (made with the first network that asks)."""
        model, n_frozen = loop.model, loop.n_frozen
        rows = np.sort(np.concatenate([pl.train_idx, pl.val_idx]))
        if self.frozen is None and FrozenStages.fits(model, n_frozen, len(rows)):
            mc, paths = model.config, [pl.images.paths[i] for i in rows]
            transforms = (eval_transform(mc), train_transform(mc))
            self.frozen = FrozenStages(model, n_frozen, paths, transforms, self.decoded, loop.cfg.batch_size_embed)
        if self.frozen is not None:
            loop.share(self.frozen)


@dataclass
class _Fold:
    loop: Loop
    optimizer: torch.optim.Optimizer
    start_state: dict  # its weights before training (a pretrained backbone's: with the PCA head)
    best_state: dict | None = None  # its weights at the best pooled epoch so far


def _start_folds(pl: Plan, cfg: TrainConfig, report: Reporter, shared: _Shared):
    """The fold networks, ready to train, and their pooled starting points (before training; pretrained)."""
    nets, starts, plains = [], [], []
    splits = folds(pl, cfg)
    how = f"{len(splits)}-fold cross-validation"
    for f, (tr, te) in enumerate(splits):
        counts = np.bincount(pl.images.labels[tr], minlength=len(pl.images.classes))
        fold_plan = replace(
            pl, train_idx=tr, val_idx=te, trainable_classes=[c for c in pl.trainable_classes if counts[c] >= 2]
        )
        trainee = new_network(pl, cfg, cfg.seed + 1_000 * (f + 1), shared.device)
        loop = Loop(fold_plan, cfg, trainee, report, cache=shared.decoded, outcomes=True)
        shared.attach(loop, pl)
        start, plain = starting_points(loop, report)
        nets.append(_Fold(loop, optimizer_for(trainee.model, cfg, loop.loss_fn), start.state))
        starts.append(start)
        plains.append(plain)
    start = Candidate(starts[0].name, pool([c.score for c in starts], how), 0)
    plain = None if plains[0] is None else Candidate(plains[0].name, pool([c.score for c in plains], how))
    return nets, start, plain, how


def _epoch(
    nets: list[_Fold], cfg: TrainConfig, epoch: int, how: str, report: Reporter, stop
) -> tuple[EpochStats, Score]:
    """One epoch of every fold network; the epoch's statistics with the pooled validation."""
    stats, scores = [], []
    for f, fold in enumerate(nets, 1):
        set_learning_rate(fold.optimizer, cfg, epoch)
        tagged = lambda p, f=f: report(replace(p, extra={**p.extra, "fold": f, "folds": len(nets)}))  # noqa: E731
        s, score = fold.loop.epoch(epoch, fold.optimizer, tagged, stop)
        stats.append(s)
        scores.append(score)
    pooled = pool(scores, how)
    m = pooled.metrics
    mean = lambda key: float(np.mean([getattr(s, key) for s in stats]))  # noqa: E731
    return EpochStats(
        epoch=epoch,
        loss=mean("loss"),
        active_fraction=mean("active_fraction"),
        ap_distance=mean("ap_distance"),
        an_distance=mean("an_distance"),
        val_precision_at_1=m.get("precision_at_1", float("nan")),
        val_map_at_r=m.get("map_at_r", float("nan")),
        seconds=sum(s.seconds for s in stats),
        val_label_accuracy=m.get("label_accuracy"),
    ), pooled


def cross_validate(pl: Plan, cfg: TrainConfig, report: Reporter, stop: Callable[[], bool], shared: _Shared):
    """Train the fold networks side by side, with early stopping on the pooled score; ``shared``: the device, the
    decoded images and the frozen-stage output they share.

    Returns (the starting point, the best epoch, the plain pretrained features or None, the best epoch averaged
    with its start or None, history), each candidate scored on every out-of-fold image.
    """
    nets, start, plain, how = _start_folds(pl, cfg, report, shared)
    report(
        Progress(
            Stage.NOTE,
            message=f"choosing the kept model by {how}: {len(nets)} networks train side by side on "
            f"{start.score.metrics.get('n_scored', 0):,} images, each labelling the fold it never sees",
        )
    )
    best, top, history, bad = start, start.score, [], 0
    for epoch in range(1, cfg.epochs + 1):
        if bad >= cfg.cv_patience or best.score.perfect:
            break
        stats, pooled = _epoch(nets, cfg, epoch, how, report, stop)
        stats.best = improves(pooled, best.score, top)
        top = max(top, pooled, key=lambda s: s.key)
        history.append(stats.to_dict())
        best, bad = (Candidate(f"epoch {epoch}", pooled, epoch), 0) if stats.best else (best, bad + 1)
        for fold in nets if stats.best and plain is not None and cfg.average_share < 1 else []:
            fold.best_state = copy.deepcopy(fold.loop.model.state_dict())
        last = (best.epoch or 0) * stats.seconds / max(1, len(nets) - 1)  # one network on all images, to the best
        left = 0.0 if best.score.perfect else seconds_left(epoch, bad, cfg.epochs, cfg.cv_patience, stats.seconds, last)
        report(epoch_ended(epoch, cfg.epochs, stats, left))
    return start, best, plain, _averaged(nets, best, cfg, how, report) if plain is not None else None, history


def _averaged(nets: list[_Fold], best: Candidate, cfg: TrainConfig, how: str, report: Reporter) -> Candidate | None:
    """The best epoch averaged with its pretrained start (``select.averaged_state``): each fold network's average
    labels its own fold, pooled. None where there is no trained epoch or the share is 1."""
    if not best.epoch or cfg.average_share >= 1:
        return None
    each = [averaged_candidate(f.loop, f.start_state, replace(best, state=f.best_state), report) for f in nets]
    return Candidate(each[0].name, pool([c.score for c in each], how), best.epoch, averaged=True)


def _train_all(pl: Plan, cfg: TrainConfig, chosen: Candidate, report: Reporter, stop, shared: _Shared) -> EmbeddingNet:
    """The kept network: trained on every training image to the chosen epoch (the pretrained backbone's PCA
    head when that was chosen), on the schedule the folds followed, from the images they decoded."""
    trainee = new_network(pl, cfg, cfg.seed, shared.device)
    model = trainee.model
    loop = Loop(pl, cfg, trainee, report, cache=shared.decoded)
    shared.attach(loop, pl)  # the epochs' views the folds trained on, reused where they were kept
    start, _ = starting_points(loop, report)  # the PCA head of a pretrained backbone, from all training images
    optimizer = optimizer_for(model, cfg, loop.loss_fn)
    for epoch in range(1, chosen.epoch + 1):
        report(
            Progress(
                Stage.NOTE, message=f"training on all {len(pl.train_idx):,} images: epoch {epoch} of {chosen.epoch}"
            )
        )
        set_learning_rate(optimizer, cfg, epoch)
        loop.epoch(epoch, optimizer, report, stop)
    if chosen.averaged:
        model.load_state_dict(averaged_state(start.state, model.state_dict(), cfg.average_share))
    return model.eval()


def fit_cv(
    pl: Plan,
    cfg: TrainConfig,
    device,
    report: Reporter,
    stop: Callable[[], bool],
    baseline: Candidate | None = None,
) -> Fitted:
    """``train.fit`` for a cross-validated run; ``pl`` as planned (its validation share is trained on at the end);
    ``baseline``: the run's first answer, scored on the same folds (first.py), which training must beat."""
    if cfg.resume:
        report(Progress(Stage.NOTE, message="a cross-validated run does not resume: starting from the beginning"))
    shared = _Shared(decoded_cache(pl.model_config), device)  # the folds and the last network decode each image once
    start, best, plain, averaged, history = cross_validate(pl, cfg, report, stop, shared)
    chosen, why = keep(start, best, plain, averaged, baseline)
    report(Progress(Stage.NOTE, message=f"kept {why}"))
    final = merged(pl)
    if chosen.model is not None:  # the run's first answer (first.py): nothing to train
        model = chosen.model
    elif chosen.epoch is None:  # the plain pretrained features: no head, nothing to train
        model = EmbeddingNet(replace(pl.model_config, dim=None)).to(device).eval()
    else:
        model = _train_all(final, cfg, chosen, report, stop, shared)
    candidates = {c.name: c.score.metrics for c in (plain, baseline, start, best, averaged) if c is not None}
    validation = {"validation": chosen.score.metrics, "validation_candidates": candidates}
    return Fitted(model, why, history, validation, outcomes=chosen.score.outcomes)

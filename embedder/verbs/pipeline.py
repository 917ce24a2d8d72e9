"""From an image folder to a run bundle, stage by stage:

    plan -> fit -> embed the gallery -> index -> calibrate -> evaluate -> write

Each stage is a function of the one before; progress leaves through ``report`` (every stage that can take more
than a moment reports its start, and counts what it works through), and ``stop()`` is polled throughout: a True
answer raises ``Cancelled`` and leaves the previous run at ``cfg.out`` untouched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..answers import novelty
from ..answers.calibrate import Answers, fit_confidence
from ..answers.evaluate import evaluate_run
from ..config import DEFAULT_K, IndexConfig, TrainConfig
from ..errors import Cancelled, EmbedderError
from ..images.transforms import eval_transform
from ..network.embed import embed_images
from ..network.model import resolve_device
from ..progress import Progress, Reporter, Stage, counter, silent
from ..runs.lock import writing
from ..runs.run import Run, gallery_rows, split_record
from ..runs.writes import WriteRefused
from ..search.index import GalleryIndex, build_index
from ..training.checkpoint import remove_work_dir, work_dir
from ..training.crossval import fit_cv, merged, use_cv
from ..training.distributed import world
from ..training.plan import Plan, check_folders, plan
from ..training.select import choose_k
from ..training.train import Fitted, fit
from ..training.validate import MAX_QUERIES, cap


@dataclass
class TrainResult:
    run_dir: Path
    history: list[dict]
    metrics: dict
    kept: str  # which model the run keeps (an epoch, the network before training, pretrained features) and why
    notes: list[str]


def _guarded(report: Reporter, stop: Callable[[], bool]) -> Reporter:
    """A reporter that also honours a cancel between the stages after training."""

    def guarded(p: Progress) -> None:
        if stop():
            raise Cancelled("training cancelled; the previous run is unchanged")
        report(p)

    return guarded


def embed_gallery(
    pl: Plan, fitted: Fitted, cfg: TrainConfig, device, report: Reporter, ray: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(gallery rows into the plan's images (N,), their embeddings (N, D)) with the kept network; on a Ray cluster
    when ``ray`` is given (its address, or "" for a local instance)."""
    rows = gallery_rows(pl.parts)
    mc = fitted.model.config
    if ray is not None:  # the same embeddings, from a pool of Ray actors (ray_embed.py)
        from ..network.ray_embed import embeddings_with_ray

        paths = [pl.images.paths[i] for i in rows]
        progress = lambda d, t: report(Progress(Stage.EMBED, done=d, total=t))
        return rows, embeddings_with_ray(
            fitted.model, paths, address=ray, batch_size=cfg.batch_size_embed, progress=progress
        )
    emb = embed_images(
        fitted.model,
        [pl.images.paths[i] for i in rows],
        eval_transform(mc),
        batch_size=cfg.batch_size_embed,
        flip_tta=mc.flip_tta,
        device=device,
        progress=counter(report, Stage.EMBED, "the gallery"),
    )
    return rows, emb


def index_gallery(
    emb: np.ndarray, cfg: TrainConfig, report: Reporter, previous: GalleryIndex | None = None
) -> GalleryIndex:
    """The gallery's index with the run's settings; ``previous`` (the index before the gallery grew) lends the
    shards that stay the same. Progress counts the Annoy files built."""
    report(Progress(Stage.INDEX, message=f"building and timing the index over {len(emb):,} images"))
    config = IndexConfig(n_trees=cfg.n_trees, seed=cfg.seed, shard_items=cfg.shard_items)
    progress = lambda done, total: report(Progress(Stage.INDEX, done=done, total=total))
    return build_index(emb, config, previous=previous, progress=progress)


def describe_plan(pl: Plan) -> str:
    """One line saying what the plan decided, e.g. ``100,000 images in 10 classes: 70,000 train, ...``."""
    parts = [(len(pl.train_idx), "train"), (len(pl.val_idx), "validate"), (len(pl.test_idx), "test")]
    unseen = len(pl.unseen_val_idx) + len(pl.unseen_test_idx)
    parts += [(unseen, "of classes never trained on")] if unseen else []
    mc = pl.model_config
    return (
        f"{len(pl.images):,} images in {len(pl.images.classes)} classes: "
        + ", ".join(f"{n:,} {what}" for n, what in parts)
        + f"; {mc.backbone} at {mc.image_size} px, batches of {pl.classes_per_batch} classes x {pl.per_class}"
    )


def calibrate(
    pl: Plan, rows: np.ndarray, emb: np.ndarray, cfg: TrainConfig, report: Reporter, outcomes: Answers | None = None
) -> tuple[dict, int]:
    """From validation images against the training images: the k the run votes with (``cfg.k``, or chosen on
    them), the "unknown" distance threshold, and the map from vote share and nearest distance to the probability
    that an answer is right. A cross-validated run passes ``outcomes``, its kept candidate's out-of-fold answers,
    and is calibrated on those. Returns what the run records, and k."""
    report(Progress(Stage.CALIBRATE, message='choosing k, calibrating confidence and "unknown" on validation images'))
    on = "cross-validation" if outcomes is not None else "validation"
    answers = outcomes if outcomes is not None else _validation_answers(pl, rows, emb, cfg)
    answered = answers is not None and len(answers) > 0
    if cfg.k:
        choice = {"k": cfg.k, "why": f"k = {cfg.k}: set by you"}
    elif answered:
        choice = choose_k(answers)
        report(Progress(Stage.NOTE, message=f"votes with {choice['why']}"))
    else:
        choice = {"k": DEFAULT_K, "why": f"k = {DEFAULT_K}: the default, with no validation images to choose on"}
    if not answered:
        return {"unknown": {"calibrated_on": on}, "confidence": None, "k": choice}, choice["k"]
    features, right = answers.at(choice["k"])
    unknown = answers.open_set(right, cfg.target_precision)
    # another network's distances (the folds') are on another scale than the kept one's: the vote share alone
    confidence = fit_confidence(features, right, distance=on == "validation")
    return {**_calibration(unknown, confidence, on), "k": choice}, choice["k"]


def _validation_answers(pl: Plan, rows: np.ndarray, emb: np.ndarray, cfg: TrainConfig) -> Answers | None:
    """The validation images (a capped sample) answered by the kept network from the training images."""
    if not len(pl.val_idx):
        return None
    position = {int(i): r for r, i in enumerate(rows)}
    labels = pl.images.labels
    val_idx = cap(pl.val_idx, labels, MAX_QUERIES, cfg.seed)  # as many as validation scores: enough to fit two numbers
    val, train = [position[int(i)] for i in val_idx], [position[int(i)] for i in pl.train_idx]
    return Answers.of(emb[val], labels[val_idx], emb[train], labels[pl.train_idx])


def _calibration(unknown: dict, confidence: dict, on: str) -> dict:
    """What a run records of its calibration: the "unknown" threshold (no curve), the confidence map, and what
    both were fitted on."""
    keys = ("threshold", "target_precision", "precision", "coverage", "auroc")
    return {"unknown": {**{k: unknown[k] for k in keys if k in unknown}, "calibrated_on": on}, "confidence": confidence}


def assemble(pl: Plan, cfg: TrainConfig, fitted: Fitted, rows: np.ndarray, emb: np.ndarray, index: GalleryIndex) -> Run:
    """The run as it will be written (metrics are filled in by the evaluate stage)."""
    images = pl.images
    info = {
        "kept": fitted.kept,
        "notes": pl.notes,
        "skipped": images.skip_report(),
        "batch": {"classes_per_batch": pl.classes_per_batch, "per_class": pl.per_class},
    }
    return Run(
        path=Path(cfg.out).expanduser().resolve(),
        model_config=fitted.model.config,
        train_config=cfg,
        classes=images.classes,
        data_root=images.root,
        gallery_paths=[str(images.paths[i].relative_to(images.root)) for i in rows],
        gallery_labels=images.labels[rows],
        gallery_embeddings=emb,
        split=split_record(images.root, images.paths, images.labels, images.classes, pl.parts, cfg.queries),
        info={**info, "index": index.stats()},
        history=fitted.history,
        _model=fitted.model,
        _index=index,
    )


def train(
    cfg: TrainConfig,
    progress: Reporter | None = None,
    should_stop: Callable[[], bool] | None = None,
    ray: str | None = None,
) -> TrainResult:
    """Train an embedder on ``cfg.data`` and write the run bundle to ``cfg.out``.

    Under torchrun (distributed.py) every rank trains and rank 0 alone goes on to write the run; with ``ray``
    (a cluster address, or "" for a local instance) the gallery is embedded by a pool of Ray actors. Rank 0 holds
    the run's write lock throughout (runs/lock.py): its checkpoints and the run are written by one training only.
    A full disk stops it in one line (runs/writes.py), with its checkpoints removed; the previous run is intact.
    """
    report = progress or silent
    out = Path(cfg.out).expanduser().resolve()
    cfg.validate()
    check_folders(cfg)  # a folder of the user's is refused before a lock file is made beside it (and again inside)
    with writing(out, report) if world().main else contextlib.nullcontext():
        try:
            return _train(cfg, report, should_stop, ray)
        except WriteRefused:
            remove_work_dir(work_dir(out))  # the space the checkpoints took is the user's again
            raise


def _train(cfg: TrainConfig, report: Reporter, should_stop: Callable[[], bool] | None, ray: str | None) -> TrainResult:
    stop = should_stop or (lambda: False)
    pl = plan(cfg, report)
    report(Progress(Stage.PLAN, message=describe_plan(pl)))
    for note in pl.notes:
        report(Progress(Stage.NOTE, message=note))
    device = resolve_device(cfg.device)
    out = Path(cfg.out).expanduser().resolve()
    if world().size > 1 and cfg.selection == "cv":
        raise EmbedderError(
            "--selection cv trains its folds in one process: run it without torchrun, or choose holdout"
        )
    if world().size == 1 and use_cv(pl, cfg):  # small data: one validation split cannot tell the candidates apart
        fitted, pl = fit_cv(pl, cfg, device, report, stop), merged(pl)
    else:
        fitted = fit(pl, cfg, out, device, report, stop)
    if not world().main:
        return TrainResult(out, fitted.history, {}, fitted.kept, pl.notes)
    report = _guarded(report, stop)
    rows, emb = embed_gallery(pl, fitted, cfg, device, report, ray)
    index = index_gallery(emb, cfg, report)
    calibration, k = calibrate(pl, rows, emb, cfg, report, fitted.outcomes)
    run = assemble(pl, replace(cfg, k=k), fitted, rows, emb, index)
    run.metrics = {"index": index.stats(), **fitted.validation, "kept": fitted.kept, **calibration}
    novelty.build(run, report, cfg.seed, device)
    if len(pl.test_idx) or cfg.queries:
        run.metrics["test"] = evaluate_run(
            run, queries=cfg.queries, device=str(device), progress=report, target_precision=cfg.target_precision
        )
    report(Progress(Stage.WRITE, message=f"writing {out}"))
    run.save(overwrite=cfg.overwrite)
    remove_work_dir(work_dir(out))
    report(Progress(Stage.DONE, message=str(out)))
    return TrainResult(out, fitted.history, run.metrics, fitted.kept, pl.notes)

"""From an image folder to a run bundle, stage by stage:

    plan -> fit -> embed the gallery -> index -> calibrate -> evaluate -> write

Each stage is a function of the one before; progress leaves through ``report`` (every stage that can take more
than a moment reports its start, and counts what it works through), and ``stop()`` is polled throughout: a True
answer raises ``Cancelled`` and leaves the previous run at ``cfg.out`` untouched.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
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
from ..runs.lock import training, writing
from ..runs.run import Run, gallery_rows, is_run, load_run, split_record
from ..runs.writes import WriteRefused
from ..search.index import GalleryIndex, build_index
from ..training.checkpoint import remove_work_dir, work_dir
from ..training.crossval import fit_cv, folds, merged, use_cv
from ..training.distributed import world
from ..training.first import First, first_model
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
        fast=True,  # the kept network is final: on the CPU a large gallery goes through onnxruntime (network/fast.py)
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
    """Train an embedder on ``cfg.data`` and write the run bundle to ``cfg.out``: first a run that answers from
    features needing no training (first.py), within seconds; then, unless ``cfg.finetune`` is off, the trained
    network replaces it where it labels clearly better (select.py's paired test).

    Under torchrun (distributed.py) every rank trains and rank 0 alone goes on to write the run; with ``ray``
    (a cluster address, or "" for a local instance) the gallery is embedded by a pool of Ray actors. Rank 0 holds
    the run's training lock throughout and its write lock around each write (runs/lock.py): one training at a
    time into a run, and readers go on between its writes.
    A full disk stops it in one line (runs/writes.py), with its checkpoints removed; the previous run is intact.
    """
    report, started = progress or silent, time.perf_counter()
    out = Path(cfg.out).expanduser().resolve()
    cfg.validate()
    check_folders(cfg)  # a folder of the user's is refused before a lock file is made beside it (and again inside)
    try:
        return _train(cfg, report, should_stop, ray, started)
    except WriteRefused:
        remove_work_dir(work_dir(out))  # the space the checkpoints took is the user's again
        raise


def _train(cfg: TrainConfig, report: Reporter, should_stop, ray: str | None, started: float) -> TrainResult:
    stop = should_stop or (lambda: False)
    pl = plan(cfg, report)
    report(Progress(Stage.PLAN, message=describe_plan(pl)))
    for note in pl.notes:
        report(Progress(Stage.NOTE, message=note))
    device, out = resolve_device(cfg.device), Path(cfg.out).expanduser().resolve()
    if world().size > 1:
        return _train_distributed(pl, cfg, out, device, report, stop)
    cv, guarded = use_cv(pl, cfg), _guarded(report, stop)
    with training(out):  # one training at a time; add and relabel refuse meanwhile (each write takes the write lock)
        first = first_model(pl, cfg, device, guarded, folds(pl, cfg) if cv else None)
        first_plan = merged(pl) if cv else pl
        run = finish(first_plan, cfg, first.fitted, first.rows, first.emb, device, guarded, evaluate=False)
        answering = _may_answer_now(out, report)
        if answering:
            _answer_first(run, first_plan, cfg, first, device, guarded, started)
        if not cfg.finetune or cfg.epochs == 0:
            return _keep_first(run, first_plan, cfg, device, guarded, "fine-tuning was not asked for", answering)
        try:
            if cv:
                fitted, pl = fit_cv(pl, cfg, device, report, stop, first.candidate), merged(pl)
            else:
                fitted = fit(pl, cfg, out, device, report, stop, first.candidate)
        except Cancelled:
            if answering:
                _record_upgrade(run, {"result": "cancelled"}, report)
            raise
        if fitted.model is first.fitted.model:  # the record says what training measured, and why it lost
            run.history, run.metrics["kept"] = fitted.history, fitted.kept
            run.metrics["validation_candidates"] = fitted.validation["validation_candidates"]
            run.info["kept"] = fitted.kept
            why = "training did not beat it"
            return _keep_first(run, first_plan, cfg, device, guarded, why, answering)
        return _finish(pl, cfg, fitted, device, guarded, ray, run if answering else None)


def _train_distributed(pl: Plan, cfg: TrainConfig, out: Path, device, report: Reporter, stop) -> TrainResult:
    """Under torchrun: every rank trains, rank 0 writes the run (no first answer: the ranks train at once)."""
    if cfg.selection == "cv":
        raise EmbedderError(
            "--selection cv trains its folds in one process: run it without torchrun, or choose holdout"
        )
    if not world().main:  # its part is training: rank 0 holds the locks and writes the run
        fitted = fit(pl, cfg, out, device, report, stop)
        return TrainResult(out, fitted.history, {}, fitted.kept, pl.notes)
    with training(out):
        fitted = fit(pl, cfg, out, device, report, stop)
        return _finish(pl, cfg, fitted, device, _guarded(report, stop), None, None)


def finish(
    pl: Plan, cfg: TrainConfig, fitted: Fitted, rows, emb, device, report: Reporter, evaluate: bool = True
) -> Run:
    """A kept network and its gallery embeddings made into a run, not yet written: index -> calibrate ->
    novelty -> evaluate (when ``evaluate`` and there are held-out queries)."""
    index = index_gallery(emb, cfg, report)
    calibration, k = calibrate(pl, rows, emb, cfg, report, fitted.outcomes)
    run = assemble(pl, replace(cfg, k=k), fitted, rows, emb, index)
    run.metrics = {"index": index.stats(), **fitted.validation, "kept": fitted.kept, **calibration}
    novelty.build(run, report, cfg.seed, device)
    if evaluate:
        _evaluate(run, pl, cfg, device, report)
    return run


def _evaluate(run: Run, pl: Plan, cfg: TrainConfig, device, report: Reporter, baselines: dict | None = None) -> None:
    """The run's evaluation on its held-out queries, into ``run.metrics["test"]`` (none without queries);
    ``baselines``: an evaluation of the same queries and gallery whose baselines are reused (they do not depend
    on the network)."""
    if not (len(pl.test_idx) or cfg.queries):
        return
    test = evaluate_run(
        run,
        queries=cfg.queries,
        baselines=baselines is None,
        device=str(device),
        progress=report,
        target_precision=cfg.target_precision,
        network=pl.model_config,
    )
    if baselines is not None and "baselines" in baselines:
        test["baselines"] = baselines["baselines"]
        if "class_disjoint" in test and "baselines" in baselines.get("class_disjoint", {}):
            test["class_disjoint"]["baselines"] = baselines["class_disjoint"]["baselines"]
        test["baselines_reused"] = sorted(test["baselines"])
    run.metrics["test"] = test


def _may_answer_now(out: Path, report: Reporter) -> bool:
    """Whether the first answer may be written at ``out`` now: nothing there, or a first answer an earlier
    training left unfinished (``improving``, or cancelled). A finished run keeps answering until this training
    ends."""
    try:
        metrics = load_run(out).metrics if is_run(out) else None
    except EmbedderError:  # damaged: replaced at the end, as it always was
        metrics = {}
    cancelled = (metrics or {}).get("upgrade", {}).get("result") == "cancelled"
    finished = metrics is not None and not metrics.get("improving") and not cancelled
    if finished:
        report(Progress(Stage.NOTE, message=f"{out.name} keeps answering with its current run until training ends"))
    return not finished


def _answer_first(run: Run, pl: Plan, cfg: TrainConfig, first: First, device, report: Reporter, started: float):
    """Write the first answer as the run (it answers from here on), then evaluate it and write that too."""
    tuning = cfg.finetune and cfg.epochs > 0
    pending = "evaluation" + (", then fine-tuning" if tuning else "")
    run.metrics["improving"] = {"status": "evaluating", "pending": pending, "pid": os.getpid(), "since": _now()}
    _write(run, report, cfg.overwrite)
    report(Progress(Stage.QUERYABLE, message=_queryable(run, first, time.perf_counter() - started)))
    _evaluate(run, pl, cfg, device, report)
    if tuning:
        run.metrics["improving"] = {**run.metrics["improving"], "status": "training", "pending": "fine-tuning"}
        _write(run, report)


def _queryable(run: Run, first: First, seconds: float) -> str:
    """``queryable now: RUN (...)``: what the run holds, its estimated label accuracy, and the time taken."""
    m = first.candidate.score.metrics
    estimate = ""
    if "label_accuracy" in m:
        low, high = m["label_accuracy_ci"]
        on = "out-of-fold" if m.get("scored_on") else "validation"
        estimate = f"; estimated label accuracy {m['label_accuracy']:.3f} [{low:.2f}, {high:.2f}] on "
        estimate += f"{m['n_scored']:,} {on} images"
    return (
        f"queryable now: {run.path} ({first.candidate.name}, {len(run.gallery_paths):,} gallery images in "
        f"{len(run.classes)} classes{estimate}) after {seconds:.0f} s"
    )


def _keep_first(run: Run, pl: Plan, cfg: TrainConfig, device, report: Reporter, why: str, evaluated: bool):
    """The first answer stays the run, its record saying why; where a finished run had been answering meanwhile,
    the first answer is evaluated and written now."""
    report(Progress(Stage.NOTE, message=f"the run keeps {run.metrics['kept'].split(':')[0]}: {why}"))
    if not evaluated:
        _evaluate(run, pl, cfg, device, report)
    _record_upgrade(run, {"result": "kept", "why": why}, report, overwrite=cfg.overwrite)
    remove_work_dir(work_dir(run.path))  # the checkpoints of a training that is over
    report(Progress(Stage.DONE, message=str(run.path)))
    return TrainResult(run.path, run.history, run.metrics, run.metrics["kept"], pl.notes)


def _record_upgrade(run: Run, outcome: dict, report: Reporter, overwrite: bool = False) -> None:
    """What training did to the run's first answer, into its metrics (``upgrade``), written."""
    run.metrics.pop("improving", None)
    run.metrics["upgrade"] = {**outcome, "at": _now()}
    _write(run, report, overwrite)


def _finish(pl: Plan, cfg: TrainConfig, fitted: Fitted, device, report: Reporter, ray, before: Run | None):
    """The trained network's run, evaluated and written in place of the first answer (``before``, when it was
    answering; its evaluation lends the baselines, which do not depend on the network)."""
    out = Path(cfg.out).expanduser().resolve()
    rows, emb = embed_gallery(pl, fitted, cfg, device, report, ray)
    run = finish(pl, cfg, fitted, rows, emb, device, report, evaluate=False)
    _evaluate(run, pl, cfg, device, report, before.metrics.get("test") if before is not None else None)
    if before is not None:
        run.metrics["upgrade"] = {"result": "replaced", **_before_after(before, run), "at": _now()}
    _write(run, report, cfg.overwrite)
    remove_work_dir(work_dir(out))
    if before is not None:
        report(Progress(Stage.NOTE, message=_upgrade_note(run.metrics["upgrade"])))
    report(Progress(Stage.DONE, message=str(out)))
    return TrainResult(out, fitted.history, run.metrics, fitted.kept, pl.notes)


def _before_after(before: Run, after: Run) -> dict:
    """The label accuracy of the first answer and of the trained network on validation (out-of-fold) images and,
    where there are held-out queries, on those."""
    pick = lambda m: {  # noqa: E731
        "kept": m.get("kept", ""),
        "validation": (m.get("validation") or {}).get("label_accuracy"),
        "test": (m.get("test") or {}).get("knn_accuracy"),
    }
    return {"before": pick(before.metrics), "after": pick(after.metrics)}


def _upgrade_note(upgrade: dict) -> str:
    b, a = upgrade["before"], upgrade["after"]
    which = "test" if b.get("test") is not None and a.get("test") is not None else "validation"
    if b.get(which) is None or a.get(which) is None:
        return "training replaced the first answer"
    return f"training replaced the first answer: label accuracy on {which} images {b[which]:.3f} -> {a[which]:.3f}"


def _write(run: Run, report: Reporter, overwrite: bool = False) -> None:
    """Write ``run`` in place, holding its write lock for the moment it takes (readers see the old run or the new)."""
    report(Progress(Stage.WRITE, message=f"writing {run.path}"))
    with writing(run.path, report):
        run.save(overwrite=overwrite)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")

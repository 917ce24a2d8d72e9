"""From an image folder to a run bundle, stage by stage:

    plan -> first answer -> write (queryable now) -> fit -> embed the gallery -> finish (finish.py) -> write

The first answer needs no training (training/first.py) and is finished and written as any run is; the trained
network replaces it only where it labels clearly better.

Each stage is a function of the one before; progress leaves through ``report`` (every stage that can take more
than a moment reports its start, and counts what it works through), and ``stop()`` is polled throughout: a True
answer raises ``Cancelled`` and leaves the previous run at ``cfg.out`` untouched.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..config import TrainConfig
from ..errors import Cancelled, EmbedderError
from ..images.transforms import eval_transform
from ..network.embed import embed_images
from ..network.model import resolve_device
from ..progress import Progress, Reporter, Stage, counter, silent
from ..runs.lock import training
from ..runs.records import Evaluation, Metrics, Scores, Standing, Upgrade
from ..runs.run import Run, gallery_rows, is_run, load_run
from ..runs.writes import WriteRefused
from ..training.checkpoint import checkpoint_file, load_checkpoint, remove_work_dir, work_dir
from ..training.crossval import fit_cv, folds, merged, use_cv
from ..training.distributed import world
from ..training.first import First, first_model, label_free
from ..training.plan import Plan, check_folders, plan
from ..training.train import Fitted, fit
from .finish import TrainResult, evaluate_into, finish_run, guarded, write_run


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
    cv, checked = use_cv(pl, cfg), guarded(report, stop)
    ckpt = checkpoint_file(cfg)
    if cfg.resume and not cv and ckpt.exists():
        load_checkpoint(ckpt, cfg, device)  # a planted or foreign checkpoint is refused before anything is written
    with training(out):  # one training at a time; add and relabel refuse meanwhile (each write takes the write lock)
        first = first_model(pl, cfg, device, checked, folds(pl, cfg) if cv else None)
        first_plan = merged(pl) if cv else pl
        run = finish_run(first_plan, cfg, first.fitted, first.rows, first.emb, checked)
        run.label_free = label_free(first, pl.model_config)
        answering = _may_answer_now(out, report)
        try:
            if answering:
                _answer_first(run, first_plan, cfg, first, checked, started)
            if not cfg.finetune or cfg.epochs == 0:
                return _keep_first(run, first_plan, cfg, checked, "fine-tuning was not asked for", answering)
            if cv:
                fitted, pl = fit_cv(pl, cfg, device, report, stop, first.candidate), merged(pl)
            else:
                fitted = fit(pl, cfg, device, report, stop, first.candidate)
            if fitted.model is first.fitted.model:  # the record says what training measured, and why it lost
                run.history, run.metrics["kept"] = fitted.history, fitted.kept
                run.metrics["validation_candidates"] = fitted.validation["validation_candidates"]
                run.info["kept"] = fitted.kept
                return _keep_first(run, first_plan, cfg, checked, "training did not beat it", answering)
            return _finish(pl, cfg, fitted, checked, ray, FirstRun(run, answering, first.rows))
        except Cancelled:
            if answering and _still_improving(out):  # the first answer stays, saying training was cancelled
                _record_upgrade(run, {"result": "cancelled"}, silent)  # the app's reporter raises once cancelled
            raise


def _train_distributed(pl: Plan, cfg: TrainConfig, out: Path, device, report: Reporter, stop) -> TrainResult:
    """Under torchrun: every rank trains, rank 0 writes the run (no first answer: the ranks train at once)."""
    if cfg.selection == "cv":
        raise EmbedderError(
            "--selection cv trains its folds in one process: run it without torchrun, or choose holdout"
        )
    if not world().main:  # its part is training: rank 0 holds the locks and writes the run
        fitted = fit(pl, cfg, device, report, stop)
        return TrainResult(out, fitted.history, {}, fitted.kept, pl.notes)
    with training(out):
        fitted = fit(pl, cfg, device, report, stop)
        return _finish(pl, cfg, fitted, guarded(report, stop), None, None)


def _may_answer_now(out: Path, report: Reporter) -> bool:
    """Whether the first answer may be written at ``out`` now: nothing there, or a first answer an earlier
    training left unfinished (``improving``, or cancelled). A finished run keeps answering until this training
    ends."""
    try:
        record = load_run(out).record if is_run(out) else None
    except EmbedderError:  # damaged: replaced at the end, as it always was
        record = Metrics()
    cancelled = record is not None and record.upgrade is not None and record.upgrade.result == "cancelled"
    finished = record is not None and not record.improving and not cancelled
    if finished:
        report(Progress(Stage.NOTE, message=f"{out.name} keeps answering with its current run until training ends"))
    return not finished


def _still_improving(out: Path) -> bool:
    """Whether the run at ``out`` is this training's first answer, not yet replaced nor closed (its record says
    ``improving``): a cancel then says so in it; a run written whole before the cancel stays as it is."""
    try:
        return is_run(out) and load_run(out).record.improving is not None
    except EmbedderError:
        return False


def _answer_first(run: Run, pl: Plan, cfg: TrainConfig, first: First, report: Reporter, started: float):
    """Write the first answer as the run (it answers from here on), then evaluate it and write that too."""
    tuning = cfg.finetune and cfg.epochs > 0
    pending = "evaluation" + (", then fine-tuning" if tuning else "")
    run.metrics["improving"] = {"status": "evaluating", "pending": pending, "pid": os.getpid(), "since": _now()}
    write_run(run, report, cfg.overwrite)
    report(Progress(Stage.QUERYABLE, message=_queryable(run, first, time.perf_counter() - started)))
    evaluate_into(run, pl, cfg, report)
    if tuning:
        run.metrics["improving"] = {**run.metrics["improving"], "status": "training", "pending": "fine-tuning"}
        write_run(run, report)


def _queryable(run: Run, first: First, seconds: float) -> str:
    """``queryable now: RUN (...)``: what the run holds, its estimated label accuracy, and the time taken."""
    m = Scores.of(first.candidate.score.metrics)
    estimate = ""
    if m.label_accuracy is not None:
        low, high = m.label_accuracy_ci
        on = "out-of-fold" if m.scored_on else "validation"
        estimate = f"; estimated label accuracy {m.label_accuracy:.3f} [{low:.2f}, {high:.2f}] on "
        estimate += f"{m.n_scored:,} {on} images"
    return (
        f"queryable now: {run.path} ({first.candidate.name}, {len(run.gallery_paths):,} gallery images in "
        f"{len(run.classes)} classes{estimate}) after {seconds:.0f} s"
    )


def _keep_first(run: Run, pl: Plan, cfg: TrainConfig, report: Reporter, why: str, evaluated: bool):
    """The first answer stays the run, its record saying why; where a finished run had been answering meanwhile,
    the first answer is evaluated and written now."""
    report(Progress(Stage.NOTE, message=f"the run keeps {run.record.kept.split(':')[0]}: {why}"))
    if not evaluated:
        evaluate_into(run, pl, cfg, report)
    _record_upgrade(run, {"result": "kept", "why": why}, report, overwrite=cfg.overwrite)
    remove_work_dir(work_dir(run.path))  # the checkpoints of a training that is over
    report(Progress(Stage.DONE, message=str(run.path)))
    return TrainResult(run.path, run.history, run.metrics, run.metrics["kept"], pl.notes)


def _record_upgrade(run: Run, outcome: dict, report: Reporter, overwrite: bool = False) -> None:
    """What training did to the run's first answer, into its metrics (``upgrade``), written."""
    run.metrics.pop("improving", None)
    run.metrics["upgrade"] = {**outcome, "at": _now()}
    write_run(run, report, overwrite)


@dataclass
class FirstRun:
    """The first answer's run, as the trained network's run takes over from it."""

    run: Run  # its label-free features go on into the trained run
    answering: bool  # it was written and answered meanwhile: its evaluation lends the baselines
    rows: np.ndarray  # (N,) its gallery rows into the plan's images


def _finish(pl: Plan, cfg: TrainConfig, fitted: Fitted, report: Reporter, ray, first: FirstRun | None):
    """The trained network's run, evaluated and written in place of the first answer (when it was answering, its
    evaluation lends the baselines, which do not depend on the network)."""
    out = Path(cfg.out).expanduser().resolve()
    rows, emb = embed_gallery(pl, fitted, cfg, resolve_device(cfg.device), report, ray)
    run = finish_run(pl, cfg, fitted, rows, emb, report)
    free = first.run.label_free if first is not None else None
    run.label_free = free if free is not None and np.array_equal(first.rows, rows) else None
    before = first.run if first is not None and first.answering else None
    evaluate_into(run, pl, cfg, report, before.metrics.get("test") if before is not None else None)
    if before is not None:
        run.metrics["upgrade"] = {"result": "replaced", **_before_after(before, run), "at": _now()}
    write_run(run, report, cfg.overwrite)
    remove_work_dir(work_dir(out))
    if before is not None:
        report(Progress(Stage.NOTE, message=_upgrade_note(run.record.upgrade)))
    report(Progress(Stage.DONE, message=str(out)))
    return TrainResult(out, fitted.history, run.metrics, fitted.kept, pl.notes)


def _before_after(before: Run, after: Run) -> dict:
    """The label accuracy of the first answer and of the trained network on validation (out-of-fold) images and,
    where there are held-out queries, on those."""
    pick = lambda m: {  # noqa: E731
        "kept": m.kept or "",
        "validation": (m.validation or Scores()).label_accuracy,
        "test": (m.test or Evaluation()).knn_accuracy,
    }
    return {"before": pick(before.record), "after": pick(after.record)}


def _upgrade_note(upgrade: Upgrade) -> str:
    b, a = upgrade.before or Standing(), upgrade.after or Standing()
    on_test = b.test is not None and a.test is not None
    which, was, now = ("test", b.test, a.test) if on_test else ("validation", b.validation, a.validation)
    if was is None or now is None:
        return "training replaced the first answer"
    return f"training replaced the first answer: label accuracy on {which} images {was:.3f} -> {now:.3f}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")

"""What every verb that writes a whole run shares, from a kept network's gallery embeddings to the run on disk:

    index -> calibrate -> assemble -> novelty reference -> evaluate -> write

``pipeline.train`` (a network trained here, its first answer too), ``import_model`` (a network from an ONNX file)
and ``add`` (a gallery grown: index and write) finish a run through these functions, so a run reads the same
whoever wrote it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..answers import novelty
from ..answers.calibrate import Answers, fit_confidence
from ..answers.evaluate import evaluate_run
from ..config import DEFAULT_K, IndexConfig, IndexSettings, TrainConfig
from ..errors import Cancelled
from ..images.data import cap
from ..progress import Progress, Reporter, Stage
from ..runs.lock import writing
from ..runs.records import Metrics
from ..runs.run import Run, split_record
from ..search.index import GalleryIndex, build_index
from ..training.plan import Plan
from ..training.select import choose_k
from ..training.train import Fitted
from ..training.validate import MAX_QUERIES


@dataclass
class TrainResult:
    run_dir: Path
    history: list[dict]
    metrics: dict  # metrics.json as written
    kept: str  # which model the run keeps (an epoch, the network before training, pretrained features) and why
    notes: list[str]

    @property
    def record(self) -> Metrics:
        """The metrics as typed records (records.py)."""
        return Metrics.of(self.metrics)


def guarded(report: Reporter, stop: Callable[[], bool]) -> Reporter:
    """A reporter that also honours a cancel between the stages after training."""

    def checked(p: Progress) -> None:
        if stop():
            raise Cancelled("training cancelled; the previous run is unchanged")
        report(p)

    return checked


def index_gallery(
    emb: np.ndarray, cfg: TrainConfig, report: Reporter, previous: GalleryIndex | None = None
) -> GalleryIndex:
    """The gallery's index with the run's settings; ``previous`` (the index before the gallery grew) lends the
    shards that stay the same. Progress counts the Annoy files built."""
    report(Progress(Stage.INDEX, message=f"building and timing the index over {len(emb):,} images"))
    config = IndexConfig.of(cfg.stage(IndexSettings), seed=cfg.seed)
    progress = lambda done, total: report(Progress(Stage.INDEX, done=done, total=total))
    return build_index(emb, config, previous=previous, progress=progress)


def calibrate_gallery(
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


def assemble_run(
    pl: Plan, cfg: TrainConfig, fitted: Fitted, rows: np.ndarray, emb: np.ndarray, report: Reporter
) -> Run:
    """A kept network and its gallery embeddings made into a run, not yet written: index -> calibrate ->
    assemble, with the metrics every run records (its index, its validation, what it keeps and why, its
    calibration). The novelty reference and the evaluation come after (``finish_run``): an imported network first
    sets how its queries are read."""
    index = index_gallery(emb, cfg, report)
    calibration, k = calibrate_gallery(pl, rows, emb, cfg, report, fitted.outcomes)
    run = assemble(pl, replace(cfg, k=k), fitted, rows, emb, index)
    run.metrics = {"index": index.stats(), **fitted.validation, "kept": fitted.kept, **calibration}
    return run


def finish_run(pl: Plan, cfg: TrainConfig, fitted: Fitted, rows: np.ndarray, emb: np.ndarray, report: Reporter) -> Run:
    """``assemble_run`` and the run's novelty reference, on ``cfg.device``; evaluated after (``evaluate_into``)."""
    run = assemble_run(pl, cfg, fitted, rows, emb, report)
    novelty.build(run, report, cfg.seed, _device(cfg))
    return run


def evaluate_into(run: Run, pl: Plan, cfg: TrainConfig, report: Reporter, baselines: dict | None = None) -> dict | None:
    """The run's evaluation on its held-out queries, into ``run.metrics["test"]`` (none without queries);
    ``baselines``: an evaluation of the same queries and gallery whose baselines are reused (they do not depend
    on the network). An imported network is compared with the pretrained backbone, not with the untrained one of
    the plan. Returns the evaluation, or None without queries."""
    if not (len(pl.test_idx) or cfg.queries):
        return None
    test = evaluate_run(
        run,
        queries=cfg.queries,
        baselines=baselines is None,
        device=str(_device(cfg)),
        progress=report,
        target_precision=cfg.target_precision,
        network=None if run.onnx is not None else pl.model_config,
    )
    if baselines is not None and "baselines" in baselines:
        test["baselines"] = baselines["baselines"]
        if "class_disjoint" in test and "baselines" in baselines.get("class_disjoint", {}):
            test["class_disjoint"]["baselines"] = baselines["class_disjoint"]["baselines"]
        test["baselines_reused"] = sorted(test["baselines"])
    run.metrics["test"] = test
    return test


def write_run(run: Run, report: Reporter, overwrite: bool = False) -> None:
    """Write ``run`` in place, holding its write lock for the moment it takes (readers see the old run or the new)."""
    report(Progress(Stage.WRITE, message=f"writing {run.path}"))
    with writing(run.path, report):
        run.save(overwrite=overwrite)


def _device(cfg: TrainConfig):
    from ..network.model import resolve_device

    return resolve_device(cfg.device)

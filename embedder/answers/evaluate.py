"""Retrieval metrics (pytorch-metric-learning) and the baselines they are always shown next to."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchvision import transforms as T

from ..errors import EmbedderError
from ..images.data import cap, scan_folder
from ..network.embed import embed_images
from ..progress import Progress, Reporter, Stage, counter, silent
from ..search.knn import topk
from . import novelty
from .calibrate import apply_confidence, open_set, reliability, vote_outcomes
from .metrics import Labelled, diagnostics, retrieval_metrics

RAW_PIXELS_SIDE = 32
MAX_QUERIES = 10_000  # queries scored (and as many unseen-class images): above it a seeded, stratified sample


def _capped(paths: list, labels: np.ndarray, seed: int, what: str) -> tuple[list, np.ndarray, str | None]:
    """At most ``MAX_QUERIES`` of the images, every class keeping its share, and what was sampled (or None).
    Exact search of 10,000 queries already pins an accuracy to about ±1%; more only costs time."""
    rows = cap(np.arange(len(paths)), labels, MAX_QUERIES, seed)
    if len(rows) == len(paths):
        return paths, labels, None
    return [paths[i] for i in rows], labels[rows], f"{len(rows):,} of {len(paths):,} {what}"


def raw_pixel_embed(paths: Sequence, batch_size: int = 128, progress=None) -> np.ndarray:
    """The simplest baseline: each image as its 32x32 RGB pixels, flattened and L2-normalised."""
    transform = T.Compose([T.Resize((RAW_PIXELS_SIDE, RAW_PIXELS_SIDE)), T.ToTensor()])
    return embed_images(
        lambda x: F.normalize(x.flatten(1), dim=1), paths, transform, batch_size=batch_size, progress=progress
    )


@dataclass
class EvaluationSets:
    """The image sets of one evaluation: queries (held-out or a folder), the gallery, unseen-class images."""

    q_paths: list
    q_labels: np.ndarray
    g_paths: list
    g_labels: np.ndarray
    u_paths: list
    u_labels: np.ndarray
    source: str  # "held-out split" or the queries folder
    k: int  # the run's voting neighbours
    skipped: str | None = None
    sampled: str | None = None  # what was scored when there were more than MAX_QUERIES

    @classmethod
    def of(cls, run, queries: str | Path | None) -> EvaluationSets:
        skipped = None
        if queries is not None:
            qset = scan_folder(queries)
            index = {c: i for i, c in enumerate(run.classes)}
            q_paths, skipped = qset.paths, qset.skipped_message()
            q_labels = np.array([index.get(qset.classes[lab], -1) for lab in qset.labels], dtype=np.int64)
        else:
            q_paths, q_labels = run.queries("test")
        if len(q_paths) == 0:
            raise EmbedderError(
                "this run has no held-out queries (trained with --test-fraction 0): pass --queries PATH"
            )
        seed = run.train_config.seed
        q_paths, q_labels, q_note = _capped(q_paths, q_labels, seed, "queries")
        u_paths, u_labels, u_note = _capped(*run.queries("unseen_test"), seed, "unseen-class images")
        sampled = " and ".join(n for n in (q_note, u_note) if n)
        return cls(
            q_paths,
            q_labels,
            run.gallery_files(),
            run.gallery_labels,
            u_paths,
            u_labels,
            str(queries) if queries is not None else "held-out split",
            run.train_config.k,
            skipped,
            f"scored a seeded sample, every class keeping its share: {sampled}" if sampled else None,
        )

    def protocols(self, q_emb: np.ndarray, g_emb: np.ndarray, u_emb: np.ndarray) -> tuple[dict, dict | None]:
        held = retrieval_metrics(q_emb, self.q_labels, g_emb, self.g_labels, k=self.k)
        disjoint = (
            retrieval_metrics(u_emb, self.u_labels, u_emb, self.u_labels, leave_one_out=True, k=self.k)
            if len(self.u_paths)
            else None
        )
        return held, disjoint


def embedder_of(run, device, report: Reporter, stage: Stage = Stage.EVALUATE):
    """embed(fn, paths, what) with the run's transform, batch size and mirror averaging, reporting progress."""

    def embed(fn, paths, what: str) -> np.ndarray:
        if len(paths) == 0:
            return np.zeros((0, 1), dtype=np.float32)
        return run.embed(paths, device=device, progress=counter(report, stage, what), fn=fn)

    return embed


def _baseline_embeddings(run, sets: EvaluationSets, device, report: Reporter, network=None, own=None):
    """(name, (queries, gallery, unseen) embeddings) for each baseline: raw pixels, the untrained network, and
    for a pretrained backbone its plain pretrained features. One at a time: a gallery's worth each. ``network``:
    the ModelConfig of the network training starts from (default: the run's own; a run that answers with pixels
    has no untrained twin of its own). ``own``: the run's (queries, gallery, unseen) embeddings, which are the
    pretrained baseline's when the run answers with the plain pretrained features (no second pass for them)."""
    from ..config import PIXELS
    from ..network.model import EmbeddingNet

    embed, all_paths = embedder_of(run, device, report, Stage.BASELINES), (sets.q_paths, sets.g_paths, sets.u_paths)
    yield (
        "raw_pixels",
        tuple(
            raw_pixel_embed(p, progress=counter(report, Stage.BASELINES, f"raw pixels: {w}"))
            if len(p)
            else np.zeros((0, 1), np.float32)
            for p, w in zip(all_paths, _WHAT)
        ),
    )
    if run.onnx is not None:  # an imported network has no untrained twin here; the project's own backbone instead
        yield from _project_backbone(run, all_paths, device, report)
        return
    mc = network or run.model_config
    if mc.backbone == PIXELS:
        return
    torch.manual_seed(run.train_config.seed)
    untrained = EmbeddingNet(mc, load_pretrained=False).eval().to(device)
    yield "untrained", tuple(embed(untrained, p, f"untrained: {w}") for p, w in zip(all_paths, _WHAT))
    if mc.pretrained and own is not None and run.model_config == replace(mc, dim=None):
        yield "pretrained", own
    elif mc.pretrained:
        pre = EmbeddingNet(mc, load_pretrained=True).eval().to(device)
        yield "pretrained", tuple(embed(pre.backbone_features, p, f"pretrained: {w}") for p, w in zip(all_paths, _WHAT))


_WHAT = ("queries", "gallery", "unseen")


def _project_backbone(run, all_paths, device, report: Reporter):
    """("pretrained", embeddings) of the project's ImageNet-pretrained backbone with its own preprocessing, as
    recorded at import (``baseline_model``); nothing when the import skipped it or the weights are missing."""
    from ..config import ModelConfig
    from ..images.transforms import eval_transform
    from ..network.model import EmbeddingNet, pretrained_available

    recorded = run.info.get("baseline_model")
    try:
        mc = ModelConfig(**{**recorded, "mean": tuple(recorded["mean"]), "std": tuple(recorded["std"])})
    except (TypeError, KeyError):
        return
    if mc.problem() or not mc.pretrained or not pretrained_available(mc.backbone):
        return
    net = EmbeddingNet(mc, load_pretrained=True).eval().to(device)
    transform = eval_transform(mc)

    def embed(paths, what):
        if len(paths) == 0:
            return np.zeros((0, 1), dtype=np.float32)
        progress = counter(report, Stage.BASELINES, f"pretrained: {what}")
        return embed_images(
            net.backbone_features,
            paths,
            transform,
            batch_size=run.train_config.batch_size_embed,
            flip_tta=mc.flip_tta,
            device=device,
            progress=progress,
        )

    yield "pretrained", tuple(embed(p, w) for p, w in zip(all_paths, _WHAT))


def _calibration(run, sets: EvaluationSets, q_emb: np.ndarray, nearest: tuple[np.ndarray, np.ndarray]) -> dict:
    """How well confidence matches accuracy on these queries: the raw vote share, and the probability calibrated
    on validation images (never on these queries)."""
    present = np.isin(sets.q_labels, sets.g_labels)
    if not present.any():
        return {}
    idx, dist = nearest
    features, correct = vote_outcomes(
        q_emb[present],
        sets.q_labels[present],
        run.gallery_embeddings,
        sets.g_labels,
        run.train_config.k,
        neighbours=(idx[present], dist[present]),
    )
    calibration = run.record.confidence
    return {
        "before": reliability(features[:, 0], correct),
        "after": reliability(apply_confidence(calibration, features), correct) if calibration else None,
    }


def _stored_baselines(run, sets: EvaluationSets) -> tuple[dict, dict] | None:
    """The baselines measured at training on the same held-out queries, when this evaluation asks for those."""
    record = run.record
    stored = record.test
    if sets.source != "held-out split" or not stored or stored.queries != sets.source or not stored.baselines:
        return None
    if record.not_reevaluated:  # images were added since (embedder.verbs.add): another gallery
        return None
    test = run.metrics["test"]  # the baselines go into this evaluation's result as they were written
    return test["baselines"], test.get("class_disjoint", {}).get("baselines", {})


def evaluate_run(
    run,
    queries: str | Path | None = None,
    baselines: bool = True,
    device: str = "cpu",
    progress: Reporter | None = None,
    target_precision: float = 0.95,
    network=None,
    embedded: tuple[np.ndarray, dict | None] | None = None,
) -> dict:
    """Evaluate a run with two protocols, each next to its baselines measured the same way:

    - held-out images (or the ImageFolder ``queries``) of the training classes against the gallery;
    - class-disjoint, when the run held classes out of training: their images retrieve each other
      (leave-one-out), which is what a user gets by adding a new class without retraining.

    Baselines: raw pixels, the untrained network, and for pretrained backbones the pretrained features
    without triplet training. They are measured once, at training; asked again about the same held-out
    queries, the stored ones are reused (``baselines_reused`` says so). Also: open-set "unknown" detection
    and per-class diagnostics. ``network``: the ModelConfig whose untrained and pretrained twins are the
    baselines (default: the run's; training passes the network it trains, whatever the run answers with).
    """
    report = progress or silent
    sets = EvaluationSets.of(run, queries)
    if sets.sampled:
        report(Progress(Stage.NOTE, message=sets.sampled))
    embed = embedder_of(run, device, report)
    q_emb, flagged = embedded or novelty.held_out(run, sets.q_paths, device, counter(report, Stage.EVALUATE, "queries"))
    u_emb = embed(None, sets.u_paths, "unseen-class images")  # None: the run's own network, centred as its gallery
    report(Progress(Stage.EVALUATE, message=f"retrieval metrics of {len(q_emb):,} queries"))
    result, disjoint = sets.protocols(q_emb, run.gallery_embeddings, u_emb)
    result["queries"] = sets.source
    if sets.skipped:
        result["skipped"] = sets.skipped
    if sets.sampled:
        result["sampled"] = sets.sampled
    report(Progress(Stage.EVALUATE, message='"unknown" detection, calibration and per-class diagnostics'))
    result.update(_answers(run, sets, q_emb, target_precision))
    if disjoint is not None:
        result["class_disjoint"] = disjoint
    if flagged is not None:
        result["novelty"] = flagged
    if baselines:
        _add_baselines(result, run, sets, device, report, (network, (q_emb, run.gallery_embeddings, u_emb)))
    return result


def _answers(run, sets: EvaluationSets, q_emb: np.ndarray, target_precision: float) -> dict:
    """What a user gets for each query at the run's k: "unknown" detection, calibrated confidence, and the
    per-class diagnostics, from one shared search."""
    k = run.train_config.k
    queries = Labelled(q_emb, sets.q_labels, sets.q_paths)
    gallery = Labelled(run.gallery_embeddings, sets.g_labels, sets.g_paths)
    nearest = topk(q_emb, gallery.vectors, k)
    result = {
        "open_set": open_set(queries, gallery, target_precision, k=k, neighbours=nearest),
        "calibration": _calibration(run, sets, q_emb, nearest),
    }
    result.update(diagnostics(queries, gallery, run.classes, k=k, neighbours=nearest))
    return result


def _add_baselines(result: dict, run, sets: EvaluationSets, device, report: Reporter, models=(None, None)) -> None:
    """The baselines of both protocols into ``result``: the stored ones when these are the queries they were
    measured on at training (and say so), else measured now. ``models``: (the network whose twins are the
    baselines, the run's own embeddings), as ``_baseline_embeddings`` takes them."""
    stored = _stored_baselines(run, sets)
    if stored is not None:
        result["baselines"], reused_disjoint = stored
        if "class_disjoint" in result and reused_disjoint:
            result["class_disjoint"]["baselines"] = reused_disjoint
        result["baselines_reused"] = sorted(result["baselines"])
        report(Progress(Stage.BASELINES, message=f"reused from training: {', '.join(sorted(stored[0]))}"))
        return
    result["baselines"] = {}
    for name, (qe, ge, ue) in _baseline_embeddings(run, sets, device, report, *models):
        report(Progress(Stage.BASELINES, message=f"{name}: retrieval metrics of {len(qe):,} queries"))
        held, dis = sets.protocols(qe, ge, ue)
        result["baselines"][name] = held
        if dis is not None:
            result["class_disjoint"].setdefault("baselines", {})[name] = dis

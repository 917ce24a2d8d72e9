"""Fitting: P×K batches, online mining, the epoch loop, checkpoints, and the candidates to keep (select.py chooses):
the network before training (for a pretrained backbone: its features through a PCA head), the best epoch, and the
plain pretrained features. ``fit`` is one stage of the pipeline (pipeline.py)."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..answers.calibrate import Answers
from ..config import DEFAULT_K, TrainConfig
from ..errors import Cancelled
from ..images.transforms import eval_transform, train_transform
from ..network.embed import DecodedImages, ImageDataset
from ..network.model import EmbeddingNet, freeze_batchnorm, init_head_pca, set_frozen_eval
from ..progress import EpochStats, Progress, Reporter, Stage, counter, epoch_ended, seconds_left
from . import distributed
from .checkpoint import Learning, Standing, checkpoint_file, checkpoint_state, resume, save_checkpoint
from .objective import loss_and_miner, optimizer_for, set_learning_rate
from .plan import Plan
from .select import Candidate, averaged_state, improves, keep, kept_network
from .shared import FrozenStages, TopOnly
from .trainee import Trainee, new_network
from .triplets import batch_stats
from .validate import Score, ValidationSet, Validator


@dataclass
class Fitted:
    """What fitting hands to the rest of the pipeline."""

    model: EmbeddingNet  # the kept network, in eval mode
    kept: str  # which candidate was kept, and why
    history: list[dict]  # one EpochStats dict per epoch
    validation: dict = field(default_factory=dict)  # the kept candidate's, the untrained one's, the pretrained's
    outcomes: Answers | None = None  # cross-validated: every out-of-fold answer, to calibrate and choose k on


def decoded_cache(mc) -> DecodedImages:
    """Decoded training images at the size augmentation crops from, kept between epochs (and between the networks
    of a cross-validation, which share one)."""
    return DecodedImages(mc.image_size if mc.resize == "stretch" else round(mc.image_size * 256 / 224))


class Loop:
    """Everything the epochs share: data, sampler shape, loss, miner, validation.

    Under torchrun each rank takes its share of an epoch's batches from a sampler of its own, and only rank 0
    validates (the others get an empty validation set).
    """

    def __init__(
        self,
        pl: Plan,
        cfg: TrainConfig,
        trainee: Trainee,
        report: Reporter,
        cache: DecodedImages | None = None,
        outcomes: bool = False,
    ) -> None:
        model, n_frozen = trainee.model, trainee.n_frozen
        mc, images = model.config, pl.images
        self.pl, self.cfg, self.model, self.n_frozen, self.outcomes = pl, cfg, model, n_frozen, outcomes
        self.net, self.world = model, distributed.world()  # ``net`` is what trains: DDP-wrapped by ``distribute``
        self.frozen: FrozenStages | None = None  # the frozen stages' output, shared with other networks (``share``)
        self.cache = cache or decoded_cache(mc)
        fit_idx = pl.train_idx[np.isin(images.labels[pl.train_idx], pl.trainable_classes)]
        self.dataset = ImageDataset(
            [images.paths[i] for i in fit_idx], images.labels[fit_idx], train_transform(mc), loader=self.cache
        )
        self.batch = pl.classes_per_batch * pl.per_class
        share = len(fit_idx) // self.world.size  # images per rank and epoch: an epoch is one pass over the data
        self.length = max(self.batch, share - share % self.batch)
        self.loss, self.miner = loss_and_miner(cfg, len(images.classes), mc.dim or model.backbone.out_features)
        self.loss_fn = self.loss  # what training calls: wrapped by ``distribute`` under torchrun
        parts = (pl.val_idx, pl.train_idx, pl.unseen_val_idx) if self.world.main else (np.zeros(0, dtype=int),) * 3
        self.val = ValidationSet.of(images.labels, *parts, cfg.seed)
        self.validator = Validator(
            trainee,
            [images.paths[i] for i in self.val.rows],
            eval_transform(mc),
            cfg.batch_size_embed,
            self.cache,
            progress=counter(report, Stage.VALIDATE, "the frozen layers, once"),
        )

    def share(self, frozen: FrozenStages) -> None:
        """Take the frozen stages' output from ``frozen`` (shared with the other networks of a cross-validation)
        instead of computing it: still images for validation, each epoch's views for training."""
        self.frozen = frozen
        self.validator.acts = frozen.still(self.validator.paths)

    def distribute(self) -> None:
        """Under torchrun: train through DDP, with the loss and the miner over every rank's batch."""
        if self.model.config.pretrained and self.cfg.freeze_bn:
            freeze_batchnorm(self.model.backbone)  # before DDP is built: it reduces what requires gradients then
        self.net = distributed.parallel(self.model)
        self.loss_fn, self.miner = distributed.global_batch(self.loss_fn, self.miner)

    def loader(self, epoch: int) -> DataLoader:
        """The epoch's P×K batches: of augmented images, or of their frozen-stage output when shared."""
        from pytorch_metric_learning import samplers

        views = self.frozen.views(epoch, self.cfg.seed) if self.frozen is not None else None
        seed = distributed.rank_seed(self.cfg.seed * 10_007 + epoch)  # per epoch, so --resume repeats exactly
        np.random.seed(seed)  # MPerClassSampler draws from numpy's global RNG
        torch.manual_seed(seed)  # augmentation
        sampler = samplers.MPerClassSampler(
            self.dataset.labels, m=self.pl.per_class, batch_size=self.batch, length_before_new_iter=self.length
        )
        if views is not None:
            return self.frozen.batches(views, self.dataset.paths, self.dataset.labels, sampler, self.batch)
        return DataLoader(self.dataset, batch_size=self.batch, sampler=sampler, drop_last=True)

    def score(self, report: Reporter, epoch: int = 0, emb: np.ndarray | None = None) -> Score:
        """The validation score of the current network (of ``emb`` when given), ``epoch`` 0 before training."""
        if not self.val:
            return Score({}, np.zeros(0, dtype=bool))
        if emb is None:
            words = f"after epoch {epoch}" if epoch else "before training"
            emb = self.validator.embeddings(progress=counter(report, Stage.VALIDATE, words, epoch))
        return self.val.score(emb, self.pl.images.labels, self.cfg.k or DEFAULT_K, outcomes=self.outcomes)

    def train_epoch(self, net, optimizer, epoch: int, report: Reporter, stop: Callable[[], bool]) -> np.ndarray:
        """One pass of ``net`` over the epoch's P×K batches. Returns the epoch's means of (loss, active share,
        d(a,p), d(a,n)).

        Under torchrun ``net`` is the DDP-wrapped network and the loss and miner see every rank's batch; the
        loss is that of the gathered batch (see ``distributed.global_batch``), the other statistics this rank's.
        """
        loader, miner = self.loader(epoch), self.miner
        sums, steps, ranks = np.zeros(4), len(loader), self.world.size
        for step, (x, y) in enumerate(loader, 1):
            if stop():
                raise Cancelled("training cancelled; the previous run is unchanged (use --resume to continue)")
            x, y = x.to(next(net.parameters()).device), y.to(next(net.parameters()).device)
            emb = net(x)  # (B, D)
            loss = self.loss_fn(emb, y, miner(emb, y) if miner else None)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            value = loss.item() / ranks
            sums += (value, *batch_stats(emb.detach(), y, self.cfg.margin))
            report(Progress(Stage.TRAIN, done=step, total=steps, epoch=epoch, loss=value))
        return sums / max(1, steps)

    def epoch(self, epoch: int, optimizer, report: Reporter, stop) -> tuple[EpochStats, Score]:
        t0 = time.perf_counter()
        self.net.train()
        if self.model.config.pretrained and self.cfg.freeze_bn:
            freeze_batchnorm(self.model.backbone)
        set_frozen_eval(self.model.backbone, self.n_frozen)
        net = self.net if self.frozen is None else TopOnly(self.model, self.n_frozen)
        mean = self.train_epoch(net, optimizer, epoch, report, stop)
        self.model.eval()
        val = self.score(report, epoch)
        m = val.metrics
        stats = EpochStats(
            epoch=epoch,
            loss=float(mean[0]),
            active_fraction=float(mean[1]),
            ap_distance=float(mean[2]),
            an_distance=float(mean[3]),
            val_precision_at_1=float(m.get("precision_at_1", float("nan"))),
            val_map_at_r=float(m.get("map_at_r", float("nan"))),
            seconds=time.perf_counter() - t0,
            val_unseen_map_at_r=m.get("unseen_map_at_r"),
            val_label_accuracy=m.get("label_accuracy"),
        )
        return stats, val


def starting_points(loop: Loop, report: Reporter) -> tuple[Candidate, Candidate | None]:
    """The network before training, and for a pretrained backbone its plain pretrained features, scored.

    For a pretrained backbone one pass of it initialises the head as PCA of the training images' features
    and scores both candidates.
    """
    model = loop.model
    state = copy.deepcopy(model.state_dict())
    if not model.config.pretrained or not loop.world.main:  # other ranks take rank 0's PCA head when DDP is built
        return Candidate("the network before training", loop.score(report), 0, state), None
    feats = loop.validator.features(counter(report, Stage.VALIDATE, "before training"))  # (N, F), validation order
    nq, ng = len(loop.val.queries), len(loop.val.gallery)
    if isinstance(model.head, torch.nn.Linear):
        init_head_pca(model.head, feats[nq : nq + ng])
        state = copy.deepcopy(model.state_dict())
    start = Candidate(
        "the pretrained backbone with its PCA head", loop.score(report, emb=loop.validator.embeddings(feats)), 0, state
    )
    plain = loop.score(report, emb=feats / np.linalg.norm(feats, axis=1, keepdims=True))
    pretrained = Candidate("the pretrained features", plain)
    return start, pretrained


def averaged_candidate(loop: Loop, start: dict, best: Candidate, report: Reporter) -> Candidate | None:
    """The best epoch averaged with the pretrained ``start`` weights (``select.averaged_state``), loaded into the
    loop's network and scored on its validation (cross-validation: once per fold); None where there is nothing
    to average: no pretrained backbone, no trained epoch, no validation, a share of 1."""
    share = loop.cfg.average_share
    if not loop.model.config.pretrained or not best.epoch or share >= 1 or not loop.val:
        return None
    state = averaged_state(start, best.state, share)
    loop.model.load_state_dict(state)
    name = f"epoch {best.epoch} averaged with its pretrained start ({share:.0%} fine-tuned)"
    return Candidate(name, loop.score(report, best.epoch), best.epoch, state, True)


def fit(
    pl: Plan,
    cfg: TrainConfig,
    device,
    report: Reporter,
    stop: Callable[[], bool],
    baseline: Candidate | None = None,
) -> Fitted:
    """Train a network on the plan's training images and keep the candidate that labels validation images best;
    ``baseline`` (the run's first answer, scored on the same validation images) is what training must beat.

    ``stop()`` is polled every step; True raises ``Cancelled`` (``--resume`` continues from the checkpoint, written
    beside ``cfg.out``). Under torchrun every rank calls it; rank 0 returns the kept network, the others their copy
    of the last one.
    """
    loop = Loop(pl, cfg, new_network(pl, cfg, cfg.seed, device), report)
    model = loop.model
    learning = Learning(model, loop.loss, optimizer_for(model, cfg, loop.loss_fn))
    if loop.val.note:
        report(Progress(Stage.NOTE, message=loop.val.note))
    start, pretrained = starting_points(loop, report)
    standing = _resumed(cfg, learning, device, report) or Standing(start)
    loop.distribute()
    train_epochs(loop, learning, standing, report, stop)
    if not loop.world.main:  # its part is done: rank 0 keeps a network and writes the run
        return Fitted(model.eval(), "", standing.history)
    best = standing.best
    averaged = averaged_candidate(loop, start.state, best, report)
    chosen, why = keep(start, best, pretrained, averaged, baseline)
    report(Progress(Stage.NOTE, message=f"kept {why}"))
    candidates = {c.name: c.score.metrics for c in (pretrained, baseline, start, best, averaged) if c is not None}
    validation = {"validation": chosen.score.metrics, "validation_candidates": candidates}
    return Fitted(kept_network(model, chosen, device), why, standing.history, validation)


def _resumed(cfg: TrainConfig, learning: Learning, device, report: Reporter) -> Standing | None:
    """With ``--resume``: where the checkpoint's epochs stood, loaded into ``learning``; None to start afresh."""
    ckpt_path = checkpoint_file(cfg)
    if cfg.resume and ckpt_path.exists():
        return resume(ckpt_path, cfg, learning, device, report)
    if cfg.resume:
        report(Progress(Stage.NOTE, message="nothing to resume: starting from the beginning"))
    return None


def train_epochs(
    loop: Loop, learning: Learning, standing: Standing, report: Reporter, stop: Callable[[], bool]
) -> None:
    """The epochs after ``standing.epoch``, until patience runs out, validation is perfect or ``cfg.epochs`` are
    done; ``standing`` follows them, and rank 0 writes a checkpoint after each."""
    cfg, s = loop.cfg, standing
    top = s.best.score  # the best label accuracy seen: the kept epoch may not drift below it by more than noise
    for epoch in range(s.epoch + 1, cfg.epochs + 1):
        if s.best.score.perfect and s.bad_epochs < cfg.patience:  # only a strictly better epoch is kept: none beats it
            report(Progress(Stage.NOTE, message=f"validation is perfect at epoch {s.best.epoch}: stopping"))
        if distributed.agree(s.bad_epochs >= cfg.patience or s.best.score.perfect):  # rank 0 decides for all
            break
        set_learning_rate(learning.optimizer, cfg, epoch)
        stats, val = loop.epoch(epoch, learning.optimizer, report, stop)
        stats.best = not val or improves(val, s.best.score, top)  # ranks other than 0 have no validation
        top = max(top, val, key=lambda v: v.key)
        s.history.append(stats.to_dict())
        s.epoch = epoch
        if stats.best:
            s.best = Candidate(f"epoch {epoch}", val, epoch, copy.deepcopy(learning.model.state_dict()))
            s.bad_epochs = 0
        else:
            s.bad_epochs += 1
        if loop.world.main:
            save_checkpoint(checkpoint_file(cfg), checkpoint_state(cfg, learning, s))
        left = (
            0.0 if s.best.score.perfect else seconds_left(epoch, s.bad_epochs, cfg.epochs, cfg.patience, stats.seconds)
        )
        report(epoch_ended(epoch, cfg.epochs, stats, left))

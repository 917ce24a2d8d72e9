"""Training time-to-quality on the digits demo: the project's recipe against a naive one, in the same process.

Recipe: what ``fit`` runs each epoch (embedder.training.train: P×K batches from MPerClassSampler, the configured miner,
TripletMarginLoss, Adam with the cosine schedule), called through the project's own ``Loop`` and ``train_epoch``.
Naive: the same network (same seed, same initial weights), the same Adam and learning rate (constant: it has no
epochs), the same augmented images, but each step a batch of uniformly random (anchor, positive, negative)
triplets with no mining and no class balancing, as many images per step as a P×K batch, through
pytorch-metric-learning's TripletMarginLoss with the same margin.

Both are scored on the same held-out queries (the plan's test split, never trained on) against the training images
as the gallery: precision@1, after every ``steps per recipe epoch`` steps. Only the training steps are timed
(scoring is not). The naive recipe gets the recipe's whole training time as its budget.

    python -m bench.bench_training [--quick]
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bench.common import table
from embedder.answers.metrics import retrieval_metrics, wilson_interval
from embedder.config import TrainConfig
from embedder.images.transforms import eval_transform
from embedder.network.embed import embed_images
from embedder.network.model import EmbeddingNet
from embedder.progress import silent
from embedder.training.objective import optimizer_for, set_learning_rate
from embedder.training.plan import plan
from embedder.training.train import Loop
from embedder.training.trainee import Trainee

TARGETS = (0.95, 0.98)
FULL_EPOCHS, QUICK_EPOCHS = 25, 3


@dataclass
class Curve:
    """One recipe's held-out precision@1 after each round of steps, against training seconds and steps."""

    name: str
    seconds: list[float] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    p1: list[float] = field(default_factory=list)

    def add(self, seconds: float, steps: int, p1: float) -> None:
        self.seconds.append(seconds)
        self.steps.append(steps)
        self.p1.append(p1)

    def reached(self, target: float) -> tuple[float, int] | None:
        """(training seconds, steps) of the first score at or above ``target``."""
        hit = next((i for i, p in enumerate(self.p1) if p >= target), None)
        return None if hit is None else (self.seconds[hit], self.steps[hit])


class HeldOut:
    """The plan's test images as queries and its training images as the gallery, embedded without augmentation."""

    def __init__(self, pl, device) -> None:
        paths, self.labels = pl.images.paths, pl.images.labels
        self.q, self.g = [paths[i] for i in pl.test_idx], [paths[i] for i in pl.train_idx]
        self.ql, self.gl = self.labels[pl.test_idx], self.labels[pl.train_idx]
        self.transform, self.device = eval_transform(pl.model_config), device

    def p1(self, model: EmbeddingNet) -> float:
        model.eval()
        q = embed_images(model, self.q, self.transform, batch_size=256, device=self.device)
        g = embed_images(model, self.g, self.transform, batch_size=256, device=self.device)
        model.train()
        return float(retrieval_metrics(q, self.ql, g, self.gl)["precision_at_1"])


def random_triplets(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 3) dataset rows: a random anchor, a random other image of its class, a random image of another class."""
    by_class = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
    out = np.empty((n, 3), dtype=np.int64)
    for t in range(n):
        a = rng.integers(len(labels))
        same = by_class[labels[a]]
        p = rng.choice(same[same != a])
        out[t] = (a, p, rng.choice(np.flatnonzero(labels != labels[a])))
    return out


def naive_step(model, dataset, optimizer, loss_fn, triplets: np.ndarray) -> None:
    """One step on a batch of given triplets: anchors, positives, negatives stacked, the loss told which is which."""
    items = [dataset[int(i)] for i in triplets.T.reshape(-1)]  # all anchors, then positives, then negatives
    x, y = torch.stack([im for im, _ in items]), torch.tensor([lab for _, lab in items])
    n = len(triplets)
    ids = (torch.arange(n), torch.arange(n, 2 * n), torch.arange(2 * n, 3 * n))
    loss = loss_fn(model(x.to(next(model.parameters()).device)), y, ids)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def train_recipe(loop: Loop, cfg: TrainConfig, held: HeldOut, steps_per_round: int) -> Curve:
    """The project's epochs (sampler, miner, loss, schedule), scored after each."""
    curve, clock, optimizer = Curve("recipe (P×K + miner)"), 0.0, optimizer_for(loop.model, cfg, loop.loss_fn)
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        set_learning_rate(optimizer, cfg, epoch)
        loop.model.train()
        loop.train_epoch(loop.model, optimizer, epoch, silent, lambda: False)
        clock += time.perf_counter() - t0
        curve.add(clock, epoch * steps_per_round, held.p1(loop.model))
    return curve


def train_naive(model, loop: Loop, cfg: TrainConfig, held: HeldOut, steps_per_round: int, budget: float) -> Curve:
    """Random triplets, no mining, constant learning rate, until the recipe's training time is spent."""
    from pytorch_metric_learning import losses

    curve, clock, rng = Curve("naive (random triplets)"), 0.0, np.random.default_rng(cfg.seed)
    loss_fn = losses.TripletMarginLoss(margin=cfg.margin)
    optimizer = optimizer_for(model, cfg, loss_fn)
    per_step = max(1, loop.batch // 3)
    while clock < budget:
        t0 = time.perf_counter()
        model.train()
        for _ in range(steps_per_round):
            naive_step(model, loop.dataset, optimizer, loss_fn, random_triplets(loop.dataset.labels, per_step, rng))
        clock += time.perf_counter() - t0
        curve.add(clock, (len(curve.p1) + 1) * steps_per_round, held.p1(model))
    return curve


def measure(epochs: int, seed: int = 0) -> tuple[list[Curve], dict]:
    """Both curves on the digits demo, and what they were measured on. One torch thread: on a shared 2-core
    machine two threads spin against the other processes and an epoch's time swings by 5-10x (measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _measure(epochs, seed)
    finally:
        torch.set_num_threads(threads)


def _measure(epochs: int, seed: int) -> tuple[list[Curve], dict]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(data="demo", out=str(Path(tmp) / "run"), epochs=epochs, seed=seed, device="cpu")
        pl = plan(cfg)
    device = torch.device("cpu")
    torch.manual_seed(cfg.seed)
    model = EmbeddingNet(pl.model_config).to(device)
    naive_model = copy.deepcopy(model)  # the same initial weights
    loop = Loop(pl, cfg, Trainee(model, 0, device), silent)
    steps_per_round = loop.length // loop.batch
    for path in loop.dataset.paths:  # decode once before any clock runs: neither recipe pays the first decode
        loop.cache(path)
    held = HeldOut(pl, device)
    start = held.p1(model)
    recipe = train_recipe(loop, cfg, held, steps_per_round)
    naive = train_naive(naive_model, loop, cfg, held, steps_per_round, recipe.seconds[-1])
    info = dict(start=start, queries=len(held.q), gallery=len(held.g), batch=loop.batch, per_step=loop.batch // 3,
                steps_per_round=steps_per_round, epochs=epochs, miner=cfg.miner, lr=cfg.lr, margin=cfg.margin,
                pk=f"{pl.classes_per_batch}×{pl.per_class}", load=os.getloadavg())  # fmt: skip
    return [recipe, naive], info


def ci(p: float, n: int) -> str:
    low, high = wilson_interval(round(p * n), n)
    return f"{p:.3f} [{low:.3f}, {high:.3f}]"


def section(curves: list[Curve], info: dict) -> str:
    """The BENCHMARKS.md section: time and steps to each target, P@1 at the recipe's budget, the curves."""
    recipe, naive = curves
    n = info["queries"]
    rows = []
    for c in curves:
        hits = [c.reached(t) for t in TARGETS]
        i = -1  # the recipe's last epoch; the naive recipe's first score at or past that time
        rows.append([c.name, *[f"{h[0]:.1f} s / {h[1]:,} steps" if h else "not reached" for h in hits],
                     f"{c.seconds[i]:.1f} s, {c.steps[i]:,} steps", ci(c.p1[i], n), f"{max(c.p1):.3f}"])  # fmt: skip
    head = ["recipe", *[f"to P@1 {t}" for t in TARGETS], "training time used", "final P@1 [95% CI]", "best P@1"]
    ratios = []
    for t in TARGETS:
        r, v = recipe.reached(t), naive.reached(t)
        if r and v:
            verdict = "met" if r[0] < v[0] else "**missed**"
            ratios.append(f"to {t}: naive {v[0]:.1f} s / recipe {r[0]:.1f} s = {v[0] / r[0]:.1f}x, {verdict}")
        elif r:
            ratios.append(f"to {t}: met, the naive recipe did not get there in {naive.seconds[-1]:.0f} s")
        else:
            ratios.append(f"to {t}: the recipe did not get there in {recipe.seconds[-1]:.0f} s")
    curve_rows = [[c.name, " ".join(f"{s:.0f}s:{p:.3f}" for s, p in zip(c.seconds, c.p1))] for c in curves]
    return "\n".join([
        f"### Training time-to-quality (digits demo, {info['epochs']} recipe epochs)", "",
        f"Small convnet at 32 px; held-out precision@1 of the {n} test images (never trained on) against the "
        f"{info['gallery']:,} training images, scored after every {info['steps_per_round']} steps (one recipe epoch); "
        f"only training steps are timed (one torch thread). "
        "The naive recipe trains until it has had at least the recipe's training time. "
        f"Recipe: P×K {info['pk']} batches, {info['miner']} miner, cosine lr from "
        f"{info['lr']:g}. Naive: the same network, initial weights, Adam at a constant {info['lr']:g}, augmentation "
        f"and margin {info['margin']:g}; each step a batch of {info['per_step']} uniformly random triplets "
        f"({3 * info['per_step']} images, no mining). P@1 before training: {info['start']:.3f}. "
        f"Load average at the end: {' / '.join(f'{x:.1f}' for x in info['load'])} (shared 2-core machine).", "",
        table(head, rows), "",
        f"Goal: the recipe reaches each target sooner — {'; '.join(ratios) or 'neither reached a target'}.", "",
        table(["recipe", "training seconds : held-out P@1"], curve_rows),
    ])  # fmt: skip


def run(quick: bool, out: Path) -> str:
    """The section for BENCHMARKS.md (``out`` unused: no figure)."""
    return section(*measure(QUICK_EPOCHS if quick else FULL_EPOCHS))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help=f"{QUICK_EPOCHS} recipe epochs (CI)")
    args = ap.parse_args(argv)
    print(run(args.quick, Path(".")))


if __name__ == "__main__":
    main()

"""What training minimises and how fast it moves: the loss and its miner, the optimizer's parameter groups, and the
learning-rate schedule (pytorch-metric-learning and torch; ``train.py`` runs the epochs). Each reads the training
stage's settings alone."""

from __future__ import annotations

import math

import torch

from ..config import TrainingSettings
from ..network.model import EmbeddingNet

PROXY_LR = 10  # proxies learn this many times faster than the head (Kim et al. 2020: 100, with a 100x smaller lr)


def loss_and_miner(cfg: TrainingSettings, n_classes: int, dim: int):
    """The loss and the miner that picks what it learns from (None: the loss takes the whole batch), by name
    (pytorch-metric-learning). ``n_classes`` and ``dim`` size the proxies of a proxy loss."""
    from pytorch_metric_learning import losses, miners

    if cfg.loss == "proxy-anchor":
        return losses.ProxyAnchorLoss(n_classes, dim), None
    if cfg.loss == "multi-similarity":
        return losses.MultiSimilarityLoss(), miners.MultiSimilarityMiner()
    if cfg.miner == "batch-hard":
        return losses.TripletMarginLoss(margin=cfg.margin), miners.BatchHardMiner()
    return losses.TripletMarginLoss(margin=cfg.margin), miners.TripletMarginMiner(
        margin=cfg.margin, type_of_triplets=cfg.miner
    )


def optimizer_for(model: EmbeddingNet, cfg: TrainingSettings, loss_fn: torch.nn.Module) -> torch.optim.Optimizer:
    """Adam with a gentler learning rate for a pretrained backbone than for the head, and a faster one for what
    the loss learns (proxies)."""
    backbone_lr = cfg.backbone_lr if model.config.pretrained else cfg.lr
    groups = [{"params": [p for p in model.backbone.parameters() if p.requires_grad], "lr": backbone_lr}]
    head = list(model.head.parameters())
    if head:
        groups.append({"params": head, "lr": cfg.lr})
    proxies = list(loss_fn.parameters())
    if proxies:
        groups.append({"params": proxies, "lr": cfg.lr * PROXY_LR, "weight_decay": 0.0})
    return torch.optim.Adam(groups, weight_decay=cfg.weight_decay)


def set_learning_rate(optimizer: torch.optim.Optimizer, cfg: TrainingSettings, epoch: int) -> None:
    """The epoch's learning rates from the schedule; a function of the epoch alone, so --resume repeats it."""
    factor = 1.0
    if cfg.schedule == "cosine":
        factor = 0.5 * (1 + math.cos(math.pi * (epoch - 1) / max(1, cfg.epochs)))
    for group in optimizer.param_groups:
        group.setdefault("base_lr", group["lr"])
        group["lr"] = group["base_lr"] * factor

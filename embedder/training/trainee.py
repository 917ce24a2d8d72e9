"""The network a training loop trains: seeded, with how many of a pretrained backbone's leading stages are frozen,
on its device. One record, since the loop, its validation and the frozen stages' cache all need the three."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import TrainingSettings
from ..network.model import EmbeddingNet, freeze_leading
from .plan import Plan


@dataclass(frozen=True)
class Trainee:
    """A network to train and where it runs."""

    model: EmbeddingNet  # in eval mode until an epoch trains it
    n_frozen: int  # leading backbone stages that never train (0: none, or not pretrained)
    device: torch.device | str


def new_network(pl: Plan, cfg: TrainingSettings, seed: int, device) -> Trainee:
    """A network to train, seeded, in eval mode, and how many of a pretrained backbone's stages are frozen."""
    torch.manual_seed(seed)
    model = EmbeddingNet(pl.model_config).to(device).eval()
    n_frozen = freeze_leading(model.backbone, cfg.freeze_fraction) if pl.model_config.pretrained else 0
    return Trainee(model, n_frozen, device)

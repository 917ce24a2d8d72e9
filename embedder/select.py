"""Choosing the model a run keeps, among candidates scored on validation."""

from __future__ import annotations

from dataclasses import dataclass, replace

from .model import EmbeddingNet


@dataclass
class Best:
    """The best trained candidate so far: its score, weights, epoch (0: before training) and metrics."""

    score: float
    state: dict
    epoch: int
    metrics: dict

    def to_dict(self) -> dict:
        return {"score": self.score, "state": self.state, "epoch": self.epoch, "metrics": self.metrics}


def score_of(metrics: dict) -> float:
    """The number candidates are ranked by (see ``ValidationSet.score``); -inf without validation."""
    return metrics.get("score", float("-inf"))


def keep(model: EmbeddingNet, best: Best, pretrained: dict, device) -> tuple[EmbeddingNet, str]:
    """The candidate that scored best on validation; the pretrained features win ties (simpler, no head)."""
    if pretrained and score_of(pretrained) >= best.score:
        kept = (
            f"pretrained features: validation score {score_of(pretrained):.3f} >= {best.score:.3f} of the best "
            f"trained epoch ({best.epoch})"
        )
        return EmbeddingNet(replace(model.config, dim=None)).to(device).eval(), kept
    model.load_state_dict(best.state)
    kept = f"epoch {best.epoch}" + (
        f": best validation score {best.score:.3f}" if best.metrics else " (no validation images)"
    )
    if best.epoch == 0:
        start = "the pretrained backbone with its PCA head" if model.config.pretrained else "the untrained network"
        kept = f"{start}, before triplet training: no epoch beat it on validation (score {best.score:.3f})"
    if pretrained:
        kept += f"; pretrained features scored {score_of(pretrained):.3f}"
    return model.eval(), kept

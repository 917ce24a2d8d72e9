"""Choosing the model a run keeps: the one that labels validation images best, where "best" must beat the noise.

Candidates: the baseline (the plain pretrained features; without pretrained weights the network before
training), the pretrained backbone with its PCA head, the best epoch, and for a pretrained backbone the best
epoch averaged with its start (``choose_tuned`` prefers it to the plain epoch unless that labels clearly better).
Each is scored by the k-NN vote's accuracy on the validation images (``validate.Score``). A candidate replaces
the baseline only when, on the same validation images, it gets clearly more of them right (a paired test:
queries it gets right that the baseline gets wrong, minus the reverse, must exceed 1.645 standard errors), or
gets at least as many right and ranks them better (MAP@R). With a few dozen validation images a difference of
one or two is noise, and the simpler model stays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from ..answers.calibrate import Answers
from ..answers.metrics import KNN_KS
from ..config import DEFAULT_K
from ..network.model import EmbeddingNet
from .validate import Score

Z = 1.645  # one-sided 95%


@dataclass
class Candidate:
    name: str  # what the user reads: "epoch 7", "pretrained features", ...
    score: Score
    epoch: int | None = None  # a state of the trained network: 0 is before training
    state: dict | None = field(default=None, repr=False)  # its weights
    averaged: bool = False  # the epoch's weights averaged with the starting ones (``averaged_state``)
    model: EmbeddingNet | None = field(default=None, repr=False)  # a network of its own (first.py's first answer)

    def to_dict(self) -> dict:
        """For a checkpoint: tensors and plain values only."""
        import torch

        return {
            "name": self.name,
            "metrics": self.score.metrics,
            "correct": torch.from_numpy(self.score.correct),
            "epoch": self.epoch,
            "state": self.state,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Candidate:
        return cls(d["name"], Score(d["metrics"], d["correct"].numpy()), d["epoch"], d["state"])

    def summary(self) -> str:
        m = self.score.metrics
        if "label_accuracy" not in m:
            return self.name
        low, high = m["label_accuracy_ci"]
        return (
            f"{self.name}: {m.get('scored_on', 'validation')} label accuracy {m['label_accuracy']:.3f} "
            f"[{low:.2f}, {high:.2f}] on {m['n_scored']} images, MAP@R {m.get('score_map_at_r', float('nan')):.3f}"
        )


def paired(a: Score, b: Score) -> tuple[int, int]:
    """(validation images ``a`` labels right and ``b`` wrong, the reverse)."""
    return int((a.correct & ~b.correct).sum()), int((~a.correct & b.correct).sum())


def clearly_better(a: Score, b: Score) -> bool:
    """Whether ``a`` labels the same validation images better than ``b`` by more than the noise."""
    gain, loss = paired(a, b)
    return gain - loss > Z * math.sqrt(gain + loss)


def improves(new: Score, best: Score, top: Score) -> bool:
    """Whether an epoch scoring ``new`` replaces the best epoch so far (``best``) during training: it labels the
    validation images clearly better, or ranks them better (MAP@R) while labelling them no worse than ``best`` nor
    than the epoch that labelled the most right (``top``) beyond the noise. With validation labels near 100%, one
    image more or less right is noise; the ranking is not."""
    if clearly_better(new, best):
        return True
    no_worse = not clearly_better(best, new) and not clearly_better(top, new)
    return no_worse and new.key[1] > best.key[1]


def choose_k(answers: Answers, default: int = DEFAULT_K) -> dict:
    """The k a run votes with, chosen on validation answers (``calibrate.Answers``): ``default`` unless another k
    of ``KNN_KS`` labels them clearly more right (the paired test candidates face); the most right of those.
    Returns the chosen ``k``, every k's label accuracy, and why, in one line."""
    ks = [k for k in KNN_KS if k <= answers.neighbours.shape[1]]
    right = {k: answers.at(k)[1] for k in ks}
    base = default if default in right else max(ks)
    better = [k for k in ks if clearly_better(Score({}, right[k]), Score({}, right[base]))]
    k = max(better, key=lambda j: (right[j].sum(), -j)) if better else base
    acc = {j: float(r.mean()) for j, r in right.items()}
    n, top = len(answers), max(ks, key=lambda j: (acc[j], -j))
    if better:
        gain, loss = paired(Score({}, right[k]), Score({}, right[base]))
        why = (
            f"k = {k}: its vote labels {acc[k]:.3f} of {n} validation images right against {acc[base]:.3f} with "
            f"k = {base}; {gain} right that k = {base} got wrong and {loss} the other way round, more than the noise"
        )
    else:
        why = (
            f"k = {base}: no other k labels the {n} validation images clearly more right (the best, k = {top}: "
            f"{acc[top]:.3f} against {acc[base]:.3f})"
        )
    return {"k": k, "label_accuracy_by_k": {str(j): a for j, a in acc.items()}, "why": why}


def _images(n: int) -> str:
    return f"{n} validation image" + ("" if n == 1 else "s")


def choose(baseline: Candidate, others: list[Candidate]) -> tuple[Candidate, str]:
    """The candidate to keep and why, in one line (see the module docstring for the rule)."""
    if not baseline.score:
        return baseline, f"{baseline.name}: no validation images to check anything against"
    better = [c for c in others if clearly_better(c.score, baseline.score)]
    if better:
        best = max(better, key=lambda c: c.score.key)
        gain, loss = paired(best.score, baseline.score)
        return best, (
            f"{best.summary()}; it labels {_images(gain)} right that {baseline.name} got wrong "
            f"and {loss} the other way round, more than the noise ({baseline.summary()})"
        )
    ties = [
        c
        for c in others
        if np.greater_equal(*paired(c.score, baseline.score)) and c.score.key[1] > baseline.score.key[1]
    ]
    if ties:
        best = max(ties, key=lambda c: c.score.key[1])
        return best, (
            f"{best.summary()}; it labels validation images as well as {baseline.name} and ranks them "
            f"better ({baseline.summary()})"
        )
    return baseline, (
        f"{baseline.summary()}; no other candidate labels validation images better by more than "
        f"the noise ({'; '.join(c.summary() for c in others)})"
    )


def averaged_state(start: dict, tuned: dict, share: float) -> dict:
    """Weight-space ensemble of a fine-tuned network with its pretrained start (WiSE-FT, Wortsman et al. 2022):
    ``share`` of each fine-tuned weight, the rest of the starting one; counters stay the fine-tuned ones. The
    average keeps what the pretrained features knew where a few hundred images pulled the network off it."""
    return {
        k: (share * v + (1 - share) * start[k].to(v.dtype)) if v.is_floating_point() else v for k, v in tuned.items()
    }


def choose_tuned(baseline: Candidate, best: Candidate, averaged: Candidate | None) -> tuple[Candidate, str]:
    """``choose`` for a pretrained backbone, moving no farther from the pretrained weights than validation asks:
    the averaged network when it beats the baseline, unless the fully fine-tuned epoch labels clearly more
    validation images right than it (a better ranking alone does not pay for leaving the pretrained weights
    farther behind); otherwise the best epoch against the baseline."""
    if averaged is not None:
        kept, why = choose(baseline, [averaged])
        if kept is averaged and not clearly_better(best.score, averaged.score):
            gain, loss = paired(best.score, averaged.score)
            return kept, (
                f"{why}; {best.name} without the average labels {_images(gain)} right that it got wrong "
                f"and {loss} the other way round, within the noise ({best.summary()})"
            )
    return choose(baseline, [best])


def keep(
    start: Candidate,
    best: Candidate,
    pretrained: Candidate | None,
    averaged: Candidate | None = None,
    baseline: Candidate | None = None,
) -> tuple[Candidate, str]:
    """The candidate to keep and why: the rule of this module over the starting points, the best epoch and
    (pretrained backbones) the best epoch averaged with its start. ``baseline``, the first answer the run already
    gives (first.py), stands in for what training must beat: for a pretrained backbone it is the plain pretrained
    features, as the run embeds them; from scratch it replaces the untrained network."""
    if baseline is not None and baseline.score:
        if pretrained is not None:
            pretrained = baseline
        else:
            start = baseline
    if pretrained is not None:
        return choose_tuned(pretrained, best, averaged)
    others = [best] if best.epoch else []
    if not start.score:  # no validation: from scratch, training is the only way to a useful network
        start, others = best, []
    return choose(start, others)


def kept_network(model: EmbeddingNet, chosen: Candidate, device) -> EmbeddingNet:
    """``chosen``'s network in eval mode: its own (a first answer), the plain pretrained features (no head), or
    ``model`` with its weights."""
    if chosen.model is not None:
        return chosen.model.to(device).eval()
    if chosen.state is None:  # the plain pretrained features: no head
        return EmbeddingNet(replace(model.config, dim=None)).to(device).eval()
    model.load_state_dict(chosen.state)
    return model.eval()

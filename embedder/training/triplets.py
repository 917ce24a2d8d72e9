"""A few mined triplets from a run's current model, so a newcomer can see what "a triplet" is.

The miner is the one training uses (pytorch-metric-learning's TripletMarginMiner), applied to one PxK batch
of gallery embeddings, exactly as a training step would see it (minus augmentation).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import EmbedderError


def kind_of(ap_distance: float, an_distance: float, margin: float) -> str:
    """How a triplet stands under the margin: "hard" (the negative is nearer than the positive), "semi-hard"
    (farther, but inside the margin: it still has a loss) or "easy" (already separated by the margin)."""
    if an_distance < ap_distance:
        return "hard"
    return "semi-hard" if an_distance < ap_distance + margin else "easy"


@torch.no_grad()
def batch_stats(embeddings: torch.Tensor, labels: torch.Tensor, margin: float) -> tuple[float, float, float]:
    """Over every valid triplet of a batch: the share violating the margin, mean d(a,p) and mean d(a,n)."""
    d = torch.cdist(embeddings, embeddings)  # (B, B)
    same = labels[:, None] == labels[None, :]
    pos = same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    neg = ~same
    valid = pos[:, :, None] & neg[:, None, :]  # (B, B, B): anchor, positive, negative
    active = (d[:, :, None] - d[:, None, :] + margin > 0) & valid
    n_valid = int(valid.sum())
    frac = float(active.sum()) / n_valid if n_valid else 0.0
    ap = float(d[pos].mean()) if pos.any() else 0.0
    an = float(d[neg].mean()) if neg.any() else 0.0
    return frac, ap, an


@dataclass
class Triplet:
    anchor: int  # row in the embeddings given to mine_triplets
    positive: int  # same label as the anchor
    negative: int  # another label
    ap_distance: float  # L2 distance anchor-positive
    an_distance: float  # L2 distance anchor-negative


@dataclass
class TripletImages:
    """A Triplet resolved to gallery files and label names."""

    anchor: Path
    positive: Path
    negative: Path
    label: str  # of anchor and positive
    negative_label: str
    ap_distance: float
    an_distance: float
    miner: str  # the miner type that found it: "semihard", "hard" or "all"
    kind: str  # where it stands under the margin: "hard", "semi-hard" or "easy" (see ``kind_of``)


def mine_triplets(
    embeddings: np.ndarray, labels: np.ndarray, margin: float = 0.2, kind: str = "semihard"
) -> list[Triplet]:
    """Every triplet of a batch that TripletMarginMiner selects, in the miner's order.

    Args:
        embeddings: (B, D) L2-normalised rows.
        labels: (B,) int labels.
        margin: the triplet margin.
        kind: "semihard" (d(a,p) < d(a,n) < d(a,p) + margin), "hard" (d(a,n) < d(a,p)) or "all"
            (d(a,n) < d(a,p) + margin: every triplet that still has a loss).
    """
    from pytorch_metric_learning import miners

    x = torch.from_numpy(np.asarray(embeddings, dtype=np.float32))
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    a, p, n = miners.TripletMarginMiner(margin=margin, type_of_triplets=kind)(x, y)
    d = torch.cdist(x, x)  # (B, B)
    return [Triplet(int(i), int(j), int(k), float(d[i, j]), float(d[i, k])) for i, j, k in zip(a, p, n)]


def pk_rows(labels: np.ndarray, classes_per_batch: int, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Rows of one random PxK batch: ``classes_per_batch`` labels with 2+ images, up to ``per_class`` rows each.

    Raises:
        EmbedderError: fewer than 2 labels with 2 images each.
    """
    usable = [c for c in np.unique(labels) if (labels == c).sum() >= 2]
    if len(usable) < 2:
        raise EmbedderError("need at least 2 labels with 2 or more gallery images to show triplets")
    chosen = rng.choice(usable, size=min(classes_per_batch, len(usable)), replace=False)
    return np.concatenate(
        [
            rng.choice(np.flatnonzero(labels == c), size=min(per_class, int((labels == c).sum())), replace=False)
            for c in chosen
        ]
    )


def sample_triplets(
    run, n: int = 4, classes_per_batch: int = 8, per_class: int = 4, seed: int = 0
) -> list[TripletImages]:
    """``n`` triplets mined from one random PxK batch of ``run``'s gallery with its stored (current) embeddings.

    Semi-hard triplets are preferred (what training mines by default); when the model already separates this
    batch too well for any, hard and then any still-active triplets are tried; none at all returns [].

    Raises:
        EmbedderError: the gallery has fewer than 2 labels with 2 images each.
    """
    labels = np.asarray(run.gallery_labels)
    rng = np.random.default_rng(seed)
    rows = pk_rows(labels, classes_per_batch, per_class, rng)
    emb, lab = run.gallery_embeddings[rows], labels[rows]
    margin = run.train_config.margin
    for kind in ("semihard", "hard", "all"):
        found = mine_triplets(emb, lab, margin, kind)
        if found:
            break
    else:
        return []
    picks = rng.choice(len(found), size=min(n, len(found)), replace=False)
    files = run.gallery_files()
    out = []
    for t in (found[i] for i in picks):
        a, p, neg = rows[t.anchor], rows[t.positive], rows[t.negative]
        out.append(
            TripletImages(
                files[a],
                files[p],
                files[neg],
                run.classes[labels[a]],
                run.classes[labels[neg]],
                t.ap_distance,
                t.an_distance,
                kind,
                kind_of(t.ap_distance, t.an_distance, margin),
            )
        )
    return out

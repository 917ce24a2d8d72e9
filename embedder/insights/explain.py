"""What triplet training changed, one batch at a time: the same anchor / positive / negative images measured by the
network training started from and by the trained one, each triplet easy, semi-hard or hard under the margin.

"Before" is the network the run's baselines call it: the plain pretrained features for a pretrained backbone (when
its weights are on this machine), else the untrained network seeded as training seeded it. "After" is the run's
stored gallery embeddings: what every search of the run uses. Triplets are chosen by pytorch-metric-learning's
TripletMarginMiner (``triplets.mine_triplets``), as a training step would choose them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..progress import Reporter, silent
from ..training.triplets import kind_of, mine_triplets, pk_rows

KINDS = ("easy", "semihard", "hard")  # the miner's names; kind_of says "semi-hard"


@dataclass
class Side:
    """One triplet under one network."""

    ap_distance: float
    an_distance: float
    kind: str  # "easy", "semi-hard" or "hard" (``triplets.kind_of``)


@dataclass
class ExplainedTriplet:
    anchor: int  # gallery rows
    positive: int
    negative: int
    before: Side
    after: Side


@dataclass
class Explanation:
    """A batch's triplets before and after training."""

    rows: np.ndarray  # (B,) the batch's gallery rows
    triplets: list[ExplainedTriplet]
    before_name: str  # "pretrained", "untrained" or (an imported network) "raw pixels": what "before" is
    counts: dict  # {"before"|"after": {"easy"|"semihard"|"hard": number of the batch's triplets}}
    margin: float


def before_network(run, device: str = "cpu"):
    """(embedding function, name) of the network training started from; see the module docstring."""
    from ..network.model import EmbeddingNet, pretrained_available

    if run.model_config.pretrained and pretrained_available(run.model_config.backbone):
        net = EmbeddingNet(run.model_config, load_pretrained=True).eval().to(device)
        return net.backbone_features, "pretrained"
    torch.manual_seed(run.train_config.seed)  # as evaluate.py builds its "untrained" baseline
    return EmbeddingNet(run.model_config, load_pretrained=False).eval().to(device), "untrained"


def _counts(emb: np.ndarray, labels: np.ndarray, margin: float) -> dict[str, int]:
    return {kind: len(mine_triplets(emb, labels, margin, kind)) for kind in KINDS}


def _side(emb: np.ndarray, a: int, p: int, n: int, margin: float) -> Side:
    ap, an = float(np.linalg.norm(emb[a] - emb[p])), float(np.linalg.norm(emb[a] - emb[n]))
    return Side(ap, an, kind_of(ap, an, margin))


def compare(before: np.ndarray, after: np.ndarray, labels: np.ndarray, margin: float, n: int, seed: int = 0):
    """``n`` triplets of a batch, each measured in both spaces, and how many triplets of each kind each space has.

    Args:
        before, after: (B, D) embeddings of one batch's images in the two spaces.
        labels: (B,) their labels.

    Returns:
        (triplets with batch positions, counts). The triplets are those that still had a loss before training
        (the miner's "all"), picked at random with ``seed``; easy ones when there are none.
    """
    found = mine_triplets(before, labels, margin, "all") or mine_triplets(before, labels, margin, "easy")
    picks = np.random.default_rng(seed).choice(len(found), size=min(n, len(found)), replace=False) if found else []
    chosen = sorted((found[i] for i in picks), key=lambda t: (t.anchor, t.positive, t.negative))
    triplets = []
    for t in chosen:
        apn = (t.anchor, t.positive, t.negative)
        triplets.append(ExplainedTriplet(*apn, _side(before, *apn, margin), _side(after, *apn, margin)))
    return triplets, {"before": _counts(before, labels, margin), "after": _counts(after, labels, margin)}


@dataclass(frozen=True)
class BatchDraw:
    """Which batch of the gallery is explained, and how many of its triplets are shown."""

    classes_per_batch: int = 4  # P: labels in the batch
    per_class: int = 4  # K: images of each
    seed: int = 0  # picks the batch and its triplets
    n: int = 6  # triplets shown


def explain_batch(
    run, draw: BatchDraw = BatchDraw(), device: str = "cpu", progress: Reporter | None = None
) -> Explanation:
    """One random PxK batch of ``run``'s gallery (``draw``), before and after training; triplet rows are gallery
    rows.

    Raises:
        EmbedderError: the gallery has fewer than 2 labels with 2 images each.
    """
    from ..answers.evaluate import embedder_of

    labels = np.asarray(run.gallery_labels)
    rows = pk_rows(labels, draw.classes_per_batch, draw.per_class, np.random.default_rng(draw.seed))  # (B,)
    files = run.gallery_files()
    if run.onnx is not None:  # trained elsewhere: nothing here knows its starting point; raw pixels stand in
        from ..answers.evaluate import raw_pixel_embed

        before, name = raw_pixel_embed([files[r] for r in rows]), "raw pixels"
    else:
        fn, name = before_network(run, device)
        embed = embedder_of(run, device, progress or silent)
        before = embed(fn, [files[r] for r in rows], f"{name} network")  # (B, D')
    after = run.gallery_embeddings[rows]  # (B, D)
    margin = run.train_config.margin
    found, counts = compare(before, after, labels[rows], margin, draw.n, draw.seed)
    for t in found:  # batch positions -> gallery rows
        t.anchor, t.positive, t.negative = int(rows[t.anchor]), int(rows[t.positive]), int(rows[t.negative])
    return Explanation(rows, found, name, counts, margin)

"""The first answer: a model that needs no training, scored on the images training is judged on, so a run can be
written and queried in seconds while fine-tuning works to beat it.

- A pretrained backbone (photos): its plain pooled features, mirror-averaged as the run embeds them. On small
  photo sets they are often as good as what an hour of fine-tuning keeps.
- Tiny images (a network trained from scratch): the pixels themselves at ``PIXEL_SIDE`` px, through a PCA head or
  raw, whichever labels the validation (or out-of-fold) images better. On the digits both label 96-99% of the
  validation images right (BENCHMARKS.md), with one decoding pass and no gradient.

Each candidate is scored exactly as training scores its own (the same validation set, or the same folds, the same
vote), so the final choice between the first answer and a trained network is select.py's paired test on the same
images: training replaces the first answer only when it labels them clearly better.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from ..config import DEFAULT_K, PIXELS, TrainConfig
from ..images.transforms import eval_transform
from ..network.embed import embed_images
from ..network.model import EmbeddingNet, init_head_pca
from ..progress import Reporter, Stage, counter
from ..runs.run import gallery_rows
from .crossval import pool
from .plan import Plan
from .select import Candidate
from .train import Fitted
from .validate import Score, ValidationSet

PIXEL_SIDE = 16  # the side pixels are compared at: on the digits 8, 16 and 32 px label alike (BENCHMARKS.md)
RAW_MAX_BYTES = 256 << 20  # raw pixels are a candidate while the gallery's rows of them fit in this much memory
# A run keeps its gallery's pretrained features, to judge its labels in (label_free), up to this many images:
# float16, 1,280 a row for EfficientNet-Lite0 (51 MB at the limit). Past it, insights judge in the network's space.
LABEL_FREE_MAX = 20_000


@dataclass
class First:
    """The first answer, ready to become a run."""

    fitted: Fitted  # its network (eval mode), why it was chosen, its validation numbers, out-of-fold answers
    candidate: Candidate  # its score with ``model`` set: the baseline training must beat
    rows: np.ndarray  # (N,) gallery rows into the plan's images
    emb: np.ndarray  # (N, D) their embeddings


def score_fixed(emb: np.ndarray, rows: np.ndarray, pl: Plan, cfg: TrainConfig, folds: list | None) -> Score:
    """How well fixed embeddings of the gallery ``rows`` (sorted) label images as training's candidates are
    scored: with ``folds``, every training and validation image answered from the other folds, pooled (as
    crossval.py scores); otherwise the validation images answered from the training images (as train.Loop does)."""
    labels, k = pl.images.labels, cfg.k or DEFAULT_K
    at = lambda r: emb[np.searchsorted(rows, r)]  # noqa: E731  (rows of the plan -> rows of emb)
    if folds:
        none = np.zeros(0, dtype=np.int64)
        sets = [ValidationSet.of(labels, te, tr, none, cfg.seed) for tr, te in folds]
        return pool(
            [vs.score(at(vs.rows), labels, k, outcomes=True) for vs in sets], f"{len(folds)}-fold cross-validation"
        )
    vs = ValidationSet.of(labels, pl.val_idx, pl.train_idx, pl.unseen_val_idx, cfg.seed)
    return vs.score(at(vs.rows), labels, k)


def pretrained_features(model_config) -> EmbeddingNet:
    """The backbone's plain pooled features, as it was pretrained (no head, nothing learnt from labels)."""
    return EmbeddingNet(replace(model_config, dim=None)).eval()


def label_free(first: First, model_config) -> np.ndarray | None:
    """(N, F) float16: the first answer's gallery embeddings, kept to judge the labels in (insights/findings.py),
    when they are a pretrained backbone's features (which never saw a label) and the gallery is small enough;
    else None. Pixels are label-free too, but on the digits they judge worse than a network trained from scratch
    (BENCHMARKS.md, "The labelling loop")."""
    if not model_config.pretrained or len(first.emb) > LABEL_FREE_MAX:
        return None
    return first.emb.astype(np.float16)


def _pretrained(
    pl: Plan, cfg: TrainConfig, rows, device, report: Reporter
) -> list[tuple[str, EmbeddingNet, np.ndarray]]:
    mc = replace(pl.model_config, dim=None)
    net = pretrained_features(pl.model_config).to(device)
    emb = embed_images(
        net,
        [pl.images.paths[i] for i in rows],
        eval_transform(mc),
        batch_size=cfg.batch_size_embed,
        flip_tta=mc.flip_tta,
        device=device,
        progress=counter(report, Stage.EMBED, "the gallery, with the pretrained features"),
        fast=True,  # a fixed network: on the CPU a large gallery goes through onnxruntime (network/fast.py)
    )
    return [("the pretrained features", net, emb)]


def _pixels(pl: Plan, cfg: TrainConfig, rows, device, report: Reporter) -> list[tuple[str, EmbeddingNet, np.ndarray]]:
    side = min(PIXEL_SIDE, pl.model_config.image_size)
    mc = replace(pl.model_config, backbone=PIXELS, dim=None, image_size=side, pretrained=False, flip_tta=False)
    raw = EmbeddingNet(mc).eval()
    feats = embed_images(
        raw.backbone,
        [pl.images.paths[i] for i in rows],
        eval_transform(mc),
        batch_size=max(cfg.batch_size_embed, 256),
        progress=counter(report, Stage.EMBED, "the gallery, as pixels"),
    )  # (N, 3·side²), not normalised
    pca = EmbeddingNet(replace(mc, dim=min(cfg.dim, feats.shape[1]))).eval()
    init_head_pca(pca.head, feats[np.isin(rows, pl.train_idx)])
    with torch.no_grad():
        projected = F.normalize(pca.head(torch.from_numpy(feats)), dim=1).numpy()
    found = [(f"the pixels at {side} px through a PCA head", pca.to(device), projected)]
    if feats.nbytes <= RAW_MAX_BYTES:
        found.append(
            (f"the raw pixels at {side} px", raw.to(device), feats / np.linalg.norm(feats, axis=1, keepdims=True))
        )
    return found


def first_model(pl: Plan, cfg: TrainConfig, device, report: Reporter, folds: list | None = None) -> First:
    """The model a run answers with before any training (see the module docstring), its gallery embeddings, and
    its score on the validation images (``folds``: on every training and validation image, out of fold)."""
    rows = gallery_rows(pl.parts)
    found = (_pretrained if pl.model_config.pretrained else _pixels)(pl, cfg, rows, device, report)
    scored = [(name, net, emb, score_fixed(emb, rows, pl, cfg, folds)) for name, net, emb in found]
    name, net, emb, score = max(scored, key=lambda s: s[3].key)  # ties: the first listed (the smaller embedding)
    others = "; ".join(Candidate(n, s).summary() for n, _, _, s in scored if n != name)
    why = Candidate(name, score).summary() + (f" (against {others})" if others else "") + ": no training needed"
    candidates = {n: s.metrics for n, _, _, s in scored}
    fitted = Fitted(
        net,
        why,
        [],
        {"validation": score.metrics, "validation_candidates": candidates},
        score.outcomes if folds else None,
    )
    return First(fitted, Candidate(name, score, model=net), rows, emb.astype(np.float32))

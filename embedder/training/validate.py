"""Validation during training: embed the validation images with the current network and score them.

Validation images (never trained on) are the queries, training images the gallery; classes held out of
training are scored leave-one-out among themselves. Both sides are capped (seeded, stratified samples) so an
epoch's validation costs the same at a million images as at ten thousand, and the run says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..answers.calibrate import Answers
from ..answers.metrics import retrieval_metrics, vote_correct, wilson_interval
from ..images.data import stratified_sample
from ..network.embed import embed_images
from ..network.model import EmbeddingNet

MAX_QUERIES = 2_000  # validation queries scored each epoch (and as many unseen-class images)
MAX_GALLERY = 20_000  # training images they are searched among


def cap(rows: np.ndarray, labels: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """At most ``limit`` of ``rows`` (sorted), every label keeping its share: a seeded stratified sample."""
    if len(rows) <= limit:
        return rows
    return np.sort(rows[stratified_sample(labels[rows], limit, seed)])


@dataclass
class ValidationSet:
    """The image rows validation embeds, in this order: queries, their gallery, unseen-class images."""

    queries: np.ndarray
    gallery: np.ndarray
    unseen: np.ndarray
    note: str | None = None  # what was sampled, for the user

    @classmethod
    def of(cls, labels: np.ndarray, val: np.ndarray, train: np.ndarray, unseen: np.ndarray, seed: int):
        parts = (
            cap(val, labels, MAX_QUERIES, seed),
            cap(train, labels, MAX_GALLERY, seed),
            cap(unseen, labels, MAX_QUERIES, seed),
        )
        sampled = [
            f"{len(p):,} of {len(full):,} {what}"
            for p, full, what in zip(
                parts, (val, train, unseen), ("validation images", "training images", "unseen-class images")
            )
            if len(p) < len(full)
        ]
        note = f"validation each epoch scores a seeded sample: {', '.join(sampled)}" if sampled else None
        return cls(*parts, note)

    @property
    def rows(self) -> np.ndarray:
        return np.concatenate([self.queries, self.gallery, self.unseen])

    def __bool__(self) -> bool:
        return bool(len(self.queries) or len(self.unseen))

    def score(self, emb: np.ndarray, labels: np.ndarray, k: int, outcomes: bool = False) -> Score:
        """How well embeddings ``emb`` (rows of ``self.rows``) label the validation images.

        Validation images are queries against the training images; unseen-class images (classes held out of
        training) label each other leave-one-out. The kept model is chosen by the k-NN vote's accuracy over
        all of them, MAP@R breaking ties. With ``outcomes`` (only without unseen classes) the score also keeps
        the answers calibration and the choice of k are fitted on (``calibrate.Answers``).
        """
        nq, ng = len(self.queries), len(self.gallery)
        lab = labels[self.rows]
        q, g, u = (emb[:nq], lab[:nq]), (emb[nq : nq + ng], lab[nq : nq + ng]), (emb[nq + ng :], lab[nq + ng :])
        m = retrieval_metrics(*q, *g, k=k) if nq else {}
        kept = Answers.of(*q, *g) if nq and outcomes else None
        correct = [kept.at(k)[1] if kept is not None else vote_correct(*q, *g, k=k)] if nq else []
        maps = [m["map_at_r"]] if "map_at_r" in m else []
        if len(self.unseen):
            um = retrieval_metrics(*u, *u, leave_one_out=True, k=k)
            if "map_at_r" in um:
                m["unseen_map_at_r"], m["unseen_precision_at_1"] = um["map_at_r"], um["precision_at_1"]
                maps.append(um["map_at_r"])
                correct.append(vote_correct(*u, *u, k=k, leave_one_out=True))
        right = np.concatenate(correct) if correct else np.zeros(0, dtype=bool)
        if len(right):
            low, high = wilson_interval(int(right.sum()), len(right))
            m.update(label_accuracy=float(right.mean()), label_accuracy_ci=[low, high], n_scored=len(right))
        if maps:
            m["score_map_at_r"] = float(np.mean(maps))
        return Score(m, right, kept)


@dataclass
class Score:
    """A candidate's validation result: JSON-ready metrics, and which validation queries its vote got right."""

    metrics: dict
    correct: np.ndarray  # (Q,) bool
    outcomes: Answers | None = None  # the answers behind it, kept for calibration and the choice of k

    @property
    def key(self) -> tuple[float, float]:
        """What candidates are ranked by: label accuracy, then MAP@R; (-inf, -inf) without validation."""
        return (self.metrics.get("label_accuracy", float("-inf")), self.metrics.get("score_map_at_r", float("-inf")))

    @property
    def perfect(self) -> bool:
        return self.key == (1.0, 1.0)

    def __bool__(self) -> bool:
        return bool(len(self.correct))


class Validator:
    """Embeds the validation images each epoch. The output of the frozen leading stages never changes, so it
    is computed once and kept (when it fits in ``max_bytes``); each epoch then runs only the trainable stages
    and the head."""

    def __init__(
        self,
        model: EmbeddingNet,
        n_frozen: int,
        paths: list,
        transform,
        batch_size: int,
        device,
        loader,
        max_bytes: int = 1 << 30,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.model, self.n_frozen, self.paths, self.batch_size, self.device = model, n_frozen, paths, batch_size, device
        self.transform, self.loader, self.progress = transform, loader, progress
        self.acts: np.ndarray | None = None  # the frozen stages' output, computed at the first use (or handed in)
        self.keep_acts = False
        if n_frozen and paths:
            side = model.config.image_size
            with torch.no_grad():
                probe = model.backbone.run(torch.zeros(1, 3, side, side, device=device), 0, n_frozen)
            self.keep_acts = probe.numel() * 4 * len(paths) <= max_bytes

    def _frozen(self) -> np.ndarray | None:
        """The frozen stages' output of ``paths`` (N, C, H, W), once; None when it does not fit in memory."""
        if self.acts is None and self.keep_acts:
            self.acts = embed_images(
                lambda x: self.model.backbone.run(x, 0, self.n_frozen),
                self.paths,
                self.transform,
                batch_size=self.batch_size,
                device=self.device,
                loader=self.loader,
                progress=self.progress,
            )
        return self.acts

    @torch.no_grad()
    def features(self, progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Pooled backbone features (N, F) of ``paths``, not normalised; ``progress(done, total)`` as they come."""
        if self._frozen() is None:
            return embed_images(
                self.model.backbone,
                self.paths,
                self.transform,
                batch_size=self.batch_size,
                device=self.device,
                loader=self.loader,
                progress=progress,
            )
        b, out = self.batch_size, []
        for i in range(0, len(self.acts), b):
            x = torch.from_numpy(self.acts[i : i + b]).to(self.device)  # (B, C, H, W)
            out.append(self.model.backbone.run(x, self.n_frozen).mean(dim=(2, 3)).cpu().numpy())
            if progress is not None:
                progress(min(i + b, len(self.acts)), len(self.acts))
        return np.concatenate(out)

    @torch.no_grad()
    def embeddings(
        self, features: np.ndarray | None = None, progress: Callable[[int, int], None] | None = None
    ) -> np.ndarray:
        """(N, D) unit vectors of the current network (from ``features`` when already computed)."""
        f = torch.from_numpy(self.features(progress) if features is None else features).to(self.device)
        return F.normalize(self.model.head(f), dim=1).cpu().numpy()

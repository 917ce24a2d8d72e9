"""kNN label prediction: neighbours from the gallery index, a distance-weighted vote, an optional "unknown"."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image

from .embed import embed_images
from .run import Run
from .transforms import eval_transform

UNKNOWN = "unknown"
EPS = 1e-6  # keeps an exact duplicate (distance 0) from dividing by zero; it then wins the vote outright


@dataclass
class Neighbor:
    path: str
    label: str
    distance: float
    index: int  # row in the run's gallery


@dataclass
class Prediction:
    image: str
    label: str
    confidence: float  # the winning label's share of the vote (0..1)
    votes: dict[str, float]  # every voting label's share, largest first
    neighbors: list[Neighbor]
    nearest_distance: float = float("nan")
    embedding: np.ndarray | None = field(default=None, repr=False)

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("embedding")
        d["neighbors"] = [{"path": n.path, "label": n.label, "distance": n.distance} for n in self.neighbors]
        return d

    def to_row(self, gallery_paths: Sequence[str] | None = None) -> dict:
        """One flat row for a CSV or a table: votes as JSON, neighbours as ``label:distance:path | ...``, their
        paths as in ``gallery_paths`` (relative to the data folder: a shared file need not reveal the server's
        folders) or absolute."""
        where = (lambda n: gallery_paths[n.index]) if gallery_paths is not None else (lambda n: n.path)
        return {
            "file": self.image,
            "label": self.label,
            "confidence": round(self.confidence, 4),
            "votes": json.dumps({k: round(v, 4) for k, v in self.votes.items()}),
            "nearest_distance": round(self.nearest_distance, 4),
            "neighbours": " | ".join(f"{n.label}:{n.distance:.4f}:{where(n)}" for n in self.neighbors),
        }


def vote(labels: Sequence[str], distances: Sequence[float]) -> tuple[str, float, dict[str, float]]:
    """Distance-weighted vote: each neighbour adds 1 / (distance + eps) to its label.

    Returns:
        (label, confidence, shares): the label with the largest share (ties go to the label of the nearer
        neighbour), its share, and all shares sorted largest first.
    """
    if len(labels) == 0:
        raise ValueError("vote needs at least one neighbour")
    weight: dict[str, float] = {}
    first_seen: dict[str, int] = {}
    for rank, (label, d) in enumerate(zip(labels, distances)):
        weight[label] = weight.get(label, 0.0) + 1.0 / (float(d) + EPS)
        first_seen.setdefault(label, rank)
    total = sum(weight.values())
    order = sorted(weight, key=lambda lab: (-weight[lab], first_seen[lab]))
    shares = {lab: weight[lab] / total for lab in order}
    return order[0], shares[order[0]], shares


def knn_predictions(idx: np.ndarray, dist: np.ndarray, gallery_labels: np.ndarray, k: int) -> np.ndarray:
    """Distance-weighted vote over the first k neighbours of each row -> predicted labels (Q,)."""
    return np.array([int(vote(gallery_labels[i[:k]].tolist(), d[:k])[0]) for i, d in zip(idx, dist)])


class Predictor:
    """Answers "what is this image?" from a run: embed, find neighbours in the Annoy index, vote."""

    def __init__(self, run: Run, device: str = "cpu") -> None:
        self.run, self.device = run, device
        self.model = run.model(device)
        self.transform = eval_transform(run.model_config)
        self.index = run.index()

    @property
    def k(self) -> int:
        """The run's number of voting neighbours."""
        return self.run.train_config.k

    @property
    def calibrated_threshold(self) -> float | None:
        """The run's "unknown" distance threshold, calibrated on validation images at training time."""
        return self.run.metrics.get("unknown", {}).get("threshold")

    def embed(self, images: Sequence[Image.Image | str]) -> np.ndarray:
        """PIL images or paths -> (N, D) unit vectors, exactly as the gallery was embedded."""
        return embed_images(
            self.model,
            images,
            self.transform,
            batch_size=self.run.train_config.batch_size_embed,
            flip_tta=self.run.model_config.flip_tta,
            device=self.device,
        )

    def predict_embeddings(
        self,
        embeddings: np.ndarray,
        names: Sequence[str],
        k: int | None = None,
        unknown_threshold: float | None = None,
    ) -> list[Prediction]:
        """(Q, D) query embeddings -> one Prediction each, by the vote of ``k`` neighbours (default: the run's).
        Beyond ``unknown_threshold`` the label is "unknown"."""
        idx, dist = self.index.query(embeddings, k or self.k)
        out = []
        for name, row, drow, emb in zip(names, idx, dist, embeddings):
            neighbors = [
                Neighbor(
                    path=str(self.run.resolve(self.run.gallery_paths[j])),
                    label=self.run.classes[self.run.gallery_labels[j]],
                    distance=float(d),
                    index=int(j),
                )
                for j, d in zip(row, drow)
            ]
            label, confidence, shares = vote([n.label for n in neighbors], [n.distance for n in neighbors])
            if unknown_threshold is not None and neighbors[0].distance > unknown_threshold:
                label = UNKNOWN  # the vote shares stay, to show what it resembles most
            out.append(Prediction(name, label, float(confidence), shares, neighbors, neighbors[0].distance, emb))
        return out

    def predict(
        self,
        images: Sequence[Image.Image | str],
        names: Sequence[str] | None = None,
        k: int | None = None,
        unknown_threshold: float | None = None,
    ) -> list[Prediction]:
        names = names or [str(im) if not isinstance(im, Image.Image) else f"image {i}" for i, im in enumerate(images)]
        return self.predict_embeddings(self.embed(images), names, k, unknown_threshold)

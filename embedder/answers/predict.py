"""kNN label prediction: neighbours from the gallery index, a distance-weighted vote, an optional "unknown"."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image

from ..runs.records import Confidence
from ..runs.run import Run
from ..search.vote import vote
from . import novelty
from .calibrate import apply_confidence

UNKNOWN = "unknown"


@dataclass
class Neighbour:
    path: str
    label: str
    distance: float
    index: int  # row in the run's gallery


@dataclass
class Prediction:
    image: str
    label: str
    confidence: float  # probability that the label is right, calibrated on validation images (else: vote_share)
    votes: dict[str, float]  # every voting label's share, largest first
    neighbours: list[Neighbour]
    nearest_distance: float = float("nan")
    vote_share: float = float("nan")  # the winning label's share of the distance-weighted vote (0..1)
    novel: bool = False  # unlike every gallery image (novelty.py): the label is "unknown" when that is allowed
    novelty_distance: float = float("nan")  # to the nearest image of the run's novelty reference
    embedding: np.ndarray | None = field(default=None, repr=False)

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("embedding")
        d = {("neighbors" if k == "neighbours" else k): v for k, v in d.items()}  # the JSON key, as it always was
        if np.isnan(self.novelty_distance):  # the run keeps no novelty reference: JSON has no NaN
            d["novelty_distance"] = None
        d["neighbors"] = [{"path": n.path, "label": n.label, "distance": n.distance} for n in self.neighbours]
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
            "vote_share": round(self.vote_share, 4),
            "votes": json.dumps({k: round(v, 4) for k, v in self.votes.items()}),
            "nearest_distance": round(self.nearest_distance, 4),
            "novel": self.novel,
            "neighbours": " | ".join(f"{n.label}:{n.distance:.4f}:{where(n)}" for n in self.neighbours),
        }


class Predictor:
    """Answers "what is this image?" from a run: embed, find neighbours in the Annoy index, vote."""

    def __init__(self, run: Run, device: str = "cpu") -> None:
        self.run, self.device = run, device
        self.model = run.model(device)  # loaded now, not at the first query
        self.index = run.index()
        self.record = run.record  # its thresholds and calibration, read once as the model and index are
        reference = run.novelty_reference
        self.reference = None if reference is None else reference.astype(np.float32)

    @property
    def k(self) -> int:
        """The run's number of voting neighbours."""
        return self.run.train_config.k

    @property
    def calibration(self) -> Confidence | None:
        """The run's map from (vote share, nearest distance) to the probability of being right, if it has one."""
        return self.record.confidence

    @property
    def calibrated_threshold(self) -> float | None:
        """The run's "unknown" distance threshold, calibrated on validation images at training time."""
        unknown = self.record.unknown
        return unknown.threshold if unknown else None

    @property
    def novelty_threshold(self) -> float | None:
        """How far from every gallery image a query may be and still be like them (novelty.py), if the run says."""
        novelty = self.record.novelty
        return novelty.threshold if novelty and self.reference is not None else None

    def embed_with_features(self, images: Sequence[Image.Image | str]) -> tuple[np.ndarray, np.ndarray | None]:
        """(embeddings (N, D), novelty features (N, F) or None): what ``predict_embeddings`` takes, in one pass."""
        return novelty.embed_with_features(self.run, images, self.device)

    def embed(self, images: Sequence[Image.Image | str]) -> np.ndarray:
        """PIL images or paths -> (N, D) unit vectors, exactly as the gallery was embedded."""
        return self.run.embed(images, device=self.device)

    def predict_embeddings(
        self,
        embeddings: np.ndarray,
        names: Sequence[str],
        k: int | None = None,
        unknown: bool = False,
        features: np.ndarray | None = None,
        unknown_threshold: float | None = None,
    ) -> list[Prediction]:
        """(Q, D) query embeddings -> one Prediction each, by the vote of ``k`` neighbours (default: the run's).

        With ``unknown`` the label is "unknown" where the nearest gallery image is farther than
        ``unknown_threshold`` (default: the run's calibrated one, if any), or where the query's novelty
        ``features`` (``embed_with_features``) are unlike every gallery image's. Without it a query always gets a
        class, and ``novel`` still says whether it is unlike the gallery."""
        idx, dist = self.index.query(embeddings, k or self.k)
        far, limit = self._novelty(features, len(embeddings)), self.novelty_threshold
        threshold = (self.calibrated_threshold if unknown_threshold is None else unknown_threshold) if unknown else None
        out = []
        for name, row, drow, emb, nd in zip(names, idx, dist, embeddings, far):
            neighbours = [
                Neighbour(
                    path=str(self.run.resolve(self.run.gallery_paths[j])),
                    label=self.run.classes[self.run.gallery_labels[j]],
                    distance=float(d),
                    index=int(j),
                )
                for j, d in zip(row, drow)
            ]
            label, share, shares = vote([n.label for n in neighbours], [n.distance for n in neighbours])
            confidence = apply_confidence(self.calibration, np.array([[share, neighbours[0].distance]]))[0]
            novel = limit is not None and bool(nd > limit)
            if unknown and (novel or (threshold is not None and neighbours[0].distance > threshold)):
                label = UNKNOWN  # the vote shares stay, to show what it resembles most
            distance = neighbours[0].distance
            out.append(Prediction(name, label, float(confidence), shares, neighbours, distance, share, novel, nd, emb))
        return out

    def _novelty(self, features: np.ndarray | None, n: int) -> np.ndarray:
        """(n,) each query's distance to the novelty reference; NaN where the run or the caller has none."""
        if features is None or self.reference is None:
            return np.full(n, np.nan)
        return novelty.distances(self.reference, features)

    def predict(
        self,
        images: Sequence[Image.Image | str],
        names: Sequence[str] | None = None,
        k: int | None = None,
        unknown: bool = False,
        unknown_threshold: float | None = None,
    ) -> list[Prediction]:
        """Images (PIL or paths) -> one Prediction each; ``k``, ``unknown`` and ``unknown_threshold`` as in
        ``predict_embeddings``."""
        names = names or [str(im) if not isinstance(im, Image.Image) else f"image {i}" for i, im in enumerate(images)]
        emb, features = self.embed_with_features(images)
        return self.predict_embeddings(emb, names, k, unknown, features, unknown_threshold)

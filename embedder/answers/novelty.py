"""Is a query like anything in the gallery at all? A photo dropped on the digits run, noise, a blank frame.

The trained embedding cannot tell: triplet loss places every input near some class, and the "unknown" threshold
(calibrate.open_set) is set on images of the gallery's own kind with their class left out. Measured on the digits
demo and cats_dogs runs: by nearest distance in the embedding, cats_dogs catches none of 160 digits, noise and
flat-colour images at its "unknown" threshold, and the calibrated confidence gives them 99%. In the pooled
backbone features, before the head, every one of them is farther from the gallery than any held-out image of
the gallery's kind (AUROC 1.000 on both runs; BENCHMARKS.md): the nearest-neighbour novelty test of Sun et al.
2022 ("Out-of-distribution detection with deep nearest neighbors"), on those features.

A run keeps a reference: the backbone features of a stratified sample of at most ``REFERENCE_MAX`` gallery images
(float16, in gallery.npz), and a threshold on the distance to the nearest of them: the reference images' own
leave-one-out nearest distances, at most ``RATE`` of them beyond it (below 1,000 images, the largest). Images the
network trained on sit a little closer to each other than new images of their kind do to them, so a rate set on
them is optimistic; evaluation measures the real one on held-out images (``metrics["test"]["novelty"]``: 0 of 359
on the digits demo, 1 of 200 on cats_dogs). A network imported from ONNX has no backbone to ask: its reference is a
sample of the gallery embeddings themselves.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import EmbedderError
from ..images.data import cap
from ..progress import Reporter, Stage, counter
from ..search.knn import topk

RATE = 0.001  # of the reference images, at most 1 in 1,000 lies beyond the threshold
REFERENCE_MAX = 5_000  # a sample: the test costs one (Q, 5000) product whatever the gallery's size
# Below this many gallery images the test is off: beyond the farthest of R images lands about 1 new image of their
# kind in R + 1 (with 10 cats_dogs photos, 14-17 of 200 held-out photos were called novel).
REFERENCE_MIN = 200


def space(model) -> str:
    """Which features the novelty test uses for ``model``: "backbone" (pooled, before the head) or "embedding"."""
    return "backbone" if hasattr(model, "backbone_features") else "embedding"


class _Paired(torch.nn.Module):
    """One forward pass -> [embedding | backbone features], each part a unit vector (a module: it exports)."""

    def __init__(self, model) -> None:
        super().__init__()
        self._model = weakref.ref(model)  # not a submodule: the pair is cached for the model's life, not longer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        model = self._model()
        f = model.backbone(x)
        return torch.cat([F.normalize(model.head(f), dim=1), F.normalize(f, dim=1)], dim=1)


_PAIRS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _paired(model) -> _Paired:
    """The model's pair, made once (so its onnxruntime export, network/fast.py, is made once)."""
    if model not in _PAIRS:
        _PAIRS[model] = _Paired(model).eval()
    return _PAIRS[model]


def centred(emb: np.ndarray, centre) -> np.ndarray:
    from ..network.centre import centred as move

    return move(emb, centre)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def embed_with_features(run, images: Sequence, device="cpu", progress=None) -> tuple[np.ndarray, np.ndarray | None]:
    """(embeddings (N, D), novelty features (N, F) or None) of ``images`` with one pass of the run's network:
    None when the run keeps no novelty reference (a run written before it existed)."""
    novelty = run.record.novelty
    if run.novelty_reference is None or novelty is None or novelty.space != "backbone":
        emb = run.embed(images, device=device, progress=progress)
        return emb, (emb if run.novelty_reference is not None else None)
    model = run.model(device)
    both = run.embed(images, device=device, progress=progress, fn=_paired(model))
    d = run.gallery_embeddings.shape[1]
    # mirror averaging normalised the pair as one vector; the embedding half is moved as the gallery was
    return centred(_unit(both[:, :d]), run.centre), _unit(both[:, d:])


def threshold(reference: np.ndarray, rate: float = RATE) -> float:
    """The distance beyond which a new image is novel: the ceil((R + 1)(1 - rate))-th smallest leave-one-out
    nearest distance of the R reference images (their largest when R is too small for ``rate``): were a new image
    exchangeable with them, it would land beyond with chance <= rate (a conformal test). A few odd gallery
    images (blank, corrupt) do not set it at a million images: it is the 5th largest of 5,000."""
    loo = np.sort(topk(reference, reference, 1, exclude=np.arange(len(reference)))[1][:, 0])
    if len(loo) == 0:
        return float("inf")
    rank = min(len(loo), math.ceil((len(loo) + 1) * (1 - rate)))
    return float(loo[rank - 1])


def distances(reference: np.ndarray, features: np.ndarray) -> np.ndarray:
    """(Q,) each query's distance to its nearest reference image."""
    return topk(features, reference, 1)[1][:, 0].astype(np.float64)


def build(run, report: Reporter, seed: int, device="cpu") -> None:
    """Give ``run`` its novelty reference and threshold (``run.novelty_reference``, ``metrics["novelty"]``), or
    with fewer than ``REFERENCE_MIN`` gallery images, none and the reason (``metrics["novelty"]["off"]``)."""
    n = len(run.gallery_labels)
    if n < REFERENCE_MIN:
        run.novelty_reference, run.novelty_rows = None, None
        run.metrics["novelty"] = {
            "off": f"with {n} gallery images, about 1 new image of their own kind in {n + 1} would lie farther from "
            f"all of them than they do from each other; the test starts at {REFERENCE_MIN}"
        }
        return
    rows = cap(np.arange(n), run.gallery_labels, REFERENCE_MAX, seed)
    _keep(run, rows, _features(run, rows, report, device), device)


def grow(run, old_n: int, report: Reporter, seed: int, device="cpu") -> None:
    """After ``embedder.verbs.add`` appended gallery rows ``old_n:``, the reference drawn again from its own rows and
    the new ones, so an added class is not novel; only new images are read. A run whose test was off gets it built
    now if the gallery has grown enough (reading its images again: if they cannot be read, it stays off)."""
    if run.novelty_reference is None or run.novelty_rows is None:
        if "novelty" in run.metrics:
            try:
                build(run, report, seed, device)
            except EmbedderError as exc:
                run.novelty_reference, run.novelty_rows = None, None
                run.metrics["novelty"] = {"off": f"the gallery's images could not be read again ({exc})"}
        return
    pool = np.concatenate([run.novelty_rows, np.arange(old_n, len(run.gallery_labels))])
    rows = cap(pool, run.gallery_labels, REFERENCE_MAX, seed)
    had = {int(r): i for i, r in enumerate(run.novelty_rows)}
    kept = np.isin(rows, run.novelty_rows)  # their features are in the reference already; only the rest are read
    features = np.empty((len(rows), run.novelty_reference.shape[1]), dtype=np.float32)
    features[kept] = run.novelty_reference[[had[int(r)] for r in rows[kept]]]
    if not kept.all():
        features[~kept] = _features(run, rows[~kept], report, device)
    _keep(run, rows, features, device)


def _features(run, rows: np.ndarray, report: Reporter, device) -> np.ndarray:
    """(len(rows), F) what the novelty test measures, for gallery ``rows``."""
    model = run.model(device)
    if space(model) == "embedding" or model.config.dim is None:  # no head: the embeddings are those features
        return run.gallery_embeddings[rows]
    paths = [run.resolve(run.gallery_paths[r]) for r in rows]
    progress = counter(report, Stage.CALIBRATE, "novelty reference: backbone features of gallery images")
    return run.embed(paths, device=device, progress=progress, fn=model.backbone_features)


def _keep(run, rows: np.ndarray, features: np.ndarray, device) -> None:
    reference = features.astype(np.float16)
    run.novelty_reference, run.novelty_rows = reference, rows.astype(np.int64)
    run.metrics["novelty"] = {
        "threshold": threshold(reference.astype(np.float32)),
        "rate": RATE,
        "reference": len(rows),
        "space": space(run.model(device)),
    }


def held_out(run, paths: Sequence, device="cpu", progress=None) -> tuple[np.ndarray, dict | None]:
    """The held-out queries' embeddings, and how many of them the novelty test calls novel: every query is of the
    gallery's kind, so each one it flags is a false alarm (None when the run keeps no reference)."""
    if len(paths) == 0:
        return np.zeros((0, 1), dtype=np.float32), None
    emb, features = embed_with_features(run, paths, device, progress)
    if features is None:
        return emb, None
    threshold = run.record.novelty.threshold
    novel = int((distances(run.novelty_reference.astype(np.float32), features) > threshold).sum())
    return emb, {"novel": novel, "n": len(paths), "share": novel / len(paths), "threshold": threshold}

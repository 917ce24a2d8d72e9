"""Retrieval metrics (pytorch-metric-learning) and the baselines they are always shown next to."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torchvision import transforms as T

from .config import Progress
from .data import scan_folder
from .embed import embed_images
from .index import exact_neighbors
from .predict import vote

KNN_KS = (1, 3, 5, 10, 20)
DEFAULT_K = 5  # what `predict` uses; knn_accuracy is measured with it
RAW_PIXELS_SIDE = 32


def _accuracy_calculator():
    from pytorch_metric_learning.distances import LpDistance
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    # CustomKNN keeps AccuracyCalculator off faiss, which is not installed.
    return AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
        k="max_bin_count",
        knn_func=CustomKNN(LpDistance(normalize_embeddings=False), batch_size=1024),
    )


def knn_accuracies(
    queries: np.ndarray, query_labels: np.ndarray, gallery: np.ndarray, gallery_labels: np.ndarray,
    ks: Sequence[int] = KNN_KS,
) -> dict[int, tuple[float, float]]:
    """Distance-weighted kNN vote for each k -> {k: (accuracy, macro accuracy)} on exact neighbours."""
    kmax = min(max(ks), len(gallery))
    idx, dist = exact_neighbors(queries, gallery, kmax)
    out = {}
    for k in ks:
        if k > kmax:
            continue
        pred = np.array([int(vote(gallery_labels[i[:k]].tolist(), d[:k])[0]) for i, d in zip(idx, dist)])
        correct = pred == query_labels
        per_class = [correct[query_labels == c].mean() for c in np.unique(query_labels)]
        out[k] = (float(correct.mean()), float(np.mean(per_class)))
    return out


def retrieval_metrics(
    queries: np.ndarray, query_labels: np.ndarray, gallery: np.ndarray, gallery_labels: np.ndarray
) -> dict:
    """Queries (Q, D) against a gallery (N, D), both L2-normalised.

    Queries whose label has no gallery image cannot be answered right by retrieval; they are left out
    of the metrics and counted in ``n_unmatched_queries``.
    """
    present = np.isin(query_labels, np.unique(gallery_labels))
    q, ql = queries[present], query_labels[present]
    result = {"n_queries": int(len(q)), "n_unmatched_queries": int((~present).sum())}
    if len(q) == 0:
        return result
    acc = _accuracy_calculator().get_accuracy(
        torch.from_numpy(q), torch.from_numpy(ql), torch.from_numpy(gallery), torch.from_numpy(gallery_labels),
        ref_includes_query=False,
    )
    knn = knn_accuracies(q, ql, gallery, gallery_labels)
    best_k = max(knn, key=lambda k: (knn[k][0], -k))
    default_k = DEFAULT_K if DEFAULT_K in knn else max(knn)
    result.update(
        precision_at_1=float(acc["precision_at_1"]),
        r_precision=float(acc["r_precision"]),
        map_at_r=float(acc["mean_average_precision_at_r"]),
        knn_accuracy=knn[default_k][0],
        knn_k=default_k,
        knn_accuracy_at_1=knn[1][0],
        best_k=best_k,
        knn_accuracy_at_best_k=knn[best_k][0],
        macro_accuracy=knn[default_k][1],
    )
    return result


def raw_pixel_embed(paths: Sequence, batch_size: int = 128) -> np.ndarray:
    """The simplest baseline: each image as its 32x32 RGB pixels, flattened and L2-normalised."""
    transform = T.Compose([T.Resize((RAW_PIXELS_SIDE, RAW_PIXELS_SIDE)), T.ToTensor()])
    return embed_images(lambda x: F.normalize(x.flatten(1), dim=1), paths, transform, batch_size=batch_size)


def evaluate_run(
    run,
    queries: str | Path | None = None,
    baselines: bool = True,
    device: str = "cpu",
    progress: Callable[[Progress], None] | None = None,
) -> dict:
    """Held-out images (or the ImageFolder ``queries``) as queries against the run's gallery.

    Baselines use the same queries, gallery and metrics in the same call: raw pixels, the untrained
    network, and, for pretrained backbones, the pretrained features without triplet training.
    """
    from .model import EmbeddingNet
    from .transforms import eval_transform

    report = progress or (lambda p: None)
    if queries is not None:
        qset = scan_folder(queries)
        index = {c: i for i, c in enumerate(run.classes)}
        q_paths = qset.paths
        q_labels = np.array([index.get(qset.classes[l], -1) for l in qset.labels], dtype=np.int64)
        skipped = qset.skipped_message()
    else:
        q_paths, q_labels = run.queries("test")
        skipped = None
    if len(q_paths) == 0:
        from .errors import EmbedderError

        raise EmbedderError("this run has no held-out queries (trained with --test-fraction 0): pass --queries PATH")

    cfg, tcfg = run.model_config, run.train_config
    transform = eval_transform(cfg)
    g_paths = run.gallery_files()
    g_labels = run.gallery_labels

    def embed_with(fn, paths, stage):
        return embed_images(
            fn, paths, transform, batch_size=tcfg.batch_size_embed, flip_tta=cfg.flip_tta, device=device,
            progress=lambda d, t: report(Progress(stage="evaluate", done=d, total=t, message=stage)),
        )

    model = run.model(device)
    result = retrieval_metrics(embed_with(model, q_paths, "queries"), q_labels, run.gallery_embeddings, g_labels)
    result["queries"] = str(queries) if queries is not None else "held-out split"
    if skipped:
        result["skipped"] = skipped
    if not baselines:
        return result

    base = {}
    report(Progress(stage="evaluate", message="raw pixels baseline"))
    base["raw_pixels"] = retrieval_metrics(raw_pixel_embed(q_paths), q_labels, raw_pixel_embed(g_paths), g_labels)
    torch.manual_seed(tcfg.seed)
    untrained = EmbeddingNet(cfg, load_pretrained=False).eval().to(device)
    base["untrained"] = retrieval_metrics(
        embed_with(untrained, q_paths, "untrained queries"), q_labels,
        embed_with(untrained, g_paths, "untrained gallery"), g_labels,
    )
    if cfg.pretrained:
        pre = EmbeddingNet(cfg, load_pretrained=True).eval().to(device)
        base["pretrained"] = retrieval_metrics(
            embed_with(pre.backbone_features, q_paths, "pretrained queries"), q_labels,
            embed_with(pre.backbone_features, g_paths, "pretrained gallery"), g_labels,
        )
    result["baselines"] = base
    return result

"""What a map shows besides positions: each gallery image's predicted label (the k-NN vote with itself left out), the
gallery embedded by the network before training (the "before" map), and what training changed per class.

Each is computed once per gallery and cached in the run folder next to the maps (``projections/``, see
``project.cached_array``): a 100,000-image vote is a minute on 2 cores, embedding the gallery again
is longer.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..images.data import stratified_sample
from ..search.vote import knn_predictions
from .project import cached_array, fingerprint, stored_array

COMPARE_SAMPLE = 5_000  # gallery images in the per-class before/after comparison (leave-one-out among them)
ProgressFn = Callable[[int, int], None]


def predicted_labels(run, progress: ProgressFn | None = None) -> np.ndarray:
    """(N,) the label each gallery image would get as a query, itself left out: the distance-weighted vote of its
    k nearest other gallery images, found in the run's Annoy index as the app finds a query's (no N x N search)."""
    k, index, n = run.train_config.k, run.index(), len(run.gallery_paths)

    def compute() -> np.ndarray:
        idx, dist = np.zeros((n, k), np.int64), np.full((n, k), np.inf, np.float32)
        for row in range(n):
            i, d = index.neighbours_of(row, k)
            idx[row, : len(i)], dist[row, : len(d)] = i, d
            if progress is not None and ((row + 1) % 2000 == 0 or row + 1 == n):
                progress(row + 1, n)
        return knn_predictions(idx, dist, run.gallery_labels, k).astype(np.int64)

    key = f"predicted-k{k}-{fingerprint(run.gallery_embeddings)}-{fingerprint(run.gallery_labels[:, None])}"
    return cached_array(run.path, key, compute, (n,))


def before_kind(run) -> str:
    """Which network the "before" map shows: ImageNet features when the run started from them (and the weights are
    on this machine), else the untrained network with the run's seed."""
    from ..network.model import pretrained_available

    return (
        "pretrained" if run.model_config.pretrained and pretrained_available(run.model_config.backbone) else "untrained"
    )


def before_embeddings(
    run, device: str = "cpu", progress: ProgressFn | None = None, version: str | None = None
) -> np.ndarray:
    """(N, D') the gallery embedded by the network before training (``before_kind``): the same images, the same
    transform; decoded a batch at a time. Stored in the run of ``version`` (``bundle_read.run_version``; None: the
    run as it is now); ``progress`` may raise to stop it (e.g. ``Cancelled``)."""
    from ..images.transforms import eval_transform
    from ..network.embed import embed_images
    from ..network.model import EmbeddingNet

    kind = before_kind(run)

    def compute() -> np.ndarray:
        torch.manual_seed(run.train_config.seed)
        net = EmbeddingNet(run.model_config, load_pretrained=kind == "pretrained").eval().to(device)
        fn = net.backbone_features if kind == "pretrained" else net
        return embed_images(
            fn,
            run.gallery_files(),
            eval_transform(run.model_config),
            batch_size=run.train_config.batch_size_embed,
            device=device,
            progress=progress,
        )

    return cached_array(run.path, before_name(run), compute, (len(run.gallery_paths), None), version)


def before_name(run) -> str:
    """The name the gallery before training is stored under in the run (``project.cached_array``)."""
    return f"before-{before_kind(run)}-{fingerprint(run.gallery_embeddings)}"


def stored_before(run) -> np.ndarray | None:
    """(N, D') the gallery before training when it is stored in the run already, else None (nothing computed)."""
    return stored_array(run.path, before_name(run), (len(run.gallery_paths), None))


def per_class_change(
    before: np.ndarray, after: np.ndarray, labels: np.ndarray, classes: list[str], sample: int = COMPARE_SAMPLE
) -> list[dict]:
    """P@1 and MAP@R per class before and after training, leave-one-out among a stratified sample of at most
    ``sample`` gallery images (the same images for both), largest gain first.

    Returns:
        rows {"label", "images", "P@1 before", "P@1 after", "MAP@R before", "MAP@R after", "MAP@R change"}.
    """
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    from ..search.knn import StreamingKNN

    rows = stratified_sample(labels, sample)
    values, counts = np.unique(labels[rows], return_counts=True)
    rows = rows[np.isin(labels[rows], values[counts >= 2])]  # a lone image has nothing to retrieve
    lab = labels[rows]
    present, counts = np.unique(lab, return_counts=True)
    calc = AccuracyCalculator(
        include=("precision_at_1", "mean_average_precision_at_r"),
        k="max_bin_count",
        return_per_class=True,
        knn_func=StreamingKNN(),
    )
    got = {}
    for name, emb in (("before", before), ("after", after)):
        x, y = torch.from_numpy(np.ascontiguousarray(emb[rows], dtype=np.float32)), torch.from_numpy(lab)
        acc = calc.get_accuracy(x, y, x, y, ref_includes_query=True)
        got[name] = (acc["precision_at_1"], acc["mean_average_precision_at_r"])
    table = []
    for i, (c, n) in enumerate(zip(present, counts)):
        p1b, p1a, mb, ma = got["before"][0][i], got["after"][0][i], got["before"][1][i], got["after"][1][i]
        table.append(
            {"label": classes[c], "images": int(n), "P@1 before": p1b, "P@1 after": p1a}
            | {"MAP@R before": mb, "MAP@R after": ma, "MAP@R change": ma - mb}
        )
    return sorted(table, key=lambda r: -r["MAP@R change"])

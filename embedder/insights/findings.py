"""What a trained metric space says about its own data: suspected mislabels, near-duplicates, train/test leaks and
outliers, each computed from gallery neighbours found once.

Every search streams (``knn.topk``, or the run's Annoy index for a gallery too large for an exact self-search):
no gallery x gallery matrix exists, and an image never counts as its own neighbour.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..progress import Progress, Reporter, Stage, silent
from ..search.knn import topk
from ..search.vote import EPS, knn_predictions

MISLABEL_K = 10  # neighbours that judge a label: more than the vote's 5, so one odd neighbour cannot flag an image
# A suspect is "clear", and its suggestion worth accepting, from this score up: with every neighbour disagreeing, the
# nearest image of its own label is at least twice as far as the nearest of another. Chosen before measuring it
# (BENCHMARKS.md, "The labelling loop"): an odd but right image sits between classes, at a ratio near 1.
CLEAR_SCORE = 0.5
DUPLICATE_FRACTION = 0.1  # default duplicate threshold: this share of the median nearest-neighbour distance
EXACT_LIMIT = 200_000  # galleries up to this size search themselves exactly; beyond, the run's Annoy index answers
LEAK_K = 5  # gallery neighbours checked per held-out query for a leak
MAX_EXCLUDED = 256  # leaked rows skipped by a deeper top-k; more are removed from a copy of the gallery


@dataclass(frozen=True)
class Neighbours:
    """Each gallery image's nearest other gallery images, nearest first."""

    idx: np.ndarray  # (N, k) int64 gallery rows, never the row itself
    dist: np.ndarray  # (N, k) float32 L2 distances


def gallery_neighbours(
    embeddings: np.ndarray,
    k: int,
    *,
    index=None,
    exact_limit: int = EXACT_LIMIT,
    progress: Callable[[int, int], None] | None = None,
) -> Neighbours:
    """The ``k`` nearest other gallery rows of every gallery row (N, D): exact up to ``exact_limit`` rows, else
    from ``index`` (a GalleryIndex over these rows) when one is given."""
    n = len(embeddings)
    if index is None or n <= exact_limit:
        idx, dist = topk(embeddings, embeddings, k, exclude=np.arange(n), progress=progress)
        return Neighbours(idx, dist)
    k = min(k, n - 1)
    idx, dist = np.zeros((n, k), dtype=np.int64), np.zeros((n, k), dtype=np.float32)
    for row in range(n):
        idx[row], dist[row] = index.neighbours_of(row, k)
        if progress is not None and ((row + 1) % 1024 == 0 or row + 1 == n):
            progress(row + 1, n)
    return Neighbours(idx, dist)


def nearest_same_label(embeddings: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(N,) distance from each row to the nearest other row of its label; inf for a label's only image. One
    exact search per label, so the cost is the sum of the squared class sizes, never N x N memory."""
    out = np.full(len(labels), np.inf, dtype=np.float32)
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        if len(rows) > 1:
            _, dist = topk(embeddings[rows], embeddings[rows], 1, exclude=np.arange(len(rows)))
            out[rows] = dist[:, 0]
    return out


@dataclass
class Suspect:
    """A gallery image whose neighbours mostly carry another label."""

    row: int
    label: int
    suggested: int  # the distance-weighted vote of its neighbours
    score: float  # disagreement x (1 - d(nearest other label) / d(nearest own label)), in [0, 1]
    disagreement: float  # share of its k nearest that carry another label
    neighbours: np.ndarray  # (k,) gallery rows, nearest first, in the space the labels were judged in
    distances: np.ndarray  # (k,)
    clear: bool = False  # the evidence is strong enough to accept the suggestion (``Judgement``)


def _disagreement(labels: np.ndarray, nb: Neighbours) -> np.ndarray:
    """(N,) the share of each image's neighbours that carry another label."""
    return (labels[nb.idx] != labels[:, None]).mean(axis=1)


def mislabel_scores(labels: np.ndarray, nb: Neighbours, same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N,) scores and (N,) disagreements; see ``Suspect.score``. An image counts as mislabelled when its
    neighbours disagree *and* the other label is much nearer than its own: a flipped label sits inside another
    class, an odd but correctly labelled image sits between classes (ratio near 1, score near 0)."""
    disagreement = _disagreement(labels, nb)
    other = np.where(labels[nb.idx] != labels[:, None], nb.dist, np.inf).min(axis=1)  # (N,) within the k
    ratio = np.divide(other, same, out=np.ones_like(other), where=same > 0)  # a same-label twin at 0: not suspect
    return disagreement * np.clip(1 - ratio, 0, 1), disagreement


def suspected_mislabels(labels: np.ndarray, nb: Neighbours, same: np.ndarray, vote_k: int | None = None) -> list:
    """Gallery images whose neighbours' vote picks another label, most suspect first (ties: lower row first).

    Args:
        labels: (N,) gallery labels.
        nb: the gallery's neighbours (``gallery_neighbours``).
        same: (N,) distance to the nearest image of the own label (``nearest_same_label``).
        vote_k: neighbours that vote for the suggested label (default: all of ``nb``'s).
    """
    if nb.idx.shape[1] == 0:
        return []
    scores, disagreement = mislabel_scores(labels, nb, same)
    suggested = knn_predictions(nb.idx, nb.dist, labels, vote_k or nb.idx.shape[1])  # (N,)
    flagged = np.flatnonzero(suggested != labels)
    order = flagged[np.lexsort((flagged, -disagreement[flagged], -scores[flagged]))]
    return [
        Suspect(
            int(r),
            int(labels[r]),
            int(suggested[r]),
            float(scores[r]),
            float(disagreement[r]),
            nb.idx[r],
            nb.dist[r],
            bool(scores[r] >= CLEAR_SCORE),
        )
        for r in order
    ]


def vote_probabilities(labels: np.ndarray, nb: Neighbours, n_classes: int, smoothing: float = 1e-3) -> np.ndarray:
    """(N, C) each gallery image's class probabilities from its neighbours' distance-weighted vote (``vote.vote``'s
    weights), itself never voting: the out-of-sample probabilities label-issue finders such as cleanlab take. A
    little ``smoothing`` keeps every class possible."""
    n, k = nb.idx.shape
    weights = 1.0 / (nb.dist.astype(np.float64) + EPS)  # (N, k)
    probs = np.zeros((n, n_classes))
    np.add.at(probs, (np.repeat(np.arange(n), k), labels[nb.idx].ravel()), weights.ravel())
    probs = probs / np.maximum(probs.sum(axis=1, keepdims=True), 1e-12) + smoothing
    return probs / probs.sum(axis=1, keepdims=True)


def cleanlab_mislabels(labels: np.ndarray, nb: Neighbours, n_classes: int) -> np.ndarray:
    """Gallery rows cleanlab's ``find_label_issues`` flags on ``vote_probabilities``, most likely mislabelled first
    (ranked by self-confidence): the well-kept alternative ``suspected_mislabels`` is measured against
    (bench/bench_relabel.py)."""
    return _cleanlab_ranked(labels, vote_probabilities(labels, nb, n_classes))


def _cleanlab_ranked(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """``cleanlab_mislabels`` on the (N, C) probabilities already computed."""
    from cleanlab.filter import find_label_issues

    present = np.unique(labels)  # cleanlab wants every class it is told of to have images: compact them
    compact = np.searchsorted(present, labels)
    ranked = find_label_issues(compact, probs[:, present], return_indices_ranked_by="self_confidence")
    return np.asarray(ranked, dtype=np.int64)


def cleanlab_suspects(labels: np.ndarray, nb: Neighbours, n_classes: int) -> list[Suspect]:
    """Suspects as cleanlab ranks them: the images ``cleanlab_mislabels`` lists first, in its order and clear (their
    suggestion: the likeliest other label), then every other image whose neighbours' vote picks another label, by
    score. Score: 1 - the leave-one-out probability of the image's own label."""
    probs = vote_probabilities(labels, nb, n_classes)
    n = len(labels)
    own = probs[np.arange(n), labels]
    listed = _cleanlab_ranked(labels, probs)
    others = probs.copy()
    others[np.arange(n), labels] = -1.0
    rest = np.setdiff1d(np.flatnonzero(probs.argmax(axis=1) != labels), listed)
    rest = rest[np.lexsort((rest, own[rest]))]
    disagreement = _disagreement(labels, nb)
    return [
        Suspect(
            int(r),
            int(labels[r]),
            int(others[r].argmax()),
            float(1 - own[r]),
            float(disagreement[r]),
            nb.idx[r],
            nb.dist[r],
            clear=i < len(listed),
        )
        for i, r in enumerate(np.concatenate([listed, rest]))
    ]


@dataclass
class Judgement:
    """The gallery's suspected mislabels, and where and how they were judged."""

    suspects: list[Suspect]  # most suspect first; the clear ones first
    neighbours: Neighbours  # in the space the labels were judged in
    space: str  # that space, in words
    method: str  # "ours" (``suspected_mislabels``) or "cleanlab" (``cleanlab_suspects``)

    @property
    def clear(self) -> list[Suspect]:
        return [s for s in self.suspects if s.clear]


def judge_labels(
    run, k: int = MISLABEL_K, method: str = "auto", nb: Neighbours | None = None, progress=None
) -> Judgement:
    """Judge the gallery's labels where a network has not learnt them. A run that keeps label-free features
    (``run.label_free``: a pretrained backbone's, first.py) is judged in them, by default with cleanlab: a network
    fine-tuned on flipped labels has learnt them, so in its space a flipped image sits among its wrong class (on
    cats_dogs with 20 of 400 labels flipped, its clear suspects held 1 of them; cleanlab in the pretrained
    features 17, with 3 right labels; BENCHMARKS.md). Otherwise the network's own embeddings (``nb``: their
    neighbours, when already found) are judged, by default with ours (on the digits, a network trained from scratch
    on them: 20 of 20, no right label). ``method``: "auto", "ours" or "cleanlab"."""
    free = run.label_free
    if free is not None:
        emb = free.astype(np.float32)
        emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        nb, space = gallery_neighbours(emb, k, progress=progress), "the pretrained features, which never saw a label"
    else:
        emb, space = run.gallery_embeddings, "the network's embeddings"
        if nb is None or nb.idx.shape[1] != min(k, len(emb) - 1):
            nb = gallery_neighbours(emb, k, index=run.index() if len(emb) > EXACT_LIMIT else None, progress=progress)
    method = ("cleanlab" if free is not None else "ours") if method == "auto" else method
    labels = run.gallery_labels
    if method == "cleanlab":
        return Judgement(cleanlab_suspects(labels, nb, len(run.classes)), nb, space, method)
    return Judgement(suspected_mislabels(labels, nb, nearest_same_label(emb, labels)), nb, space, method)


@dataclass
class Pair:
    """Two images closer than the duplicate threshold: ``a`` a gallery row (or a query row for a leak), ``b`` a
    gallery row."""

    a: int
    b: int
    distance: float


def duplicate_threshold(nb: Neighbours, fraction: float = DUPLICATE_FRACTION) -> float:
    """The default distance under which two images count as near-duplicates: ``fraction`` of the median distance
    from a gallery image to its nearest neighbour, so it scales with how tightly the model packs its classes."""
    if nb.dist.shape[1] == 0:
        return 0.0
    return float(fraction * np.median(nb.dist[:, 0]))


def near_duplicates(nb: Neighbours, threshold: float) -> list[Pair]:
    """Gallery pairs (a < b) closer than ``threshold``, closest first. Each image's k nearest are checked: a group
    of more than k+1 copies lists every image, though not every pair among them."""
    rows, cols = np.nonzero(nb.dist < threshold)
    found = {}
    for r, c in zip(rows, cols):
        a, b = sorted((int(r), int(nb.idx[r, c])))
        found[(a, b)] = float(nb.dist[r, c])
    return [Pair(a, b, d) for (a, b), d in sorted(found.items(), key=lambda kv: (kv[1], kv[0]))]


def leaks(queries: np.ndarray, gallery: np.ndarray, threshold: float, k: int = LEAK_K) -> list[Pair]:
    """(query row, gallery row) pairs closer than ``threshold``: a held-out image that is (nearly) in the gallery,
    so retrieval finds its copy instead of being tested. Closest first."""
    idx, dist = topk(queries, gallery, k)
    rows, cols = np.nonzero(dist < threshold)
    pairs = [Pair(int(r), int(idx[r, c]), float(dist[r, c])) for r, c in zip(rows, cols)]
    return sorted(pairs, key=lambda p: (p.distance, p.a, p.b))


@dataclass
class LeakEffect:
    """Held-out P@1 with the gallery as it is, and without the gallery images that leak held-out ones."""

    with_leak: float
    without_leak: float
    n_queries: int
    n_removed: int  # gallery images left out for ``without_leak``

    @property
    def inflation(self) -> float:
        return self.with_leak - self.without_leak


def _nearest_skipping(queries: np.ndarray, gallery: np.ndarray, skip: np.ndarray) -> np.ndarray:
    """(Q,) the nearest gallery row of each query that is not in ``skip`` (sorted rows)."""
    if len(skip) <= MAX_EXCLUDED:
        idx, _ = topk(queries, gallery, len(skip) + 1)  # (Q, s+1): at least one row is not skipped
        allowed = ~np.isin(idx, skip)
        return idx[np.arange(len(idx)), allowed.argmax(axis=1)]
    keep = np.setdiff1d(np.arange(len(gallery)), skip)  # many leaks: a copy without them is the honest price
    idx, _ = topk(queries, gallery[keep], 1)
    return keep[idx[:, 0]]


def leak_effect(
    queries: np.ndarray, query_labels: np.ndarray, gallery: np.ndarray, gallery_labels: np.ndarray, pairs: list[Pair]
) -> LeakEffect:
    """P@1 of the held-out queries (those whose label the gallery has) with and without the leaked gallery rows."""
    scored = np.isin(query_labels, gallery_labels)
    q, ql = queries[scored], query_labels[scored]
    if len(q) == 0:
        return LeakEffect(0.0, 0.0, 0, 0)
    skip = np.unique(np.array([p.b for p in pairs], dtype=np.int64))
    with_leak = topk(q, gallery, 1)[0][:, 0]
    without = _nearest_skipping(q, gallery, skip) if len(skip) else with_leak
    p_with = float((gallery_labels[with_leak] == ql).mean())
    return LeakEffect(p_with, float((gallery_labels[without] == ql).mean()), len(q), len(skip))


@dataclass
class Outlier:
    row: int
    score: float  # mean distance to its k nearest gallery images


def outliers(nb: Neighbours) -> list[Outlier]:
    """Every gallery image by its mean distance to its k nearest, farthest first (ties: lower row first)."""
    if nb.dist.shape[1] == 0:
        return []
    mean = nb.dist.mean(axis=1)  # (N,)
    order = np.lexsort((np.arange(len(mean)), -mean))
    return [Outlier(int(r), float(mean[r])) for r in order]


@dataclass
class GalleryFindings:
    """Everything the gallery says about itself; computed once per run (the app caches it)."""

    neighbours: Neighbours  # in the network's space, where duplicates and outliers are found
    judgement: Judgement  # the suspected mislabels
    duplicates: list[Pair]
    outliers: list[Outlier]
    threshold: float  # the near-duplicate distance used

    @property
    def mislabels(self) -> list[Suspect]:
        return self.judgement.suspects


def gallery_findings(run, k: int = MISLABEL_K, threshold: float | None = None, progress: Reporter | None = None):
    """Mislabels, near-duplicates and outliers of ``run``'s gallery from one neighbour search."""
    report = progress or silent
    emb = run.gallery_embeddings

    def step(done: int, total: int) -> None:
        report(Progress(Stage.EVALUATE, done=done, total=total, message="neighbours of every gallery image"))

    nb = gallery_neighbours(emb, k, index=run.index() if len(emb) > EXACT_LIMIT else None, progress=step)
    report(Progress(Stage.EVALUATE, message="judging every gallery image's label"))
    judgement = judge_labels(run, k, nb=nb, progress=step)
    threshold = duplicate_threshold(nb) if threshold is None else threshold
    return GalleryFindings(nb, judgement, near_duplicates(nb, threshold), outliers(nb), threshold)


@dataclass
class LeakFindings:
    paths: list  # the held-out queries
    labels: np.ndarray
    pairs: list[Pair]  # (query row, gallery row)
    effect: LeakEffect


def leak_findings(
    run, threshold: float, queries: str | None = None, device: str = "cpu", progress: Reporter | None = None
) -> LeakFindings | None:
    """The held-out queries against the gallery: which are (nearly) in it, and what that does to P@1.

    Args:
        queries: an ImageFolder of queries; default: the run's held-out split, or the --queries folder it was
            trained with. None is returned when there are no held-out queries at all.
    """
    from ..answers.evaluate import EvaluationSets, embedder_of

    report = progress or silent
    if queries is None and not run.split.get("test"):
        queries = run.train_config.queries
        if not queries:
            return None
    sets = EvaluationSets.of(run, queries)
    q_emb = embedder_of(run, device, report)(run.model(device), sets.q_paths, "held-out queries")
    pairs = leaks(q_emb, run.gallery_embeddings, threshold)
    effect = leak_effect(q_emb, sets.q_labels, run.gallery_embeddings, run.gallery_labels, pairs)
    return LeakFindings(list(sets.q_paths), sets.q_labels, pairs, effect)

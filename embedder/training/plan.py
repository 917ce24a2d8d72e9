"""Before any training: scan the data, split it, and resolve the config into a concrete model and batch shape."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..config import ModelConfig, ModelSettings, TrainConfig
from ..errors import EmbedderError
from ..images.data import ImageSet, resolve_data, scan_folder, stratified_split
from ..images.label_file import read as read_labels
from ..images.label_file import relabelled
from ..network.model import IMAGENET_MEAN, IMAGENET_STD, TF_MEAN, TF_STD, missing_weights_message, pretrained_available
from ..progress import Progress, Stage
from ..runs.bundle import check_out

TINY_SIDE = 64  # images whose median short side is at most this are "tiny" (digits, icons): small CNN, no flips


@dataclass
class Plan:
    """What a TrainConfig resolves to for a given data folder: splits, model, batch shape, notes for the user."""

    images: ImageSet
    train_idx: np.ndarray
    val_idx: np.ndarray
    test_idx: np.ndarray
    model_config: ModelConfig
    classes_per_batch: int
    per_class: int
    trainable_classes: list[int]
    unseen_val_idx: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    unseen_test_idx: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    notes: list[str] = field(default_factory=list)

    @property
    def parts(self) -> dict[str, np.ndarray]:
        """Image rows by role: "train", "val", "test", "unseen_val", "unseen_test"."""
        return {
            "train": self.train_idx,
            "val": self.val_idx,
            "test": self.test_idx,
            "unseen_val": self.unseen_val_idx,
            "unseen_test": self.unseen_test_idx,
        }


def choose_model(cfg: ModelSettings, images: ImageSet) -> tuple[ModelConfig, list[str]]:
    """Resolve ``auto`` backbone, pretrained weights and image size from the model settings and the data."""
    notes = []
    short_sides = [min(s) for s in images.sizes] or [224]
    tiny = float(np.median(short_sides)) <= TINY_SIDE
    backbone = cfg.backbone
    if backbone == "auto":
        backbone = "convnet" if tiny else "efficientnet_lite0"
        if backbone == "efficientnet_lite0" and not pretrained_available(backbone):
            notes.append(missing_weights_message(backbone) + "; using the small convnet instead")
            backbone = "convnet"
    if cfg.pretrained and not pretrained_available(backbone):
        raise EmbedderError(missing_weights_message(backbone))
    pretrained = pretrained_available(backbone) if cfg.pretrained is None else cfg.pretrained
    if cfg.pretrained is None and backbone != "convnet" and not pretrained:
        notes.append(missing_weights_message(backbone) + "; starting from random weights")
    if backbone == "efficientnet_lite0":
        mean, std = TF_MEAN, TF_STD
    elif backbone == "convnet":
        mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    else:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    default_size = (32 if tiny else 64) if backbone == "convnet" else 224
    return ModelConfig(
        backbone=backbone,
        dim=cfg.dim,
        image_size=cfg.image_size or default_size,
        mean=mean,
        std=std,
        resize="stretch" if tiny else "crop",
        augment="small" if tiny else "photo",
        flip_tta=not tiny,
        pretrained=pretrained,
    ), notes


def check_folders(cfg: TrainConfig) -> None:
    """Refuse an --out whose replacement would destroy what the program did not write (``bundle.check_out``)."""
    check_out(cfg.out, [resolve_data(cfg.data, write=False), *([cfg.queries] if cfg.queries else [])], cfg.overwrite)


def _unseen_classes(cfg: TrainConfig, images: ImageSet, rest: np.ndarray, notes: list[str]):
    """The classes kept out of training (``--unseen-classes``, by default a fifth from 20 classes on), half to
    validate and half to test retrieval of new classes: (the rows of ``rest`` left to train and validate on,
    the unseen validation rows, the unseen test rows); a note in ``notes`` says so."""
    n_classes = len(images.classes)
    share = cfg.unseen_classes if cfg.unseen_classes is not None else (0.2 if n_classes >= 20 else 0.0)
    n_unseen = int(round(n_classes * share))
    unseen_val, unseen_test = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if not n_unseen:
        return rest, unseen_val, unseen_test
    if n_unseen < 4 or n_classes - n_unseen < 2:
        raise EmbedderError(
            f"--unseen-classes {share} of {n_classes} classes leaves too few on either side (need 4 unseen, 2 trained)"
        )
    picked = np.random.default_rng(cfg.seed + 2).permutation(n_classes)[:n_unseen]
    val_classes, test_classes = picked[: n_unseen // 2], picked[n_unseen // 2 :]
    unseen_val = rest[np.isin(images.labels[rest], val_classes)]
    unseen_test = rest[np.isin(images.labels[rest], test_classes)]
    notes.append(
        f"{n_unseen} of {n_classes} classes are never trained on: they validate and test retrieval of new classes"
    )
    return rest[~np.isin(images.labels[rest], picked)], unseen_val, unseen_test


def plan(cfg: TrainConfig, progress: Callable[[Progress], None] | None = None) -> Plan:
    """Scan the data and decide everything before any training starts (cheap; errors surface here)."""
    cfg.validate()
    report = progress or (lambda p: None)
    check_folders(cfg)
    root = resolve_data(cfg.data)  # refused before the demo set is written
    images = scan_folder(root, progress=lambda d, t: report(Progress(Stage.SCAN, done=d, total=t)))
    notes = []
    if cfg.labels:  # corrected labels (label_file.py): the retraining learns from them
        images, relabelled_note = relabelled(images, read_labels(cfg.labels))
        notes += [relabelled_note] if relabelled_note else []
    if images.skipped:
        notes.append(images.skipped_message())
    if images.empty_classes:
        notes.append(images.empty_classes_message())
    if cfg.queries:
        rest, test = np.arange(len(images)), np.array([], dtype=np.int64)
    else:
        rest, test = stratified_split(images.labels, cfg.test_fraction, cfg.seed)
    n_classes = len(images.classes)
    rest, unseen_val, unseen_test = _unseen_classes(cfg, images, rest, notes)
    val_share = cfg.val_fraction / max(1e-9, 1 - (0 if cfg.queries else cfg.test_fraction))
    keep, val = stratified_split(images.labels[rest], val_share, cfg.seed + 1)
    train_idx, val_idx = rest[keep], rest[val]

    counts = np.bincount(images.labels[train_idx], minlength=n_classes)
    trainable = [c for c in range(n_classes) if counts[c] >= 2]
    unseen_labels = set(images.labels[np.concatenate([unseen_val, unseen_test])].tolist())
    lonely = [images.classes[c] for c in range(n_classes) if counts[c] < 2 and c not in unseen_labels]
    if lonely:
        notes.append(
            f"{len(lonely)} class(es) have fewer than 2 training images and are left out of mining "
            f"(they stay in the gallery): {', '.join(lonely[:10])}{' ...' if len(lonely) > 10 else ''}"
        )
    if cfg.epochs > 0 and len(trainable) < 2:
        raise EmbedderError("need at least 2 classes with 2 or more training images to form triplets")

    p = min(cfg.classes_per_batch, len(trainable))
    k = (
        cfg.per_class
        if p == cfg.classes_per_batch
        else max(cfg.per_class, (cfg.classes_per_batch * cfg.per_class) // p)
    )
    model_config, model_notes = choose_model(cfg, images)
    return Plan(
        images, train_idx, val_idx, test, model_config, p, k, trainable, unseen_val, unseen_test, notes + model_notes
    )

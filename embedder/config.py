"""Every setting of the pipeline, described once: one dataclass per stage (data and split, model, training,
selection, index, run), each field with its help, range and choices. ``TrainConfig`` holds them all side by side. The
CLI's flags (cli/args.py, one group a stage) and the Train page's widgets (ui/forms.py) are generated from these
fields, and ``validate`` checks them, so the three never disagree."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import ClassVar, TypeVar

from .settings import Setting, check_settings, setting, setting_of, share, value_problem

SCHEMA_VERSION = 3  # 2: marker file and checksums; 3: checksums.json checksums every file; 1 and 2 still load

BACKBONES = ("auto", "convnet", "resnet18", "resnet50", "efficientnet_lite0")
MINERS = ("semihard", "hard", "all", "batch-hard")
LOSSES = ("triplet", "multi-similarity", "proxy-anchor")
SCHEDULES = ("constant", "cosine")
SELECTIONS = ("auto", "holdout", "cv")
DEVICES = ("auto", "cpu", "cuda")
IMPORTED = "onnx"  # ModelConfig.backbone of a network imported from an ONNX file (never a --backbone choice)
PIXELS = "pixels"  # ModelConfig.backbone of a run's first answer on tiny images: the pixels themselves (first.py)
DEFAULT_K = 5  # neighbours that vote on a label: the one default, wherever k is asked for
MAX_SIDE = 2048  # the largest input side of an imported network, read from its graph or asked for
MAX_DIM = 65536  # the most values per image an imported network's embedding may have
# An imported network's input side (import-model --image-size): here, so a run's config.json is held to it too
ONNX_IMAGE_SIZE = Setting(
    "input side in pixels; unset = the graph's fixed input size (needed when the graph's size is dynamic)",
    low=8,
    high=MAX_SIDE,
    label="Input size",
    main=True,
)
S = TypeVar("S")  # a stage's settings dataclass


@dataclass
class DataSettings:
    """The labelled images, the evaluation queries, and the shares of each class held out."""

    title: ClassVar[str] = "Data and split"  # its heading in --help and on the Train page

    data: str = setting(
        "demo", 'an ImageFolder root (root/<label>/<image>), or "demo" for the bundled digits', app=False
    )
    queries: str | None = setting(
        None, "a separate ImageFolder of evaluation queries instead of a held-out split", app=False
    )
    labels: str | None = setting(
        None,
        "a CSV of corrected labels (path,label; action=remove leaves an image out; paths absolute or relative to the "
        "data folder), such as a run's exported corrections: training learns from these instead of the folders' "
        "labels; the image files are not touched",
        label="Corrected labels (CSV)",
    )
    test_fraction: float = share(
        0.2, "share of each class held out as evaluation queries (0 with --queries)", "Held-out test share"
    )
    val_fraction: float = share(
        0.1, "share of each class used to choose the kept model (never trained on)", "Validation share"
    )
    unseen_classes: float | None = share(
        None,
        "share of classes never trained on, to validate and test retrieval of new classes; unset = 0.2 from 20 "
        "classes up",
        "Classes never trained on",
        below=0.8,
    )


@dataclass
class ModelSettings:
    """The network and the side of its input images."""

    title: ClassVar[str] = "Model"  # its heading in --help and on the Train page

    backbone: str = setting(
        "auto",
        "network: auto picks convnet for tiny images (<= 64 px) and efficientnet_lite0 for photos",
        choices=BACKBONES,
        label="Backbone",
        main=True,
    )
    pretrained: bool | None = setting(
        None,
        "ImageNet weights: unset = when the backbone has them on this "
        "machine; --pretrained requires them; --no-pretrained starts from random",
        label="Pretrained weights",
    )
    dim: int = setting(128, "embedding size of the head", low=2, high=4096, label="Embedding size")
    image_size: int | None = setting(
        None,
        "input side in pixels; unset = 32 for tiny images with the convnet, "
        "64 for larger ones, 224 for pretrained backbones",
        low=8,
        high=1024,
        label="Image size",
    )


@dataclass
class TrainingSettings:
    """The loss and its batches, the optimiser and its schedule, and when training stops."""

    title: ClassVar[str] = "Training"  # its heading in --help and on the Train page

    epochs: int = setting(
        40,
        "maximum epochs (the cosine schedule spans them); early stopping may end sooner",
        low=0,
        high=10_000,
        label="Epochs (max)",
        main=True,
    )
    margin: float = setting(
        0.2, "triplet margin, in L2 distance between unit vectors", low=0.001, high=2.0, step=0.05, label="Margin"
    )
    loss: str = setting(
        "triplet",
        "the metric-learning loss: triplet (TripletMarginLoss with --miner) or multi-similarity "
        "(MultiSimilarityLoss with its own miner: weighs every pair of a batch by how hard it is) or proxy-anchor "
        "(ProxyAnchorLoss: one learned proxy a class, each image pulled to its own and pushed from the others)",
        choices=LOSSES,
        label="Loss",
    )
    miner: str = setting(
        "semihard",
        "which triplets of a batch the loss learns from: semihard | hard | all "
        "(TripletMarginMiner) | batch-hard (BatchHardMiner)",
        choices=MINERS,
        label="Triplet miner",
        main=True,
    )
    classes_per_batch: int = setting(
        8,
        "P of a PxK batch (lowered to the number of classes when there are fewer)",
        low=2,
        high=1024,
        label="Classes per batch (P)",
    )
    per_class: int = setting(
        4,
        "K of a PxK batch (raised when P is lowered, so the batch size stays P*K)",
        low=2,
        high=1024,
        label="Images per class (K)",
    )
    lr: float = setting(
        1e-3,
        "Adam learning rate of the embedding head (and of a from-scratch backbone)",
        positive=True,
        label="Learning rate",
    )
    backbone_lr: float = setting(
        1e-4,
        "Adam learning rate of a pretrained backbone: fine-tune it gently",
        low=0.0,
        label="Backbone learning rate",
    )
    schedule: str = setting(
        "cosine",
        "learning-rate schedule over --epochs: constant, or cosine (decays to 0 by the last epoch)",
        choices=SCHEDULES,
        label="Learning-rate schedule",
    )
    weight_decay: float = setting(1e-4, "Adam weight decay", low=0.0, label="Weight decay")
    freeze_bn: bool = setting(
        True,
        "keep a pretrained backbone's BatchNorm statistics fixed (small batches distort them)",
        label="Freeze BatchNorm",
    )
    freeze_fraction: float = share(
        0.75,
        "share of a pretrained backbone's stages, from the input side, left frozen",
        "Frozen share of the backbone",
        high=1.0,
    )
    average_share: float = share(
        0.5,
        "a pretrained backbone's best epoch averaged with its starting weights (WiSE-FT): the fine-tuned share of "
        "the average, which is kept over the plain epoch unless that labels validation images clearly better "
        "(1: no average)",
        "Fine-tuned share of the weight average",
        high=1.0,
    )
    finetune: bool = setting(
        True,
        "train after the first answer: a run answers within seconds from features that need no training (pretrained "
        "features, or the pixels of tiny images); training then replaces it only if it labels clearly better "
        "(--no-finetune stops at the first answer)",
        label="Fine-tune after the first answer",
    )
    patience: int = setting(
        10, "early stopping: epochs without a better validation score", low=1, high=1000, label="Patience (epochs)"
    )


@dataclass
class SelectionSettings:
    """How the kept network, the neighbours that vote and the "unknown" threshold are chosen."""

    title: ClassVar[str] = "Selection"  # its heading in --help and on the Train page

    selection: str = setting(
        "auto",
        "how the kept model is chosen: holdout (on the validation share), cv (k-fold cross-validation over the "
        "training and validation images, then a last training on all of them to the chosen epoch), or auto "
        "(cv when validation has fewer than 50 images per class and there are at most 20,000 images)",
        choices=SELECTIONS,
        label="Model choice",
    )
    folds: int = setting(
        4, "cross-validation folds (--selection cv, or auto on small data)", low=2, high=10, label="Folds"
    )
    cv_patience: int = setting(
        5,
        "early stopping of a cross-validation: epochs without a better pooled score (each epoch is scored on every "
        "image, so it decides sooner than --patience on a validation share; and each costs --folds networks)",
        low=1,
        high=1000,
        label="Patience of a cross-validation (epochs)",
    )
    k: int | None = setting(
        None,
        "neighbours that vote on a label; unset = chosen on validation among 1, 3, 5, 10 and 20: 5 unless another "
        "labels the validation images clearly more right",
        low=1,
        high=100,
        label="Neighbours that vote (k)",
    )
    target_precision: float = setting(
        0.95,
        '"unknown" threshold: answers within it are right this often on validation',
        low=0.01,
        high=1.0,
        step=0.01,
        label='"Unknown" target precision',
    )


@dataclass
class IndexSettings:
    """The Annoy index over the gallery (it answers only where it measurably beats exact search)."""

    title: ClassVar[str] = "Index"  # its heading in --help and on the Train page

    n_trees: int = setting(
        20, "Annoy trees; search_k is then raised until recall@10 reaches 0.95", low=1, high=1000, label="Annoy trees"
    )
    shard_items: int = setting(
        1_000_000,
        "gallery images per Annoy index: a larger gallery gets one index per this many images, built one at a "
        "time and queried together (add rebuilds only the last)",
        low=1,
        high=2**31 - 1,
        label="Images per index shard",
    )


@dataclass
class JobSettings:
    """Where the run is written, its seed and device, and whether it resumes or replaces."""

    title: ClassVar[str] = "Run"  # its heading in --help and on the Train page

    out: str = setting(
        "runs/demo",
        "the run folder to write; replaced atomically when training succeeds (only ever a run folder)",
        app=False,
    )
    seed: int = setting(0, "random seed: same seed, same data -> same run on CPU", low=0, high=2**31 - 1, label="Seed")
    device: str = setting("auto", "auto uses CUDA when present", choices=DEVICES, label="Device")
    batch_size_embed: int = setting(
        64, "images per forward pass when embedding", low=1, high=4096, label="Embedding batch size"
    )
    resume: bool = setting(
        False, "continue an interrupted training of the same --out from its last checkpoint", app=False
    )
    overwrite: bool = setting(
        False,
        "allow --out to be an existing empty folder (a folder holding files that are not a run is never replaced)",
        app=False,
    )


# The stages in the order their settings are shown
STAGES = (DataSettings, ModelSettings, TrainingSettings, SelectionSettings, IndexSettings, JobSettings)


# Field order is stage order (a dataclass lists its bases' fields from the last base to the first), so --help and the
# Train page show them stage by stage.
@dataclass
class TrainConfig(JobSettings, IndexSettings, SelectionSettings, TrainingSettings, ModelSettings, DataSettings):
    """One training run: every stage's settings side by side, so a run's config.json, the CLI's flags and
    ``TrainConfig(epochs=5, ...)`` stay flat; ``stage`` gives a stage its own settings alone."""

    title: ClassVar[str | None] = None  # not a stage (else it would read as its first base's, "Run")

    def stage(self, cls: type[S]) -> S:
        """This run's settings of one stage (``IndexSettings``, ...) and nothing else."""
        return cls(**{f.name: getattr(self, f.name) for f in fields(cls)})

    def validate(self) -> None:
        """Raises EmbedderError naming the first setting out of its range or choices."""
        from .errors import EmbedderError

        problem = self.problem()
        if problem:
            raise EmbedderError(problem)

    def problem(self, prefix: str | None = None) -> str | None:
        """The first setting out of its range or choices, named as its flag (or as ``prefix.field`` of a file,
        config.json's ``train``); None when all fit."""
        problem = check_settings(self, prefix)
        if problem is None and self.test_fraction + self.val_fraction >= 0.9:
            problem = "test and validation fractions leave too little to train on"
        if problem is None and self.classes_per_batch * self.per_class > 4096:
            problem = "a batch (classes-per-batch x per-class) holds at most 4096 images"
        return problem

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class ModelConfig:
    """All that is needed to rebuild the network and its transforms; saved in the run's config.json."""

    backbone: str = "convnet"  # the concrete backbone (never "auto")
    dim: int | None = 128  # embedding size; None means pooled backbone features with no head
    image_size: int = 32  # square input side in pixels
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)  # per-channel normalisation
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    resize: str = "stretch"  # "stretch" to a square (tiny images) or "crop" (short side, then centre crop: photos)
    augment: str = "small"  # "small": shifts/rotations, no flips (digits); "photo": crops, flips, colour
    flip_tta: bool = False  # average the embedding of the image and its mirror at inference
    pretrained: bool = False  # whether ImageNet weights were loaded before training

    def problem(self) -> str | None:
        """Why this config cannot describe a network (read from a file, so anything may be in it), or None. Its
        size and embedding are held to the ranges of the settings that made them: ModelSettings' for a network
        trained here, import-model's for an imported one."""
        imported = self.backbone == IMPORTED
        size = ONNX_IMAGE_SIZE if imported else setting_of(ModelSettings, "image_size")
        dim = Setting("", low=2, high=MAX_DIM) if imported else setting_of(ModelSettings, "dim")
        checks = [
            (None if self.backbone in (*BACKBONES[1:], IMPORTED, PIXELS) else f"unknown backbone '{self.backbone}'"),
            value_problem(dim, self.dim, "model.dim"),
            value_problem(size, self.image_size, "model.image_size"),
            (None if self.resize in ("stretch", "crop") else f"unknown resize '{self.resize}'"),
            (None if self.augment in ("small", "photo") else f"unknown augmentation '{self.augment}'"),
            (None if all(s > 0 for s in self.std) else "std must be positive"),
        ]
        return next((message for message in checks if message), None)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d


@dataclass
class IndexConfig(IndexSettings):
    """How the gallery's index is built and chosen: a run's index settings (``IndexSettings``, the defaults of
    ``--n-trees`` and ``--shard-items``) and the tuning no flag exposes."""

    # recall@10 against exact search that Annoy's search_k and the graph's ef are raised to reach. At 0.95 the 10-NN
    # vote gives exact search's label for 99-100% of held-out queries (bench_knn, "kNN label = exact's").
    target_recall: float = 0.95
    recall_sample: int = 500  # probe queries used when measuring recall: fewer must clear the target by more
    seed: int = 0
    # "auto": Annoy or the HNSW graph only where one measurably beats exact search; or force "exact" / "annoy" / "graph"
    method: str = "auto"
    min_speedup: float = 1.5  # auto picks Annoy only this many times faster than exact search: exact is never wrong
    on_disk_items: int = 500_000  # from this gallery size Annoy builds in a file, not in memory (on_disk_build)
    # From this gallery size "auto" also builds and times the HNSW graph (search/graph.py); below it exact search
    # answers in about a millisecond, and a graph would not repay its build.
    graph_min_items: int = 50_000
    graph_threads: int = 0  # threads inserting into the graph, 0: every core (1: two builds are byte-identical)

    @classmethod
    def of(cls, settings: IndexSettings, seed: int) -> IndexConfig:
        """A run's index settings with its seed; the tuning at its defaults."""
        return cls(**asdict(settings), seed=seed)

"""Every default of the pipeline, one dataclass per stage. CLI flags map 1:1 onto these fields."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

SCHEMA_VERSION = 2  # 2: marker file and checksums; runs of schema 1 still load

BACKBONES = ("auto", "convnet", "resnet18", "resnet50", "efficientnet_lite0")
MINERS = ("semihard", "hard", "all", "batch-hard")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class TrainConfig:
    data: str = "demo"  # an ImageFolder root (root/<label>/<image>), or "demo" for the bundled digits
    out: str = "runs/demo"  # the run folder to write; replaced atomically when training succeeds
    backbone: str = "auto"  # auto picks convnet for tiny images (<= 64 px) and efficientnet_lite0 for photos
    pretrained: bool | None = None  # None: ImageNet weights when the backbone has them offline; True: required
    dim: int = 128  # embedding size of the head
    epochs: int = 30  # upper bound; early stopping usually ends sooner
    image_size: int | None = None  # None: 32 for convnet, 224 for pretrained backbones
    margin: float = 0.2  # triplet margin, in L2 distance between unit vectors (0..2)
    miner: str = "semihard"  # semihard | hard | all (TripletMarginMiner) | batch-hard (BatchHardMiner)
    classes_per_batch: int = 8  # P of a PxK batch (lowered to the number of classes when there are fewer)
    per_class: int = 4  # K of a PxK batch (raised when P is lowered, so the batch size stays P*K)
    lr: float = 1e-3  # Adam learning rate of the embedding head (and of a from-scratch backbone)
    backbone_lr: float = 1e-4  # Adam learning rate of a pretrained backbone: fine-tune it gently
    weight_decay: float = 1e-4  # Adam weight decay
    freeze_bn: bool = True  # keep a pretrained backbone's BatchNorm statistics fixed (small batches distort them)
    freeze_fraction: float = 0.75  # share of a pretrained backbone's stages, from the input side, left frozen
    patience: int = 5  # early stopping: epochs without a better validation MAP@R
    test_fraction: float = 0.2  # share of each class held out as evaluation queries (0 with --queries)
    val_fraction: float = 0.1  # share of each class used to choose the best epoch (never trained on)
    unseen_classes: float | None = None  # share of classes never trained on, to validate/test on new classes; None: 0.2 from 20 classes up
    queries: str | None = None  # a separate ImageFolder of evaluation queries instead of a held-out split
    target_precision: float = 0.95  # "unknown" threshold: answers within it are right this often on validation
    n_trees: int = 20  # Annoy trees; search_k is then raised until recall@10 >= 0.99
    batch_size_embed: int = 64  # images per forward pass when embedding
    seed: int = 0  # same seed, same data -> same run on CPU
    device: str = "auto"  # auto uses CUDA when present
    resume: bool = False  # continue an interrupted training of the same --out from its last checkpoint
    overwrite: bool = False  # allow --out to be an existing empty folder (a folder with files is never replaced)

    def validate(self) -> None:
        from .errors import EmbedderError

        if self.backbone not in BACKBONES:
            raise EmbedderError(f"unknown backbone '{self.backbone}': choose one of {', '.join(BACKBONES)}")
        if self.miner not in MINERS:
            raise EmbedderError(f"unknown miner '{self.miner}': choose one of {', '.join(MINERS)}")
        if self.device not in DEVICES:
            raise EmbedderError(f"unknown device '{self.device}': choose one of {', '.join(DEVICES)}")
        checks = [  # upper bounds too: every one of these sizes memory or time
            (2 <= self.dim <= 4096, "--dim must be in [2, 4096]"),
            (0 <= self.epochs <= 10_000, "--epochs must be in [0, 10000]"),
            (self.image_size is None or 8 <= self.image_size <= 1024, "--image-size must be in [8, 1024]"),
            (0 < self.margin <= 2, "--margin must be positive (at most 2, the largest distance between unit vectors)"),
            (2 <= self.classes_per_batch <= 1024, "--classes-per-batch must be in [2, 1024]"),
            (2 <= self.per_class <= 1024, "--per-class must be in [2, 1024]"),
            (self.classes_per_batch * self.per_class <= 4096, "a batch (classes-per-batch x per-class) holds at most 4096 images"),
            (self.lr > 0 and self.backbone_lr >= 0, "learning rates must be positive"),
            (self.weight_decay >= 0, "--weight-decay must be 0 or more"),
            (self.patience >= 1, "--patience must be at least 1"),
            (0 <= self.test_fraction < 1, "--test-fraction must be in [0, 1)"),
            (0 <= self.val_fraction < 1, "--val-fraction must be in [0, 1)"),
            (self.test_fraction + self.val_fraction < 0.9, "test and validation fractions leave too little to train on"),
            (1 <= self.n_trees <= 1000, "--n-trees must be in [1, 1000]"),
            (1 <= self.batch_size_embed <= 4096, "batch_size_embed must be in [1, 4096]"),
            (0 <= self.freeze_fraction <= 1, "--freeze-fraction must be in [0, 1]"),
            (self.unseen_classes is None or 0 <= self.unseen_classes < 0.8, "--unseen-classes must be in [0, 0.8)"),
            (0 < self.target_precision <= 1, "--target-precision must be in (0, 1]"),
        ]
        for ok, message in checks:
            if not ok:
                raise EmbedderError(message)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
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
        """Why this config cannot describe a network (read from a file, so anything may be in it), or None."""
        checks = [
            (self.backbone in BACKBONES and self.backbone != "auto", f"unknown backbone '{self.backbone}'"),
            (self.dim is None or 2 <= self.dim <= 65536, f"embedding size {self.dim} out of range"),
            (8 <= self.image_size <= 4096, f"image size {self.image_size} out of range"),
            (self.resize in ("stretch", "crop"), f"unknown resize '{self.resize}'"),
            (self.augment in ("small", "photo"), f"unknown augmentation '{self.augment}'"),
            (all(s > 0 for s in self.std), "std must be positive"),
        ]
        return next((message for ok, message in checks if not ok), None)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        for key in ("mean", "std"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)


@dataclass
class IndexConfig:
    n_trees: int = 20  # more trees: better recall, bigger file
    target_recall: float = 0.99  # recall@10 against exact search that search_k is raised to reach
    recall_sample: int = 200  # gallery items used as probe queries when measuring recall
    seed: int = 0


@dataclass
class PredictConfig:
    k: int = 5  # neighbours that vote
    unknown_threshold: float | None = None  # nearest-neighbour distance beyond which the answer is "unknown"


@dataclass
class EpochStats:
    """What one epoch reports through the callback, and what history.json stores."""

    epoch: int
    loss: float
    active_fraction: float  # share of all valid triplets in a batch that still violate the margin
    ap_distance: float  # mean anchor-positive distance
    an_distance: float  # mean anchor-negative distance
    val_precision_at_1: float
    val_map_at_r: float
    seconds: float
    val_unseen_map_at_r: float | None = None  # classes never trained on (leave-one-out among them)
    best: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Progress:
    """One progress report from a long job; the CLI turns these into tqdm bars, the app into st.progress."""

    stage: str  # "scan" | "train" | "embed" | "index" | "evaluate" | "write" | "done"
    done: int = 0
    total: int = 0
    epoch: int = 0
    loss: float | None = None
    message: str = ""
    stats: EpochStats | None = None
    extra: dict = field(default_factory=dict)

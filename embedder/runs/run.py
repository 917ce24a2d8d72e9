"""A run: a trained embedder with its labelled gallery, index, splits and metrics, as one object.

The bundle's files live in bundle.py, their validation in bundle_read.py; this is what the rest of the program uses.
Which images form the gallery, and which are recorded as held-out queries, is decided here too.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import DEFAULT_K, ModelConfig, TrainConfig
from ..errors import EmbedderError
from ..onnx.input import OnnxInput
from ..search.index import GalleryIndex, open_index
from . import bundle, bundle_read
from . import corrections as overlay
from .bundle import check_out, is_run  # noqa: F401  (re-exported: what callers ask of run folders)
from .records import Metrics

GALLERY_PARTS = ("train", "val", "unseen_val", "unseen_test")  # every image but the held-out test queries
RECORDED_PARTS = ("test", "val", "unseen_val", "unseen_test")  # kept in split.json as [relative path, label]


def gallery_rows(parts: dict[str, np.ndarray]) -> np.ndarray:
    """The image rows that form the gallery, sorted: everything that is not a held-out test query."""
    return np.sort(np.concatenate([parts[p] for p in GALLERY_PARTS]))


def split_record(
    root: Path,
    paths: list[Path],
    labels: np.ndarray,
    classes: list[str],
    parts: dict[str, np.ndarray],
    queries_root: str | None,
) -> dict:
    """split.json: each recorded part as [path relative to the data root, label name]."""
    record = {p: [[str(paths[i].relative_to(root)), classes[labels[i]]] for i in parts[p]] for p in RECORDED_PARTS}
    record["queries_root"] = str(Path(queries_root).expanduser().resolve()) if queries_root else None
    return record


@dataclass
class Run:
    """A loaded run bundle. The model and the index are built on first use."""

    path: Path
    model_config: ModelConfig
    train_config: TrainConfig
    classes: list[str]
    data_root: Path
    gallery_paths: list[str]  # relative to data_root
    gallery_labels: np.ndarray  # (N,) int64
    gallery_embeddings: np.ndarray  # (N, D) float32
    split: dict[str, list]  # "test": [[relpath, label_name], ...], "val": ..., "queries_root": str | None
    info: dict  # the rest of config.json (index stats, versions, created, kept, notes)
    history: list[dict] = field(default_factory=list)  # open-ended rows (history.json), read by the training curves
    metrics: dict = field(default_factory=dict)  # metrics.json as written: what verbs/ fill; read it as ``record``
    onnx: OnnxInput | None = None  # an imported network's preprocessing; None for a network trained here
    novelty_reference: np.ndarray | None = None  # (R, F) float16: what novelty.py measures a query against
    novelty_rows: np.ndarray | None = None  # (R,) the gallery rows the reference was taken from
    # (N, F) float16: the gallery in features that never saw a label (a pretrained backbone's first answer), where
    # insights judge the labels: a network fine-tuned on wrong labels has learnt them (findings.py). None: none kept.
    label_free: np.ndarray | None = None
    # Labels corrected and images taken out since the gallery was written (corrections.py): gallery_labels above
    # are the corrected ones; gallery.npz keeps what it was written with.
    corrections: overlay.Corrections = field(default_factory=overlay.Corrections)
    _model: Any = None
    _index: GalleryIndex | None = None

    def __post_init__(self) -> None:
        if self.train_config.k is None:  # training chooses k; a run assembled otherwise votes with the default
            self.train_config = replace(self.train_config, k=DEFAULT_K)

    @property
    def record(self) -> Metrics:
        """The run's metrics as typed records (records.py): what pages, the CLI and predict read. Parsed from
        ``metrics`` on each call (a few dozen fields), so it never lags a writer filling that dict; take it once."""
        return Metrics.of(self.metrics)

    @property
    def name(self) -> str:
        return self.path.name

    def resolve(self, rel: str, root: Path | None = None) -> Path:
        p = Path(rel)
        return p if p.is_absolute() else (root or self.data_root) / p

    def gallery_files(self) -> list[Path]:
        return [self.resolve(p) for p in self.gallery_paths]

    def label_names(self, labels: np.ndarray) -> list[str]:
        return [self.classes[i] for i in labels]

    def model(self, device: str | torch.device = "cpu"):
        """The network in eval mode on ``device``, loaded once (weights only: a file cannot run code); for an
        imported network an ``OnnxEmbedder``, run by onnxruntime. Either maps (B, C, H, W) to (B, D) unit vectors."""
        if self._model is None and self.onnx is not None:
            from ..onnx.model import OnnxEmbedder

            try:
                data = (self.path / "model.onnx").read_bytes()
                self._model = OnnxEmbedder(data, self.onnx, name=f"model.onnx of run {self.name}")
            except EmbedderError as exc:
                raise bundle_read.damaged(self.path, f"model.onnx: {exc}") from None
        if self._model is None:
            from ..network.model import EmbeddingNet

            net = EmbeddingNet(self.model_config, load_pretrained=False)
            try:
                net.load_state_dict(bundle_read.read_state(self.path))
            except RuntimeError:  # other keys or shapes
                why = "model.pt does not fit the network described in config.json"
                raise bundle_read.damaged(self.path, why) from None
            self._model = net.eval()
        return self._model.to(device)

    @property
    def centre(self) -> np.ndarray | None:
        """(D,) the gallery mean the run's embeddings are moved by before their last normalisation
        (``network.centre``), or None."""
        value = self.info.get("centre")
        return None if value is None else np.asarray(value, dtype=np.float32)

    @centre.setter
    def centre(self, value: np.ndarray | None) -> None:
        if value is None:
            self.info.pop("centre", None)
        else:
            self.info["centre"] = [float(v) for v in np.asarray(value, dtype=np.float32)]

    def transform(self) -> Callable:
        """PIL image -> the network's input tensor (C, H, W), exactly as the gallery was embedded."""
        if self.onnx is not None:
            from ..onnx.input import transform

            return transform(self.onnx)
        from ..images.transforms import eval_transform

        return eval_transform(self.model_config)

    def embed(
        self,
        images: Sequence,
        device: str | torch.device = "cpu",
        progress: Callable[[int, int], None] | None = None,
        fn: Callable | None = None,
    ) -> np.ndarray:
        """PIL images or paths -> (N, D) unit vectors with the run's network (or ``fn``, a network that takes the
        same input) and preprocessing, batched; whether the network is torch or ONNX is this method's business. The
        run's own network's embeddings are moved by the run's ``centre``, as its gallery's were."""
        from ..network.centre import centred
        from ..network.embed import embed_images

        emb = embed_images(
            fn if fn is not None else self.model(device),
            images,
            self.transform(),
            batch_size=self.train_config.batch_size_embed,
            flip_tta=self.model_config.flip_tta,
            device=device,
            progress=progress,
            fast=self.onnx is None,  # a loaded network does not change: many images go through onnxruntime
        )
        return centred(emb, self.centre) if fn is None else emb

    def index(self) -> GalleryIndex:
        if self._index is None:
            try:
                self._index = open_index(self.path, self.gallery_embeddings, self.info["index"])
            except EmbedderError as exc:
                raise bundle_read.damaged(self.path, str(exc)) from None
        return self._index

    def queries(self, part: str = "test") -> tuple[list[Path], np.ndarray]:
        """The stored held-out images of ``part`` as (absolute paths, label indices into classes)."""
        root = Path(self.split["queries_root"]) if part == "test" and self.split.get("queries_root") else self.data_root
        rows = self.split.get(part, [])
        index = {c: i for i, c in enumerate(self.classes)}
        return [self.resolve(r[0], root) for r in rows], np.array([index.get(r[1], -1) for r in rows], dtype=np.int64)

    def save(self, overwrite: bool = False) -> Path:
        """Write this run to ``self.path`` atomically (see ``bundle.write``); only ever replaces a run."""
        overlay.compact(self)
        info = {k: v for k, v in self.info.items() if k not in ("schema_version", "created", "versions", "checksums")}
        config = {
            "model": self.model_config.to_dict(),
            "train": self.train_config.to_dict(),
            "classes": list(self.classes),
            "data_root": str(self.data_root),
            **info,
            "index": self.index().stats(),
        }
        if self.onnx is not None:
            config["onnx"] = self.onnx.to_dict()
        model = (
            {"model.onnx": self.model().data}
            if self.onnx is not None
            else {"model.pt": {k: v.cpu() for k, v in self.model().state_dict().items()}}
        )
        files = {
            **model,
            "gallery.npz": {
                "embeddings": self.gallery_embeddings.astype(np.float32),
                "labels": overlay.stored_labels(self).astype(np.int64),
                "paths": np.array(self.gallery_paths, dtype=str),
                **(
                    {"novelty": self.novelty_reference, "novelty_rows": self.novelty_rows}
                    if self.novelty_reference is not None
                    else {}
                ),
                **({"label_free": self.label_free.astype(np.float16)} if self.label_free is not None else {}),
            },
            "index": self.index(),
            "split.json": self.split,
            "history.json": self.history,
            "metrics.json": self.metrics,
            **({overlay.FILE: self.corrections.to_json()} if self.corrections else {}),
        }
        return bundle.write(self.path, files, config, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Run:
        """Load and validate a run folder as a whole; its index is opened and checked now, not at the first query.

        Raises:
            EmbedderError: not a run folder, a newer schema, or a damaged file (named).
        """
        path = Path(path).expanduser().resolve()
        got = bundle_read.read(path)
        manifest = got["manifest"]
        run = cls(
            path=path,
            model_config=manifest.model,
            train_config=manifest.train,
            classes=manifest.classes,
            data_root=Path(manifest.data_root),
            gallery_paths=got["paths"],
            gallery_labels=got["labels"],
            gallery_embeddings=got["embeddings"],
            split=got["split"],
            info={
                k: v for k, v in got["config"].items() if k not in ("model", "train", "classes", "data_root", "onnx")
            },
            history=got["history"],
            metrics=got["metrics"],
            onnx=manifest.onnx,
            novelty_reference=got["novelty_reference"],
            novelty_rows=got["novelty_rows"],
            label_free=got["label_free"],
            corrections=overlay.read(path, got["checksums"]),
        )
        centre = run.info.get("centre")
        if centre is not None and not _centre_ok(centre, run.gallery_embeddings.shape[1]):
            raise bundle_read.damaged(path, "config.json: centre is not one finite number per embedding dimension")
        overlay.apply(run)
        run.index()
        return run


def _centre_ok(value, dim: int) -> bool:
    if not isinstance(value, list) or len(value) != dim or not all(isinstance(v, (int, float)) for v in value):
        return False
    return bool(np.isfinite(np.asarray(value, dtype=np.float64)).all())


def load_run(path: str | os.PathLike) -> Run:
    """Shorthand for ``Run.load``."""
    return Run.load(path)


def list_runs(root: str | os.PathLike = "runs") -> list[Path]:
    """Run folders directly under ``root``, newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    runs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and bundle.is_run(p)]
    return sorted(runs, key=lambda p: (p / "config.json").stat().st_mtime, reverse=True)

"""The run bundle on disk: written atomically into place, loaded and validated.

A run folder holds:
    config.json    model + training config, classes, data root, index stats, library versions, schema version
    model.pt       the network's state_dict (loaded with weights_only=True)
    gallery.npz    gallery embeddings (N, D), labels (N,), paths relative to the data root
    split.json     the held-out evaluation queries (and validation images) as [relative path, label]
    index.ann      the Annoy index over the gallery embeddings
    history.json   one row per epoch
    metrics.json   evaluation results, baselines, index recall
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import SCHEMA_VERSION, ModelConfig, TrainConfig
from .errors import EmbedderError
from .index import GalleryIndex, load_index

REQUIRED_FILES = ("config.json", "model.pt", "gallery.npz", "index.ann")


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "torchvision", "pytorch-metric-learning", "annoy", "numpy", "scikit-learn"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


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
    history: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    _model: Any = None
    _index: GalleryIndex | None = None

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
        if self._model is None:
            from .model import EmbeddingNet

            net = EmbeddingNet(self.model_config, load_pretrained=False)
            try:
                state = torch.load(self.path / "model.pt", map_location="cpu", weights_only=True)
                net.load_state_dict(state)
            except Exception as exc:
                raise EmbedderError(f"damaged run {self.path}: model.pt does not load ({str(exc).splitlines()[0]})") from None
            self._model = net.eval().to(device)
        return self._model

    def index(self) -> GalleryIndex:
        if self._index is None:
            stats = self.info["index"]
            self._index = load_index(
                self.path / "index.ann", self.gallery_embeddings.shape[1], len(self.gallery_paths),
                stats["n_trees"], stats["search_k"], stats["recall_at_10"],
            )
        return self._index

    def queries(self, part: str = "test") -> tuple[list[Path], np.ndarray]:
        """The stored held-out images of ``part`` as (absolute paths, label indices into classes)."""
        root = Path(self.split["queries_root"]) if part == "test" and self.split.get("queries_root") else self.data_root
        rows = self.split.get(part, [])
        index = {c: i for i, c in enumerate(self.classes)}
        return [self.resolve(r[0], root) for r in rows], np.array([index.get(r[1], -1) for r in rows], dtype=np.int64)


def write_run(
    out: Path,
    *,
    model_state: dict,
    model_config: ModelConfig,
    train_config: TrainConfig,
    classes: list[str],
    data_root: Path,
    gallery_paths: list[str],
    gallery_labels: np.ndarray,
    gallery_embeddings: np.ndarray,
    split: dict,
    index: GalleryIndex,
    history: list[dict],
    metrics: dict,
    info: dict | None = None,
) -> Path:
    """Write a complete bundle into a temporary sibling folder, then swap it into ``out``.

    An interruption at any point leaves either the previous bundle or the new one, never a mix.
    """
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        config = {
            "schema_version": SCHEMA_VERSION,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "model": model_config.to_dict(),
            "train": train_config.to_dict(),
            "classes": list(classes),
            "data_root": str(data_root),
            "index": index.stats(),
            "versions": library_versions(),
            **(info or {}),
        }
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        torch.save(model_state, tmp / "model.pt")
        np.savez(
            tmp / "gallery.npz",
            embeddings=gallery_embeddings.astype(np.float32),
            labels=gallery_labels.astype(np.int64),
            paths=np.array(gallery_paths, dtype=str),
        )
        (tmp / "split.json").write_text(json.dumps(split))
        index.save(tmp / "index.ann")
        (tmp / "history.json").write_text(json.dumps(history, indent=2))
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def is_run(path: str | os.PathLike) -> bool:
    return (Path(path) / "config.json").is_file()


def load_run(path: str | os.PathLike) -> Run:
    """Load and validate a run folder.

    Raises:
        EmbedderError: not a run folder, a newer schema, or damaged files.
    """
    path = Path(path).expanduser().resolve()
    if not path.is_dir():
        raise EmbedderError(f"run folder not found: {path}")
    if not is_run(path):
        raise EmbedderError(f"{path} is not a run folder (no config.json); train one with: python -m embedder train")
    missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
    if missing:
        raise EmbedderError(f"damaged run {path}: missing {', '.join(missing)}")
    try:
        config = json.loads((path / "config.json").read_text())
        version = config.get("schema_version")
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise EmbedderError(f"run {path} has schema version {version}; this embedder reads up to {SCHEMA_VERSION}")
        gallery = np.load(path / "gallery.npz")
        embeddings, labels, paths = gallery["embeddings"], gallery["labels"], [str(p) for p in gallery["paths"]]
        split = json.loads((path / "split.json").read_text()) if (path / "split.json").exists() else {}
        history = json.loads((path / "history.json").read_text()) if (path / "history.json").exists() else []
        metrics = json.loads((path / "metrics.json").read_text()) if (path / "metrics.json").exists() else {}
        run = Run(
            path=path,
            model_config=ModelConfig.from_dict(config["model"]),
            train_config=TrainConfig.from_dict(config["train"]),
            classes=list(config["classes"]),
            data_root=Path(config["data_root"]),
            gallery_paths=paths,
            gallery_labels=labels,
            gallery_embeddings=embeddings,
            split=split,
            info={k: v for k, v in config.items() if k not in ("model", "train", "classes", "data_root")},
            history=history,
            metrics=metrics,
        )
    except EmbedderError:
        raise
    except Exception as exc:
        raise EmbedderError(f"damaged run {path}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    if len(embeddings) != len(labels) or len(labels) != len(paths):
        raise EmbedderError(f"damaged run {path}: gallery arrays disagree in length")
    return run


def list_runs(root: str | os.PathLike = "runs") -> list[Path]:
    """Run folders directly under ``root``, newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    runs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and is_run(p)]
    return sorted(runs, key=lambda p: (p / "config.json").stat().st_mtime, reverse=True)

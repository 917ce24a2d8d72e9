"""Triplet-loss image embeddings: train on a labelled image folder, index the gallery, predict by kNN."""

from .config import IndexConfig, ModelConfig, TrainConfig
from .data import ImageSet, demo_dataset, load_image, scan_folder, stratified_split
from .errors import Cancelled, EmbedderError
from .evaluate import evaluate_run
from .index import GalleryIndex, build_index
from .knn import topk
from .metrics import retrieval_metrics
from .pipeline import TrainResult, train
from .predict import Prediction, Predictor
from .progress import Progress, Stage
from .project import Projection, project
from .run import Run, list_runs, load_run
from .vote import vote

__all__ = [
    "Cancelled",
    "EmbedderError",
    "GalleryIndex",
    "ImageSet",
    "IndexConfig",
    "ModelConfig",
    "Prediction",
    "Predictor",
    "Progress",
    "Projection",
    "Run",
    "Stage",
    "TrainConfig",
    "TrainResult",
    "build_index",
    "demo_dataset",
    "evaluate_run",
    "list_runs",
    "load_image",
    "load_run",
    "project",
    "retrieval_metrics",
    "scan_folder",
    "stratified_split",
    "topk",
    "train",
    "vote",
]

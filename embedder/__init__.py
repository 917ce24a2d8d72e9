"""Triplet-loss image embeddings: train on a labelled image folder, index the gallery, predict by kNN."""

from .answers.evaluate import evaluate_run
from .answers.metrics import retrieval_metrics
from .answers.predict import Prediction, Predictor
from .config import IndexConfig, ModelConfig, TrainConfig
from .errors import Cancelled, EmbedderError
from .images.data import ImageSet, demo_dataset, load_image, scan_folder, stratified_split
from .maps.project import Projection, project
from .progress import Progress, Stage
from .runs.run import Run, list_runs, load_run
from .search.index import GalleryIndex, build_index
from .search.knn import topk
from .search.vote import vote
from .verbs.pipeline import TrainResult, train

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

"""The run bundle's format on disk: its files, the schema of config.json, writing it atomically into place,
reading and validating every file, and the rule for which folders may be replaced.

A run folder holds:
    .embedder-run  the marker: only a folder carrying it (and nothing but these files) is ever replaced
    config.json    model + training config, classes, data root, index stats, versions, checksums, schema version
    model.pt       the network's state_dict (loaded with weights_only=True), or
    model.onnx     a network imported from an ONNX file (run by onnxruntime only; see onnx_model.py)
    gallery.npz    gallery embeddings (N, D), labels (N,), paths relative to the data root (no pickles)
    split.json     the held-out evaluation queries (and validation images) as [relative path, label]
    index.ann      the Annoy index over the gallery embeddings, or for a gallery past ``shard_items`` rows
    index-<n>.ann  one Annoy index per shard of contiguous gallery rows (config.json: index.shards, their rows)
    history.json   one row per epoch
    metrics.json   evaluation results, baselines, index recall
    projections/   cached maps (optional, written by the app; embedder/project.py)

config.json records the SHA-256 of the model file, gallery.npz and each index file; a file that does not match (damaged,
or swapped in from another run) is named on load.
"""

from __future__ import annotations

import functools
import json
import os
import pickle
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import IMPORTED, SCHEMA_VERSION, ModelConfig, TrainConfig
from .errors import EmbedderError
from .folders import MARKER, foreign_entries, is_inside, recover, sha256, swap_into_place
from .index_shards import SHARD_FILE, coverage_problem
from .machine import machine_versions
from .onnx_input import OnnxInput

REQUIRED_FILES = ("config.json", "model.pt", "gallery.npz", "index.ann")  # a sharded run: index-<n>.ann instead


class _BundleNames(frozenset):
    """The names a run folder may hold: these, and any index shard's ``index-<n>.ann`` (there are as many as the
    gallery needs), so a sharded run is still a run the program may replace, and its shards are exported."""

    def __contains__(self, name: object) -> bool:
        return frozenset.__contains__(self, name) or (isinstance(name, str) and bool(SHARD_FILE.fullmatch(name)))


BUNDLE_FILES = _BundleNames(
    # "projections": the app's cache of maps (embedder/project.py): part of the run, rebuilt on demand
    {MARKER, *REQUIRED_FILES, "model.onnx", "split.json", "history.json", "metrics.json", "projections"}
)
NEVER_LOADED = "which are never loaded (they could run code)"  # a planted pickle, in model.pt or gallery.npz


@dataclass
class IndexShard:
    """One shard of a sharded index: its file and the gallery rows [start, stop) it holds."""

    file: str
    start: int
    stop: int


@dataclass
class IndexStats:
    n_trees: int
    search_k: int  # nodes Annoy inspects per query; in each shard of a sharded index
    recall_at_10: float  # what queries get: 1.0 when they are answered exactly
    size: int
    # Recorded from the index choice on (runs from before it have none and were Annoy): how queries are answered,
    # and the measurement that chose it.
    method: str = "annoy"  # "annoy" or "exact"
    annoy_recall_at_10: float | None = None
    annoy_ms: float | None = None  # one query at a time, on the probes
    exact_ms: float | None = None
    probes: int | None = None
    probe_kind: str | None = None  # "held-out" or "gallery, self excluded"
    shards: list[IndexShard] | None = None  # a sharded index's files, in row order; None: the one index.ann


@dataclass
class Manifest:
    """The part of config.json a run cannot be used without, validated strictly on load (pydantic)."""

    schema_version: int
    model: ModelConfig
    train: TrainConfig
    classes: list[str]
    data_root: str
    index: IndexStats
    checksums: dict[str, str] = field(default_factory=dict)  # file name -> SHA-256 (schema 2 on)
    onnx: OnnxInput | None = None  # an imported network's preprocessing: then model.onnx holds the network


def model_file(manifest: Manifest) -> str:
    """The file that holds the run's network."""
    return "model.onnx" if manifest.onnx is not None else "model.pt"


def index_files(manifest: Manifest) -> list[str]:
    """The files that hold the run's index: its shards, or index.ann."""
    return [s.file for s in manifest.index.shards] if manifest.index.shards else ["index.ann"]


def _shards_problem(index: IndexStats) -> str | None:
    """Why the recorded shards cannot be this run's (a name that is not a shard file's, rows not covered once)."""
    if index.shards is None:
        return None
    bad = next((s.file for s in index.shards if not SHARD_FILE.fullmatch(s.file)), None)
    if bad is not None:
        return f"index shard {bad!r} is not an index-<n>.ann file name"
    return coverage_problem([{"start": s.start, "stop": s.stop} for s in index.shards], index.size)


def write(out: Path, files: dict[str, Any], config: dict, overwrite: bool = False) -> Path:
    """Write a complete bundle into a temporary sibling folder, then swap it into ``out``.

    ``files``: "model.pt" -> a state dict (or "model.onnx" -> its bytes), "gallery.npz" -> {name: array},
    "index" -> a ``GalleryIndex`` (it writes its file or its shards' files), "*.json" -> a JSON value.
    ``config`` is completed with the schema version, the creation time, library versions and the checksums. An
    interruption at any point leaves either the previous bundle or the new one, never a mix; a folder at ``out``
    that is not a run is never replaced (``check_out``).
    """
    out = Path(out).resolve()
    check_out(out, overwrite=overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        model = "model.onnx" if "model.onnx" in files else "model.pt"
        if model == "model.onnx":
            (tmp / model).write_bytes(files[model])
        else:
            torch.save(files[model], tmp / model)
        np.savez(tmp / "gallery.npz", **files["gallery.npz"])
        index_names = files["index"].save_into(tmp)
        for name in ("split.json", "history.json", "metrics.json"):
            (tmp / name).write_text(json.dumps(files[name], indent=1))
        config = {
            "schema_version": SCHEMA_VERSION,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **config,
            "versions": machine_versions(),
            "checksums": {name: sha256(tmp / name) for name in (model, "gallery.npz", *index_names)},
        }
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        (tmp / MARKER).write_text(f"embedder run bundle, schema {SCHEMA_VERSION}\n")
        swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def is_run(path: str | os.PathLike) -> bool:
    """A run bundle: the marker, or (runs written before it existed) every required file."""
    path = Path(path)
    if not (path / "config.json").is_file():
        return False
    return (path / MARKER).is_file() or all((path / f).is_file() for f in REQUIRED_FILES)


def is_replaceable(path: Path) -> bool:
    """Whether ``path`` is a run the program wrote and may replace: a run holding only bundle files."""
    return path.is_dir() and is_run(path) and not foreign_entries(path, BUNDLE_FILES)


def _check_writable(folder: Path) -> None:
    """Fail before training, not after it, when the run's folder cannot be made or written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as exc:
        raise EmbedderError(f"cannot write runs into {folder}: {exc.strerror or exc}") from None


def check_out(out: str | os.PathLike, inputs: Sequence[str | os.PathLike] = (), overwrite: bool = False) -> None:
    """Refuse an output folder whose replacement would destroy what the program did not write.

    Allowed: a path that does not exist yet, a run bundle (see ``is_replaceable``), and with ``overwrite``
    an empty folder. Never: a folder that is, contains or lies inside one of ``inputs`` (the data folders).

    Raises:
        EmbedderError: one line naming the folder and what to do instead.
    """
    out = Path(out).expanduser().resolve()
    for folder in inputs:
        if is_inside(out, folder) or is_inside(folder, out):
            raise EmbedderError(
                f"--out {out} overlaps the data folder {Path(folder).expanduser().resolve()}: writing the run "
                "there would replace your images; choose an --out outside it"
            )
    _check_writable(out.parent)
    recover(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise EmbedderError(f"--out {out} is a file, not a folder: choose another --out")
    if is_replaceable(out):
        return
    if is_run(out):
        foreign = ", ".join(foreign_entries(out, BUNDLE_FILES)[:3])
        raise EmbedderError(
            f"--out {out} is a run but also holds {foreign}, which training did not write: it is "
            "never replaced; move those files out or choose a new --out"
        )
    entries = sorted(p.name for p in out.iterdir())
    if not entries and overwrite:
        return
    if not entries:
        raise EmbedderError(
            f"--out {out} already exists and is not a run: pass --overwrite to write into this "
            "empty folder, or choose a new --out"
        )
    shown = ", ".join(entries[:3]) + (" ..." if len(entries) > 3 else "")
    raise EmbedderError(
        f"--out {out} exists and is not a run folder (it holds {shown}): it is never replaced; choose a new --out"
    )


def damaged(path: Path, what: str) -> EmbedderError:
    return EmbedderError(f"damaged run {path}: {what}; train it again or restore the file")


@functools.cache
def _manifest_adapter():
    from pydantic import TypeAdapter

    return TypeAdapter(Manifest)


def read_manifest(path: Path) -> tuple[Manifest, dict]:
    """config.json, validated as a whole: (the typed manifest, the raw dict with everything else)."""
    from pydantic import ValidationError

    text = (path / "config.json").read_bytes()
    try:
        raw = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise damaged(path, f"config.json is not valid JSON ({exc})") from None
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise EmbedderError(f"run {path} has schema version {version}; this embedder reads up to {SCHEMA_VERSION}")
    try:
        manifest = _manifest_adapter().validate_json(text, strict=True)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"]) or "(top level)"
        raise damaged(path, f"config.json field {where}: {error['msg']}") from None
    problem = manifest.model.problem() or (None if manifest.classes else "no classes")
    if problem is None and (manifest.onnx is not None) != (manifest.model.backbone == IMPORTED):
        problem = "the onnx section and the model's backbone disagree"
    problem = problem or (manifest.onnx.problem() if manifest.onnx is not None else None)
    problem = problem or _shards_problem(manifest.index)
    if problem:
        raise damaged(path, f"config.json: {problem}")
    return manifest, raw


def _verify_checksums(path: Path, manifest: Manifest) -> None:
    for name in (model_file(manifest), "gallery.npz", *index_files(manifest)):
        want = manifest.checksums.get(name)
        if want is None:
            if manifest.schema_version >= 2:
                raise damaged(path, f"config.json has no checksum for {name}")
            continue  # schema 1 runs were written before checksums
        if sha256(path / name) != want:
            raise damaged(
                path,
                f"{name} does not match the checksum recorded when the run was written "
                "(damaged, or copied in from another run)",
            )


def _read_gallery(path: Path, n_classes: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """gallery.npz -> embeddings (N, D) float32, labels (N,) int64, relative paths; never unpickles."""
    try:
        with np.load(path / "gallery.npz", allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in ("embeddings", "labels", "paths")}
    except KeyError as exc:
        raise damaged(path, f"gallery.npz lacks the array {exc}") from None
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        if isinstance(exc, ValueError) and "pickle" in str(exc):  # numpy's refusal of allow_pickle=False
            raise damaged(path, f"gallery.npz holds pickled objects, {NEVER_LOADED}") from None
        raise damaged(path, "gallery.npz is not a readable .npz archive") from None
    emb, labels, paths = arrays["embeddings"], arrays["labels"], arrays["paths"]
    checks = [
        (emb.ndim == 2 and emb.dtype == np.float32 and emb.shape[0] > 0, "embeddings are not a (N, D) float32 array"),
        (labels.shape == (len(emb),) and labels.dtype.kind == "i", "labels do not match the embeddings"),
        (paths.shape == (len(emb),) and paths.dtype.kind == "U", "paths do not match the embeddings"),
        (len(labels) == 0 or (labels.min() >= 0 and labels.max() < n_classes), "labels outside the run's classes"),
        (bool(np.isfinite(emb).all()), "embeddings hold NaN or infinity"),
    ]
    for ok, what in checks:
        if not ok:
            raise damaged(path, f"gallery.npz: {what}")
    return emb, labels.astype(np.int64), [str(p) for p in paths]


def read_state(path: Path) -> dict:
    """model.pt -> state_dict. ``weights_only`` refuses anything but tensors and plain containers."""
    try:
        state = torch.load(path / "model.pt", map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise damaged(path, f"model.pt holds objects other than weights, {NEVER_LOADED}") from None
    except Exception:  # torch raises many types for a file that is not a checkpoint at all
        raise damaged(path, "model.pt is not a PyTorch weights file") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise damaged(path, "model.pt is not a state dict of tensors")
    return state


def _read_json(path: Path, name: str, kind: type) -> Any:
    if not (path / name).exists():
        return kind()
    try:
        value = json.loads((path / name).read_text())
    except (ValueError, UnicodeDecodeError, OSError) as exc:
        raise damaged(path, f"{name} is not valid JSON ({exc})") from None
    if not isinstance(value, kind):
        raise damaged(path, f"{name} holds a {type(value).__name__}, not a {kind.__name__}")
    return value


def read(path: Path) -> dict:
    """Read and validate a run folder as a whole: config schema, checksums, gallery arrays, JSON files.

    Returns:
        manifest (Manifest), config (the raw dict), embeddings, labels, paths, split, history, metrics.

    Raises:
        EmbedderError: not a run folder, a newer schema, or a damaged file (named).
    """
    if path.parent.is_dir():
        recover(path)
    if not path.is_dir():
        raise EmbedderError(f"run folder not found: {path}")
    if not (path / "config.json").is_file():
        raise EmbedderError(f"{path} is not a run folder (no config.json); train one with: python -m embedder train")
    if not (path / "gallery.npz").is_file():
        raise damaged(path, "missing gallery.npz")
    manifest, raw = read_manifest(path)
    missing = [f for f in (model_file(manifest), *index_files(manifest)) if not (path / f).is_file()]
    if missing:
        raise damaged(path, f"missing {', '.join(missing)}")
    _verify_checksums(path, manifest)
    embeddings, labels, paths = _read_gallery(path, len(manifest.classes))
    if manifest.index.size != len(paths):
        raise damaged(path, f"config.json says the index holds {manifest.index.size} items, the gallery {len(paths)}")
    return {
        "manifest": manifest,
        "config": raw,
        "embeddings": embeddings,
        "labels": labels,
        "paths": paths,
        "split": _read_json(path, "split.json", dict),
        "history": _read_json(path, "history.json", list),
        "metrics": _read_json(path, "metrics.json", dict),
    }

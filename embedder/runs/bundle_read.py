"""A run bundle read back and checked as a whole before anything uses it: every file within its size and depth
limits (limits.py), config.json against its schema and every number in it against the range of the setting that
made it, every file against the checksum recorded when it was written (checksums.json), the gallery's arrays from
their headers before they are loaded, its paths inside the data root, split.json, history.json and metrics.json
against their schemas (schemas.py). A damaged file is named in one line with its field; a pickle is never loaded
(model.pt with ``weights_only``, gallery.npz without pickles)."""

from __future__ import annotations

import functools
import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import IMPORTED, MAX_DIM, SCHEMA_VERSION, IndexSettings
from ..errors import EmbedderError, one_line
from ..search.graph import GRAPH_FILE
from ..search.shards import SHARD_FILE, coverage_problem
from ..settings import setting_of, value_problem
from . import limits, schemas
from .bundle import BUNDLE_FILES, CHECKSUMS, IndexStats, Manifest, index_files, is_run, model_file
from .folders import recover, sha256

NEVER_LOADED = "which are never loaded (they could run code)"  # a planted pickle, in model.pt or gallery.npz


def _shards_problem(index: IndexStats) -> str | None:
    """Why the recorded shards or graph files cannot be this run's (a name that is not a shard file's or a graph
    file's, rows not covered once, a graph method without a graph)."""
    if index.method == "graph" and not index.graph:
        return "the index is answered by its graph, and records no graph file"
    for files, pattern, what in ((index.shards, SHARD_FILE, "an index-<n>.ann"), (index.graph, GRAPH_FILE, "a graph")):
        if files is None:
            continue
        bad = next((s.file for s in files if not pattern.fullmatch(s.file)), None)
        if bad is not None:
            return f"index file {bad!r} is not {what} file name"
        problem = coverage_problem([{"start": s.start, "stop": s.stop} for s in files], index.size)
        if problem:
            return problem
    return None


def damaged(path: Path, what: str) -> EmbedderError:
    return EmbedderError(f"damaged run {path}: {what}; train it again or restore the file")


@functools.cache
def _manifest_adapter():
    from pydantic import TypeAdapter

    return TypeAdapter(Manifest)


def read_manifest(path: Path) -> tuple[Manifest, dict]:
    """config.json, validated as a whole: (the typed manifest, the raw dict with everything else)."""
    from pydantic import ValidationError

    raw = _bounded_json(path, "config.json")
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise EmbedderError(f"run {path} has schema version {version}; this embedder reads up to {SCHEMA_VERSION}")
    try:
        manifest = _manifest_adapter().validate_json(json.dumps(raw), strict=True)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"]) or "(top level)"
        raise damaged(path, f"config.json field {where}: {error['msg']}") from None
    problem = _manifest_problem(manifest)
    if problem:
        raise damaged(path, f"config.json: {problem}")
    return manifest, raw


def data_folders(path: Path) -> list[Path] | None:
    """Every folder the run at ``path`` reads images from (its data root, training and query folders, the folders
    ``add`` appended), read from config.json without validating the rest: a damaged or half-written run's images
    count too. None when config.json cannot be read at all."""
    try:
        config = _bounded_json(path, "config.json")
        train = config.get("train", {})
        added = [a.get("folder") for a in config.get("additions", []) if isinstance(a, dict)]  # verbs/add.py
        paths = [config.get("data_root"), train.get("data"), train.get("queries"), *added]
    except (OSError, ValueError, AttributeError, EmbedderError):
        return None
    return [Path(p).expanduser().resolve() for p in paths if isinstance(p, str) and p and p != "demo"]


def run_version(path: str | os.PathLike) -> str | None:
    """What tells one write of a run from the next: the gallery checksum its config.json records (a run written
    before checksums: config.json's modification time); None when it is not a run. Every write swaps in a new
    folder with a new config.json, so a run that changed has another version."""
    path = Path(path)
    if not is_run(path):
        return None
    try:
        checksum = (_bounded_json(path, "config.json").get("checksums") or {}).get("gallery.npz")
        return str(checksum) if checksum else f"mtime:{(path / 'config.json').stat().st_mtime_ns}"
    except (OSError, AttributeError, EmbedderError):
        return None


def _manifest_problem(manifest: Manifest) -> str | None:
    """Why the typed config.json cannot be a run's: a number outside the range of the setting that made it, two
    sections that disagree, shards that do not cover the gallery."""
    index = manifest.index
    checks = [
        None if manifest.schema_version >= 1 else f"schema_version {manifest.schema_version} is not a version",
        manifest.model.problem(),
        manifest.train.problem("train"),
        None if manifest.classes else "no classes",
        None if (manifest.onnx is not None) == (manifest.model.backbone == IMPORTED) else ONNX_DISAGREES,
        manifest.onnx.problem() if manifest.onnx is not None else None,
        None if Path(manifest.data_root).is_absolute() else f"data_root {manifest.data_root!r} is not absolute",
        value_problem(setting_of(IndexSettings, "n_trees"), index.n_trees, "index.n_trees"),
        None if index.search_k >= -1 and index.size >= 0 else "index.search_k or index.size is negative",
        None if 0 <= index.recall_at_10 <= 1 else f"index.recall_at_10 {index.recall_at_10} is not a share",
        _shards_problem(index),
    ]
    return next((problem for problem in checks if problem), None)


ONNX_DISAGREES = "the onnx section and the model's backbone disagree"


def _bounded_json(path: Path, name: str) -> Any:
    """``name`` in the run at ``path``, parsed within limits.py's bounds; a file past them is named."""
    try:
        return limits.read_json(path / name, name)
    except limits.Refused as exc:
        raise damaged(path, str(exc)) from None
    except OSError as exc:
        raise damaged(path, f"{name} cannot be read ({exc.strerror or exc})") from None


def _verify_checksums(path: Path, manifest: Manifest) -> dict[str, str]:
    """Every file against the checksum recorded when the run was written: checksums.json's (schema 3 on, every
    file, config.json too), config.json's own (schema 2: the model, gallery and index), none (schema 1). Returns
    the checksums recorded (file name -> SHA-256), for the optional files their own modules read."""
    if manifest.schema_version >= 3:
        return _verify_every_file(path, manifest)
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
    return manifest.checksums


def _verify_every_file(path: Path, manifest: Manifest) -> dict[str, str]:
    if not (path / CHECKSUMS).is_file():
        raise damaged(path, f"missing {CHECKSUMS}, which holds the checksum of every file")
    files = _bounded_json(path, CHECKSUMS)
    files = files.get("sha256") if isinstance(files, dict) else None
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise damaged(path, f"{CHECKSUMS} does not list the files' checksums")
    needed = ["config.json", model_file(manifest), "gallery.npz", *index_files(manifest)]
    missing = [name for name in needed if name not in files]
    if missing:
        raise damaged(path, f"{CHECKSUMS} has no checksum for {missing[0]}")
    for name, want in files.items():
        if name not in BUNDLE_FILES:
            raise damaged(path, f"{CHECKSUMS} lists {name!r}, which is not a file of this run")
        if not (path / name).is_file():
            raise damaged(path, f"missing {name}, which {CHECKSUMS} lists")
        if sha256(path / name) != want:
            raise damaged(
                path,
                f"{name} does not match the checksum recorded when the run was written "
                "(damaged, edited, or copied in from another run)",
            )
    return files


def _gallery_members(path: Path, manifest: Manifest) -> None:
    """gallery.npz's arrays from their headers, before any is loaded: present, of the run's dtypes and shapes,
    of one length, none larger than the bytes the archive holds for it."""
    try:
        members = limits.npz_members(path / "gallery.npz", max_dim=MAX_DIM)
    except limits.Refused as exc:
        raise damaged(path, f"gallery.npz {exc}") from None
    for name in ("embeddings", "labels", "paths"):
        if name not in members:
            raise damaged(path, f"gallery.npz lacks the array '{name}'")
    n = members["embeddings"].shape[0] if len(members["embeddings"].shape) == 2 else -1
    want = {"labels": (n,), "paths": (n,)}
    if "novelty" in members:
        r = members["novelty"].shape[0]
        want["novelty_rows"] = (r,)
    if "label_free" in members:
        want["label_free"] = (n, members["label_free"].shape[-1])
    bad = next((k for k, shape in want.items() if k in members and members[k].shape != shape), None)
    if bad == "novelty_rows" or ("novelty" in members and "novelty_rows" not in members):
        raise damaged(path, "gallery.npz: the novelty reference is damaged (its rows do not fit it)")
    if n < 0 or bad is not None:
        raise damaged(path, f"gallery.npz: the arrays' shapes do not fit together ({bad or 'embeddings'})")


def _read_gallery(path: Path, n_classes: int) -> dict:
    """gallery.npz -> embeddings (N, D) float32, labels (N,) int64, relative paths, the novelty reference
    (R, F) float16 with its gallery rows (R,) when the run has one (novelty.py), else None, None, and the label-free
    features (N, F) float16 or None; never unpickles. Its headers were checked first (``_gallery_members``)."""
    try:
        with np.load(path / "gallery.npz", allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in ("embeddings", "labels", "paths")}
            reference = npz["novelty"] if "novelty" in npz.files else None
            rows = npz["novelty_rows"] if reference is not None else None
            label_free = npz["label_free"] if "label_free" in npz.files else None
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
        (reference is None or _reference_ok(reference, rows, len(emb)), "the novelty reference is damaged"),
        (label_free is None or _label_free_ok(label_free, len(emb)), "the label-free features are damaged"),
    ]
    for ok, what in checks:
        if not ok:
            raise damaged(path, f"gallery.npz: {what}")
    return {
        "embeddings": emb,
        "labels": labels.astype(np.int64),
        "paths": paths,  # (N,) str: a list only at the end of ``read``
        "novelty_reference": reference,
        "novelty_rows": rows,
        "label_free": label_free,
    }


def _label_free_ok(features: np.ndarray, n: int) -> bool:
    """(N, F) finite float16, one row per gallery image."""
    shape_ok = features.ndim == 2 and features.shape[0] == n and features.shape[1] > 0
    return shape_ok and features.dtype == np.float16 and bool(np.isfinite(features).all())


def _reference_ok(reference: np.ndarray, rows: np.ndarray, n: int) -> bool:
    """(R, F) finite float16, taken from R distinct gallery rows."""
    shape_ok = reference.ndim == 2 and 0 < len(reference) <= n and reference.dtype == np.float16
    rows_ok = rows.shape == (len(reference),) and rows.dtype.kind == "i" and len(np.unique(rows)) == len(rows)
    return shape_ok and rows_ok and bool(rows.min() >= 0 and rows.max() < n and np.isfinite(reference).all())


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
    """split.json, history.json or metrics.json within its bounds and against its schema (schemas.py)."""
    if not (path / name).exists():
        return kind()
    value = _bounded_json(path, name)
    if not isinstance(value, kind):
        raise damaged(path, f"{name} holds a {type(value).__name__}, not a {kind.__name__}")
    problem = schemas.problem(name, value)
    if problem:
        raise damaged(path, f"{name} {problem}")
    return value


def _paths_problem(raw: dict, manifest: Manifest, paths: np.ndarray, split: dict) -> str | None:
    """A gallery or split.json path that leaves the folders the run's images come from: the data root, the
    folders ``add`` recorded (config.json ``additions``), and for test queries their own folder."""
    root = manifest.data_root
    added = [a.get("folder") for a in raw.get("additions", []) if isinstance(a, dict)]
    roots = [root, *(a for a in added if isinstance(a, str) and Path(a).is_absolute())]
    bad = limits.outside(paths, roots)
    if bad is not None:
        return f"gallery.npz: the path {one_line(bad, 80)!r} is outside the run's data root {root}"
    for part in ("test", "val", "unseen_val", "unseen_test"):
        part_root = split.get("queries_root") if part == "test" and split.get("queries_root") else root
        bad = limits.outside(np.array([row[0] for row in split.get(part, [])], dtype=str), [part_root])
        if bad is not None:
            return f"split.json: the {part} path {one_line(bad, 80)!r} is outside {part_root}"
    return None


def read(path: Path) -> dict:
    """Read and validate a run folder as a whole: config schema, checksums, gallery arrays, JSON files.

    Returns:
        manifest (Manifest), config (the raw dict), checksums (file name -> SHA-256), embeddings, labels,
        paths, novelty_reference, novelty_rows, label_free, split, history, metrics.

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
    checksums = _verify_checksums(path, manifest)
    _gallery_members(path, manifest)
    gallery = _read_gallery(path, len(manifest.classes))
    if manifest.index.size != len(gallery["paths"]):
        raise damaged(
            path, f"config.json says the index holds {manifest.index.size} items, the gallery {len(gallery['paths'])}"
        )
    split = _read_json(path, "split.json", dict)
    problem = _paths_problem(raw, manifest, gallery["paths"], split)
    if problem:
        raise damaged(path, problem)
    return {
        "manifest": manifest,
        "config": raw,
        "checksums": checksums,
        **gallery,
        "paths": [str(p) for p in gallery["paths"]],
        "split": split,
        "history": _read_json(path, "history.json", list),
        "metrics": _read_json(path, "metrics.json", dict),
    }

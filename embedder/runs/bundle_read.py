"""A run bundle read back and checked as a whole before anything uses it: config.json against its schema, every
file against the checksum recorded when it was written, the gallery's arrays, the JSON files. A damaged file is
named in one line; a pickle is never loaded (model.pt with ``weights_only``, gallery.npz without pickles)."""

from __future__ import annotations

import functools
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .bundle import IndexStats, Manifest, index_files, model_file
from ..config import IMPORTED, SCHEMA_VERSION
from ..errors import EmbedderError
from .folders import recover, sha256
from ..search.graph import GRAPH_FILE
from ..search.shards import SHARD_FILE, coverage_problem

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


def _read_gallery(
    path: Path, n_classes: int
) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray | None, np.ndarray | None]:
    """gallery.npz -> embeddings (N, D) float32, labels (N,) int64, relative paths, and the novelty reference
    (R, F) float16 with its gallery rows (R,) when the run has one (novelty.py), else None, None; never unpickles."""
    try:
        with np.load(path / "gallery.npz", allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in ("embeddings", "labels", "paths")}
            reference = npz["novelty"] if "novelty" in npz.files else None
            rows = npz["novelty_rows"] if reference is not None else None
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
    ]
    for ok, what in checks:
        if not ok:
            raise damaged(path, f"gallery.npz: {what}")
    return emb, labels.astype(np.int64), [str(p) for p in paths], reference, rows


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
    embeddings, labels, paths, reference, rows = _read_gallery(path, len(manifest.classes))
    if manifest.index.size != len(paths):
        raise damaged(path, f"config.json says the index holds {manifest.index.size} items, the gallery {len(paths)}")
    return {
        "manifest": manifest,
        "config": raw,
        "embeddings": embeddings,
        "labels": labels,
        "paths": paths,
        "novelty_reference": reference,
        "novelty_rows": rows,
        "split": _read_json(path, "split.json", dict),
        "history": _read_json(path, "history.json", list),
        "metrics": _read_json(path, "metrics.json", dict),
    }

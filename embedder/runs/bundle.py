"""The run bundle's format on disk: its files, the schema of config.json, writing it atomically into place, and the
rule for which folders may be replaced. Reading it back, every file checked, is bundle_read.py.

A run folder holds:
    .embedder-run  the marker: only a folder carrying it (and nothing but these files) is ever replaced
    config.json    model + training config, classes, data root, index stats, versions, schema version
    checksums.json the SHA-256 of every file above and below (schema 3 on; schema 2 kept three in config.json)
    model.pt       the network's state_dict (loaded with weights_only=True), or
    model.onnx     a network imported from an ONNX file (run by onnxruntime only; see onnx_model.py)
    gallery.npz    gallery embeddings (N, D), labels (N,), paths relative to the data root, and the novelty
                   reference (R, F) float16 and its gallery rows (R,) (novelty.py; absent in older runs), and the
                   label-free features (N, F) float16 labels are judged in (training/first.py; pretrained backbones
                   only) (no pickles)
    split.json     the held-out evaluation queries (and validation images) as [relative path, label]
    index.ann      the Annoy index over the gallery embeddings, or for a gallery past ``shard_items`` rows
    index-<n>.ann  one Annoy index per shard of contiguous gallery rows (config.json: index.shards, their rows)
    graph.voy      the HNSW graph (Voyager's format), when it answers queries (index.method "graph"), or
    graph-<n>.voy  one per shard (config.json: index.graph, each file's rows)
    history.json   one row per epoch
    metrics.json   evaluation results, baselines, index recall
    corrections.json  labels corrected and images taken out since the gallery was written (corrections.py; only
                   when there are some)
    projections/   cached maps (optional, written by the app; embedder/maps/project.py)

checksums.json records the SHA-256 of every file, config.json and corrections.json included; a file that does not
match (damaged, edited, or swapped in from another run) is named on load.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..config import SCHEMA_VERSION, ModelConfig, TrainConfig
from ..errors import EmbedderError
from ..images.data import is_inside
from ..onnx.input import OnnxInput
from ..search.graph import GRAPH_FILE
from ..search.shards import SHARD_FILE
from . import lock
from .folders import MARKER, foreign_entries, recover, sha256, swap_into_place
from .machine import machine_versions
from .writes import c_stderr_quiet, refusals_named, save_torch

REQUIRED_FILES = ("config.json", "model.pt", "gallery.npz", "index.ann")  # a sharded run: index-<n>.ann instead
EXTRA_CHECKSUMMED = ("corrections.json",)  # optional files with a checksum, each read and checked by its own module
CHECKSUMS = "checksums.json"  # the SHA-256 of every other file (schema 3 on)


class _BundleNames(frozenset):
    """The names a run folder may hold: these, and any index shard's ``index-<n>.ann`` or graph file (there are as
    many as the gallery needs), so a sharded run is still a run the program may replace, and its shards are
    exported."""

    def __contains__(self, name: object) -> bool:
        return frozenset.__contains__(self, name) or (
            isinstance(name, str) and bool(SHARD_FILE.fullmatch(name) or GRAPH_FILE.fullmatch(name))
        )


BUNDLE_FILES = _BundleNames(
    # "projections": the app's cache of maps (embedder/maps/project.py): part of the run, rebuilt on demand
    {MARKER, CHECKSUMS, *REQUIRED_FILES, "model.onnx", "split.json", "history.json", "metrics.json", "projections"}
    | {"corrections.json"}
)


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
    method: str = "annoy"  # "annoy", "exact" or "graph"
    annoy_recall_at_10: float | None = None
    annoy_ms: float | None = None  # one query at a time, on the probes
    graph_recall_at_10: float | None = None  # the HNSW graph, where it was built (large galleries)
    graph_ms: float | None = None
    exact_ms: float | None = None
    probes: int | None = None
    probe_kind: str | None = None  # "held-out" or "gallery, self excluded"
    shards: list[IndexShard] | None = None  # a sharded index's files, in row order; None: the one index.ann
    graph: list[IndexShard] | None = None  # the graph's files (graph.voy or graph-<n>.voy), when it answers
    ef: int | None = None  # the graph's search depth


@dataclass
class Manifest:
    """The part of config.json a run cannot be used without, validated strictly on load (pydantic)."""

    schema_version: int
    model: ModelConfig
    train: TrainConfig
    classes: list[str]
    data_root: str
    index: IndexStats
    checksums: dict[str, str] = field(default_factory=dict)  # file name -> SHA-256 (schema 2; 3 on: checksums.json)
    onnx: OnnxInput | None = None  # an imported network's preprocessing: then model.onnx holds the network


def model_file(manifest: Manifest) -> str:
    """The file that holds the run's network."""
    return "model.onnx" if manifest.onnx is not None else "model.pt"


def index_files(manifest: Manifest) -> list[str]:
    """The files that hold the run's index: its shards, or index.ann; and its graph's, when it has one."""
    annoy = [s.file for s in manifest.index.shards] if manifest.index.shards else ["index.ann"]
    return annoy + [s.file for s in manifest.index.graph or []]


def write(out: Path, files: dict[str, Any], config: dict, overwrite: bool = False) -> Path:
    """Write a complete bundle into a temporary sibling folder, then swap it into ``out``.

    ``files``: "model.pt" -> a state dict (or "model.onnx" -> its bytes), "gallery.npz" -> {name: array},
    "index" -> a ``GalleryIndex`` (it writes its file or its shards' files), "*.json" -> a JSON value.
    ``config`` is completed with the schema version, the creation time, library versions and the checksums. An
    interruption at any point leaves either the previous bundle or the new one, never a mix; a folder at ``out``
    that is not a run is never replaced (``check_out``).
    """
    out = Path(out).resolve()
    with lock.writing(out):  # the caller's own lock when it holds it (a verb's read-modify-write)
        check_out(out, overwrite=overwrite)
        _swap_in(out, lambda tmp: _write_files(tmp, files, config))
    return out


def _swap_in(out: Path, fill: Callable[[Path], None]) -> None:
    """``fill`` a temporary sibling folder of ``out``, then swap it into place; a failure removes it, and a full
    disk is one line naming ``out`` (the old run intact)."""
    with refusals_named(out):
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        try:
            fill(tmp)
            swap_into_place(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _write_files(tmp: Path, files: dict[str, Any], config: dict) -> None:
    """Every file of the bundle into the empty folder ``tmp``, config.json and the marker last."""
    model = "model.onnx" if "model.onnx" in files else "model.pt"
    if model == "model.onnx":
        (tmp / model).write_bytes(files[model])
    else:
        save_torch(files[model], tmp / model)
    np.savez(tmp / "gallery.npz", **files["gallery.npz"])
    with c_stderr_quiet():  # Annoy prints its own failure: the user gets ours
        index_names = files["index"].save_into(tmp)
    for name in ("split.json", "history.json", "metrics.json"):
        (tmp / name).write_text(json.dumps(files[name], indent=1))
    extra = [name for name in EXTRA_CHECKSUMMED if name in files]
    for name in extra:
        (tmp / name).write_text(files[name])
    config = {
        "schema_version": SCHEMA_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **config,
        "versions": machine_versions(),
    }
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    written = ("config.json", model, "gallery.npz", *index_names, "split.json", "history.json", "metrics.json", *extra)
    _write_checksums(tmp, written)
    (tmp / MARKER).write_text(f"embedder run bundle, schema {SCHEMA_VERSION}\n")


def update(out: Path, texts: dict[str, str]) -> Path:
    """Replace some of a run's small files (``texts``: name -> its new text) without writing the rest again: the
    other files are hard-linked into a temporary sibling folder (files are never changed in place: every write
    swaps a whole folder), the new texts written beside them, config.json's checksums brought up to date, and the
    folder swapped into place as ``write`` does. A change to a run's corrections costs milliseconds, not a copy of
    its gallery, and its cached maps (``projections/``) stay."""
    out = Path(out).resolve()
    with lock.writing(out):
        check_out(out)
        _swap_in(out, lambda tmp: _update_files(out, tmp, texts))
    return out


def _update_files(out: Path, tmp: Path, texts: dict[str, str]) -> None:
    """The run's files linked into ``tmp``, ``texts`` written over theirs, and the checksums brought up to date:
    checksums.json's (schema 3 on) or config.json's own (a schema 2 run)."""
    for entry in out.iterdir():
        if entry.name not in texts and entry.name not in ("config.json", CHECKSUMS):
            _link(entry, tmp / entry.name)
    for name, text in texts.items():
        (tmp / name).write_text(text)
    config = json.loads((out / "config.json").read_text())
    if (out / CHECKSUMS).is_file():
        (tmp / "config.json").write_text((out / "config.json").read_text())
        sums = json.loads((out / CHECKSUMS).read_text())["sha256"]
        _write_checksums(tmp, [*sums, *(name for name in texts if name in EXTRA_CHECKSUMMED)])
        return
    sums = config.setdefault("checksums", {})
    sums.update({name: sha256(tmp / name) for name in texts if name in EXTRA_CHECKSUMMED})
    (tmp / "config.json").write_text(json.dumps(config, indent=2))


def _write_checksums(tmp: Path, names) -> None:
    """checksums.json: the SHA-256 of each named file in ``tmp``."""
    sums = {name: sha256(tmp / name) for name in dict.fromkeys(names)}
    (tmp / CHECKSUMS).write_text(json.dumps({"sha256": sums}, indent=1))


def _link(src: Path, dst: Path) -> None:
    """``dst`` as a hard link of the file ``src``, or a folder of hard links (a copy where links cannot be made)."""
    if src.is_dir():
        dst.mkdir()
        for entry in src.iterdir():
            _link(entry, dst / entry.name)
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


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

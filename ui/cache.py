"""Cached loaders. Runs, models and indexes are keyed by (run folder, config.json mtime): ``write_run`` swaps
a whole new folder into place, so a retrained run gets a new mtime and is loaded afresh."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import streamlit as st
from PIL import Image

from embedder.answers.predict import Predictor
from embedder.images.data import load_image
from embedder.maps import mapdata, precompute
from embedder.maps.project import MapKey, Projection, cached_project
from embedder.runs.run import Run, load_run

THUMB = 96  # thumbnail side in pixels
QUERY_THUMB = 112  # side of the copy of an uploaded query image that is kept


def stamp(path: str | Path) -> float:
    """The run's version: config.json's mtime (0 when missing, so the loader raises its own clear error)."""
    try:
        return (Path(path) / "config.json").stat().st_mtime
    except OSError:
        return 0.0


@st.cache_resource(max_entries=8, show_spinner=False)
def _run(path: str, version: float) -> Run:
    return load_run(path)


@st.cache_resource(max_entries=4, show_spinner="Loading the model and the index…")
def _predictor(path: str, version: float) -> Predictor:
    return Predictor(_run(path, version))


def get_run(path: str | Path) -> Run:
    return _run(str(path), stamp(path))


def get_predictor(path: str | Path) -> Predictor:
    return _predictor(str(path), stamp(path))


# A resource, not cache_data: the fitted PCA/UMAP places query points later, and cache_data would unpickle a
# copy of it (UMAP's is large) on every rerun. Underneath, the coordinates are cached in the run folder too.
@st.cache_resource(max_entries=16, show_spinner=False)
def _projection(path: str, version: float, method: str, dims: int, seed: int, before: bool) -> Projection:
    run = _run(path, version)
    emb = _before(path, version) if before else run.gallery_embeddings
    tag = f"before-{mapdata.before_kind(run)}" if before else ""
    return cached_project(run.path, emb, MapKey(method, dims, seed, tag), run.gallery_labels)


def get_projection(path: str | Path, method: str, dims: int, seed: int = 0, before: bool = False) -> Projection:
    """The run's map; with ``before``, the map of its gallery as the network before training embeds it (call
    ``get_before`` first: that one shows progress)."""
    return _projection(str(path), stamp(path), method, dims, seed, before)


class NotStored(Exception):
    """A map (or the gallery before training) that is not stored in the run yet: raised, so that no cache keeps it."""


@st.cache_data(max_entries=32, show_spinner=False)
def _fingerprint(path: str, version: float, before: bool) -> str:
    fp = precompute.fingerprint_of(_run(path, version), before)
    if fp is None:
        raise NotStored(path)
    return fp


@st.cache_resource(max_entries=32, show_spinner=False)
def _stored(path: str, version: float, method: str, dims: int, before: bool) -> Projection:
    spec = precompute.MapSpec(method, dims, before)
    proj = precompute.stored(_run(path, version), spec, _fingerprint(path, version, before))
    if proj is None:
        raise NotStored(path)
    return proj


def get_stored_projection(path: str | Path, method: str, dims: int, before: bool = False) -> Projection | None:
    """The run's map as stored in it (by the background job or the CLI): milliseconds, nothing fitted; None
    while it is not stored yet."""
    try:
        return _stored(str(path), stamp(path), method, dims, before)
    except NotStored:
        return None


# Not st.cache_*: the progress callback draws on the page, which a cached function may not do. The arrays are
# cached in the run folder instead (reading them back is milliseconds).
def _before(path: str, version: float, progress=None) -> np.ndarray:
    return mapdata.before_embeddings(_run(path, version), progress=progress)


def get_before(path: str | Path, progress=None) -> np.ndarray:
    """(N, D') the gallery embedded by the network before training (computed once, then read from the run)."""
    return _before(str(path), stamp(path), progress)


def get_predicted(path: str | Path, progress=None) -> np.ndarray:
    """(N,) each gallery image's k-NN vote, itself left out (computed once, then read from the run)."""
    return mapdata.predicted_labels(get_run(path), progress)


@st.cache_data(max_entries=4, show_spinner="Comparing every class before and after training…")
def per_class_change(path: str, version: float) -> list[dict]:
    run = _run(path, version)
    before = _before(path, version)
    return mapdata.per_class_change(before, run.gallery_embeddings, run.gallery_labels, run.classes)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# Each rerun hands the same uploads back; the key is the bytes' hash, the bytes themselves are left out.
# The image is decoded once, and only a thumbnail of it outlives this call.
@st.cache_data(max_entries=512, show_spinner=False)
def query_upload(
    path: str, version: float, key: str, _data: bytes
) -> tuple[np.ndarray, np.ndarray | None, Image.Image]:
    """(D,) embedding, (F,) novelty features (or None) and a QUERY_THUMB thumbnail of an uploaded image. Raises
    EmbedderError for a file that is not an image."""
    image = load_image(_data)
    emb, features = _predictor(path, version).embed_with_features([image])
    return emb[0], None if features is None else features[0], fit(image, QUERY_THUMB)


def fit(img: Image.Image, side: int = THUMB) -> Image.Image:
    """``img`` scaled to fit ``side``; tiny images are enlarged with hard pixel edges, not a blur."""
    scale = side / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.NEAREST if scale > 1 else Image.LANCZOS)


@st.cache_data(max_entries=4096, show_spinner=False)
def thumbnail(path: str, side: int = THUMB) -> Image.Image:
    return fit(load_image(path, max_side=side), side)


@st.cache_data(max_entries=4096, show_spinner=False)
def thumbnail_png(path: str, side: int = THUMB) -> bytes:
    """The thumbnail encoded once, as PNG bytes: ``st.image`` of a PIL image encodes it again on every rerun."""
    import io

    buf = io.BytesIO()
    thumbnail(path, side).save(buf, "PNG")
    return buf.getvalue()


@st.cache_data(max_entries=4096, show_spinner=False)
def thumbnail_uri(path: str, side: int = 64) -> str:
    """A small JPEG of the image as a data URI, to draw on a map (a few KB; no server path in it)."""
    import base64
    import io

    buf = io.BytesIO()
    thumbnail(path, side).convert("RGB").save(buf, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()

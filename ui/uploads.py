"""Uploaded files: the size limit, Query's images (kept as thumbnails only), and the dataset zips unpacked
under <runs>/.data/<hash>/, removed once no run and no job refers to them."""

from __future__ import annotations

import re
import shutil
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st
from PIL import Image

from embedder.errors import EmbedderError, UnreadableImage
from embedder.runs.bundle_read import data_folders
from embedder.runs.run import Run

from . import cache

UPLOADS = ".data"  # under the runs folder
_UNPACKED = re.compile(r"[0-9a-f]{16}")  # the only names sweep() ever deletes: digests, as unpack_folder makes them
_sweeping = threading.Lock()  # two jobs finishing at once must not race to delete the same folder


def limit_mb() -> int:
    """Streamlit's ``server.maxUploadSize`` (.streamlit/config.toml), which also caps each file here."""
    return int(st.get_option("server.maxUploadSize"))


def too_big(upload) -> str | None:
    """One line refusing ``upload`` when it is over the limit, else None. Streamlit's uploader refuses such
    files in the browser already; this holds for any client that talks to the server directly."""
    if upload.size > limit_mb() * 1024 * 1024:
        return f"**{upload.name}** is larger than the {limit_mb()} MB upload limit; it was skipped."
    return None


@dataclass
class QueryImage:
    name: str
    embedding: np.ndarray  # (D,)
    features: np.ndarray | None  # (F,) what the novelty test measures (answers.novelty); None: the run has none
    thumbnail: Image.Image  # at most cache.QUERY_THUMB pixels a side: the decoded upload is not kept


def embed_uploads(run: Run, files: Iterable) -> list[QueryImage]:
    """Each uploaded image embedded with ``run``'s model; a file that is too big or not an image gets one
    ``st.error`` line and is left out."""
    out = []
    for f in files:
        refused = too_big(f)
        if refused:
            st.error(refused)
            continue
        data = f.getvalue()
        try:
            emb, features, thumb = cache.query_upload(str(run.path), cache.stamp(run.path), cache.digest(data), data)
        except UnreadableImage as exc:  # its message names an in-memory buffer; the file's name says more
            st.error(f"**{f.name}** is not a readable image ({exc.reason}); it was skipped.")
            continue
        except EmbedderError as exc:
            st.error(f"**{f.name}**: {exc}")
            continue
        out.append(QueryImage(f.name, emb, features, thumb))
    return out


def unpack_folder(runs_dir: Path, data: bytes) -> Path:
    """Where an uploaded zip is unpacked: one folder per content, so the same zip twice is unpacked once."""
    return runs_dir / UPLOADS / cache.digest(data)[:16]


def _run_data(runs_dir: Path) -> list[Path] | None:
    """Every folder a run under ``runs_dir`` reads images from; None when a run's config cannot be read (then
    nothing may be deleted: it might be the one that needs an upload)."""
    used = []
    # Every folder with a config.json counts, not only runs that load: a damaged or half-written run's images
    # are not ours to delete either.
    for run in sorted(p for p in runs_dir.iterdir() if (p / "config.json").is_file()):
        folders = data_folders(run)
        if folders is None:
            return None
        used += folders
    return used


def sweep(runs_dir: Path, in_use: Iterable[Path] = ()) -> list[Path]:
    """Delete the unpacked uploads in ``runs_dir/.data`` that no run in ``runs_dir`` and no path of ``in_use``
    lies in. Only folders named like ``unpack_folder`` names them are ever touched. Returns those deleted."""
    base = Path(runs_dir) / UPLOADS
    with _sweeping:
        if not base.is_dir() or base.is_symlink():
            return []
        runs = _run_data(Path(runs_dir))
        if runs is None:
            return []
        needed = [*runs, *(Path(p).resolve() for p in in_use)]
        removed = []
        for folder in sorted(base.iterdir()):
            if not _UNPACKED.fullmatch(folder.name) or folder.is_symlink() or not folder.is_dir():
                continue
            real = folder.resolve()
            if any(p == real or p.is_relative_to(real) for p in needed):
                continue
            shutil.rmtree(folder)
            removed.append(folder)
        return removed

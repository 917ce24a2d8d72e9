"""Train-page helpers: turning the data choice into a folder, run names into paths, and the triplet gallery."""

from __future__ import annotations

import re
from pathlib import Path

import streamlit as st

from embedder.archive import extract_zip
from embedder.errors import EmbedderError
from embedder.run import is_run
from embedder.triplets import sample_triplets

from . import cache, state, widgets


def out_path(name: str) -> Path:
    name = name.strip()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}", name):
        raise EmbedderError("run name: letters, digits, '.', '_' and '-' only (e.g. my-photos-1)")
    return state.runs_dir() / name


def data_source(source: str, folder: str | None, upload) -> str:
    """The ``TrainConfig.data`` for the chosen source. An uploaded zip is unpacked once per content into
    runs/.data/<hash>/: the run keeps pointing at those files for its gallery thumbnails."""
    if source == "Demo digits":
        return "demo"
    if source == "Folder on the server":
        if not folder:
            raise EmbedderError("enter the path of an image folder on the server")
        path = Path(folder).expanduser()
        if not path.is_dir():
            raise EmbedderError(f"data folder not found: {path}")
        return str(path.resolve())
    if upload is None:
        raise EmbedderError("upload a .zip of class folders first")
    data = upload.getvalue()
    dest = state.runs_dir() / ".data" / cache.digest(data)[:16]
    with st.spinner(f"Unpacking {upload.name}…"):
        return str(extract_zip(data, dest))


def triplet_gallery() -> None:
    """A few triplets mined from the active run's gallery with its current model."""
    path = state.active_run_path()
    if not is_run(path):
        st.caption("Triplets appear once a run exists.")
        return
    try:
        run = cache.get_run(path)
        seed = st.session_state.get("triplet_seed", 0)
        found = sample_triplets(run, n=3, seed=seed)
    except EmbedderError as exc:
        st.error(str(exc))
        return
    st.caption(
        f"From **{run.name}**: each box is an *anchor*, a *positive* (same label) and a *negative* (another label). "
        "Training pulls the positive closer and pushes the negative away until the negative is farther by at least "
        f"the margin ({run.train_config.margin}). These were mined from one batch as training would pick them."
    )
    if not found:
        st.info("The model separates this batch so well that no triplet still has a loss. Try another batch.")
    for cell, t in zip(st.columns(len(found) or 1), found):
        if t.an_distance < t.ap_distance:
            kind = "hard: the negative is nearer than the positive"
        elif t.an_distance < t.ap_distance + run.train_config.margin:
            kind = "semi-hard: the negative is inside the margin"
        else:
            kind = "easy: already separated by the margin"
        with cell.container(border=True):
            widgets.thumbnails(
                [t.anchor, t.positive, t.negative],
                [f"anchor · {t.label}", f"positive · {t.label} · d = {t.ap_distance:.2f}",
                 f"negative · {t.negative_label} · d = {t.an_distance:.2f}"],
                columns=3, side=72,
            )
            st.caption(kind)
    if st.button("Show other triplets", icon=":material/shuffle:"):
        st.session_state["triplet_seed"] = seed + 1
        st.rerun()

"""Train-page helpers: the form's choices checked and turned into a queued job, and the triplet gallery."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import streamlit as st

from embedder.config import TrainConfig
from embedder.errors import EmbedderError
from embedder.images.archive import extract_zip, image_root
from embedder.insights.triplets import sample_triplets
from embedder.runs.run import is_run
from embedder.verbs.import_model import ImportConfig, import_model, read_network

from . import access, cache, jobs, sessions, state, uploads, widgets

SOURCES = ("Demo digits", "Folder on the server", "Upload a .zip")
NETWORKS = ("Train a new one", "Use my own model (.onnx)")
KIND_WORDS = {
    "hard": "the negative is nearer than the positive",
    "semi-hard": "the negative is inside the margin",
    "easy": "already separated by the margin",
}


def out_path(name: str) -> Path:
    name = name.strip()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}", name):
        raise EmbedderError("run name: letters, digits, '.', '_' and '-' only (e.g. my-photos-1)")
    return state.runs_dir() / name


def busy(run: Path) -> str | None:
    """Why a browser may not rewrite ``run`` now, or None: it is the demo or the operator's EMBEDDER_RUN
    ("protected"), a training is writing it ("training"), or another live session has it open ("open": its
    visitor would see it change under them). The one rule for replacing a run and for adding to one."""
    run = run.resolve()
    if run in [p.resolve() for p in state.protected_runs()]:
        return "protected"
    job = jobs.registry().get(run)
    if job is not None and job.active:
        return "training"
    return "open" if sessions.others_using(run) else None


REPLACE_REFUSALS = {
    "protected": "cannot be replaced from the browser",
    "training": "is being trained already",
    "open": "is open in another session",
}


def check_target(out: Path) -> None:
    """Refuse a run folder a browser may not replace (see ``busy``)."""
    reason = busy(out)
    if reason:
        raise EmbedderError(f"run '{out.resolve().name}' {REPLACE_REFUSALS[reason]}: choose another name")


def config(data: str, out: Path, form: dict) -> TrainConfig:
    """The TrainConfig for the Train form's values (``forms.config_form``: keyed by field name, typed). A label file
    must lie in the folders the server shares, as an image folder must."""
    labels = (form.get("labels") or "").strip()
    form = {**form, "labels": str(access.shared_path(labels)) if labels else None}
    cfg = TrainConfig(data=data, out=str(out), **form)
    cfg.validate()
    return cfg


def importer(model, out: Path, form: dict) -> Callable[[str], jobs.TrainJob]:
    """data folder -> the queued import of the uploaded ONNX ``model`` with the form's settings. The file and
    the settings are checked now, so a bad one is refused on the page rather than by a failed job."""
    if model is None:
        raise EmbedderError("upload your model as an .onnx file first")
    refused = uploads.too_big(model)
    if refused:
        raise EmbedderError(refused)
    data, name = model.getvalue(), model.name

    def start(folder: str) -> jobs.TrainJob:
        cfg = ImportConfig(data=folder, out=str(out), **form)
        cfg.validate()
        read_network(data, cfg, name)
        task = lambda **kw: import_model(data, cfg, name, **kw)
        return jobs.registry().start(cfg.train_config(), exclusive=True, task=task, owner=sessions.token())

    return start


def start(
    source: str, folder: str | None, upload, name: str, form: dict, network: str = NETWORKS[0], model=None
) -> jobs.TrainJob:
    """Check everything, then queue the training the form asks for, or for the network "Use my own model" the
    import of ``model`` (the uploaded .onnx file).

    Raises:
        EmbedderError: a bad run name or target, a folder outside the shared ones, a bad upload or setting.
    """
    out = out_path(name)
    check_target(out)
    registry = jobs.registry()
    if network == NETWORKS[0]:
        launch = lambda data: registry.start(config(data, out, form), exclusive=True, owner=sessions.token())
    else:
        launch = importer(model, out, form)
    if source == "Demo digits":
        return launch("demo")
    if source == "Folder on the server":
        if not folder:
            raise EmbedderError("enter the path of an image folder on the server")
        return launch(str(access.shared_folder(folder)))
    if upload is None:
        raise EmbedderError("upload a .zip of class folders first")
    refused = uploads.too_big(upload)
    if refused:
        raise EmbedderError(refused)
    data = upload.getvalue()
    # Unpacked once per content into runs/.data/<hash>/: the run keeps pointing at those files for its
    # gallery thumbnails, and the folder goes when no run or job needs it (jobs.JobRegistry.sweep).
    dest = uploads.unpack_folder(state.runs_dir(), data)
    try:
        with registry.holding(dest):
            if dest.is_dir() and any(dest.iterdir()):  # unpacked before: extract_zip is all or nothing
                root = image_root(dest)
            else:
                with st.spinner(f"Unpacking {upload.name}…"):
                    root = extract_zip(data, dest)
            return launch(str(root))
    finally:
        registry.sweep(state.runs_dir())  # a refused upload leaves nothing behind


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
        st.error(access.public(str(exc)))
        return
    st.caption(
        f"From **{run.name}**: each box is an *anchor*, a *positive* (same label) and a *negative* (another label). "
        "Training pulls the positive closer and pushes the negative away until the negative is farther by at least "
        f"the margin ({run.train_config.margin}). These were mined from one batch as training would pick them."
    )
    if not found:
        st.info("The model separates this batch so well that no triplet still has a loss. Try another batch.")
    for cell, t in zip(st.columns(len(found) or 1), found):
        with cell.container(border=True):
            widgets.thumbnails(
                [t.anchor, t.positive, t.negative],
                [
                    f"anchor · {t.label}",
                    f"positive · {t.label} · d = {t.ap_distance:.2f}",
                    f"negative · {t.negative_label} · d = {t.an_distance:.2f}",
                ],
                columns=3,
                side=72,
            )
            st.caption(f"{t.kind}: {KIND_WORDS[t.kind]}")
    if st.button("Show other triplets", key="triplet_shuffle", icon=":material/shuffle:"):
        st.session_state["triplet_seed"] = seed + 1
        st.rerun()

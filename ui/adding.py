"""Home's "Add images to this run": a server folder or an uploaded .zip of labelled images joins the active run's
gallery (embedder.verbs.add), with a progress bar; refused when the browser may not rewrite that run."""

from __future__ import annotations

import threading
from pathlib import Path

import streamlit as st

from embedder.errors import EmbedderError
from embedder.images.archive import extract_zip, image_root
from embedder.progress import Progress
from embedder.runs.run import Run
from embedder.verbs.add import Added, add_images

from . import access, jobs, state, training, uploads

SOURCES = ("Folder on the server", "Upload a .zip")
WORDS = {"embed": "Embedding the new images", "index": "Rebuilding the index", "scan": "Scanning the new images"}
_busy: set[Path] = set()  # runs being added to in this server process: a second add would lose the first's images
_busy_lock = threading.Lock()


ADD_REFUSALS = {
    "protected": "cannot be changed from the browser: train a run of your own first",
    "training": "is being trained: add images once training is done",
    "open": "is open in another session: add images when nobody else has it open",
}


def check_run(run: Path) -> None:
    """Refuse a run the browser may not rewrite (``training.busy``), or one being added to already."""
    run = run.resolve()
    reason = training.busy(run)
    if reason:
        raise EmbedderError(f"run '{run.name}' {ADD_REFUSALS[reason]}")
    if run in _busy:
        raise EmbedderError(f"images are being added to run '{run.name}' already")


def _progress_bar():
    """A Reporter drawing one st.progress bar: the stage in words and how far along it is."""
    bar = st.progress(0.0, text="Scanning images")

    def report(p: Progress) -> None:
        words = WORDS.get(p.stage, jobs.STAGE_WORDS.get(p.stage, str(p.stage)))
        if p.total:
            bar.progress(min(1.0, p.done / p.total), text=f"{words}: {p.done:,} / {p.total:,}")
        else:
            bar.progress(1.0 if p.stage == "done" else 0.0, text=words)

    return report


def _unpacked(upload) -> tuple[bytes, Path]:
    """The upload's bytes and the folder it unpacks into (runs/.data/<hash>/, one per content)."""
    if upload is None:
        raise EmbedderError("upload a .zip of class folders first")
    refused = uploads.too_big(upload)
    if refused:
        raise EmbedderError(refused)
    data = upload.getvalue()
    return data, uploads.unpack_folder(state.runs_dir(), data)


def add(run: Path, source: str, folder: str | None, upload) -> Added:
    """Check everything, then add the images to ``run``, drawing a progress bar. An uploaded zip stays unpacked
    while the run refers to it (``config.json`` -> ``additions``); a refused one leaves nothing behind.

    Raises:
        EmbedderError: a run the browser may not change, a folder outside the shared ones, a bad upload, or
        what ``embedder.verbs.add.add_images`` refuses.
    """
    run = run.resolve()
    with _busy_lock:
        check_run(run)
        _busy.add(run)
    registry = jobs.registry()
    try:
        if source == SOURCES[0]:
            if not folder:
                raise EmbedderError("enter the path of an image folder on the server")
            return add_images(run, access.shared_folder(folder), progress=_progress_bar())
        data, dest = _unpacked(upload)
        with registry.holding(dest):
            if dest.is_dir() and any(dest.iterdir()):  # unpacked before: extract_zip is all or nothing
                root = image_root(dest)
            else:
                with st.spinner(f"Unpacking {upload.name}…"):
                    root = extract_zip(data, dest)
            return add_images(run, root, progress=_progress_bar())
    finally:
        with _busy_lock:
            _busy.discard(run)
        registry.sweep(state.runs_dir())


ADDED = "added_summary"  # session_state: the last add's one-line summary, shown once after the rerun


def form(run: Run) -> None:
    """The "Add images to this run" expander: where the images come from, the button, and what happened."""
    if ADDED in st.session_state:
        st.success(st.session_state.pop(ADDED), icon=":material/add_photo_alternate:")
    with st.expander("Add images to this run", icon=":material/add_photo_alternate:"):
        if run.path.resolve() in [p.resolve() for p in state.protected_runs()]:
            st.caption(
                "This is the server's default run, which the browser cannot change: train a run of your own on "
                "**Train**, then add images to it here."
            )
            return
        st.caption(
            "Labelled images (one sub-folder per label: cat/1.jpg, zebra/2.jpg, …) are embedded with this run's "
            "network and join its gallery; a new label becomes a new class. The network is not retrained, and the "
            "run's metrics stay those measured before."
        )
        source = st.radio("Images", SOURCES, horizontal=True, key="add_source")
        folder = upload = None
        if source == SOURCES[0]:
            folder = st.text_input(
                "Image folder",
                placeholder="data/more-photos",
                key="add_folder",
                help="Inside the folders this server shares (data/ by default)",
            )
        else:
            upload = st.file_uploader(
                "A .zip of class folders", type=["zip"], key="add_zip", help=f"up to {uploads.limit_mb()} MB"
            )
        if st.button("Add images", key="add_submit", icon=":material/add:"):
            try:
                done = add(run.path, source, folder, upload)
            except EmbedderError as exc:
                st.error(access.public(str(exc)))
                return
            st.session_state[ADDED] = access.public(done.summary())
            st.rerun()

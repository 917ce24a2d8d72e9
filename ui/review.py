"""Review-page glue: a folder on the server or an uploaded .zip labelled by the active run (embedder.verbs.label)
into a review queue kept per session (embedder.answers.review); one answer at a time, least sure first, beside its
nearest gallery images; accept it (key A), set another label (type to find a class, or a new one; key L), skip it
(S), take back the latest decision (U); accept all above a confidence; add the labelled images to the gallery (and
take that back); download the labels as CSV or as an ImageFolder .zip. The labelled files are only ever read.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import streamlit as st

from embedder.answers.review import SKIP, ReviewQueue
from embedder.answers.trust import LEVEL
from embedder.errors import EmbedderError
from embedder.images.archive import extract_zip, image_root
from embedder.images.label_export import imagefolder_zip
from embedder.images.label_file import key
from embedder.images.labels import check_label
from embedder.insights import export
from embedder.progress import Progress
from embedder.runs.run import Run
from embedder.verbs.add import add_labelled
from embedder.verbs.label import LabelOptions, image_files, label_folder

from . import access, adding, cache, corrections, jobs, state, uploads, widgets

QUEUE = "review_queue"  # session_state: the ReviewQueue of this session
NOTES = "review_notes"  # session_state: what the calibration promises, said once per labelling
HELD = "review_held"  # session_state: the unpacked upload this session keeps from being swept
SOURCES = ("Upload a .zip", "Folder on the server")
MAX_IMAGES = 5_000  # a queue the page holds; a larger folder: python -m embedder label
NEIGHBOURS_SHOWN = 5


def _bar():
    """A Reporter drawing the labelling's progress with the time left."""
    bar, start = st.progress(0.0, text="Listing the images"), time.perf_counter()

    def report(p: Progress) -> None:
        if p.total and p.done:
            left = (time.perf_counter() - start) / p.done * (p.total - p.done)
            bar.progress(
                min(1.0, p.done / p.total), text=f"Labelling: {p.done:,} / {p.total:,} · about {left:.0f} s left"
            )

    return report


def _root(source: str, folder: str | None, upload) -> Path:
    """The folder to label: a shared server folder, or the upload unpacked under runs/.data/<hash>/ (kept while
    this session reviews it)."""
    if source == SOURCES[1]:
        if not folder:
            raise EmbedderError("enter the path of an image folder on the server")
        return access.shared_folder(folder)
    if upload is None:
        raise EmbedderError("upload a .zip of images first (no class folders needed)")
    refused = uploads.too_big(upload)
    if refused:
        raise EmbedderError(refused)
    data = upload.getvalue()
    dest, registry = uploads.unpack_folder(state.runs_dir(), data), jobs.registry()
    with registry.holding(dest):
        root = image_root(dest) if dest.is_dir() and any(dest.iterdir()) else extract_zip(data, dest)
        registry.release(st.session_state.get(HELD, dest))
        registry.hold(dest)
    st.session_state[HELD] = dest
    return root


def label(run: Run, source: str, folder: str | None, upload) -> None:
    """Label the chosen images with ``run`` into a new queue for this session."""
    root = _root(source, folder, upload)
    n = len(image_files(root))
    if n > MAX_IMAGES:
        raise EmbedderError(
            f"{n:,} images are more than this page reviews at once ({MAX_IMAGES:,}): label them with "
            "python -m embedder label, or upload fewer"
        )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "labels.csv"
        done = label_folder(cache.get_run(run.path), root, out, LabelOptions(), progress=_bar())
        queue = ReviewQueue.from_csv(root, out.read_text())
    st.session_state[QUEUE], st.session_state[NOTES] = queue, done.notes


def source_form(run: Run) -> None:
    """Where the images come from, and the button that labels them."""
    with st.expander("Images to label", expanded=QUEUE not in st.session_state, icon=":material/photo_library:"):
        source = st.radio("Images", SOURCES, horizontal=True, key="review_source")
        folder = upload = None
        if source == SOURCES[1]:
            folder = st.text_input("Image folder", key="review_folder", help="Inside the folders this server shares")
        else:
            upload = st.file_uploader(
                "A .zip of images", type=["zip"], key="review_zip", help=f"any layout; up to {uploads.limit_mb()} MB"
            )
        if st.button("Label these images", key="review_label", type="primary", icon=":material/label:"):
            try:
                label(run, source, folder, upload)
            except EmbedderError as exc:
                st.error(access.public(str(exc)))
                return
            st.rerun()


def _decide(queue: ReviewQueue, path: str, label: str) -> None:
    queue.decide(path, label)


def _set_label(queue: ReviewQueue, path: str, key: str) -> None:
    """The Set-label button: the typed or picked label, if it can name a class."""
    try:
        queue.decide(path, check_label(str(st.session_state.get(key) or "")))
    except EmbedderError as exc:
        st.session_state["review_refused"] = str(exc)


def card(run: Run, queue: ReviewQueue) -> None:
    """The least sure pending answer: the image, the suggestion and its confidence, its neighbours, the choices."""
    pending = queue.pending()
    if "review_refused" in st.session_state:
        st.error(st.session_state.pop("review_refused"))
    if not pending:
        st.success(f"All {len(queue):,} answers are decided.", icon=":material/task_alt:")
        return
    i = pending[0]
    a = queue.answers[i]
    with st.container(border=True, key="review-card"):
        st.caption(f"{len(pending):,} of {len(queue):,} to review · least sure first")
        left, right = st.columns([1, 4])
        with left:
            widgets.thumbnails([queue.root / a.path], [a.path], columns=1, side=160)
            st.metric("Suggested", a.suggested)
            st.progress(a.confidence, text=f"confidence {a.confidence:.0%}")
            if a.unknown:
                why = "unlike every gallery image" if a.novel else "far from every gallery image"
                st.caption(f'Answered "unknown": {why}; the closest label is the suggestion.')
        with right:
            shown = a.neighbours[:NEIGHBOURS_SHOWN]
            st.markdown(f"**{len(shown)} nearest gallery images**")
            widgets.thumbnails(
                [run.resolve(n.path) for n in shown], [f"{n.label} · d = {n.distance:.3f}" for n in shown], columns=5
            )
        b = st.columns([1, 2, 1, 1, 1])
        b[0].button(
            f"Accept {a.suggested}",
            key="review-accept",
            type="primary",
            shortcut="A",
            icon=":material/check:",
            on_click=_decide,
            args=(queue, a.path, a.suggested),
        )
        pick = f"review-pick-{i}"
        b[1].selectbox(
            "Set another label",
            run.classes,
            index=None,
            key=pick,
            accept_new_options=True,
            placeholder="type to find a label, or a new one",
            label_visibility="collapsed",
        )
        b[2].button("Set label", key="review-set", shortcut="L", on_click=_set_label, args=(queue, a.path, pick))
        b[3].button("Skip", key="review-skip", shortcut="S", on_click=_decide, args=(queue, a.path, SKIP))
        b[4].button("Undo", key="review-undo", shortcut="U", on_click=queue.undo, disabled=not queue.history)


def bulk(queue: ReviewQueue) -> None:
    """Accept every pending answer above a confidence, having said how many and how many wrong to expect."""
    level = st.slider("Accept all at confidence ≥", 0.5, 1.0, LEVEL, 0.01, key="review-level", format="%.2f")
    rows, wrong = queue.at_least(level)
    st.caption(
        f"**{len(rows):,}** pending answers are at ≥ {level:.0%}; from its calibration the run expects about "
        f"**{wrong:.1f}** of them to be wrong."
    )
    st.button(
        f"Accept these {len(rows):,}",
        key="review-accept-all",
        disabled=not rows,
        icon=":material/done_all:",
        on_click=queue.accept_at_least,
        args=(level,),
    )


def gallery(run: Run, queue: ReviewQueue) -> None:
    """Add the labelled images to the gallery (once each), take the latest change back, export the labels."""
    in_gallery = {key(p, run.data_root) for p in run.gallery_paths}
    todo = [(p, label) for p, label in queue.labelled() if key(queue.root / p, run.data_root) not in in_gallery]
    corrections.announce()
    refused = corrections.allowed(run)
    c = st.columns(4)
    if c[0].button(
        f"Add {len(todo):,} to the gallery",
        key="review-add",
        type="primary",
        disabled=not todo or bool(refused),
        icon=":material/add_photo_alternate:",
        help=refused or "They join the gallery with these labels, as Add does",
    ):
        try:
            adding.check_run(run.path)
            done = add_labelled(run.path, queue.root, todo, progress=adding._progress_bar())
        except EmbedderError as exc:
            st.error(access.public(str(exc)))
        else:
            st.session_state[corrections.DONE] = access.public(done.summary()) + ": see them on Explore"
            st.rerun()
    if c[1].button(
        "Undo the latest gallery change", key="review-gallery-undo", disabled=bool(refused), icon=":material/undo:"
    ):
        corrections.undo(run)
        st.rerun()
    rows = queue.rows()
    c[2].download_button(
        "Labels (CSV)",
        export.to_csv(rows),
        file_name=f"{run.name}-labels.csv",
        mime="text/csv",
        key="review-csv",
        icon=":material/download:",
    )
    pairs = [(queue.root / p, label) for p, label in queue.labelled()]
    c[3].download_button(
        "Labels as an ImageFolder (.zip)",
        lambda: imagefolder_zip(pairs),
        file_name=f"{run.name}-labelled.zip",
        mime="application/zip",
        key="review-zip-out",
        disabled=not pairs,
        icon=":material/folder_zip:",
        help="<label>/<file>: copies of the labelled images, ready to train on; your files stay as they are",
    )

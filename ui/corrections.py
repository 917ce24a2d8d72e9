"""Correcting the gallery from the browser (Insights' suspected mislabels, an Explore selection, Review's additions):
the run's corrections overlay (embedder.verbs.relabel) under the same rules as adding images, one line of what
happened after the rerun, an Undo for the latest batch, and the corrections as a CSV download.

The browser may correct only a run it may rewrite (``adding.check_run``: not the server's default run, not one being
trained, not one another session has open).
"""

from __future__ import annotations

import streamlit as st

from embedder.errors import EmbedderError
from embedder.images.label_file import LabelRow
from embedder.insights import export
from embedder.runs.run import Run
from embedder.verbs.relabel import Relabelled, relabel, undo_last

from . import access, adding

DONE = "corrections_done"  # session_state: the last change's one-line summary, shown once after the rerun
WHO = "app (browser)"


def allowed(run: Run) -> str | None:
    """Why this browser may not correct ``run``'s gallery, or None."""
    try:
        adding.check_run(run.path)
    except EmbedderError as exc:
        return access.public(str(exc))
    return None


def apply(run: Run, rows: list[LabelRow]) -> Relabelled | None:
    """Apply ``rows`` to the run's gallery; the summary is shown after the rerun, a refusal at once."""
    try:
        adding.check_run(run.path)
        with st.spinner("Correcting the gallery and scoring the held-out images again…"):
            done = relabel(run.path, rows, by=WHO)
    except EmbedderError as exc:
        st.error(access.public(str(exc)))
        return None
    st.session_state[DONE] = access.public(done.summary())
    return done


def undo(run: Run) -> None:
    try:
        adding.check_run(run.path)
        with st.spinner("Taking back the latest change…"):
            done = undo_last(run.path, by=WHO)
    except EmbedderError as exc:
        st.error(access.public(str(exc)))
        return
    st.session_state[DONE] = "undone: " + access.public(done.summary())


def announce() -> None:
    """The last change's summary, once."""
    if DONE in st.session_state:
        st.success(st.session_state.pop(DONE), icon=":material/edit_note:")


def panel(run: Run, key: str) -> None:
    """How many corrections the run carries, an Undo of the latest batch, and the corrections as CSV."""
    c = run.corrections
    if not c:
        return
    left, mid, right = st.columns([3, 1, 1])
    left.caption(
        f"This run carries **{len(c.changes)}** corrected label(s) and **{len(c.removed)}** image(s) taken out of the "
        "gallery, applied to every vote, map and metric; the image files are untouched."
    )
    if mid.button("Undo the latest change", key=f"{key}-undo", icon=":material/undo:", disabled=bool(allowed(run))):
        undo(run)
        st.rerun()
    right.download_button(
        "Corrections (CSV)",
        lambda: export.to_csv(c.rows()),
        file_name=f"{run.name}-corrections.csv",
        mime="text/csv",
        key=f"{key}-csv",
        icon=":material/download:",
        help="path, label, action, was, by, at: feed it to `relabel`, or to `train --labels` to retrain on the fixes",
    )


def _rows(run: Run, rows, label: str | None) -> list[LabelRow]:
    return [LabelRow(run.gallery_paths[int(r)], label) for r in rows]


def suspect_actions(run: Run, row: int, suggested: str, key: str) -> None:
    """Under one suspected mislabel: accept the suggested label, set another, or take the image out."""
    refused = allowed(run)
    c = st.columns([1, 2, 1, 1])
    chosen = None  # a 1-tuple: the label to set, or None to take the image out
    if c[0].button(
        f"Accept {suggested}", key=f"{key}-accept", disabled=bool(refused), help=refused, icon=":material/check:"
    ):
        chosen = (suggested,)
    label = c[1].selectbox(
        "Another label",
        run.classes,
        index=None,
        key=f"{key}-label",
        accept_new_options=True,
        placeholder="type to find a label, or a new one",
        label_visibility="collapsed",
        disabled=bool(refused),
    )
    if c[2].button("Set label", key=f"{key}-set", disabled=bool(refused) or not label):
        chosen = (label,)
    if c[3].button(
        "Take out",
        key=f"{key}-out",
        disabled=bool(refused),
        icon=":material/remove_circle:",
        help="Take the image out of the gallery (the file stays; Undo puts it back)",
    ):
        chosen = (None,)
    if chosen and apply(run, _rows(run, [row], chosen[0])):
        st.rerun()


def accept_top(run: Run, suspects: list, key: str, clear: int) -> None:
    """Accept the suggested labels of the first N suspects at once (N starts at the ``clear`` ones)."""
    refused = allowed(run)
    if refused:
        st.caption(f"Corrections: {refused}.")
        return
    c = st.columns([1, 2])
    n = c[0].number_input("Suspects", 1, len(suspects), max(1, clear), key=f"{key}-n", label_visibility="collapsed")
    if c[1].button(f"Accept the top {n} suggestions", key=f"{key}-top", icon=":material/done_all:"):
        rows = [LabelRow(run.gallery_paths[s.row], run.classes[s.suggested]) for s in suspects[:n]]
        if apply(run, rows):
            st.rerun()


def selection_actions(run: Run, rows, selected_key: str) -> None:
    """For an Explore selection: set one label on all of it, accept its neighbours' votes, or take it out. A
    change clears the selection (rows may move)."""
    refused = allowed(run)
    if refused:
        st.caption(f"Corrections: {refused}.")
        return
    c = st.columns([2, 1, 1, 1])
    label = c[0].selectbox(
        f"Label for the {len(rows):,} selected",
        run.classes,
        index=None,
        key="map-correct-label",
        accept_new_options=True,
        placeholder="type to find a label, or a new one",
    )
    done = None
    if c[1].button("Set label", key="map-correct-set", disabled=not label):
        done = apply(run, _rows(run, rows, label))
    if c[2].button(
        "Accept their votes",
        key="map-correct-votes",
        help="Each selected image takes the label its nearest gallery images vote for",
    ):
        from . import cache

        predicted = cache.get_predicted(run.path)
        done = apply(run, [LabelRow(run.gallery_paths[r], run.classes[predicted[r]]) for r in map(int, rows)])
    if c[3].button(
        "Take out",
        key="map-correct-out",
        icon=":material/remove_circle:",
        help="Take the selected images out of the gallery (the files stay; Undo puts them back)",
    ):
        done = apply(run, _rows(run, rows, None))
    if done is not None:
        st.session_state.pop(selected_key, None)
        st.rerun()

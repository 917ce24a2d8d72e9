"""Review: label a folder or a .zip of new images with the active run, least sure first; accept, correct or skip
each answer (keys A, L, S, U), accept all above a confidence, add the labelled images to the gallery, and download
the labels as CSV or as an ImageFolder."""

import streamlit as st

from ui import review, state, widgets

state.require_app(__file__)

st.title("Review")
run = widgets.active_run()
if run is None:
    st.stop()

st.caption(
    f"New images are labelled by **{run.name}**'s gallery and shown least sure first, each beside its nearest "
    "gallery images. Your files are only read: the labels go to the gallery, a CSV or an ImageFolder."
)
review.source_form(run)
queue = st.session_state.get(review.QUEUE)
if queue is None:
    st.stop()
for note in st.session_state.get(review.NOTES, []):
    st.caption(f":material/info: {note}")
review.card(run, queue)
review.bulk(queue)
review.gallery(run, queue)

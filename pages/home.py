"""Home: what the tool does in three steps, the active run, and a picker over the saved runs."""

import streamlit as st

from ui import adding, state, widgets

state.require_app(__file__)

st.title("Image embedder")
st.markdown("Find what a new image **is** by finding what it **looks like** in your labelled images.")

steps = st.columns(3)
for col, (title, text) in zip(
    steps,
    [
        (
            "1 · Triplets shape the space",
            "A network learns from *triplets*: an image, another of the same label, and one of a different label. "
            "It is pushed until same-label images sit closer together than different-label ones.",
        ),
        (
            "2 · Every labelled image is embedded",
            "Each image of your collection becomes a point in that space — the *gallery*. "
            "The **Explore** page draws the gallery as a map, one colour per label.",
        ),
        (
            "3 · New images are labelled by their neighbours",
            "Upload an image on **Query**: it is placed in the same space, and its nearest gallery images vote "
            "on its label. You see the neighbours, so you can judge the answer.",
        ),
    ],
):
    with col.container(border=True):
        st.markdown(f"**{title}**")
        st.markdown(text)

st.subheader("Active run")
run = widgets.active_run()
if run is not None:
    widgets.run_summary(run)
    grown = run.record.not_reevaluated
    if grown:
        new = f", {len(grown.new_classes)} of them new labels" if grown.new_classes else ""
        st.caption(
            f"{grown.images:,} images were added after training{new}: the held-out numbers above were "
            "measured before they came."
        )
    go = st.columns(3)
    go[0].page_link("pages/query.py", label="Label a new image", icon=":material/image_search:")
    go[1].page_link("pages/explore.py", label="Explore the map", icon=":material/scatter_plot:")
    go[2].page_link("pages/evaluate.py", label="See how good it is", icon=":material/analytics:")
    adding.form(run)

st.subheader("Load a run")
widgets.run_picker()
st.caption("…or train a new one on your own images on the **Train** page.")

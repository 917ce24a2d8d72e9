"""Explore: the gallery as a map. Select points (box, lasso, click) to see their images and neighbours; compare
with the map before training; the address bar always links back to this view."""

import numpy as np
import pandas as pd
import streamlit as st

from embedder.images.data import stratified_sample
from embedder.insights import export
from embedder.maps import mapdata
from embedder.maps.plots import embedding_map
from ui import (
    cache,
    corrections,
    maps,
    state,
    widgets,
)

maps.keep_url()
state.require_app(__file__)

MAX_GRID = 48  # thumbnails shown for a selection

st.title("Explore")
maps.restore_from_url()
run = widgets.active_run()
if run is None:
    st.stop()

view = maps.controls(run)
compare = st.toggle(
    "Compare with before training",
    key="map_compare",
    help=f"The same gallery embedded by the {mapdata.before_kind(run)} network, side by side; "
    "a selection on either map is highlighted on both",
)
images = st.toggle(
    "Images on the map", value=True, key="map_images", help="The selected images drawn where they are on the map"
)
names = np.array(run.classes)[run.gallery_labels]
selected = st.session_state.get(maps.SELECTED, np.zeros(0, np.int64))
item = st.session_state.get("map_item")
if item is not None and 0 <= item < len(names) and not len(selected):
    selected = np.array([item])
# A big lasso would otherwise show only the lowest row ids (one label); a stratified pick shows them all.
shown = selected[stratified_sample(names[selected], MAX_GRID)].tolist()
focus = np.flatnonzero(np.isin(names, view.labels)) if view.labels else None
rows = maps.sample_rows(run, np.arange(len(names)), select=view.dims == 2)
sampled = len(rows) < len(names)  # then a density image of all points lies beneath, and a region selects all
colours = maps.colouring(run, view, rows)
proj = maps.projection(run, view.method, view.dims)
shown_method = view.method
if proj is None:  # being computed in the background (its progress is above): the instant map meanwhile
    shown_method, proj = "pca", maps.projection(run, "pca", view.dims)
    st.caption(f"Showing PCA until {maps.NAMES[view.method]} is ready: it opens here by itself.")
if proj is None:
    st.stop()
everything = proj.coords if sampled else None
after = embedding_map(proj.coords[rows], colours, rows, height=560 if compare else 620, everything=everything)
if images:
    after.show_images(shown, [cache.thumbnail_uri(str(run.resolve(run.gallery_paths[i]))) for i in shown])
before_proj = maps.projection(run, view.method, view.dims, before=True) if compare else None
if before_proj is not None:
    before_all = before_proj.coords if sampled else None
    before = embedding_map(before_proj.coords[rows], colours, rows, height=560, everything=before_all)
    left, right = st.columns(2)
    with left:
        st.markdown(f"**Before training** ({mapdata.before_kind(run)} network)")
        maps.draw(before, f"map-before-{run.name}", focus, coords=before_all)
    with right:
        st.markdown("**After training**")
        maps.draw(after, f"map-{run.name}", focus, coords=everything)
else:
    maps.draw(after, f"map-{run.name}", focus, coords=everything)
method_name = maps.NAMES[shown_method]
st.caption(
    f"Showing {len(rows):,} of {len(names):,} gallery images · {method_name} {view.dims}D · "
    + (
        "drag a lasso or a box, or click a point, to see the images; double-click to clear"
        if view.dims == 2
        else "rotate with the mouse; switch to 2D to select points"
    )
    + "."
    + maps.fit_note(proj)
)
if before_proj is not None:
    with st.expander("What training changed, per class", expanded=False):
        table = pd.DataFrame(cache.per_class_change(str(run.path), cache.stamp(run.path)))
        st.caption(
            f"P@1 and MAP@R, leave-one-out among a stratified sample of at most {mapdata.COMPARE_SAMPLE:,} "
            "gallery images (the same for both; the trained model saw most of them), largest gain first."
        )
        st.dataframe(table, hide_index=True, key="map_change")

maps.share(run, view, compare, item)
if not len(selected):
    st.stop()

st.subheader(f"{len(selected):,} selected")
counts = pd.Series(names[selected]).value_counts()
st.caption(" · ".join(f"**{lab}** × {n}" for lab, n in counts.items()))
st.download_button(
    "Download the selection (CSV)",
    lambda: export.to_csv(export.selection_rows(run, selected, proj.coords[selected])),  # built when clicked
    file_name=f"{run.name}-selection.csv",
    mime="text/csv",
    key="map_selection_csv",
    icon=":material/download:",
    help="id, path, label, map coordinates and the ids of the 5 nearest gallery images, one row per selected image",
)
if len(selected) > MAX_GRID:
    st.caption(f"Showing {len(shown)} of {len(selected):,}, every selected label in its share.")
corrections.announce()
corrections.selection_actions(run, selected, maps.SELECTED)
files = run.gallery_files()  # only once something is selected: a path per gallery image
widgets.thumbnails([files[i] for i in shown], [f"{names[i]} · #{i}" for i in shown], columns=12, side=72)

left, right = st.columns([3, 1])
pick = left.selectbox(
    "Show the nearest neighbours of",
    shown,
    index=shown.index(item) if item in shown else 0,
    format_func=lambda i: f"#{i} · {names[i]} · {run.gallery_paths[i]}",
    key="map_pick",
)
maps.share(run, view, compare, pick)
k = right.slider("Neighbours", 1, 20, 8, key="map_k")
pairs = list(zip(*run.index().neighbours_of(pick, k)))
widgets.thumbnails(
    [files[pick]] + [files[j] for j, _ in pairs],
    [f"{names[pick]} (chosen)"] + [f"{names[j]} · d = {d:.3f}" for j, d in pairs],
    columns=min(k + 1, 12),
    side=72,
)
